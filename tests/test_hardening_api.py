"""Findings of a security review of the API, each through the real server (SQLite and
PostgreSQL): filters that froze the server, bodies read before any check, 500s from odd
input, unsigned parameters applied, and rules the data plane could not decode."""

from __future__ import annotations

import threading
import time

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from stockade.dataplane.agent import _group
from stockade.service import topology
from stockade.store import schema

from conftest import Server


def error_of(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    err = info.value.response["Error"]
    return err["Code"], err["Message"]


# --- 1. filters ----------------------------------------------------------------------------


def test_pathological_wildcards_answer_fast_and_right(ec2):
    """``*a*a*a*a*a*a*b`` against a 255-character description never returned (and held the
    event loop, so every other account waited); now it is a few ``find`` calls."""
    gid = ec2.create_security_group(GroupName="long", Description="a" * 255)["GroupId"]
    cases = {
        "*a*a*a*a*a*a*b": [],
        "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b": [],
        "*a*a*a*a*a*a*a": [gid],
        "a*a?a*a": [gid],
        "?" * 254: [],
        "?" * 255: [gid],
    }
    started = time.monotonic()
    for pattern, expected in cases.items():
        found = ec2.describe_security_groups(
            Filters=[{"Name": "description", "Values": [pattern]}]
        )["SecurityGroups"]
        assert [g["GroupId"] for g in found] == expected, pattern
    assert time.monotonic() - started < 10  # the first case alone never finished before


def test_filter_value_limits(ec2):
    code, msg = error_of(
        ec2.describe_security_groups,
        Filters=[
            {"Name": "group-name", "Values": [f"n{i}" for i in range(150)]},
            {"Name": "description", "Values": [f"d{i}" for i in range(51)]},
        ],
    )
    assert code == "FilterLimitExceeded" and "200" in msg
    code, msg = error_of(
        ec2.describe_security_groups, Filters=[{"Name": "description", "Values": ["*" * 256]}]
    )
    assert code == "InvalidParameterValue" and "255" in msg
    # 200 values are fine
    values = [f"n{i}" for i in range(200)]
    assert ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": values}])


def test_wildcard_filters_do_not_stall_other_accounts(server: Server):
    """One account keeps sending the worst filters it may (200 wildcard values) over 300
    groups; another account's DescribeRegions still answers: the filtering does not hold
    the event loop."""
    heavy = server.account()
    ec2 = server.client(heavy)
    for i in range(300):
        ec2.create_security_group(GroupName=f"g{i}", Description="a" * 255)
    worst = ["*a*a*a*a*a*a*a*b" + "?" * k for k in range(200)]
    stop = threading.Event()
    sent = []

    def hammer() -> None:
        client = server.client(heavy)
        while not stop.is_set():
            client.describe_security_groups(Filters=[{"Name": "description", "Values": worst}])
            sent.append(1)

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        other = server.client(server.account())
        deadline = time.monotonic() + 60
        while not sent and time.monotonic() < deadline:
            other.describe_regions()  # waits for the first heavy request to be answered
        slowest = 0.0
        for _ in range(20):
            started = time.monotonic()
            assert other.describe_regions()["Regions"]
            slowest = max(slowest, time.monotonic() - started)
        assert sent, "the heavy requests never came back"
        assert slowest < 2.0  # it waited for whole heavy requests before (seconds each)
    finally:
        stop.set()
        thread.join(60)


# --- 5. one meaning of a rule -------------------------------------------------------------

PROTOCOLS = st.sampled_from(
    ["tcp", "udp", "icmp", "icmpv6", "-1", "6", "17", "1", "58", "50", "47", "0", "255", "256"]
) | st.integers(-3, 300).map(str)
PORTS = st.none() | st.integers(-3, 70000) | st.sampled_from([-1, 0, 255, 256, 65535, 65536])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(protocol=PROTOCOLS, from_port=PORTS, to_port=PORTS, ipv6=st.booleans())
def test_every_rule_the_api_accepts_decodes_in_the_agent(
    server: Server, ec2, protocol: str, from_port: int | None, to_port: int | None, ipv6: bool
):
    gid = ec2.create_security_group(GroupName=f"h{time.monotonic_ns()}", Description="d")["GroupId"]
    perm: dict = {"IpProtocol": protocol}
    if from_port is not None:
        perm["FromPort"] = from_port
    if to_port is not None:
        perm["ToPort"] = to_port
    if ipv6:
        perm["Ipv6Ranges"] = [{"CidrIpv6": "2001:db8::/32"}]
    else:
        perm["IpRanges"] = [{"CidrIp": "10.0.0.0/8"}]
    try:
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[perm])
    except ClientError as err:
        assert err.response["Error"]["Code"] == "InvalidParameterValue"
        assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        return
    with server.store.read() as conn:
        snap = topology.snapshot(conn)
    (wire,) = [g for g in snap["groups"] if g["id"] == gid]
    decoded = _group(wire)  # raises if the data plane cannot take the rule
    assert len(decoded.ingress) == 1


def test_unicode_and_huge_protocol_numbers_are_refused(ec2):
    gid = ec2.create_security_group(GroupName="proto", Description="d")["GroupId"]
    for proto in ("²", "٦", "6" * 5000, "6 6", "+6"):
        code, msg = error_of(
            ec2.authorize_security_group_ingress,
            GroupId=gid,
            IpPermissions=[
                {
                    "IpProtocol": proto,
                    "FromPort": 1,
                    "ToPort": 2,
                    "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
                }
            ],
        )
        assert code == "InvalidParameterValue" and "IP protocol" in msg, proto
        assert len(msg) < 200
    (got,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert got["IpPermissions"] == []


# --- 6. no default VPC ---------------------------------------------------------------------


def test_no_default_vpc_is_ec2s_error(server: Server):
    acct = server.account()
    ec2 = server.client(acct)
    default_vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]  # the region is set up
    other = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    # the default VPC goes away behind the server's back (a reset, another process)
    with server.store.write() as tx:
        tx.conn.execute(
            delete(schema.regions).where(schema.regions.c.account_id == acct.account_id)
        )
    try:
        code, msg = error_of(ec2.create_security_group, GroupName="x", Description="d")
        assert (code, msg) == ("VPCIdNotSpecified", "No default VPC for this user")
        code, _ = error_of(ec2.describe_security_groups, GroupNames=["default"])
        assert code == "VPCIdNotSpecified"
        attrs = ec2.describe_account_attributes(AttributeNames=["default-vpc"])
        (attr,) = attrs["AccountAttributes"]
        assert attr["AttributeValues"] == [{"AttributeValue": "none"}]
        # naming the VPC still works
        gid = ec2.create_security_group(GroupName="x", Description="d", VpcId=other)["GroupId"]
        assert gid.startswith("sg-")
    finally:
        with server.store.write() as tx:
            tx.conn.execute(
                schema.regions.insert().values(
                    account_id=acct.account_id, region="us-east-1", default_vpc_id=default_vpc
                )
            )
