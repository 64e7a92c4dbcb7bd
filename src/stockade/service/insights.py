"""Internet gateways, the Reachability Analyzer and the Network Access Analyzer.

Every answer comes from :func:`account_network`: the caller's account's records (groups,
rules, live interfaces, public and Elastic IPs) as the pure values ``analysis`` takes,
with other accounts' members of groups its rules reference resolved as the data plane
resolves them (their private addresses, nothing else of theirs). Whether or not any host
runs: an instance counts from ``pending`` to ``running``, placed or not.

Internet gateways are not stored: every default VPC has one (``igw-`` and the VPC id's
suffix), attached, as on EC2, so the internet can be an end of a path.

Analyses run synchronously (they take milliseconds here; EC2's take tens of seconds) and
are stored ``succeeded`` with their answer. Paths, scopes and analyses are kept in the
``insights`` table; they are not network state, so they log no change for data planes.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from stockade.analysis import paths
from stockade.analysis.explain import as_json as answer_json
from stockade.analysis.paths import Answer, End, Network, PathError
from stockade.errors import ApiError
from stockade.model import Group, Interface, Rule, State, has_ports, protocol_number
from stockade.service import resources
from stockade.service.common import (
    Ctx,
    Params,
    Result,
    action,
    check_max_results,
    matches,
    new_id,
    paginate,
    parse_filters,
)
from stockade.store import schema

LIVE = ("pending", "running")

# --- the account's network from its records -----------------------------------------------


def gateway_id(vpc_id: str) -> str:
    """The internet gateway of a default VPC: ``igw-`` and the VPC id's suffix."""
    return "igw-" + vpc_id.removeprefix("vpc-")


def account_network(conn: Connection, account_id: str, region: str) -> Network:
    """The account's network in ``region``: its groups with their rules, its live
    interfaces (instances pending or running, on a host or not), their public/Elastic IPs,
    VPCs, subnets and instances, the default VPCs' internet gateways; and as members only,
    the other accounts' live interfaces in groups its rules reference (the data plane
    matches those by private address too)."""
    g, r = schema.security_groups.c, schema.rules.c
    ni, inst, ig = schema.network_interfaces.c, schema.instances.c, schema.interface_groups.c
    addr, vpc = schema.addresses.c, schema.vpcs.c
    rules: dict[str, list[Rule]] = {}
    names: dict[str, str] = {}
    for row in conn.execute(
        select(g.id, g.name).where(g.account_id == account_id, g.region == region)
    ):
        names[row.id] = row.name
        rules[row.id] = []
    referenced: set[str] = set()
    for row in conn.execute(
        select(
            r.id,
            r.group_id,
            r.egress,
            r.protocol,
            r.from_port,
            r.to_port,
            r.cidr_ipv4,
            r.cidr_ipv6,
            r.ref_group_id,
            r.description,
        )
        .where(r.account_id == account_id, r.region == region)
        .order_by(r.group_id, r.seq)
    ):
        cidr = row.cidr_ipv4 or row.cidr_ipv6
        if row.group_id not in rules or (cidr is None and row.ref_group_id is None):
            continue  # a prefix-list peer: not decided here yet
        rules[row.group_id].append(
            Rule(
                row.group_id,
                bool(row.egress),
                row.protocol,
                -1 if row.from_port is None else row.from_port,
                -1 if row.to_port is None else row.to_port,
                cidr=cidr,
                ref_group_id=None if cidr else row.ref_group_id,
                rule_id=row.id,
                description=row.description or "",
            )
        )
        if not cidr and row.ref_group_id:
            referenced.add(row.ref_group_id)
    foreign = sorted(referenced - set(rules))
    groups = [Group(gid, tuple(rs), names[gid]) for gid, rs in rules.items()]
    groups += [Group(gid) for gid in foreign]

    base = (
        select(ni.id, ni.instance_id, ni.private_ip, ni.public_ip, ni.vpc_id, ni.subnet_id)
        .join(schema.instances, inst.id == ni.instance_id)
        .where(inst.state.in_(LIVE))
    )
    own_rows = conn.execute(
        base.where(ni.account_id == account_id, ni.region == region).order_by(
            ni.instance_id, ni.device_index
        )
    ).all()
    own_ids = [row.id for row in own_rows]
    member_of: dict[str, list[str]] = {i: [] for i in own_ids}
    for iface, gid in conn.execute(
        select(ig.interface_id, ig.group_id)
        .join(schema.network_interfaces, ni.id == ig.interface_id)
        .where(ni.account_id == account_id, ni.region == region)
        .order_by(ig.interface_id, ig.position)
    ):
        if iface in member_of:
            member_of[iface].append(gid)
    public: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
    for row in own_rows:
        if row.public_ip:
            public[row.id] = ipaddress.ip_address(row.public_ip)
    for iface, ip in conn.execute(
        select(addr.interface_id, addr.public_ip).where(
            addr.account_id == account_id, addr.region == region, addr.interface_id.is_not(None)
        )
    ):
        if iface in member_of:
            public[iface] = ipaddress.ip_address(ip)
    interfaces = [
        Interface(
            row.id,
            row.instance_id or "",
            "",
            "",
            private_ipv4=(row.private_ip,),
            group_ids=tuple(member_of[row.id]),
        )
        for row in own_rows
    ]
    if foreign:  # other accounts' members of referenced groups: their addresses only
        found: dict[str, tuple[str, list[str]]] = {}
        for iface, ip, gid in conn.execute(
            select(ni.id, ni.private_ip, ig.group_id)
            .join(schema.interface_groups, ig.interface_id == ni.id)
            .join(schema.instances, inst.id == ni.instance_id)
            .where(ig.group_id.in_(foreign), inst.state.in_(LIVE), ni.account_id != account_id)
        ):
            found.setdefault(iface, (ip, []))[1].append(gid)
        interfaces += [
            Interface(iface, "", "", "", private_ipv4=(ip,), group_ids=tuple(gids))
            for iface, (ip, gids) in found.items()
        ]
    instances: dict[str, tuple[str, ...]] = {}
    for row in own_rows:
        if row.instance_id:
            instances[row.instance_id] = (*instances.get(row.instance_id, ()), row.id)
    gateways = {
        gateway_id(v): v
        for v in conn.execute(
            select(vpc.id).where(
                vpc.account_id == account_id, vpc.region == region, vpc.is_default.is_(True)
            )
        ).scalars()
    }
    blocks = [
        *conn.execute(
            select(vpc.cidr).where(vpc.account_id == account_id, vpc.region == region)
        ).scalars(),
        *conn.execute(
            select(schema.cidr_blocks.c.cidr).where(
                schema.cidr_blocks.c.account_id == account_id,
                schema.cidr_blocks.c.region == region,
                schema.cidr_blocks.c.resource_id.like("vpc-%"),
            )
        ).scalars(),
    ]
    return Network(
        State.of(groups, interfaces),
        owned=frozenset(own_ids),
        public_ips=public,
        instances=instances,
        vpc_of={row.id: row.vpc_id for row in own_rows},
        subnet_of={row.id: row.subnet_id for row in own_rows},
        gateways=gateways,
        vpc_cidrs=tuple(ipaddress.ip_network(b, strict=False) for b in blocks),
    )


# The last Network built per account and region, with the revision it was read at: every
# change to what it holds (groups, rules, instances, interfaces, addresses, of any account)
# takes a new revision, so an entry of the current revision is what a new read would give.
_BUILT: dict[tuple[str, str], tuple[int, Network]] = {}
_BUILT_LOCK = threading.Lock()
_BUILT_MAX = 64


def revision(conn: Connection) -> int:
    c = schema.counters.c
    return conn.execute(select(c.value).where(c.name == "revision")).scalar_one()


def cached_network(conn: Connection, account_id: str, region: str) -> Network:
    """:func:`account_network`, built again only when the store's revision moved on."""
    rev = revision(conn)
    key = (account_id, region)
    with _BUILT_LOCK:
        hit = _BUILT.get(key)
    if hit is not None and hit[0] == rev:
        return hit[1]
    net = account_network(conn, account_id, region)
    with _BUILT_LOCK:
        if len(_BUILT) >= _BUILT_MAX:
            _BUILT.clear()
        _BUILT[key] = (rev, net)
    return net


def network(ctx: Ctx) -> Network:
    if ctx.tx is not None and ctx.tx.appended:
        return account_network(ctx.conn, ctx.account_id, ctx.region)
    return cached_network(ctx.conn, ctx.account_id, ctx.region)


# --- internet gateways ------------------------------------------------------------------

IGW_FILTERS = {
    "internet-gateway-id": lambda it: [it["internet_gateway_id"]],
    "attachment.vpc-id": lambda it: [a["vpc_id"] for a in it["attachments"]],
    "attachment.state": lambda it: [a["state"] for a in it["attachments"]],
    "owner-id": lambda it: [it["owner_id"]],
}


def _gateways(ctx: Ctx) -> dict[str, str]:
    v = schema.vpcs.c
    return {
        gateway_id(vid): vid
        for vid in ctx.conn.execute(
            select(v.id).where(
                v.account_id == ctx.account_id, v.region == ctx.region, v.is_default.is_(True)
            )
        ).scalars()
    }


def _igw_not_found(ids: Iterable[str]) -> ApiError:
    shown = ", ".join(ids)
    return ApiError(
        "InvalidInternetGatewayID.NotFound", f"The internetGateway ID '{shown}' does not exist"
    )


@action("DescribeInternetGateways", write=False)
def describe_internet_gateways(ctx: Ctx, p: Params) -> Result:
    filters = parse_filters(p.get("filters"), IGW_FILTERS)
    max_results = check_max_results(p.get("max_results"))
    gateways = _gateways(ctx)
    wanted = list(dict.fromkeys(p.get("internet_gateway_ids") or ()))
    for gid in wanted:
        if not isinstance(gid, str) or not gid.startswith("igw-"):
            raise ApiError("InvalidInternetGatewayId.Malformed", f'Invalid id: "{gid}"')
    missing = [gid for gid in wanted if gid not in gateways]
    if missing:
        raise _igw_not_found(missing)
    items = [
        {
            "internet_gateway_id": gid,
            "owner_id": ctx.account_id,
            "attachments": [{"vpc_id": vid, "state": "available"}],
            "tags": [],
        }
        for gid, vid in sorted(gateways.items())
        if not wanted or gid in wanted
    ]
    items = [it for it in items if matches(it, filters, IGW_FILTERS)]
    page, token = paginate(items, "internet_gateway_id", max_results, p.get("next_token"))
    out: Result = {"internet_gateways": page}
    if token:
        out["next_token"] = token
    return out


# --- records of the insights table ------------------------------------------------------

KINDS = {
    "nip": (
        "path",
        "network-insights-path",
        "InvalidNetworkInsightsPathId",
        "network-insights-path",
    ),
    "nia": (
        "analysis",
        "network-insights-analysis",
        "InvalidNetworkInsightsAnalysisId",
        "network-insights-analysis",
    ),
    "nis": (
        "scope",
        "network-insights-access-scope",
        "InvalidNetworkInsightsAccessScopeId",
        "network-insights-access-scope",
    ),
    "nisa": (
        "scope-analysis",
        "network-insights-access-scope-analysis",
        "InvalidNetworkInsightsAccessScopeAnalysisId",
        "network-insights-access-scope-analysis",
    ),
}
for _prefix, (_kind, _rtype, _code, _label) in KINDS.items():
    resources.register_kind(
        resources.Kind(
            _prefix,
            _rtype,
            schema.insights,
            f"{_code}.Malformed",
            f"{_code}.NotFound",
            f"The {_label} ID '{{id}}' does not exist",
        )
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _store(ctx: Ctx, rid: str, kind: str, data: dict, parent: str | None = None) -> None:
    ctx.conn.execute(
        insert(schema.insights).values(
            id=rid,
            account_id=ctx.account_id,
            region=ctx.region,
            kind=kind,
            parent_id=parent,
            data=data,
            created_at=_now(),
        )
    )


def _data(row: Any) -> dict:
    return row.data if isinstance(row.data, dict) else json.loads(row.data)


def _listing(ctx: Ctx, kind: str, parent: str | None = None) -> list[Any]:
    t = schema.insights.c
    q = select(schema.insights).where(
        t.account_id == ctx.account_id, t.region == ctx.region, t.kind == kind
    )
    if parent is not None:
        q = q.where(t.parent_id == parent)
    return list(ctx.conn.execute(q.order_by(t.id)))


def _rows(ctx: Ctx, ids: list[str] | None, prefix: str, kind: str, parent: str | None = None):
    if ids:
        rows = resources.get_many(ctx, ids, prefix)
        return [r for r in rows if r.kind == kind]
    return _listing(ctx, kind, parent)


def _with_tags(ctx: Ctx, rows: list[Any], id_key: str) -> list[Result]:
    tags = resources.tags_for(ctx, [r.id for r in rows])
    out = []
    for row in rows:
        item = dict(_data(row))
        item["tags"] = tags.get(row.id, [])
        out.append(item)
    return out


def _page(ctx: Ctx, p: Params, items: list[Result], key: str, out_key: str) -> Result:
    max_results = check_max_results(p.get("max_results"), 1, 100)
    page, token = paginate(items, key, max_results, p.get("next_token"))
    out: Result = {out_key: page}
    if token:
        out["next_token"] = token
    return out


def _delete(ctx: Ctx, rid: str, prefix: str) -> None:
    row = resources.get(ctx, rid, prefix)
    t = schema.insights.c
    children = [c.id for c in ctx.conn.execute(select(t.id).where(t.parent_id == row.id))]
    resources.drop_tags(ctx, [row.id, *children])
    ctx.conn.execute(delete(schema.insights).where(t.id.in_([row.id, *children])))


# --- Reachability Analyzer ---------------------------------------------------------------

PATH_FILTERS = {
    "network-insights-path-id": lambda it: [it["network_insights_path_id"]],
    "source": lambda it: [it.get("source")],
    "destination": lambda it: [it.get("destination")],
    "source-ip": lambda it: [it.get("source_ip")],
    "destination-ip": lambda it: [it.get("destination_ip")],
    "protocol": lambda it: [it.get("protocol")],
    "destination-port": lambda it: [it.get("destination_port")],
    "filter-at-source.source-address": lambda it: [
        (it.get("filter_at_source") or {}).get("source_address")
    ],
    "filter-at-destination.destination-address": lambda it: [
        (it.get("filter_at_destination") or {}).get("destination_address")
    ],
}
ANALYSIS_FILTERS = {
    "network-insights-analysis-id": lambda it: [it["network_insights_analysis_id"]],
    "network-insights-path-id": lambda it: [it["network_insights_path_id"]],
    "status": lambda it: [it["status"]],
    "path-found": lambda it: [it.get("network_path_found")],
}


def _bad(param: str, value: Any, why: str) -> ApiError:
    return ApiError(
        "InvalidParameterValue", f"Value ({value}) for parameter {param} is invalid. {why}"
    )


def _check_end(ctx: Ctx, value: Any, param: str, gateways: dict[str, str]) -> str:
    if not isinstance(value, str) or not value:
        raise ApiError("MissingParameter", f"The request must contain the parameter {param}")
    rid = value.rsplit("/", 1)[-1] if value.startswith("arn:") else value
    if rid.startswith("igw-"):
        if rid not in gateways:
            raise _igw_not_found([rid])
        return rid
    if rid.startswith(("i-", "eni-")):
        resources.get(ctx, rid, rid.split("-", 1)[0])
        return rid
    try:
        ipaddress.ip_address(rid)
    except ValueError:
        raise _bad(
            param, value, "Expected an instance, network interface or internet gateway id."
        ) from None
    return rid


def _check_ip(value: Any, param: str) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise _bad(param, value, "Expected an IPv4 address.") from None


def _check_filter(value: Any, param: str) -> dict | None:
    if not value:
        return None
    out: dict[str, Any] = {}
    for key in ("source_address", "destination_address"):
        if value.get(key) is not None:
            out[key] = _check_ip(value[key], f"{param}.{key.title().replace('_', '')}")
    for key in ("source_port_range", "destination_port_range"):
        rng = value.get(key)
        if rng:
            lo, hi = rng.get("from_port", 0), rng.get("to_port", 65535)
            if lo is None or hi is None or not 0 <= lo <= hi <= 65535:
                raise _bad(f"{param}.{key}", f"{lo}-{hi}", "Expected a port range in 0-65535.")
            out[key] = {"from_port": lo, "to_port": hi}
    return out


@action("CreateNetworkInsightsPath", write=True)
def create_network_insights_path(ctx: Ctx, p: Params) -> Result:
    gateways = _gateways(ctx)
    source = _check_end(ctx, p.get("source"), "Source", gateways)
    destination = None
    if p.get("destination") is not None:
        destination = _check_end(ctx, p.get("destination"), "Destination", gateways)
    source_ip = _check_ip(p.get("source_ip"), "SourceIp")
    destination_ip = _check_ip(p.get("destination_ip"), "DestinationIp")
    if destination is None and destination_ip is None:
        raise ApiError(
            "MissingParameter",
            "The request must contain the parameter Destination or DestinationIp",
        )
    protocol = p.get("protocol")
    if protocol is None:
        raise ApiError("MissingParameter", "The request must contain the parameter Protocol")
    if str(protocol).lower() not in ("tcp", "udp"):
        raise _bad("Protocol", protocol, "Expected tcp or udp.")
    port = p.get("destination_port")
    if port is not None and not 0 <= port <= 65535:
        raise _bad("DestinationPort", port, "Expected a port in 0-65535.")
    rid = new_id("nip")
    data: dict[str, Any] = {
        "network_insights_path_id": rid,
        "network_insights_path_arn": ctx.arn("network-insights-path", rid),
        "created_date": _now(),
        "source": source,
        "protocol": str(protocol).lower(),
    }
    for key, val in (
        ("destination", destination),
        ("source_ip", source_ip),
        ("destination_ip", destination_ip),
        ("destination_port", port),
        ("filter_at_source", _check_filter(p.get("filter_at_source"), "FilterAtSource")),
        (
            "filter_at_destination",
            _check_filter(p.get("filter_at_destination"), "FilterAtDestination"),
        ),
    ):
        if val is not None:
            data[key] = val
    if not source.startswith(("i-", "eni-", "igw-")):
        pass
    else:
        data["source_arn"] = _arn_of(ctx, source)
    if destination and destination.startswith(("i-", "eni-", "igw-")):
        data["destination_arn"] = _arn_of(ctx, destination)
    _store(ctx, rid, "path", data)
    resources.tag_specifications(ctx, p, "network-insights-path", rid)
    data["tags"] = resources.tags_for(ctx, [rid]).get(rid, [])
    return {"network_insights_path": data}


def _arn_of(ctx: Ctx, rid: str) -> str:
    kind = {"i": "instance", "eni": "network-interface", "igw": "internet-gateway"}[
        rid.split("-", 1)[0]
    ]
    return ctx.arn(kind, rid)


@action("DescribeNetworkInsightsPaths", write=False)
def describe_network_insights_paths(ctx: Ctx, p: Params) -> Result:
    filters = parse_filters(p.get("filters"), PATH_FILTERS)
    rows = _rows(ctx, p.get("network_insights_path_ids"), "nip", "path")
    items = [it for it in _with_tags(ctx, rows, "") if matches(it, filters, PATH_FILTERS)]
    return _page(ctx, p, items, "network_insights_path_id", "network_insights_paths")


@action("DeleteNetworkInsightsPath", write=True)
def delete_network_insights_path(ctx: Ctx, p: Params) -> Result:
    rid = p.get("network_insights_path_id")
    if rid is None:
        raise ApiError(
            "MissingParameter", "The request must contain the parameter NetworkInsightsPathId"
        )
    _delete(ctx, rid, "nip")
    return {"network_insights_path_id": rid}


def _component(rid: str, ctx: Ctx, name: str | None = None) -> dict:
    out = {"id": rid}
    if rid.startswith(("i-", "eni-", "igw-")):
        out["arn"] = _arn_of(ctx, rid)
    elif rid.startswith("sg-"):
        out["arn"] = ctx.arn("security-group", rid)
    if name:
        out["name"] = name
    return out


def _sg_rule(rule: Rule) -> dict:
    out: dict[str, Any] = {
        "direction": rule.direction,
        "security_group_id": rule.group_id,
        "protocol": rule.protocol,
    }
    if rule.cidr is not None:
        out["cidr"] = str(rule.cidr)
    if rule.ports is not None:
        out["port_range"] = {"from": rule.from_port, "to": rule.to_port}
    return out


def _header(answer: Answer) -> dict:
    """The packet as it crosses the path: the source as the destination sees it, the
    destination as the source addressed it."""
    flow = answer.flow
    src = flow.src_addr or answer.src.address
    if src is None and answer.src.interface is not None:
        src = answer.src.interface.private_ipv4[0]
    dst = flow.dst_addr or answer.dst.address
    if dst is None and answer.dst.interface is not None:
        dst = answer.dst.interface.private_ipv4[0]
    out: dict[str, Any] = {"protocol": str(flow.protocol)}
    if src is not None:
        out["source_addresses"] = [str(src)]
    if dst is not None:
        out["destination_addresses"] = [str(dst)]
    if has_ports(flow.protocol) and flow.port >= 0:
        out["destination_port_ranges"] = [{"from": flow.port, "to": flow.port}]
    return out


def path_components(ctx: Ctx, net: Network, answer: Answer) -> list[dict]:
    """The hops of an allowed path: the source, its interface with the egress rule that
    matched, the internet gateway when crossed, the destination's interface with the
    ingress rule that matched, the destination."""
    hops: list[dict] = []
    decision = answer.decision

    def add(**kw: Any) -> None:
        hops.append({"sequence_number": len(hops) + 1, **kw})

    src, dst = answer.src, answer.dst
    header = _header(answer)
    if src.interface is not None:
        iface = src.interface
        if iface.instance_id:
            add(component=_component(iface.instance_id, ctx), outbound_header=header)
        hop: dict[str, Any] = {
            "component": _component(iface.id, ctx),
            "vpc": {"id": net.vpc_of.get(iface.id, "")},
            "subnet": {"id": net.subnet_of.get(iface.id, "")},
        }
        if decision is not None and decision.egress.rules:
            hop["security_group_rule"] = _sg_rule(decision.egress.rules[0])
        add(**hop)
    if answer.gateway is not None:
        add(component=_component(answer.gateway, ctx), inbound_header=header)
    elif src.interface is None and src.gateway:
        add(component=_component(src.gateway, ctx), inbound_header=header)
    if dst.interface is not None:
        iface = dst.interface
        hop = {
            "component": _component(iface.id, ctx),
            "vpc": {"id": net.vpc_of.get(iface.id, "")},
            "subnet": {"id": net.subnet_of.get(iface.id, "")},
            "inbound_header": header,
        }
        if decision is not None and decision.ingress.rules:
            hop["security_group_rule"] = _sg_rule(decision.ingress.rules[0])
        add(**hop)
        if iface.instance_id:
            add(component=_component(iface.instance_id, ctx))
    return hops


def explanations(ctx: Ctx, net: Network, answer: Answer) -> list[dict]:
    """Why a path is not found: ENI_SG_RULES_MISMATCH per denying side (its direction,
    interface and groups), or the edge's reason (CANNOT_ROUTE: no public IP)."""
    if answer.allowed:
        return []
    decision = answer.decision
    flow = answer.flow
    base: dict[str, Any] = {"protocols": [paths.protocol_name(flow.protocol)]}
    if has_ports(flow.protocol) and flow.port >= 0:
        base["port_ranges"] = [{"from": flow.port, "to": flow.port}]
        base["port"] = flow.port
    if decision is None:
        end = (
            answer.dst
            if answer.src.interface is not None and answer.dst.interface is None
            else None
        )
        iface = (
            answer.src.interface if end is not None else answer.dst.interface
        ) or answer.src.interface
        out = {"explanation_code": answer.code or "CANNOT_ROUTE", **base}
        if iface is not None:
            out["network_interface"] = _component(iface.id, ctx)
            out["component"] = _component(iface.instance_id or iface.id, ctx)
        return [out]
    found = []
    for verdict, iface in (
        (decision.egress, decision.src.interface),
        (decision.ingress, decision.dst.interface),
    ):
        if verdict.allowed or iface is None:
            continue
        found.append(
            {
                "explanation_code": "ENI_SG_RULES_MISMATCH",
                "direction": verdict.direction,
                "network_interface": _component(iface.id, ctx),
                "security_groups": [
                    _component(g, ctx, net.state.groups[g].name if g in net.state.groups else None)
                    for g in iface.group_ids
                ],
                "component": _component(iface.instance_id or iface.id, ctx),
                **base,
            }
        )
    return found


def _path_ends(net: Network, path: dict) -> tuple[End, End]:
    src_filter = path.get("filter_at_source") or {}
    dst_filter = path.get("filter_at_destination") or {}
    src_ip = path.get("source_ip") or src_filter.get("source_address")
    dst_ip = path.get("destination_ip") or dst_filter.get("destination_address")
    src = paths.resolve_end(net, path["source"], address=src_ip)
    if path.get("destination"):
        dst = paths.resolve_end(net, path["destination"], address=dst_ip)
        if dst.interface is not None and dst_ip and dst.address is None:
            public = net.public_ips.get(dst.interface.id)
            if public is not None and str(public) == dst_ip:
                dst = End(dst.text, dst.interface, public, public=True)
    else:
        dst = paths.resolve_end(net, dst_ip)
    if src.interface is not None and src_ip and src.address is None and src.interface.id:
        pass
    return src, dst


def analyze_path(ctx: Ctx, net: Network, path: dict) -> dict:
    """NetworkPathFound, ForwardPathComponents and Explanations of one path."""
    try:
        src, dst = _path_ends(net, path)
    except PathError as exc:
        return {"network_path_found": False, "status_message": str(exc), "explanations": []}
    protocol = protocol_number(path["protocol"])
    port = path.get("destination_port")
    if port is None:
        rng = (path.get("filter_at_destination") or {}).get("destination_port_range") or (
            path.get("filter_at_source") or {}
        ).get("destination_port_range")
        if rng:
            ranges = (
                paths.allowed_ranges(net, src, dst, protocol, (rng["from_port"], rng["to_port"]))
                if (src.interface or src.address) and (dst.interface or dst.address)
                else []
            )
            port = ranges[0][0] if ranges else rng["from_port"]
    answer = paths.exists(net, src, dst, protocol, port)
    out: dict[str, Any] = {"network_path_found": answer.allowed}
    if answer.allowed:
        out["forward_path_components"] = path_components(ctx, net, answer)
    else:
        out["explanations"] = explanations(ctx, net, answer)
    return out


@action("StartNetworkInsightsAnalysis", write=True)
def start_network_insights_analysis(ctx: Ctx, p: Params) -> Result:
    path_id = p.get("network_insights_path_id")
    if path_id is None:
        raise ApiError(
            "MissingParameter", "The request must contain the parameter NetworkInsightsPathId"
        )
    row = resources.get(ctx, path_id, "nip")
    path = _data(row)
    rid = new_id("nia")
    data: dict[str, Any] = {
        "network_insights_analysis_id": rid,
        "network_insights_analysis_arn": ctx.arn("network-insights-analysis", rid),
        "network_insights_path_id": path_id,
        "start_date": _now(),
        "status": "succeeded",
    }
    data.update(analyze_path(ctx, network(ctx), path))
    if "status_message" in data:
        data["status"] = "failed"
    _store(ctx, rid, "analysis", data, parent=path_id)
    resources.tag_specifications(ctx, p, "network-insights-analysis", rid)
    data["tags"] = resources.tags_for(ctx, [rid]).get(rid, [])
    return {"network_insights_analysis": data}


@action("DescribeNetworkInsightsAnalyses", write=False)
def describe_network_insights_analyses(ctx: Ctx, p: Params) -> Result:
    filters = parse_filters(p.get("filters"), ANALYSIS_FILTERS)
    parent = p.get("network_insights_path_id")
    if parent is not None:
        resources.get(ctx, parent, "nip")
    rows = _rows(ctx, p.get("network_insights_analysis_ids"), "nia", "analysis", parent)
    if parent is not None:
        rows = [r for r in rows if r.parent_id == parent]
    items = [it for it in _with_tags(ctx, rows, "") if matches(it, filters, ANALYSIS_FILTERS)]
    return _page(ctx, p, items, "network_insights_analysis_id", "network_insights_analyses")


@action("DeleteNetworkInsightsAnalysis", write=True)
def delete_network_insights_analysis(ctx: Ctx, p: Params) -> Result:
    rid = p.get("network_insights_analysis_id")
    if rid is None:
        raise ApiError(
            "MissingParameter", "The request must contain the parameter NetworkInsightsAnalysisId"
        )
    _delete(ctx, rid, "nia")
    return {"network_insights_analysis_id": rid}


# --- Network Access Analyzer ---------------------------------------------------------------

INSTANCE_TYPES = {"AWS::EC2::Instance", "AWS::EC2::NetworkInterface"}
GATEWAY_TYPES = {"AWS::EC2::InternetGateway"}
KNOWN_TYPES = INSTANCE_TYPES | GATEWAY_TYPES | {"AWS::EC2::SecurityGroup", "AWS::EC2::VPC"}


def _check_statement(st: dict | None, param: str) -> dict:
    if not st:
        return {}
    out: dict[str, Any] = {}
    res = st.get("resource_statement")
    if res:
        types = list(res.get("resource_types") or ())
        for t in types:
            if t not in KNOWN_TYPES:
                raise _bad(
                    f"{param}.ResourceStatement.ResourceTypes", t, "Unsupported resource type."
                )
        out["resource_statement"] = {
            k: v
            for k, v in (("resources", list(res.get("resources") or ())), ("resource_types", types))
            if v
        }
    head = st.get("packet_header_statement")
    if head:
        clean: dict[str, list[str]] = {}
        for key in ("source_addresses", "destination_addresses"):
            for v in head.get(key) or ():
                try:
                    ipaddress.ip_network(v, strict=False)
                except ValueError:
                    raise _bad(f"{param}.PacketHeaderStatement", v, "Expected a CIDR.") from None
            if head.get(key):
                clean[key] = list(head[key])
        for key in ("source_ports", "destination_ports"):
            for v in head.get(key) or ():
                _port_range(v, param)
            if head.get(key):
                clean[key] = list(head[key])
        if head.get("protocols"):
            for v in head["protocols"]:
                if v not in ("tcp", "udp"):
                    raise _bad(
                        f"{param}.PacketHeaderStatement.Protocols", v, "Expected tcp or udp."
                    )
            clean["protocols"] = list(head["protocols"])
        out["packet_header_statement"] = clean
    return out


def _port_range(text: str, param: str = "DestinationPorts") -> tuple[int, int]:
    try:
        lo, _, hi = str(text).partition("-")
        low, high = int(lo), int(hi or lo)
    except ValueError:
        raise _bad(param, text, "Expected a port or a port range like 1000-2000.") from None
    if not 0 <= low <= high <= 65535:
        raise _bad(param, text, "Expected ports in 0-65535.")
    return low, high


def _check_paths(items: list | None, param: str) -> list[dict]:
    out = []
    for i, item in enumerate(items or (), 1):
        entry = {}
        for key, wire in (("source", "Source"), ("destination", "Destination")):
            st = _check_statement(item.get(key), f"{param}.{i}.{wire}")
            if st:
                entry[key] = st
        out.append(entry)
    return out


@action("CreateNetworkInsightsAccessScope", write=True)
def create_network_insights_access_scope(ctx: Ctx, p: Params) -> Result:
    match = _check_paths(p.get("match_paths"), "MatchPath")
    exclude = _check_paths(p.get("exclude_paths"), "ExcludePath")
    if not match:
        raise ApiError("MissingParameter", "The request must contain the parameter MatchPath")
    rid = new_id("nis")
    now = _now()
    scope = {
        "network_insights_access_scope_id": rid,
        "network_insights_access_scope_arn": ctx.arn("network-insights-access-scope", rid),
        "created_date": now,
        "updated_date": now,
    }
    content = {"network_insights_access_scope_id": rid, "match_paths": match}
    if exclude:
        content["exclude_paths"] = exclude
    _store(ctx, rid, "scope", {**scope, "content": content})
    resources.tag_specifications(ctx, p, "network-insights-access-scope", rid)
    scope["tags"] = resources.tags_for(ctx, [rid]).get(rid, [])
    return {
        "network_insights_access_scope": scope,
        "network_insights_access_scope_content": content,
    }


SCOPE_FILTERS = {
    "network-insights-access-scope-id": lambda it: [it["network_insights_access_scope_id"]]
}
SCOPE_ANALYSIS_FILTERS = {
    "network-insights-access-scope-analysis-id": lambda it: [
        it["network_insights_access_scope_analysis_id"]
    ],
    "network-insights-access-scope-id": lambda it: [it["network_insights_access_scope_id"]],
    "status": lambda it: [it["status"]],
    "findings-found": lambda it: [it.get("findings_found")],
}


@action("DescribeNetworkInsightsAccessScopes", write=False)
def describe_network_insights_access_scopes(ctx: Ctx, p: Params) -> Result:
    filters = parse_filters(p.get("filters"), SCOPE_FILTERS)
    rows = _rows(ctx, p.get("network_insights_access_scope_ids"), "nis", "scope")
    items = []
    for it in _with_tags(ctx, rows, ""):
        it.pop("content", None)
        if matches(it, filters, SCOPE_FILTERS):
            items.append(it)
    return _page(
        ctx, p, items, "network_insights_access_scope_id", "network_insights_access_scopes"
    )


def _scope(ctx: Ctx, p: Params) -> Any:
    rid = p.get("network_insights_access_scope_id")
    if rid is None:
        raise ApiError(
            "MissingParameter",
            "The request must contain the parameter NetworkInsightsAccessScopeId",
        )
    return resources.get(ctx, rid, "nis")


@action("GetNetworkInsightsAccessScopeContent", write=False)
def get_network_insights_access_scope_content(ctx: Ctx, p: Params) -> Result:
    return {"network_insights_access_scope_content": _data(_scope(ctx, p))["content"]}


@action("DeleteNetworkInsightsAccessScope", write=True)
def delete_network_insights_access_scope(ctx: Ctx, p: Params) -> Result:
    row = _scope(ctx, p)
    _delete(ctx, row.id, "nis")
    return {"network_insights_access_scope_id": row.id}


def _end_matches(net: Network, end: End, st: dict, *, source: bool) -> bool:
    res = st.get("resource_statement") or {}
    if res:
        ids: set[str] = set()
        types: set[str] = set()
        if end.interface is not None:
            iface = end.interface
            ids = {iface.id, iface.instance_id, *iface.group_ids, net.vpc_of.get(iface.id, "")}
            types = INSTANCE_TYPES | {"AWS::EC2::SecurityGroup", "AWS::EC2::VPC"}
        elif end.gateway:
            ids = {end.gateway, net.gateways.get(end.gateway, "")}
            types = GATEWAY_TYPES
        wanted_ids = {r.rsplit("/", 1)[-1] for r in res.get("resources") or ()}
        if wanted_ids and not wanted_ids & ids:
            return False
        if res.get("resource_types") and not set(res["resource_types"]) & types:
            return False
    return True


def _flow_filters(st_src: dict, st_dst: dict) -> tuple[list[str], list[tuple[int, int]], list[str]]:
    heads = [
        (st_src or {}).get("packet_header_statement") or {},
        (st_dst or {}).get("packet_header_statement") or {},
    ]
    protocols = next((h["protocols"] for h in heads if h.get("protocols")), ["tcp", "udp"])
    ports = [_port_range(v) for h in heads for v in h.get("destination_ports") or ()] or [
        (0, 65535)
    ]
    addresses = [a for h in heads for a in h.get("source_addresses") or ()]
    return protocols, ports, addresses


def findings(ctx: Ctx, net: Network, content: dict) -> list[dict]:
    """The paths a scope matches: every pair of ends (interfaces of the account, internet
    gateways) its MatchPaths select and its ExcludePaths do not, with each protocol's
    allowed destination port ranges (one finding per range)."""
    ends = list(paths.ends_of(net))
    out: list[dict] = []
    excludes = content.get("exclude_paths") or []
    for mp in content.get("match_paths") or []:
        src_st, dst_st = mp.get("source") or {}, mp.get("destination") or {}
        protocols, ranges, addresses = _flow_filters(src_st, dst_st)
        for src in ends:
            if not _end_matches(net, src, src_st, source=True):
                continue
            for dst in ends:
                if src.text == dst.text or (src.gateway and dst.gateway):
                    continue
                if not _end_matches(net, dst, dst_st, source=False):
                    continue
                if any(
                    _end_matches(net, src, ep.get("source") or {}, source=True)
                    and _end_matches(net, dst, ep.get("destination") or {}, source=False)
                    for ep in excludes
                ):
                    continue
                srcs = [src]
                if src.interface is None:
                    if addresses:
                        srcs = [
                            End(
                                src.text,
                                address=ipaddress.ip_network(a, strict=False).network_address,
                                gateway=src.gateway,
                            )
                            for a in addresses
                        ]
                    else:
                        srcs = [
                            End(src.text, address=a, gateway=src.gateway)
                            for a in paths.outside_candidates(net, src, dst)
                        ]
                dsts = [dst]
                if dst.interface is None:
                    dsts = [
                        End(dst.text, address=a, gateway=dst.gateway)
                        for a in paths.outside_candidates(net, src, dst)
                    ]
                for proto in protocols:
                    number = protocol_number(proto)
                    for lo, hi in ranges:
                        allowed: set[tuple[int, int]] = set()
                        witness: dict[tuple[int, int], Answer] = {}
                        for s in srcs:
                            for d in dsts:
                                for rng in paths.allowed_ranges(net, s, d, number, (lo, hi)):
                                    if rng not in allowed:
                                        allowed.add(rng)
                                        witness[rng] = paths.check(net, s, d, number, port=rng[0])
                        for rng in sorted(allowed):
                            answer = witness[rng]
                            comps = path_components(ctx, net, answer)
                            for c in comps:
                                for key in ("inbound_header", "outbound_header"):
                                    if key in c:
                                        c[key] = {
                                            **c[key],
                                            "destination_port_ranges": [
                                                {"from": rng[0], "to": rng[1]}
                                            ],
                                        }
                            out.append({"finding_components": comps})
    return out


@action("StartNetworkInsightsAccessScopeAnalysis", write=True)
def start_network_insights_access_scope_analysis(ctx: Ctx, p: Params) -> Result:
    row = _scope(ctx, p)
    content = _data(row)["content"]
    rid = new_id("nisa")
    net = network(ctx)
    found = findings(ctx, net, content)
    for i, f in enumerate(found, 1):
        f.update(
            network_insights_access_scope_analysis_id=rid,
            network_insights_access_scope_id=row.id,
            finding_id=f"{rid}-{i:05d}",
        )
    now = _now()
    data: dict[str, Any] = {
        "network_insights_access_scope_analysis_id": rid,
        "network_insights_access_scope_analysis_arn": ctx.arn(
            "network-insights-access-scope-analysis", rid
        ),
        "network_insights_access_scope_id": row.id,
        "status": "succeeded",
        "start_date": now,
        "end_date": now,
        "findings_found": "true" if found else "false",
        "analyzed_eni_count": len(net.owned),
    }
    _store(ctx, rid, "scope-analysis", {**data, "findings": found}, parent=row.id)
    resources.tag_specifications(ctx, p, "network-insights-access-scope-analysis", rid)
    data["tags"] = resources.tags_for(ctx, [rid]).get(rid, [])
    return {"network_insights_access_scope_analysis": data}


@action("DescribeNetworkInsightsAccessScopeAnalyses", write=False)
def describe_network_insights_access_scope_analyses(ctx: Ctx, p: Params) -> Result:
    filters = parse_filters(p.get("filters"), SCOPE_ANALYSIS_FILTERS)
    parent = p.get("network_insights_access_scope_id")
    if parent is not None:
        resources.get(ctx, parent, "nis")
    rows = _rows(
        ctx, p.get("network_insights_access_scope_analysis_ids"), "nisa", "scope-analysis", parent
    )
    items = []
    for it in _with_tags(ctx, rows, ""):
        it.pop("findings", None)
        if matches(it, filters, SCOPE_ANALYSIS_FILTERS):
            items.append(it)
    return _page(
        ctx,
        p,
        items,
        "network_insights_access_scope_analysis_id",
        "network_insights_access_scope_analyses",
    )


@action("GetNetworkInsightsAccessScopeAnalysisFindings", write=False)
def get_network_insights_access_scope_analysis_findings(ctx: Ctx, p: Params) -> Result:
    rid = p.get("network_insights_access_scope_analysis_id")
    if rid is None:
        raise ApiError(
            "MissingParameter",
            "The request must contain the parameter NetworkInsightsAccessScopeAnalysisId",
        )
    data = _data(resources.get(ctx, rid, "nisa"))
    found = data.get("findings") or []
    max_results = check_max_results(p.get("max_results"), 1, 100)
    page, token = paginate(found, "finding_id", max_results, p.get("next_token"))
    out: Result = {
        "network_insights_access_scope_analysis_id": rid,
        "analysis_status": data["status"],
        "analysis_findings": page,
    }
    if token:
        out["next_token"] = token
    return out


# --- explain: one flow, for `stockade explain` (a signed JSON endpoint) ------------------------


def explain_flow(conn: Connection, account_id: str, region: str, query: dict[str, Any]) -> dict:
    """The answer of ``stockade explain`` as JSON (raises PathError/ValueError for bad
    ends or protocols: the endpoint answers them 400)."""
    from stockade.analysis.explain import explain

    net = cached_network(conn, account_id, region)
    answer = explain(
        net,
        str(query.get("from", "")),
        str(query.get("to", "")),
        protocol=str(query.get("protocol", "tcp")),
        port=int(query.get("port", -1)),
        icmp_type=int(query.get("icmp_type", -1)),
        icmp_code=int(query.get("icmp_code", -1)),
    )
    return answer_json(answer)
