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
    for token in ("a\x00b", "tab\there", "line\nbreak"):
        rejected(
            server, acct, {**params, "MaxCount": "1", "ClientToken": token},
            "InvalidParameterValue", "clientToken", "ASCII",
        )  # fmt: skip
    ok = raw_request(server, acct, {**params, "MaxCount": "1", "ClientToken": "tok 1~"})
    assert ok.status == 200, ok.body


def test_group_name_with_a_nul_byte(server: Server) -> None:
    # PostgreSQL answered 500 for every lookup of a group by name
    acct = server.account()
    for params in (
        {"Action": "DeleteSecurityGroup", "GroupName": "web\x00"},
        {"Action": "DescribeSecurityGroups", "GroupName.1": "\x00"},
        {
            "Action": "AuthorizeSecurityGroupIngress",
            "GroupName": "default",
            "SourceSecurityGroupName": "a\x00b",
        },
    ):
        rejected(server, acct, params, "InvalidGroup.NotFound", "does not exist")
