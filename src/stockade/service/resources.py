"""Finding resources by id (with EC2's malformed / not-found errors) and their tags."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Table, delete, insert, select

from stockade.errors import ApiError
from stockade.service.common import Ctx, Params, check_id, check_text
from stockade.store import schema
from stockade.store.db import RowType, Sql, execute, row_type


@dataclass(frozen=True)
class Kind:
    """A taggable resource kind: its id prefix, table and EC2 error codes."""

    prefix: str
    resource_type: str  # EC2's ResourceType ("security-group", "vpc", ...)
    table: Table
    malformed: str
    not_found: str
    not_found_message: str  # formatted with {id}


KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> None:
    KINDS[kind.prefix] = kind


register_kind(
    Kind(
        "sg",
        "security-group",
        schema.security_groups,
        "InvalidGroupId.Malformed",
        "InvalidGroup.NotFound",
        "The security group '{id}' does not exist",
    )
)
register_kind(
    Kind(
        "sgr",
        "security-group-rule",
        schema.rules,
        "InvalidSecurityGroupRuleId.Malformed",
        "InvalidSecurityGroupRuleId.NotFound",
        "The security group rule ID '{id}' does not exist",
    )
)
register_kind(
    Kind(
        "vpc",
        "vpc",
        schema.vpcs,
        "InvalidVpcID.Malformed",
        "InvalidVpcID.NotFound",
        "The vpc ID '{id}' does not exist",
    )
)
register_kind(
    Kind(
        "subnet",
        "subnet",
        schema.subnets,
        "InvalidSubnetID.Malformed",
        "InvalidSubnetID.NotFound",
        "The subnet ID '{id}' does not exist",
    )
)


register_kind(
    Kind(
        "i",
        "instance",
        schema.instances,
        "InvalidInstanceID.Malformed",
        "InvalidInstanceID.NotFound",
        "The instance ID '{id}' does not exist",
    )
)
register_kind(
    Kind(
        "eni",
        "network-interface",
        schema.network_interfaces,
        "InvalidNetworkInterfaceID.Malformed",
        "InvalidNetworkInterfaceID.NotFound",
        "The networkInterface ID '{id}' does not exist",
    )
)
register_kind(
    Kind(
        "eipalloc",
        "elastic-ip",
        schema.addresses,
        "InvalidAllocationID.Malformed",
        "InvalidAllocationID.NotFound",
        "The allocation ID '{id}' does not exist",
    )
)
register_kind(
    Kind(
        "key",
        "key-pair",
        schema.key_pairs,
        "InvalidKeyPair.Malformed",
        "InvalidKeyPair.NotFound",
        "The key pair ID '{id}' does not exist",
    )
)


register_kind(
    Kind(
        "scr",
        "subnet-cidr-reservation",
        schema.subnet_cidr_reservations,
        "InvalidSubnetCidrReservationID.Malformed",
        "InvalidSubnetCidrReservationID.NotFound",
        "The subnet CIDR reservation ID '{id}' does not exist",
    )
)


def kind_of(resource_id: Any) -> Kind:
    prefix = resource_id.rsplit("-", 1)[0] if isinstance(resource_id, str) else ""
    kind = KINDS.get(prefix)
    if kind is None:
        raise ApiError("InvalidID", f'The ID "{resource_id}" is not valid')
    return kind


@functools.cache
def _lookup(table: Table) -> tuple[RowType, Sql, Sql]:
    """Row type, one-id and many-id lookups of a resource table (fixed SQL, built once)."""
    rows = row_type(table)
    head = f"SELECT {rows.columns} FROM {table.name} WHERE "
    return (
        rows,
        Sql(head + "id = ? AND account_id = ? AND region = ?"),
        Sql(head + "id IN ({in}) AND account_id = ? AND region = ?"),
    )


def get(ctx: Ctx, resource_id: Any, prefix: str) -> Row:
    """The caller's resource ``resource_id`` of kind ``prefix`` in this region, or EC2's error."""
    kind = KINDS[prefix]
    check_id(resource_id, prefix, kind.malformed)
    rows, one, _ = _lookup(kind.table)
    found = rows.rows(ctx.conn, one, (resource_id, ctx.account_id, ctx.region))
    if not found:
        raise ApiError(kind.not_found, kind.not_found_message.format(id=resource_id))
    return found[0]


def get_many(ctx: Ctx, ids: Iterable[Any], prefix: str) -> list[Row]:
    """All of ``ids`` (each must exist), in the order given, duplicates dropped."""
    wanted = list(dict.fromkeys(ids))
    kind = KINDS[prefix]
    for rid in wanted:
        check_id(rid, prefix, kind.malformed)
    if not wanted:
        return []
    rows_of, one, many = _lookup(kind.table)
    if len(wanted) == 1:
        found = rows_of.rows(ctx.conn, one, (wanted[0], ctx.account_id, ctx.region))
    else:
        found = rows_of.rows(
            ctx.conn, many.expand(len(wanted)), (*wanted, ctx.account_id, ctx.region)
        )
    rows = {r.id: r for r in found}
    missing = [rid for rid in wanted if rid not in rows]
    if missing:
        ids_text = ", ".join(f"'{m}'" for m in missing)
        msg = kind.not_found_message.replace("'{id}'", ids_text)
        if len(missing) > 1:
            msg = msg.replace(" does not", " do not")
        raise ApiError(kind.not_found, msg)
    return [rows[rid] for rid in wanted]


# --- tags --------------------------------------------------------------------------------

_TAGS = Sql(
    "SELECT resource_id, key, value FROM tags WHERE resource_id IN ({in}) ORDER BY resource_id, key"
)
_DROP_TAGS = Sql("DELETE FROM tags WHERE resource_id IN ({in})")


def tags_for(ctx: Ctx, ids: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    ids = list(ids)
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        for resource_id, key, value in execute(
            ctx.conn, _TAGS.expand(len(chunk)), chunk
        ).fetchall():
            out[resource_id].append({"key": key, "value": value})
    return out


def check_tag(tag: Params) -> tuple[str, str]:
    key = tag.get("key")
    value = tag.get("value") or ""
    if not key:
        raise ApiError("InvalidParameterValue", "Tag keys must not be empty")
    if len(key) > 128:
        raise ApiError("InvalidParameterValue", f"Tag key exceeds the maximum length of 128: {key}")
    if len(value) > 256:
        raise ApiError(
            "InvalidParameterValue", f"Tag value exceeds the maximum length of 256: {value}"
        )
    if key.lower().startswith("aws:"):
        raise ApiError(
            "InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use"
        )
    return key, value


def set_tags(ctx: Ctx, resource_id: str, resource_type: str, tags: Iterable[Params]) -> None:
    t = schema.tags
    for tag in tags:
        key, value = check_tag(tag)
        ctx.conn.execute(delete(t).where(t.c.resource_id == resource_id, t.c.key == key))
        ctx.conn.execute(
            insert(t).values(
                resource_id=resource_id,
                key=key,
                value=value,
                account_id=ctx.account_id,
                region=ctx.region,
                resource_type=resource_type,
            )
        )
    count = len(ctx.conn.execute(select(t.c.key).where(t.c.resource_id == resource_id)).all())
    if count > ctx.config.max_tags_per_resource:
        raise ApiError(
            "TagLimitExceeded",
            f"The maximum number of Tags for a resource has been reached ({resource_id}).",
        )


def tag_specifications(ctx: Ctx, params: Params, resource_type: str, resource_id: str) -> None:
    """Apply the TagSpecifications of a create request to the new resource."""
    for spec in params.get("tag_specifications") or ():
        rtype = spec.get("resource_type")
        if rtype is not None and rtype != resource_type:
            raise ApiError(
                "InvalidParameterValue",
                f"'{rtype}' is not a valid taggable resource type for this operation.",
            )
        set_tags(ctx, resource_id, resource_type, spec.get("tags") or ())


def drop_tags(ctx: Ctx, resource_ids: Iterable[str]) -> None:
    ids = list(resource_ids)
    if ids:
        execute(ctx.conn, _DROP_TAGS.expand(len(ids)), ids)


def description(value: Any, param: str = "Description") -> str | None:
    if value is None:
        return None
    return check_text(value, param, required=False)


# --- attributes ----------------------------------------------------------------------------


def attributes_of(ctx: Ctx, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The attributes set on each of ``ids`` (name -> value; defaults are not stored)."""
    a = schema.attributes.c
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    ids = list(ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for r in ctx.conn.execute(
            select(a.resource_id, a.name, a.value).where(a.resource_id.in_(chunk))
        ):
            out[r.resource_id][r.name] = r.value
    return out


def set_attribute(ctx: Ctx, resource_id: str, name: str, value: Any) -> None:
    a = schema.attributes
    ctx.conn.execute(delete(a).where(a.c.resource_id == resource_id, a.c.name == name))
    ctx.conn.execute(
        insert(a).values(
            resource_id=resource_id,
            name=name,
            value=value,
            account_id=ctx.account_id,
            region=ctx.region,
        )
    )


def drop_attributes(ctx: Ctx, resource_ids: Iterable[str]) -> None:
    ids = list(resource_ids)
    if ids:
        a = schema.attributes
        ctx.conn.execute(delete(a).where(a.c.resource_id.in_(ids)))
