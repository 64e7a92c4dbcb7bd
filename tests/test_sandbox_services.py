"""The sandbox's DNS resolver and instance metadata service, served on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from stockade.sandbox.dns import (
    DnsServer,
    Resolver,
    ip_from_name,
    private_dns_name,
    public_dns_name,
    split_horizon,
)
from stockade.sandbox.metadata import MetadataServer

DOMAIN = "stockade.test"
PRIVATE_IP, PUBLIC_IP, FREE_PUBLIC_IP = "172.31.0.4", "198.18.0.5", "198.18.0.99"
PUBLIC_NAME = public_dns_name(PUBLIC_IP, "us-east-1", DOMAIN)
PRIVATE_NAME = private_dns_name(PRIVATE_IP, "us-east-1")
ASSIGNED = {PUBLIC_IP: PRIVATE_IP}

# --- EC2 names ---------------------------------------------------------------------------------


def test_private_dns_name() -> None:
    assert private_dns_name("172.31.0.4", "us-east-1") == "ip-172-31-0-4.ec2.internal"
    assert private_dns_name("10.0.1.20", "eu-west-1") == "ip-10-0-1-20.eu-west-1.compute.internal"
    with pytest.raises(ValueError):
        private_dns_name("172.31.0.256", "us-east-1")


def test_public_dns_name() -> None:
    assert (
        public_dns_name("198.18.0.5", "us-east-1", "amazonaws.com")
        == "ec2-198-18-0-5.compute-1.amazonaws.com"
    )
    assert (
        public_dns_name("198.18.0.5", "ap-southeast-2", "stockade.test")
        == "ec2-198-18-0-5.ap-southeast-2.compute.stockade.test"
    )


@pytest.mark.parametrize(
    ("name", "ip"),
    [
        ("ip-172-31-0-4.ec2.internal", "172.31.0.4"),
        ("ip-10-0-1-20.eu-west-1.compute.internal", "10.0.1.20"),
        ("ec2-198-18-0-5.compute-1.amazonaws.com", "198.18.0.5"),
        ("EC2-198-18-0-5.eu-west-1.compute.stockade.test.", "198.18.0.5"),
        ("ip-1-2-3-4", "1.2.3.4"),
        ("ip-1-2-3-256.ec2.internal", None),
        ("ip-01-2-3-4.ec2.internal", None),
        ("ip-1-2-3.ec2.internal", None),
        ("ip-1-2-3-4-5.ec2.internal", None),
        ("web-1-2-3-4.ec2.internal", None),
        ("www.example.com", None),
        ("", None),
    ],
)
def test_ip_from_name(name: str, ip: str | None) -> None:
    assert ip_from_name(name) == ip


def _resolver(inside: bool) -> Resolver:
    return split_horizon(lambda _client: inside, ASSIGNED.get, DOMAIN)


def test_split_horizon_resolver() -> None:
    inside, outside = _resolver(True), _resolver(False)
    assert inside(PUBLIC_NAME, "172.31.0.9") == [PRIVATE_IP]
    assert outside(PUBLIC_NAME, "203.0.113.1") == [PUBLIC_IP]
    assert inside(PRIVATE_NAME, "172.31.0.9") == [PRIVATE_IP]
    assert outside(PRIVATE_NAME, "203.0.113.1") is None
    eu = public_dns_name(PUBLIC_IP, "eu-west-1", DOMAIN)
    assert inside(eu, "x") == [PRIVATE_IP] and outside(eu, "x") == [PUBLIC_IP]
    for resolve in (inside, outside):
        assert resolve(public_dns_name(FREE_PUBLIC_IP, "us-east-1", DOMAIN), "x") is None
        assert resolve("www.example.com", "x") is None
        assert resolve(f"ec2-198-18-0-5.compute-1.{DOMAIN}.evil", "x") is None
        assert resolve("ec2-198-18-0-5.compute-1.example.org", "x") is None
        # non-canonical spellings of a real name: us-east-1 says compute-1; no leading zeros
        assert resolve(f"ec2-198-18-0-5.us-east-1.compute.{DOMAIN}", "x") is None
        assert resolve(f"ec2-198-18-0-05.compute-1.{DOMAIN}", "x") is None
        assert resolve("ip-172-31-0-4.us-east-1.compute.internal", "x") is None


def test_split_horizon_asks_inside_about_the_client() -> None:
    seen: list[str] = []

    def inside(client: str) -> bool:
        seen.append(client)
        return client.startswith("172.31.")

    resolve = split_horizon(inside, ASSIGNED.get, DOMAIN)
    assert resolve(PUBLIC_NAME, "172.31.7.7") == [PRIVATE_IP]
    assert resolve(PUBLIC_NAME, "100.127.0.9") == [PUBLIC_IP]
    assert seen == ["172.31.7.7", "100.127.0.9"]


# --- the DNS server ----------------------------------------------------------------------------


@pytest.fixture
def dns_pair() -> Iterator[tuple[DnsServer, DnsServer]]:
    """Two servers on one region: every client is inside for the first, outside for the second."""
    inside = DnsServer(_resolver(True)).start()
    outside = DnsServer(_resolver(False)).start()
    yield inside, outside
    inside.close()
    outside.close()


def _ask(server: DnsServer, name: str, qtype: str = "A", tcp: bool = False) -> DNSRecord:
    host, port = server.address
    query = DNSRecord.question(name, qtype)
    reply = DNSRecord.parse(query.send(host, port, tcp=tcp, timeout=3))
    assert reply.header.id == query.header.id
    return reply


def _a(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def test_dns_split_horizon(dns_pair: tuple[DnsServer, DnsServer]) -> None:
    inside, outside = dns_pair
    reply = _ask(inside, PUBLIC_NAME)
    assert reply.header.rcode == RCODE.NOERROR
    assert _a(reply) == [PRIVATE_IP]
    assert _a(_ask(outside, PUBLIC_NAME)) == [PUBLIC_IP]


def test_dns_reply_flags_question_and_ttl(dns_pair: tuple[DnsServer, DnsServer]) -> None:
    reply = _ask(dns_pair[0], PUBLIC_NAME.upper())
    assert reply.header.qr == 1 and reply.header.aa == 1
    assert len(reply.questions) == 1
    assert str(reply.q.qname) == PUBLIC_NAME.upper() + "."
    assert reply.q.qtype == QTYPE.A
    assert [rr.ttl for rr in reply.rr] == [5]
    ttl_server = DnsServer(_resolver(True), ttl=60).start()
    try:
        assert [rr.ttl for rr in _ask(ttl_server, PUBLIC_NAME).rr] == [60]
    finally:
        ttl_server.close()


def test_dns_private_name_inside_only(dns_pair: tuple[DnsServer, DnsServer]) -> None:
    inside, outside = dns_pair
    assert _a(_ask(inside, PRIVATE_NAME)) == [PRIVATE_IP]
    assert _ask(outside, PRIVATE_NAME).header.rcode == RCODE.NXDOMAIN


def test_dns_nxdomain(dns_pair: tuple[DnsServer, DnsServer]) -> None:
    unassigned = public_dns_name(FREE_PUBLIC_IP, "us-east-1", DOMAIN)
    for server in dns_pair:
        for name in ("www.example.com", unassigned, f"nothing.{DOMAIN}"):
            reply = _ask(server, name)
            assert reply.header.rcode == RCODE.NXDOMAIN, name
            assert reply.rr == []
            assert reply.header.aa == 1


def test_dns_other_types_are_nodata(dns_pair: tuple[DnsServer, DnsServer]) -> None:
    for qtype in ("AAAA", "MX", "TXT"):
        reply = _ask(dns_pair[0], PUBLIC_NAME, qtype)
        assert reply.header.rcode == RCODE.NOERROR, qtype
        assert reply.rr == []
        assert reply.q.qtype == getattr(QTYPE, qtype)
    assert _ask(dns_pair[0], "www.example.com", "AAAA").header.rcode == RCODE.NXDOMAIN


def test_dns_tcp(dns_pair: tuple[DnsServer, DnsServer]) -> None:
    inside, outside = dns_pair
    assert _a(_ask(inside, PUBLIC_NAME, tcp=True)) == [PRIVATE_IP]
    assert _a(_ask(outside, PUBLIC_NAME, tcp=True)) == [PUBLIC_IP]
    assert _ask(outside, PRIVATE_NAME, tcp=True).header.rcode == RCODE.NXDOMAIN


def test_dns_tcp_several_queries_on_one_connection(dns_pair: tuple[DnsServer, DnsServer]) -> None:
    with socket.create_connection(dns_pair[0].address, timeout=3) as conn:
        for qtype in ("A", "AAAA", "A"):
            packet = DNSRecord.question(PUBLIC_NAME, qtype).pack()
            conn.sendall(struct.pack("!H", len(packet)) + packet)
            (length,) = struct.unpack("!H", _recv_exact(conn, 2))
            reply = DNSRecord.parse(_recv_exact(conn, length))
            assert _a(reply) == ([PRIVATE_IP] if qtype == "A" else [])


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        assert chunk, "connection closed early"
        buf += chunk
    return buf


GARBAGE = [
    b"",
    b"\x00",
    b"\xff" * 11,
    bytes(range(256)),
    b"\x12\x34\x01\x00\x00\x05\x00\x00\x00\x00\x00\x00\x03www",  # 5 questions, truncated
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # pointer loop
    DNSRecord.question(PUBLIC_NAME).reply().pack(),  # a response, not a query
]


def test_dns_ignores_garbage_and_keeps_answering(dns_pair: tuple[DnsServer, DnsServer]) -> None:
    server = dns_pair[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for junk in GARBAGE:
            sock.sendto(junk, server.address)
        query = DNSRecord.question(PUBLIC_NAME)
        sock.sendto(query.pack(), server.address)
        sock.settimeout(3)
        # one thread answers in order: had any junk been answered, that reply would come first
        reply = DNSRecord.parse(sock.recvfrom(4096)[0])
        assert reply.header.id == query.header.id and _a(reply) == [PRIVATE_IP]
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recvfrom(4096)
    # a garbage frame over TCP is skipped too; the connection still answers the next query
    with socket.create_connection(server.address, timeout=3) as conn:
        junk = b"\x00\x01\x02"
        packet = DNSRecord.question(PUBLIC_NAME).pack()
        conn.sendall(struct.pack("!H", len(junk)) + junk + struct.pack("!H", len(packet)) + packet)
        (length,) = struct.unpack("!H", _recv_exact(conn, 2))
        assert _a(DNSRecord.parse(_recv_exact(conn, length))) == [PRIVATE_IP]
    assert _a(_ask(server, PUBLIC_NAME)) == [PRIVATE_IP]


def test_dns_resolver_failure_is_servfail() -> None:
    calls: list[str] = []

    def broken(qname: str, client: str) -> list[str] | None:
        calls.append(qname)
        if qname == "boom.test":
            raise RuntimeError("resolver bug")
        return ["not an address"] if qname == "bad.test" else ["192.0.2.1"]

    server = DnsServer(broken).start()
    try:
        assert _ask(server, "boom.test").header.rcode == RCODE.SERVFAIL
        assert _ask(server, "bad.test").header.rcode == RCODE.SERVFAIL
        assert _a(_ask(server, "fine.test")) == ["192.0.2.1"]
        assert calls == ["boom.test", "bad.test", "fine.test"]
    finally:
        server.close()


def test_dns_passes_the_client_address() -> None:
    """One server, two clients: 127.0.0.1 is inside, 127.0.0.2 is not."""
    resolver = split_horizon(lambda client: client == "127.0.0.1", ASSIGNED.get, DOMAIN)
    server = DnsServer(resolver).start()
    try:
        answers = {}
        for client in ("127.0.0.1", "127.0.0.2"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((client, 0))
                sock.settimeout(3)
                sock.sendto(DNSRecord.question(PUBLIC_NAME).pack(), server.address)
                answers[client] = _a(DNSRecord.parse(sock.recvfrom(4096)[0]))
        assert answers == {"127.0.0.1": [PRIVATE_IP], "127.0.0.2": [PUBLIC_IP]}
    finally:
        server.close()


def test_dns_serves_given_sockets_and_closes_them() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", udp.getsockname()[1]))
    server = DnsServer(_resolver(False), udp_sock=udp, tcp_sock=tcp).start()
    assert server.address == udp.getsockname()
    assert _a(_ask(server, PUBLIC_NAME)) == [PUBLIC_IP]
    assert _a(_ask(server, PUBLIC_NAME, tcp=True)) == [PUBLIC_IP]
    server.close()
    server.close()  # idempotent
    assert udp.fileno() == -1 and tcp.fileno() == -1


def test_dns_close_stops_answering() -> None:
    server = DnsServer(_resolver(True)).start()
    address = server.address
    assert _a(_ask(server, PUBLIC_NAME)) == [PRIVATE_IP]
    server.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(address)  # the port is free again: UDP only binds if nobody holds it


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")
def test_dig_short(dns_pair: tuple[DnsServer, DnsServer]) -> None:
    inside, outside = dns_pair

    def dig(server: DnsServer, *args: str) -> str:
        host, port = server.address
        cmd = ["dig", f"@{host}", "-p", str(port), "+short", "+time=2", "+tries=1", *args]
        result = _run(cmd)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert dig(inside, PUBLIC_NAME) == PRIVATE_IP
    assert dig(outside, PUBLIC_NAME) == PUBLIC_IP
    assert dig(inside, "+tcp", PUBLIC_NAME) == PRIVATE_IP
    assert dig(inside, "+noedns", PRIVATE_NAME) == PRIVATE_IP
    assert dig(outside, PRIVATE_NAME) == ""
    assert dig(inside, PUBLIC_NAME, "AAAA") == ""
    host, port = outside.address
    full = _run(["dig", f"@{host}", "-p", str(port), "+time=2", "+tries=1", "www.example.com"])
    assert "status: NXDOMAIN" in full.stdout and " aa" in full.stdout


@pytest.mark.skipif(shutil.which("host") is None, reason="host is not installed")
def test_host(dns_pair: tuple[DnsServer, DnsServer]) -> None:
    inside, outside = dns_pair
    for server, ip in ((inside, PRIVATE_IP), (outside, PUBLIC_IP)):
        host, port = server.address
        result = _run(["host", "-W", "2", "-p", str(port), PUBLIC_NAME, host])
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{PUBLIC_NAME} has address {ip}" in result.stdout
        assert "IPv6" not in result.stdout
    host, port = outside.address
    result = _run(["host", "-W", "2", "-p", str(port), PRIVATE_NAME, host])
    assert result.returncode != 0 and "NXDOMAIN" in result.stdout


# --- the metadata service ----------------------------------------------------------------------

INSTANCE: dict[str, Any] = {
    "instance-id": "i-0123456789abcdef0",
    "ami-id": "ami-0abcdef1234567890",
    "instance-type": "t3.micro",
    "local-ipv4": PRIVATE_IP,
    "local-hostname": PRIVATE_NAME,
    "public-ipv4": PUBLIC_IP,
    "public-hostname": PUBLIC_NAME,
    "security-groups": ["default", "web"],
    "placement/availability-zone": "us-east-1a",
    "placement/region": "us-east-1",
    "mac": "0e:49:61:0f:c3:11",
    "reservation-id": "r-0fedcba9876543210",
    "account-id": "123456789012",
    "user-data": "#!/bin/sh\necho hello\n",
}


@contextlib.contextmanager
def _metadata(lookup: Callable[[str], dict[str, Any] | None]) -> Iterator[httpx.Client]:
    server = MetadataServer(lookup).start()
    host, port = server.address
    try:
        with httpx.Client(base_url=f"http://{host}:{port}", trust_env=False, timeout=5) as client:
            yield client
    finally:
        server.close()


@pytest.fixture
def imds() -> Iterator[httpx.Client]:
    with _metadata(lambda ip: INSTANCE if ip == "127.0.0.1" else None) as client:
        yield client


def test_meta_data_listing(imds: httpx.Client) -> None:
    r = imds.get("/latest/meta-data/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain"
    assert r.text.split("\n") == [
        "ami-id",
        "hostname",
        "instance-id",
        "instance-type",
        "local-hostname",
        "local-ipv4",
        "mac",
        "network/",
        "placement/",
        "public-hostname",
        "public-ipv4",
        "reservation-id",
        "security-groups",
    ]
    assert imds.get("/latest/meta-data").text == r.text
    assert imds.get("/latest/meta-data/placement/").text == "availability-zone\nregion"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("ami-id", "ami-0abcdef1234567890"),
        ("hostname", PRIVATE_NAME),
        ("instance-id", "i-0123456789abcdef0"),
        ("instance-type", "t3.micro"),
        ("local-hostname", PRIVATE_NAME),
        ("local-ipv4", PRIVATE_IP),
        ("mac", "0e:49:61:0f:c3:11"),
        ("placement/availability-zone", "us-east-1a"),
        ("placement/region", "us-east-1"),
        ("public-hostname", PUBLIC_NAME),
        ("public-ipv4", PUBLIC_IP),
        ("reservation-id", "r-0fedcba9876543210"),
        ("security-groups", "default\nweb"),
        ("network/interfaces/macs/0e:49:61:0f:c3:11/local-ipv4s", PRIVATE_IP),
        ("network/interfaces/macs/0e:49:61:0f:c3:11/public-ipv4s", PUBLIC_IP),
        ("network/interfaces/macs/0e:49:61:0f:c3:11/security-groups", "default\nweb"),
    ],
)
def test_meta_data_values(imds: httpx.Client, path: str, value: str) -> None:
    r = imds.get(f"/latest/meta-data/{path}")
    assert r.status_code == 200
    assert r.text == value


def test_meta_data_network_tree(imds: httpx.Client) -> None:
    assert imds.get("/latest/meta-data/network/").text == "interfaces/"
    assert imds.get("/latest/meta-data/network/interfaces/macs/").text == "0e:49:61:0f:c3:11/"


def test_top_level_listings(imds: httpx.Client) -> None:
    assert imds.get("/latest/").text == "dynamic/\nmeta-data/\nuser-data"
    assert "latest" in imds.get("/").text.split("\n")
    assert imds.get("/2009-04-04/meta-data/instance-id").text == "i-0123456789abcdef0"
    assert imds.get("/latest/dynamic/").text == "instance-identity/"
    assert imds.get("/latest/dynamic/instance-identity/").text == "document"


@pytest.mark.parametrize("absent", [None, "", "dropped"])
def test_public_keys_omitted_without_public_ip(absent: str | None) -> None:
    private_only = {k: v for k, v in INSTANCE.items() if not k.startswith("public-")}
    if absent != "dropped":
        private_only |= {"public-ipv4": absent, "public-hostname": absent}
    with _metadata(lambda _ip: private_only) as client:
        listing = client.get("/latest/meta-data/").text.split("\n")
        assert "local-ipv4" in listing
        assert "public-ipv4" not in listing and "public-hostname" not in listing
        assert client.get("/latest/meta-data/public-ipv4").status_code == 404
        assert client.get("/latest/meta-data/public-hostname").status_code == 404


def test_user_data(imds: httpx.Client) -> None:
    r = imds.get("/latest/user-data")
    assert r.status_code == 200
    assert r.content == b"#!/bin/sh\necho hello\n"
    raw = bytes(range(256))
    with _metadata(lambda _ip: {**INSTANCE, "user-data": raw}) as client:
        assert client.get("/latest/user-data").content == raw


def test_no_user_data_is_404() -> None:
    with _metadata(lambda _ip: {**INSTANCE, "user-data": None}) as client:
        assert client.get("/latest/user-data").status_code == 404
        assert "user-data" not in client.get("/latest/").text
        assert client.get("/latest/meta-data/instance-id").status_code == 200


def test_identity_document(imds: httpx.Client) -> None:
    r = imds.get("/latest/dynamic/instance-identity/document")
    assert r.status_code == 200
    doc = json.loads(r.text)
    assert doc["instanceId"] == "i-0123456789abcdef0"
    assert doc["imageId"] == "ami-0abcdef1234567890"
    assert doc["instanceType"] == "t3.micro"
    assert doc["privateIp"] == PRIVATE_IP
    assert doc["region"] == "us-east-1"
    assert doc["availabilityZone"] == "us-east-1a"
    assert doc["accountId"] == "123456789012"
    no_account = {k: v for k, v in INSTANCE.items() if k != "account-id"}
    with _metadata(lambda _ip: no_account) as client:
        doc = client.get("/latest/dynamic/instance-identity/document").json()
        assert "accountId" not in doc and doc["instanceId"] == "i-0123456789abcdef0"


def _token(client: httpx.Client, ttl: str = "21600", **headers: str) -> httpx.Response:
    return client.put(
        "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": ttl, **headers}
    )


def test_imdsv2_token_flow(imds: httpx.Client) -> None:
    r = _token(imds, "300")
    assert r.status_code == 200
    assert r.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "300"
    token = r.text
    assert len(token) >= 40
    for path in ("/latest/meta-data/instance-id", "/latest/user-data"):
        authed = imds.get(path, headers={"X-aws-ec2-metadata-token": token})
        assert authed.status_code == 200
        assert authed.content == imds.get(path).content  # IMDSv1: no token is fine too
    assert _token(imds).text != token


def test_bad_tokens_are_401(imds: httpx.Client) -> None:
    good = _token(imds).text
    other = MetadataServer(lambda _ip: INSTANCE).start()
    try:
        host, port = other.address
        foreign = httpx.put(
            f"http://{host}:{port}/latest/api/token",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
            trust_env=False,
        ).text
    finally:
        other.close()
    for bad in ("", "nope", good[:-4], good + "AAAA", foreign, good.replace("A", "B")):
        if bad == good:
            continue
        r = imds.get("/latest/meta-data/", headers={"X-aws-ec2-metadata-token": bad})
        assert r.status_code == 401, bad
        assert "401 - Unauthorized" in r.text
    assert imds.get("/latest/meta-data/", headers={"X-aws-ec2-metadata-token": good}).is_success


def test_token_is_bound_to_the_client_address() -> None:
    lookup = {"127.0.0.1": INSTANCE, "127.0.0.2": {**INSTANCE, "instance-id": "i-2"}}.get
    server = MetadataServer(lookup).start()
    host, port = server.address
    base = f"http://{host}:{port}"
    other = httpx.Client(
        base_url=base, trust_env=False, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    )
    try:
        with httpx.Client(base_url=base, trust_env=False) as mine, other:
            assert other.get("/latest/meta-data/instance-id").text == "i-2"
            token = _token(mine).text
            headers = {"X-aws-ec2-metadata-token": token}
            assert mine.get("/latest/meta-data/instance-id", headers=headers).status_code == 200
            assert other.get("/latest/meta-data/instance-id", headers=headers).status_code == 401
    finally:
        server.close()


def test_token_expires(imds: httpx.Client) -> None:
    token = _token(imds, "1").text
    headers = {"X-aws-ec2-metadata-token": token}
    assert imds.get("/latest/meta-data/ami-id", headers=headers).status_code == 200
    time.sleep(1.2)
    assert imds.get("/latest/meta-data/ami-id", headers=headers).status_code == 401


def test_token_put_needs_a_sane_ttl(imds: httpx.Client) -> None:
    assert imds.put("/latest/api/token").status_code == 400
    for ttl in ("0", "21601", "-5", "soon", "1_0", "", "6e1"):
        assert _token(imds, ttl).status_code == 400, ttl
    assert _token(imds, "21600").status_code == 200
    assert _token(imds, "60", **{"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    assert imds.get("/latest/api/token").status_code == 405


def test_unknown_client_is_404() -> None:
    with _metadata(lambda _ip: None) as client:
        for path in (
            "/",
            "/latest/meta-data/",
            "/latest/meta-data/instance-id",
            "/latest/user-data",
        ):
            assert client.get(path).status_code == 404, path
        assert client.get("/latest/dynamic/instance-identity/document").status_code == 404
        assert _token(client).status_code == 404


def test_unknown_paths_are_404(imds: httpx.Client) -> None:
    for path in (
        "/latest/meta-data/nope",
        "/latest/meta-data/instance-id/extra",
        "/latest/meta-data/placement/nope",
        "/latest/nope",
        "/nope/meta-data/",
    ):
        r = imds.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "text/html"
        assert "<title>404 - Not Found</title>" in r.text
        assert "<h1>404 - Not Found</h1>" in r.text


def test_bad_requests_leave_no_traceback(
    imds: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    host, port = imds.base_url.host, imds.base_url.port
    assert port is not None
    for junk in (
        b"garbage\r\n\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
        b"\x00\xff\r\n",
    ):
        with socket.create_connection((host, port), timeout=3) as conn:
            conn.sendall(junk)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):
                pass
    assert imds.post("/latest/meta-data/", content=b"x").status_code == 405
    assert imds.get("/latest/meta-data/instance-id").status_code == 200
    out, err = capfd.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    assert err == ""


def test_metadata_serves_a_given_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = MetadataServer(lambda _ip: INSTANCE, sock=sock).start()
    try:
        assert server.address == sock.getsockname()
        host, port = server.address
        r = httpx.get(f"http://{host}:{port}/latest/meta-data/local-ipv4", trust_env=False)
        assert r.text == PRIVATE_IP
        assert r.headers["server"] == "EC2ws"
    finally:
        server.close()
        server.close()
    assert sock.fileno() == -1
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{host}:{port}/latest/meta-data/", trust_env=False, timeout=2)
