"""Shared pieces of the benchmarks: servers, namespaces, results, machine facts.

Every network namespace a benchmark creates is named ``skb-<6 hex>-<suffix>`` and removed
when its :class:`Namespaces` closes (also on errors, and from a finalizer at exit).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
console = Console(width=120)


# --- results -----------------------------------------------------------------------------


@dataclass
class Summary:
    """One line of the runner's summary table."""

    benchmark: str
    stockade: str
    anchor: str
    ratio: str
    goal: str = ""


@dataclass
class Section:
    """What one benchmark hands back: its own tables, summary lines and raw data."""

    name: str
    tables: list[Table] = field(default_factory=list)
    summary: list[Summary] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def write(self) -> Path:
        """Write ``bench/results/<name>.json`` (with the machine and the date)."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        payload = {"benchmark": self.name, "machine": machine(), **self.data}
        if self.notes:
            payload["notes"] = self.notes
        path.write_text(json.dumps(payload, indent=2, default=str))
        return path

    def show(self) -> None:
        for table in self.tables:
            console.print(table)
        for note in self.notes:
            console.print(f"[dim]{note}[/dim]")


def run_alone(run: Callable[..., Section], description: str | None) -> None:
    """``python bench/<name>.py [--quick]``: one benchmark on its own, with a progress bar;
    prints its tables and summary lines and writes its results file."""
    from rich.progress import Progress

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="the smoke run CI executes")
    args = ap.parse_args()
    with Progress(console=console, transient=True) as progress:
        section = run(args.quick, progress)
    section.show()
    for s in section.summary:
        console.print(f"{s.benchmark}: {s.stockade} (anchor {s.anchor}, goal {s.goal or '-'})")
    section.write()


def create_tier_groups(ec2: Any, count: int, cidr: Callable[[int, int], str]) -> list[str]:
    """``count`` groups ``tier-0``..., each with 10 ingress rules: tcp 1000-1005 from the
    CIDRs ``cidr(group, k)`` names and tcp 2000-2003 from the next four tiers (the layout the
    propagation and explain benchmarks measure at)."""
    groups = [
        ec2.create_security_group(GroupName=f"tier-{g}", Description="tier")["GroupId"]
        for g in range(count)
    ]
    for g, gid in enumerate(groups):
        perms = [
            {
                "IpProtocol": "tcp",
                "FromPort": 1000 + k,
                "ToPort": 1000 + k,
                "IpRanges": [{"CidrIp": cidr(g, k)}],
            }
            for k in range(6)
        ] + [
            {
                "IpProtocol": "tcp",
                "FromPort": 2000 + k,
                "ToPort": 2000 + k,
                "UserIdGroupPairs": [{"GroupId": groups[(g + k + 1) % count]}],
            }
            for k in range(4)
        ]
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=perms)
    return groups


def table(title: str, *columns: str) -> Table:
    """A rich table whose first column is left-aligned and the others right-aligned."""
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    return t


def ratio(a: float, b: float) -> float:
    """a / b, or NaN when b is zero or either is NaN."""
    if not b or a != a or b != b:
        return float("nan")
    return a / b


def fmt(value: float, digits: int = 2) -> str:
    """A number for a table ("-" for NaN)."""
    if value != value:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def percentile(samples: list[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``samples``; NaN if empty."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


_MACHINE: dict[str, Any] | None = None


def machine() -> dict[str, Any]:
    """CPU model, cores, kernel, nft version, Python, date."""
    global _MACHINE
    if _MACHINE is None:
        model = ""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
            found = re.search(r"Model name:\s+(.+)", out)
            model = found.group(1).strip() if found else ""
        nft = ""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            nft = subprocess.run(
                ["nft", "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        mem = ""
        with contextlib.suppress(OSError):
            found = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
            mem = f"{int(found.group(1)) / 1024 / 1024:.1f} GiB" if found else ""
        _MACHINE = {
            "cpu": model,
            "cores": os.cpu_count(),
            "memory": mem,
            "kernel": platform.release(),
            "nft": nft,
            "python": platform.python_version(),
        }
    return {**_MACHINE, "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


# --- servers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until ``url`` answers (any status), or fail if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {proc.args}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


_CHILDREN: list[subprocess.Popen] = []


def track(proc: subprocess.Popen) -> subprocess.Popen:
    """Remember a child process, so that it is killed at exit if nothing stopped it."""
    _CHILDREN.append(proc)
    return proc


@atexit.register
def _reap() -> None:
    for proc in _CHILDREN:
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@dataclass
class Stockade:
    """A ``stockade serve`` of our own with one account (its keys) and the agent token."""

    url: str
    data_dir: str
    key: str
    secret: str
    token: str
    proc: subprocess.Popen

    def client(self, service: str = "ec2") -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            config=BotoConfig(retries={"max_attempts": 1}, max_pool_connections=16),
        )

    def http(self) -> httpx.Client:
        """A client for the agent-facing endpoints."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
        )

    def stop(self) -> None:
        try:
            stop_process(self.proc)
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def start_stockade(env: dict[str, str] | None = None) -> Stockade:
    """Start ``stockade serve`` on a free port with a fresh data dir (SQLite)."""
    from stockade import accounts
    from stockade.store.db import Store, agent_token

    data = tempfile.mkdtemp(prefix="stockade-bench-")
    full_env = {**os.environ, **(env or {})}
    port = free_port()
    log = open(os.path.join(data, "server.log"), "wb")  # noqa: SIM115 - the child keeps it
    proc = track(
        subprocess.Popen(
            [str(BIN / "stockade"), "serve", "--port", str(port), "--data-dir", data],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/_stockade/health", proc)
        store = Store(f"sqlite:///{data}/stockade.db")
        try:
            acct = accounts.create(store, "bench")
            token = agent_token(store)
        finally:
            store.dispose()
    except BaseException:
        stop_process(proc)
        shutil.rmtree(data, ignore_errors=True)
        raise
    return Stockade(url, data, acct.access_key_id, acct.secret_access_key, token, proc)


# --- namespaces --------------------------------------------------------------------------


def run(ns: str | None, *cmd: str, check: bool = True, timeout: float = 60) -> str:
    """Run a command in namespace ``ns`` (None: here); return its stdout."""
    argv = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def _delete_all(names: list[str]) -> None:
    for name in reversed(names):
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    names.clear()


GATEWAY = "169.254.1.1"


class Namespaces:
    """Namespaces ``skb-<hex>-*`` for one benchmark, removed on close (and at exit)."""

    def __init__(self) -> None:
        self.prefix = f"skb-{os.urandom(3).hex()}-"
        self.names: list[str] = []
        self._finalizer = weakref.finalize(self, _delete_all, self.names)

    def add(self, suffix: str) -> str:
        name = self.prefix + suffix
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.names.append(name)
        run(name, "ip", "link", "set", "lo", "up")
        return name

    def host(self, suffix: str = "host") -> str:
        """A router namespace: forwarding on, rp_filter off."""
        name = self.add(suffix)
        run(
            name,
            "sh",
            "-ec",
            "sysctl -qw net.ipv4.ip_forward=1\n"
            "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
        )
        return name

    def instance(self, host: str, suffix: str, ipv4: str, ifname: str) -> str:
        """A namespace joined to ``host`` by a veth (``ifname`` on the host side, ``eth0``
        inside with ``ipv4``/32 and a default route via the host)."""
        ns = self.add(suffix)
        run(None, "ip", "-n", host, "link", "add", ifname, "type", "veth", "peer", "name", "eth0",
            "netns", ns)  # fmt: skip
        run(
            ns,
            "sh",
            "-ec",
            "ip link set eth0 up\n"
            f"ip addr add {ipv4}/32 dev eth0\n"
            f"ip route add {GATEWAY} dev eth0 scope link\n"
            f"ip route add default via {GATEWAY} dev eth0\n"
            "sysctl -qw net.ipv4.tcp_tw_reuse=1",
        )
        run(
            host,
            "sh",
            "-ec",
            f"sysctl -qw net.ipv4.conf.{ifname}.rp_filter=0\n"
            f"ip link set {ifname} up\n"
            f"ip addr add {GATEWAY}/32 dev {ifname}\n"
            f"ip route add {ipv4}/32 dev {ifname}",
        )
        return ns

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """``with timer() as elapsed: ...; elapsed()`` gives seconds since the start."""
    start = time.perf_counter()
    yield lambda: time.perf_counter() - start


def tier_groups(count: int, cidr: Callable[[int, int], str]) -> list[dict[str, Any]]:
    """``count`` groups of 10 ingress rules each (6 CIDR sources ``cidr(group, k)`` on ports
    1000-1005, 4 references to the next groups on ports 2000-2003) and an allow-all egress,
    as a snapshot's ``groups`` list (ids ``sg-<17 hex>``)."""
    gid = [f"sg-{g:017x}" for g in range(count)]

    def rule(g: int, k: int, **kw: Any) -> dict[str, Any]:
        base = {
            "id": f"sgr-{g:08x}{k:09x}",
            "egress": False,
            "protocol": "6",
            "cidr": None,
            "ref_group_id": None,
        }
        return {**base, **kw}

    groups = []
    for g in range(count):
        rules = [
            rule(g, k, from_port=1000 + k, to_port=1000 + k, cidr=cidr(g, k)) for k in range(6)
        ]
        rules += [
            rule(
                g,
                k + 6,
                from_port=2000 + k,
                to_port=2000 + k,
                ref_group_id=gid[(g + k + 1) % count],
            )
            for k in range(4)
        ]
        rules.append(
            rule(g, 99, egress=True, protocol="-1", from_port=None, to_port=None, cidr="0.0.0.0/0")
        )
        groups.append({"id": gid[g], "name": f"tier-{g}", "rules": rules})
    return groups
