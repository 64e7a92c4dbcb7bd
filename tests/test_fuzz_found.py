"""Bugs the signed fuzzer (tests/test_fuzz.py) found, one focused test each, on SQLite and
PostgreSQL: each request is answered with EC2's 4xx error and changes nothing."""

from __future__ import annotations

from stockade import accounts

from conftest import Server, raw_request
from fuzzing import digest

SEED_WEB_AMI = "ami-fba54092"


def rejected(
    server: Server, acct: accounts.Account, params: dict[str, str], code: str, *words: str
) -> str:
    """Send ``params``; check EC2's error ``code`` (its message holding ``words``) and that
    nothing stored changed. Returns the message."""
    raw_request(server, acct, {"Action": "DescribeRegions"})  # the region made ready
    before = digest(server.store, acct.account_id)
    reply = raw_request(server, acct, params)
    assert (reply.status, reply.code) == (400, code), reply.body
    for word in words:
        assert word in (reply.message or ""), reply.message
    assert digest(server.store, acct.account_id) == before
    return reply.message or ""


def test_client_token_with_a_nul_byte(server: Server) -> None:
    # PostgreSQL answered 500: its text cannot hold NUL
    acct = server.account()
    params = {"Action": "RunInstances", "ImageId": SEED_WEB_AMI, "MinCount": "1"}
    # a NUL no parameter may hold (the codec says so); other control characters are valid
    # text but not a client token
    for token, words in (
        ("a\x00b", ("ClientToken", "U+0000")),
        ("tab\there", ("clientToken", "ASCII")),
        ("line\nbreak", ("clientToken", "ASCII")),
    ):
        rejected(
            server, acct, {**params, "MaxCount": "1", "ClientToken": token},
            "InvalidParameterValue", *words,
        )  # fmt: skip
    ok = raw_request(server, acct, {**params, "MaxCount": "1", "ClientToken": "tok 1~"})
    assert ok.status == 200, ok.body


def test_group_name_with_a_nul_byte(server: Server) -> None:
    # PostgreSQL answered 500 for every lookup of a group by name
    acct = server.account()
    for params, name in (
        ({"Action": "DeleteSecurityGroup", "GroupName": "web\x00"}, "GroupName"),
        ({"Action": "DescribeSecurityGroups", "GroupName.1": "\x00"}, "GroupName"),
        (
            {
                "Action": "AuthorizeSecurityGroupIngress",
                "GroupName": "default",
                "SourceSecurityGroupName": "a\x00b",
            },
            "SourceSecurityGroupName",
        ),
    ):
        rejected(server, acct, params, "InvalidParameterValue", name, "U+0000")


def test_describe_tags_tokens_carry_no_nul(server: Server) -> None:
    # DescribeTags' next token held "resource-id NUL key": handed to another Describe call,
    # PostgreSQL answered 500 (and a server refusing NUL in tokens could not page tags)
    import base64
    import re

    from stockade.service.common import _TOKEN_MAC_BYTES

    acct = server.account()
    ec2 = server.client(acct)
    groups = [
        ec2.create_security_group(GroupName=f"t{i}", Description="d")["GroupId"] for i in range(3)
    ]
    keys = ["Name", "env", "team", "a b", "zz"]
    ec2.create_tags(Resources=groups, Tags=[{"Key": k, "Value": "v"} for k in keys])
    seen, token, tokens = [], None, []
    while True:
        page = ec2.describe_tags(MaxResults=5, **({"NextToken": token} if token else {}))
        seen += [(t["ResourceId"], t["Key"]) for t in page["Tags"]]
        token = page.get("NextToken")
        if not token:
            break
        tokens.append(token)
    assert seen == sorted((g, k) for g in groups for k in keys)
    assert len(tokens) == 2
    for token in tokens:
        # a token is the server's MAC, then where the page starts (signed, not secret)
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_")
        assert b"\x00" not in raw[_TOKEN_MAC_BYTES:], raw
        reply = raw_request(
            server,
            acct,
            {"Action": "DescribeSecurityGroups", "MaxResults": "5", "NextToken": token},
        )
        assert reply.status == 200 or re.fullmatch(r"Invalid\w+", reply.code or ""), reply.body
