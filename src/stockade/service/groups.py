"""Security groups and their rules: the EC2 actions, validation and error codes.

A rule is stored one row per source (a CIDR, an IPv6 CIDR, a prefix list or a group), as
EC2's ``sgr-`` rules are; ``IpPermissions`` are rebuilt from rows when described.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Row, select, update

from stockade import model
from stockade.errors import ApiError
from stockade.service import prefixlists, resources
from stockade.service.common import (
    Ctx,
    FilterSpec,
    Params,
    Result,
    action,
    check_id,
    check_text,
    matches,
    new_id,
)
from stockade.service.describe import Describe
from stockade.store import schema
from stockade.store.db import Sql, execute, execute_many, row_type

PROTOCOL_NAMES = {"tcp": "6", "udp": "17", "icmp": "1", "icmpv6": "58", "-1": "-1"}
PROTOCOL_LABELS = {v: k for k, v in PROTOCOL_NAMES.items()}
PORTED = {"6", "17"}
ICMP = {"1", "58"}

G = schema.security_groups.c
R = schema.rules.c

# Fixed statements of the request hot paths, run on the DBAPI connection (see store/db.py).
GROUP_ROWS = row_type(schema.security_groups)
RULE_ROWS = row_type(schema.rules)
_DEFAULT_VPC = Sql(
    "SELECT r.default_vpc_id FROM account_regions r JOIN vpcs v ON v.id = r.default_vpc_id "
    "WHERE r.account_id = ? AND r.region = ?"
)
_GROUP_BY_NAME = Sql(
    f"SELECT {GROUP_ROWS.columns} FROM security_groups "
    "WHERE vpc_id = ? AND name = ? AND account_id = ?"
)
_RULES_OF = Sql(f"SELECT {RULE_ROWS.columns} FROM sg_rules WHERE group_id = ? ORDER BY seq")
# (group_id, seq): the order of the index on them, so no sort (each group's in seq order)
_RULES_OF_MANY = Sql(
    f"SELECT {RULE_ROWS.columns} FROM sg_rules WHERE group_id IN ({{in}}) ORDER BY group_id, seq"
)
_INSERT_RULE = Sql(
    f"INSERT INTO sg_rules ({RULE_ROWS.columns}) "
    f"VALUES ({', '.join('?' * len(schema.rules.columns))})"
)
_DELETE_RULES_RETURNING = Sql(
    f"DELETE FROM sg_rules WHERE id IN ({{in}}) RETURNING {RULE_ROWS.columns}"
)
_GROUP_OF_OWNER = Sql(
    f"SELECT {GROUP_ROWS.columns} FROM security_groups "
    "WHERE id = ? AND region = ? AND account_id = ?"
)
_NAME_TAKEN = Sql("SELECT id FROM security_groups WHERE vpc_id = ? AND name = ?")
_GROUP_COUNT = Sql("SELECT count(*) FROM security_groups WHERE account_id = ? AND region = ?")
_INSERT_GROUP = Sql(
    f"INSERT INTO security_groups ({GROUP_ROWS.columns}) "
    f"VALUES ({', '.join('?' * len(schema.security_groups.columns))})"
)
_REFERENCED_BY_OTHERS = Sql(
    "SELECT group_id FROM sg_rules WHERE ref_group_id = ? AND group_id != ? LIMIT 1"
)
_RULE_IDS_OF = Sql("SELECT id FROM sg_rules WHERE group_id = ?")
_DELETE_RULES_OF = Sql("DELETE FROM sg_rules WHERE group_id = ?")
_DELETE_GROUP = Sql("DELETE FROM security_groups WHERE id = ?")

# Checks other modules add (instances using a group, ...): each raises DependencyViolation.
DELETE_CHECKS: list[Callable[[Ctx, str], None]] = []


# --- rule values -------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSpec:
    """One rule as requested: direction, protocol, ports and exactly one peer."""

    egress: bool
    protocol: str
    from_port: int
    to_port: int
    cidr_ipv4: str | None = None
    cidr_ipv6: str | None = None
    prefix_list_id: str | None = None
    ref_group_id: str | None = None
    ref_user_id: str | None = None
    description: str | None = None

    @property
    def key(self) -> tuple:
        return (
            self.egress,
            self.protocol,
            self.from_port,
            self.to_port,
            self.cidr_ipv4,
            self.cidr_ipv6,
            self.prefix_list_id,
            self.ref_group_id,
        )

    @classmethod
    def from_row(cls, row: Row) -> RuleSpec:
        return cls(
            egress=row.egress,
            protocol=row.protocol,
            from_port=row.from_port,
            to_port=row.to_port,
            cidr_ipv4=row.cidr_ipv4,
            cidr_ipv6=row.cidr_ipv6,
            prefix_list_id=row.prefix_list_id,
            ref_group_id=row.ref_group_id,
            ref_user_id=row.ref_user_id,
            description=row.description,
        )

    def peer(self) -> str:
        return self.cidr_ipv4 or self.cidr_ipv6 or self.prefix_list_id or self.ref_group_id or ""

    def text(self) -> str:
        """EC2's wording of a rule in InvalidPermission.Duplicate messages."""
        proto = PROTOCOL_LABELS.get(self.protocol, self.protocol)
        if self.protocol in PORTED:
            body = f"{proto.upper()}, from port: {self.from_port}, to port: {self.to_port}"
        elif self.protocol in ICMP:
            body = f"{proto.upper()}, type: {self.from_port}, code: {self.to_port}"
        elif self.protocol == "-1":
            body = "ALL"
        else:
            body = f"protocol: {self.protocol}"
        return f'"peer: {self.peer()}, {body}, ALLOW"'


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:40] + "..."


def protocol_number(value: Any) -> str:
    """An IpProtocol as stored: EC2's names (tcp, udp, icmp, icmpv6, -1) or a protocol
    number in ASCII digits, checked by the model's :func:`~stockade.model.protocol_number`
    (what agents decode rules with)."""
    text = str(value).strip().lower() if value is not None else ""
    if text in PROTOCOL_NAMES:
        return PROTOCOL_NAMES[text]
    # ASCII digits only: str.isdigit() and int() also take "²" and "٦" (Arabic-Indic 6)
    if text.isascii() and text.isdigit() and len(text) <= 10:
        try:
            return str(model.protocol_number(int(text)))
        except ValueError:
            pass
    raise ApiError(
        "InvalidParameterValue",
        f"Invalid value '{_shown(value)}' for IP protocol. Unknown protocol.",
    )


def normalize_ports(protocol: str, from_port: int | None, to_port: int | None) -> tuple[int, int]:
    """FromPort/ToPort as stored, checked through the model's :class:`~stockade.model.PortRange`
    (tcp, udp) and :class:`~stockade.model.IcmpMatch` (icmp, icmpv6), with EC2's errors."""
    number = int(protocol)
    if model.has_ports(number):
        if from_port is None or to_port is None:
            raise ApiError(
                "InvalidParameterValue",
                "Invalid value for portRange. Must specify both from and to ports with TCP/UDP.",
            )
        if from_port == -1 and to_port == -1:
            from_port, to_port = 0, 65535
        for name, port in (("fromPort", from_port), ("toPort", to_port)):
            if not 0 <= port <= 65535:
                raise ApiError(
                    "InvalidParameterValue",
                    f"Invalid value '{port}' for {name}. Must be between 0 and 65535.",
                )
        try:
            ports = model.PortRange(from_port, to_port)
        except ValueError:
            raise ApiError(
                "InvalidParameterValue",
                f"Invalid TCP/UDP port range: from port {from_port} is greater than "
                f"to port {to_port}.",
            ) from None
        return ports.low, ports.high
    if model.is_icmp(number):
        icmp_type = -1 if from_port is None else from_port
        icmp_code = -1 if to_port is None else to_port
        for name, value in (("ICMP type", icmp_type), ("ICMP code", icmp_code)):
            if not -1 <= value <= 255:
                raise ApiError(
                    "InvalidParameterValue",
                    f"Invalid value '{value}' for {name}. Must be between -1 and 255.",
                )
        try:
            icmp = model.IcmpMatch(icmp_type, icmp_code)
        except ValueError:
            raise ApiError(
                "InvalidParameterValue",
                f"Invalid value '{icmp_code}' for ICMP code: it must be -1 when the type is -1.",
            ) from None
        return icmp.type, icmp.code
    return -1, -1  # all protocols, or a protocol without ports: ports are ignored


def check_cidr(value: Any, version: int) -> str:
    canonical = _canonical_cidr(str(value), version)
    if canonical is None:
        raise ApiError("InvalidParameterValue", f"CIDR block {value} is malformed")
    return canonical


@functools.lru_cache(maxsize=4096)  # the same few blocks come again and again
def _canonical_cidr(text: str, version: int) -> str | None:
    """The block as EC2 stores it: host bits cleared (``205.192.8.45/24`` is
    ``205.192.8.0/24``), the prefix length required."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if "/" not in text or net.version != version:
        return None
    return str(net)


# --- finding groups ----------------------------------------------------------------------


def default_vpc_id(ctx: Ctx) -> str:
    """The caller's default VPC in this region, or EC2's ``VPCIdNotSpecified``."""
    vpc_id = default_vpc_id_or_none(ctx)
    if vpc_id is None:
        raise ApiError("VPCIdNotSpecified", "No default VPC for this user")
    return vpc_id


def group_by_name(ctx: Ctx, name: str, vpc_id: str | None = None, owner: str | None = None) -> Row:
    """A group by name, in the default VPC unless ``vpc_id`` is given (the seeds' usage)."""
    in_default = vpc_id is None
    if owner not in (None, ctx.account_id):
        inner = replace(ctx, account_id=owner)
        vpc_id = default_vpc_id_or_none(inner)
    else:
        owner = ctx.account_id
        vpc_id = vpc_id or default_vpc_id(ctx)
    row = None
    # no stored name holds a NUL (PostgreSQL's text cannot): such a name is not found
    if vpc_id is not None and "\x00" not in name:
        found = GROUP_ROWS.rows(ctx.conn, _GROUP_BY_NAME, (vpc_id, name, owner))
        row = found[0] if found else None
    if row is None:
        where = f" in default VPC '{vpc_id}'" if in_default and vpc_id else ""
        raise ApiError(
            "InvalidGroup.NotFound", f"The security group '{name}' does not exist{where}"
        )
    return row


def default_vpc_id_or_none(ctx: Ctx) -> str | None:
    """The caller's default VPC in this region, if it has one (and it still exists)."""
    found = execute(ctx.conn, _DEFAULT_VPC, (ctx.account_id, ctx.region)).fetchall()
    return found[0][0] if found else None


# A group's rules as authorize and revoke compare them: RuleSpec.key's fields, then seq
# and id, as plain tuples (building full rows cost more than the query). SQLite's 0/1 for
# egress compares and hashes as the booleans of RuleSpec.key do.
_RULE_KEYS = Sql(
    "SELECT egress, protocol, from_port, to_port, cidr_ipv4, cidr_ipv6, prefix_list_id, "
    "ref_group_id, seq, id FROM sg_rules WHERE group_id = ?"
)
_KEY, _SEQ, _ID = slice(0, 8), 8, 9


def rule_keys(ctx: Ctx, group_id: str) -> list[tuple]:
    """``(*RuleSpec.key, seq, id)`` of each of the group's rules."""
    return execute(ctx.conn, _RULE_KEYS, (group_id,)).fetchall()


def target_group(ctx: Ctx, params: Params) -> Row:
    """The group a request acts on: GroupId, or GroupName in the default VPC."""
    if params.get("group_id"):
        return resources.get(ctx, params["group_id"], "sg")
    if params.get("group_name"):
        return group_by_name(ctx, params["group_name"])
    raise ApiError(
        "MissingParameter", "The request must contain the parameter groupName or groupId"
    )


def referenced_group(ctx: Ctx, target: Row, pair: Params) -> Row:
    """The group a UserIdGroupPair names, checked as EC2 does (isolation between accounts)."""
    user_id = pair.get("user_id")
    text = str(user_id)
    if user_id is not None and not (text.isascii() and text.isdigit() and len(text) == 12):
        raise ApiError("InvalidUserID.Malformed", f"Invalid user ID: {user_id}")
    owner = user_id or ctx.account_id
    if pair.get("group_id"):
        group_id = check_id(pair["group_id"], "sg", "InvalidGroupId.Malformed")
        found = GROUP_ROWS.rows(ctx.conn, _GROUP_OF_OWNER, (group_id, ctx.region, owner))
        if not found:
            raise ApiError(
                "InvalidGroup.NotFound", f"The security group '{group_id}' does not exist"
            )
        row = found[0]
    elif pair.get("group_name"):
        vpc = target.vpc_id if owner == ctx.account_id else None
        row = group_by_name(ctx, pair["group_name"], vpc_id=vpc, owner=owner)
    else:
        raise ApiError(
            "MissingParameter", "A group pair must name the source group (GroupId or GroupName)"
        )
    if row.account_id == ctx.account_id and row.vpc_id != target.vpc_id:
        raise ApiError(
            "InvalidGroup.NotFound",
            f"You have specified two resources that belong to different networks: "
            f"{target.id} is in {target.vpc_id}, {row.id} is in {row.vpc_id}.",
        )
    return row


# --- permissions in, rules out -----------------------------------------------------------


def permissions_from_params(params: Params) -> list[Params]:
    """IpPermissions, or the legacy flat parameters old clients send."""
    flat = [
        k
        for k in (
            "cidr_ip",
            "ip_protocol",
            "from_port",
            "to_port",
            "source_security_group_name",
            "source_security_group_owner_id",
        )
        if params.get(k) is not None
    ]
    perms = params.get("ip_permissions") or []
    if perms and flat:
        raise ApiError(
            "InvalidParameterCombination",
            "The parameter IpPermissions cannot be used with the parameters " + ", ".join(flat),
        )
    if perms:
        return perms
    if not flat:
        raise ApiError("MissingParameter", "No permissions were specified (IpPermissions).")
    source = params.get("source_security_group_name")
    if source is not None:
        pair = {"group_name": source, "user_id": params.get("source_security_group_owner_id")}
        if params.get("cidr_ip") is not None:
            raise ApiError(
                "InvalidParameterCombination",
                "The parameter CidrIp cannot be used with the parameter SourceSecurityGroupName",
            )
        if params.get("ip_protocol") is not None:
            return [
                {
                    "ip_protocol": params["ip_protocol"],
                    "from_port": params.get("from_port"),
                    "to_port": params.get("to_port"),
                    "user_id_group_pairs": [pair],
                }
            ]
        # EC2: a bare source group grants full ICMP, TCP and UDP access
        return [
            {"ip_protocol": "icmp", "from_port": -1, "to_port": -1, "user_id_group_pairs": [pair]},
            {"ip_protocol": "tcp", "from_port": 0, "to_port": 65535, "user_id_group_pairs": [pair]},
            {"ip_protocol": "udp", "from_port": 0, "to_port": 65535, "user_id_group_pairs": [pair]},
        ]
    if params.get("ip_protocol") is None:
        raise ApiError("MissingParameter", "The request must contain the parameter ipProtocol")
    return [
        {
            "ip_protocol": params["ip_protocol"],
            "from_port": params.get("from_port"),
            "to_port": params.get("to_port"),
            "ip_ranges": [{"cidr_ip": params.get("cidr_ip") or "0.0.0.0/0"}],
        }
    ]


def specs_from_permissions(
    ctx: Ctx, target: Row, perms: Iterable[Params], egress: bool
) -> list[RuleSpec]:
    specs = []
    for perm in perms:
        if perm.get("ip_protocol") is None:
            raise ApiError("MissingParameter", "The request must contain the parameter ipProtocol")
        proto = protocol_number(perm["ip_protocol"])
        lo, hi = normalize_ports(proto, perm.get("from_port"), perm.get("to_port"))
        base = RuleSpec(egress, proto, lo, hi)
        found = False
        for r in perm.get("ip_ranges") or ():
            cidr = check_cidr(r.get("cidr_ip"), 4)
            desc = resources.description(r.get("description"))
            specs.append(RuleSpec(egress, proto, lo, hi, cidr_ipv4=cidr, description=desc))
            found = True
        for r in perm.get("ipv6_ranges") or ():
            cidr = check_cidr(r.get("cidr_ipv6"), 6)
            desc = resources.description(r.get("description"))
            specs.append(RuleSpec(egress, proto, lo, hi, cidr_ipv6=cidr, description=desc))
            found = True
        for r in perm.get("prefix_list_ids") or ():
            pl_id = prefixlists.check_rule_prefix_list(ctx, r.get("prefix_list_id"))
            desc = resources.description(r.get("description"))
            specs.append(RuleSpec(egress, proto, lo, hi, prefix_list_id=pl_id, description=desc))
            found = True
        for pair in perm.get("user_id_group_pairs") or ():
            ref = referenced_group(ctx, target, pair)
            specs.append(
                replace(
                    base,
                    ref_group_id=ref.id,
                    ref_user_id=ref.account_id,
                    description=resources.description(pair.get("description")),
                )
            )
            found = True
        if not found:
            raise ApiError(
                "MissingParameter",
                "Each permission must name a source: IpRanges, Ipv6Ranges or UserIdGroupPairs.",
            )
    for spec in specs:
        check_model_rule(target.id, spec)
    return specs


def check_model_rule(group_id: str, spec: RuleSpec) -> model.Rule:
    """``spec`` as the data plane decodes it (see dataplane/agent.py ``_group``): the
    control plane never stores a rule an agent would refuse."""
    try:
        return model.Rule(
            group_id=group_id,
            egress=spec.egress,
            protocol=spec.protocol,
            from_port=spec.from_port,
            to_port=spec.to_port,
            cidr=ipaddress.ip_network(spec.cidr_ipv4 or spec.cidr_ipv6)
            if spec.cidr_ipv4 or spec.cidr_ipv6
            else None,
            ref_group_id=spec.ref_group_id,
            prefix_list_id=spec.prefix_list_id,
        )
    except ValueError as err:
        raise ApiError("InvalidParameterValue", f"Invalid rule {spec.text()}: {err}") from None


def spec_from_rule_request(ctx: Ctx, target: Row, req: Params, egress: bool) -> RuleSpec:
    """ModifySecurityGroupRules' flat SecurityGroupRuleRequest."""
    perm: Params = {k: req.get(k) for k in ("ip_protocol", "from_port", "to_port")}
    peers = [
        k for k in ("cidr_ipv4", "cidr_ipv6", "prefix_list_id", "referenced_group_id") if req.get(k)
    ]
    if len(peers) != 1:
        raise ApiError(
            "InvalidParameterCombination",
            "Specify exactly one of CidrIpv4, CidrIpv6, PrefixListId and ReferencedGroupId.",
        )
    desc = req.get("description")
    if req.get("cidr_ipv4"):
        perm["ip_ranges"] = [{"cidr_ip": req["cidr_ipv4"], "description": desc}]
    elif req.get("cidr_ipv6"):
        perm["ipv6_ranges"] = [{"cidr_ipv6": req["cidr_ipv6"], "description": desc}]
    elif req.get("prefix_list_id"):
        perm["prefix_list_ids"] = [{"prefix_list_id": req["prefix_list_id"]}]
    else:
        perm["user_id_group_pairs"] = [
            {"group_id": req["referenced_group_id"], "description": desc}
        ]
    (spec,) = specs_from_permissions(ctx, target, [perm], egress)
    return spec


def rule_result(ctx: Ctx, row: Row, owner_id: str, tags: list | None = None) -> Result:
    out: Result = {
        "security_group_rule_id": row.id,
        "group_id": row.group_id,
        "group_owner_id": owner_id,
        "is_egress": row.egress,
        "ip_protocol": PROTOCOL_LABELS.get(row.protocol, row.protocol),
        "from_port": row.from_port,
        "to_port": row.to_port,
        "cidr_ipv4": row.cidr_ipv4,
        "cidr_ipv6": row.cidr_ipv6,
        "prefix_list_id": row.prefix_list_id,
        "description": row.description,
        "tags": tags or [],
        "security_group_rule_arn": ctx.arn("security-group-rule", row.id, owner_id),
    }
    if row.ref_group_id:
        out["referenced_group_info"] = {"group_id": row.ref_group_id, "user_id": row.ref_user_id}
    return out


def permissions_of(rows: Iterable[Row | RuleSpec]) -> list[Result]:
    """Fold rule rows back into EC2's IpPermissions (one per protocol and port range)."""
    perms: dict[tuple, Result] = {}
    for r in rows:
        key = (r.protocol, r.from_port, r.to_port)
        perm = perms.get(key)
        if perm is None:
            perm = {
                "ip_protocol": PROTOCOL_LABELS.get(r.protocol, r.protocol),
                "user_id_group_pairs": [],
                "ip_ranges": [],
                "ipv6_ranges": [],
                "prefix_list_ids": [],
            }
            if r.protocol in PORTED or r.protocol in ICMP:
                perm["from_port"] = r.from_port
                perm["to_port"] = r.to_port
            perms[key] = perm
        desc = {"description": r.description} if r.description is not None else {}
        if r.cidr_ipv4:
            perm["ip_ranges"].append({"cidr_ip": r.cidr_ipv4, **desc})
        elif r.cidr_ipv6:
            perm["ipv6_ranges"].append({"cidr_ipv6": r.cidr_ipv6, **desc})
        elif r.prefix_list_id:
            perm["prefix_list_ids"].append({"prefix_list_id": r.prefix_list_id, **desc})
        else:
            perm["user_id_group_pairs"].append(
                {"group_id": r.ref_group_id, "user_id": r.ref_user_id, **desc}
            )
    return list(perms.values())


def describe_groups(ctx: Ctx, rows: list[Row]) -> list[Result]:
    ids = [g.id for g in rows]
    by_group: dict[str, list[Row]] = {i: [] for i in ids}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        if len(chunk) == 1:
            by_group[chunk[0]] = RULE_ROWS.rows(ctx.conn, _RULES_OF, chunk)
            continue
        for r in RULE_ROWS.rows(ctx.conn, _RULES_OF_MANY.expand(len(chunk)), chunk):
            by_group[r.group_id].append(r)
    tags = resources.tags_for(ctx, ids)
    out = []
    for g in rows:
        rules = by_group[g.id]
        item: Result = {
            "group_id": g.id,
            "group_name": g.name,
            "description": g.description,
            "owner_id": g.account_id,
            "vpc_id": g.vpc_id,
            "security_group_arn": ctx.arn("security-group", g.id, g.account_id),
            "ip_permissions": permissions_of(r for r in rules if not r.egress),
            "ip_permissions_egress": permissions_of(r for r in rules if r.egress),
        }
        if tags.get(g.id):
            item["tags"] = tags[g.id]
        out.append(item)
    return out


# --- writes ------------------------------------------------------------------------------


def existing_rules(ctx: Ctx, group_id: str) -> list[Row]:
    return RULE_ROWS.rows(ctx.conn, _RULES_OF, (group_id,))


def insert_rules(
    ctx: Ctx, group: Row, specs: list[RuleSpec], current: list[tuple] | None = None
) -> list[Row]:
    """Add ``specs`` to ``group`` after EC2's duplicate and quota checks (``current``: the
    group's :func:`rule_keys`, when the caller has them already)."""
    if current is None:
        current = rule_keys(ctx, group.id)
    seen = {r[_KEY] for r in current}
    for spec in specs:
        if spec.key in seen:
            raise ApiError(
                "InvalidPermission.Duplicate", f"the specified rule {spec.text()} already exists"
            )
        seen.add(spec.key)
    for egress in (False, True):
        count = sum(1 for r in current if bool(r[0]) == egress)
        count += sum(1 for s in specs if s.egress == egress)
        if count > ctx.config.max_rules_per_group:
            raise ApiError(
                "RulesPerSecurityGroupLimitExceeded",
                "The maximum number of rules per security group has been reached.",
            )
    seq = max((r[_SEQ] for r in current), default=0)
    rows = []
    for spec in specs:
        seq += 1
        # the row exactly as stored (so no need to read it back)
        row = RULE_ROWS.tuple_type(
            id=new_id("sgr"),
            group_id=group.id,
            account_id=group.account_id,
            region=group.region,
            seq=seq,
            egress=spec.egress,
            protocol=spec.protocol,
            from_port=spec.from_port,
            to_port=spec.to_port,
            cidr_ipv4=spec.cidr_ipv4,
            cidr_ipv6=spec.cidr_ipv6,
            prefix_list_id=spec.prefix_list_id,
            ref_group_id=spec.ref_group_id,
            ref_user_id=spec.ref_user_id,
            description=spec.description,
        )
        rows.append(row)
    execute_many(ctx.conn, _INSERT_RULE, rows)
    return rows


def log_rules(ctx: Ctx, group: Row) -> None:
    ctx.log("group.rules", group.id, vpc_id=group.vpc_id)


def create_group(ctx: Ctx, vpc_id: str, name: str, description: str) -> Row:
    """Insert a group with EC2's default rules (``default``: self-ingress too)."""
    group_id = new_id("sg")
    # the row exactly as stored (so no need to read it back)
    group = GROUP_ROWS.tuple_type(
        id=group_id,
        account_id=ctx.account_id,
        region=ctx.region,
        vpc_id=vpc_id,
        name=name,
        description=description,
    )
    execute(ctx.conn, _INSERT_GROUP, group)
    specs = [RuleSpec(True, "-1", -1, -1, cidr_ipv4="0.0.0.0/0")]
    if name == "default":
        specs.insert(
            0, RuleSpec(False, "-1", -1, -1, ref_group_id=group_id, ref_user_id=ctx.account_id)
        )
    insert_rules(ctx, group, specs, current=[])  # a new group has no rules yet
    ctx.log("group.created", group_id, vpc_id=vpc_id, name=name)
    return group


@action("CreateSecurityGroup", write=True)
def create_security_group(ctx: Ctx, p: Params) -> Result:
    name = check_text(p.get("group_name"), "GroupName")
    desc = check_text(p.get("description"), "GroupDescription")
    if name.lower().startswith("sg-"):
        raise ApiError("InvalidParameterValue", "Group names may not be in the format sg-*.")
    if name == "default":
        raise ApiError("InvalidGroup.Reserved", "The security group 'default' is reserved")
    vpc_id = resources.get(ctx, p["vpc_id"], "vpc").id if p.get("vpc_id") else default_vpc_id(ctx)
    if execute(ctx.conn, _NAME_TAKEN, (vpc_id, name)).fetchall():
        raise ApiError(
            "InvalidGroup.Duplicate",
            f"The security group '{name}' already exists for VPC '{vpc_id}'",
        )
    ((count,),) = execute(ctx.conn, _GROUP_COUNT, (ctx.account_id, ctx.region)).fetchall()
    if count >= ctx.config.max_groups_per_region:
        raise ApiError(
            "SecurityGroupLimitExceeded", "The maximum number of security groups has been reached."
        )
    group = create_group(ctx, vpc_id, name, desc)
    tags = None
    if p.get("tag_specifications"):  # a brand-new group has only the tags its request gave it
        resources.tag_specifications(ctx, p, "security-group", group.id)
        tags = resources.tags_for(ctx, [group.id]).get(group.id)
    return {
        "group_id": group.id,
        "tags": tags,
        "security_group_arn": ctx.arn("security-group", group.id),
    }


@action("DeleteSecurityGroup", write=True)
def delete_security_group(ctx: Ctx, p: Params) -> Result:
    group = target_group(ctx, p)
    if group.name == "default":
        raise ApiError(
            "CannotDelete",
            f'the specified group: "{group.id}" name: "default" cannot be deleted by a user',
        )
    if execute(ctx.conn, _REFERENCED_BY_OTHERS, (group.id, group.id)).fetchall():
        raise ApiError("DependencyViolation", f"resource {group.id} has a dependent object")
    for check in DELETE_CHECKS:
        check(ctx, group.id)
    rule_ids = [rid for (rid,) in execute(ctx.conn, _RULE_IDS_OF, (group.id,)).fetchall()]
    resources.drop_tags(ctx, [group.id, *rule_ids])
    execute(ctx.conn, _DELETE_RULES_OF, (group.id,))
    execute(ctx.conn, _DELETE_GROUP, (group.id,))
    ctx.log("group.deleted", group.id, vpc_id=group.vpc_id)
    return {"return": True, "group_id": group.id}


def _permission_values(g: Result, direction: str, field: str) -> list[Any]:
    return [v for perm in g[direction] for v in _perm_field(perm, field)]


def _perm_field(perm: Result, field: str) -> list[Any]:
    if field == "cidr":
        return [r["cidr_ip"] for r in perm["ip_ranges"]]
    if field == "ipv6-cidr":
        return [r["cidr_ipv6"] for r in perm["ipv6_ranges"]]
    if field == "group-id":
        return [r["group_id"] for r in perm["user_id_group_pairs"]]
    if field == "user-id":
        return [r["user_id"] for r in perm["user_id_group_pairs"]]
    if field == "group-name":
        return [r.get("group_name") for r in perm["user_id_group_pairs"]]
    if field == "prefix-list-id":
        return [r["prefix_list_id"] for r in perm["prefix_list_ids"]]
    if field == "protocol":
        return [perm["ip_protocol"]]
    if field == "from-port":
        return [perm.get("from_port", -1)]
    return [perm.get("to_port", -1)]  # to-port


GROUP_FILTERS: FilterSpec = {
    "description": lambda g: [g["description"]],
    "group-id": lambda g: [g["group_id"]],
    "group-name": lambda g: [g["group_name"]],
    "owner-id": lambda g: [g["owner_id"]],
    "vpc-id": lambda g: [g["vpc_id"]],
}
for _field in (
    "cidr",
    "from-port",
    "group-id",
    "group-name",
    "ipv6-cidr",
    "prefix-list-id",
    "protocol",
    "to-port",
    "user-id",
):
    GROUP_FILTERS[f"ip-permission.{_field}"] = lambda g, f=_field: _permission_values(
        g, "ip_permissions", f
    )
    GROUP_FILTERS[f"egress.ip-permission.{_field}"] = lambda g, f=_field: _permission_values(
        g, "ip_permissions_egress", f
    )


def _fill_pair_names(ctx: Ctx, groups: list[Result]) -> None:
    """Group names of referenced groups, for the ip-permission.group-name filters."""
    ids = {
        pair["group_id"]
        for g in groups
        for d in ("ip_permissions", "ip_permissions_egress")
        for perm in g[d]
        for pair in perm["user_id_group_pairs"]
    }
    names = dict(ctx.conn.execute(select(G.id, G.name).where(G.id.in_(list(ids)))).tuples().all())
    for g in groups:
        for d in ("ip_permissions", "ip_permissions_egress"):
            for perm in g[d]:
                for pair in perm["user_id_group_pairs"]:
                    pair["group_name"] = names.get(pair["group_id"])


@functools.lru_cache(maxsize=256)
def _groups_query(
    ids: int | None, names: int | None, vpcs: int | None, after: bool = False, limit: bool = False
) -> Sql:
    """The caller's groups, narrowed by exact group-id, group-name and vpc-id filter values.

    Names alone are looked up through the caller's VPCs, on the (vpc_id, name) unique index:
    a name lookup then costs the same however many groups the region has. With ``after``,
    only groups whose id sorts after one more parameter; with ``limit``, at most as many
    as the last parameter. Ids sort as Python sorts them (code points: PostgreSQL's "C").
    """
    columns = ", ".join(f"g.{c.name}" for c in schema.security_groups.columns)
    source = "security_groups g"
    where = ["g.account_id = ?", "g.region = ?"]
    if names is not None and ids is None:
        source = "vpcs v CROSS JOIN security_groups g"
        where = ["v.account_id = ?", "v.region = ?", "g.vpc_id = v.id", *where]
    for count, column in ((ids, "g.id"), (names, "g.name"), (vpcs, "g.vpc_id")):
        if count is not None:
            where.append(f"{column} IN ({', '.join('?' * count)})")
    pg_where = list(where)
    if after:
        where.append("g.id > ?")
        pg_where.append('g.id COLLATE "C" > ?')
    tail = " LIMIT ?" if limit else ""
    sqlite = f"SELECT {columns} FROM {source} WHERE {' AND '.join(where)} ORDER BY g.id{tail}"
    pg = (
        f"SELECT {columns} FROM {source} WHERE {' AND '.join(pg_where)} "
        f'ORDER BY g.id COLLATE "C"{tail}'
    )
    return Sql(sqlite, pg.replace("?", "%s"))


_PUSHED = ("group-id", "group-name", "vpc-id")


def _group_params(ctx: Ctx, pushed: dict[str, list[str]]) -> tuple[list[int | None], list[Any]]:
    """The counts and parameters of :func:`_groups_query` for the pushed filter values."""
    values = [pushed.get(name) for name in _PUSHED]
    counts = [None if v is None else len(v) for v in values]
    params: list[Any] = [ctx.account_id, ctx.region]
    if values[1] is not None and values[0] is None:
        params += params  # the VPCs' owner too (see _groups_query)
    for v in values:
        params += v or ()
    return counts, params


def _group_rows(ctx: Ctx, p: Params, pushed: dict[str, list[str]]) -> list[Row]:
    counts, params = _group_params(ctx, pushed)
    return GROUP_ROWS.rows(ctx.conn, _groups_query(*counts), params)


def _group_scan(
    ctx: Ctx, p: Params, pushed: dict[str, list[str]], after: str | None, limit: int
) -> list[Row]:
    counts, params = _group_params(ctx, pushed)
    sql = _groups_query(*counts, after=after is not None, limit=True)
    return GROUP_ROWS.rows(ctx.conn, sql, [*params, *(() if after is None else (after,)), limit])


class _Groups(Describe):
    def described(self, ctx: Ctx, rows: list[Any], filters: list[tuple[str, list]]) -> list[Result]:
        """``rows`` described, those that pass ``filters`` (a filter on the group names of
        rules' group pairs needs the names, which the result does not show)."""
        groups = describe_groups(ctx, rows)
        if any(name.endswith("group-name") and "." in name for name, _ in filters):
            _fill_pair_names(ctx, groups)
            groups = [g for g in groups if matches(g, filters, GROUP_FILTERS)]
            for g in groups:
                for d in ("ip_permissions", "ip_permissions_egress"):
                    for perm in g[d]:
                        for pair in perm["user_id_group_pairs"]:
                            pair.pop("group_name", None)
        elif filters:
            groups = [g for g in groups if matches(g, filters, GROUP_FILTERS)]
        return groups


GROUPS = _Groups(
    "security_groups",
    GROUP_FILTERS,
    describe_groups,
    pushed={name: G.id for name in _PUSHED},  # (the SQL is _groups_query's)
    sort="group_id",
    source=_group_rows,
    scan=_group_scan,
    id_filters={"group-id": ("sg", "InvalidGroupId.Malformed")},
)


@action("DescribeSecurityGroups", write=False)
def describe_security_groups(ctx: Ctx, p: Params) -> Result:
    group_ids = p.get("group_ids") or []
    group_names = p.get("group_names") or []
    if not group_ids and not group_names:
        return GROUPS.run(ctx, p)
    GROUPS.parse(p)
    if p.get("max_results") is not None:
        raise ApiError(
            "InvalidParameterCombination",
            "The parameter groupIds or groupNames cannot be used with the parameter maxResults",
        )
    rows = resources.get_many(ctx, group_ids, "sg")
    rows += [group_by_name(ctx, n) for n in dict.fromkeys(group_names)]
    return GROUPS.run(ctx, p, rows)


def _authorize(ctx: Ctx, p: Params, egress: bool) -> Result:
    if egress and not p.get("group_id"):
        raise ApiError("MissingParameter", "The request must contain the parameter groupId")
    group = target_group(ctx, p)
    specs = specs_from_permissions(ctx, group, permissions_from_params(p), egress)
    rows = insert_rules(ctx, group, specs)
    for row in rows:
        resources.tag_specifications(ctx, p, "security-group-rule", row.id)
    log_rules(ctx, group)
    # brand-new rules have only the tags their request gave them
    tags = resources.tags_for(ctx, [r.id for r in rows]) if p.get("tag_specifications") else {}
    return {
        "return": True,
        "security_group_rules": [
            rule_result(ctx, r, group.account_id, tags.get(r.id)) for r in rows
        ],
    }


@action("AuthorizeSecurityGroupIngress", write=True)
def authorize_ingress(ctx: Ctx, p: Params) -> Result:
    return _authorize(ctx, p, egress=False)


@action("AuthorizeSecurityGroupEgress", write=True)
def authorize_egress(ctx: Ctx, p: Params) -> Result:
    return _authorize(ctx, p, egress=True)


def _revoked(row: Row) -> Result:
    return {
        "security_group_rule_id": row.id,
        "group_id": row.group_id,
        "is_egress": row.egress,
        "ip_protocol": PROTOCOL_LABELS.get(row.protocol, row.protocol),
        "from_port": row.from_port,
        "to_port": row.to_port,
        "cidr_ipv4": row.cidr_ipv4,
        "cidr_ipv6": row.cidr_ipv6,
        "prefix_list_id": row.prefix_list_id,
        "referenced_group_id": row.ref_group_id,
        "description": row.description,
    }


def _revoke(ctx: Ctx, p: Params, egress: bool) -> Result:
    rule_ids = p.get("security_group_rule_ids") or []
    if egress and not p.get("group_id"):
        raise ApiError("MissingParameter", "The request must contain the parameter groupId")
    group = target_group(ctx, p)
    current = [r for r in rule_keys(ctx, group.id) if bool(r[0]) == egress]
    unknown: list[Result] = []
    doomed: list[str] = []
    if rule_ids:
        by_id = {r[_ID] for r in current}
        for rid in rule_ids:
            check_id(rid, "sgr", "InvalidSecurityGroupRuleId.Malformed")
            if rid not in by_id:
                raise ApiError(
                    "InvalidSecurityGroupRuleId.NotFound",
                    f"The security group rule ID '{rid}' does not exist",
                )
        doomed = list(dict.fromkeys(rule_ids))
    else:
        by_key = {r[_KEY]: r[_ID] for r in current}
        specs = specs_from_permissions(ctx, group, permissions_from_params(p), egress)
        vpc_default: bool | None = None
        for spec in specs:
            rid = by_key.get(spec.key)
            if rid is None:
                if vpc_default is None:
                    vpc_default = group.vpc_id == default_vpc_id_or_none(ctx)
                if not vpc_default:
                    raise ApiError(
                        "InvalidPermission.NotFound",
                        "The specified rule does not exist in this security group.",
                    )
                unknown.append(permissions_of([spec])[0])
            elif rid not in doomed:
                doomed.append(rid)
    rows: list[Row] = []
    if doomed:
        resources.drop_tags(ctx, doomed)
        deleted = RULE_ROWS.rows(ctx.conn, _DELETE_RULES_RETURNING.expand(len(doomed)), doomed)
        by_id_row = {r.id: r for r in deleted}
        rows = [by_id_row[rid] for rid in doomed]
        log_rules(ctx, group)
    out: Result = {"return": True, "revoked_security_group_rules": [_revoked(r) for r in rows]}
    if unknown:
        out["unknown_ip_permissions"] = unknown
    return out


@action("RevokeSecurityGroupIngress", write=True)
def revoke_ingress(ctx: Ctx, p: Params) -> Result:
    return _revoke(ctx, p, egress=False)


@action("RevokeSecurityGroupEgress", write=True)
def revoke_egress(ctx: Ctx, p: Params) -> Result:
    return _revoke(ctx, p, egress=True)


RULE_FILTERS: FilterSpec = {
    "group-id": lambda r: [r["group_id"]],
    "security-group-rule-id": lambda r: [r["security_group_rule_id"]],
}


@functools.lru_cache(maxsize=256)
def _rules_query(group_ids: int | None) -> Sql:
    """The caller's rules, of ``group_ids`` exact group-id filter values if given."""
    where = "account_id = ? AND region = ?"
    if group_ids is not None:
        where += f" AND group_id IN ({', '.join('?' * group_ids)})"
    return Sql(f"SELECT {RULE_ROWS.columns} FROM sg_rules WHERE {where} ORDER BY id")


def _rule_rows(ctx: Ctx, p: Params, pushed: dict[str, list[str]]) -> list[Row]:
    gids = pushed.get("group-id")
    params = [ctx.account_id, ctx.region, *(gids or ())]
    return RULE_ROWS.rows(ctx.conn, _rules_query(None if gids is None else len(gids)), params)


def _rule_results(ctx: Ctx, rows: list[Row]) -> list[Result]:
    tags = resources.tags_for(ctx, [r.id for r in rows])
    return [rule_result(ctx, r, r.account_id, tags.get(r.id)) for r in rows]


RULES = Describe(
    "security_group_rules",
    RULE_FILTERS,
    _rule_results,
    prefix="sgr",
    ids="security_group_rule_ids",
    pushed={"group-id": R.group_id},  # (the SQL is _rules_query's)
    sort="security_group_rule_id",
    source=_rule_rows,
    id_filters={
        "group-id": ("sg", "InvalidGroupId.Malformed"),
        "security-group-rule-id": ("sgr", "InvalidSecurityGroupRuleId.Malformed"),
    },
)


@action("DescribeSecurityGroupRules", write=False)
def describe_security_group_rules(ctx: Ctx, p: Params) -> Result:
    return RULES.run(ctx, p)


@action("ModifySecurityGroupRules", write=True)
def modify_security_group_rules(ctx: Ctx, p: Params) -> Result:
    group = resources.get(ctx, p.get("group_id"), "sg")
    current = {r.id: r for r in existing_rules(ctx, group.id)}
    updates = p.get("security_group_rules") or []
    if not updates:
        raise ApiError(
            "MissingParameter", "The request must contain the parameter SecurityGroupRules"
        )
    new: dict[str, RuleSpec] = {}
    for upd in updates:
        rid = check_id(
            upd.get("security_group_rule_id"), "sgr", "InvalidSecurityGroupRuleId.Malformed"
        )
        if rid not in current:
            raise ApiError(
                "InvalidSecurityGroupRuleId.NotFound",
                f"The security group rule ID '{rid}' does not exist",
            )
        req = upd.get("security_group_rule")
        if not req:
            raise ApiError(
                "MissingParameter",
                "The request must contain the parameter SecurityGroupRule for " + rid,
            )
        new[rid] = spec_from_rule_request(ctx, group, req, current[rid].egress)
    keys = {RuleSpec.from_row(r).key for rid, r in current.items() if rid not in new}
    for spec in new.values():
        if spec.key in keys:
            raise ApiError(
                "InvalidPermission.Duplicate", f"the specified rule {spec.text()} already exists"
            )
        keys.add(spec.key)
    for rid, spec in new.items():
        ctx.conn.execute(
            update(schema.rules)
            .where(R.id == rid)
            .values(
                protocol=spec.protocol,
                from_port=spec.from_port,
                to_port=spec.to_port,
                cidr_ipv4=spec.cidr_ipv4,
                cidr_ipv6=spec.cidr_ipv6,
                prefix_list_id=spec.prefix_list_id,
                ref_group_id=spec.ref_group_id,
                ref_user_id=spec.ref_user_id,
                description=spec.description,
            )
        )
    log_rules(ctx, group)
    return {"return": True}


def _update_descriptions(ctx: Ctx, p: Params, egress: bool) -> Result:
    group = target_group(ctx, p)
    current = [r for r in existing_rules(ctx, group.id) if r.egress == egress]
    changes: dict[str, str | None] = {}
    if p.get("security_group_rule_descriptions"):
        by_id = {r.id for r in current}
        for item in p["security_group_rule_descriptions"]:
            rid = check_id(
                item.get("security_group_rule_id"), "sgr", "InvalidSecurityGroupRuleId.Malformed"
            )
            if rid not in by_id:
                raise ApiError(
                    "InvalidSecurityGroupRuleId.NotFound",
                    f"The security group rule ID '{rid}' does not exist",
                )
            changes[rid] = resources.description(item.get("description"))
    else:
        by_key = {RuleSpec.from_row(r).key: r for r in current}
        for spec in specs_from_permissions(ctx, group, permissions_from_params(p), egress):
            row = by_key.get(spec.key)
            if row is None:
                raise ApiError(
                    "InvalidPermission.NotFound",
                    "The specified rule does not exist in this security group.",
                )
            changes[row.id] = spec.description
    for rid, desc in changes.items():
        ctx.conn.execute(update(schema.rules).where(R.id == rid).values(description=desc))
    if changes:
        log_rules(ctx, group)
    return {"return": True}


@action("UpdateSecurityGroupRuleDescriptionsIngress", write=True)
def update_descriptions_ingress(ctx: Ctx, p: Params) -> Result:
    return _update_descriptions(ctx, p, egress=False)


@action("UpdateSecurityGroupRuleDescriptionsEgress", write=True)
def update_descriptions_egress(ctx: Ctx, p: Params) -> Result:
    return _update_descriptions(ctx, p, egress=True)


@action("DescribeSecurityGroupReferences", write=False)
def describe_security_group_references(ctx: Ctx, p: Params) -> Result:
    ids = p.get("group_id") or []
    if not ids:
        raise ApiError("MissingParameter", "The request must contain the parameter groupId")
    groups = resources.get_many(ctx, ids, "sg")
    refs = []
    for g in groups:
        rows = ctx.conn.execute(
            select(R.group_id, G.vpc_id)
            .join(schema.security_groups, G.id == R.group_id)
            .where(R.ref_group_id == g.id, G.vpc_id != g.vpc_id)
            .distinct()
        )
        for _gid, vpc in rows:
            refs.append({"group_id": g.id, "referencing_vpc_id": vpc})
    return {"security_group_reference_set": refs}
