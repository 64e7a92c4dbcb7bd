"""Network interfaces: private and public addresses, security groups, the public pool.

Every instance has one primary interface (device index 0). The interface, not the instance,
carries what the data plane enforces: its private IP, its security groups (at most
``Config.max_groups_per_interface``, capped at EC2's 16) and its public address, which is
either an Elastic IP associated with it or a pool address (``public_ip``) that it holds
while its instance is pending or running.

Public addresses come from ``Config.public_pool`` (198.18.0.0/15, reserved for network
testing): one pool for every account and region, handed out next-fit from a cursor kept in
``counters`` (so a stopped and restarted instance gets a different address, as on EC2).
The pool's first five addresses and its last are never handed out (the sandbox edge may use
them).

Change log kinds written here: ``interface.created``, ``interface.groups``,
``interface.public_ip``, ``interface.deleted``, ``interface.attribute``.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Row, delete, insert, select, update

from stockade.errors import ApiError
from stockade.service import groups, resources, vpcs
from stockade.service.common import (
    Ctx,
    FilterSpec,
    Params,
    Result,
    action,
    new_id,
)
from stockade.service.describe import Describe
from stockade.store import schema
from stockade.store.db import Sql, execute, utcnow

N = schema.network_interfaces.c
IG = schema.interface_groups.c
A = schema.addresses.c
G = schema.security_groups.c
S = schema.subnets.c

EC2_MAX_GROUPS_PER_INTERFACE = 16
POOL_RESERVED_LOW = 5  # 198.18.0.0 - 198.18.0.4
POOL_CURSOR = "public_pool_cursor"


# --- names --------------------------------------------------------------------------------


def private_dns(region: str, ip: str) -> str:
    """EC2's private DNS name: ``ip-172-31-1-2.ec2.internal`` (us-east-1) or
    ``ip-172-31-1-2.eu-west-1.compute.internal``."""
    dashed = ip.replace(".", "-")
    if region == "us-east-1":
        return f"ip-{dashed}.ec2.internal"
    return f"ip-{dashed}.{region}.compute.internal"


def public_dns(ctx: Ctx, ip: str) -> str:
    """EC2's public DNS name under ``Config.public_domain`` instead of amazonaws.com:
    ``ec2-198-18-0-5.compute-1.stockade.test`` (us-east-1) or
    ``ec2-198-18-0-5.eu-west-1.compute.stockade.test``."""
    dashed = ip.replace(".", "-")
    if ctx.region == "us-east-1":
        return f"ec2-{dashed}.compute-1.{ctx.config.public_domain}"
    return f"ec2-{dashed}.{ctx.region}.compute.{ctx.config.public_domain}"


def new_mac() -> str:
    return "0e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


# --- the public pool ----------------------------------------------------------------------


def pool(ctx: Ctx) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(ctx.config.public_pool, strict=False)


def in_pool(ctx: Ctx, ip: str) -> bool:
    net = pool(ctx)
    first, last = _pool_bounds(net)
    value = int(ipaddress.IPv4Address(ip))
    return first <= value <= last


def _pool_bounds(net: ipaddress.IPv4Network) -> tuple[int, int]:
    base, size = int(net.network_address), net.num_addresses
    if size > 2 * POOL_RESERVED_LOW:
        return base + POOL_RESERVED_LOW, base + size - 2
    return base, base + size - 1


def public_ips_in_use(ctx: Ctx) -> set[str]:
    """Every pool address held by an interface or allocated as an Elastic IP (all accounts)."""
    used = set(ctx.conn.execute(select(N.public_ip).where(N.public_ip.is_not(None))).scalars())
    used.update(ctx.conn.execute(select(A.public_ip)).scalars())
    return used


def take_public_ip(ctx: Ctx, wanted: str | None = None) -> str:
    """A pool address nobody holds: ``wanted`` if given and free, else the next free one."""
    used = public_ips_in_use(ctx)
    net = pool(ctx)
    first, last = _pool_bounds(net)
    if wanted is not None:
        if not in_pool(ctx, wanted) or wanted in used:
            raise ApiError(
                "InvalidParameterValue",
                f"The address {wanted} is not available in Stockade's public pool {net}.",
            )
        return wanted
    c = schema.counters.c
    cursor = ctx.conn.execute(select(c.value).where(c.name == POOL_CURSOR)).scalar()
    if cursor is None:
        ctx.conn.execute(insert(schema.counters).values(name=POOL_CURSOR, value=first))
        cursor = first
    size = last - first + 1
    start = cursor - first if first <= cursor <= last else 0
    for step in range(size):
        value = first + (start + step) % size
        ip = str(ipaddress.IPv4Address(value))
        if ip not in used:
            ctx.conn.execute(
                update(schema.counters).where(c.name == POOL_CURSOR).values(value=value + 1)
            )
            return ip
    raise ApiError(
        "InsufficientAddressCapacity",
        f"There are no free addresses left in Stockade's public pool {net}.",
    )


# --- security groups of interfaces ----------------------------------------------------------


def group_limit(ctx: Ctx) -> int:
    return max(1, min(ctx.config.max_groups_per_interface, EC2_MAX_GROUPS_PER_INTERFACE))


def check_group_count(ctx: Ctx, count: int) -> None:
    if count > group_limit(ctx):
        raise ApiError(
            "SecurityGroupsPerInterfaceLimitExceeded",
            "The maximum number of security groups per interface has been reached.",
        )


def groups_by_ids(ctx: Ctx, vpc_id: str, ids: Iterable[object], subnet_id: str | None) -> list:
    """Groups of this account named by id, all in ``vpc_id``, at most the limit."""
    rows = resources.get_many(ctx, ids, "sg")
    check_vpc(rows, vpc_id, subnet_id)
    check_group_count(ctx, len(rows))
    return rows


def check_vpc(rows: list[Row], vpc_id: str, subnet_id: str | None) -> None:
    for row in rows:
        if row.vpc_id != vpc_id:
            if subnet_id is not None:
                raise ApiError(
                    "InvalidParameter",
                    f"Security group {row.id} and subnet {subnet_id} belong to different networks.",
                )
            raise ApiError(
                "InvalidGroup.NotFound",
                f"You have specified two resources that belong to different networks: "
                f"{row.id} is in {row.vpc_id}, not in {vpc_id}.",
            )


def default_group(ctx: Ctx, vpc_id: str) -> Row:
    return groups.group_by_name(ctx, "default", vpc_id=vpc_id)


def groups_of(ctx: Ctx, interface_ids: list[str]) -> dict[str, list[Result]]:
    """interface id -> [{group_id, group_name}] in the order they were given."""
    out: dict[str, list[Result]] = defaultdict(list)
    for start in range(0, len(interface_ids), 500):
        chunk = interface_ids[start : start + 500]
        rows = ctx.conn.execute(
            select(IG.interface_id, IG.group_id, G.name)
            .join(schema.security_groups, G.id == IG.group_id)
            .where(IG.interface_id.in_(chunk))
            .order_by(IG.interface_id, IG.position)
        )
        for r in rows:
            out[r.interface_id].append({"group_id": r.group_id, "group_name": r.name})
    return out


def set_groups(ctx: Ctx, eni: Row, rows: list[Row], *, log: bool = True) -> None:
    check_group_count(ctx, len(rows))
    ctx.conn.execute(delete(schema.interface_groups).where(IG.interface_id == eni.id))
    for position, g in enumerate(rows):
        ctx.conn.execute(
            insert(schema.interface_groups).values(
                interface_id=eni.id, group_id=g.id, position=position
            )
        )
    if log:
        ctx.log(
            "interface.groups",
            eni.id,
            instance_id=eni.instance_id,
            private_ip=eni.private_ip,
            group_ids=[g.id for g in rows],
        )


# --- private addresses ----------------------------------------------------------------------


def _usable(subnet: Row) -> tuple[ipaddress.IPv4Network, int, int]:
    net = ipaddress.IPv4Network(subnet.cidr)
    base = int(net.network_address)
    return net, base + 4, base + net.num_addresses - 2  # EC2 keeps the first 4 and the last


def secondary_ips(row: Row) -> list[str]:
    return list(row.secondary_ips or [])


def ipv6_of(row: Row) -> list[str]:
    return list(row.ipv6_addresses or [])


def private_ips_in_use(ctx: Ctx, subnet_id: str) -> set[str]:
    used: set[str] = set()
    for ip, more in ctx.conn.execute(
        select(N.private_ip, N.secondary_ips).where(N.subnet_id == subnet_id)
    ):
        used.add(ip)
        used.update(more or ())
    return used


def ipv6_in_use(ctx: Ctx) -> set[str]:
    """Every IPv6 address of an interface of the region (any account)."""
    used: set[str] = set()
    for (more,) in ctx.conn.execute(
        select(N.ipv6_addresses).where(N.region == ctx.region, N.ipv6_addresses.is_not(None))
    ):
        used.update(more or ())
    return used


def region_ips_in(ctx: Ctx, net: ipaddress.IPv4Network) -> set[str]:
    """Addresses of ``net`` held by any interface of the region, whatever its account or VPC.

    Automatic assignment avoids them too: EC2 promises no particular free address, and
    addresses unique in a region let the one-machine sandbox route every VPC on one flat
    network (each account's default VPC is 172.31.0.0/16).
    """
    found: set[str] = set()
    for ip, more in ctx.conn.execute(
        select(N.private_ip, N.secondary_ips).where(N.region == ctx.region)
    ):
        for one in (ip, *(more or ())):
            if ipaddress.IPv4Address(one) in net:
                found.add(one)
    return found


def free_private_ips(ctx: Ctx, subnet: Row, count: int) -> list[str]:
    """Up to ``count`` free addresses of ``subnet``, lowest first."""
    net, first, last = _usable(subnet)
    used = private_ips_in_use(ctx, subnet.id) | region_ips_in(ctx, net)
    out: list[str] = []
    value = first
    while value <= last and len(out) < count:
        ip = str(ipaddress.IPv4Address(value))
        if ip not in used:
            out.append(ip)
        value += 1
    return out


def check_private_ip(ctx: Ctx, subnet: Row, value: object) -> str:
    try:
        ip = ipaddress.IPv4Address(str(value))
    except ValueError:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({value}) for parameter privateIpAddress is invalid. "
            "Expecting an IPv4 address.",
        ) from None
    net, first, last = _usable(subnet)
    if ip not in net:
        raise ApiError(
            "InvalidParameterValue",
            f"Address {ip} does not fall within the subnet's address range",
        )
    if not first <= int(ip) <= last:
        raise ApiError(
            "InvalidParameterValue",
            f"Address {ip} is reserved: the first four and the last address of subnet "
            f"{subnet.id} ({subnet.cidr}) cannot be assigned.",
        )
    if str(ip) in private_ips_in_use(ctx, subnet.id):
        raise ApiError("InvalidIPAddress.InUse", f"Address {ip} is in use.")
    return str(ip)


# --- life of an interface -------------------------------------------------------------------


def create_interface(
    ctx: Ctx,
    subnet: Row,
    group_rows: list[Row],
    private_ip: str,
    *,
    instance_id: str | None,
    device_index: int | None = 0,
    wants_public_ip: bool = False,
    description: str = "",
    delete_on_termination: bool = True,
    secondary: list[str] | None = None,
    ipv6: list[str] | None = None,
) -> Row:
    eni_id = new_id("eni")
    now = utcnow()
    ctx.conn.execute(
        insert(schema.network_interfaces).values(
            id=eni_id,
            account_id=ctx.account_id,
            region=ctx.region,
            subnet_id=subnet.id,
            vpc_id=subnet.vpc_id,
            availability_zone=subnet.availability_zone,
            private_ip=private_ip,
            mac_address=new_mac(),
            description=description,
            instance_id=instance_id,
            device_index=device_index if instance_id else None,
            attachment_id=("eni-attach-" + new_id("x")[2:]) if instance_id else None,
            attach_time=now if instance_id else None,
            status="in-use" if instance_id else "available",
            public_ip=None,
            wants_public_ip=wants_public_ip,
            source_dest_check=True,
            delete_on_termination=delete_on_termination,
            created_at=now,
            secondary_ips=list(secondary or []),
            ipv6_addresses=list(ipv6 or []),
        )
    )
    eni = get_row(ctx, eni_id)
    set_groups(ctx, eni, group_rows, log=False)
    ctx.log(
        "interface.created",
        eni_id,
        instance_id=instance_id,
        subnet_id=subnet.id,
        vpc_id=subnet.vpc_id,
        private_ip=private_ip,
        mac_address=eni.mac_address,
        group_ids=[g.id for g in group_rows],
        secondary_ips=list(secondary or []),
        ipv6_addresses=list(ipv6 or []),
    )
    return eni


def get_row(ctx: Ctx, eni_id: str) -> Row:
    return ctx.conn.execute(select(schema.network_interfaces).where(N.id == eni_id)).one()


def elastic_ip_of(ctx: Ctx, eni_id: str) -> Row | None:
    return ctx.conn.execute(select(schema.addresses).where(A.interface_id == eni_id)).first()


def public_ip_of(ctx: Ctx, eni: Row) -> str | None:
    eip = elastic_ip_of(ctx, eni.id)
    return eip.public_ip if eip is not None else eni.public_ip


def log_public_ip(ctx: Ctx, eni_id: str) -> None:
    eni = get_row(ctx, eni_id)
    ctx.log(
        "interface.public_ip",
        eni.id,
        instance_id=eni.instance_id,
        private_ip=eni.private_ip,
        public_ip=public_ip_of(ctx, eni),
    )


def assign_pool_ip(ctx: Ctx, eni: Row) -> str | None:
    """Give the interface a pool address if it wants one and has no public address."""
    if not eni.wants_public_ip or eni.public_ip is not None:
        return None
    if elastic_ip_of(ctx, eni.id) is not None:
        return None
    ip = take_public_ip(ctx)
    ctx.conn.execute(update(schema.network_interfaces).where(N.id == eni.id).values(public_ip=ip))
    log_public_ip(ctx, eni.id)
    return ip


def release_pool_ip(ctx: Ctx, eni: Row, *, log: bool = True) -> None:
    if eni.public_ip is None:
        return
    ctx.conn.execute(update(schema.network_interfaces).where(N.id == eni.id).values(public_ip=None))
    if log:
        log_public_ip(ctx, eni.id)


def disassociate_elastic_ip(ctx: Ctx, eip: Row) -> None:
    ctx.conn.execute(
        update(schema.addresses)
        .where(A.id == eip.id)
        .values(interface_id=None, association_id=None, private_ip=None)
    )
    ctx.log(
        "address.disassociated",
        eip.id,
        public_ip=eip.public_ip,
        association_id=eip.association_id,
        interface_id=eip.interface_id,
        private_ip=eip.private_ip,
    )


def delete_interface(ctx: Ctx, eni: Row) -> None:
    """Remove the interface: its Elastic IP is disassociated, its pool address returns."""
    eip = elastic_ip_of(ctx, eni.id)
    if eip is not None:
        disassociate_elastic_ip(ctx, eip)
    group_ids = [g["group_id"] for g in groups_of(ctx, [eni.id]).get(eni.id, [])]
    resources.drop_tags(ctx, [eni.id])
    ctx.conn.execute(delete(schema.interface_groups).where(IG.interface_id == eni.id))
    ctx.conn.execute(delete(schema.network_interfaces).where(N.id == eni.id))
    ctx.log(
        "interface.deleted",
        eni.id,
        instance_id=eni.instance_id,
        subnet_id=eni.subnet_id,
        private_ip=eni.private_ip,
        public_ip=eni.public_ip,
        group_ids=group_ids,
    )


# --- what other modules may not delete ------------------------------------------------------


_GROUP_IN_USE = Sql("SELECT interface_id FROM interface_groups WHERE group_id = ? LIMIT 1")


def _group_in_use(ctx: Ctx, group_id: str) -> None:
    if execute(ctx.conn, _GROUP_IN_USE, (group_id,)).fetchall():
        raise ApiError("DependencyViolation", f"resource {group_id} has a dependent object")


def _subnet_in_use(ctx: Ctx, subnet_id: str) -> None:
    used = ctx.conn.execute(select(N.id).where(N.subnet_id == subnet_id).limit(1)).first()
    if used is not None:
        raise ApiError(
            "DependencyViolation",
            f"The subnet '{subnet_id}' has dependencies and cannot be deleted.",
        )


groups.DELETE_CHECKS.append(_group_in_use)
vpcs.SUBNET_DELETE_CHECKS.append(_subnet_in_use)


# --- views for Describe* ------------------------------------------------------------------


@dataclass
class View:
    """An interface with what its descriptions need."""

    row: Row
    groups: list[Result] = field(default_factory=list)
    eip: Row | None = None
    tags: list | None = None
    instance_state: str | None = None

    @property
    def public_ip(self) -> str | None:
        return self.eip.public_ip if self.eip is not None else self.row.public_ip


def views(ctx: Ctx, rows: list[Row]) -> list[View]:
    ids = [r.id for r in rows]
    by_group = groups_of(ctx, ids)
    eips: dict[str, Row] = {}
    tags = resources.tags_for(ctx, ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for eip in ctx.conn.execute(select(schema.addresses).where(A.interface_id.in_(chunk))):
            eips[eip.interface_id] = eip
    return [View(r, by_group.get(r.id, []), eips.get(r.id), tags.get(r.id)) for r in rows]


def views_by_instance(ctx: Ctx, instance_ids: list[str]) -> dict[str, list[View]]:
    rows: list[Row] = []
    for start in range(0, len(instance_ids), 500):
        chunk = instance_ids[start : start + 500]
        rows += ctx.conn.execute(
            select(schema.network_interfaces)
            .where(N.instance_id.in_(chunk))
            .order_by(N.device_index)
        ).all()
    out: dict[str, list[View]] = defaultdict(list)
    for v in views(ctx, rows):
        out[v.row.instance_id].append(v)
    return out


def _association(ctx: Ctx, v: View, *, full: bool) -> Result | None:
    ip = v.public_ip
    if ip is None:
        return None
    out: Result = {
        "ip_owner_id": v.eip.account_id if v.eip is not None else "amazon",
        "public_dns_name": public_dns(ctx, ip),
        "public_ip": ip,
    }
    if full and v.eip is not None:
        out["allocation_id"] = v.eip.id
        out["association_id"] = v.eip.association_id
    return out


def _private_addresses(ctx: Ctx, r: Row, assoc: Result | None, dns: str) -> list[Result]:
    out: list[Result] = [
        {
            "association": assoc,
            "primary": True,
            "private_dns_name": dns,
            "private_ip_address": r.private_ip,
        }
    ]
    for ip in secondary_ips(r):
        out.append(
            {
                "primary": False,
                "private_dns_name": private_dns(ctx.region, ip),
                "private_ip_address": ip,
            }
        )
    return out


def instance_interface_result(ctx: Ctx, v: View) -> Result:
    """The InstanceNetworkInterface shape (inside DescribeInstances)."""
    r = v.row
    assoc = _association(ctx, v, full=False)
    dns = private_dns(ctx.region, r.private_ip)
    return {
        "association": assoc,
        "attachment": {
            "attach_time": r.attach_time,
            "attachment_id": r.attachment_id,
            "delete_on_termination": r.delete_on_termination,
            "device_index": r.device_index,
            "status": "attached",
            "network_card_index": 0,
        },
        "description": r.description,
        "groups": v.groups,
        "ipv6_addresses": [{"ipv6_address": a} for a in ipv6_of(r)],
        "mac_address": r.mac_address,
        "network_interface_id": r.id,
        "owner_id": r.account_id,
        "private_dns_name": dns,
        "private_ip_address": r.private_ip,
        "private_ip_addresses": _private_addresses(ctx, r, assoc, dns),
        "source_dest_check": r.source_dest_check,
        "status": r.status,
        "subnet_id": r.subnet_id,
        "vpc_id": r.vpc_id,
        "interface_type": "interface",
    }


def interface_result(ctx: Ctx, v: View) -> Result:
    """The NetworkInterface shape (DescribeNetworkInterfaces); ``tags`` is renamed later."""
    r = v.row
    assoc = _association(ctx, v, full=True)
    dns = private_dns(ctx.region, r.private_ip)
    out: Result = {
        "association": assoc,
        "availability_zone": r.availability_zone,
        "availability_zone_id": vpcs.zone_id(ctx.region, r.availability_zone[-1]),
        "description": r.description,
        "groups": v.groups,
        "interface_type": "interface",
        "ipv6_addresses": [{"ipv6_address": a} for a in ipv6_of(r)],
        "mac_address": r.mac_address,
        "network_interface_id": r.id,
        "owner_id": r.account_id,
        "private_dns_name": dns,
        "public_dns_name": assoc["public_dns_name"] if assoc else None,
        "private_ip_address": r.private_ip,
        "private_ip_addresses": _private_addresses(ctx, r, assoc, dns),
        "requester_managed": False,
        "source_dest_check": r.source_dest_check,
        "status": r.status,
        "subnet_id": r.subnet_id,
        "tags": v.tags or [],
        "vpc_id": r.vpc_id,
    }
    if r.instance_id is not None:
        out["attachment"] = {
            "attach_time": r.attach_time,
            "attachment_id": r.attachment_id,
            "delete_on_termination": r.delete_on_termination,
            "device_index": r.device_index,
            "network_card_index": 0,
            "instance_id": r.instance_id,
            "instance_owner_id": r.account_id,
            "status": "attached",
        }
    return out


def _assoc(i: Result, key: str) -> list:
    assoc = i.get("association")
    return [assoc.get(key)] if assoc else []


def _attach(i: Result, key: str) -> list:
    att = i.get("attachment")
    return [att.get(key)] if att else []


INTERFACE_FILTERS: FilterSpec = {
    "network-interface-id": lambda i: [i["network_interface_id"]],
    "attachment.instance-id": lambda i: _attach(i, "instance_id"),
    "instance-id": lambda i: _attach(i, "instance_id"),
    "attachment.attachment-id": lambda i: _attach(i, "attachment_id"),
    "attachment.device-index": lambda i: _attach(i, "device_index"),
    "attachment.status": lambda i: _attach(i, "status"),
    "attachment.instance-owner-id": lambda i: _attach(i, "instance_owner_id"),
    "attachment.delete-on-termination": lambda i: _attach(i, "delete_on_termination"),
    "group-id": lambda i: [g["group_id"] for g in i["groups"]],
    "group-name": lambda i: [g["group_name"] for g in i["groups"]],
    "private-ip-address": lambda i: [i["private_ip_address"]],
    "addresses.private-ip-address": lambda i: [
        a["private_ip_address"] for a in i["private_ip_addresses"]
    ],
    "addresses.primary": lambda i: [a["primary"] for a in i["private_ip_addresses"]],
    "addresses.association.public-ip": lambda i: _assoc(i, "public_ip"),
    "association.public-ip": lambda i: _assoc(i, "public_ip"),
    "association.allocation-id": lambda i: _assoc(i, "allocation_id"),
    "association.association-id": lambda i: _assoc(i, "association_id"),
    "association.ip-owner-id": lambda i: _assoc(i, "ip_owner_id"),
    "association.public-dns-name": lambda i: _assoc(i, "public_dns_name"),
    "private-dns-name": lambda i: [i["private_dns_name"]],
    "subnet-id": lambda i: [i["subnet_id"]],
    "vpc-id": lambda i: [i["vpc_id"]],
    "availability-zone": lambda i: [i["availability_zone"]],
    "status": lambda i: [i["status"]],
    "mac-address": lambda i: [i["mac_address"]],
    "owner-id": lambda i: [i["owner_id"]],
    "description": lambda i: [i["description"]],
    "interface-type": lambda i: [i["interface_type"]],
    "requester-managed": lambda i: [i["requester_managed"]],
    "source-dest-check": lambda i: [i["source_dest_check"]],
    "ipv6-addresses.ipv6-address": lambda i: [a["ipv6_address"] for a in i["ipv6_addresses"]],
}


def _interface_results(ctx: Ctx, rows: list[Row]) -> list[Result]:
    return [interface_result(ctx, v) for v in views(ctx, rows)]


def _tag_set(page: list[Result]) -> list[Result]:
    for item in page:
        item["tag_set"] = item.pop("tags")
    return page


INTERFACES = Describe(
    "network_interfaces",
    INTERFACE_FILTERS,
    _interface_results,
    table=schema.network_interfaces,
    prefix="eni",
    ids="network_interface_ids",
    ids_wire="networkInterfaceIdSet",
    pushed={
        "network-interface-id": N.id,
        "subnet-id": N.subnet_id,
        "vpc-id": N.vpc_id,
        "attachment.instance-id": N.instance_id,
        "private-ip-address": N.private_ip,
    },
    sort="network_interface_id",
    finish=_tag_set,
)


@action("DescribeNetworkInterfaces", write=False)
def describe_network_interfaces(ctx: Ctx, p: Params) -> Result:
    return INTERFACES.run(ctx, p)


def groups_for_request(ctx: Ctx, eni: Row, ids: list) -> list[Row]:
    if not ids:
        raise ApiError("MissingParameter", "The request must contain the parameter groupId")
    return groups_by_ids(ctx, eni.vpc_id, ids, None)


_UNSUPPORTED_ENI_FIELDS = (
    "associate_public_ip_address",
    "enable_primary_ipv6",
    "ena_srd_specification",
    "connection_tracking_specification",
    "associated_subnet_ids",
)


@action("ModifyNetworkInterfaceAttribute", write=True)
def modify_network_interface_attribute(ctx: Ctx, p: Params) -> Result:
    eni = resources.get(ctx, p.get("network_interface_id"), "eni")
    for key in _UNSUPPORTED_ENI_FIELDS:
        if p.get(key) is not None:
            raise ApiError(
                "UnsupportedOperation",
                f"Stockade does not support changing {key} of a network interface.",
            )
    given = [k for k in ("groups", "description", "source_dest_check", "attachment") if k in p]
    if not given:
        raise ApiError(
            "MissingParameter",
            "The request must contain one of the parameters SecurityGroupId, Description, "
            "SourceDestCheck or Attachment",
        )
    if len(given) > 1:
        raise ApiError(
            "InvalidParameterCombination",
            "Fields for multiple attribute types specified: " + ", ".join(given),
        )
    if "groups" in p:
        set_groups(ctx, eni, groups_for_request(ctx, eni, p["groups"] or []))
        return {}
    values: dict[str, object] = {}
    if "description" in p:
        values["description"] = resources.description((p["description"] or {}).get("value")) or ""
    elif "source_dest_check" in p:
        value = (p["source_dest_check"] or {}).get("value")
        if value is None:
            raise ApiError(
                "MissingParameter", "The request must contain the parameter SourceDestCheck.Value"
            )
        values["source_dest_check"] = value
    else:
        att = p["attachment"] or {}
        if att.get("attachment_id") != eni.attachment_id or eni.attachment_id is None:
            raise ApiError(
                "InvalidAttachmentID.NotFound",
                f"The attachment ID '{att.get('attachment_id')}' does not exist",
            )
        if att.get("delete_on_termination") is not None:
            values["delete_on_termination"] = att["delete_on_termination"]
    if values:
        ctx.conn.execute(update(schema.network_interfaces).where(N.id == eni.id).values(**values))
        ctx.log("interface.attribute", eni.id, **{k: v for k, v in values.items()})
    return {}


# --- interfaces as resources ----------------------------------------------------------------

MAX_INTERFACES_PER_INSTANCE = 8
MAX_ADDRESSES_PER_INTERFACE = 50  # private IPv4 addresses (primary included); IPv6 alike


def _count(value: object, wire: str) -> int:
    if not isinstance(value, int) or value < 0:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({value}) for parameter {wire} is invalid. Expected a positive integer.",
        )
    return value


def _check_address_count(count: int, what: str = "private IP addresses") -> None:
    if count > MAX_ADDRESSES_PER_INTERFACE:
        raise ApiError(
            "PrivateIpAddressLimitExceeded",
            f"Number of {what} exceeds the limit of {MAX_ADDRESSES_PER_INTERFACE} per "
            "network interface.",
        )


def plan_addresses(
    ctx: Ctx,
    subnet: Row,
    *,
    primary: object = None,
    listed: list | None = None,
    secondary_count: object = None,
    ipv6_listed: list | None = None,
    ipv6_count: object = None,
) -> tuple[str, list[str], list[str]]:
    """The primary, secondary and IPv6 addresses a new interface gets (EC2's rules)."""
    listed = listed or []
    primaries = [a.get("private_ip_address") for a in listed if a.get("primary")]
    if len(primaries) > 1:
        raise ApiError(
            "InvalidParameterValue", "Only one primary private IP address can be specified."
        )
    if primary is not None and primaries and primaries[0] != primary:
        raise ApiError(
            "InvalidParameterCombination",
            "The primary private IP address given in PrivateIpAddress and in "
            "PrivateIpAddresses differ.",
        )
    primary = primary if primary is not None else (primaries[0] if primaries else None)
    wanted = [a.get("private_ip_address") for a in listed if not a.get("primary")]
    if any(w is None for w in wanted):
        raise ApiError(
            "MissingParameter", "The request must contain the parameter PrivateIpAddress"
        )
    if secondary_count is not None and wanted:
        raise ApiError(
            "InvalidParameterCombination",
            "SecondaryPrivateIpAddressCount cannot be given with secondary PrivateIpAddresses.",
        )
    extra = _count(secondary_count, "SecondaryPrivateIpAddressCount") if secondary_count else 0
    _check_address_count(1 + len(wanted) + extra)
    chosen: list[str] = []
    for ip in [primary, *wanted] if primary is not None else wanted:
        checked = check_private_ip(ctx, subnet, ip)
        if checked in chosen:
            raise ApiError("InvalidParameterValue", f"The address {checked} is given twice.")
        chosen.append(checked)
    need = (0 if primary is not None else 1) + extra
    if need:
        pool = [ip for ip in free_private_ips(ctx, subnet, need + len(chosen)) if ip not in chosen]
        if len(pool) < need:
            raise ApiError(
                "InsufficientFreeAddressesInSubnet",
                f"There are not enough free addresses in subnet '{subnet.id}' to satisfy the "
                "requested number of addresses.",
            )
        if primary is None:
            chosen.insert(0, pool.pop(0))
        chosen += pool[:extra]
    v6 = plan_ipv6(ctx, subnet, ipv6_listed, ipv6_count)
    return chosen[0], chosen[1:], v6


def plan_ipv6(ctx: Ctx, subnet: Row, listed: list | None, count: object) -> list[str]:
    from stockade.service import ipv6

    listed = [a.get("ipv6_address") if isinstance(a, dict) else a for a in listed or []]
    if listed and count:
        raise ApiError(
            "InvalidParameterCombination",
            "Ipv6Addresses and Ipv6AddressCount cannot both be given.",
        )
    n = _count(count, "Ipv6AddressCount") if count else 0
    if not listed and not n:
        return []
    _check_address_count(len(listed) + n, "IPv6 addresses")
    used = ipv6_in_use(ctx)
    out: list[str] = []
    for value in listed:
        ip = ipv6.check_ipv6_address(ctx, subnet, value, used | set(out))
        out.append(ip)
    if n:
        out += ipv6.free_ipv6(ctx, subnet, n, used)
    return out


def _groups_for_new(ctx: Ctx, subnet: Row, ids: list) -> list[Row]:
    if not ids:
        return [default_group(ctx, subnet.vpc_id)]
    return groups_by_ids(ctx, subnet.vpc_id, ids, subnet.id)


def _describe_one(ctx: Ctx, eni_id: str) -> Result:
    (item,) = _interface_results(ctx, [get_row(ctx, eni_id)])
    item["tag_set"] = item.pop("tags")
    return item


@action("CreateNetworkInterface", write=True)
def create_network_interface(ctx: Ctx, p: Params) -> Result:
    subnet = resources.get(ctx, p.get("subnet_id"), "subnet")
    if p.get("interface_type") not in (None, "interface"):
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({p['interface_type']}) for parameter InterfaceType is invalid: "
            "Stockade makes plain interfaces only.",
        )
    for unsupported in ("ipv4_prefixes", "ipv4_prefix_count", "ipv6_prefixes", "ipv6_prefix_count"):
        if p.get(unsupported):
            raise ApiError(
                "UnsupportedOperation", f"Stockade does not support {unsupported} on interfaces."
            )
    rows = _groups_for_new(ctx, subnet, p.get("groups") or [])
    primary, secondary, v6 = plan_addresses(
        ctx,
        subnet,
        primary=p.get("private_ip_address"),
        listed=p.get("private_ip_addresses"),
        secondary_count=p.get("secondary_private_ip_address_count"),
        ipv6_listed=p.get("ipv6_addresses"),
        ipv6_count=p.get("ipv6_address_count"),
    )
    eni = create_interface(
        ctx,
        subnet,
        rows,
        primary,
        instance_id=None,
        description=resources.description(p.get("description")) or "",
        delete_on_termination=False,
        secondary=secondary,
        ipv6=v6,
    )
    resources.tag_specifications(ctx, p, "network-interface", eni.id)
    out: Result = {"network_interface": _describe_one(ctx, eni.id)}
    if p.get("client_token"):
        out["client_token"] = p["client_token"]
    return out


def _in_use(eni: Row) -> ApiError:
    return ApiError(
        "InvalidNetworkInterface.InUse", f"The network interface '{eni.id}' is currently in use."
    )


@action("DeleteNetworkInterface", write=True)
def delete_network_interface(ctx: Ctx, p: Params) -> Result:
    eni = resources.get(ctx, p.get("network_interface_id"), "eni")
    if eni.instance_id is not None:
        raise _in_use(eni)
    delete_interface(ctx, eni)
    return {}


def attach(ctx: Ctx, eni: Row, inst: Row, device_index: int) -> str:
    """Attach ``eni`` to ``inst`` at ``device_index``; returns the attachment id."""
    if eni.instance_id is not None:
        raise _in_use(eni)
    if eni.availability_zone != inst.availability_zone:
        raise ApiError(
            "InvalidParameterCombination",
            f"The network interface {eni.id} ({eni.availability_zone}) and the instance "
            f"{inst.id} ({inst.availability_zone}) are not in the same availability zone.",
        )
    if inst.state not in ("pending", "running", "stopping", "stopped"):
        raise ApiError(
            "IncorrectInstanceState",
            f"The instance '{inst.id}' is not in a state from which it can be attached to "
            f"(it is {inst.state}).",
        )
    taken = dict(
        ctx.conn.execute(select(N.device_index, N.id).where(N.instance_id == inst.id)).all()
    )
    if device_index in taken:
        raise ApiError(
            "InvalidParameterValue",
            f"Instance '{inst.id}' already has an interface attached at device index "
            f"'{device_index}'.",
        )
    if len(taken) >= MAX_INTERFACES_PER_INSTANCE:
        raise ApiError(
            "AttachmentLimitExceeded",
            f"Interface count {len(taken) + 1} exceeds the limit of "
            f"{MAX_INTERFACES_PER_INSTANCE} for instance {inst.id}.",
        )
    attachment_id = "eni-attach-" + new_id("x")[2:]
    ctx.conn.execute(
        update(schema.network_interfaces)
        .where(N.id == eni.id)
        .values(
            instance_id=inst.id,
            device_index=device_index,
            attachment_id=attachment_id,
            attach_time=utcnow(),
            status="in-use",
        )
    )
    ctx.log(
        "interface.attached",
        eni.id,
        instance_id=inst.id,
        device_index=device_index,
        attachment_id=attachment_id,
    )
    if inst.state in ("pending", "running"):
        assign_pool_ip(ctx, get_row(ctx, eni.id))
    return attachment_id


def detach(ctx: Ctx, eni: Row) -> None:
    release_pool_ip(ctx, eni, log=False)
    ctx.conn.execute(
        update(schema.network_interfaces)
        .where(N.id == eni.id)
        .values(
            instance_id=None,
            device_index=None,
            attachment_id=None,
            attach_time=None,
            status="available",
        )
    )
    ctx.log("interface.detached", eni.id, instance_id=eni.instance_id)


def _device_index(value: object) -> int:
    if not isinstance(value, int) or not 0 <= value < 32:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({value}) for parameter deviceIndex is invalid. Expected 0 to 31.",
        )
    return value


@action("AttachNetworkInterface", write=True)
def attach_network_interface(ctx: Ctx, p: Params) -> Result:
    index = _device_index(p.get("device_index"))
    eni = resources.get(ctx, p.get("network_interface_id"), "eni")
    inst = resources.get(ctx, p.get("instance_id"), "i")
    if p.get("network_card_index") not in (None, 0):
        raise ApiError(
            "InvalidParameterValue", "Stockade instances have one network card (index 0)."
        )
    return {"attachment_id": attach(ctx, eni, inst, index), "network_card_index": 0}


@action("DetachNetworkInterface", write=True)
def detach_network_interface(ctx: Ctx, p: Params) -> Result:
    value = p.get("attachment_id")
    eni = None
    if isinstance(value, str) and value.startswith("eni-attach-"):
        eni = ctx.conn.execute(
            select(schema.network_interfaces).where(
                N.attachment_id == value, N.account_id == ctx.account_id, N.region == ctx.region
            )
        ).first()
    if eni is None:
        raise ApiError(
            "InvalidAttachmentID.NotFound", f"The attachment ID '{value}' does not exist"
        )
    if eni.device_index == 0:
        raise ApiError(
            "OperationNotPermitted",
            f"The network interface at device index 0 cannot be detached ({eni.id} is the "
            "primary interface of its instance).",
        )
    detach(ctx, eni)
    return {}


def _log_addresses(ctx: Ctx, eni_id: str) -> None:
    eni = get_row(ctx, eni_id)
    ctx.log(
        "interface.addresses",
        eni.id,
        instance_id=eni.instance_id,
        secondary_ips=secondary_ips(eni),
        ipv6_addresses=ipv6_of(eni),
    )


@action("AssignPrivateIpAddresses", write=True)
def assign_private_ip_addresses(ctx: Ctx, p: Params) -> Result:
    eni = resources.get(ctx, p.get("network_interface_id"), "eni")
    if p.get("ipv4_prefixes") or p.get("ipv4_prefix_count"):
        raise ApiError("UnsupportedOperation", "Stockade does not support IPv4 prefixes.")
    wanted = p.get("private_ip_addresses") or []
    count = p.get("secondary_private_ip_address_count")
    if not wanted and not count:
        raise ApiError(
            "MissingParameter",
            "The request must contain the parameter PrivateIpAddress or "
            "SecondaryPrivateIpAddressCount",
        )
    if wanted and count:
        raise ApiError(
            "InvalidParameterCombination",
            "PrivateIpAddresses and SecondaryPrivateIpAddressCount cannot both be given.",
        )
    subnet = resources.get(ctx, eni.subnet_id, "subnet")
    current = secondary_ips(eni)
    n = _count(count, "SecondaryPrivateIpAddressCount") if count else len(wanted)
    _check_address_count(1 + len(current) + n)
    if wanted:
        mine = {eni.private_ip, *current}
        new = []
        for value in dict.fromkeys(wanted):
            if str(value) in mine:
                raise ApiError("InvalidIPAddress.InUse", f"Address {value} is in use.")
            new.append(check_private_ip(ctx, subnet, value))
    else:
        new = free_private_ips(ctx, subnet, n)
        if len(new) < n:
            raise ApiError(
                "InsufficientFreeAddressesInSubnet",
                f"There are not enough free addresses in subnet '{subnet.id}'.",
            )
    ctx.conn.execute(
        update(schema.network_interfaces).where(N.id == eni.id).values(secondary_ips=current + new)
    )
    _log_addresses(ctx, eni.id)
    return {
        "network_interface_id": eni.id,
        "assigned_private_ip_addresses": [{"private_ip_address": ip} for ip in new],
    }


@action("UnassignPrivateIpAddresses", write=True)
def unassign_private_ip_addresses(ctx: Ctx, p: Params) -> Result:
    eni = resources.get(ctx, p.get("network_interface_id"), "eni")
    if p.get("ipv4_prefixes"):
        raise ApiError("UnsupportedOperation", "Stockade does not support IPv4 prefixes.")
    wanted = [str(v) for v in p.get("private_ip_addresses") or []]
    if not wanted:
        raise ApiError(
            "MissingParameter", "The request must contain the parameter PrivateIpAddress"
        )
    current = secondary_ips(eni)
    if eni.private_ip in wanted:
        raise ApiError(
            "InvalidParameterValue",
            f"The primary private IP address {eni.private_ip} of {eni.id} cannot be unassigned.",
        )
    _unassign(ctx, eni.id, "secondary_ips", current, wanted)
    return {}


def _unassign(ctx: Ctx, eni_id: str, column: str, current: list[str], wanted: list[str]) -> None:
    """Take ``wanted`` out of the interface's ``column`` of addresses (all of them must be
    assigned to it: otherwise EC2's error, and nothing changes)."""
    missing = [w for w in wanted if w not in current]
    if missing:
        raise ApiError(
            "InvalidParameterValue",
            f"Some of the specified addresses are not assigned to interface {eni_id}: "
            + ", ".join(missing[:5]),
        )
    ctx.conn.execute(
        update(schema.network_interfaces)
        .where(N.id == eni_id)
        .values({column: [a for a in current if a not in wanted]})
    )
    _log_addresses(ctx, eni_id)


@action("AssignIpv6Addresses", write=True)
def assign_ipv6_addresses(ctx: Ctx, p: Params) -> Result:
    eni = resources.get(ctx, p.get("network_interface_id"), "eni")
    if p.get("ipv6_prefixes") or p.get("ipv6_prefix_count"):
        raise ApiError("UnsupportedOperation", "Stockade does not support IPv6 prefixes.")
    if not p.get("ipv6_addresses") and not p.get("ipv6_address_count"):
        raise ApiError(
            "MissingParameter",
            "The request must contain the parameter Ipv6Addresses or Ipv6AddressCount",
        )
    subnet = resources.get(ctx, eni.subnet_id, "subnet")
    current = ipv6_of(eni)
    new = plan_ipv6(ctx, subnet, p.get("ipv6_addresses"), p.get("ipv6_address_count"))
    _check_address_count(len(current) + len(new), "IPv6 addresses")
    ctx.conn.execute(
        update(schema.network_interfaces).where(N.id == eni.id).values(ipv6_addresses=current + new)
    )
    _log_addresses(ctx, eni.id)
    return {"network_interface_id": eni.id, "assigned_ipv6_addresses": new}


@action("UnassignIpv6Addresses", write=True)
def unassign_ipv6_addresses(ctx: Ctx, p: Params) -> Result:
    eni = resources.get(ctx, p.get("network_interface_id"), "eni")
    if p.get("ipv6_prefixes"):
        raise ApiError("UnsupportedOperation", "Stockade does not support IPv6 prefixes.")
    wanted = []
    for value in p.get("ipv6_addresses") or []:
        try:
            wanted.append(str(ipaddress.IPv6Address(str(value))))
        except ValueError:
            raise ApiError(
                "InvalidParameterValue",
                f"Value ({value}) for parameter ipv6Addresses is invalid.",
            ) from None
    if not wanted:
        raise ApiError("MissingParameter", "The request must contain the parameter Ipv6Addresses")
    _unassign(ctx, eni.id, "ipv6_addresses", ipv6_of(eni), wanted)
    return {"network_interface_id": eni.id, "unassigned_ipv6_addresses": wanted}


_ATTRIBUTES = (
    "description",
    "groupSet",
    "sourceDestCheck",
    "attachment",
    "associatePublicIpAddress",
)


@action("DescribeNetworkInterfaceAttribute", write=False)
def describe_network_interface_attribute(ctx: Ctx, p: Params) -> Result:
    eni = resources.get(ctx, p.get("network_interface_id"), "eni")
    attribute = p.get("attribute")
    if attribute is None:
        raise ApiError("MissingParameter", "The request must contain the parameter Attribute")
    if attribute not in _ATTRIBUTES:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({attribute}) for parameter attribute is invalid. Unknown network "
            "interface attribute",
        )
    out: Result = {"network_interface_id": eni.id}
    if attribute == "description":
        out["description"] = {"value": eni.description}
    elif attribute == "groupSet":
        out["groups"] = groups_of(ctx, [eni.id]).get(eni.id, [])
    elif attribute == "sourceDestCheck":
        out["source_dest_check"] = {"value": eni.source_dest_check}
    elif attribute == "associatePublicIpAddress":
        out["associate_public_ip_address"] = bool(eni.wants_public_ip)
    elif eni.instance_id is not None:
        out["attachment"] = {
            "attach_time": eni.attach_time,
            "attachment_id": eni.attachment_id,
            "delete_on_termination": eni.delete_on_termination,
            "device_index": eni.device_index,
            "network_card_index": 0,
            "instance_id": eni.instance_id,
            "instance_owner_id": eni.account_id,
            "status": "attached",
        }
    return out


@action("ResetNetworkInterfaceAttribute", write=True)
def reset_network_interface_attribute(ctx: Ctx, p: Params) -> Result:
    eni = resources.get(ctx, p.get("network_interface_id"), "eni")
    if p.get("source_dest_check") not in (None, "sourceDestCheck"):
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({p['source_dest_check']}) for parameter sourceDestCheck is invalid.",
        )
    ctx.conn.execute(
        update(schema.network_interfaces).where(N.id == eni.id).values(source_dest_check=True)
    )
    ctx.log("interface.attribute", eni.id, source_dest_check=True)
    return {}
