"""Findings of a security review of the API, each through the real server (SQLite and
PostgreSQL): filters that froze the server, bodies read before any check, 500s from odd
input, unsigned parameters applied, and rules the data plane could not decode."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from stockade.dataplane.agent import _group
from stockade.service import topology
from stockade.store import schema

from conftest import Server, raw_request


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


def test_one_account_cannot_take_every_worker_thread(server: Server):
    """Reads with filters run on worker threads, at most two of an account's at once: an
    account with 45 heavy ones in flight (more than the pool's 40 threads) does not make
    another account's filtered read wait for them."""
    from concurrent.futures import ThreadPoolExecutor

    heavy = server.account()
    ec2 = server.client(heavy)
    tags = [{"Key": f"k{i}", "Value": "a" * 255} for i in range(50)]
    for i in range(20):
        gid = ec2.create_security_group(GroupName=f"t{i}", Description="d")["GroupId"]
        ec2.create_tags(Resources=[gid], Tags=tags)
    worst = ["*a*a*a*a*a*a*a*b" + "?" * k for k in range(200)]
    form = {"Action": "DescribeSecurityGroups", "Version": "2016-11-15"}
    form |= {"Filter.1.Name": "tag-value"}
    form |= {f"Filter.1.Value.{i + 1}": v for i, v in enumerate(worst)}
    done: list[float] = []

    from urllib.parse import urlencode

    body = urlencode(form).encode()

    def attack() -> None:
        headers = _signed_head(server, heavy, body)
        reply = httpx.post(server.url + "/", content=body, headers=headers, timeout=300)
        assert reply.status_code == 200, reply.text
        done.append(time.monotonic())

    other = server.client(server.account())
    with ThreadPoolExecutor(45) as pool:
        futures = [pool.submit(attack) for _ in range(45)]
        deadline = time.monotonic() + 60
        while not done and time.monotonic() < deadline:
            other.describe_regions()  # until the heavy requests are being answered
        found = other.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["def*"]}]
        )["SecurityGroups"]
        answered = time.monotonic()
        for f in futures:
            f.result()
    assert [g["GroupName"] for g in found] == ["default"]
    # answered while most of the heavy requests were still waiting for their turn
    assert sum(1 for t in done if t < answered) < len(done) / 2, (len(done), answered)


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


# --- 2. bodies: refused before they are read ----------------------------------------------


def _raw_http(server: Server, head: bytes, body_chunks=(), timeout: float = 20) -> tuple[int, str]:
    """Send ``head`` and then ``body_chunks`` (an iterable, stopped as soon as the server
    answers or closes) on a plain socket; the status and the whole reply."""
    import socket
    import urllib.parse

    url = urllib.parse.urlsplit(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
    try:
        sock.sendall(head)
        sock.setblocking(False)
        reply = b""
        deadline = time.monotonic() + timeout
        for chunk in body_chunks:
            try:
                reply += sock.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
            if reply or time.monotonic() > deadline:
                break  # answered before the body was all sent
            try:
                sock.setblocking(True)
                sock.sendall(chunk)
                sock.setblocking(False)
            except OSError:
                break  # the server closed its side
        sock.settimeout(timeout)
        while True:
            try:
                data = sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not data:
                break
            reply += data
    finally:
        sock.close()
    text = reply.decode("latin-1")
    assert text.startswith("HTTP/1.1 "), text[:200]
    return int(text.split()[1]), text


def _signed_head(server: Server, acct, body: bytes, **extra: str) -> dict[str, str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **extra},
    )
    SigV4Auth(Credentials(acct.access_key_id, acct.secret_access_key), "ec2", "us-east-1").add_auth(
        req
    )
    return dict(req.prepare().headers)


def _head(lines: dict[str, str], path: str = "/") -> bytes:
    text = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    text += "".join(f"{k}: {v}\r\n" for k, v in lines.items() if k.lower() != "host")
    return (text + "\r\n").encode("latin-1")


def test_an_oversized_content_length_is_refused_unread(server: Server, account):
    """256 MiB announced: refused at once (the old server buffered all of it first)."""
    headers = _signed_head(server, account, b"Action=DescribeRegions")
    headers["Content-Length"] = str(256 * 1024 * 1024)
    status, reply = _raw_http(server, _head(headers), [b"x" * 65536] * 64)
    assert status == 413 and "<Code>RequestEntityTooLarge</Code>" in reply
    assert "connection: close" in reply.lower()


def test_a_request_without_credentials_is_refused_before_its_body(server: Server):
    head = _head(
        {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(10**6)}
    )
    status, reply = _raw_http(server, head, [b"a" * 65536] * 16)  # 1 MiB, never finished
    assert status == 401 and "<Code>MissingAuthenticationToken</Code>" in reply


def test_a_chunked_body_is_cut_off_at_the_cap(server: Server, account):
    """No Content-Length: the body is read only up to 1 MiB, then refused, while the
    client is still sending (an endless body used to be read to the end of memory)."""
    headers = _signed_head(server, account, b"Action=DescribeRegions")
    headers.pop("Content-Length", None)
    headers["Transfer-Encoding"] = "chunked"
    piece = b"a" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    status, reply = _raw_http(server, _head(headers), [chunk] * 1024)  # 64 MiB, sent slowly
    assert status == 413 and "<Code>RequestEntityTooLarge</Code>" in reply


def test_a_body_under_the_cap_still_works(server: Server, account):
    tags = "&".join(f"Tag.{i}.Key=k{i}&Tag.{i}.Value={'v' * 200}" for i in range(1, 51))
    gid = server.client(account).create_security_group(GroupName="big", Description="d")["GroupId"]
    reply = raw_request(
        server, account, f"Action=CreateTags&Version=2016-11-15&ResourceId.1={gid}&{tags}"
    )
    assert reply.status == 200, reply.body


def test_agent_endpoints_cap_their_bodies(server: Server):
    """The agent-facing endpoints too: an announced 256 MiB is refused unread, a chunked
    body is cut off at the cap (with the agent token; without it nothing is read)."""
    from stockade.store.db import agent_token

    auth = {"Authorization": f"Bearer {agent_token(server.store)}"}
    path = "/_stockade/v1/hosts/h-cap/claim"
    head = _head({**auth, "Content-Length": str(256 * 1024 * 1024)}, path)
    status, reply = _raw_http(server, head, [b"x" * 65536] * 64)
    assert status == 413 and "RequestEntityTooLarge" in reply, reply[:300]
    piece = b"a" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    head = _head({**auth, "Transfer-Encoding": "chunked"}, path)
    status, reply = _raw_http(server, head, [chunk] * 1024)  # 64 MiB, sent slowly
    assert status == 413 and "RequestEntityTooLarge" in reply, reply[:300]


def test_a_reset_without_credentials_is_refused_before_its_body(server: Server):
    head = _head({"Content-Length": str(10**6)}, "/_stockade/v1/reset")
    status, reply = _raw_http(server, head, [b"a" * 65536] * 16)  # 1 MiB, never finished
    assert status == 401 and "AuthFailure" in reply, reply[:300]


# --- 3. 500s from input --------------------------------------------------------------------

PAGINATED = [
    ("describe_security_groups", {}),
    ("describe_security_group_rules", {}),
    ("describe_instances", {}),
    ("describe_instance_status", {}),
    ("describe_vpcs", {}),
    ("describe_subnets", {}),
    ("describe_network_interfaces", {}),
    ("describe_tags", {}),
]


def test_next_tokens_are_tamper_proof(server: Server, ec2):
    import base64
    import json

    for i in range(7):
        ec2.create_security_group(GroupName=f"p{i}", Description="d")
    page = ec2.describe_security_groups(MaxResults=5)
    token = page["NextToken"]
    rest = ec2.describe_security_groups(MaxResults=5, NextToken=token)["SecurityGroups"]
    assert {g["GroupId"] for g in rest}.isdisjoint(g["GroupId"] for g in page["SecurityGroups"])
    nested = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode()
    forged = base64.urlsafe_b64encode(json.dumps({"after": "sg-0"}).encode()).decode()
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (nested, forged, flipped, token + "x", "", "%%%", "a" * 5000):
        for method, kwargs in PAGINATED:
            code, msg = error_of(getattr(ec2, method), MaxResults=5, NextToken=bad, **kwargs)
            assert code == "InvalidPaginationToken", (method, bad[:20], code, msg)
            assert len(msg) < 200
    # a token of one listing is not one of another
    code, _ = error_of(ec2.describe_vpcs, MaxResults=5, NextToken=token)
    assert code == "InvalidPaginationToken"


def test_next_tokens_are_signed_with_the_databases_key(server: Server, ec2):
    """The key is in the database's settings, so every process serving it agrees."""
    from stockade.service import common

    for i in range(6):
        ec2.create_security_group(GroupName=f"k{i}", Description="d")
    page = ec2.describe_security_groups(MaxResults=5)
    saved = common._token_key[0]
    try:
        common.set_token_key(bytes.fromhex(server.store.setting("next_token_key", str)))
        after = common.decode_token(page["NextToken"], "group_id")
    finally:
        common.set_token_key(saved)
    assert after == page["SecurityGroups"][-1]["GroupId"]


def test_nul_and_other_non_xml_characters_are_refused(server: Server, ec2):
    gid = ec2.create_security_group(GroupName="nul", Description="d")["GroupId"]
    cases = [
        (
            ec2.create_tags,
            {"Resources": [gid], "Tags": [{"Key": "k", "Value": "a\x00b"}]},
            "Tag.1.Value",
        ),
        (
            ec2.create_tags,
            {"Resources": [gid], "Tags": [{"Key": "k\x00", "Value": "v"}]},
            "Tag.1.Key",
        ),
        (
            ec2.describe_security_groups,
            {"Filters": [{"Name": "tag:k", "Values": ["\x00"]}]},
            "Filter.1.Value.1",
        ),
        (ec2.describe_security_groups, {"MaxResults": 5, "NextToken": "a\x00"}, "NextToken"),
        (ec2.describe_security_groups, {"GroupIds": ["sg-\x00"]}, "GroupId.1"),
        (ec2.create_security_group, {"GroupName": "a\x01", "Description": "d"}, "GroupName"),
    ]
    for call, kwargs, param in cases:
        code, msg = error_of(call, **kwargs)
        assert code == "InvalidParameterValue" and param in msg, (param, code, msg)
    (got,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert "Tags" not in got


def test_a_nul_in_credentials_is_an_auth_failure(server: Server, account):
    query = (
        "Action=DescribeRegions&X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential=AK%00IA%2F{time.strftime('%Y%m%d', time.gmtime())}"
        "%2Fus-east-1%2Fec2%2Faws4_request"
        f"&X-Amz-Date={time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        "&X-Amz-SignedHeaders=host&X-Amz-Signature=00"
    )
    resp = httpx.get(f"{server.url}/?{query}")
    assert resp.status_code == 401 and "<Code>AuthFailure</Code>" in resp.text


# --- 4. only signed parameters are applied --------------------------------------------------


def _presigned_post(server: Server, acct, params: dict[str, str]) -> str:
    from urllib.parse import urlencode

    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    # botocore signs UNSIGNED-PAYLOAD (as presigned URLs for https do) only for https: the
    # scheme is no part of what is signed, so the URL is signed as https and sent as http
    https = server.url.replace("http://", "https://")
    req = AWSRequest(method="POST", url=f"{https}/?{urlencode(params)}")
    req.context["payload_signing_enabled"] = False
    creds = Credentials(acct.access_key_id, acct.secret_access_key)
    SigV4QueryAuth(creds, "ec2", "us-east-1", expires=60).add_auth(req)
    return req.prepare().url.replace("https://", "http://")


def test_an_unsigned_body_is_never_applied(server: Server, account, ec2):
    gid = ec2.create_security_group(GroupName="smuggle", Description="d")["GroupId"]
    url = _presigned_post(
        server,
        account,
        {"Action": "CreateTags", "Version": "2016-11-15", "ResourceId.1": gid, "Tag.1.Key": "a"},
    )
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    resp = httpx.post(url, content=b"Tag.2.Key=smuggled&Tag.2.Value=x", headers=form)
    assert resp.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in resp.text
    assert "UNSIGNED-PAYLOAD" in resp.text
    (got,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert "Tags" not in got  # nothing at all was applied
    # the header form's UNSIGNED-PAYLOAD is the same
    body = b"Action=CreateTags&Version=2016-11-15&ResourceId.1=" + gid.encode() + b"&Tag.1.Key=b"
    headers = _signed_head(server, account, body, **{"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    resp = httpx.post(server.url + "/", content=body, headers=headers)
    assert resp.status_code == 403 and "UNSIGNED-PAYLOAD" in resp.text
    (got,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert "Tags" not in got
    # what the presigned URL signs alone is applied
    assert httpx.post(url).status_code == 200
    (got,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert got["Tags"] == [{"Key": "a", "Value": ""}]


def test_a_session_token_with_long_term_keys_is_refused(server: Server, account):
    import boto3
    from botocore.config import Config as BotoConfig

    client = boto3.client(
        "ec2",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=account.access_key_id,
        aws_secret_access_key=account.secret_access_key,
        aws_session_token="FwoGZXIvYXdzEBYaDHoken",
        config=BotoConfig(retries={"max_attempts": 1}),
    )
    code, msg = error_of(client.describe_regions)
    assert (code, msg) == ("AuthFailure", "The security token included in the request is invalid.")
    code, _ = error_of(client.create_security_group, GroupName="tok", Description="d")
    assert code == "AuthFailure"
    names = [
        g["GroupName"] for g in server.client(account).describe_security_groups()["SecurityGroups"]
    ]
    assert "tok" not in names
