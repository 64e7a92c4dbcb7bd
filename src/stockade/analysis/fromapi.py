"""An Inventory from EC2 Describe* replies (dicts as botocore returns them), and the one
function that fetches them with the caller's credentials.

`inventory(...)` is pure: replies in, model values out. It works on replies from real EC2
as well as from Stockade. `fetch(client)` makes the calls (paginated).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stockade.analysis.inventory import Inventory
from stockade.model import Group, Interface, Rule, State

LIVE = ("pending", "running")


def _rule(r: dict[str, Any], owner: str, foreign: set[str]) -> Rule | None:
    ref = r.get("ReferencedGroupInfo") or {}
    peer: dict[str, Any]
    if r.get("CidrIpv4"):
        peer = {"cidr": r["CidrIpv4"]}
    elif r.get("CidrIpv6"):
        peer = {"cidr": r["CidrIpv6"]}
    elif ref.get("GroupId"):
        peer = {"ref_group_id": ref["GroupId"]}
        if ref.get("UserId") and owner and ref["UserId"] != owner:
            foreign.add(ref["GroupId"])
    else:
        return None  # a prefix list: not modelled here
    return Rule(
        r["GroupId"],
        bool(r.get("IsEgress")),
        str(r.get("IpProtocol", "-1")),
        int(r.get("FromPort", -1)),
        int(r.get("ToPort", -1)),
        rule_id=r.get("SecurityGroupRuleId", ""),
        description=r.get("Description", "") or "",
        **peer,
    )


def inventory(
    groups: Iterable[dict[str, Any]],
    rules: Iterable[dict[str, Any]],
    interfaces: Iterable[dict[str, Any]],
    instances: Iterable[dict[str, Any]] = (),
    account_id: str = "",
) -> Inventory:
    """Build the inventory from DescribeSecurityGroups' SecurityGroups,
    DescribeSecurityGroupRules' SecurityGroupRules, DescribeNetworkInterfaces'
    NetworkInterfaces and DescribeInstances' instances (flattened out of reservations)."""
    groups = list(groups)
    owner = account_id or next((g.get("OwnerId", "") for g in groups), "")
    foreign: set[str] = set()
    by_group: dict[str, list[Rule]] = {g["GroupId"]: [] for g in groups}
    for r in rules:
        rule = _rule(r, owner, foreign)
        if rule is not None and rule.group_id in by_group:
            by_group[rule.group_id].append(rule)
    model_groups = [
        Group(g["GroupId"], tuple(by_group[g["GroupId"]]), g.get("GroupName", "")) for g in groups
    ]
    states = {}
    names = {}
    for inst in instances:
        states[inst["InstanceId"]] = (inst.get("State") or {}).get("Name", "")
        for tag in inst.get("Tags") or ():
            if tag.get("Key") == "Name" and tag.get("Value"):
                names[inst["InstanceId"]] = tag["Value"]
    live: list[Interface] = []
    idle: list[Interface] = []
    subnet_of, vpc_of, public_ip = {}, {}, {}
    for ni in interfaces:
        attachment = ni.get("Attachment") or {}
        instance_id = attachment.get("InstanceId", "")
        iface = Interface(
            ni["NetworkInterfaceId"],
            instance_id or ni["NetworkInterfaceId"],
            "",
            "",
            tuple(
                a["PrivateIpAddress"]
                for a in ni.get("PrivateIpAddresses") or [ni]
                if a.get("PrivateIpAddress")
            ),
            tuple(a["Ipv6Address"] for a in ni.get("Ipv6Addresses") or () if a.get("Ipv6Address")),
            tuple(g["GroupId"] for g in ni.get("Groups") or ()),
        )
        subnet_of[iface.id] = ni.get("SubnetId", "")
        vpc_of[iface.id] = ni.get("VpcId", "")
        public = (ni.get("Association") or {}).get("PublicIp")
        if public:
            public_ip[iface.id] = public
        if instance_id and states.get(instance_id, "running") in LIVE:
            live.append(iface)
        else:
            idle.append(iface)
    return Inventory(
        State.of(model_groups, live),
        account_id=owner,
        subnet_of=subnet_of,
        vpc_of=vpc_of,
        public_ip=public_ip,
        names=names,
        group_vpc={g["GroupId"]: g.get("VpcId", "") for g in groups},
        group_owner={g["GroupId"]: g.get("OwnerId", "") for g in groups},
        foreign_groups=frozenset(foreign),
        idle_interfaces=tuple(idle),
    )


def _pages(client: Any, operation: str, key: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in client.get_paginator(operation).paginate():
        out.extend(page.get(key, ()))
    return out


def fetch(client: Any) -> Inventory:
    """The caller's inventory through the EC2 API (a botocore/boto3 ec2 client)."""
    groups = _pages(client, "describe_security_groups", "SecurityGroups")
    rules = _pages(client, "describe_security_group_rules", "SecurityGroupRules")
    interfaces = _pages(client, "describe_network_interfaces", "NetworkInterfaces")
    instances = [
        i
        for r in _pages(client, "describe_instances", "Reservations")
        for i in r.get("Instances", ())
    ]
    return inventory(groups, rules, interfaces, instances)
