"""`stockade serve --workers N`: several processes serving one database."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from stockade.store.db import Store, agent_token, read_changes
from test_group_commit import check_concurrent_authorizes

from conftest import BIN, Server, free_port, stop_server, wait_until


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def workers_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    data_dir = tempfile.mkdtemp(prefix="stockade-workers-")
    port = free_port()
    log = open(os.path.join(data_dir, "server.log"), "wb")  # noqa: SIM115
    cmd = [str(BIN / "stockade"), "serve", "--port", str(port), "--data-dir", data_dir]
    db_url = f"sqlite:///{data_dir}/stockade.db"
    if request.param == "postgres":
        db_url = request.getfixturevalue("postgres_url")
        cmd += ["--database-url", db_url]
    proc = subprocess.Popen([*cmd, "--workers", "2"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(Path(data_dir, "server.log").read_text())
        try:
            return httpx.get(url + "/_stockade/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 60, "the API server to start")
    server = Server(url, db_url, data_dir, Store(db_url), proc)
    yield server
    stop_server(server)


def _workers(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def test_two_worker_processes_serve(workers_server):
    assert len(_workers(workers_server.proc.pid)) == 2
    ec2 = workers_server.client(workers_server.account())
    # fresh connections land on either process; every answer is the same
    answers = {
        tuple(g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"])
        for _ in range(10)
    }
    assert answers == {("default",)}


def test_concurrent_duplicates_and_dry_runs_across_workers(workers_server):
    """Both processes batch their writes (SQLite); a rule sent twice at once is stored once,
    wherever each copy lands, and DryRuns leave nothing."""
    check_concurrent_authorizes(workers_server)


def test_concurrent_writes_through_both_workers(workers_server):
    acct = workers_server.account()
    before = workers_server.store.revision()

    def work(n: int) -> list[str]:
        ec2 = workers_server.client(acct)
        made = []
        for i in range(4):
            gid = ec2.create_security_group(GroupName=f"w{n}-{i}", Description="workers")["GroupId"]
            perm = {
                "IpProtocol": "udp",
                "FromPort": 1000 + i,
                "ToPort": 1000 + i,
                "IpRanges": [{"CidrIp": "192.0.2.0/24"}],
            }
            ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[perm])
            ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[perm])
            ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[perm])
            made.append(gid)
        return made

    with ThreadPoolExecutor(8) as pool:
        made = [gid for gids in pool.map(work, range(8)) for gid in gids]
    assert len(set(made)) == 32

    ec2 = workers_server.client(acct)
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["w*"]}])[
        "SecurityGroups"
    ]
    assert sorted(g["GroupId"] for g in groups) == sorted(made)
    for g in groups:
        (perm,) = g["IpPermissions"]
        assert perm["IpProtocol"] == "udp" and perm["IpRanges"] == [{"CidrIp": "192.0.2.0/24"}]

    # the writers took turns: one revision per change, in commit order, none lost or repeated
    changes = read_changes(workers_server.store, before, 10_000)
    revisions = [c["revision"] for c in changes]
    assert revisions == list(range(before + 1, before + 1 + len(revisions)))
    assert len(revisions) >= 32 * 4  # created, authorized, revoked, authorized


def test_agent_reports_reach_every_worker(workers_server):
    token = agent_token(workers_server.store)
    auth = {"Authorization": f"Bearer {token}"}
    for host in ("hw1", "hw2"):
        r = httpx.post(
            f"{workers_server.url}/_stockade/v1/hosts/{host}/status",
            json={"revision": 3, "interfaces": 1},
            headers=auth,
        )
        assert r.status_code == 200, r.text
    for _ in range(10):  # a fresh connection each time: either worker answers
        status = httpx.get(f"{workers_server.url}/_stockade/v1/status", headers=auth).json()
        hosts = {a["host"]: a for a in status["agents"]}
        assert {"hw1", "hw2"} <= set(hosts)
        assert hosts["hw1"]["revision"] == 3 and hosts["hw1"]["interfaces"] == 1


def _server_has_read(server_port: int, client_port: int) -> bool:
    """Whether the server side of the connection from ``client_port`` has read everything
    sent to it (its receive queue in /proc/net/tcp is empty)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) == server_port and (
            int(remote.split(":")[1], 16) == client_port
        ):
            return int(queues.split(":")[1], 16) == 0
    return False


def test_long_poll_sees_another_workers_commit(workers_server):
    """An agent's long poll, waiting in one worker, ends when another process commits: the
    WAL watch wakes it (SQLite), well before the 5 s safety poll. The commit comes from this
    test's own process, so it cannot be the waiting worker's own, and it is made only once
    the worker has read the request (so the poll is waiting, not about to start)."""
    token = agent_token(workers_server.store)
    acct = workers_server.account()
    port = int(workers_server.url.rsplit(":", 1)[1])
    for round_ in range(3):
        since = workers_server.store.revision()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                f"GET /_stockade/v1/changes?since={since}&wait=20 HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            client_port = sock.getsockname()[1]
            read = functools.partial(_server_has_read, port, client_port)
            wait_until(read, 10, "the request to be read")
            with workers_server.store.write() as tx:
                tx.log(acct.account_id, "us-east-1", "tags.changed", f"sg-{round_:08x}")
            sock.settimeout(4)  # shorter than the safety poll: only a wake-up answers in time
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        changes = json.loads(body)["changes"]
        assert changes and changes[0]["revision"] > since
