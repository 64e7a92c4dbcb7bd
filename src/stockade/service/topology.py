"""What the data plane needs to know, read from the store as plain JSON-able values.

``snapshot(conn, host)`` gives the groups and interfaces that decide the ruleset of one
host: its own interfaces (of instances placed on it, pending or running), their groups
with their rules, and every interface anywhere that is a member of a group those rules
name. ``snapshot(conn)`` gives everything (for explain and reachability).

``delta(conn, since)`` gives what changed after a revision, read off the change log: the
current record of every group and every interface (on any host) a change touched since,
and which of them are gone. An agent keeps its view up to date with it instead of reading
its whole host again; ``members(conn, group_ids)`` fills in groups its view lacks.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, or_, select

from stockade.store import schema

LIVE = ("pending", "running")
DELTA_LIMIT = 2000  # more changes than this since the agent's revision: send everything
# change kinds that cannot change any host's table (public addresses, tags, keys, networks;
# a deleted VPC logs its default group's deletion on its own)
IRRELEVANT = ("address.", "tags.", "key_pair.", "vpc.", "subnet.")


def ifname_for(interface_id: str) -> str:
    """The host-side device name of an instance interface (15 characters at most)."""
    return "v" + interface_id.removeprefix("eni-")[:13]


def revision(conn: Connection) -> int:
    c = schema.counters.c
    return conn.execute(select(c.value).where(c.name == "revision")).scalar_one()


def _interfaces(
    conn: Connection,
    ids: Collection[str] = (),
    instance_ids: Collection[str] = (),
    group_ids: Collection[str] = (),
    *,
    everything: bool = True,
) -> list[dict[str, Any]]:
    """Live interfaces (of placed, pending or running instances): all of them, or those
    with one of ``ids``, of one of ``instance_ids`` or in one of ``group_ids``."""
    ni, inst, ig = schema.network_interfaces.c, schema.instances.c, schema.interface_groups.c
    addr = schema.addresses.c
    q = (
        select(
            ni.id,
            ni.instance_id,
            ni.private_ip,
            ni.secondary_ips,
            ni.ipv6_addresses,
            ni.public_ip,
            ni.account_id,
            ni.region,
            ni.vpc_id,
            inst.host,
            inst.state,
        )
        .join(schema.instances, inst.id == ni.instance_id)
        .where(inst.host.is_not(None), inst.state.in_(LIVE))
    )
    if not everything:
        wanted = []
        if ids:
            wanted.append(ni.id.in_(sorted(ids)))
        if instance_ids:
            wanted.append(ni.instance_id.in_(sorted(instance_ids)))
        if group_ids:
            members = select(ig.interface_id).where(ig.group_id.in_(sorted(group_ids)))
            wanted.append(ni.id.in_(members))
        if not wanted:
            return []
        q = q.where(or_(*wanted))
    rows = conn.execute(q).all()
    found = [r.id for r in rows]
    groups: dict[str, list[str]] = {i: [] for i in found}
    elastic: dict[str, str] = {}
    for start in range(0, len(found), 500):
        chunk = found[start : start + 500]
        for iface, gid in conn.execute(
            select(ig.interface_id, ig.group_id)
            .where(ig.interface_id.in_(chunk))
            .order_by(ig.interface_id, ig.position)
        ):
            groups[iface].append(gid)
        for iface, ip in conn.execute(
            select(addr.interface_id, addr.public_ip).where(addr.interface_id.in_(chunk))
        ):
            elastic[iface] = ip
    return [
        {
            "id": r.id,
            "instance_id": r.instance_id,
            "host": r.host,
            "ifname": ifname_for(r.id),
            "private_ipv4": [r.private_ip, *(r.secondary_ips or ())],
            "private_ipv6": list(r.ipv6_addresses or ()),
            "public_ipv4": elastic.get(r.id) or r.public_ip,
            "group_ids": groups[r.id],
            "account_id": r.account_id,
            "region": r.region,
            "vpc_id": r.vpc_id,
        }
        for r in rows
    ]


def _groups(conn: Connection, ids: set[str] | None) -> list[dict[str, Any]]:
    g, r = schema.security_groups.c, schema.rules.c
    q = select(g.id, g.name, g.account_id)
    rq = select(schema.rules).order_by(r.seq)
    if ids is not None:
        wanted = sorted(ids)
        q = q.where(g.id.in_(wanted))
        rq = rq.where(r.group_id.in_(wanted))
    out = {row.id: {"id": row.id, "name": row.name, "rules": []} for row in conn.execute(q)}
    for row in conn.execute(rq):
        if row.group_id not in out:
            continue
        rule = {
            "id": row.id,
            "egress": row.egress,
            "protocol": row.protocol,
            "from_port": row.from_port,
            "to_port": row.to_port,
            "cidr": row.cidr_ipv4 or row.cidr_ipv6,
            "ref_group_id": row.ref_group_id,
            "description": row.description or "",
        }
        if row.prefix_list_id:
            rule["prefix_list_id"] = row.prefix_list_id
        out[row.group_id]["rules"].append(rule)
    return list(out.values())


def _prefix_lists(
    conn: Connection, groups: list[dict[str, Any]], also: Collection[str] = ()
) -> list[dict[str, Any]]:
    """The managed prefix lists the rules of ``groups`` name (and those of ``also``), each
    with its CIDRs."""
    wanted = {r["prefix_list_id"] for g in groups for r in g["rules"] if r.get("prefix_list_id")}
    wanted.update(also)
    if not wanted:
        return []
    pl, e = schema.managed_prefix_lists.c, schema.prefix_list_entries.c
    out = {
        row.id: {"id": row.id, "name": row.name, "cidrs": []}
        for row in conn.execute(select(pl.id, pl.name).where(pl.id.in_(sorted(wanted))))
    }
    for row in conn.execute(
        select(e.prefix_list_id, e.cidr).where(e.prefix_list_id.in_(sorted(out))).order_by(e.cidr)
    ):
        out[row.prefix_list_id]["cidrs"].append(row.cidr)
    return list(out.values())


def snapshot(conn: Connection, host: str | None = None) -> dict[str, Any]:
    rev = revision(conn)  # first: the data read after it is at least this new
    interfaces = _interfaces(conn)
    if host is None:
        groups = _groups(conn, None)
        return {
            "revision": rev,
            "groups": groups,
            "interfaces": interfaces,
            "prefix_lists": _prefix_lists(conn, groups),
        }
    local = [i for i in interfaces if i["host"] == host]
    own = {gid for i in local for gid in i["group_ids"]}
    groups = _groups(conn, own)
    referenced = {
        rule["ref_group_id"] for grp in groups for rule in grp["rules"] if rule["ref_group_id"]
    }
    if referenced - own:
        groups += _groups(conn, referenced - own)
    needed = own | referenced
    members = [i for i in interfaces if i["host"] == host or needed.intersection(i["group_ids"])]
    return {
        "revision": rev,
        "full": True,
        "groups": groups,
        "interfaces": members,
        "prefix_lists": _prefix_lists(conn, groups),
    }


def delta(conn: Connection, since: int) -> dict[str, Any] | None:
    """What changed for data planes after revision ``since`` (see the module's text);
    None when only a full snapshot will do (too many changes, a gap in the log, or a kind
    of change this function does not know)."""
    rev = revision(conn)
    if since > rev or since < 0:
        return None
    c = schema.changes.c
    rows = conn.execute(
        select(c.revision, c.kind, c.resource_id, c.data)
        .where(c.revision > since)
        .order_by(c.revision)
        .limit(DELTA_LIMIT + 1)
    ).all()
    if len(rows) > DELTA_LIMIT or (rows and rows[0].revision != since + 1):
        return None
    groups: set[str] = set()
    ifaces: set[str] = set()
    instances: set[str] = set()
    plists: set[str] = set()
    for row in rows:
        kind, rid, data = row.kind, row.resource_id, row.data or {}
        if kind.startswith("group."):
            groups.add(rid)
        elif kind.startswith("prefix_list."):
            plists.add(rid)
        elif kind.startswith("interface."):
            ifaces.add(rid)
        elif kind.startswith("instance."):
            instances.add(rid)
            ifaces.update(data.get("interface_ids") or ())
            if data.get("interface_id"):
                ifaces.add(data["interface_id"])
        elif not kind.startswith(IRRELEVANT):
            return None
    found = _groups(conn, groups) if groups else []
    live = _interfaces(conn, ifaces, instances, everything=False)
    if instances:  # an instance's interfaces that are no longer live are gone
        ni = schema.network_interfaces.c
        ifaces.update(
            conn.execute(select(ni.id).where(ni.instance_id.in_(sorted(instances)))).scalars()
        )
    lists = _prefix_lists(conn, found, plists)
    return {
        "revision": rev,
        "full": False,
        "groups": found,
        "deleted_groups": sorted(groups - {g["id"] for g in found}),
        "interfaces": live,
        "gone_interfaces": sorted(ifaces - {i["id"] for i in live}),
        "prefix_lists": lists,
        "deleted_prefix_lists": sorted(plists - {p["id"] for p in lists}),
    }


def members(conn: Connection, group_ids: Collection[str]) -> dict[str, Any]:
    """Groups (with their rules) and every live member of them, on any host."""
    rev = revision(conn)
    found = _groups(conn, set(group_ids))
    return {
        "revision": rev,
        "full": False,
        "groups": found,
        "deleted_groups": sorted(set(group_ids) - {g["id"] for g in found}),
        "interfaces": _interfaces(conn, group_ids=group_ids, everything=False),
        "gone_interfaces": [],
        "prefix_lists": _prefix_lists(conn, found),
    }
