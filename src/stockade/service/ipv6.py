"""IPv6 blocks of VPCs and subnets, and a VPC's secondary IPv4 blocks.

``AmazonProvidedIpv6CidrBlock`` gives a VPC a /56 from Stockade's IPv6 pool
``fd00:ec2::/32`` (a unique-local range, RFC 4193, so it never collides with a routed
prefix): one pool for every account and region, handed out in order from a cursor in
``counters``, so every VPC's block is unique and the one-machine sandbox routes them all on
one network. A subnet takes one /64 of its VPC's block (AssociateSubnetCidrBlock); its
interfaces' IPv6 addresses come from it. When a VPC gets its IPv6 block, its default
group gets EC2's ``::/0`` egress rule.

Blocks are rows of ``cidr_blocks`` keyed by the association id
(``vpc-cidr-assoc-...``, ``subnet-cidr-assoc-...``).
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import Row, delete, insert, select, update

from stockade.errors import ApiError
from stockade.service import groups, resources
from stockade.service.common import Ctx, Params, Result, action, new_id
from stockade.store import schema
from stockade.store.db import utcnow

IPV6_POOL = ipaddress.IPv6Network("fd00:ec2::/32")
POOL_CURSOR = "ipv6_pool_cursor"
CB = schema.cidr_blocks.c
N = schema.network_interfaces.c
S = schema.subnets.c


def blocks(ctx: Ctx, resource_id: str, *, ipv6: bool | None = True) -> list[Row]:
    q = select(schema.cidr_blocks).where(CB.resource_id == resource_id)
    if ipv6 is not None:
        q = q.where(CB.ipv6 == ipv6)
    return list(ctx.conn.execute(q.order_by(CB.created_at, CB.id)))


def ipv6_block(ctx: Ctx, resource_id: str) -> ipaddress.IPv6Network | None:
    found = blocks(ctx, resource_id)
    return ipaddress.IPv6Network(found[0].cidr) if found else None


def _take_vpc_block(ctx: Ctx) -> str:
    c = schema.counters.c
    cursor = ctx.conn.execute(select(c.value).where(c.name == POOL_CURSOR)).scalar()
    if cursor is None:
        ctx.conn.execute(insert(schema.counters).values(name=POOL_CURSOR, value=1))
        cursor = 1
    ctx.conn.execute(update(schema.counters).where(c.name == POOL_CURSOR).values(value=cursor + 1))
    size = 1 << (56 - IPV6_POOL.prefixlen)
    if cursor >= size:
        raise ApiError(
            "InsufficientCidrBlocks", f"Stockade's IPv6 pool {IPV6_POOL} has no /56 left."
        )
    base = int(IPV6_POOL.network_address) + (cursor << (128 - 56))
    return str(ipaddress.IPv6Network((base, 56)))


def _add_block(ctx: Ctx, prefix: str, resource_id: str, cidr: str, ipv6: bool) -> str:
    assoc = f"{prefix}-cidr-assoc-" + new_id("x")[2:]
    ctx.conn.execute(
        insert(schema.cidr_blocks).values(
            id=assoc,
            account_id=ctx.account_id,
            region=ctx.region,
            resource_id=resource_id,
            cidr=cidr,
            ipv6=ipv6,
            created_at=utcnow(),
        )
    )
    return assoc


def _default_ipv6_egress(ctx: Ctx, vpc_id: str) -> None:
    """The default group's ``::/0`` egress rule (EC2 adds it when the VPC has IPv6)."""
    group = groups.group_by_name(ctx, "default", vpc_id=vpc_id)
    spec = groups.RuleSpec(True, "-1", -1, -1, cidr_ipv6="::/0")
    current = groups.rule_keys(ctx, group.id)
    if spec.key in {r[groups._KEY] for r in current}:
        return
    groups.insert_rules(ctx, group, [spec], current)
    groups.log_rules(ctx, group)


def give_vpc_ipv6(ctx: Ctx, vpc_id: str) -> Row:
    if blocks(ctx, vpc_id):
        raise ApiError(
            "CidrLimitExceeded",
            f"The VPC {vpc_id} already has an IPv6 CIDR block; Stockade gives one per VPC.",
        )
    assoc = _add_block(ctx, "vpc", vpc_id, _take_vpc_block(ctx), True)
    _default_ipv6_egress(ctx, vpc_id)
    ctx.log("vpc.ipv6", vpc_id, association_id=assoc)
    return ctx.conn.execute(select(schema.cidr_blocks).where(CB.id == assoc)).one()


def vpc_created(ctx: Ctx, vpc_id: str, p: Params) -> None:
    """CreateVpc's IPv6 parameters."""
    if p.get("ipv6_pool") or p.get("ipv6_cidr_block") or p.get("ipv6_ipam_pool_id"):
        raise ApiError(
            "UnsupportedOperation",
            "Stockade provides IPv6 blocks itself: use AmazonProvidedIpv6CidrBlock.",
        )
    if p.get("amazon_provided_ipv6_cidr_block"):
        give_vpc_ipv6(ctx, vpc_id)


def _vpc_assoc(row: Row) -> Result:
    if row.ipv6:
        return {
            "association_id": row.id,
            "ipv6_cidr_block": row.cidr,
            "ipv6_cidr_block_state": {"state": "associated"},
            "network_border_group": row.region,
            "ipv6_pool": "Amazon",
        }
    return {
        "association_id": row.id,
        "cidr_block": row.cidr,
        "cidr_block_state": {"state": "associated"},
    }


def vpc_ipv6_set(ctx: Ctx, vpc_id: str) -> list[Result]:
    return [_vpc_assoc(r) for r in blocks(ctx, vpc_id)]


def vpc_ipv4_set(ctx: Ctx, vpc_id: str) -> list[Result]:
    return [_vpc_assoc(r) for r in blocks(ctx, vpc_id, ipv6=False)]


def subnet_ipv6_set(ctx: Ctx, subnet_id: str) -> list[Result]:
    return [
        {
            "association_id": r.id,
            "ipv6_cidr_block": r.cidr,
            "ipv6_cidr_block_state": {"state": "associated"},
        }
        for r in blocks(ctx, subnet_id)
    ]


@action("AssociateVpcCidrBlock", write=True)
def associate_vpc_cidr_block(ctx: Ctx, p: Params) -> Result:
    vpc = resources.get(ctx, p.get("vpc_id"), "vpc")
    if p.get("ipv6_pool") or p.get("ipv6_cidr_block") or p.get("ipv6_ipam_pool_id"):
        raise ApiError(
            "UnsupportedOperation",
            "Stockade provides IPv6 blocks itself: use AmazonProvidedIpv6CidrBlock.",
        )
    if p.get("amazon_provided_ipv6_cidr_block"):
        if p.get("cidr_block"):
            raise ApiError(
                "InvalidParameterCombination",
                "CidrBlock and AmazonProvidedIpv6CidrBlock cannot both be given.",
            )
        row = give_vpc_ipv6(ctx, vpc.id)
        return {"ipv6_cidr_block_association": _vpc_assoc(row), "vpc_id": vpc.id}
    if not p.get("cidr_block"):
        raise ApiError(
            "MissingParameter",
            "The request must contain the parameter CidrBlock or AmazonProvidedIpv6CidrBlock",
        )
    try:
        net = ipaddress.IPv4Network(str(p["cidr_block"]), strict=False)
        if "/" not in str(p["cidr_block"]) or not 16 <= net.prefixlen <= 28:
            raise ValueError
    except ValueError:
        raise ApiError("InvalidVpc.Range", f"The CIDR '{p['cidr_block']}' is invalid.") from None
    taken = [ipaddress.IPv4Network(vpc.cidr)] + [
        ipaddress.IPv4Network(r.cidr) for r in blocks(ctx, vpc.id, ipv6=False)
    ]
    if any(net.overlaps(t) for t in taken):
        raise ApiError(
            "InvalidVpc.Range",
            f"The CIDR '{net}' conflicts with another CIDR block of the VPC {vpc.id}.",
        )
    if len(taken) >= 5:
        raise ApiError("CidrLimitExceeded", f"The VPC {vpc.id} has the most CIDR blocks (5).")
    assoc = _add_block(ctx, "vpc", vpc.id, str(net), False)
    ctx.log("vpc.cidr", vpc.id, association_id=assoc, cidr=str(net))
    row = ctx.conn.execute(select(schema.cidr_blocks).where(CB.id == assoc)).one()
    return {"cidr_block_association": _vpc_assoc(row), "vpc_id": vpc.id}


def _association(ctx: Ctx, value: object, prefix: str) -> Row:
    row = None
    if isinstance(value, str) and value.startswith(f"{prefix}-cidr-assoc-"):
        row = ctx.conn.execute(
            select(schema.cidr_blocks).where(
                CB.id == value, CB.account_id == ctx.account_id, CB.region == ctx.region
            )
        ).first()
    if row is None:
        raise ApiError(
            "InvalidCidrBlockAssociationID.NotFound"
            if prefix == "vpc"
            else "InvalidSubnetCidrBlockAssociationID.NotFound",
            f"The association ID '{value}' does not exist",
        )
    return row


@action("DisassociateVpcCidrBlock", write=True)
def disassociate_vpc_cidr_block(ctx: Ctx, p: Params) -> Result:
    row = _association(ctx, p.get("association_id"), "vpc")
    if row.ipv6:
        subnets = list(ctx.conn.execute(select(S.id).where(S.vpc_id == row.resource_id)).scalars())
        for subnet_id in subnets:
            if blocks(ctx, subnet_id):
                raise ApiError(
                    "DependencyViolation",
                    f"The IPv6 CIDR block of {row.resource_id} is used by subnet {subnet_id}; "
                    "disassociate the subnet's block first.",
                )
    else:
        net = ipaddress.IPv4Network(row.cidr)
        for subnet_id, cidr in ctx.conn.execute(
            select(S.id, S.cidr).where(S.vpc_id == row.resource_id)
        ).all():
            if ipaddress.IPv4Network(cidr).subnet_of(net):
                raise ApiError(
                    "DependencyViolation",
                    f"The CIDR block {row.cidr} is used by subnet {subnet_id}.",
                )
    ctx.conn.execute(delete(schema.cidr_blocks).where(CB.id == row.id))
    ctx.log("vpc.cidr_removed", row.resource_id, association_id=row.id)
    out: Result = {"vpc_id": row.resource_id}
    assoc = _vpc_assoc(row)
    state = {"state": "disassociated"}
    if row.ipv6:
        assoc["ipv6_cidr_block_state"] = state
        out["ipv6_cidr_block_association"] = assoc
    else:
        assoc["cidr_block_state"] = state
        out["cidr_block_association"] = assoc
    return out


def add_subnet_ipv6(ctx: Ctx, subnet: Row, value: object) -> tuple[str, str]:
    """Give ``subnet`` the IPv6 /64 ``value`` of its VPC's block: (association id, CIDR)."""
    text = str(value)
    try:
        net = ipaddress.IPv6Network(text, strict=False)
        if "/" not in text:
            raise ValueError
    except ValueError:
        raise ApiError("InvalidSubnet.Range", f"The CIDR '{text}' is invalid.") from None
    if net.prefixlen != 64:
        raise ApiError(
            "InvalidSubnet.Range", f"The IPv6 CIDR '{net}' is invalid: a subnet takes a /64."
        )
    vpc_block = ipv6_block(ctx, subnet.vpc_id)
    if vpc_block is None or not net.subnet_of(vpc_block):
        raise ApiError(
            "InvalidSubnet.Range",
            f"The IPv6 CIDR '{net}' is not within the IPv6 CIDR block of {subnet.vpc_id}.",
        )
    if blocks(ctx, subnet.id):
        raise ApiError(
            "InvalidParameterValue", f"The subnet {subnet.id} already has an IPv6 CIDR block."
        )
    siblings = list(ctx.conn.execute(select(S.id).where(S.vpc_id == subnet.vpc_id)).scalars())
    for other in siblings:
        if ipv6_block(ctx, other) == net:
            raise ApiError(
                "InvalidSubnet.Conflict", f"The CIDR '{net}' conflicts with another subnet"
            )
    assoc = _add_block(ctx, "subnet", subnet.id, str(net), True)
    ctx.log("subnet.ipv6", subnet.id, association_id=assoc, cidr=str(net))
    return assoc, str(net)


def vpc_ipv4_blocks(ctx: Ctx, vpc_id: str) -> list[ipaddress.IPv4Network]:
    """The VPC's secondary IPv4 blocks (subnets may take addresses from them too)."""
    return [ipaddress.IPv4Network(r.cidr) for r in blocks(ctx, vpc_id, ipv6=False)]


@action("AssociateSubnetCidrBlock", write=True)
def associate_subnet_cidr_block(ctx: Ctx, p: Params) -> Result:
    subnet = resources.get(ctx, p.get("subnet_id"), "subnet")
    if p.get("ipv6_cidr_block") is None:
        raise ApiError("MissingParameter", "The request must contain the parameter Ipv6CidrBlock")
    assoc, cidr = add_subnet_ipv6(ctx, subnet, p["ipv6_cidr_block"])
    return {
        "ipv6_cidr_block_association": {
            "association_id": assoc,
            "ipv6_cidr_block": cidr,
            "ipv6_cidr_block_state": {"state": "associated"},
        },
        "subnet_id": subnet.id,
    }


@action("DisassociateSubnetCidrBlock", write=True)
def disassociate_subnet_cidr_block(ctx: Ctx, p: Params) -> Result:
    row = _association(ctx, p.get("association_id"), "subnet")
    used = ctx.conn.execute(
        select(N.id, N.ipv6_addresses).where(N.subnet_id == row.resource_id)
    ).all()
    for eni_id, addresses in used:
        if addresses:
            raise ApiError(
                "DependencyViolation",
                f"The IPv6 CIDR block is in use by network interface {eni_id}.",
            )
    ctx.conn.execute(delete(schema.cidr_blocks).where(CB.id == row.id))
    ctx.log("subnet.ipv6_removed", row.resource_id, association_id=row.id)
    return {
        "ipv6_cidr_block_association": {
            "association_id": row.id,
            "ipv6_cidr_block": row.cidr,
            "ipv6_cidr_block_state": {"state": "disassociated"},
        },
        "subnet_id": row.resource_id,
    }


def check_ipv6_address(ctx: Ctx, subnet: Row, value: object, used: set[str]) -> str:
    block = ipv6_block(ctx, subnet.id)
    if block is None:
        raise ApiError(
            "InvalidParameterValue",
            f"The subnet {subnet.id} has no IPv6 CIDR block: associate one first "
            "(AssociateSubnetCidrBlock).",
        )
    try:
        ip = ipaddress.IPv6Address(str(value))
    except ValueError:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({value}) for parameter ipv6Address is invalid. Expecting an IPv6 address.",
        ) from None
    if ip not in block:
        raise ApiError(
            "InvalidParameterValue",
            f"Address {ip} does not fall within the subnet's IPv6 range {block}",
        )
    if int(ip) - int(block.network_address) < 4 or ip == block.broadcast_address:
        raise ApiError("InvalidParameterValue", f"Address {ip} is reserved in {block}.")
    if str(ip) in used:
        raise ApiError("InvalidIPAddress.InUse", f"Address {ip} is in use.")
    return str(ip)


def free_ipv6(ctx: Ctx, subnet: Row, count: int, used: set[str]) -> list[str]:
    block = ipv6_block(ctx, subnet.id)
    if block is None:
        raise ApiError(
            "InvalidParameterValue",
            f"The subnet {subnet.id} has no IPv6 CIDR block: associate one first "
            "(AssociateSubnetCidrBlock).",
        )
    out: list[str] = []
    value = int(block.network_address) + 0x10
    while len(out) < count:
        ip = str(ipaddress.IPv6Address(value))
        if ip not in used:
            out.append(ip)
        value += 1
    return out
