"""API capacity: Stockade against moto, measured with wrk replaying SigV4-signed requests.

For each store size (groups), both servers get the same groups; then wrk (8 connections)
replays pre-signed requests: DescribeSecurityGroups by id, with a filter,
DescribeSecurityGroupRules, and a write mix (authorize then revoke of distinct rules).
Prints a table and writes bench/results/api_capacity.json. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
console = Console(width=120)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.args}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


class Target:
    """A server under test with the credentials to sign for it."""

    def __init__(self, name: str, url: str, key: str, secret: str, proc: subprocess.Popen):
        self.name, self.url, self.key, self.secret, self.proc = name, url, key, secret, proc

    def client(self):
        return boto3.client(
            "ec2",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            config=BotoConfig(retries={"max_attempts": 1}, max_pool_connections=16),
        )

    def sign(self, params: dict[str, str]) -> tuple[str, dict[str, str]]:
        body = urlencode({"Version": "2016-11-15", **params})
        req = AWSRequest(
            method="POST",
            url=self.url + "/",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
        SigV4Auth(Credentials(self.key, self.secret), "ec2", "us-east-1").add_auth(req)
        headers = {k: v for k, v in req.headers.items()}
        headers["Host"] = self.url.removeprefix("http://")  # wrk.format() adds no Host of its own
        return body, headers

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_stockade(tmp: str, workers: int = 1) -> Target:
    """``stockade serve`` on a new data dir; ``workers`` > 1: that many processes."""
    port = free_port()
    name = "stockade" if workers == 1 else f"stockade-{workers}w"
    data = os.path.join(tmp, name)
    env = dict(os.environ, STOCKADE_MAX_GROUPS_PER_REGION="20000")
    out = subprocess.run(
        [str(BIN / "stockade"), "account", "create", "bench", "--json", "--data-dir", data],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    acct = json.loads(out.stdout)
    cmd = [str(BIN / "stockade"), "serve", "--port", str(port), "--data-dir", data]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_stockade/health", proc)
    return Target(name, url, acct["access_key_id"], acct["secret_access_key"], proc)


def start_moto() -> Target:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "python"), "-m", "moto.server", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/moto-api/", proc)
    return Target(
        "moto", url, "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", proc
    )


def populate(target: Target, count: int, have: int) -> list[str]:
    """Grow the target to ``count`` groups (5 rules each); return the group ids."""
    client = target.client()

    def make(i: int) -> str:
        gid = client.create_security_group(GroupName=f"bench-{i}", Description="bench")["GroupId"]
        client.authorize_security_group_ingress(
            GroupId=gid,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": p,
                    "ToPort": p,
                    "IpRanges": [{"CidrIp": f"10.{i % 250}.{p % 250}.0/24"}],
                }
                for p in (22, 80, 443, 8080, 3306)
            ],
        )
        return gid

    # moto is not safe under concurrent writes (it answers 500): fill it one call at a time
    with ThreadPoolExecutor(8 if target.name == "stockade" else 1) as pool:
        list(pool.map(make, range(have, count)))
    groups = []
    for page in client.get_paginator("describe_security_groups").paginate(
        Filters=[{"Name": "group-name", "Values": ["bench-*"]}]
    ):
        groups += [g["GroupId"] for g in page["SecurityGroups"]]
    return groups


LUA = """
local reqs = {}
%s
local parts = %d
local n = #reqs
local i = 0
local counter = 0
setup = function(thread)
  -- parts == 1: every thread cycles through all requests, from its own offset;
  -- parts == threads: each thread cycles through its own slice, from its start
  if parts == 1 then
    thread:set("base", 0)
    thread:set("offset", counter * 7919)
    thread:set("span", n)
  else
    thread:set("base", counter * math.floor(n / parts))
    thread:set("offset", 0)
    thread:set("span", math.floor(n / parts))
  end
  counter = counter + 1
end
request = function()
  i = i + 1
  local r = reqs[base + ((i + offset) %% span) + 1]
  return wrk.format("POST", "/", r[2], r[1])
end
"""
THREADS = 2
WRITE_LAG = 64  # a rule is revoked this many requests after it was authorized


def lua_string(s: str) -> str:
    return "[==[" + s + "]==]"


def write_script(path: Path, signed: list[tuple[str, dict[str, str]]], parts: int = 1) -> None:
    """A wrk script replaying ``signed``; ``parts``: 1, or one slice per wrk thread."""
    lines = []
    for body, headers in signed:
        hdrs = ", ".join(f"[ {lua_string(k)} ] = {lua_string(v)}" for k, v in headers.items())
        lines.append(f"reqs[#reqs + 1] = {{{lua_string(body)}, {{{hdrs}}}}}")
    path.write_text(LUA % ("\n".join(lines), parts))


def lagged(pairs: list[tuple[Any, Any]], lag: int) -> list[Any]:
    """Authorize/revoke pairs in the order A0..A(lag-1), R0, A(lag), R1, ...: a rule is
    revoked ``lag`` requests after it was authorized, so with a few requests in flight the
    revoke never overtakes its authorize (and no two connections touch one rule at once)."""
    out: list[Any] = [a for a, _ in pairs[:lag]]
    for i, (_, revoke) in enumerate(pairs):
        out.append(revoke)
        if i + lag < len(pairs):
            out.append(pairs[i + lag][0])
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quiesce(pid: int, limit: float = 30.0) -> None:
    """Wait (at most ``limit`` seconds) until the server ``pid`` is idle: when wrk stops, a
    slow server still works through the requests it has taken (moto, at 10,000 groups,
    for seconds), and that must not eat into the next server's turn."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu_seconds(pid)
        if now - last < 0.005:  # under 5% of a core over the last 0.1 s
            return
        last = now


def run_wrk(url: str, script: Path, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", "-c8", f"-d{seconds}s", "--latency", "-s", str(script), url + "/"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def median(slices: list[dict[str, float]]) -> dict[str, Any]:
    """One figure from several wrk runs: the median of each, answers counted in all."""
    import statistics

    out: dict[str, Any] = {
        key: statistics.median(s[key] for s in slices) for key in ("rps", "p50_ms", "p99_ms")
    }
    out["non_2xx"] = sum(int(s["non_2xx"]) for s in slices)
    out["slices_rps"] = [s["rps"] for s in slices]
    return out


WORKLOADS = ("describe-by-id", "describe-filter", "describe-rules", "write-mix")
BARE_WORKLOADS = ("describe-by-id", "write-mix")  # what bench/bare_server.py answers


def workloads_of(target: Target) -> tuple[str, ...]:
    return BARE_WORKLOADS if target.name == "bare" else WORKLOADS


def start_bare(tmp: str) -> Target:
    """``bench/bare_server.py``: SigV4 and one SQLite read or write per request, no more."""
    import bare_server

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare_server.py"), "--port", str(port), "--db",
         os.path.join(tmp, "bare.db")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", proc)
    return Target("bare", url, bare_server.KEY, bare_server.SECRET, proc)


ROUNDS = 3  # slices per workload and server in bench/run.py (see measure)


def workloads(target: Target, groups: list[str], n: int, salt: int = 0) -> dict[str, list]:
    """Pre-signed requests per workload (signatures stay valid for 5 minutes); ``salt``
    gives the write mix rules of its own (ports of another range)."""
    picks = [groups[(i * 7919) % len(groups)] for i in range(n)]
    by_id = [target.sign({"Action": "DescribeSecurityGroups", "GroupId.1": g}) for g in picks]
    by_filter = [
        target.sign(
            {
                "Action": "DescribeSecurityGroups",
                "Filter.1.Name": "group-name",
                "Filter.1.Value.1": f"bench-{(i * 7919) % len(groups)}",
            }
        )
        for i in range(n)
    ]
    rules = [
        target.sign(
            {
                "Action": "DescribeSecurityGroupRules",
                "Filter.1.Name": "group-id",
                "Filter.1.Value.1": g,
            }
        )
        for g in picks
    ]
    pairs = []
    for i in range(n // 2):
        g = picks[i]
        perm = {
            "GroupId": g,
            "IpPermissions.1.IpProtocol": "udp",
            "IpPermissions.1.FromPort": str(1000 + salt * (n // 2) + i),
            "IpPermissions.1.ToPort": str(1000 + salt * (n // 2) + i),
            "IpPermissions.1.IpRanges.1.CidrIp": "192.0.2.0/24",
        }
        pairs.append(
            (
                target.sign({"Action": "AuthorizeSecurityGroupIngress", **perm}),
                target.sign({"Action": "RevokeSecurityGroupIngress", **perm}),
            )
        )
    # one slice of distinct rules per wrk thread, each in lagged order
    size = len(pairs) // THREADS
    writes = [
        r for t in range(THREADS) for r in lagged(pairs[t * size : (t + 1) * size], WRITE_LAG)
    ]
    return {
        "describe-by-id": by_id,
        "describe-filter": by_filter,
        "describe-rules": rules,
        "write-mix": writes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a 1-minute smoke run")
    ap.add_argument("--sizes", default="", help="comma-separated group counts")
    args = ap.parse_args()
    sizes = [100] if args.quick else [100, 1000, 10000]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    seconds = 2 if args.quick else 5
    signed_n = 200 if args.quick else 2000
    tmp = tempfile.mkdtemp(prefix="stockade-bench-")
    targets = [start_stockade(tmp), start_moto()]
    results: list[dict] = []
    have = {t.name: 0 for t in targets}
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("api capacity", total=len(sizes) * len(targets) * 5)
            for size in sizes:
                for t in targets:
                    progress.update(task, description=f"{t.name}: {size} groups")
                    groups = populate(t, size, have[t.name])
                    have[t.name] = size
                    progress.advance(task)
                    for name, reqs in workloads(t, groups, signed_n).items():
                        progress.update(task, description=f"{t.name} {size}: {name}")
                        script = Path(tmp) / f"{t.name}-{name}.lua"
                        write_script(script, reqs, THREADS if name == "write-mix" else 1)
                        stats = run_wrk(t.url, script, seconds)
                        results.append(
                            {"server": t.name, "groups": size, "workload": name, **stats}
                        )
                        progress.advance(task)
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results)


def measure(
    sizes: list[int],
    seconds: int,
    signed_n: int,
    progress: Progress | None = None,
    workers: int = 1,
) -> list[dict]:
    """The whole measurement for ``bench/run.py``: like :func:`main`, but moto runs as
    ``bench/moto_server.py`` (moto's own server) and is filled in-process through its
    backend (``POST /_bench/fill``) instead of one API call at a time, so that 10,000
    groups take seconds instead of minutes. Stockade is filled through its API. With
    ``workers`` > 1, a second Stockade (``serve --workers N``) is measured too."""
    import contextlib

    tmp = tempfile.mkdtemp(prefix="stockade-bench-")
    targets: list[Target] = []
    results: list[dict] = []
    with contextlib.ExitStack() as stack:  # runs every clean-up, even if one is interrupted
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        targets.append(start_stockade(tmp))
        stack.callback(targets[-1].stop)
        if workers > 1:
            targets.append(start_stockade(tmp, workers))
            stack.callback(targets[-1].stop)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "moto_server.py"), "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        moto = Target(
            "moto",
            f"http://127.0.0.1:{port}",
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            proc,
        )
        targets.append(moto)
        stack.callback(moto.stop)
        wait_http(moto.url + "/moto-api/", proc)
        bare = start_bare(tmp)
        targets.append(bare)
        stack.callback(bare.stop)
        rounds = ROUNDS if seconds >= ROUNDS else 1
        steps = len(sizes) * sum(1 + len(workloads_of(t)) * rounds for t in targets)
        task = progress.add_task("api capacity", total=steps) if progress else None

        def step(description: str | None = None) -> None:
            if progress is not None and task is not None:
                if description is None:
                    progress.advance(task)
                else:
                    progress.update(task, description=description)

        have = {t.name: 0 for t in targets}
        filled: dict[str, list[str]] = {}
        for size in sizes:
            signed: dict[str, list[dict[str, list]]] = {}
            for t in targets:
                step(f"capacity: filling {t.name} to {size}")
                if t.name == "bare":  # holds no groups: it is sent Stockade's ids
                    groups = filled["stockade"]
                elif t.name == "moto":
                    resp = httpx.post(
                        t.url + "/_bench/fill",
                        json={"start": have["moto"], "count": size},
                        timeout=900,
                    )
                    resp.raise_for_status()
                    groups = resp.json()["groups"]
                else:
                    groups = populate(t, size, have[t.name])
                have[t.name] = size
                filled[t.name] = groups
                if t.name != "bare":  # warm up (moto loads its EC2 responses on first use)
                    t.client().describe_security_groups(GroupIds=groups[:1])
                # each round writes rules of its own (signatures stay valid for 5 minutes)
                signed[t.name] = [workloads(t, groups, signed_n, r) for r in range(rounds)]
                warm = Path(tmp) / f"{t.name}-warm-up.lua"  # 1 s of reads, not recorded
                write_script(warm, signed[t.name][0]["describe-by-id"])
                run_wrk(t.url, warm, 1)
                step()
            # The servers take turns: every workload runs in short slices, server after
            # server, and each server's figure is the median of its slices. A slow spell of
            # this shared machine (its speed drifts 10-40% within minutes) then falls on all
            # of them alike instead of on whichever server ran at the time.
            runs: dict[tuple[str, str], list[dict[str, float]]] = {}
            for r in range(rounds):
                order = targets if r % 2 == 0 else targets[::-1]
                for name in WORKLOADS:
                    for t in order:
                        if name not in workloads_of(t):
                            continue
                        step(f"capacity: {size} groups, {name}, round {r + 1}: {t.name}")
                        script = Path(tmp) / f"{t.name}-{name}.lua"
                        reqs = signed[t.name][r][name]
                        write_script(script, reqs, THREADS if name == "write-mix" else 1)
                        stats = run_wrk(t.url, script, seconds // rounds)
                        quiesce(t.proc.pid)
                        runs.setdefault((t.name, name), []).append(stats)
                        step()
            for (server, name), slices in runs.items():
                results.append(
                    {"server": server, "groups": size, "workload": name} | median(slices)
                )
    return results


def report(results: list[dict]) -> None:
    table = Table(title="API capacity (wrk, 8 connections)")
    for col in (
        "workload",
        "groups",
        "stockade req/s",
        "p50/p99 ms",
        "moto req/s",
        "p50/p99 ms",
        "ratio",
    ):
        table.add_column(col, justify="right")
    index = {(r["server"], r["workload"], r["groups"]): r for r in results}
    for (server, workload, groups), s in index.items():
        if server != "stockade":
            continue
        m = index.get(("moto", workload, groups))
        if m is None:
            continue
        ratio = s["rps"] / m["rps"] if m["rps"] else float("inf")
        table.add_row(
            workload,
            str(groups),
            f"{s['rps']:.0f}",
            f"{s['p50_ms']:.2f}/{s['p99_ms']:.2f}",
            f"{m['rps']:.0f}",
            f"{m['p50_ms']:.2f}/{m['p99_ms']:.2f}",
            f"{ratio:.1f}x",
        )
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "api_capacity.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
