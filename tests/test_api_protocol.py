"""The wire: authentication, bad input, isolation between accounts, the change log."""

from __future__ import annotations

import datetime as dt
import threading

import httpx
import pytest
from botocore.exceptions import ClientError

from stockade.store.db import agent_token

from conftest import raw_request


def describe(ec2) -> list[str]:
    return sorted(g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"])


def test_unsigned_request_is_refused(server):
    reply = raw_request(server, None, {"Action": "DescribeSecurityGroups"})
    assert (reply.status, reply.code) == (401, "MissingAuthenticationToken")
    assert "<RequestID>" in reply.body


def test_unknown_access_key(server, account):
    from stockade.accounts import Account

    ghost = Account("ghost", "000000000000", "AKIAGHOSTGHOSTGHOST1", "x" * 40)
    reply = raw_request(server, ghost, {"Action": "DescribeSecurityGroups"})
    assert (reply.status, reply.code) == (401, "AuthFailure")


def test_wrong_secret(server, account):
    from stockade.accounts import Account

    wrong = Account("w", account.account_id, account.access_key_id, "y" * 40)
    reply = raw_request(server, wrong, {"Action": "DescribeSecurityGroups"})
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")


def test_expired_request(server, account, monkeypatch):
    import botocore.auth

    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: old)
    reply = raw_request(server, account, {"Action": "DescribeSecurityGroups"})
    assert (reply.status, reply.code) == (400, "RequestExpired")


def test_malformed_authorization_header(server):
    reply = raw_request(
        server, None, "Action=DescribeRegions", headers={"Authorization": "garbage"}
    )
    assert (reply.status, reply.code) == (401, "MissingAuthenticationToken")
    reply = raw_request(
        server, None, "Action=DescribeRegions", headers={"Authorization": "AWS4-HMAC-SHA256 x"}
    )
    assert (reply.status, reply.code) == (400, "IncompleteSignature")


def test_region_outside_the_list(server, account):
    reply = raw_request(server, account, {"Action": "DescribeRegions"}, region="mars-north-1")
    assert reply.status == 403 and reply.code == "SignatureDoesNotMatch"


def test_presigned_get(server, account):
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = server.url + "/?Action=DescribeSecurityGroups&Version=2016-11-15"
    req = AWSRequest(method="GET", url=url)
    SigV4QueryAuth(
        Credentials(account.access_key_id, account.secret_access_key), "ec2", "us-east-1", 60
    ).add_auth(req)
    resp = httpx.get(req.url)
    assert resp.status_code == 200, resp.text
    assert "<groupName>default</groupName>" in resp.text
    assert resp.text.startswith(
        '<?xml version="1.0" encoding="UTF-8"?>\n<DescribeSecurityGroupsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>'
    )


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"Action": "LaunchRocket"}, "InvalidAction"),
        ({"Version": "2016-11-15"}, "MissingAction"),
        ({"Action": "DescribeSecurityGroups", "Bogus": "1"}, "UnknownParameter"),
        (
            {
                "Action": "AuthorizeSecurityGroupIngress",
                "GroupName": "default",
                "IpPermissions.1.FromPort": "abc",
            },
            "InvalidParameterValue",
        ),
        (
            {
                "Action": "AuthorizeSecurityGroupIngress",
                "GroupName": "default",
                "IpPermissions.1.FromPort": "99999999999999999999999",
            },
            "InvalidParameterValue",
        ),
        ({"Action": "CreateSecurityGroup", "GroupName": "x"}, "MissingParameter"),
        (
            {
                "Action": "CreateSecurityGroup",
                "GroupName": "\u2603\u2603",
                "GroupDescription": "snow",
            },
            "InvalidParameterValue",
        ),
        (
            {
                "Action": "CreateSecurityGroup",
                "GroupName": "big",
                "GroupDescription": "d" * 100_000,
            },
            "InvalidParameterValue",
        ),
        ({"Action": "DescribeSecurityGroups", "GroupId.1": "sg-zz"}, "InvalidGroupId.Malformed"),
        ({"Action": "DeleteSecurityGroup"}, "MissingParameter"),
        ({"Action": "DescribeSecurityGroups", "DryRun": "perhaps"}, "InvalidParameterValue"),
        (
            {"Action": "DescribeSecurityGroups", "Filter.1.Name": "group-name"},
            "InvalidParameterValue",
        ),
        (
            {"Action": "CreateSecurityGroup", "GroupName": "\x00", "GroupDescription": "nul"},
            "InvalidParameterValue",
        ),
        (
            {
                "Action": "RunScheduledInstances",
                "ScheduledInstanceId": "x",
                "LaunchSpecification.ImageId": "y",
            },
            "UnsupportedOperation",
        ),
    ],
)
def test_bad_input_gets_ec2_errors_and_changes_nothing(server, account, params, code):
    ec2 = server.client(account)
    before = describe(ec2)
    reply = raw_request(server, account, params)
    assert reply.status == 400, reply.body
    assert reply.code == code, reply.body
    assert reply.message
    assert describe(ec2) == before


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe\x00garbage", b"Action=DescribeRegions&&&==&", b"%%%", b"Action=" + b"A" * 5000],
)
def test_garbage_bodies(server, account, body):
    reply = raw_request(server, account, body)
    assert 400 <= reply.status < 500, reply.body
    assert reply.code


def test_accounts_are_isolated(server):
    alice, bob = server.account(), server.account()
    a, b = server.client(alice), server.client(bob)
    secret = a.create_security_group(GroupName="secret", Description="alice only")["GroupId"]
    assert describe(b) == ["default"]
    for call, kw in [
        (b.describe_security_groups, {"GroupIds": [secret]}),
        (b.delete_security_group, {"GroupId": secret}),
        (
            b.authorize_security_group_ingress,
            {
                "GroupId": secret,
                "IpProtocol": "tcp",
                "FromPort": 1,
                "ToPort": 1,
                "CidrIp": "0.0.0.0/0",
            },
        ),
        (b.create_tags, {"Resources": [secret], "Tags": [{"Key": "k", "Value": "v"}]}),
    ]:
        with pytest.raises(ClientError) as info:
            call(**kw)
        assert info.value.response["Error"]["Code"] == "InvalidGroup.NotFound"
    (alice_default,) = a.describe_security_groups(GroupNames=["default"])["SecurityGroups"]
    (bob_default,) = b.describe_security_groups(GroupNames=["default"])["SecurityGroups"]
    assert alice_default["GroupId"] != bob_default["GroupId"]
    assert a.describe_vpcs()["Vpcs"][0]["VpcId"] != b.describe_vpcs()["Vpcs"][0]["VpcId"]
    assert b.describe_tags()["Tags"] == []


def test_cross_account_group_reference(server):
    alice, bob = server.account(), server.account()
    a, b = server.client(alice), server.client(bob)
    web = a.create_security_group(GroupName="web", Description="alice's web")["GroupId"]
    db = b.create_security_group(GroupName="db", Description="bob's db")["GroupId"]
    # Bob names Alice's group as the source: allowed with her account id, as on EC2
    b.authorize_security_group_ingress(
        GroupId=db,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 3306,
                "ToPort": 3306,
                "UserIdGroupPairs": [{"UserId": alice.account_id, "GroupId": web}],
            }
        ],
    )
    (got,) = b.describe_security_groups(GroupIds=[db])["SecurityGroups"]
    assert got["IpPermissions"][0]["UserIdGroupPairs"] == [
        {"UserId": alice.account_id, "GroupId": web}
    ]
    # without the owner, or with the wrong one, the group is not found
    for pair in ({"GroupId": web}, {"GroupId": web, "UserId": bob.account_id}):
        with pytest.raises(ClientError) as info:
            b.authorize_security_group_ingress(
                GroupId=db, IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [pair]}]
            )
        assert info.value.response["Error"]["Code"] == "InvalidGroup.NotFound"
    # Alice cannot delete her group while Bob's rule names it
    with pytest.raises(ClientError) as info:
        a.delete_security_group(GroupId=web)
    assert info.value.response["Error"]["Code"] == "DependencyViolation"


def test_concurrent_creates_respect_the_quota(server, monkeypatch):
    acct = server.account()
    clients = [server.client(acct) for _ in range(8)]
    base = len(describe(clients[0]))
    results: list[str] = []
    # fill the group quota (2500 by default) would be slow: race on the per-group rule quota instead
    gid = clients[0].create_security_group(GroupName="race", Description="d")["GroupId"]
    for p in range(1, 51):
        clients[0].authorize_security_group_ingress(
            GroupId=gid, IpProtocol="tcp", FromPort=p, ToPort=p, CidrIp="10.0.0.0/8"
        )

    def worker(i: int) -> None:
        for j in range(4):
            port = 1000 + i * 10 + j
            try:
                clients[i].authorize_security_group_ingress(
                    GroupId=gid, IpProtocol="tcp", FromPort=port, ToPort=port, CidrIp="10.0.0.0/8"
                )
                results.append("ok")
            except ClientError as e:
                results.append(e.response["Error"]["Code"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 10
    assert set(results) == {"ok", "RulesPerSecurityGroupLimitExceeded"}
    (got,) = clients[0].describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert sum(len(p["IpRanges"]) for p in got["IpPermissions"]) == 60
    assert base == 1


def test_change_log(server, account):
    ec2 = server.client(account)
    token = agent_token(server.store)
    describe(ec2)  # the account's first request sets up its default VPC
    head = httpx.get(
        server.url + "/_stockade/v1/changes",
        params={"since": 10**12},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["revision"]
    gid = ec2.create_security_group(GroupName="logged", Description="d")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=gid, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="10.0.0.0/8"
    )
    with pytest.raises(ClientError):
        ec2.authorize_security_group_ingress(
            GroupId=gid, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="10.0.0.0/8"
        )
    reply = httpx.get(
        server.url + "/_stockade/v1/changes",
        params={"since": head},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    mine = [
        (c["kind"], c["resource_id"])
        for c in reply["changes"]
        if c["account_id"] == account.account_id
    ]
    assert mine == [("group.created", gid), ("group.rules", gid)]
    revs = [c["revision"] for c in reply["changes"]]
    assert revs == sorted(revs) and reply["revision"] == revs[-1]
    assert httpx.get(server.url + "/_stockade/v1/changes").status_code == 401

    # long-poll: a waiting reader is woken by the next commit
    got: dict = {}

    def wait() -> None:
        got.update(
            httpx.get(
                server.url + "/_stockade/v1/changes",
                params={"since": reply["revision"], "wait": 20},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ).json()
        )

    t = threading.Thread(target=wait)
    t.start()
    ec2.delete_security_group(GroupId=gid)
    t.join()
    assert ("group.deleted", gid) in [(c["kind"], c["resource_id"]) for c in got["changes"]]
