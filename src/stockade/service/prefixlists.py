"""Managed prefix lists: named sets of CIDRs that security-group rules use as peers.

A list has one address family (IPv4 or IPv6), at most ``MaxEntries`` entries and a version
that every change of its entries increases. A rule with ``PrefixListIds`` stores the list's
id (one rule row per list); the data plane keeps one nft interval set per list and IP
version (``pl_<id>_v4``), so a ModifyManagedPrefixList changes the kernel at once, with
no rule rewritten. Modifications apply synchronously: the state a reply reports is
``modify-complete`` (AWS reports ``modify-in-progress`` first; a client that waits for
``*-complete`` sees it on its first Describe).

Change log kinds written here: ``prefix_list.created``, ``prefix_list.modified``,
``prefix_list.deleted`` (the data plane follows them: see service/topology.py).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import Row, delete, insert, select, update

from stockade.errors import ApiError
from stockade.service import resources
from stockade.service.common import (
    Ctx,
    FilterSpec,
    Params,
    Result,
    action,
    check_max_results,
    check_text,
    new_id,
    paginate,
    parse_filters,
)
from stockade.service.describe import Describe, tagged
from stockade.store import schema
from stockade.store.db import utcnow

PL = schema.managed_prefix_lists.c
E = schema.prefix_list_entries.c
R = schema.rules.c

MAX_ENTRIES_LIMIT = 1000  # EC2's quota for the entries of one list
FAMILIES = {"IPv4": 4, "IPv6": 6}

resources.register_kind(
    resources.Kind(
        "pl",
        "prefix-list",
        schema.managed_prefix_lists,
        "InvalidPrefixListId.Malformed",
        "InvalidPrefixListID.NotFound",
        "The prefix list ID '{id}' does not exist",
    )
)


def get(ctx: Ctx, prefix_list_id: Any) -> Row:
    return resources.get(ctx, prefix_list_id, "pl")


def entries_of(ctx: Ctx, prefix_list_id: str) -> list[Row]:
    return list(
        ctx.conn.execute(
            select(E.cidr, E.description).where(E.prefix_list_id == prefix_list_id).order_by(E.cidr)
        )
    )


def _check_entry_cidr(value: Any, version: int) -> str:
    """An entry's CIDR, normalised as EC2 does (host bits cleared)."""
    try:
        net = ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        net = None
    if net is None or "/" not in str(value) or net.version != version:
        family = "IPv4" if version == 4 else "IPv6"
        raise ApiError(
            "InvalidParameterValue",
            f"The CIDR '{value}' is invalid for a prefix list of address family {family}.",
        )
    return str(net)


def _check_max_entries(value: Any) -> int:
    if not isinstance(value, int) or not 1 <= value <= MAX_ENTRIES_LIMIT:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({value}) for parameter MaxEntries is invalid. "
            f"Expected a number from 1 to {MAX_ENTRIES_LIMIT}.",
        )
    return value


def _entries(params: list | None, version: int) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for entry in params or ():
        if entry.get("cidr") is None:
            raise ApiError("MissingParameter", "The request must contain the parameter Cidr")
        cidr = _check_entry_cidr(entry["cidr"], version)
        if cidr in out:
            raise ApiError("InvalidRequest", f"The CIDR {cidr} is given more than once.")
        out[cidr] = resources.description(entry.get("description"))
    return out


def _check_count(count: int, max_entries: int) -> None:
    if count > max_entries:
        raise ApiError(
            "PrefixListMaxEntriesExceeded",
            f"The prefix list would have {count} entries; its maximum is {max_entries}.",
        )


def result(ctx: Ctx, row: Row, state: str, tags: list | None = None) -> Result:
    return {
        "prefix_list_id": row.id,
        "address_family": row.address_family,
        "state": state,
        "prefix_list_arn": ctx.arn("prefix-list", row.id, row.account_id),
        "prefix_list_name": row.name,
        "max_entries": row.max_entries,
        "version": row.version,
        "tags": tags or [],
        "owner_id": row.account_id,
    }


def _name(value: Any) -> str:
    name = check_text(value, "PrefixListName")
    if name.lower().startswith("com.amazonaws"):
        raise ApiError(
            "InvalidParameterValue", "Prefix list names cannot start with com.amazonaws."
        )
    return name


@action("CreateManagedPrefixList", write=True)
def create_managed_prefix_list(ctx: Ctx, p: Params) -> Result:
    name = _name(p.get("prefix_list_name"))
    family = p.get("address_family")
    if family not in FAMILIES:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({family}) for parameter AddressFamily is invalid. Expected IPv4 or IPv6.",
        )
    max_entries = _check_max_entries(p.get("max_entries"))
    entries = _entries(p.get("entries"), FAMILIES[family])
    _check_count(len(entries), max_entries)
    pl_id = new_id("pl")
    ctx.conn.execute(
        insert(schema.managed_prefix_lists).values(
            id=pl_id,
            account_id=ctx.account_id,
            region=ctx.region,
            name=name,
            address_family=family,
            max_entries=max_entries,
            version=1,
            created_at=utcnow(),
        )
    )
    for cidr, desc in entries.items():
        ctx.conn.execute(
            insert(schema.prefix_list_entries).values(
                prefix_list_id=pl_id, cidr=cidr, description=desc
            )
        )
    resources.tag_specifications(ctx, p, "prefix-list", pl_id)
    ctx.log("prefix_list.created", pl_id, cidrs=sorted(entries))
    row = get(ctx, pl_id)
    tags = resources.tags_for(ctx, [pl_id]).get(pl_id)
    return {"prefix_list": result(ctx, row, "create-complete", tags)}


@action("ModifyManagedPrefixList", write=True)
def modify_managed_prefix_list(ctx: Ctx, p: Params) -> Result:
    row = get(ctx, p.get("prefix_list_id"))
    version = FAMILIES[row.address_family]
    current = p.get("current_version")
    add = _entries(p.get("add_entries"), version)
    remove: list[str] = []
    for entry in p.get("remove_entries") or ():
        if entry.get("cidr") is None:
            raise ApiError("MissingParameter", "The request must contain the parameter Cidr")
        remove.append(_check_entry_cidr(entry["cidr"], version))
    changes_entries = bool(add or remove)
    if changes_entries and current is None:
        raise ApiError("MissingParameter", "The request must contain the parameter CurrentVersion")
    if current is not None and current != row.version:
        raise ApiError(
            "PrefixListVersionMismatch",
            f"The prefix list {row.id} has version {row.version}, not {current}.",
        )
    values: dict[str, Any] = {}
    if p.get("prefix_list_name") is not None:
        values["name"] = _name(p["prefix_list_name"])
    max_entries = row.max_entries
    if p.get("max_entries") is not None:
        if changes_entries:
            raise ApiError(
                "InvalidParameterCombination",
                "MaxEntries cannot be changed in the same request as the entries.",
            )
        max_entries = values["max_entries"] = _check_max_entries(p["max_entries"])
    existing = {e.cidr for e in entries_of(ctx, row.id)}
    for cidr in remove:
        if cidr not in existing:
            raise ApiError(
                "InvalidPrefixListModification",
                f"The CIDR {cidr} is not an entry of prefix list {row.id}.",
            )
    overlap = sorted(set(add) & set(remove))
    if overlap:
        raise ApiError("InvalidRequest", f"The CIDR {overlap[0]} is both added and removed.")
    after = (existing - set(remove)) | set(add)
    _check_count(len(after), max_entries)
    if changes_entries:
        values["version"] = row.version + 1
        pe = schema.prefix_list_entries
        for cidr in remove:
            ctx.conn.execute(delete(pe).where(E.prefix_list_id == row.id, E.cidr == cidr))
        for cidr, desc in add.items():
            if cidr in existing:
                ctx.conn.execute(
                    update(pe)
                    .where(E.prefix_list_id == row.id, E.cidr == cidr)
                    .values(description=desc)
                )
            else:
                ctx.conn.execute(
                    insert(pe).values(prefix_list_id=row.id, cidr=cidr, description=desc)
                )
    if values:
        ctx.conn.execute(
            update(schema.managed_prefix_lists).where(PL.id == row.id).values(**values)
        )
    if changes_entries:
        ctx.log("prefix_list.modified", row.id, cidrs=sorted(after))
    row = get(ctx, row.id)
    tags = resources.tags_for(ctx, [row.id]).get(row.id)
    return {"prefix_list": result(ctx, row, "modify-complete", tags)}


def _referencing_groups(ctx: Ctx, prefix_list_id: str) -> list[str]:
    return sorted(
        set(
            ctx.conn.execute(select(R.group_id).where(R.prefix_list_id == prefix_list_id)).scalars()
        )
    )


@action("DeleteManagedPrefixList", write=True)
def delete_managed_prefix_list(ctx: Ctx, p: Params) -> Result:
    row = get(ctx, p.get("prefix_list_id"))
    users = _referencing_groups(ctx, row.id)
    if users:
        raise ApiError(
            "PrefixListInUse",
            f"The prefix list {row.id} is referenced by the rules of {', '.join(users[:5])}; "
            "revoke those rules first.",
        )
    resources.drop_tags(ctx, [row.id])
    ctx.conn.execute(delete(schema.prefix_list_entries).where(E.prefix_list_id == row.id))
    ctx.conn.execute(delete(schema.managed_prefix_lists).where(PL.id == row.id))
    ctx.log("prefix_list.deleted", row.id)
    return {"prefix_list": result(ctx, row, "delete-complete")}


PREFIX_LIST_FILTERS: FilterSpec = {
    "prefix-list-id": lambda i: [i["prefix_list_id"]],
    "prefix-list-name": lambda i: [i["prefix_list_name"]],
    "owner-id": lambda i: [i["owner_id"]],
}


PREFIX_LISTS = Describe(
    "prefix_lists",
    PREFIX_LIST_FILTERS,
    tagged(lambda ctx, row, tags: result(ctx, row, "create-complete", tags)),
    table=schema.managed_prefix_lists,
    prefix="pl",
    ids="prefix_list_ids",
    pushed={"prefix-list-id": PL.id, "prefix-list-name": PL.name},
    sort="prefix_list_id",
    max_range=(1, 100),
)


@action("DescribeManagedPrefixLists", write=False)
def describe_managed_prefix_lists(ctx: Ctx, p: Params) -> Result:
    return PREFIX_LISTS.run(ctx, p)


@action("GetManagedPrefixListEntries", write=False)
def get_managed_prefix_list_entries(ctx: Ctx, p: Params) -> Result:
    row = get(ctx, p.get("prefix_list_id"))
    target = p.get("target_version")
    if target is not None and target != row.version:
        raise ApiError(
            "InvalidParameterValue",
            f"Stockade keeps the current version ({row.version}) of prefix list {row.id} only, "
            f"not version {target}.",
        )
    max_results = check_max_results(p.get("max_results"), 1, 100)
    items = [{"cidr": e.cidr, "description": e.description} for e in entries_of(ctx, row.id)]
    page, token = paginate(items, "cidr", max_results, p.get("next_token"))
    return {"entries": page, "next_token": token}


@action("GetManagedPrefixListAssociations", write=False)
def get_managed_prefix_list_associations(ctx: Ctx, p: Params) -> Result:
    row = get(ctx, p.get("prefix_list_id"))
    max_results = check_max_results(p.get("max_results"), 5, 255)
    items = [
        {"resource_id": gid, "resource_owner": ctx.account_id}
        for gid in _referencing_groups(ctx, row.id)
    ]
    page, token = paginate(items, "resource_id", max_results, p.get("next_token"))
    return {"prefix_list_associations": page, "next_token": token}


def check_rule_prefix_list(ctx: Ctx, value: Any) -> str:
    """A rule's PrefixListId: a list of the caller's in this region (EC2's errors)."""
    if value is None:
        raise ApiError("MissingParameter", "The request must contain the parameter PrefixListId")
    return get(ctx, value).id


AWS_PREFIX_LIST_FILTERS: FilterSpec = {
    "prefix-list-id": lambda i: [i["prefix_list_id"]],
    "prefix-list-name": lambda i: [i["prefix_list_name"]],
}


@action("DescribePrefixLists", write=False)
def describe_prefix_lists(ctx: Ctx, p: Params) -> Result:
    """AWS's own service prefix lists (S3, DynamoDB): the sandbox has no such services, so
    the answer is always empty (the request is still checked as EC2 checks it)."""
    parse_filters(p.get("filters"), AWS_PREFIX_LIST_FILTERS)
    check_max_results(p.get("max_results"), 5, 1000)
    for pl_id in p.get("prefix_list_ids") or ():
        raise ApiError(
            "InvalidPrefixListID.NotFound", f"The prefix list ID '{pl_id}' does not exist"
        )
    return {"prefix_lists": [], "next_token": None}
