"""Shared fixtures: real Stockade servers (SQLite and PostgreSQL) and real boto3 clients."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig

from stockade import accounts
from stockade.store.db import Store

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


@dataclass
class Server:
    url: str
    db_url: str
    data_dir: str
    store: Store
    proc: subprocess.Popen

    def account(self, name: str | None = None) -> accounts.Account:
        return accounts.create(self.store, name or f"t{os.urandom(5).hex()}")

    def client(
        self, acct: accounts.Account, region: str = "us-east-1", service: str = "ec2"
    ) -> object:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=acct.access_key_id,
            aws_secret_access_key=acct.secret_access_key,
            config=BotoConfig(retries={"max_attempts": 1}),
        )

    def env(self, acct: accounts.Account, region: str = "us-east-1") -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=acct.access_key_id,
            AWS_SECRET_ACCESS_KEY=acct.secret_access_key,
            AWS_DEFAULT_REGION=region,
            AWS_ENDPOINT_URL_EC2=self.url,
            EC2_URL=self.url,
            EC2_ACCESS_KEY=acct.access_key_id,
            EC2_SECRET_KEY=acct.secret_access_key,
            PATH=f"{BIN}:{env.get('PATH', '')}",
        )
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
            env.pop(key, None)
        return env


def start_server(
    db_url: str | None = None, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Server:
    data_dir = tempfile.mkdtemp(prefix="stockade-test-")
    port = free_port()
    cmd = [str(BIN / "stockade"), "serve", "--port", str(port), "--data-dir", data_dir]
    if db_url:
        cmd += ["--database-url", db_url]
    cmd += args
    log = open(os.path.join(data_dir, "server.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(Path(data_dir, "server.log").read_text())
        try:
            return httpx.get(url + "/_stockade/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 60, "the API server to start")
    real_db = db_url or f"sqlite:///{data_dir}/stockade.db"
    return Server(url, real_db, data_dir, Store(real_db), proc)


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
    server.store.dispose()
    log = Path(server.data_dir, "server.log").read_text(errors="replace")
    shutil.rmtree(server.data_dir, ignore_errors=True)
    assert "Traceback" not in log, f"the server logged a traceback:\n{log}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server in a temporary directory, for this test session only."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL is not installed (make test installs it as root)")
    bindir = Path(bins[-1]).parent
    tmp = tempfile.mkdtemp(prefix="stockade-pg-")
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = os.path.join(tmp, "data")

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True)

    run(str(bindir / "initdb"), "-D", data, "-A", "trust", "-U", "postgres")
    run(
        str(bindir / "pg_ctl"),
        "-D",
        data,
        "-w",
        "-l",
        os.path.join(tmp, "pg.log"),
        "-o",
        f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c max_connections=200",
        "start",
    )
    try:
        run(
            str(bindir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "stockade",
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/stockade"
    finally:
        run(str(bindir / "pg_ctl"), "-D", data, "-m", "fast", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def sqlite_server() -> Iterator[Server]:
    server = start_server()
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def postgres_server(postgres_url: str) -> Iterator[Server]:
    server = start_server(postgres_url)
    yield server
    stop_server(server)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest) -> Server:
    """The API server, once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def account(server: Server) -> accounts.Account:
    return server.account()


@pytest.fixture
def ec2(server: Server, account: accounts.Account):
    return server.client(account)


@dataclass
class RawReply:
    status: int
    body: str

    @property
    def code(self) -> str | None:
        import re

        m = re.search(r"<Code>(.*?)</Code>", self.body)
        return m.group(1) if m else None

    @property
    def message(self) -> str | None:
        import re

        m = re.search(r"<Message>(.*?)</Message>", self.body, re.S)
        return m.group(1) if m else None


def raw_request(
    server: Server,
    acct: accounts.Account | None,
    params: dict[str, str] | str | bytes,
    *,
    region: str = "us-east-1",
    headers: dict[str, str] | None = None,
) -> RawReply:
    """A request exactly as given (no client-side validation), SigV4-signed if ``acct``."""
    from urllib.parse import urlencode

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = params if isinstance(params, str | bytes) else urlencode(params)
    hdrs = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", **(headers or {})}
    req = AWSRequest(method="POST", url=server.url + "/", data=body, headers=hdrs)
    if acct is not None:
        creds = Credentials(acct.access_key_id, acct.secret_access_key)
        SigV4Auth(creds, "ec2", region).add_auth(req)
    prepared = req.prepare()
    resp = httpx.post(server.url + "/", content=prepared.body, headers=dict(prepared.headers))
    return RawReply(resp.status_code, resp.text)


@contextlib.contextmanager
def running_sandbox(hosts: int, tag: str = "skt") -> Iterator[Any]:
    """A whole sandbox region (API server, hosts, edge, internet) under a random namespace
    prefix ``<tag><4 hex>-``, brought down afterwards with every namespace it made, even
    when the test fails."""
    from stockade.sandbox.region import Sandbox

    data = Path(tempfile.mkdtemp(prefix="stockade-sandbox-"))
    box = Sandbox(data, hosts=hosts, port=free_port(), prefix=f"{tag}{os.urandom(2).hex()}-")
    try:
        box.up()
        yield box
    finally:
        box.down()
        shutil.rmtree(data, ignore_errors=True)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert box.prefix not in left, f"namespaces of {box.prefix} were left behind:\n{left}"
