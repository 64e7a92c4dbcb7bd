"""VPCs and subnets, and the default VPC every account gets in every region."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update

from stockade.errors import ApiError
from stockade.service import groups, ipv6, resources
from stockade.service.common import (
    ZONE_LETTERS,
    Ctx,
    FilterSpec,
    Params,
    Result,
    action,
    new_id,
)
from stockade.service.describe import Describe, tagged
from stockade.store import schema

DEFAULT_VPC_CIDR = "172.31.0.0/16"
V = schema.vpcs.c
S = schema.subnets.c


def region_ready(ctx: Ctx) -> bool:
    rt = schema.regions.c
    return (
        ctx.conn.execute(
            select(rt.default_vpc_id).where(
                rt.account_id == ctx.account_id, rt.region == ctx.region
            )
        ).first()
        is not None
    )


def ensure_region(ctx: Ctx) -> None:
    """Create the default VPC (172.31.0.0/16), one /20 subnet per zone and the default group."""
    if region_ready(ctx):
        return
    vpc = create_vpc_row(ctx, DEFAULT_VPC_CIDR, is_default=True)
    ctx.conn.execute(
        insert(schema.regions).values(
            account_id=ctx.account_id, region=ctx.region, default_vpc_id=vpc.id
        )
    )
    net = ipaddress.ip_network(DEFAULT_VPC_CIDR)
    for letter, cidr in zip(ZONE_LETTERS, net.subnets(new_prefix=20), strict=False):
        create_subnet_row(ctx, vpc.id, str(cidr), f"{ctx.region}{letter}", default=True)


def create_vpc_row(ctx: Ctx, cidr: str, *, is_default: bool = False) -> Row:
    vpc_id = new_id("vpc")
    ctx.conn.execute(
        insert(schema.vpcs).values(
            id=vpc_id,
            account_id=ctx.account_id,
            region=ctx.region,
            cidr=cidr,
            is_default=is_default,
            state="available",
        )
    )
    ctx.log("vpc.created", vpc_id, cidr=cidr)
    groups.create_group(ctx, vpc_id, "default", "default VPC security group")
    return ctx.conn.execute(select(schema.vpcs).where(V.id == vpc_id)).one()


def create_subnet_row(ctx: Ctx, vpc_id: str, cidr: str, zone: str, *, default: bool) -> Row:
    subnet_id = new_id("subnet")
    ctx.conn.execute(
        insert(schema.subnets).values(
            id=subnet_id,
            account_id=ctx.account_id,
            region=ctx.region,
            vpc_id=vpc_id,
            cidr=cidr,
            availability_zone=zone,
            default_for_az=default,
            map_public_ip=default,
        )
    )
    ctx.log("subnet.created", subnet_id, vpc_id=vpc_id, cidr=cidr)
    return ctx.conn.execute(select(schema.subnets).where(S.id == subnet_id)).one()


def check_block(value: object, lo: int, hi: int, code: str) -> ipaddress.IPv4Network:
    try:
        # host bits set are cleared, as EC2 does (10.250.1.0/16 is 10.250.0.0/16)
        net = ipaddress.IPv4Network(str(value), strict=False)
        if "/" not in str(value) or not lo <= net.prefixlen <= hi:
            raise ValueError(value)
    except ValueError:
        raise ApiError(code, f"The CIDR '{value}' is invalid.") from None
    return net


def vpc_result(ctx: Ctx, row: Row, tags: list | None) -> Result:
    out: Result = {
        "vpc_id": row.id,
        "owner_id": row.account_id,
        "cidr_block": row.cidr,
        "state": row.state,
        "is_default": row.is_default,
        "instance_tenancy": "default",
        "dhcp_options_id": "default",
        "cidr_block_association_set": [
            {
                "association_id": "vpc-cidr-assoc-" + row.id[4:],
                "cidr_block": row.cidr,
                "cidr_block_state": {"state": "associated"},
            },
            *ipv6.vpc_ipv4_set(ctx, row.id),
        ],
    }
    v6 = ipv6.vpc_ipv6_set(ctx, row.id)
    if v6:
        out["ipv6_cidr_block_association_set"] = v6
    if tags:
        out["tags"] = tags
    return out


def subnet_result(ctx: Ctx, row: Row, tags: list | None, used: int = 0) -> Result:
    size = ipaddress.ip_network(row.cidr).num_addresses
    out: Result = {
        "subnet_id": row.id,
        "vpc_id": row.vpc_id,
        "owner_id": row.account_id,
        "cidr_block": row.cidr,
        "state": "available",
        "availability_zone": row.availability_zone,
        "availability_zone_id": zone_id(ctx.region, row.availability_zone[-1]),
        "available_ip_address_count": max(size - 5 - used, 0),
        "default_for_az": row.default_for_az,
        "map_public_ip_on_launch": row.map_public_ip,
        "subnet_arn": ctx.arn("subnet", row.id, row.account_id),
        "ipv6_cidr_block_association_set": ipv6.subnet_ipv6_set(ctx, row.id),
        "assign_ipv6_address_on_creation": False,
    }
    if tags:
        out["tags"] = tags
    return out


# EC2's short names of the directions in region names, for zone ids (use1-az1, apse2-az3)
_DIRECTIONS = {
    "east": "e",
    "west": "w",
    "north": "n",
    "south": "s",
    "central": "c",
    "northeast": "ne",
    "northwest": "nw",
    "southeast": "se",
    "southwest": "sw",
}


def zone_id(region: str, letter: str) -> str:
    """EC2's id of a zone: the region's short name (``use1`` for us-east-1, ``apse2`` for
    ap-southeast-2) and the zone's number (Stockade maps letter a to az1, b to az2, ...)."""
    country, direction, number = region.split("-")
    return f"{country}{_DIRECTIONS[direction]}{number}-az{ZONE_LETTERS.index(letter) + 1}"


@action("CreateVpc", write=True)
def create_vpc(ctx: Ctx, p: Params) -> Result:
    if not p.get("cidr_block"):
        raise ApiError("MissingParameter", "The request must contain the parameter cidrBlock")
    net = check_block(p["cidr_block"], 16, 28, "InvalidVpc.Range")
    row = create_vpc_row(ctx, str(net))
    ipv6.vpc_created(ctx, row.id, p)
    resources.tag_specifications(ctx, p, "vpc", row.id)
    return {"vpc": vpc_result(ctx, row, resources.tags_for(ctx, [row.id]).get(row.id))}


@action("DeleteVpc", write=True)
def delete_vpc(ctx: Ctx, p: Params) -> Result:
    vpc = resources.get(ctx, p.get("vpc_id"), "vpc")
    G = schema.security_groups.c
    others = ctx.conn.execute(
        select(func.count())
        .select_from(schema.security_groups)
        .where(G.vpc_id == vpc.id, G.name != "default")
    ).scalar_one()
    subnets = ctx.conn.execute(
        select(func.count()).select_from(schema.subnets).where(S.vpc_id == vpc.id)
    ).scalar_one()
    if others or subnets:
        raise ApiError(
            "DependencyViolation", f"The vpc '{vpc.id}' has dependencies and cannot be deleted."
        )
    default_group = ctx.conn.execute(
        select(schema.security_groups).where(G.vpc_id == vpc.id, G.name == "default")
    ).first()
    if default_group is not None:
        referenced = ctx.conn.execute(
            select(schema.rules.c.id).where(
                schema.rules.c.ref_group_id == default_group.id,
                schema.rules.c.group_id != default_group.id,
            )
        ).first()
        if referenced is not None:
            raise ApiError(
                "DependencyViolation",
                f"The vpc '{vpc.id}' has dependencies and cannot be deleted.",
            )
        rule_ids = [r.id for r in groups.existing_rules(ctx, default_group.id)]
        resources.drop_tags(ctx, [default_group.id, *rule_ids])
        ctx.conn.execute(delete(schema.rules).where(schema.rules.c.group_id == default_group.id))
        ctx.conn.execute(delete(schema.security_groups).where(G.id == default_group.id))
        ctx.log("group.deleted", default_group.id, vpc_id=vpc.id)
    resources.drop_tags(ctx, [vpc.id])
    resources.drop_attributes(ctx, [vpc.id])
    ctx.conn.execute(delete(schema.vpcs).where(V.id == vpc.id))
    ctx.log("vpc.deleted", vpc.id)
    return {}


VPC_FILTERS: FilterSpec = {
    "vpc-id": lambda v: [v["vpc_id"]],
    "cidr": lambda v: [v["cidr_block"]],
    "cidr-block": lambda v: [v["cidr_block"]],  # not in EC2's list, but EC2 takes it
    "cidr-block-association.cidr-block": lambda v: [
        a["cidr_block"] for a in v["cidr_block_association_set"]
    ],
    "cidr-block-association.association-id": lambda v: [
        a["association_id"] for a in v["cidr_block_association_set"]
    ],
    "cidr-block-association.state": lambda v: [
        a["cidr_block_state"]["state"] for a in v["cidr_block_association_set"]
    ],
    "is-default": lambda v: [v["is_default"]],
    "state": lambda v: [v["state"]],
    "owner-id": lambda v: [v["owner_id"]],
    "dhcp-options-id": lambda v: [v["dhcp_options_id"]],
    "instance-tenancy": lambda v: [v["instance_tenancy"]],
}


VPCS = Describe(
    "vpcs",
    VPC_FILTERS,
    tagged(vpc_result),
    table=schema.vpcs,
    prefix="vpc",
    ids="vpc_ids",
    sort="vpc_id",
)


@action("DescribeVpcs", write=False)
def describe_vpcs(ctx: Ctx, p: Params) -> Result:
    return VPCS.run(ctx, p)


@action("CreateSubnet", write=True)
def create_subnet(ctx: Ctx, p: Params) -> Result:
    vpc = resources.get(ctx, p.get("vpc_id"), "vpc")
    if not p.get("cidr_block"):
        raise ApiError("MissingParameter", "The request must contain the parameter cidrBlock")
    net = check_block(p["cidr_block"], 16, 28, "InvalidSubnet.Range")
    vpc_blocks = [ipaddress.IPv4Network(vpc.cidr), *ipv6.vpc_ipv4_blocks(ctx, vpc.id)]
    if not any(net.subnet_of(b) for b in vpc_blocks):
        raise ApiError("InvalidSubnet.Range", f"The CIDR '{net}' is invalid.")
    for other in ctx.conn.execute(select(S.cidr).where(S.vpc_id == vpc.id)).scalars():
        if net.overlaps(ipaddress.IPv4Network(other)):
            raise ApiError(
                "InvalidSubnet.Conflict", f"The CIDR '{net}' conflicts with another subnet"
            )
    zones = [f"{ctx.region}{letter}" for letter in ZONE_LETTERS]
    zone = p.get("availability_zone") or zones[0]
    if p.get("availability_zone_id"):
        by_id = {zone_id(ctx.region, z[-1]): z for z in zones}
        zone = by_id.get(p["availability_zone_id"], "")
    if zone not in zones:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({zone}) for parameter availabilityZone is invalid. "
            f"Subnets can currently only be created in the following availability zones: "
            f"{', '.join(zones)}.",
        )
    row = create_subnet_row(ctx, vpc.id, str(net), zone, default=False)
    if p.get("ipv6_cidr_block") is not None:
        ipv6.add_subnet_ipv6(ctx, row, p["ipv6_cidr_block"])
    resources.tag_specifications(ctx, p, "subnet", row.id)
    return {"subnet": subnet_result(ctx, row, resources.tags_for(ctx, [row.id]).get(row.id))}


def _default_vpc(ctx: Ctx) -> Row | None:
    return ctx.conn.execute(
        select(schema.vpcs).where(
            V.account_id == ctx.account_id, V.region == ctx.region, V.is_default.is_(True)
        )
    ).first()


@action("CreateDefaultVpc", write=True)
def create_default_vpc(ctx: Ctx, p: Params) -> Result:
    """A default VPC again after the last was deleted: 172.31.0.0/16, a default /20 subnet
    in each zone, its default group (EC2's errors while one exists)."""
    if _default_vpc(ctx) is not None:
        raise ApiError(
            "DefaultVpcAlreadyExists",
            "A Default VPC already exists for this account in this region.",
        )
    vpc = create_vpc_row(ctx, DEFAULT_VPC_CIDR, is_default=True)
    rt = schema.regions.c
    ctx.conn.execute(
        update(schema.regions)
        .where(rt.account_id == ctx.account_id, rt.region == ctx.region)
        .values(default_vpc_id=vpc.id)
    )
    net = ipaddress.ip_network(DEFAULT_VPC_CIDR)
    for letter, cidr in zip(ZONE_LETTERS, net.subnets(new_prefix=20), strict=False):
        create_subnet_row(ctx, vpc.id, str(cidr), f"{ctx.region}{letter}", default=True)
    return {"vpc": vpc_result(ctx, vpc, None)}


@action("CreateDefaultSubnet", write=True)
def create_default_subnet(ctx: Ctx, p: Params) -> Result:
    """A default /20 subnet of the default VPC in a zone that has none."""
    if p.get("ipv6_native"):
        raise ApiError("UnsupportedOperation", "Stockade does not support IPv6-only subnets.")
    zone = _zone_of(ctx, p.get("availability_zone"), p.get("availability_zone_id"), required=True)
    vpc = _default_vpc(ctx)
    if vpc is None:
        raise ApiError(
            "DefaultVpcDoesNotExist", "No default VPC exists for this account in this region."
        )
    taken = list(
        ctx.conn.execute(
            select(S.cidr, S.availability_zone, S.default_for_az).where(S.vpc_id == vpc.id)
        )
    )
    if any(z == zone and default for _, z, default in taken):
        raise ApiError(
            "DefaultSubnetAlreadyInAvailabilityZone",
            f"a default subnet already exists in availability zone {zone}",
        )
    used = [ipaddress.IPv4Network(c) for c, _, _ in taken]
    for cidr in ipaddress.ip_network(vpc.cidr).subnets(new_prefix=20):
        if not any(cidr.overlaps(u) for u in used):
            row = create_subnet_row(ctx, vpc.id, str(cidr), zone, default=True)
            return {"subnet": subnet_result(ctx, row, None) | subnet_attributes({})}
    raise ApiError(
        "InsufficientFreeAddressesInSubnet",
        f"The default VPC '{vpc.id}' has no free /20 block left for a default subnet.",
    )


def _zone_of(ctx: Ctx, name: object, zone_id_given: object, *, required: bool) -> str:
    """The zone a request names (by name or by id) in this region, or EC2's error."""
    zones = [f"{ctx.region}{letter}" for letter in ZONE_LETTERS]
    if zone_id_given:
        by_id = {zone_id(ctx.region, z[-1]): z for z in zones}
        zone = by_id.get(str(zone_id_given))
        if zone is None:
            raise ApiError(
                "InvalidParameterValue",
                f"Value ({zone_id_given}) for parameter availabilityZoneId is invalid. "
                f"Valid zone ids in {ctx.region}: {', '.join(by_id)}.",
            )
        return zone
    if not name:
        if required:
            raise ApiError(
                "MissingParameter", "The request must contain the parameter AvailabilityZone"
            )
        return zones[0]
    if name not in zones:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({name}) for parameter availabilityZone is invalid. "
            f"Subnets can currently only be created in the following availability zones: "
            f"{', '.join(zones)}.",
        )
    return str(name)


# Checks other modules add (instances in a subnet, ...): each raises DependencyViolation.
SUBNET_DELETE_CHECKS: list = []


@action("DeleteSubnet", write=True)
def delete_subnet(ctx: Ctx, p: Params) -> Result:
    subnet = resources.get(ctx, p.get("subnet_id"), "subnet")
    for check in SUBNET_DELETE_CHECKS:
        check(ctx, subnet.id)
    R = schema.subnet_cidr_reservations.c
    reserved = list(ctx.conn.execute(select(R.id).where(R.subnet_id == subnet.id)).scalars())
    resources.drop_tags(ctx, [subnet.id, *reserved])
    resources.drop_attributes(ctx, [subnet.id])
    ctx.conn.execute(delete(schema.subnet_cidr_reservations).where(R.subnet_id == subnet.id))
    ctx.conn.execute(delete(schema.subnets).where(S.id == subnet.id))
    ctx.log("subnet.deleted", subnet.id, vpc_id=subnet.vpc_id)
    return {}


SUBNET_FILTERS: FilterSpec = {
    "subnet-id": lambda s: [s["subnet_id"]],
    "vpc-id": lambda s: [s["vpc_id"]],
    "cidr-block": lambda s: [s["cidr_block"]],
    "cidr": lambda s: [s["cidr_block"]],
    "cidrBlock": lambda s: [s["cidr_block"]],
    "availability-zone": lambda s: [s["availability_zone"]],
    "availabilityZone": lambda s: [s["availability_zone"]],
    "availability-zone-id": lambda s: [s["availability_zone_id"]],
    "default-for-az": lambda s: [s["default_for_az"]],
    "defaultForAz": lambda s: [s["default_for_az"]],
    "map-public-ip-on-launch": lambda s: [s["map_public_ip_on_launch"]],
    "owner-id": lambda s: [s["owner_id"]],
    "state": lambda s: [s["state"]],
    "subnet-arn": lambda s: [s["subnet_arn"]],
    "available-ip-address-count": lambda s: [s["available_ip_address_count"]],
}


def _addresses_used(ctx: Ctx, subnet_ids: list[str]) -> dict[str, int]:
    """Private addresses held by network interfaces, per subnet."""
    N = schema.network_interfaces.c
    used: dict[str, int] = {}
    for start in range(0, len(subnet_ids), 500):
        chunk = subnet_ids[start : start + 500]
        rows = ctx.conn.execute(
            select(N.subnet_id, func.count()).where(N.subnet_id.in_(chunk)).group_by(N.subnet_id)
        )
        used.update({sid: n for sid, n in rows})
    return used


def _subnet_results(ctx: Ctx, rows: list[Row]) -> list[Result]:
    ids = [r.id for r in rows]
    tags = resources.tags_for(ctx, ids)
    used = _addresses_used(ctx, ids)
    stored = resources.attributes_of(ctx, ids)
    out = []
    for r in rows:
        item = subnet_result(ctx, r, tags.get(r.id), used.get(r.id, 0))
        item.update(subnet_attributes(stored.get(r.id, {})))
        out.append(item)
    return out


SUBNETS = Describe(
    "subnets",
    SUBNET_FILTERS,
    _subnet_results,
    table=schema.subnets,
    prefix="subnet",
    ids="subnet_ids",
    sort="subnet_id",
)


@action("DescribeSubnets", write=False)
def describe_subnets(ctx: Ctx, p: Params) -> Result:
    return SUBNETS.run(ctx, p)


# --- attributes ----------------------------------------------------------------------------

# EC2's VPC attributes and their defaults (DNS hostnames are on in a default VPC only)
VPC_ATTRIBUTES = ("enableDnsSupport", "enableDnsHostnames", "enableNetworkAddressUsageMetrics")
_VPC_ATTRIBUTE_KEYS = {
    "enableDnsSupport": "enable_dns_support",
    "enableDnsHostnames": "enable_dns_hostnames",
    "enableNetworkAddressUsageMetrics": "enable_network_address_usage_metrics",
}


def vpc_attribute(ctx: Ctx, vpc: Row, name: str, stored: dict | None = None) -> bool:
    if stored is None:
        stored = resources.attributes_of(ctx, [vpc.id]).get(vpc.id, {})
    if name in stored:
        return bool(stored[name])
    if name == "enableDnsSupport":
        return True
    return name == "enableDnsHostnames" and bool(vpc.is_default)


@action("DescribeVpcAttribute", write=False)
def describe_vpc_attribute(ctx: Ctx, p: Params) -> Result:
    name = p.get("attribute")
    if not name:
        raise ApiError("MissingParameter", "The request must contain the parameter Attribute")
    if name not in VPC_ATTRIBUTES:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({name}) for parameter attribute is invalid. Unknown attribute.",
        )
    vpc = resources.get(ctx, p.get("vpc_id"), "vpc")
    return {"vpc_id": vpc.id, _VPC_ATTRIBUTE_KEYS[name]: {"value": vpc_attribute(ctx, vpc, name)}}


@action("ModifyVpcAttribute", write=True)
def modify_vpc_attribute(ctx: Ctx, p: Params) -> Result:
    vpc = resources.get(ctx, p.get("vpc_id"), "vpc")
    given = [n for n in VPC_ATTRIBUTES if p.get(_VPC_ATTRIBUTE_KEYS[n]) is not None]
    if not given:
        raise ApiError(
            "MissingParameter",
            "The request must contain one of the parameters EnableDnsSupport, "
            "EnableDnsHostnames or EnableNetworkAddressUsageMetrics",
        )
    if len(given) > 1:
        raise ApiError(
            "InvalidParameterCombination",
            "Fields for multiple attribute types specified: " + ", ".join(given),
        )
    (name,) = given
    value = (p[_VPC_ATTRIBUTE_KEYS[name]] or {}).get("value")
    if value is None:
        raise ApiError(
            "MissingParameter",
            f"The request must contain the parameter {name[0].upper()}{name[1:]}.Value",
        )
    if name == "enableDnsHostnames" and value and not vpc_attribute(ctx, vpc, "enableDnsSupport"):
        raise ApiError(
            "InvalidParameterCombination",
            "Cannot enable DNS hostnames while DNS support is disabled for the VPC.",
        )
    if name == "enableDnsSupport" and not value and vpc_attribute(ctx, vpc, "enableDnsHostnames"):
        raise ApiError(
            "InvalidParameterCombination",
            "Cannot disable DNS support while DNS hostnames are enabled for the VPC.",
        )
    resources.set_attribute(ctx, vpc.id, name, bool(value))
    ctx.log("vpc.attribute", vpc.id, **{name: bool(value)})
    return {}


# subnet attributes beyond map_public_ip (a column): request key -> (stored name, default)
_SUBNET_ATTRIBUTES: dict[str, tuple[str, Any]] = {
    "assign_ipv6_address_on_creation": ("assignIpv6AddressOnCreation", False),
    "map_customer_owned_ip_on_launch": ("mapCustomerOwnedIpOnLaunch", False),
    "enable_dns64": ("enableDns64", False),
    "enable_resource_name_dns_a_record_on_launch": ("enableResourceNameDnsARecordOnLaunch", False),
    "enable_resource_name_dns_aaaa_record_on_launch": (
        "enableResourceNameDnsAAAARecordOnLaunch",
        False,
    ),
}
HOSTNAME_TYPES = ("ip-name", "resource-name")


def subnet_attributes(stored: dict) -> Result:
    """The attribute part of a subnet's result (``stored``: what was set on it)."""

    def get(key: str) -> Any:
        name, default = _SUBNET_ATTRIBUTES[key]
        return stored.get(name, default)

    return {
        "assign_ipv6_address_on_creation": get("assign_ipv6_address_on_creation"),
        "map_customer_owned_ip_on_launch": get("map_customer_owned_ip_on_launch"),
        "enable_dns64": get("enable_dns64"),
        "ipv6_native": False,
        "private_dns_name_options_on_launch": {
            "hostname_type": stored.get("privateDnsHostnameTypeOnLaunch", "ip-name"),
            "enable_resource_name_dns_a_record": get("enable_resource_name_dns_a_record_on_launch"),
            "enable_resource_name_dns_aaaa_record": get(
                "enable_resource_name_dns_aaaa_record_on_launch"
            ),
        },
    }


@action("ModifySubnetAttribute", write=True)
def modify_subnet_attribute(ctx: Ctx, p: Params) -> Result:
    subnet = resources.get(ctx, p.get("subnet_id"), "subnet")
    given = [
        k
        for k in (
            "map_public_ip_on_launch",
            *_SUBNET_ATTRIBUTES,
            "private_dns_hostname_type_on_launch",
        )
        if p.get(k) is not None
    ]
    for unsupported in ("customer_owned_ipv4_pool", "enable_lni_at_device_index"):
        if p.get(unsupported) is not None:
            raise ApiError(
                "UnsupportedOperation", f"Stockade does not support {unsupported} on subnets."
            )
    if p.get("disable_lni_at_device_index") is not None:
        given.append("disable_lni_at_device_index")
    if not given:
        raise ApiError(
            "MissingParameter",
            "The request must contain an attribute to modify (e.g. MapPublicIpOnLaunch)",
        )
    if len(given) > 1:
        raise ApiError(
            "InvalidParameterCombination",
            "Fields for multiple attribute types specified: " + ", ".join(given),
        )
    (key,) = given
    if key == "disable_lni_at_device_index":
        return {}
    if key == "private_dns_hostname_type_on_launch":
        value = p[key]
        if value not in HOSTNAME_TYPES:
            raise ApiError(
                "InvalidParameterValue",
                f"Value ({value}) for parameter PrivateDnsHostnameTypeOnLaunch is invalid. "
                f"Valid values: {', '.join(HOSTNAME_TYPES)}",
            )
        resources.set_attribute(ctx, subnet.id, "privateDnsHostnameTypeOnLaunch", value)
        ctx.log("subnet.attribute", subnet.id, privateDnsHostnameTypeOnLaunch=value)
        return {}
    value = (p[key] or {}).get("value")
    if value is None:
        wire = "".join(part.capitalize() for part in key.split("_"))
        raise ApiError("MissingParameter", f"The request must contain the parameter {wire}.Value")
    if key == "map_public_ip_on_launch":
        ctx.conn.execute(
            update(schema.subnets).where(S.id == subnet.id).values(map_public_ip=bool(value))
        )
        ctx.log("subnet.attribute", subnet.id, mapPublicIpOnLaunch=bool(value))
        return {}
    if key == "assign_ipv6_address_on_creation" and value:
        raise ApiError(
            "InvalidParameterValue",
            f"Invalid value 'true' for assignIpv6AddressOnCreation. Cannot set "
            f"assignIpv6AddressOnCreation to true unless the subnet ({subnet.id}) has an "
            "IPv6 CIDR block associated with it.",
        )
    name = _SUBNET_ATTRIBUTES[key][0]
    resources.set_attribute(ctx, subnet.id, name, bool(value))
    ctx.log("subnet.attribute", subnet.id, **{name: bool(value)})
    return {}


# --- subnet CIDR reservations ---------------------------------------------------------------

RESERVATION_TYPES = ("prefix", "explicit")


def reservation_result(ctx: Ctx, row: Row, tags: list | None) -> Result:
    return {
        "subnet_cidr_reservation_id": row.id,
        "subnet_id": row.subnet_id,
        "cidr": row.cidr,
        "reservation_type": row.reservation_type,
        "owner_id": row.account_id,
        "description": row.description,
        "tags": tags or [],
    }


@action("CreateSubnetCidrReservation", write=True)
def create_subnet_cidr_reservation(ctx: Ctx, p: Params) -> Result:
    subnet = resources.get(ctx, p.get("subnet_id"), "subnet")
    kind = p.get("reservation_type")
    if kind not in RESERVATION_TYPES:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({kind}) for parameter reservationType is invalid. "
            "Valid values: prefix, explicit",
        )
    try:
        net = ipaddress.ip_network(str(p.get("cidr")), strict=False)
        if "/" not in str(p.get("cidr")):
            raise ValueError
    except ValueError:
        raise ApiError(
            "InvalidParameterValue", f"CIDR block {p.get('cidr')} is malformed"
        ) from None
    if net.version != 4 or not net.subnet_of(ipaddress.IPv4Network(subnet.cidr)):
        raise ApiError(
            "InvalidParameterValue",
            f"The CIDR '{net}' is not within the subnet '{subnet.id}' ({subnet.cidr}).",
        )
    R = schema.subnet_cidr_reservations.c
    for other in ctx.conn.execute(select(R.cidr).where(R.subnet_id == subnet.id)).scalars():
        if net.overlaps(ipaddress.ip_network(other)):
            raise ApiError(
                "InvalidSubnetCidrReservation.Conflict",
                f"The CIDR '{net}' overlaps the reservation of {other} in '{subnet.id}'.",
            )
    rid = new_id("scr")
    ctx.conn.execute(
        insert(schema.subnet_cidr_reservations).values(
            id=rid,
            account_id=ctx.account_id,
            region=ctx.region,
            subnet_id=subnet.id,
            cidr=str(net),
            reservation_type=kind,
            description=resources.description(p.get("description")),
        )
    )
    resources.tag_specifications(ctx, p, "subnet-cidr-reservation", rid)
    ctx.log("subnet.reservation", subnet.id, reservation_id=rid, cidr=str(net))
    row = resources.get(ctx, rid, "scr")
    return {
        "subnet_cidr_reservation": reservation_result(
            ctx, row, resources.tags_for(ctx, [rid]).get(rid)
        )
    }


@action("DeleteSubnetCidrReservation", write=True)
def delete_subnet_cidr_reservation(ctx: Ctx, p: Params) -> Result:
    row = resources.get(ctx, p.get("subnet_cidr_reservation_id"), "scr")
    tags = resources.tags_for(ctx, [row.id]).get(row.id)
    resources.drop_tags(ctx, [row.id])
    R = schema.subnet_cidr_reservations.c
    ctx.conn.execute(delete(schema.subnet_cidr_reservations).where(R.id == row.id))
    ctx.log("subnet.reservation", row.subnet_id, reservation_id=row.id, deleted=True)
    return {"deleted_subnet_cidr_reservation": reservation_result(ctx, row, tags)}


RESERVATION_FILTERS: FilterSpec = {
    "reservationType": lambda r: [r["reservation_type"]],
    "subnet-id": lambda r: [r["subnet_id"]],
    "owner-id": lambda r: [r["owner_id"]],
}


def _reservation_rows(ctx: Ctx, p: Params, pushed: dict[str, list[str]]) -> list[Row]:
    subnet = resources.get(ctx, p.get("subnet_id"), "subnet")
    R = schema.subnet_cidr_reservations.c
    return list(
        ctx.conn.execute(select(schema.subnet_cidr_reservations).where(R.subnet_id == subnet.id))
    )


RESERVATIONS = Describe(
    "subnet_ipv4_cidr_reservations",
    RESERVATION_FILTERS,
    tagged(reservation_result),
    sort="subnet_cidr_reservation_id",
    source=_reservation_rows,
)


@action("GetSubnetCidrReservations", write=False)
def get_subnet_cidr_reservations(ctx: Ctx, p: Params) -> Result:
    # IPv4 reservations only: IPv6 blocks of subnets have none here
    return {**RESERVATIONS.run(ctx, p), "subnet_ipv6_cidr_reservations": []}
