"""Regions, zones, account attributes and tags."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from stockade.errors import ApiError
from stockade.service import groups, resources
from stockade.service.common import (
    OPT_IN_REGIONS,
    REGIONS,
    ZONE_LETTERS,
    Ctx,
    FilterSpec,
    Params,
    Result,
    action,
)
from stockade.service.describe import Describe
from stockade.service.vpcs import zone_id
from stockade.store import schema

REGION_FILTERS: FilterSpec = {
    "endpoint": lambda r: [r["endpoint"]],
    "region-name": lambda r: [r["region_name"]],
    "opt-in-status": lambda r: [r["opt_in_status"]],
}


def _regions(ctx: Ctx, p: Params, pushed: dict[str, list[str]]) -> list[Result]:
    names = p.get("region_names") or list(REGIONS)
    for name in names:
        if name not in REGIONS:
            raise ApiError("InvalidParameterValue", f"Invalid region: {name}")
    host = ctx.config.endpoint
    return [
        {
            "region_name": n,
            "endpoint": host,
            "opt_in_status": "opted-in" if n in OPT_IN_REGIONS else "opt-in-not-required",
        }
        for n in names
    ]


def _as_is(ctx: Ctx, items: list[Result]) -> list[Result]:
    return items


REGION_LISTING = Describe("regions", REGION_FILTERS, _as_is, source=_regions)


@action("DescribeRegions", write=False)
def describe_regions(ctx: Ctx, p: Params) -> Result:
    return REGION_LISTING.run(ctx, p)


ZONE_FILTERS: FilterSpec = {
    "zone-name": lambda z: [z["zone_name"]],
    "zone-id": lambda z: [z["zone_id"]],
    "region-name": lambda z: [z["region_name"]],
    "state": lambda z: [z["state"]],
    "zone-type": lambda z: [z["zone_type"]],
    "group-name": lambda z: [z["group_name"]],
    "opt-in-status": lambda z: [z["opt_in_status"]],
}


def _zones(ctx: Ctx, p: Params, pushed: dict[str, list[str]]) -> list[Result]:
    zones = [
        {
            "zone_name": f"{ctx.region}{letter}",
            "zone_id": zone_id(ctx.region, letter),
            "region_name": ctx.region,
            "state": "available",
            "opt_in_status": "opt-in-not-required",
            "messages": [],
            "group_name": ctx.region,
            "network_border_group": ctx.region,
            "zone_type": "availability-zone",
        }
        for letter in ZONE_LETTERS
    ]
    for key, field in (("zone_names", "zone_name"), ("zone_ids", "zone_id")):
        wanted = p.get(key)
        if wanted:
            known = {z[field] for z in zones}
            bad = [w for w in wanted if w not in known]
            if bad:
                raise ApiError(
                    "InvalidParameterValue",
                    f"The zone '{bad[0]}' does not exist in region {ctx.region}",
                )
            zones = [z for z in zones if z[field] in wanted]
    return zones


ZONE_LISTING = Describe("availability_zones", ZONE_FILTERS, _as_is, source=_zones)


@action("DescribeAvailabilityZones", write=False)
def describe_availability_zones(ctx: Ctx, p: Params) -> Result:
    return ZONE_LISTING.run(ctx, p)


@action("DescribeAccountAttributes", write=False)
def describe_account_attributes(ctx: Ctx, p: Params) -> Result:
    values = {
        "supported-platforms": ["VPC"],
        "default-vpc": [groups.default_vpc_id_or_none(ctx) or "none"],
        "max-instances": [str(ctx.config.max_instances)],
        "vpc-max-security-groups-per-interface": [
            str(min(ctx.config.max_groups_per_interface, 16))
        ],
        "max-elastic-ips": [str(ctx.config.max_addresses)],
        "vpc-max-elastic-ips": [str(ctx.config.max_addresses)],
    }
    names = p.get("attribute_names") or list(values)
    for n in names:
        if n not in values:
            raise ApiError("InvalidParameterValue", f"Unknown account attribute: {n}")
    return {
        "account_attributes": [
            {
                "attribute_name": n,
                "attribute_values": [{"attribute_value": v} for v in values[n]],
            }
            for n in names
        ]
    }


# --- tags --------------------------------------------------------------------------------


def _check_resources(ctx: Ctx, ids: list) -> list[tuple[str, str]]:
    if not ids:
        raise ApiError("MissingParameter", "The request must contain the parameter resourceIdSet")
    out = []
    for rid in dict.fromkeys(ids):
        kind = resources.kind_of(rid)
        resources.get(ctx, rid, kind.prefix)
        out.append((rid, kind.resource_type))
    return out


@action("CreateTags", write=True)
def create_tags(ctx: Ctx, p: Params) -> Result:
    tags = p.get("tags") or []
    if not tags:
        raise ApiError("MissingParameter", "The request must contain the parameter tagSet")
    for rid, rtype in _check_resources(ctx, p.get("resources") or []):
        resources.set_tags(ctx, rid, rtype, tags)
        ctx.log("tags.changed", rid)
    return {}


@action("DeleteTags", write=True)
def delete_tags(ctx: Ctx, p: Params) -> Result:
    t = schema.tags.c
    for rid, _rtype in _check_resources(ctx, p.get("resources") or []):
        if not p.get("tags"):
            ctx.conn.execute(delete(schema.tags).where(t.resource_id == rid))
        for tag in p.get("tags") or ():
            q = delete(schema.tags).where(t.resource_id == rid, t.key == tag.get("key"))
            if tag.get("value") is not None:
                q = q.where(t.value == tag["value"])
            ctx.conn.execute(q)
        ctx.log("tags.changed", rid)
    return {}


TAG_FILTERS: FilterSpec = {
    "key": lambda t: [t["key"]],
    "value": lambda t: [t["value"]],
    "resource-id": lambda t: [t["resource_id"]],
    "resource-type": lambda t: [t["resource_type"]],
}


def _tag_rows(ctx: Ctx, p: Params, pushed: dict[str, list[str]]) -> list[Any]:
    t = schema.tags.c
    q = select(t.resource_id, t.resource_type, t.key, t.value).where(
        t.account_id == ctx.account_id, t.region == ctx.region
    )
    for name, column in (("resource-id", t.resource_id), ("key", t.key)):
        if name in pushed:
            q = q.where(column.in_(pushed[name]))
    return list(ctx.conn.execute(q.order_by(t.resource_id, t.key)))


def _tag_results(ctx: Ctx, rows: list[Any]) -> list[Result]:
    return [
        {
            "resource_id": r.resource_id,
            "resource_type": r.resource_type,
            "key": r.key,
            "value": r.value,
            # (resource id, key) order: the space sorts below every character of an id
            # (a NUL did too, but went into the next token: PostgreSQL cannot take it back)
            "sort": f"{r.resource_id} {r.key}",
            "tags": [{"key": r.key, "value": r.value}],
        }
        for r in rows
    ]


def _tags_out(page: list[Result]) -> list[Result]:
    for it in page:
        del it["sort"], it["tags"]
    return page


TAG_LISTING = Describe(
    "tags",
    TAG_FILTERS,
    _tag_results,
    pushed={"resource-id": schema.tags.c.resource_id, "key": schema.tags.c.key},
    sort="sort",
    source=_tag_rows,
    finish=_tags_out,
)


@action("DescribeTags", write=False)
def describe_tags(ctx: Ctx, p: Params) -> Result:
    return TAG_LISTING.run(ctx, p)
