"""`stockade up/down/status/env/logs/demo` against real sandboxes (root, namespaces).

Each test starts `stockade up` as a subprocess with a random namespace prefix, its own data
dir and port, and a runtime directory of its own (``STOCKADE_RUN_DIR``), so that "the
running sandbox" commands find by default is the test's. Every namespace of the prefix is
removed afterwards, whatever happens. Nothing sleeps to synchronise: the tests wait for a
progress line, a namespace or a file, with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig

from stockade import accounts
from stockade.sandbox import runtime
from stockade.store.db import Store

import netns
from conftest import BIN, free_port, wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns.can_run() is not None, reason=str(netns.can_run())),
]


def namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def port_free(port: int) -> bool:
    from stockade.sandbox.region import port_free as free

    return free(port)


class Up:
    """A `stockade up` subprocess whose stderr lines are collected as they come."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(BIN / "stockade"), "up", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,  # its own group, as a terminal's foreground job
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, text: str, timeout: float = 60) -> None:
        wait_until(
            lambda: text in self.text or self.proc.poll() is not None,
            timeout,
            f"{text!r} from stockade up",
        )
        assert text in self.text, f"stockade up exited ({self.proc.returncode}):\n{self.text}"

    def finish(self, timeout: float = 30) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Region:
    """One test's prefix, data dir, port and runtime dir; removes all of them at the end."""

    def __init__(self) -> None:
        self.prefix = f"skc{os.urandom(2).hex()}-"
        self.root = Path(tempfile.mkdtemp(prefix="stockade-cli-"))
        self.data = self.root / "data"
        self.run_dir = self.root / "run"
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("STOCKADE_", "AWS_"))},
            "STOCKADE_RUN_DIR": str(self.run_dir),
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        }
        self.ups: list[Up] = []

    def up(self, *extra: str, env: dict[str, str] | None = None) -> Up:
        args = ["--prefix", self.prefix, "--data-dir", str(self.data), "--port", str(self.port)]
        proc = Up({**self.env, **(env or {})}, "--hosts", "1", *args, *extra)
        self.ups.append(proc)
        return proc

    def stockade(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "stockade"), *args],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
        )

    def close(self) -> None:
        for proc in self.ups:
            proc.stop()
        left = runtime.find(prefix=self.prefix)  # an `up -d` of a failed test
        if left is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(left.pid, signal.SIGTERM)
            with contextlib.suppress(AssertionError):
                wait_until(lambda: not left.alive(), 30, "the background sandbox to stop")
        for name in namespaces(self.prefix):
            subprocess.run(["ip", "netns", "pids", name], capture_output=True)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def region(monkeypatch: pytest.MonkeyPatch) -> Iterator[Region]:
    reg = Region()
    monkeypatch.setenv("STOCKADE_RUN_DIR", str(reg.run_dir))
    try:
        yield reg
    finally:
        reg.close()


def test_second_up_is_refused_and_the_first_keeps_running(region: Region) -> None:
    first = region.up()
    first.wait_line("up: ready")
    made = namespaces(region.prefix)
    assert {f"{region.prefix}inet", f"{region.prefix}edge", f"{region.prefix}h1"} <= set(made)
    # the hints name the non-default data dir
    wait_until(lambda: "Ctrl-C stops" in first.text, 10, "the banner")
    banner = " ".join(first.text.split())
    assert f'eval "$(stockade env --data-dir {region.data})"' in banner, banner
    assert f"stockade outside --data-dir {region.data} --from" in banner

    other_data = region.root / "other"
    second = region.stockade(
        "up", "--prefix", region.prefix, "--data-dir", str(other_data), "--port", "1"
    )
    assert second.returncode != 0
    said = " ".join(second.stderr.split())
    assert f"pid {first.proc.pid}" in said and str(region.data) in said, said
    assert f"port {region.port}" in said and f"stockade down --prefix {region.prefix}" in said
    assert "Traceback" not in second.stderr
    # the same data dir under another prefix is refused as well
    third = region.stockade("up", "--prefix", "skz-", "--data-dir", str(region.data))
    assert third.returncode != 0 and f"pid {first.proc.pid}" in " ".join(third.stderr.split())
    # `down` of another data dir stops nothing and removes nothing of the live sandbox
    down_other = region.stockade("down", "--data-dir", str(other_data))
    assert down_other.returncode == 0, down_other.stderr
    assert "no sandbox" in down_other.stderr
    assert first.proc.poll() is None and namespaces(region.prefix) == made
    assert not (other_data / "stockade.db").exists()

    # every command finds the running sandbox without being told its data dir or port
    env = region.stockade("env")
    assert env.returncode == 0, env.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in env.stdout.splitlines())
    assert exports["AWS_ENDPOINT_URL_EC2"] == f"http://127.0.0.1:{region.port}"
    store = Store(f"sqlite:///{region.data}/stockade.db")
    try:
        assert exports["AWS_ACCESS_KEY_ID"] == accounts.get(store, "default").access_key_id
    finally:
        store.dispose()
    status = region.stockade("status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["sandbox"]["up"] is True and data["sandbox"]["pid"] == first.proc.pid
    assert data["sandbox"]["data_dir"] == str(region.data.resolve())
    assert [a["host"] for a in data["agents"]] == ["host-1"]
    assert data["agents"][0]["age_seconds"] >= 0 and data["agents"][0]["stale"] is False
    shown = region.stockade("status")
    assert shown.returncode == 0 and "ready" in shown.stdout and region.prefix in shown.stdout
    assert f"--data-dir {region.data}" in " ".join(shown.stdout.split())
    api_log = region.stockade("logs", "api")
    assert api_log.returncode == 0 and "Stockade EC2 API on" in api_log.stdout
    host_log = region.stockade("logs", "host-1")
    assert host_log.returncode == 0 and f"namespace {region.prefix}h1" in host_log.stdout

    down = region.stockade("down", "--prefix", region.prefix)
    assert down.returncode == 0, down.stderr
    said = " ".join(down.stderr.split())
    assert re.search(r"removed 0 instances, 3 namespaces; stopped 1 process", said), said
    assert first.finish() == 0
    assert namespaces(region.prefix) == [] and port_free(region.port)
    assert runtime.find(prefix=region.prefix) is None
    gone = region.stockade("status", "--data-dir", str(region.data))
    assert gone.returncode != 0 and "not running" in gone.stdout


POINTS = [
    ("line", "starting the EC2 API", signal.SIGINT),
    ("netns", "inet", signal.SIGINT),
    ("netns", "edge", signal.SIGTERM),
    ("netns", "h1", signal.SIGINT),
    ("line", "up: ready", signal.SIGINT),
]


@pytest.mark.parametrize(("kind", "what", "sig"), POINTS, ids=[p[1] for p in POINTS])
def test_a_signal_during_start_up_removes_what_was_made(
    region: Region, kind: str, what: str, sig: signal.Signals
) -> None:
    proc = region.up()
    if kind == "line":
        proc.wait_line(what)
    else:
        wait_until(
            lambda: (
                f"{region.prefix}{what}" in namespaces(region.prefix)
                or proc.proc.poll() is not None
            ),
            60,
            f"namespace {region.prefix}{what}",
        )
        assert proc.proc.poll() is None, proc.text
    if sig == signal.SIGINT:
        os.killpg(proc.proc.pid, sig)  # Ctrl-C: the whole foreground group
    else:
        proc.proc.send_signal(sig)
    rc = proc.finish()
    assert rc in (0, 130), proc.text
    assert "Traceback" not in proc.text
    assert namespaces(region.prefix) == [], proc.text
    wait_until(lambda: port_free(region.port), 10, "the API server to exit")
    assert runtime.find(prefix=region.prefix) is None


def test_a_killed_sandbox_is_cleaned_up_by_the_next_up(region: Region) -> None:
    first = region.up()
    first.wait_line("up: ready")
    first.proc.kill()  # SIGKILL: no teardown at all
    assert first.finish() != 0
    # its lock went with it, and its API server too
    wait_until(lambda: port_free(region.port), 10, "the API server to die with stockade up")
    assert runtime.find(prefix=region.prefix) is None
    assert f"{region.prefix}h1" in namespaces(region.prefix)
    status = region.stockade("status", "--data-dir", str(region.data))
    said = " ".join(status.stdout.split())
    assert "not running" in said and f"pid {first.proc.pid}, which holds no sandbox lock" in said
    second = region.up()
    second.wait_line("up: ready")
    assert region.stockade("down", "--prefix", region.prefix).returncode == 0
    assert second.finish() == 0
    assert namespaces(region.prefix) == []


def test_background_up_then_down(region: Region) -> None:
    args = ["--hosts", "1", "--prefix", region.prefix, "--data-dir", str(region.data)]
    started = region.stockade("up", "-d", *args, "--port", str(region.port))
    assert started.returncode == 0, started.stderr
    said = " ".join(started.stderr.split())
    assert "sandbox running in the background" in said
    assert f"stockade down --prefix {region.prefix}" in said
    record = runtime.find(prefix=region.prefix)
    assert record is not None and record.state == "ready" and record.port == region.port
    assert f"pid {record.pid}" in said
    assert "up: ready" in region.stockade("logs", "sandbox").stdout
    down = region.stockade("down", "--prefix", region.prefix)
    assert down.returncode == 0 and "removed 0 instances, 3 namespaces" in down.stderr
    assert not record.alive() and namespaces(region.prefix) == []


def test_a_failing_step_removes_what_was_made(region: Region) -> None:
    proc = region.up(env={"STOCKADE_PUBLIC_POOL": "not-a-network"})
    rc = proc.finish(60)
    assert rc == 1, proc.text
    said = " ".join(proc.text.split())
    assert "the sandbox failed to start" in said and "cleaned up: removed" in said
    assert "Traceback" not in said
    assert namespaces(region.prefix) == []
    wait_until(lambda: port_free(region.port), 10, "the API server to exit")


@pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")
def test_demo_runs_in_its_own_account_and_names_a_failed_step(region: Region) -> None:
    proc = region.up()
    proc.wait_line("up: ready")
    store = Store(f"sqlite:///{region.data}/stockade.db")
    try:
        user = accounts.get(store, "default")
        ec2 = boto3.client(
            "ec2",
            endpoint_url=f"http://127.0.0.1:{region.port}",
            region_name="us-east-1",
            aws_access_key_id=user.access_key_id,
            aws_secret_access_key=user.secret_access_key,
            config=BotoConfig(retries={"max_attempts": 1}),
        )
        ec2.create_security_group(GroupName="apache", Description="mine")
        ec2.create_security_group(GroupName="appserver", Description="mine")
        ec2.authorize_security_group_ingress(
            GroupName="default", IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="192.168.1.130/32"
        )

        def mine() -> list[tuple[str, str]]:
            groups = ec2.describe_security_groups()["SecurityGroups"]
            return sorted((g["GroupName"], json.dumps(g["IpPermissions"])) for g in groups)

        before = mine()
        ok = region.stockade("demo", "albert", "--data-dir", str(region.data), timeout=300)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "every step did what the story says" in ok.stdout
        assert mine() == before
        assert ec2.describe_instances()["Reservations"] == []

        # without nmap on the PATH the scan step fails: a non-zero exit naming the step
        no_nmap = {"PATH": f"{BIN}:/usr/sbin"}
        bad = region.stockade(
            "demo", "albert", "--data-dir", str(region.data), env=no_nmap, timeout=300
        )
        out = " ".join((bad.stdout + bad.stderr).split())
        assert bad.returncode == 1, out
        assert "failed at step 3 (He port-scans his instance" in out, out
        assert mine() == before
        demo = accounts.get(store, "demo-albert")
        assert demo.account_id != user.account_id
    finally:
        store.dispose()
    down = region.stockade("down", "--data-dir", str(region.data))
    assert down.returncode == 0, down.stderr
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.finish()
    assert namespaces(region.prefix) == []
