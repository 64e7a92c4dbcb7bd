"""The built-in images: what DescribeImages says they run, and the services themselves.

The services (web page, app service, MySQL greeting) run here on 127.0.0.1, as the same
script the sandbox starts inside an instance's namespace; the metadata service's
public-keys tree is served on 127.0.0.1 too. The sandbox end to end (sshd, scans) is in
tests/test_seed_002.py.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from stockade.sandbox import guest, net
from stockade.sandbox.hostd import GUEST, wait_listening
from stockade.sandbox.metadata import MetadataServer

from conftest import free_port

SEED_IMAGES = {
    "ami-eca54085": ["an SSH server on port 22"],
    "ami-fba54092": ["a web server on port 80", "an SSH server on port 22"],
    "ami-e3a5408a": ["an application service on port 8080", "an SSH server on port 22"],
    "ami-f1a54098": ["a MySQL server on port 3306", "an SSH server on port 22"],
}


def test_describe_images_say_what_each_image_runs(ec2) -> None:
    images = {i["ImageId"]: i for i in ec2.describe_images()["Images"]}
    for image_id, runs in SEED_IMAGES.items():
        description = images[image_id]["Description"]
        assert "(seed 002)" in description
        for service in runs:
            assert service in description, description
    plain = [i for i in images.values() if i["Name"].startswith("stockade-")]
    assert plain and all("an SSH server on port 22" in i["Description"] for i in plain)
    web = ec2.describe_images(
        Filters=[{"Name": "description", "Values": ["*web server on port 80*"]}]
    )
    assert [i["ImageId"] for i in web["Images"]] == ["ami-fba54092"]


# --- the services an image runs ----------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, int]]:
    ports = {"web": free_port(), "app": free_port(), "mysql": free_port()}
    specs = [f"{name}:{port}" for name, port in ports.items()]
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", GUEST, "--host", "127.0.0.1", "--instance", "i-0abc"] + specs
    )
    try:
        for port in ports.values():
            assert wait_listening(proc, port, timeout=20), f"nothing listens on {port}"
        yield ports
    finally:
        proc.terminate()
        proc.wait(10)


def test_web_server_serves_a_page(services: dict[str, int]) -> None:
    base = f"http://127.0.0.1:{services['web']}"
    r = httpx.get(base + "/", trust_env=False)
    assert r.status_code == 200 and r.headers["content-type"] == "text/html"
    assert "<h1>It works!</h1>" in r.text and "i-0abc" in r.text
    head = httpx.head(base + "/index.html", trust_env=False)
    assert head.status_code == 200 and head.content == b""
    assert httpx.post(base + "/", content=b"x", trust_env=False).status_code == 405


def test_web_server_answers_telnet_line_endings(services: dict[str, int]) -> None:
    # telnet sends a bare CR as CR NUL: the request still ends at the empty line
    with socket.create_connection(("127.0.0.1", services["web"]), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\0\n\r\0\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"</html>\n")


def test_app_service_answers(services: dict[str, int]) -> None:
    r = httpx.get(f"http://127.0.0.1:{services['app']}/", trust_env=False)
    assert r.status_code == 200
    assert r.json() == {"service": "app server", "instance": "i-0abc", "ok": True}


def _packet(s: socket.socket) -> tuple[int, bytes]:
    header = _read(s, 4)
    return header[3], _read(s, int.from_bytes(header[:3], "little"))


def _read(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def test_mysql_listener_greets_and_refuses_logins(services: dict[str, int]) -> None:
    with socket.create_connection(("127.0.0.1", services["mysql"]), timeout=5) as s:
        seq, greeting = _packet(s)
        assert seq == 0 and greeting[0] == 10  # protocol version 10
        version, rest = greeting[1:].split(b"\0", 1)
        assert version.decode() == guest.MYSQL_VERSION
        assert rest.endswith(b"mysql_native_password\0")
        (connection_id,) = struct.unpack("<I", rest[:4])
        assert connection_id > 0
        # a HandshakeResponse41 for user "mary"; the answer is ERR 1045, state 28000
        login = struct.pack("<IIB", 0x000FA685, 1 << 24, 33) + b"\0" * 23 + b"mary\0\0"
        s.sendall(struct.pack("<I", len(login))[:3] + b"\x01" + login)
        seq, err = _packet(s)
        assert seq == 2 and err[0] == 0xFF
        assert struct.unpack("<H", err[1:3])[0] == 1045 and err[3:9] == b"#28000"
        assert b"Access denied" in err


def test_wait_listening_sees_the_socket_or_the_exit() -> None:
    port = free_port()
    code = (
        "import socket,time;s=socket.socket();"
        f"s.bind(('127.0.0.1',{port}));s.listen();time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert wait_listening(proc, port, timeout=20)
    finally:
        proc.kill()
        proc.wait()
    quits = subprocess.Popen([sys.executable, "-c", "pass"])
    started = time.monotonic()
    assert not wait_listening(quits, port, timeout=20)
    assert time.monotonic() - started < 10  # it noticed the exit, not the deadline


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
def test_wait_listening_looks_only_inside_the_namespace() -> None:
    # a process of the machine listening on the port is not the instance's service
    port = free_port()
    code = (
        "import socket,time;s=socket.socket();"
        f"s.bind(('127.0.0.1',{port}));s.listen();time.sleep(60)"
    )
    ns = f"ski{os.urandom(3).hex()}-wait"
    net.create(ns)
    here = subprocess.Popen([sys.executable, "-c", code])
    inside = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code])
    try:
        assert wait_listening(here, port, timeout=20)
        assert not wait_listening(here, port, timeout=0.5, netns=ns)
        assert wait_listening(inside, port, timeout=20, netns=ns)
    finally:
        for proc in (here, inside):
            proc.kill()
            proc.wait()
        net.remove(ns)


def test_guest_refuses_unknown_services() -> None:
    done = subprocess.run(
        [sys.executable, "-I", "-S", GUEST, "telnetd:23"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "expected web:PORT" in done.stderr


# --- the launch key in the metadata service ------------------------------------------------

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuJ5w0cM3fMhn9zFYxXm4t9YJzL0n3KkB0a3o5y0lq4 albert"


def _imds(data: dict) -> Iterator[httpx.Client]:
    server = MetadataServer(lambda _ip: data).start()
    host, port = server.address
    try:
        with httpx.Client(base_url=f"http://{host}:{port}", trust_env=False, timeout=5) as c:
            yield c
    finally:
        server.close()


BASE = {"instance-id": "i-0abc", "local-ipv4": "172.31.0.4"}


def test_metadata_serves_the_launch_key() -> None:
    for c in _imds({**BASE, "public-keys": [("albert", KEY)]}):
        assert "public-keys/" in c.get("/latest/meta-data/").text.split("\n")
        assert c.get("/latest/meta-data/public-keys/").text == "0=albert"
        assert c.get("/latest/meta-data/public-keys/0/").text == "openssh-key"
        r = c.get("/latest/meta-data/public-keys/0/openssh-key")
        assert r.status_code == 200 and r.text == KEY
        assert c.get("/latest/meta-data/public-keys/1/openssh-key").status_code == 404


def test_metadata_without_a_key_pair_has_no_public_keys() -> None:
    for c in _imds(dict(BASE)):
        assert "public-keys/" not in c.get("/latest/meta-data/").text.split("\n")
        assert c.get("/latest/meta-data/public-keys/").status_code == 404
        assert c.get("/latest/meta-data/public-keys/0/openssh-key").status_code == 404
