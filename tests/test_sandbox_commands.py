"""Sandbox commands that need no namespaces: `stockade env` without state, `stockade logs`,
and the stale-agent warning of `stockade status` (against a real server)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stockade.store.db import Store, agent_token

from conftest import BIN, Server, start_server, stop_server, wait_until


def stockade(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STOCKADE_")}
    return subprocess.run(
        [str(BIN / "stockade"), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


def test_env_without_state_says_what_to_run_and_creates_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    out = stockade("env", "--data-dir", str(empty), env={"STOCKADE_RUN_DIR": str(tmp_path)})
    assert out.returncode == 2
    said = " ".join(out.stderr.split())
    assert f"there is no Stockade state in {empty}" in said
    assert (
        f"stockade up --data-dir {empty}" in said and f"stockade serve --data-dir {empty}" in said
    )
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert not (empty / "stockade.db").exists()


def test_logs_lists_shows_and_follows(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    (data / "server.log").write_text("".join(f"api line {i}\n" for i in range(300)))
    (data / "logs" / "host-1.log").write_text("host-1: namespace skr-h1\n")
    env = {"STOCKADE_RUN_DIR": str(tmp_path / "run")}
    listed = stockade("logs", "--data-dir", str(data), env=env)
    assert listed.returncode == 0
    for name in ("api", "host-1", "edge", "dns", "metadata"):
        assert name in listed.stdout
    unknown = stockade("logs", "nope", "--data-dir", str(data), env=env)
    assert unknown.returncode == 2 and "no log named 'nope'" in unknown.stderr
    assert "host-1" in unknown.stderr and "Traceback" not in unknown.stderr
    api = stockade("logs", "api", "-n", "2", "--data-dir", str(data), env=env)
    assert api.returncode == 0 and api.stdout == "api line 298\napi line 299\n"
    host = stockade("logs", "host-1", "--data-dir", str(data), env=env)
    assert host.stdout == "host-1: namespace skr-h1\n"
    missing = stockade("logs", "dns", "--data-dir", str(data), env=env)
    assert missing.returncode == 2 and "-f dns" in missing.stderr

    follow = subprocess.Popen(
        [str(BIN / "stockade"), "logs", "-f", "-n", "1", "edge", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    try:
        # the file appears only after `logs -f` started, then grows twice
        edge = data / "logs" / "edge.log"
        edge.write_text("edge: first\n")
        assert follow.stdout is not None
        assert follow.stdout.readline() == "edge: first\n"
        with edge.open("a") as f:
            f.write("edge: second\n")
        assert follow.stdout.readline() == "edge: second\n"
    finally:
        follow.terminate()
        follow.wait(10)


@pytest.fixture
def hosted_server() -> Iterator[Server]:
    """A server whose instances wait for a host to claim them (as in the sandbox)."""
    server = start_server(env={"STOCKADE_AUTO_RUN": "0"})
    try:
        yield server
    finally:
        stop_server(server)


def test_status_names_groups_and_warns_of_an_agent_silent_past_its_poll(
    hosted_server: Server,
) -> None:
    sqlite_server = hosted_server
    store = Store(sqlite_server.db_url)
    token = agent_token(store)
    host = f"host-{os.getpid()}"
    ec2 = sqlite_server.client(sqlite_server.account())
    name = f"web-{os.urandom(3).hex()}"
    gid = ec2.create_security_group(GroupName=name, Description="d")["GroupId"]
    ec2.run_instances(ImageId="ami-fba54092", MinCount=1, MaxCount=1, SecurityGroupIds=[gid])
    claimed = httpx.post(
        f"{sqlite_server.url}/_stockade/v1/hosts/{host}/claim",
        json={"limit": 50},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert claimed.status_code == 200, claimed.text
    report = {"revision": 0, "server_revision": 0, "interfaces": 0, "poll_seconds": 0.2}
    r = httpx.post(
        f"{sqlite_server.url}/_stockade/v1/hosts/{host}/status",
        json=report,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200
    args = ("status", "--server", sqlite_server.url, "--data-dir", sqlite_server.data_dir)
    args += ("--database-url", sqlite_server.db_url)
    env = {"STOCKADE_RUN_DIR": sqlite_server.data_dir, "COLUMNS": "200"}
    reported = time.monotonic()
    fresh = stockade(*args, env=env)
    assert fresh.returncode == 0, fresh.stderr
    assert f"{gid} ({name})" in " ".join(fresh.stdout.split())
    if time.monotonic() - reported < 1.2:  # the command itself may take that long
        assert f"agent of {host}" not in fresh.stderr
    results: list[subprocess.CompletedProcess] = []

    def warned() -> bool:
        results.append(stockade(*args, env=env))
        return f"the agent of {host} has not reported for" in results[-1].stderr

    wait_until(warned, 30, "the stale-agent warning")
    assert f"stockade logs {host}" in " ".join(results[-1].stderr.split())
    assert "not running" in results[-1].stdout  # no sandbox: the API alone


def test_stopping_the_server_answers_open_long_polls(hosted_server: Server) -> None:
    """SIGTERM: a long poll (wait=30) gets its answer now, so shutdown does not wait it out
    (the sandbox's hosts, agents and edge each hold one open)."""
    import signal
    import socket

    token = agent_token(Store(hosted_server.db_url))
    port = int(hosted_server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    request = (
        f"GET /_stockade/v1/changes?since={10**9}&wait=30 HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    local = sock.getsockname()[1]
    sock.sendall(request.encode())

    def server_has_read_it() -> bool:  # the server side's receive queue is empty
        out = subprocess.run(
            ["ss", "-tnH", "state", "established", f"( sport = :{port} and dport = :{local} )"],
            capture_output=True,
            text=True,
        ).stdout.split()
        return bool(out) and out[0] == "0"

    with sock:
        wait_until(server_has_read_it, 10, "the server to read the long poll")
        hosted_server.proc.send_signal(signal.SIGTERM)
        # before the poll's 30 s are over: the server answered it and exited
        hosted_server.proc.wait(20)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply
    assert json.loads(body)["changes"] == []
