"""What the data plane needs to know, read from the store as plain JSON-able values.

``snapshot(conn, host)`` gives the groups and interfaces that decide the ruleset of one
host: its own interfaces (of instances placed on it, pending or running), their groups
with their rules, and every interface anywhere that is a member of a group those rules
name. ``snapshot(conn)`` gives everything (for explain and reachability).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from stockade.store import schema

LIVE = ("pending", "running")


def ifname_for(interface_id: str) -> str:
    """The host-side device name of an instance interface (15 characters at most)."""
    return "v" + interface_id.removeprefix("eni-")[:13]


def revision(conn: Connection) -> int:
    c = schema.counters.c
    return conn.execute(select(c.value).where(c.name == "revision")).scalar_one()


def _interfaces(conn: Connection) -> list[dict[str, Any]]:
    ni, inst, ig = schema.network_interfaces.c, schema.instances.c, schema.interface_groups.c
    addr = schema.addresses.c
    rows = conn.execute(
        select(
            ni.id,
            ni.instance_id,
            ni.private_ip,
            ni.public_ip,
            ni.account_id,
            ni.region,
            ni.vpc_id,
            inst.host,
            inst.state,
        )
        .join(schema.instances, inst.id == ni.instance_id)
        .where(inst.host.is_not(None), inst.state.in_(LIVE))
    ).all()
    ids = [r.id for r in rows]
    groups: dict[str, list[str]] = {i: [] for i in ids}
    elastic: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
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
            "private_ipv4": [r.private_ip],
            "private_ipv6": [],
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
        if row.prefix_list_id or row.group_id not in out:
            continue
        out[row.group_id]["rules"].append(
            {
                "id": row.id,
                "egress": row.egress,
                "protocol": row.protocol,
                "from_port": row.from_port,
                "to_port": row.to_port,
                "cidr": row.cidr_ipv4 or row.cidr_ipv6,
                "ref_group_id": row.ref_group_id,
                "description": row.description or "",
            }
        )
    return list(out.values())


def snapshot(conn: Connection, host: str | None = None) -> dict[str, Any]:
    rev = revision(conn)  # first: the data read after it is at least this new
    interfaces = _interfaces(conn)
    if host is None:
        return {"revision": rev, "groups": _groups(conn, None), "interfaces": interfaces}
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
    return {"revision": rev, "groups": groups, "interfaces": members}
