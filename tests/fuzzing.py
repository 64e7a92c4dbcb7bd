"""A signed fuzzer for the EC2 API: requests drawn from botocore's EC2 service model.

For every action Stockade implements (``service.common.ACTIONS``), the fuzzer walks the
action's input shape in botocore's model and builds valid-ish parameters first (the ids
and names of resources the run created, so requests get past "not found"), then mutates
them: wrong types, huge, negative and unicode numbers, NUL bytes and odd unicode in
strings, very long strings, missing, extra and duplicated members, deep list indexes,
bogus NextToken values. Each request is SigV4-signed with a real account's keys
(botocore's ``SigV4Auth``) and sent with httpx to a real ``stockade serve``.

A reply is a finding when it is a 5xx, takes longer than the per-request timeout (a
hang), is not XML or not EC2-shaped (``<XResponse>`` with a ``requestId``, or
``<Response><Errors><Error><Code>/<Message>`` and a ``RequestID``), or when a rejected
request (or a read) changed what is stored: a digest of the account's rows in every table,
plus the change log's length and newest revision, is compared before and after.

Everything is drawn from one seeded ``random.Random``, so a run is repeatable (up to the
random ids the server hands out). ``tests/test_fuzz.py`` runs it bounded; ``bench/fuzz.py``
runs 10,000 requests and more.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import botocore.session
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import ServiceModel, Shape

import stockade.api.app  # noqa: F401  (registers every action)
from stockade.service.common import ACTIONS, encode_token
from stockade.service.describe import Describe
from stockade.store import schema
from stockade.store.db import Store

API_VERSION = "2016-11-15"
TIMEOUT = 10.0  # seconds a request may take before it counts as a hang
MAX_HANGS_IN_A_ROW = 3

# Mutations left out of the default run, as (parameter kind, mutation, database or "*"):
# the place to park a known bug while it is being fixed. Empty: every mutation is sent.
KNOWN_BUGS: frozenset[tuple[str, str, str]] = frozenset()

# a real public key (for ImportKeyPair); its private half was thrown away
PUBLIC_KEY = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDI6GLDzd+m8CJ2XV1LdYbh5q+v5Qu+LceusmX79XcQ9 fz"


def model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("ec2", api_version=API_VERSION)


def actions() -> list[str]:
    """Every action Stockade implements, in a fixed order."""
    return sorted(ACTIONS)


# --- resources the run knows ----------------------------------------------------------

ID_RE = re.compile(
    r"\b((?:sg|sgr|vpc-cidr-assoc|subnet-cidr-assoc|vpc|subnet|i|eni|eni-attach|eipalloc"
    r"|eipassoc|ami|r|key|pl)-[0-9a-f]{8,17})\b"
)
NAME_RES = {
    "group_names": re.compile(r"<groupName>((?!us-|eu-|ap-|ca-|sa-)[^<]{1,64})</groupName>"),
    "key_names": re.compile(r"<keyName>([^<]{1,64})</keyName>"),
    "ips": re.compile(r"<publicIp>([0-9.]{7,15})</publicIp>"),
    "tokens": re.compile(r"<nextToken>([^<]{1,400})</nextToken>"),
}
KEEP = 40  # per kind: the newest ones seen
REFRESH = (
    "DescribeSecurityGroups",
    "DescribeSecurityGroupRules",
    "DescribeInstances",
    "DescribeAddresses",
    "DescribeKeyPairs",
    "DescribeVpcs",
    "DescribeSubnets",
    "DescribeImages",
    "DescribeNetworkInterfaces",
    "DescribeManagedPrefixLists",
)


@dataclass
class Pools:
    """Ids and names seen in successful replies, by kind (newest last)."""

    account_id: str
    peer_account_id: str
    ids: dict[str, list[str]] = field(default_factory=dict)
    names: dict[str, list[str]] = field(default_factory=dict)

    def add(self, bucket: dict[str, list[str]], kind: str, value: str) -> None:
        seen = bucket.setdefault(kind, [])
        if value in seen:
            seen.remove(value)
        seen.append(value)
        del seen[:-KEEP]

    def harvest(self, body: str) -> None:
        for found in ID_RE.findall(body):
            self.add(self.ids, found.rsplit("-", 1)[0], found)
        for kind, pattern in NAME_RES.items():
            for found in pattern.findall(body):
                self.add(self.names, kind, found)

    def forget(self, values: Iterable[str | bytes]) -> None:
        """Drop deleted resources (ids and names) from the pools."""
        gone = set(values)
        for bucket in (self.ids, self.names):
            for kind, seen in bucket.items():
                if kind != "filters":
                    seen[:] = [v for v in seen if v not in gone]

    def id(self, rng: random.Random, kind: str) -> str:
        seen = self.ids.get(kind)
        if seen and rng.random() < 0.9:
            return rng.choice(seen)
        return f"{kind}-{rng.getrandbits(68):017x}"[: len(kind) + 18]

    def name(self, rng: random.Random, kind: str, fresh: str) -> str:
        seen = self.names.get(kind)
        if seen and rng.random() < 0.7:
            return rng.choice(seen)
        return f"{fresh}-{rng.randrange(10**6)}"

    def any_id(self, rng: random.Random) -> str:
        kinds = [k for k in ("sg", "vpc", "subnet", "i", "eni", "eipalloc", "key") if k in self.ids]
        return self.id(rng, rng.choice(kinds or ["sg"]))


# --- valid-ish values ------------------------------------------------------------------

Gen = Callable[[random.Random, Pools], Any]


def _cidr4(rng: random.Random, _: Pools) -> str:
    return rng.choice(
        [
            "0.0.0.0/0",
            "10.0.0.0/16",
            f"10.{rng.randrange(256)}.0.0/16",
            f"172.31.{rng.randrange(256)}.0/24",
            f"192.168.1.{rng.randrange(256)}/32",
            "203.0.113.0/24",
        ]
    )


def _cidr6(rng: random.Random, _: Pools) -> str:
    return rng.choice(["::/0", "2001:db8::/32", f"2001:db8:{rng.randrange(65536):x}::/64"])


def _port(rng: random.Random, _: Pools) -> int:
    return rng.choice([-1, 0, 22, 80, 443, 3306, 8080, 65535, rng.randrange(65536)])


def _text(rng: random.Random, _: Pools) -> str:
    return rng.choice(["fuzz", "web servers", "db", "x", "Mary's site", f"fz {rng.randrange(999)}"])


def _ids(kind: str) -> Gen:
    return lambda rng, pools: pools.id(rng, kind)


def _filter_value(rng: random.Random, pools: Pools) -> str:
    value = rng.choice([*FILTER_VALUES, pools.any_id(rng), pools.name(rng, "group_names", "fz")])
    # a group may be named "*****x" (names take any printable ASCII): as a filter value that
    # is the "wildcards" mutation, not a valid-ish value
    return value if sum(value.count(c) for c in "*?\\") <= 2 else "fz-*"


def _token(rng: random.Random, pools: Pools) -> str:
    seen = pools.names.get("tokens")
    if seen and rng.random() < 0.7:
        return rng.choice(seen)
    return encode_token(pools.any_id(rng))  # a token of the form the server hands out


def _public_ip(rng: random.Random, pools: Pools) -> str:
    seen = pools.names.get("ips")
    if seen and rng.random() < 0.8:
        return rng.choice(seen)
    return f"198.{rng.choice([18, 19, 51])}.{rng.randrange(256)}.{rng.randrange(256)}"


def _owner(rng: random.Random, pools: Pools) -> str:
    return rng.choice([pools.account_id, pools.account_id, pools.peer_account_id, "123456789012"])


FILTER_VALUES: tuple[str, ...] = (
    "*",
    "fz-*",
    "default",
    "true",
    "false",
    "running",
    "available",
    "stopped",
    "tcp",
    "22",
    "10.0.0.0/16",
    "us-east-1a",
    "web?",
)

BY_MEMBER: dict[str, Gen] = {
    "GroupId": _ids("sg"),
    "GroupIds": _ids("sg"),
    "SecurityGroupIds": _ids("sg"),
    "ReferencedGroupId": _ids("sg"),
    "Groups": _ids("sg"),
    "VpcId": _ids("vpc"),
    "VpcIds": _ids("vpc"),
    "SubnetId": _ids("subnet"),
    "SubnetIds": _ids("subnet"),
    "InstanceId": _ids("i"),
    "InstanceIds": _ids("i"),
    "NetworkInterfaceId": _ids("eni"),
    "NetworkInterfaceIds": _ids("eni"),
    "AttachmentId": _ids("eni-attach"),
    "AllocationId": _ids("eipalloc"),
    "AllocationIds": _ids("eipalloc"),
    "AssociationId": lambda rng, pools: _ids(
        rng.choice(["eipassoc", "eipassoc", "vpc-cidr-assoc", "subnet-cidr-assoc"])
    )(rng, pools),
    "PrefixListId": _ids("pl"),
    "PrefixListIds": _ids("pl"),
    "ImageId": _ids("ami"),
    "ImageIds": _ids("ami"),
    "KeyPairId": _ids("key"),
    "KeyPairIds": _ids("key"),
    "SecurityGroupRuleId": _ids("sgr"),
    "SecurityGroupRuleIds": _ids("sgr"),
    "Resources": lambda rng, pools: pools.any_id(rng),
    "GroupName": lambda rng, pools: pools.name(rng, "group_names", "fz-g"),
    "GroupNames": lambda rng, pools: pools.name(rng, "group_names", "fz-g"),
    "SecurityGroups": lambda rng, pools: pools.name(rng, "group_names", "fz-g"),
    "SourceSecurityGroupName": lambda rng, pools: pools.name(rng, "group_names", "fz-g"),
    "KeyName": lambda rng, pools: pools.name(rng, "key_names", "fz-k"),
    "KeyNames": lambda rng, pools: pools.name(rng, "key_names", "fz-k"),
    "PublicIp": lambda rng, pools: _public_ip(rng, pools),
    "PublicIps": lambda rng, pools: _public_ip(rng, pools),
    "UserId": _owner,
    "SourceSecurityGroupOwnerId": _owner,
    "Owners": lambda rng, pools: rng.choice(["self", "amazon", pools.account_id]),
    "ExecutableUsers": lambda rng, pools: rng.choice(["self", "all"]),
    "CidrIp": _cidr4,
    "CidrIpv4": _cidr4,
    "CidrBlock": lambda rng, pools: rng.choice(
        [
            f"10.7.{rng.randrange(256)}.0/24",
            f"172.31.{rng.randrange(96, 256)}.0/20",
            _cidr4(rng, pools),
        ]
    ),
    "CidrIpv6": _cidr6,
    "IpProtocol": lambda rng, _: rng.choice(
        ["tcp", "udp", "icmp", "icmpv6", "-1", "6", "17", "1", "58", "50", "51", "47", "all"]
    ),
    "FromPort": _port,
    "ToPort": _port,
    "MaxResults": lambda rng, _: rng.choice([5, 5, 6, 10, 100, 1000, rng.randrange(1, 2000)]),
    "NextToken": lambda rng, pools: _token(rng, pools),
    "PrivateIpAddress": lambda rng, _: f"172.31.{rng.randrange(256)}.{rng.randrange(1, 255)}",
    "Description": _text,
    "MinCount": lambda rng, _: rng.choice([1, 1, 2]),
    "MaxCount": lambda rng, _: rng.choice([1, 1, 2, 3]),
    "RegionNames": lambda rng, _: rng.choice(["us-east-1", "eu-west-1", "sa-east-1", "mars-1"]),
    "ZoneNames": lambda rng, _: rng.choice(["us-east-1a", "us-east-1b", "us-east-1z"]),
    "AvailabilityZone": lambda rng, _: rng.choice(["us-east-1a", "us-east-1b"]),
    "ZoneIds": lambda rng, _: rng.choice(["ue1-az1", "ue1-az2", "use1-az1"]),
    "UserData": lambda rng, _: base64.b64encode(b"#!/bin/sh\necho hello\n").decode(),
    "PublicKeyMaterial": lambda rng, _: PUBLIC_KEY,
    "InstanceType": lambda rng, _: rng.choice(["t2.micro", "t3.small", "m5.large"]),
    "ClientToken": lambda rng, _: f"ct-{rng.randrange(50)}",
    "DeviceIndex": lambda rng, _: rng.choice([0, 1, 1, 2]),
    "DeviceName": lambda rng, _: "/dev/xvda",
    "AddressFamily": lambda rng, _: rng.choice(["IPv4", "IPv4", "IPv6"]),
    "MaxEntries": lambda rng, _: rng.choice([1, 5, 10]),
    "CurrentVersion": lambda rng, _: rng.choice([1, 1, 2, 3]),
    "Cidr": lambda rng, pools: rng.choice([_cidr4, _cidr6])(rng, pools),
    "Ipv6AddressCount": lambda rng, _: rng.choice([1, 2]),
    "SecondaryPrivateIpAddressCount": lambda rng, _: rng.choice([1, 2]),
    "Ipv6CidrBlock": lambda rng, _: (
        f"fd00:ec2:0:{rng.randrange(1, 8)}{rng.randrange(16):x}{rng.randrange(16):x}::/64"
    ),
}
# by the structure the member belongs to
BY_PARENT: dict[tuple[str, str], Gen] = {
    ("Filter", "Name"): lambda rng, pools: rng.choice(pools.names["filters"]),
    ("Filter", "Values"): lambda rng, pools: _filter_value(rng, pools),
    ("Tag", "Key"): lambda rng, _: rng.choice(["Name", "env", "team", f"k{rng.randrange(20)}"]),
    ("Tag", "Value"): lambda rng, _: rng.choice(["web", "db", "", f"v{rng.randrange(20)}"]),
}
RESOURCE_TYPES = (
    "security-group",
    "security-group-rule",
    "instance",
    "vpc",
    "subnet",
    "key-pair",
    "elastic-ip",
    "network-interface",
)


_RULES = [
    ["GroupId", "IpPermissions"],
    ["GroupName", "IpPermissions"],
    ["GroupName", "IpProtocol", "FromPort", "ToPort", "CidrIp"],
    ["GroupId", "IpProtocol", "FromPort", "ToPort", "CidrIp"],
    ["GroupName", "SourceSecurityGroupName"],
    ["GroupId", "SourceSecurityGroupName", "SourceSecurityGroupOwnerId"],
]
_INSTANCES = [["InstanceIds"], ["InstanceIds", "Force"], ["InstanceIds", "DryRun"]]
_RUN = ["ImageId", "MinCount", "MaxCount"]
# Which members go together (by action, or by the structure's shape name): a valid-ish
# request takes one of these sets, plus now and then another member. Without a recipe,
# every optional member is a coin toss. Describe actions get theirs from their members.
RECIPES: dict[str, list[list[str]]] = {
    "AuthorizeSecurityGroupIngress": _RULES,
    "AuthorizeSecurityGroupEgress": _RULES[::3] + [["GroupId", "IpPermissions"]],
    "RevokeSecurityGroupIngress": [*_RULES, ["GroupId", "SecurityGroupRuleIds"]],
    "RevokeSecurityGroupEgress": [
        ["GroupId", "IpPermissions"],
        ["GroupId", "SecurityGroupRuleIds"],
    ],
    "UpdateSecurityGroupRuleDescriptionsIngress": [
        ["GroupId", "IpPermissions"],
        ["GroupName", "IpPermissions"],
        ["GroupId", "SecurityGroupRuleDescriptions"],
    ],
    "UpdateSecurityGroupRuleDescriptionsEgress": [
        ["GroupId", "IpPermissions"],
        ["GroupId", "SecurityGroupRuleDescriptions"],
    ],
    "ModifySecurityGroupRules": [["GroupId", "SecurityGroupRules"]],
    "CreateSecurityGroup": [
        ["GroupName", "Description"],
        ["GroupName", "Description", "VpcId"],
        ["GroupName", "Description", "TagSpecifications"],
    ],
    "DeleteSecurityGroup": [["GroupId"], ["GroupName"]],
    "DescribeSecurityGroupReferences": [["GroupId"]],
    "RunInstances": [
        _RUN,
        [*_RUN, "SecurityGroupIds"],
        [*_RUN, "SecurityGroups"],
        [*_RUN, "SubnetId", "SecurityGroupIds"],
        [*_RUN, "KeyName", "UserData", "InstanceType"],
        [*_RUN, "NetworkInterfaces"],
        [*_RUN, "TagSpecifications"],
        [*_RUN, "ClientToken"],
        [*_RUN, "PrivateIpAddress", "SubnetId"],
    ],
    "StartInstances": _INSTANCES,
    "StopInstances": _INSTANCES,
    "RebootInstances": _INSTANCES,
    "TerminateInstances": _INSTANCES,
    "DescribeInstanceAttribute": [["InstanceId", "Attribute"]],
    "ModifyInstanceAttribute": [
        ["InstanceId", "Attribute", "Value"],
        ["InstanceId", "Groups"],
        ["InstanceId", "UserData"],
        ["InstanceId", "DisableApiTermination"],
        ["InstanceId", "InstanceInitiatedShutdownBehavior"],
        ["InstanceId", "SourceDestCheck"],
        ["InstanceId", "InstanceType"],
    ],
    "ModifyNetworkInterfaceAttribute": [
        ["NetworkInterfaceId", "Groups"],
        ["NetworkInterfaceId", "Description"],
        ["NetworkInterfaceId", "SourceDestCheck"],
    ],
    "AllocateAddress": [[], ["Domain"], ["Domain", "TagSpecifications"]],
    "AssociateAddress": [
        ["AllocationId", "InstanceId"],
        ["AllocationId", "NetworkInterfaceId"],
        ["PublicIp", "InstanceId"],
        ["AllocationId", "InstanceId", "AllowReassociation"],
    ],
    "DisassociateAddress": [["AssociationId"], ["PublicIp"]],
    "ReleaseAddress": [["AllocationId"], ["PublicIp"]],
    "CreateVpc": [
        ["CidrBlock"],
        ["CidrBlock", "TagSpecifications"],
        ["CidrBlock", "AmazonProvidedIpv6CidrBlock"],
    ],
    "AssociateVpcCidrBlock": [["VpcId", "AmazonProvidedIpv6CidrBlock"], ["VpcId", "CidrBlock"]],
    "AssociateSubnetCidrBlock": [["SubnetId", "Ipv6CidrBlock"]],
    "CreateNetworkInterface": [
        ["SubnetId"],
        ["SubnetId", "Groups", "Description"],
        ["SubnetId", "PrivateIpAddress"],
        ["SubnetId", "SecondaryPrivateIpAddressCount"],
        ["SubnetId", "Ipv6AddressCount"],
        ["SubnetId", "PrivateIpAddresses", "TagSpecifications"],
    ],
    "AttachNetworkInterface": [["NetworkInterfaceId", "InstanceId", "DeviceIndex"]],
    "CreateManagedPrefixList": [
        ["PrefixListName", "MaxEntries", "AddressFamily"],
        ["PrefixListName", "MaxEntries", "AddressFamily", "Entries"],
    ],
    "ModifyManagedPrefixList": [
        ["PrefixListId", "CurrentVersion", "AddEntries"],
        ["PrefixListId", "CurrentVersion", "RemoveEntries"],
        ["PrefixListId", "PrefixListName"],
        ["PrefixListId", "MaxEntries"],
    ],
    "DeleteVpc": [["VpcId"]],
    "CreateSubnet": [["VpcId", "CidrBlock"], ["VpcId", "CidrBlock", "AvailabilityZone"]],
    "DeleteSubnet": [["SubnetId"]],
    "CreateKeyPair": [["KeyName"], ["KeyName", "KeyType"], ["KeyName", "TagSpecifications"]],
    "ImportKeyPair": [["KeyName", "PublicKeyMaterial"]],
    "DeleteKeyPair": [["KeyName"], ["KeyPairId"]],
    "CreateTags": [["Resources", "Tags"]],
    "DeleteTags": [["Resources"], ["Resources", "Tags"]],
    # structures
    "IpPermission": [
        ["IpProtocol", "FromPort", "ToPort", "IpRanges"],
        ["IpProtocol", "FromPort", "ToPort", "UserIdGroupPairs"],
        ["IpProtocol", "Ipv6Ranges"],
        ["IpProtocol", "FromPort", "ToPort", "IpRanges", "Ipv6Ranges"],
    ],
    "IpRange": [["CidrIp"], ["CidrIp", "Description"]],
    "Ipv6Range": [["CidrIpv6"], ["CidrIpv6", "Description"]],
    "UserIdGroupPair": [["GroupId"], ["GroupName"], ["GroupId", "UserId"]],
    "SecurityGroupRuleUpdate": [["SecurityGroupRuleId", "SecurityGroupRule"]],
    "SecurityGroupRuleRequest": [
        ["IpProtocol", "FromPort", "ToPort", "CidrIpv4"],
        ["IpProtocol", "FromPort", "ToPort", "ReferencedGroupId"],
        ["IpProtocol", "CidrIpv6", "Description"],
    ],
    "SecurityGroupRuleDescription": [["SecurityGroupRuleId", "Description"]],
    "InstanceNetworkInterfaceSpecification": [
        ["DeviceIndex", "SubnetId", "Groups"],
        ["DeviceIndex", "AssociatePublicIpAddress"],
        ["NetworkInterfaceId", "DeviceIndex"],
    ],
    "AttributeValue": [["Value"]],
    "AttributeBooleanValue": [["Value"]],
    "BlobAttributeValue": [["Value"]],
    "Filter": [["Name", "Values"]],
    "Tag": [["Key", "Value"]],
    "TagSpecification": [["ResourceType", "Tags"]],
}


def _describe_recipes(shape: Shape) -> list[list[str]]:
    members = list(shape.members)
    recipes: list[list[str]] = [[]]
    recipes += [[m] for m in members if m.endswith(("Ids", "Names", "Ips", "Owners"))]
    if "Filters" in members:
        recipes += [["Filters"], ["Filters"]]
    if "MaxResults" in members:
        recipes += [["MaxResults"], ["MaxResults", "NextToken"], ["Filters", "MaxResults"]]
    return [[m for m in r if m in members] for r in recipes]


def _kind(parent: str, name: str, shape: Shape) -> str:
    """What a parameter is, for choosing mutations (and for the exclusion list)."""
    if name == "IpProtocol":
        return "ip-protocol"
    if name == "NextToken":
        return "next-token"
    if name == "MaxResults":
        return "max-results"
    if name in ("FromPort", "ToPort"):
        return "port"
    if parent == "Filter":
        return "filter-name" if name == "Name" else "filter-value"
    if parent == "Tag":
        return "tag-key" if name == "Key" else "tag-value"
    return shape.type_name


# --- the wire -------------------------------------------------------------------------


@dataclass
class Param:
    key: str
    value: str | bytes
    type: str  # the model's type name (string, integer, boolean, ...) or "struct"/"extra"
    kind: str


@dataclass
class Case:
    """One request: an action and its parameters as sent (duplicates allowed)."""

    action: str
    params: list[Param]
    mutation: tuple[str, str] | None = None  # (kind, mutation); None for a valid-ish one
    also: list[tuple[str, str]] = field(default_factory=list)  # mutations on top of it
    region: str = "us-east-1"

    @property
    def write(self) -> bool:
        return ACTIONS[self.action].write

    def body(self) -> bytes:
        pairs: list[tuple[str, str | bytes]] = [("Action", self.action), ("Version", API_VERSION)]
        pairs += [(p.key, p.value) for p in self.params]
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs).encode()

    def describe(self, width: int = 80) -> str:
        shown = []
        for p in self.params:
            value = p.value
            shown.append(f"{p.key}={value[:width]!r}" + ("..." if len(value) > width else ""))
        what = "valid-ish" if self.mutation is None else "/".join(self.mutation)
        what += "".join(f" + {'/'.join(m)}" for m in self.also)
        return f"{self.action} [{what}] " + " ".join(shown)


def _wire_name(member: Shape, name: str) -> str:
    # as botocore's EC2Serializer names a member
    if "queryName" in member.serialization:
        return member.serialization["queryName"]
    location = member.serialization.get("name")
    return location[0].upper() + location[1:] if location else name


def _scalar(shape: Shape, value: Any) -> str:
    if shape.type_name == "boolean":
        return "true" if value else "false"
    if shape.type_name == "timestamp":
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if shape.type_name == "blob":
        return base64.b64encode(value).decode()
    return str(value)


class Generator:
    """Valid-ish and mutated requests for one run (one seeded ``random.Random``)."""

    def __init__(
        self,
        rng: random.Random,
        pools: Pools,
        database: str,
        exclude: Iterable[tuple] = (),
        only: Iterable[str] | None = None,
    ) -> None:
        self.rng = rng
        self.mutation_names = sorted(only) if only else MUTATION_NAMES
        self.pools = pools
        self.database = database
        self.exclude = {(k, m) for k, m, db in exclude if db in ("*", database)}
        self.model = model()
        self.filters = {a: _filter_names(a) for a in ACTIONS}
        self.all_filters = sorted({n for names in self.filters.values() for n in names})

    # valid-ish -------------------------------------------------------------------------

    def valid(self, action: str) -> Case:
        shape = self.model.operation_model(action).input_shape
        params: list[Param] = []
        # the filter names drawn from (now and then another action's)
        wrong = self.rng.random() < 0.1
        self.pools.names["filters"] = self.all_filters if wrong else self.filters[action]
        if shape is not None:
            recipes = RECIPES.get(action)
            if recipes is None and action.startswith("Describe"):
                recipes = _describe_recipes(shape)
            self._struct(shape, "", "", params, depth=0, recipes=recipes)
        return Case(action, params)

    def _include(self, name: str, depth: int, chosen: list[str] | None) -> bool:
        """Whether a valid-ish request takes an optional member."""
        if name == "DryRun":
            return self.rng.random() < 0.05
        if chosen is not None:
            return name in chosen or self.rng.random() < 0.02
        if name in BY_MEMBER:
            return self.rng.random() < (0.6 if depth == 0 else 0.5)
        if depth >= 3:
            return False
        return self.rng.random() < (0.1 if depth == 0 else 0.05)

    def _struct(
        self,
        shape: Shape,
        prefix: str,
        parent: str,
        out: list[Param],
        depth: int,
        recipes: list[list[str]] | None = None,
    ) -> None:
        required = set(shape.required_members)
        recipes = recipes if recipes is not None else RECIPES.get(shape.name)
        chosen = self.rng.choice(recipes) if recipes else None
        for name, member in shape.members.items():
            if name not in required and not self._include(name, depth, chosen):
                continue
            key = f"{prefix}.{_wire_name(member, name)}" if prefix else _wire_name(member, name)
            self._value(member, key, shape.name, name, out, depth + 1)

    def _value(self, shape: Shape, key: str, parent: str, name: str, out: list[Param], depth: int):
        rng = self.rng
        if shape.type_name == "structure":
            if depth > 6:
                return
            self._struct(shape, key, parent, out, depth)
            return
        if shape.type_name == "list":
            count = rng.choice([1, 1, 1, 2, 3]) if depth < 5 else 1
            for i in range(1, count + 1):
                self._value(shape.member, f"{key}.{i}", parent, name, out, depth)
            return
        gen = BY_PARENT.get((parent, name)) or BY_MEMBER.get(name)
        if parent == "TagSpecification" and name == "ResourceType":
            value: Any = rng.choice(RESOURCE_TYPES)
        elif gen is not None:
            value = gen(rng, self.pools)
        elif getattr(shape, "enum", None):
            value = rng.choice(shape.enum)
        else:
            value = self._default(shape)
        if isinstance(value, bytes) and shape.type_name != "blob":
            value = value.decode()
        out.append(Param(key, _scalar(shape, value), shape.type_name, _kind(parent, name, shape)))

    def _default(self, shape: Shape) -> Any:
        rng = self.rng
        kind = shape.type_name
        if kind in ("integer", "long"):
            return rng.choice([0, 1, 2, 8, 100, rng.randrange(1000)])
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "timestamp":
            return datetime(2026, 1, 1, tzinfo=UTC)
        if kind == "blob":
            return b"fuzz"
        if kind in ("float", "double"):
            return 1.5
        return _text(rng, self.pools)

    # mutated ---------------------------------------------------------------------------

    def mutated(self, action: str) -> Case:
        """A valid-ish case with one mutation (a quarter of the time, one or two more on
        top: ``Case.also``)."""
        for _ in range(50):
            case = self.valid(action)
            first = self._mutate(case)
            if first is None:
                continue
            case.mutation = first
            while self.rng.random() < 0.25 and len(case.also) < 2:
                more = self._mutate(case)
                if more is not None:
                    case.also.append(more)
            if any(m in self.exclude for m in [first, *case.also]):
                continue
            return case
        case = self.valid(action)
        extra_member(self, case)
        case.mutation = ("request", "extra-member")
        return case

    def _mutate(self, case: Case) -> tuple[str, str] | None:
        name = self.rng.choice(self.mutation_names)
        done = MUTATIONS[name](self, case)
        return None if done is None else (done, name)

    def pick(self, case: Case, types: tuple[str, ...]) -> Param | None:
        """A parameter of the case of one of ``types``, or a new top-level one."""
        found = [p for p in case.params if p.type in types]
        if found and self.rng.random() < 0.8:
            return self.rng.choice(found)
        shape = self.model.operation_model(case.action).input_shape
        if shape is None:
            return None
        members = [
            (name, m)
            for name, m in shape.members.items()
            if m.type_name in types or (m.type_name == "list" and m.member.type_name in types)
        ]
        if not members:
            return None
        name, member = self.rng.choice(members)
        key = _wire_name(member, name)
        if member.type_name == "list":
            key, member = f"{key}.1", member.member
        p = Param(key, "x", member.type_name, _kind(shape.name, name, member))
        case.params = [q for q in case.params if q.key != key]
        case.params.append(p)
        return p


def _b64std(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _ssh(*fields: bytes) -> bytes:
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


_BAD_KEYS: list[bytes] = [
    b"ssh-rsa",
    b"ssh-rsa AAAA",
    b"ssh-ed25519 " + base64.b64encode(_ssh(b"ssh-ed25519", b"\x01" * 31)),
    b"ssh-ed25519 " + base64.b64encode(_ssh(b"ssh-rsa", b"\x01" * 32)),
    b"ssh-rsa " + base64.b64encode(_ssh(b"ssh-rsa", b"", b"")),
    b"ssh-rsa " + base64.b64encode(_ssh(b"ssh-rsa", b"\x01\x00\x01", b"\xff" * 600)),
    b"ssh-rsa " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa\xff\xff\xff\xff"),
    b"\xff\xfe ssh-ed25519",
    b"---- BEGIN SSH2 PUBLIC KEY ----\nComment: x\\\n\n---- END SSH2 PUBLIC KEY ----",
    b"---- BEGIN SSH2 PUBLIC KEY ----\n" + base64.b64encode(_ssh(b"\xc3(", b"x")),
    b"ssh-dss AAAAB3NzaC1kc3MAAACBAP",
    b"\x00" * 64,
    b"ssh-ed25519 " + base64.b64encode(_ssh(b"ssh-ed25519", b"\x01" * 32)) + b" \x00\xff",
]

NUMBERS = ("integer", "long")
STRINGS = ("string",)
SCALARS = ("string", "integer", "long", "boolean", "timestamp", "blob")

VALUES: dict[str, tuple[tuple[str, ...], list[str | bytes]]] = {
    # mutation: (parameter types it applies to, values)
    "huge-number": (
        NUMBERS + STRINGS,
        ["9" * 20, str(2**63), str(-(2**63) - 1), "2147483648", "4294967296", "65536"],
    ),
    "negative-number": (NUMBERS + STRINGS, ["-1", "-2", "-65536", "-2147483649", "-0"]),
    "unicode-digits": (NUMBERS + STRINGS, ["٣", "１２", "²", "߁", "๓", "𝟙", "1٣"]),
    "many-digits": (NUMBERS + STRINGS, ["1" * 5000, "0" * 4000 + "7"]),
    "wrong-type": (
        SCALARS,
        ["abc", "1.5", "true", " 1", "0x10", "1_000", "NaN", "Infinity", "1e3", "null", "[]"],
    ),
    "nul": (STRINGS, ["\x00", "a\x00b", "fz\x00"]),
    "odd-unicode": (
        STRINGS,
        [
            "\u202eevil",
            "\u200b",
            "😀😀",
            "e\u0301",
            "\uffff",
            "\ufeffx",
            "İ",
            "ß",
            "\u2028",
            "ｆｕｌｌ",
        ],
    ),
    "control-chars": (STRINGS, ["\n", "a\r\nb", "\t", "\x1b[31m", "\x7f", "\x01"]),
    "markup": (STRINGS, ["<x>", "&amp;", "]]>", "\"'", "%00", "%", "+", "&Action=DeleteVpc"]),
    "long": (SCALARS, ["x" * 100_000, "é" * 40_000, "9" * 300]),
    "empty": (SCALARS, [""]),
    "whitespace": (SCALARS, [" ", " padded ", "\t"]),
    "wildcards": (STRINGS, ["*" * 40 + "x", "*a" * 25 + "b", "?" * 500, "\\" * 501, "a*?\\*"]),
    "invalid-utf8": (SCALARS, [b"\xff\xfe", b"a\xc3", b"\xed\xa0\x80"]),
    # blobs (ImportKeyPair's key, user data) that decode, holding broken keys
    "bad-blob": (("blob",), [_b64std(v) for v in _BAD_KEYS]),
    "id-like": (
        STRINGS,
        ["sg-00000000", "sg-" + "f" * 18, "vpc-", "i-0", "sg-" + "0" * 17, "SG-12345678"],
    ),
}


def _value_mutation(name: str) -> Callable[[Generator, Case], str | None]:
    types, values = VALUES[name]

    def mutate(gen: Generator, case: Case) -> str | None:
        target = gen.pick(case, types)
        if target is None:
            return None
        target.value = gen.rng.choice(values)
        return target.kind

    return mutate


def drop_member(gen: Generator, case: Case) -> str | None:
    if not case.params:
        return None
    case.params.remove(gen.rng.choice(case.params))
    return "request"


def duplicate_member(gen: Generator, case: Case) -> str | None:
    if not case.params:
        return None
    p = gen.rng.choice(case.params)
    case.params.append(Param(p.key, gen.rng.choice([p.value, "other"]), p.type, p.kind))
    return p.kind


def sub_key(gen: Generator, case: Case) -> str | None:
    if not case.params:
        return None
    p = gen.rng.choice(case.params)
    case.params.append(Param(f"{p.key}.{gen.rng.choice(['1', 'Extra', ''])}", "x", "extra", p.kind))
    return p.kind


def value_on_struct(gen: Generator, case: Case) -> str | None:
    nested = [p for p in case.params if "." in p.key]
    if not nested:
        return None
    p = gen.rng.choice(nested)
    case.params.append(Param(p.key.rsplit(".", 1)[0], "x", "struct", p.kind))
    return p.kind


def extra_member(gen: Generator, case: Case) -> str | None:
    rng = gen.rng
    key = rng.choice(["Bogus", "groupId", "GROUPID", "Filter.1.Bogus", "Tag.1.Key", "Action2"])
    if case.params and rng.random() < 0.5:
        key = rng.choice(case.params).key.split(".")[0] + ".Bogus"
    case.params.append(Param(key, "1", "extra", "request"))
    return "request"


INDEXES = ["0", "01", "-1", "999999", "10001", "1000000", "9" * 20, "a", "٣", "1.5", "", " 1"]


def deep_index(gen: Generator, case: Case) -> str | None:
    listed = [p for p in case.params if re.search(r"\.\d+(\.|$)", p.key)]
    if not listed:
        return None
    p = gen.rng.choice(listed)
    parts = p.key.split(".")
    at = gen.rng.choice([i for i, part in enumerate(parts) if part.isdigit()])
    parts[at] = gen.rng.choice(INDEXES)
    p.key = ".".join(parts)
    return p.kind


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


BOGUS_TOKENS: list[str] = [
    "",
    "garbage",
    "%%%",
    "====",
    _b64(b"x"),
    _b64(b"\xff\xfe"),
    _b64(json.dumps({"after": 5}).encode()),
    _b64(json.dumps({"after": None}).encode()),
    _b64(json.dumps({"before": "sg-1"}).encode()),
    _b64(json.dumps([]).encode()),
    _b64(json.dumps("after").encode()),
    _b64(json.dumps({"after": "z" * 10_000}).encode()),
    _b64(b"1e999999"),
    "a" * 100_000,
]


def bogus_token(gen: Generator, case: Case) -> str | None:
    target = _token_param(gen, case)
    if target is None:
        return None
    target.value = gen.rng.choice(BOGUS_TOKENS)
    return "next-token"


def nul_token(gen: Generator, case: Case) -> str | None:
    """A well-formed token whose position holds a NUL."""
    target = _token_param(gen, case)
    if target is None:
        return None
    after = gen.rng.choice(["\x00", "sg-00000000\x00", "a\x00b"])
    target.value = _b64(json.dumps({"after": after}).encode())
    return "next-token"


def nested_token(gen: Generator, case: Case) -> str | None:
    target = _token_param(gen, case)
    if target is None:
        return None
    depth = gen.rng.choice([1000, 100_000])
    target.value = _b64(("[" * depth + "]" * depth).encode())
    return "next-token"


def _token_param(gen: Generator, case: Case) -> Param | None:
    shape = gen.model.operation_model(case.action).input_shape
    if shape is None or "NextToken" not in shape.members:
        return None
    case.params = [p for p in case.params if p.key != "NextToken"]
    p = Param("NextToken", "", "string", "next-token")
    case.params.append(p)
    return p


MUTATIONS: dict[str, Callable[[Generator, Case], str | None]] = {
    **{name: _value_mutation(name) for name in VALUES},
    "drop": drop_member,
    "duplicate": duplicate_member,
    "sub-key": sub_key,
    "value-on-struct": value_on_struct,
    "extra-member": extra_member,
    "deep-index": deep_index,
    "bogus-token": bogus_token,
    "nested-json": nested_token,
    "nul-token": nul_token,
}
MUTATION_NAMES = sorted(MUTATIONS)


def _filter_names(action: str) -> list[str]:
    """The filters ``action`` knows: those of the filter table its handler names (else of
    every table in its module), and the tag filters."""
    handler = ACTIONS[action].handler
    module = vars(sys.modules[handler.__module__])
    names = {"tag:Name", "tag-key", "tag-value"}
    listings = [module[n] for n in handler.__code__.co_names if isinstance(module.get(n), Describe)]
    if listings:  # the handler runs a describe helper: its filters
        for listing in listings:
            names.update(listing.filters)
        return sorted(names)
    tables = [n for n, v in module.items() if n.endswith("FILTERS") and isinstance(v, dict)]
    named = [n for n in handler.__code__.co_names if n in tables]
    for table in named or tables:
        names.update(module[table])
    return sorted(names)


# --- sending and judging ------------------------------------------------------------


@dataclass
class Target:
    """A running server, the account whose keys sign, and the database to digest."""

    url: str
    store: Store
    account_id: str
    access_key_id: str
    secret_access_key: str
    database: str  # "sqlite" or "postgres"
    timeout: float = TIMEOUT

    def __post_init__(self) -> None:
        self.http = httpx.Client(timeout=self.timeout)
        self._creds = Credentials(self.access_key_id, self.secret_access_key)

    def send(self, case: Case) -> tuple[int | None, str, float]:
        """(status, body, seconds); status None if the request timed out."""
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        req = AWSRequest(method="POST", url=self.url + "/", data=case.body(), headers=headers)
        SigV4Auth(self._creds, "ec2", case.region).add_auth(req)
        prepared = req.prepare()
        start = time.perf_counter()
        try:
            resp = self.http.post(
                self.url + "/", content=prepared.body, headers=dict(prepared.headers)
            )
        except httpx.TimeoutException:
            return None, "", time.perf_counter() - start
        except httpx.TransportError:
            # the connection broke (the server may have dropped it): count as a hang
            self.http.close()
            self.http = httpx.Client(timeout=self.timeout)
            return None, "", time.perf_counter() - start
        return resp.status_code, resp.text, time.perf_counter() - start

    def close(self) -> None:
        self.http.close()


_CODE_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z0-9]+)*")
_LEAKS = ("Traceback", "object at 0x", "sqlalchemy", "psycopg", "sqlite3", "Error(")


def judge(case: Case, status: int | None, body: str) -> list[str]:
    """What is wrong with a reply (empty: nothing)."""
    if status is None:
        return ["hang"]
    if status >= 500:
        return [f"5xx ({status})"]
    try:
        root = ET.fromstring(body)
    except ET.ParseError as err:
        return [f"not XML ({err})"]
    tag = root.tag.split("}", 1)[-1]
    if status == 200:
        if tag != f"{case.action}Response":
            return [f"200 with root <{tag}>"]
        if not any(child.tag.endswith("requestId") and child.text for child in root):
            return ["200 without requestId"]
        return []
    if not 400 <= status < 500:
        return [f"status {status}"]
    code, message = root.findtext("Errors/Error/Code"), root.findtext("Errors/Error/Message")
    if tag != "Response" or not code or message is None or not root.findtext("RequestID"):
        return [f"error not EC2-shaped: {body[:200]!r}"]
    if not _CODE_RE.fullmatch(code):
        return [f"odd error code {code!r}"]
    if code == "InternalError" or any(leak in message for leak in _LEAKS):
        return [f"internal detail in error: {code}: {message[:200]!r}"]
    return []


def error_code(body: str) -> str | None:
    found = re.search(r"<Code>(.*?)</Code>", body)
    return found.group(1) if found else None


def _digest_queries(sqlite: bool) -> list[tuple[str, bool]]:
    """One SELECT per table (and whether it takes the account id), in a fixed order."""
    mark = "?" if sqlite else "%s"
    queries = []
    for table in schema.metadata.sorted_tables:
        order = ", ".join(c.name for c in table.primary_key.columns) or ", ".join(
            c.name for c in table.columns
        )
        if table is schema.changes:
            sql = f"SELECT count(*), max(revision) FROM changes WHERE account_id = {mark}"
        elif "account_id" in table.c:
            sql = f"SELECT * FROM {table.name} WHERE account_id = {mark} ORDER BY {order}"
        elif table is schema.accounts:
            sql = f"SELECT * FROM accounts WHERE id = {mark}"
        else:
            sql = f"SELECT * FROM {table.name} ORDER BY {order}"
        queries.append((sql, mark in sql))
    return queries


_QUERIES: dict[bool, list[tuple[str, bool]]] = {}


def digest(store: Store, account_id: str) -> str:
    """The account's rows in every table, the change log's length and newest revision
    (read through the driver's own cursor: the digest runs after every request)."""
    sqlite = store.is_sqlite
    queries = _QUERIES.get(sqlite) or _QUERIES.setdefault(sqlite, _digest_queries(sqlite))
    h = hashlib.sha256()
    with store.read() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            for sql, takes_account in queries:
                cursor.execute(sql, (account_id,) if takes_account else ())
                h.update(sql.encode())
                h.update(repr(cursor.fetchall()).encode())
        finally:
            cursor.close()
        conn.rollback()
    return h.hexdigest()


@dataclass
class Finding:
    index: int
    case: Case
    problem: str
    status: int | None
    body: str

    def __str__(self) -> str:
        return (
            f"#{self.index} {self.problem}: HTTP {self.status} {self.body[:300]!r}\n"
            f"    {self.case.describe()}"
        )


@dataclass
class Stats:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    server_errors: int = 0
    hangs: int = 0
    stored_changes: int = 0
    malformed: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    stopped: bool = False  # the server stopped answering (MAX_HANGS_IN_A_ROW hangs)
    codes: Counter = field(default_factory=Counter)
    by_action: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)


class Fuzzer:
    """Sends cases to a target one at a time and judges every reply."""

    def __init__(
        self,
        target: Target,
        seed: int | str,
        exclude: Iterable[tuple[str, str, str]] = KNOWN_BUGS,
        *,
        mutated_per_valid: int = 3,
        check_reads: bool = True,
        only: Iterable[str] | None = None,
    ) -> None:
        self.target = target
        self.rng = random.Random(f"{seed}:{target.database}")
        self.pools = Pools(target.account_id, "000000000000")
        self.gen = Generator(self.rng, self.pools, target.database, exclude, only)
        self.mutated_per_valid = mutated_per_valid
        self.check_reads = check_reads
        self.stats = Stats()
        self._digest: str | None = None

    def snapshot(self) -> str:
        """The digest of the fuzzing account's rows and the peer account's (whose groups
        rules may name)."""
        store = self.target.store
        return digest(store, self.target.account_id) + digest(store, self.pools.peer_account_id)

    def setup(self, peer_account_id: str) -> None:
        """Resources for valid-ish requests to name (and regions made ready)."""
        self.pools.peer_account_id = peer_account_id
        steps = [
            ("DescribeRegions", []),
            ("CreateVpc", [("CidrBlock", "10.7.0.0/16")]),
            ("DescribeVpcs", []),
            ("DescribeSubnets", []),
            ("CreateSecurityGroup", [("GroupName", "fz-web"), ("GroupDescription", "web")]),
            ("CreateSecurityGroup", [("GroupName", "fz-db"), ("GroupDescription", "db")]),
            ("DescribeSecurityGroups", []),
            ("CreateKeyPair", [("KeyName", "fz-key")]),
            ("ImportKeyPair", [("KeyName", "fz-imp"), ("PublicKeyMaterial", _b64(PUBLIC_KEY))]),
            ("DescribeImages", []),
            ("AllocateAddress", [("Domain", "vpc")]),
            ("DescribeAddresses", []),
            ("DescribeSecurityGroupRules", []),
            ("DescribeNetworkInterfaces", []),
        ]
        for action, pairs in steps:
            self._setup_step(action, pairs)
        ami = self.pools.ids.get("ami", ["ami-00000000"])[0]
        run = [("ImageId", ami), ("MinCount", "2"), ("MaxCount", "2"), ("KeyName", "fz-key")]
        self._setup_step("RunInstances", run)
        self._setup_step("DescribeNetworkInterfaces", [])
        group = self.pools.ids["sg"][-1]
        rule = [
            ("GroupId", group),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "22"),
            ("IpPermissions.1.ToPort", "22"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "192.168.1.130/32"),
        ]
        self._setup_step("AuthorizeSecurityGroupIngress", rule)
        self._setup_step("DescribeSecurityGroups", [("MaxResults", "5")])
        # the other region's first request makes it ready (a change of its own)
        self._setup_step("DescribeVpcs", [], region="eu-west-1")
        self._digest = self.snapshot()

    def _setup_step(self, action: str, pairs: list[tuple[str, str]], region: str = "us-east-1"):
        case = Case(action, [Param(k, v, "string", "setup") for k, v in pairs], region=region)
        status, body, _ = self.target.send(case)
        if status != 200:
            raise RuntimeError(f"fuzz set-up: {action} answered {status}: {body[:500]}")
        self.pools.harvest(body)

    def refresh(self) -> None:
        """Keep only resources that exist in the pools (Describe calls, not counted)."""
        fresh = Pools(self.pools.account_id, self.pools.peer_account_id)
        for action in REFRESH:
            status, body, _ = self.target.send(Case(action, []))
            if status == 200:
                fresh.harvest(body)
        self.pools.ids = fresh.ids
        self.pools.names.update({k: v for k, v in fresh.names.items() if k != "tokens"})
        self._digest = self.snapshot()

    def cases(self, rounds: int) -> Iterable[Case]:
        """Each round: every action once valid-ish, then ``mutated_per_valid`` times mutated
        (the pools refreshed first)."""
        names = actions()
        for _ in range(rounds):
            self.refresh()
            self.rng.shuffle(names)
            for action in names:
                case = self.gen.valid(action)
                if self.rng.random() < 0.03:
                    case.region = "eu-west-1"
                yield case
                for _ in range(self.mutated_per_valid):
                    yield self.gen.mutated(action)

    def run(self, cases: Iterable[Case], on_request: Callable[[], None] | None = None) -> Stats:
        """Send ``cases``; stop early once ``MAX_HANGS_IN_A_ROW`` requests in a row hung (the
        server is stuck: every further request would only wait out its timeout)."""
        in_a_row = 0
        for case in cases:
            hangs = self.stats.hangs
            self.one(case)
            in_a_row = in_a_row + 1 if self.stats.hangs > hangs else 0
            if on_request is not None:
                on_request()
            if in_a_row >= MAX_HANGS_IN_A_ROW:
                self.stats.stopped = True
                break
        return self.stats

    def one(self, case: Case) -> None:
        stats = self.stats
        index = stats.requests
        status, body, seconds = self.target.send(case)
        stats.requests += 1
        stats.seconds += seconds
        stats.slowest = max(stats.slowest, seconds)
        stats.by_action[case.action] += 1
        problems = judge(case, status, body)
        accepted = status == 200
        if accepted:
            stats.accepted += 1
            self.pools.harvest(body)
            if case.action.startswith(("Delete", "Release")):
                self.pools.forget(p.value for p in case.params)
        else:
            stats.rejected += 1
            stats.codes[error_code(body) or str(status)] += 1
        for problem in problems:
            if problem == "hang":
                stats.hangs += 1
            elif problem.startswith("5xx"):
                stats.server_errors += 1
            else:
                stats.malformed += 1
            stats.findings.append(Finding(index, case, problem, status, body))
        if accepted and not case.write and not self.check_reads:
            return
        now = self.snapshot()
        # only an accepted write may change anything
        changed = self._digest is not None and now != self._digest
        if changed and not (accepted and case.write):
            stats.stored_changes += 1
            what = "a rejected request" if not accepted else "a read"
            stats.findings.append(
                Finding(index, case, f"{what} changed what is stored", status, body)
            )
        self._digest = now
