"""Security groups through boto3 against the real server (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from conftest import raw_request


def error_of(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    err = info.value.response["Error"]
    return err["Code"], err["Message"]


def tcp(port: int, *cidrs: str, to: int | None = None) -> dict:
    return {
        "IpProtocol": "tcp",
        "FromPort": port,
        "ToPort": port if to is None else to,
        "IpRanges": [{"CidrIp": c} for c in cidrs],
    }


def group(ec2, name: str, **kw) -> dict:
    gid = ec2.create_security_group(GroupName=name, Description=f"{name} group", **kw)["GroupId"]
    return ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]


def test_default_vpc_and_default_group(ec2, account):
    vpcs = ec2.describe_vpcs()["Vpcs"]
    assert [(v["CidrBlock"], v["IsDefault"]) for v in vpcs] == [("172.31.0.0/16", True)]
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
    assert len(subnets["Subnets"]) == 3
    assert all(s["VpcId"] == vpcs[0]["VpcId"] for s in subnets["Subnets"])
    (default,) = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"]
    assert default["OwnerId"] == account.account_id
    assert default["IpPermissions"] == [
        {
            "IpProtocol": "-1",
            "UserIdGroupPairs": [{"UserId": account.account_id, "GroupId": default["GroupId"]}],
            "IpRanges": [],
            "Ipv6Ranges": [],
            "PrefixListIds": [],
        }
    ]
    assert default["IpPermissionsEgress"][0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]
    code, msg = error_of(ec2.delete_security_group, GroupName="default")
    assert code == "CannotDelete" and default["GroupId"] in msg


def test_create_describe_delete(ec2):
    web = group(
        ec2,
        "web",
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [{"Key": "tier", "Value": "front"}]}
        ],
    )
    assert web["Description"] == "web group"
    assert web["Tags"] == [{"Key": "tier", "Value": "front"}]
    assert web["IpPermissions"] == []
    assert web["IpPermissionsEgress"][0]["IpProtocol"] == "-1"
    code, msg = error_of(ec2.create_security_group, GroupName="web", Description="again")
    assert code == "InvalidGroup.Duplicate" and "'web'" in msg
    ec2.delete_security_group(GroupId=web["GroupId"])
    code, _ = error_of(ec2.describe_security_groups, GroupIds=[web["GroupId"]])
    assert code == "InvalidGroup.NotFound"
    code, _ = error_of(ec2.delete_security_group, GroupName="web")
    assert code == "InvalidGroup.NotFound"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"GroupName": "sg-foo", "Description": "x"}, "InvalidParameterValue"),
        ({"GroupName": "default", "Description": "x"}, "InvalidGroup.Reserved"),
        ({"GroupName": "x" * 256, "Description": "x"}, "InvalidParameterValue"),
        ({"GroupName": "ok", "Description": "caf\u00e9"}, "InvalidParameterValue"),
        ({"GroupName": "ok", "Description": "x", "VpcId": "vpc-nope"}, "InvalidVpcID.Malformed"),
        (
            {"GroupName": "ok", "Description": "x", "VpcId": "vpc-0123456789abcdef0"},
            "InvalidVpcID.NotFound",
        ),
    ],
)
def test_create_rejects(ec2, kwargs, code):
    assert error_of(ec2.create_security_group, **kwargs)[0] == code
    names = [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]]
    assert names == ["default"]


def test_authorize_every_rule_kind(ec2, account):
    app = group(ec2, "app")
    web = group(ec2, "web")
    resp = ec2.authorize_security_group_ingress(
        GroupId=app["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 443,
                "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "office"}],
                "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32"}],
                "UserIdGroupPairs": [{"GroupId": web["GroupId"], "Description": "from web"}],
            },
            {
                "IpProtocol": "udp",
                "FromPort": 53,
                "ToPort": 53,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            },
            {
                "IpProtocol": "icmp",
                "FromPort": 8,
                "ToPort": -1,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            },
            {"IpProtocol": "50", "IpRanges": [{"CidrIp": "192.0.2.0/24"}]},
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupName": "web"}]},
        ],
    )
    rules = resp["SecurityGroupRules"]
    assert len(rules) == 7
    assert all(r["SecurityGroupRuleId"].startswith("sgr-") for r in rules)
    assert {r["IpProtocol"] for r in rules} == {"tcp", "udp", "icmp", "50", "-1"}
    by_peer = {
        r.get("CidrIpv4") or r.get("CidrIpv6") or r["ReferencedGroupInfo"]["GroupId"]: r
        for r in rules[:3]
    }
    assert by_peer["10.0.0.0/8"]["Description"] == "office"
    assert by_peer[web["GroupId"]]["ReferencedGroupInfo"]["UserId"] == account.account_id

    (got,) = ec2.describe_security_groups(GroupIds=[app["GroupId"]])["SecurityGroups"]
    perms = {(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")): p for p in got["IpPermissions"]}
    assert set(perms) == {
        ("tcp", 80, 443),
        ("udp", 53, 53),
        ("icmp", 8, -1),
        ("50", None, None),
        ("-1", None, None),
    }
    web_tcp = perms[("tcp", 80, 443)]
    assert web_tcp["IpRanges"] == [{"CidrIp": "10.0.0.0/8", "Description": "office"}]
    assert web_tcp["Ipv6Ranges"] == [{"CidrIpv6": "2001:db8::/32"}]
    assert web_tcp["UserIdGroupPairs"] == [
        {"UserId": account.account_id, "GroupId": web["GroupId"], "Description": "from web"}
    ]
    # a rule that names another group keeps that group alive
    code, msg = error_of(ec2.delete_security_group, GroupId=web["GroupId"])
    assert code == "DependencyViolation" and web["GroupId"] in msg


def test_protocol_numbers_are_named(ec2):
    g = group(ec2, "nums")
    ec2.authorize_security_group_ingress(
        GroupId=g["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "6",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "1.2.3.4/32"}],
            }
        ],
    )
    (got,) = ec2.describe_security_groups(GroupIds=[g["GroupId"]])["SecurityGroups"]
    assert got["IpPermissions"][0]["IpProtocol"] == "tcp"
    # the same rule spelled by name is a duplicate
    code, msg = error_of(
        ec2.authorize_security_group_ingress,
        GroupId=g["GroupId"],
        IpPermissions=[tcp(22, "1.2.3.4/32")],
    )
    assert code == "InvalidPermission.Duplicate"
    assert "1.2.3.4/32" in msg and "already exists" in msg


@pytest.mark.parametrize(
    ("perm", "code"),
    [
        (tcp(70000, "0.0.0.0/0"), "InvalidParameterValue"),
        (tcp(90, "0.0.0.0/0", to=80), "InvalidParameterValue"),
        (tcp(22, "10.0.0.1/33"), "InvalidParameterValue"),
        # (host bits set are normalised, as EC2 does: tests/test_api_surface.py)
        (tcp(22, "not-a-cidr"), "InvalidParameterValue"),
        (
            {"IpProtocol": "tcp", "FromPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            "InvalidParameterValue",
        ),
        ({"IpProtocol": "bogus", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "InvalidParameterValue"),
        ({"IpProtocol": "300", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "InvalidParameterValue"),
        (
            {
                "IpProtocol": "icmp",
                "FromPort": -1,
                "ToPort": 3,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            },
            "InvalidParameterValue",
        ),
        ({"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2}, "MissingParameter"),
        (
            {
                "IpProtocol": "tcp",
                "FromPort": 1,
                "ToPort": 2,
                "Ipv6Ranges": [{"CidrIpv6": "10.0.0.0/8"}],
            },
            "InvalidParameterValue",
        ),
        (
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-0123456789abcdef0"}]},
            "InvalidGroup.NotFound",
        ),
        (
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "banana"}]},
            "InvalidGroupId.Malformed",
        ),
        (
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupName": "nosuch"}]},
            "InvalidGroup.NotFound",
        ),
    ],
)
def test_authorize_rejects_and_changes_nothing(ec2, perm, code):
    g = group(ec2, "strict")
    ok = tcp(443, "0.0.0.0/0")
    # the valid permission in the same request must not be stored either
    assert (
        error_of(
            ec2.authorize_security_group_ingress, GroupId=g["GroupId"], IpPermissions=[ok, perm]
        )[0]
        == code
    )
    (got,) = ec2.describe_security_groups(GroupIds=[g["GroupId"]])["SecurityGroups"]
    assert got["IpPermissions"] == []


def test_duplicate_within_one_request(ec2):
    g = group(ec2, "dup")
    code, _ = error_of(
        ec2.authorize_security_group_ingress,
        GroupId=g["GroupId"],
        IpPermissions=[tcp(22, "10.1.0.0/16"), tcp(22, "10.1.0.0/16")],
    )
    assert code == "InvalidPermission.Duplicate"


def test_revoke_by_permission_and_by_rule_id(ec2):
    g = group(ec2, "rev")
    rules = ec2.authorize_security_group_ingress(
        GroupId=g["GroupId"],
        IpPermissions=[tcp(22, "10.0.0.0/8", "192.168.0.0/16"), tcp(80, "0.0.0.0/0")],
    )["SecurityGroupRules"]
    resp = ec2.revoke_security_group_ingress(
        GroupId=g["GroupId"], IpPermissions=[tcp(22, "10.0.0.0/8")]
    )
    assert resp["Return"] is True
    assert [r["CidrIpv4"] for r in resp["RevokedSecurityGroupRules"]] == ["10.0.0.0/8"]
    web = next(r for r in rules if r["FromPort"] == 80)
    ec2.revoke_security_group_ingress(
        GroupId=g["GroupId"], SecurityGroupRuleIds=[web["SecurityGroupRuleId"]]
    )
    (got,) = ec2.describe_security_groups(GroupIds=[g["GroupId"]])["SecurityGroups"]
    assert [(p["FromPort"], p["IpRanges"]) for p in got["IpPermissions"]] == [
        (22, [{"CidrIp": "192.168.0.0/16"}])
    ]
    # revoking a rule that is not there, in the default VPC: reported, not an error
    resp = ec2.revoke_security_group_ingress(
        GroupId=g["GroupId"], IpPermissions=[tcp(25, "0.0.0.0/0")]
    )
    assert resp["UnknownIpPermissions"][0]["FromPort"] == 25
    code, _ = error_of(
        ec2.revoke_security_group_ingress,
        GroupId=g["GroupId"],
        SecurityGroupRuleIds=[web["SecurityGroupRuleId"]],
    )
    assert code == "InvalidSecurityGroupRuleId.NotFound"
    code, _ = error_of(
        ec2.revoke_security_group_ingress, GroupId=g["GroupId"], SecurityGroupRuleIds=["sgr-x"]
    )
    assert code == "InvalidSecurityGroupRuleId.Malformed"


def test_revoke_unknown_rule_in_other_vpc_is_an_error(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    g = ec2.create_security_group(GroupName="inner", Description="d", VpcId=vpc)["GroupId"]
    code, _ = error_of(
        ec2.revoke_security_group_ingress, GroupId=g, IpPermissions=[tcp(25, "0.0.0.0/0")]
    )
    assert code == "InvalidPermission.NotFound"


def test_egress_rules(ec2):
    g = group(ec2, "out")
    ec2.revoke_security_group_egress(
        GroupId=g["GroupId"],
        IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    ec2.authorize_security_group_egress(GroupId=g["GroupId"], IpPermissions=[tcp(443, "0.0.0.0/0")])
    (got,) = ec2.describe_security_groups(GroupIds=[g["GroupId"]])["SecurityGroups"]
    assert [(p["IpProtocol"], p["FromPort"]) for p in got["IpPermissionsEgress"]] == [("tcp", 443)]
    assert got["IpPermissions"] == []
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [g["GroupId"]]}]
    )
    assert [r["IsEgress"] for r in rules["SecurityGroupRules"]] == [True]


def test_legacy_flat_parameters(ec2, account):
    g = group(ec2, "legacy")
    ec2.authorize_security_group_ingress(
        GroupName="legacy", IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="192.168.1.130/32"
    )
    ec2.authorize_security_group_ingress(
        GroupName="legacy",
        SourceSecurityGroupName="default",
        SourceSecurityGroupOwnerId=account.account_id,
    )
    (got,) = ec2.describe_security_groups(GroupIds=[g["GroupId"]])["SecurityGroups"]
    kinds = sorted((p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in got["IpPermissions"])
    assert kinds == [("icmp", -1, -1), ("tcp", 0, 65535), ("tcp", 22, 22), ("udp", 0, 65535)]
    ec2.revoke_security_group_ingress(
        GroupName="legacy", IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="192.168.1.130/32"
    )
    (got,) = ec2.describe_security_groups(GroupIds=[g["GroupId"]])["SecurityGroups"]
    assert all(not p["IpRanges"] for p in got["IpPermissions"])


def test_describe_filters(ec2, account):
    a = group(ec2, "alpha")
    b = group(ec2, "beta")
    ec2.authorize_security_group_ingress(
        GroupId=a["GroupId"], IpPermissions=[tcp(22, "192.168.1.130/32")]
    )
    ec2.authorize_security_group_ingress(
        GroupId=b["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8080,
                "ToPort": 8080,
                "UserIdGroupPairs": [{"GroupId": a["GroupId"]}],
            }
        ],
    )
    ec2.create_tags(Resources=[b["GroupId"]], Tags=[{"Key": "tier", "Value": "app"}])

    def names(*filters: tuple[str, list[str]]) -> list[str]:
        groups = ec2.describe_security_groups(
            Filters=[{"Name": n, "Values": v} for n, v in filters]
        )
        return sorted(g["GroupName"] for g in groups["SecurityGroups"])

    assert names(("group-name", ["alpha", "beta"])) == ["alpha", "beta"]
    assert names(("group-name", ["al*"])) == ["alpha"]
    assert names(("group-id", [b["GroupId"]])) == ["beta"]
    assert names(("description", ["beta group"])) == ["beta"]
    assert names(("ip-permission.cidr", ["192.168.1.130/32"])) == ["alpha"]
    assert names(("ip-permission.from-port", ["8080"])) == ["beta"]
    assert names(("ip-permission.to-port", ["22"])) == ["alpha"]
    assert names(("ip-permission.protocol", ["tcp"])) == ["alpha", "beta"]
    assert names(("ip-permission.group-id", [a["GroupId"]])) == ["beta"]
    assert names(("ip-permission.group-name", ["alpha"])) == ["beta"]
    assert names(("ip-permission.user-id", [account.account_id])) == ["beta", "default"]
    assert names(("egress.ip-permission.cidr", ["0.0.0.0/0"])) == ["alpha", "beta", "default"]
    assert names(("owner-id", [account.account_id]), ("tag:tier", ["app"])) == ["beta"]
    assert names(("tag-key", ["tier"])) == ["beta"]
    assert names(("vpc-id", [a["VpcId"]]), ("group-name", ["default", "alpha"])) == [
        "alpha",
        "default",
    ]
    assert names(("group-name", ["nope"])) == []
    code, msg = error_of(
        ec2.describe_security_groups, Filters=[{"Name": "flavour", "Values": ["x"]}]
    )
    assert code == "InvalidParameterValue" and "flavour" in msg


def test_pagination(server, account, ec2):
    made = {
        ec2.create_security_group(GroupName=f"p{i:02d}", Description="d")["GroupId"]
        for i in range(12)
    }
    seen, token, pages = [], None, 0
    while True:
        kw = {"MaxResults": 5, **({"NextToken": token} if token else {})}
        resp = ec2.describe_security_groups(**kw)
        seen += [g["GroupId"] for g in resp["SecurityGroups"]]
        pages += 1
        token = resp.get("NextToken")
        if not token:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 13
    assert made <= set(seen)
    paginator = ec2.get_paginator("describe_security_groups")
    assert (
        sum(len(p["SecurityGroups"]) for p in paginator.paginate(PaginationConfig={"PageSize": 5}))
        == 13
    )
    reply = raw_request(server, account, {"Action": "DescribeSecurityGroups", "MaxResults": "3"})
    assert (reply.status, reply.code) == (400, "InvalidParameterValue")
    assert (
        error_of(ec2.describe_security_groups, MaxResults=5, NextToken="garbage!")[0]
        == "InvalidPaginationToken"
    )


def test_pagination_with_filters_reads_on_until_a_page_is_full(ec2):
    """Pages are read from the store in id order, and only until a page is full; filters
    the store cannot apply (wildcards, tags, rules) are applied on the way, so matches may
    be spread over more rows than one read takes (200 at a time)."""
    made = [
        ec2.create_security_group(GroupName=f"scan{i:03d}", Description="d")["GroupId"]
        for i in range(230)
    ]
    wanted = sorted(made[::45])  # 6 of them, far apart
    ec2.create_tags(Resources=wanted, Tags=[{"Key": "pick", "Value": "yes"}])
    ec2.authorize_security_group_ingress(GroupId=made[7], IpPermissions=[tcp(22, "10.9.0.0/16")])

    def pages(filters: list[dict], size: int) -> list[list[str]]:
        out, token = [], None
        while True:
            kw = {"MaxResults": size, "Filters": filters, **({"NextToken": token} if token else {})}
            resp = ec2.describe_security_groups(**kw)
            out.append([g["GroupId"] for g in resp["SecurityGroups"]])
            token = resp.get("NextToken")
            if not token:
                return out

    picked = pages([{"Name": "tag:pick", "Values": ["yes"]}], 5)
    assert picked == [wanted[:5], wanted[5:]]
    every = pages([{"Name": "group-name", "Values": ["scan*"]}], 100)
    assert [len(p) for p in every] == [100, 100, 30]
    assert sum(every, []) == sorted(made)
    by_rule = pages([{"Name": "ip-permission.cidr", "Values": ["10.9.0.0/16"]}], 5)
    assert by_rule == [[made[7]]]
    # a page that ends exactly where the matches end has no next page
    assert pages([{"Name": "tag:pick", "Values": ["yes"]}], 6) == [wanted]


def test_security_group_rules_api(ec2):
    g = group(ec2, "rulesapi")
    (rule,) = ec2.authorize_security_group_ingress(
        GroupId=g["GroupId"],
        IpPermissions=[tcp(22, "10.0.0.0/8")],
        TagSpecifications=[
            {"ResourceType": "security-group-rule", "Tags": [{"Key": "why", "Value": "ssh"}]}
        ],
    )["SecurityGroupRules"]
    rid = rule["SecurityGroupRuleId"]
    assert rule["Tags"] == [{"Key": "why", "Value": "ssh"}]
    (got,) = ec2.describe_security_group_rules(SecurityGroupRuleIds=[rid])["SecurityGroupRules"]
    assert (got["FromPort"], got["CidrIpv4"], got["IsEgress"]) == (22, "10.0.0.0/8", False)
    tagged = ec2.describe_security_group_rules(Filters=[{"Name": "tag:why", "Values": ["ssh"]}])
    assert [r["SecurityGroupRuleId"] for r in tagged["SecurityGroupRules"]] == [rid]

    ec2.modify_security_group_rules(
        GroupId=g["GroupId"],
        SecurityGroupRules=[
            {
                "SecurityGroupRuleId": rid,
                "SecurityGroupRule": {
                    "IpProtocol": "tcp",
                    "FromPort": 2222,
                    "ToPort": 2222,
                    "CidrIpv4": "10.1.0.0/16",
                    "Description": "moved",
                },
            }
        ],
    )
    (got,) = ec2.describe_security_group_rules(SecurityGroupRuleIds=[rid])["SecurityGroupRules"]
    assert (got["FromPort"], got["CidrIpv4"], got["Description"]) == (2222, "10.1.0.0/16", "moved")

    ec2.update_security_group_rule_descriptions_ingress(
        GroupId=g["GroupId"],
        SecurityGroupRuleDescriptions=[{"SecurityGroupRuleId": rid, "Description": "again"}],
    )
    ec2.update_security_group_rule_descriptions_ingress(
        GroupId=g["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 2222,
                "ToPort": 2222,
                "IpRanges": [{"CidrIp": "10.1.0.0/16", "Description": "by permission"}],
            }
        ],
    )
    (got,) = ec2.describe_security_group_rules(SecurityGroupRuleIds=[rid])["SecurityGroupRules"]
    assert got["Description"] == "by permission"
    code, _ = error_of(
        ec2.update_security_group_rule_descriptions_ingress,
        GroupId=g["GroupId"],
        IpPermissions=[tcp(9, "10.1.0.0/16")],
    )
    assert code == "InvalidPermission.NotFound"
    code, _ = error_of(
        ec2.describe_security_group_rules, SecurityGroupRuleIds=["sgr-0123456789abcdef0"]
    )
    assert code == "InvalidSecurityGroupRuleId.NotFound"


def test_quotas(server, account, monkeypatch):
    ec2 = server.client(account)
    g = group(ec2, "quota")
    perms = [tcp(p, "10.0.0.0/8") for p in range(1, 60)]
    ec2.authorize_security_group_ingress(GroupId=g["GroupId"], IpPermissions=perms)  # 59 rules
    code, msg = error_of(
        ec2.authorize_security_group_ingress,
        GroupId=g["GroupId"],
        IpPermissions=[tcp(100, "10.0.0.0/8"), tcp(101, "10.0.0.0/8")],
    )
    assert code == "RulesPerSecurityGroupLimitExceeded"
    ec2.authorize_security_group_ingress(
        GroupId=g["GroupId"], IpPermissions=[tcp(100, "10.0.0.0/8")]
    )  # the 60th


def test_tags_on_groups_and_rules(ec2):
    g = group(ec2, "tagged")
    ec2.create_tags(
        Resources=[g["GroupId"]],
        Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "web"}],
    )
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [g["GroupId"]]}])["Tags"]
    assert [(t["Key"], t["Value"], t["ResourceType"]) for t in tags] == [
        ("env", "prod", "security-group"),
        ("team", "web", "security-group"),
    ]
    ec2.delete_tags(Resources=[g["GroupId"]], Tags=[{"Key": "env"}])
    tags = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["env", "team"]}])["Tags"]
    assert [t["Key"] for t in tags] == ["team"]
    assert (
        error_of(
            ec2.create_tags, Resources=["sg-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}]
        )[0]
        == "InvalidGroup.NotFound"
    )
    assert (
        error_of(ec2.create_tags, Resources=["xyz-1"], Tags=[{"Key": "a", "Value": "b"}])[0]
        == "InvalidID"
    )
    assert (
        error_of(ec2.create_tags, Resources=[g["GroupId"]], Tags=[{"Key": "aws:x", "Value": "b"}])[
            0
        ]
        == "InvalidParameterValue"
    )
    many = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
    assert error_of(ec2.create_tags, Resources=[g["GroupId"]], Tags=many)[0] == "TagLimitExceeded"
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [g["GroupId"]]}])["Tags"]
    assert [t["Key"] for t in tags] == ["team"]


def test_vpcs_and_subnets(ec2):
    vpc = ec2.create_vpc(
        CidrBlock="10.20.0.0/16",
        TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "lab"}]}],
    )["Vpc"]
    assert vpc["IsDefault"] is False and vpc["Tags"] == [{"Key": "Name", "Value": "lab"}]
    # every VPC has its own default group, and group names are per VPC
    own = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])[
        "SecurityGroups"
    ]
    assert [g["GroupName"] for g in own] == ["default"]
    ec2.create_security_group(GroupName="web", Description="d")
    ec2.create_security_group(GroupName="web", Description="d", VpcId=vpc["VpcId"])
    sub = ec2.create_subnet(
        VpcId=vpc["VpcId"], CidrBlock="10.20.1.0/24", AvailabilityZone="us-east-1b"
    )["Subnet"]
    assert sub["AvailabilityZone"] == "us-east-1b" and sub["AvailableIpAddressCount"] == 251
    assert (
        error_of(ec2.create_subnet, VpcId=vpc["VpcId"], CidrBlock="10.20.1.128/25")[0]
        == "InvalidSubnet.Conflict"
    )
    assert (
        error_of(ec2.create_subnet, VpcId=vpc["VpcId"], CidrBlock="10.99.0.0/24")[0]
        == "InvalidSubnet.Range"
    )
    assert error_of(ec2.create_vpc, CidrBlock="10.0.0.0/8")[0] == "InvalidVpc.Range"
    assert error_of(ec2.delete_vpc, VpcId=vpc["VpcId"])[0] == "DependencyViolation"
    ec2.delete_subnet(SubnetId=sub["SubnetId"])
    web = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc["VpcId"]]},
            {"Name": "group-name", "Values": ["web"]},
        ]
    )
    ec2.delete_security_group(GroupId=web["SecurityGroups"][0]["GroupId"])
    ec2.delete_vpc(VpcId=vpc["VpcId"])
    assert error_of(ec2.describe_vpcs, VpcIds=[vpc["VpcId"]])[0] == "InvalidVpcID.NotFound"
    # a rule cannot name a group of another VPC of the same account
    other = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    inner = ec2.create_security_group(GroupName="inner", Description="d", VpcId=other)["GroupId"]
    outer = ec2.create_security_group(GroupName="outer", Description="d")["GroupId"]
    code, _ = error_of(
        ec2.authorize_security_group_ingress,
        GroupId=outer,
        IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": inner}]}],
    )
    assert code == "InvalidGroup.NotFound"


def test_regions_zones_attributes(ec2):
    regions = {r["RegionName"] for r in ec2.describe_regions()["Regions"]}
    assert {"us-east-1", "eu-west-1"} <= regions
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [z["ZoneName"] for z in zones] == ["us-east-1a", "us-east-1b", "us-east-1c"]
    attrs = {
        a["AttributeName"]: [v["AttributeValue"] for v in a["AttributeValues"]]
        for a in ec2.describe_account_attributes()["AccountAttributes"]
    }
    assert attrs["supported-platforms"] == ["VPC"]
    assert attrs["default-vpc"][0].startswith("vpc-")


def test_regions_are_separate(server, account):
    east = server.client(account, "us-east-1")
    west = server.client(account, "eu-west-1")
    gid = east.create_security_group(GroupName="east-only", Description="d")["GroupId"]
    assert error_of(west.describe_security_groups, GroupIds=[gid])[0] == "InvalidGroup.NotFound"
    west.create_security_group(GroupName="east-only", Description="same name, other region")
    west_zones = [z["ZoneName"] for z in west.describe_availability_zones()["AvailabilityZones"]]
    assert west_zones[0] == "eu-west-1a"


def test_dry_run(ec2):
    code, _ = error_of(ec2.create_security_group, GroupName="dry", Description="d", DryRun=True)
    assert code == "DryRunOperation"
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
    # a dry run of a request that would fail reports the failure
    assert (
        error_of(ec2.create_security_group, GroupName="default", Description="d", DryRun=True)[0]
        == "InvalidGroup.Reserved"
    )
    # reads take DryRun too: a dry run answers DryRunOperation, DryRun=false answers as usual
    assert error_of(ec2.describe_security_groups, DryRun=True)[0] == "DryRunOperation"
    groups = ec2.describe_security_groups(DryRun=False)["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == ["default"]


def test_security_group_references(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    g = group(ec2, "referenced")
    assert (
        ec2.describe_security_group_references(GroupId=[g["GroupId"]])["SecurityGroupReferenceSet"]
        == []
    )
    assert (
        error_of(ec2.describe_security_group_references, GroupId=["sg-0123456789abcdef0"])[0]
        == "InvalidGroup.NotFound"
    )
    assert vpc
