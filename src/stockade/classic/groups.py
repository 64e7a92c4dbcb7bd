"""The security-group commands: ec2-create-group, -delete-group, -describe-group,
ec2-authorize and ec2-revoke.

Output columns follow the seeds (../shared/seeds/001 and 002, transcripts of the old Amazon
ec2-api-tools); where a column has no seed, the later ec2-api-tools' form is used. Each
layout below says which source it follows.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from stockade.classic.core import Command, Context, UsageError, add_filter_option, api_filters

# Protocols by every name the old tools (and the API) accept; "-1" means all protocols.
PROTOCOLS = {
    "tcp": "tcp",
    "6": "tcp",
    "udp": "udp",
    "17": "udp",
    "icmp": "icmp",
    "1": "icmp",
    "icmpv6": "icmpv6",
    "58": "icmpv6",
    "all": "-1",
    "-1": "-1",
}
PORTED = {"tcp", "udp"}
TYPED = {"icmp", "icmpv6"}
ANYWHERE = "0.0.0.0/0"


def group_param(group: str) -> dict[str, str]:
    """GROUP as the API wants it: ``sg-…`` is an id, anything else a name (default VPC).

    Unambiguous, since EC2 (and Stockade) refuse group names that start with ``sg-``.
    """
    return {"GroupId": group} if group.startswith("sg-") else {"GroupName": group}


def describe_one(ctx: Context, group: str) -> dict[str, Any]:
    key = "GroupIds" if group.startswith("sg-") else "GroupNames"
    return ctx.call("DescribeSecurityGroups", **{key: [group]})["SecurityGroups"][0]


def protocol_label(protocol: str | None) -> str:
    return "all" if protocol in (None, "-1") else str(protocol)


# --- ec2-create-group --------------------------------------------------------------------


def _create_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", nargs="?", metavar="GROUP", help="name of the new group")
    p.add_argument(
        "-d",
        "--description",
        nargs="+",
        required=True,
        metavar="DESCRIPTION",
        help="what the group is for; several words need no quotes",
    )
    p.add_argument("-c", "--vpc", metavar="VPC", help="VPC id (default: the default VPC)")


def _create(ctx: Context, a: argparse.Namespace) -> None:
    words = list(a.description)
    name = a.group
    if name is None:
        # `-d "Potato Storage" potato`: -d took every word, the last one is the group.
        if len(words) < 2:
            raise UsageError("the group name is required: GROUP -d DESCRIPTION")
        name = words.pop()
    description = " ".join(words)
    params = {"GroupName": name, "Description": description}
    if a.vpc:
        params["VpcId"] = a.vpc
    reply = ctx.call("CreateSecurityGroup", **params)
    # GROUP<TAB>sg-id<TAB>name<TAB>description: the later ec2-api-tools' form; seed 002's
    # `GROUP   apache  Mary's Apache group` is the same line from before groups had ids.
    ctx.out.record("GROUP", reply["GroupId"], name, description)


CREATE_GROUP = Command(
    name="ec2-create-group",
    aliases=("ec2-add-group", "ec2addgrp"),
    summary="Create a security group.",
    arguments=_create_arguments,
    run=_create,
    layouts={"GROUP": ("GroupId", "GroupName", "Description")},
    epilog="example:\n  ec2-create-group Apache -d Apache web server",
)


# --- ec2-delete-group --------------------------------------------------------------------


def _delete_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", metavar="GROUP", help="group name (default VPC) or sg- id")


def _delete(ctx: Context, a: argparse.Namespace) -> None:
    reply = ctx.call("DeleteSecurityGroup", **group_param(a.group))
    ctx.out.record("RETURN", reply.get("Return", True))


DELETE_GROUP = Command(
    name="ec2-delete-group",
    aliases=("ec2delgrp",),
    summary="Delete a security group.",
    arguments=_delete_arguments,
    run=_delete,
    layouts={"RETURN": ("Return",)},
)


# --- ec2-describe-group ------------------------------------------------------------------
#
# GROUP line, seed 001 `GROUP\tsg-44a9695e\t923486498713\t\tApache\tApache web server\t`:
#   GROUP | GroupId (001) | OwnerId (001) | empty (001 has an empty 4th column; no API field
#   is known to have filled it, it stays empty) | GroupName (001) | Description (001) |
#   VpcId (001's last column, empty there because the group was EC2-Classic; the later
#   ec2-api-tools print the VPC id there).
# PERMISSION line, seed 001 `PERMISSION\t923486498713\t\tApache\tALLOWS\ttcp\t22\t22\tFROM\t
# CIDR\tingress`:
#   PERMISSION | OwnerId (001) | empty (001) | GroupName (001) | ALLOWS (001) | protocol
#   (001; "all" for -1 as seed 002's `ALLOWS  all`) | from port | to port (001; empty for
#   all protocols, as in 002) | FROM (001; TO for egress rules, as the later ec2-api-tools
#   and euca2ools print) | then the source:
#     CIDR <cidr>: 001 (whose copy lost the address; 002 shows it right after CIDR)
#     USER <user-id> ID <sg-id> GRPNAME <name>: USER/GRPNAME from 002, ID from the later
#       tools; the name is looked up when the group is the caller's, else left empty
#   | ingress or egress (001's last column).

DESCRIBE_LAYOUTS = {
    "GROUP": ("GroupId", "OwnerId", "-", "GroupName", "Description", "VpcId"),
    "PERMISSION": (
        "OwnerId",
        "-",
        "GroupName",
        "Rule",
        "Protocol",
        "FromPort",
        "ToPort",
        "FromOrTo",
        "SourceType",
        "Source",
        "Direction",
    ),
}


def _describe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "groups", nargs="*", metavar="GROUP", help="group names or sg- ids (default: all)"
    )
    add_filter_option(p)


def permission_sources(
    perm: Mapping[str, Any], names: Mapping[str, str]
) -> Iterator[tuple[Any, ...]]:
    """The source columns of each source of one IpPermission."""
    for r in perm.get("IpRanges", []):
        yield ("CIDR", r.get("CidrIp"))
    for r in perm.get("Ipv6Ranges", []):
        yield ("CIDR", r.get("CidrIpv6"))
    for pair in perm.get("UserIdGroupPairs", []):
        group_id = pair.get("GroupId")
        name = pair.get("GroupName") or names.get(group_id or "")
        yield ("USER", pair.get("UserId"), "ID", group_id, "GRPNAME", name)
    for r in perm.get("PrefixListIds", []):
        yield ("PREFIXLIST", r.get("PrefixListId"))


def port_columns(perm: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return protocol_label(perm.get("IpProtocol")), perm.get("FromPort"), perm.get("ToPort")


def referenced_names(ctx: Context, groups: list[dict[str, Any]]) -> dict[str, str]:
    """Names of the groups that rules refer to, for those that belong to the caller."""
    from botocore.exceptions import ClientError

    names = {g["GroupId"]: g["GroupName"] for g in groups}
    mine = {None, *(g.get("OwnerId") for g in groups)}
    wanted = sorted(
        {
            pair["GroupId"]
            for g in groups
            for perms in (g.get("IpPermissions", []), g.get("IpPermissionsEgress", []))
            for perm in perms
            for pair in perm.get("UserIdGroupPairs", [])
            if pair.get("GroupId")
            and pair["GroupId"] not in names
            and not pair.get("GroupName")
            and pair.get("UserId") in mine
        }
    )
    if not wanted:
        return names
    try:
        found = ctx.call("DescribeSecurityGroups", GroupIds=wanted)["SecurityGroups"]
    except ClientError:  # one of them is gone: ask one by one, keep what is there
        found = []
        for group_id in wanted:
            with contextlib.suppress(ClientError):
                found += ctx.call("DescribeSecurityGroups", GroupIds=[group_id])["SecurityGroups"]
    names.update((g["GroupId"], g["GroupName"]) for g in found)
    return names


def _describe(ctx: Context, a: argparse.Namespace) -> None:
    params: dict[str, Any] = {}
    ids = [g for g in a.groups if g.startswith("sg-")]
    names = [g for g in a.groups if not g.startswith("sg-")]
    if ids:
        params["GroupIds"] = ids
    if names:
        params["GroupNames"] = names
    if a.filters:
        params["Filters"] = api_filters(a.filters)
    groups = ctx.call_all("DescribeSecurityGroups", "SecurityGroups", **params)
    known = referenced_names(ctx, groups)
    out = ctx.out
    for g in groups:
        owner, name = g.get("OwnerId"), g.get("GroupName")
        out.record("GROUP", g["GroupId"], owner, "", name, g.get("Description"), g.get("VpcId"))
        for key, direction, word in (
            ("IpPermissions", "ingress", "FROM"),
            ("IpPermissionsEgress", "egress", "TO"),
        ):
            for perm in g.get(key, []):
                lead = (owner, "", name, "ALLOWS", *port_columns(perm), word)
                for source in permission_sources(perm, known):
                    out.record("PERMISSION", *lead, *source, direction)


DESCRIBE_GROUP = Command(
    name="ec2-describe-group",
    aliases=("ec2dgrp",),
    summary="Describe security groups and their rules.",
    arguments=_describe_arguments,
    run=_describe,
    layouts=DESCRIBE_LAYOUTS,
    epilog="examples:\n  ec2-describe-group Apache\n  ec2-describe-group -F group-name=web*",
)


# --- ec2-authorize / ec2-revoke ----------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rule as the flags give it: a protocol, its ports, and its sources."""

    protocol: str  # tcp, udp, icmp, icmpv6, a number, or -1 (all)
    from_port: int | None
    to_port: int | None
    cidrs: tuple[str, ...]
    groups: tuple[tuple[str | None, str], ...]  # (owner account or None for mine, group)

    def permission(self) -> dict[str, Any]:
        perm: dict[str, Any] = {"IpProtocol": self.protocol}
        if self.from_port is not None:
            perm["FromPort"], perm["ToPort"] = self.from_port, self.to_port
        v4 = [{"CidrIp": c} for c in self.cidrs if ":" not in c]
        v6 = [{"CidrIpv6": c} for c in self.cidrs if ":" in c]
        if v4:
            perm["IpRanges"] = v4
        if v6:
            perm["Ipv6Ranges"] = v6
        if self.groups:
            pairs = []
            for user, group in self.groups:
                pair = dict(group_param(group))
                if user:
                    pair["UserId"] = user
                pairs.append(pair)
            perm["UserIdGroupPairs"] = pairs
        return perm


def protocol(text: str) -> str:
    t = text.strip().lower()
    if t in PROTOCOLS:
        return PROTOCOLS[t]
    if t.isdigit() and 0 <= int(t) <= 255:
        return str(int(t))
    raise UsageError(f"unknown protocol {text!r}: give tcp, udp, icmp, all or a number 0-255")


def port_range(text: str) -> tuple[int, int]:
    """``80``, ``8000-8080``, or ``-1`` (every port, which EC2 stores as 0-65535)."""
    m = re.fullmatch(r"\s*(-1|\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m or (m.group(1) == "-1" and m.group(2)):
        raise UsageError(f"bad port range {text!r}: give PORT, FROM-TO, or -1 for all ports")
    if m.group(1) == "-1":
        return 0, 65535
    low = int(m.group(1))
    return low, int(m.group(2)) if m.group(2) else low


def type_code(text: str) -> tuple[int, int]:
    """``TYPE:CODE`` for icmp, -1 meaning any (``-t -1:-1``, ``-t 8:0``, ``-t 3``)."""
    m = re.fullmatch(r"\s*(-1|\d+)\s*(?::\s*(-1|\d+)\s*)?", text)
    if not m:
        raise UsageError(f"bad icmp type:code {text!r}: give TYPE:CODE, -1 meaning any")
    return int(m.group(1)), int(m.group(2)) if m.group(2) else -1


def rule_from(a: argparse.Namespace) -> Rule:
    """The rule the flags describe, with the old tools' defaults.

    No -P: all protocols for a source-group rule without ports (seed 002's
    `ec2-authorize appserver -o apache -u …`), tcp otherwise (icmp with -t). A source-group
    rule with ports and no -P is refused, as the old tools refused it (seed 000: "Do not
    forget adding -P tcp explicitly or it will not work"). No -s and no -o: 0.0.0.0/0.
    """
    groups = list(a.source_group)
    users = [u.replace("-", "") for u in a.source_group_user]
    if users and not groups:
        raise UsageError("-u names the account that owns a source group: add -o GROUP")
    if len(users) > 1 and len(users) != len(groups):
        raise UsageError("give one -u for all the -o groups, or one -u for each -o")
    owners: list[str | None] = users * len(groups) if len(users) == 1 else list(users)
    owners += [None] * (len(groups) - len(owners))

    if a.protocol:
        proto = protocol(a.protocol)
    elif groups and (a.port_range or a.icmp_type_code):
        need = "icmp" if a.icmp_type_code and not a.port_range else "tcp"
        given = "-t" if need == "icmp" else "-p"
        raise UsageError(
            f"a source-group rule (-o) with {given} needs an explicit protocol: add -P {need}"
            " (without -P a source-group rule covers all protocols and cannot take ports)"
        )
    elif groups:
        proto = "-1"
    elif a.icmp_type_code:
        proto = "icmp"
    else:
        proto = "tcp"

    low: int | None = None
    high: int | None = None
    if proto in PORTED:
        if a.icmp_type_code:
            raise UsageError(f"-t is for icmp; -P {proto} takes a port range (-p)")
        if not a.port_range:
            raise UsageError(
                f"-P {proto} needs a port range: -p PORT, -p FROM-TO, or -p -1 for all ports"
            )
        low, high = port_range(a.port_range)
    elif proto in TYPED:
        if a.port_range:
            raise UsageError(f"-P {proto} takes -t TYPE:CODE, not a port range (-p)")
        if not a.icmp_type_code:
            raise UsageError(
                f"-P {proto} needs -t TYPE:CODE (-1 means any: -t -1:-1, or e.g. -t 8:0)"
            )
        low, high = type_code(a.icmp_type_code)
    elif a.port_range or a.icmp_type_code:
        raise UsageError(f"protocol {protocol_label(proto)} has no ports: leave out -p and -t")

    cidrs = tuple(a.cidr) or (() if groups else (ANYWHERE,))
    return Rule(proto, low, high, cidrs, tuple(zip(owners, groups, strict=True)))


def _rule_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", metavar="GROUP", help="group name (default VPC) or sg- id")
    p.add_argument("-P", "--protocol", metavar="PROTOCOL", help="tcp, udp, icmp, all, or a number")
    p.add_argument(
        "-p", "--port-range", metavar="PORT[-PORT]", help="80, 8000-8080, or -1 for all ports"
    )
    p.add_argument(
        "-t", "--icmp-type-code", metavar="TYPE:CODE", help="icmp type and code; -1 is any"
    )
    p.add_argument(
        "-s",
        "--cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help=f"source address block (repeatable; default {ANYWHERE} when there is no -o)",
    )
    p.add_argument(
        "-o",
        "--source-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="source security group, by name or sg- id (repeatable)",
    )
    p.add_argument(
        "-u",
        "--source-group-user",
        action="append",
        default=[],
        metavar="USER",
        help="account number owning the -o group (default: yours)",
    )
    p.add_argument(
        "--egress", action="store_true", help="an outbound rule (-s/-o are destinations)"
    )


RULE_LAYOUTS = {
    # Seed 002: `GROUP   default` and `PERMISSION   default ALLOWS  tcp  22  22  FROM  CIDR
    # 192.168.1.130/32`, `... ALLOWS  all   FROM   USER   495219933132   GRPNAME apache`.
    "GROUP": ("Group",),
    "PERMISSION": (
        "Group",
        "Rule",
        "Protocol",
        "FromPort",
        "ToPort",
        "FromOrTo",
        "SourceType",
        "Source",
    ),
}


def rule_lines(group: str, rule: Rule, word: str, me: str | None) -> Iterator[tuple[Any, ...]]:
    """The PERMISSION lines of seed 002 for ``rule``: one per source."""
    lead = (group, "ALLOWS", protocol_label(rule.protocol), rule.from_port, rule.to_port, word)
    for cidr in rule.cidrs:
        yield (*lead, "CIDR", cidr)
    for user, source in rule.groups:
        kind = "ID" if source.startswith("sg-") else "GRPNAME"
        yield (*lead, "USER", user or me, kind, source)


def _change(ctx: Context, a: argparse.Namespace, verb: str) -> int:
    rule = rule_from(a)
    target = group_param(a.group)
    me = None
    if (a.egress and "GroupName" in target) or any(u is None for u, _ in rule.groups):
        # Egress calls need the group id; a source group without -u is the caller's own.
        found = describe_one(ctx, a.group)
        target, me = {"GroupId": found["GroupId"]}, found.get("OwnerId")
    direction = "Egress" if a.egress else "Ingress"
    reply = ctx.call(f"{verb}SecurityGroup{direction}", **target, IpPermissions=[rule.permission()])
    word = "TO" if a.egress else "FROM"
    unknown = reply.get("UnknownIpPermissions") or []
    if unknown:
        # EC2 answers a revoke of rules that are not there with success and a list of them.
        revoked = len(reply.get("RevokedSecurityGroupRules") or [])
        ctx.err.write(
            f"{ctx.prog}: {a.group} has no such rule, so nothing was revoked for"
            + (f" (other rules revoked: {revoked}):\n" if revoked else ":\n")
        )
        for perm in unknown:
            for source in permission_sources(perm, {}):
                line = (a.group, "ALLOWS", *port_columns(perm), word, *source)
                ctx.err.write("PERMISSION\t" + "\t".join(ctx.out.cell(c) for c in line) + "\n")
        return 1
    ctx.out.record("GROUP", a.group)
    for line in rule_lines(a.group, rule, word, me):
        ctx.out.record("PERMISSION", *line)
    return 0


def rule_hint(a: argparse.Namespace, code: str, message: str) -> str | None:
    """What to do next when the server refused a rule (newcomers' usual slips)."""
    if code == "InvalidParameterValue":
        m = re.fullmatch(r"CIDR block (\S+) is malformed", message)
        if m:
            return cidr_hint(m.group(1))
    if code == "InvalidGroup.NotFound":
        m = re.search(r"security group '([^']+)'", message)
        missing = m.group(1) if m else None
        users = [u.replace("-", "") for u in a.source_group_user]
        for i, group in enumerate(a.source_group):
            user = users[0] if len(users) == 1 else users[i] if i < len(users) else None
            if user and group == missing:
                return (
                    f"the source group {group!r} was looked for in account {user} (-u): "
                    "check that account number and the group's name with its owner, "
                    "or give the group's sg- id"
                )
    return None


def cidr_hint(text: str) -> str | None:
    """``did you mean 172.31.0.5/32?`` for an address given as a CIDR block (or a block
    with host bits set)."""
    try:
        if "/" not in text:
            address = ipaddress.ip_address(text)
            return f"did you mean {address}/{address.max_prefixlen}? (-s takes a CIDR block)"
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if str(network) != text:
        return f"did you mean {network}? (the address bits after /{network.prefixlen} must be 0)"
    return None


RULE_EPILOG = """examples:
  ec2-authorize Apache -P tcp -p 80 -s 0.0.0.0/0
  ec2-authorize dbserver -P tcp -p 3306 -u 123456789012 -o appserver
  ec2-authorize appserver -o apache -u 123456789012     (all protocols)
  ec2-authorize default -P icmp -t -1:-1 -s 10.0.0.0/8
  ec2-authorize web --egress -P tcp -p 443 -s 0.0.0.0/0"""

AUTHORIZE = Command(
    name="ec2-authorize",
    aliases=("ec2auth",),
    summary="Add a rule to a security group.",
    arguments=_rule_arguments,
    run=lambda ctx, a: _change(ctx, a, "Authorize"),
    layouts=RULE_LAYOUTS,
    epilog=RULE_EPILOG,
    hint=rule_hint,
)

REVOKE = Command(
    name="ec2-revoke",
    aliases=(),
    summary="Remove a rule from a security group (the same arguments as ec2-authorize).",
    arguments=_rule_arguments,
    run=lambda ctx, a: _change(ctx, a, "Revoke"),
    layouts=RULE_LAYOUTS,
    epilog=RULE_EPILOG.replace("ec2-authorize", "ec2-revoke"),
    hint=rule_hint,
)
