"""Elastic IPs: AllocateAddress, AssociateAddress, DisassociateAddress, ReleaseAddress,
DescribeAddresses.

An Elastic IP comes from the same public pool as instances' public IPs (see
``interfaces.py``) and is never an address someone else holds. Associated with an
interface, it replaces the interface's pool address (which goes back to the pool); taken
away again, a pending or running instance whose subnet maps public IPs gets a fresh pool
address, as on EC2. Elastic IPs stay with an instance across stop and start.

Change log kinds: ``address.allocated``, ``address.associated``, ``address.disassociated``,
``address.released``, plus ``interface.public_ip`` for the interface whose public address
changed.
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import Row, delete, func, insert, select, update

from stockade.errors import ApiError
from stockade.service import groups, interfaces, resources
from stockade.service.common import (
    Ctx,
    FilterSpec,
    Params,
    Result,
    action,
    check_id,
    new_id,
)
from stockade.service.describe import Describe
from stockade.store import schema
from stockade.store.db import utcnow

A = schema.addresses.c
N = schema.network_interfaces.c
I = schema.instances.c  # noqa: E741


def check_public_ip(value: object) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise ApiError(
            "InvalidParameterValue", f"Value ({value}) for parameter PublicIp is invalid."
        ) from None


def by_public_ip(ctx: Ctx, value: object) -> Row:
    ip = check_public_ip(value)
    row = ctx.conn.execute(
        select(schema.addresses).where(
            A.public_ip == ip, A.account_id == ctx.account_id, A.region == ctx.region
        )
    ).first()
    if row is None:
        raise ApiError("InvalidAddress.NotFound", f"Address '{ip}' not found.")
    return row


def target(ctx: Ctx, p: Params) -> Row:
    if p.get("allocation_id"):
        return resources.get(ctx, p["allocation_id"], "eipalloc")
    if p.get("public_ip"):
        return by_public_ip(ctx, p["public_ip"])
    raise ApiError(
        "MissingParameter", "The request must contain the parameter AllocationId or PublicIp"
    )


def restore_pool_ip(ctx: Ctx, eni_id: str) -> None:
    """After an Elastic IP left the interface: a pool address if its instance runs."""
    eni = interfaces.get_row(ctx, eni_id)
    state = None
    if eni.instance_id is not None:
        state = ctx.conn.execute(select(I.state).where(I.id == eni.instance_id)).scalar()
    if state in ("pending", "running") and interfaces.assign_pool_ip(ctx, eni) is not None:
        return
    interfaces.log_public_ip(ctx, eni.id)


@action("AllocateAddress", write=True)
def allocate_address(ctx: Ctx, p: Params) -> Result:
    domain = p.get("domain") or "vpc"
    if domain not in ("vpc", "standard"):
        raise ApiError(
            "InvalidParameterValue", f"Value ({domain}) for parameter domain is invalid."
        )
    for unsupported in ("customer_owned_ipv4_pool", "ipam_pool_id"):
        if p.get(unsupported):
            raise ApiError(
                "UnsupportedOperation", f"Stockade does not support {unsupported} addresses."
            )
    if p.get("public_ipv4_pool") not in (None, "amazon"):
        raise ApiError(
            "InvalidPublicIpv4PoolID.NotFound",
            f"The public IPv4 pool '{p['public_ipv4_pool']}' does not exist",
        )
    if p.get("network_border_group") not in (None, ctx.region):
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({p['network_border_group']}) for parameter NetworkBorderGroup is invalid.",
        )
    count = ctx.conn.execute(
        select(func.count())
        .select_from(schema.addresses)
        .where(A.account_id == ctx.account_id, A.region == ctx.region)
    ).scalar_one()
    if count >= ctx.config.max_addresses:
        raise ApiError("AddressLimitExceeded", "The maximum number of addresses has been reached.")
    wanted = check_public_ip(p["address"]) if p.get("address") else None
    ip = interfaces.take_public_ip(ctx, wanted)
    allocation_id = new_id("eipalloc")
    ctx.conn.execute(
        insert(schema.addresses).values(
            id=allocation_id,
            account_id=ctx.account_id,
            region=ctx.region,
            public_ip=ip,
            domain="vpc",
            created_at=utcnow(),
        )
    )
    resources.tag_specifications(ctx, p, "elastic-ip", allocation_id)
    ctx.log("address.allocated", allocation_id, public_ip=ip)
    return {
        "allocation_id": allocation_id,
        "public_ipv4_pool": "amazon",
        "network_border_group": ctx.region,
        "domain": "vpc",
        "public_ip": ip,
    }


def _interface_for(ctx: Ctx, p: Params) -> Row:
    if p.get("instance_id") and p.get("network_interface_id"):
        raise ApiError(
            "InvalidParameterCombination",
            "The parameters InstanceId and NetworkInterfaceId cannot be used together.",
        )
    if p.get("network_interface_id"):
        return resources.get(ctx, p["network_interface_id"], "eni")
    if not p.get("instance_id"):
        raise ApiError(
            "MissingParameter",
            "The request must contain the parameter InstanceId or NetworkInterfaceId",
        )
    inst = resources.get(ctx, p["instance_id"], "i")
    eni = ctx.conn.execute(
        select(schema.network_interfaces)
        .where(N.instance_id == inst.id)
        .order_by(N.device_index)
        .limit(1)
    ).first()
    if inst.state in ("shutting-down", "terminated") or eni is None:
        raise ApiError(
            "IncorrectInstanceState",
            f"The instance '{inst.id}' is not in a valid state for this operation.",
        )
    return eni


@action("AssociateAddress", write=True)
def associate_address(ctx: Ctx, p: Params) -> Result:
    eip = target(ctx, p)
    eni = _interface_for(ctx, p)
    if p.get("private_ip_address") not in (None, eni.private_ip):
        raise ApiError(
            "InvalidParameterValue",
            f"The private IP address {p['private_ip_address']} is not assigned to network "
            f"interface {eni.id}.",
        )
    if eip.interface_id == eni.id:
        return {"association_id": eip.association_id}  # already there: nothing to do
    if eip.interface_id is not None:
        if not p.get("allow_reassociation"):
            raise ApiError(
                "Resource.AlreadyAssociated",
                f"resource {eip.id} is already associated with associate-id {eip.association_id}",
            )
        old_eni = eip.interface_id
        interfaces.disassociate_elastic_ip(ctx, eip)
        restore_pool_ip(ctx, old_eni)
    replaced = interfaces.elastic_ip_of(ctx, eni.id)
    if replaced is not None:  # an interface has one public address: the new one wins
        interfaces.disassociate_elastic_ip(ctx, replaced)
    interfaces.release_pool_ip(ctx, eni, log=False)
    association_id = new_id("eipassoc")
    ctx.conn.execute(
        update(schema.addresses)
        .where(A.id == eip.id)
        .values(interface_id=eni.id, association_id=association_id, private_ip=eni.private_ip)
    )
    ctx.log(
        "address.associated",
        eip.id,
        public_ip=eip.public_ip,
        association_id=association_id,
        interface_id=eni.id,
        instance_id=eni.instance_id,
        private_ip=eni.private_ip,
    )
    interfaces.log_public_ip(ctx, eni.id)
    return {"association_id": association_id}


@action("DisassociateAddress", write=True)
def disassociate_address(ctx: Ctx, p: Params) -> Result:
    if p.get("association_id"):
        assoc = check_id(p["association_id"], "eipassoc", "InvalidAssociationID.Malformed")
        eip = ctx.conn.execute(
            select(schema.addresses).where(
                A.association_id == assoc,
                A.account_id == ctx.account_id,
                A.region == ctx.region,
            )
        ).first()
        if eip is None:
            raise ApiError(
                "InvalidAssociationID.NotFound", f"The association ID '{assoc}' does not exist"
            )
    elif p.get("public_ip"):
        eip = by_public_ip(ctx, p["public_ip"])
        if eip.interface_id is None:
            return {}  # not associated: nothing to do, as on EC2
    else:
        raise ApiError(
            "MissingParameter", "The request must contain the parameter AssociationId or PublicIp"
        )
    eni_id = eip.interface_id
    interfaces.disassociate_elastic_ip(ctx, eip)
    restore_pool_ip(ctx, eni_id)
    return {}


@action("ReleaseAddress", write=True)
def release_address(ctx: Ctx, p: Params) -> Result:
    eip = target(ctx, p)
    if p.get("network_border_group") not in (None, ctx.region):
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({p['network_border_group']}) for parameter NetworkBorderGroup is invalid.",
        )
    if eip.interface_id is not None:
        # EC2: in the default VPC, releasing disassociates first; in any other VPC, the
        # address must be disassociated before (InvalidIPAddress.InUse)
        eni = ctx.conn.execute(select(N.vpc_id).where(N.id == eip.interface_id)).first()
        if eni is None or eni.vpc_id != groups.default_vpc_id_or_none(ctx):
            raise ApiError("InvalidIPAddress.InUse", f"Address {eip.public_ip} is in use.")
        eni_id = eip.interface_id
        interfaces.disassociate_elastic_ip(ctx, eip)
        restore_pool_ip(ctx, eni_id)
    resources.drop_tags(ctx, [eip.id])
    resources.drop_attributes(ctx, [eip.id])
    ctx.conn.execute(delete(schema.addresses).where(A.id == eip.id))
    ctx.log("address.released", eip.id, public_ip=eip.public_ip)
    return {}


def address_result(ctx: Ctx, row: Row, eni: Row | None, tags: list | None) -> Result:
    return {
        "allocation_id": row.id,
        "association_id": row.association_id,
        "domain": "vpc",
        "network_interface_id": row.interface_id,
        "network_interface_owner_id": eni.account_id if eni is not None else None,
        "private_ip_address": row.private_ip,
        "tags": tags or None,
        "public_ipv4_pool": "amazon",
        "network_border_group": ctx.region,
        "subnet_id": eni.subnet_id if eni is not None else None,
        "instance_id": eni.instance_id if eni is not None else None,
        "public_ip": row.public_ip,
    }


ADDRESS_FILTERS: FilterSpec = {
    "allocation-id": lambda a: [a["allocation_id"]],
    "association-id": lambda a: [a["association_id"]],
    "instance-id": lambda a: [a["instance_id"]],
    "network-interface-id": lambda a: [a["network_interface_id"]],
    "network-interface-owner-id": lambda a: [a["network_interface_owner_id"]],
    "public-ip": lambda a: [a["public_ip"]],
    "private-ip-address": lambda a: [a["private_ip_address"]],
    "domain": lambda a: [a["domain"]],
    "network-border-group": lambda a: [a["network_border_group"]],
    "public-ipv4-pool": lambda a: [a["public_ipv4_pool"]],
}


def _address_rows(ctx: Ctx, p: Params, pushed: dict[str, list[str]]) -> list[Row]:
    """The addresses asked for by allocation id and public IP, else all the caller's."""
    if not p.get("allocation_ids") and not p.get("public_ips"):
        return list(
            ctx.conn.execute(
                select(schema.addresses)
                .where(A.account_id == ctx.account_id, A.region == ctx.region)
                .order_by(A.public_ip)
            )
        )
    rows = resources.get_many(ctx, p.get("allocation_ids") or [], "eipalloc")
    seen = {r.id for r in rows}
    for ip in dict.fromkeys(p.get("public_ips") or []):
        row = by_public_ip(ctx, ip)
        if row.id not in seen:
            rows.append(row)
            seen.add(row.id)
    return rows


def _address_results(ctx: Ctx, rows: list[Row]) -> list[Result]:
    eni_ids = [r.interface_id for r in rows if r.interface_id]
    enis = {
        e.id: e
        for e in ctx.conn.execute(select(schema.network_interfaces).where(N.id.in_(eni_ids)))
    }
    tags = resources.tags_for(ctx, [r.id for r in rows])
    return [address_result(ctx, r, enis.get(r.interface_id or ""), tags.get(r.id)) for r in rows]


ADDRESSES = Describe("addresses", ADDRESS_FILTERS, _address_results, source=_address_rows)


@action("DescribeAddresses", write=False)
def describe_addresses(ctx: Ctx, p: Params) -> Result:
    return ADDRESSES.run(ctx, p)
