"""API latency as a user sees it: one boto3 client, one call at a time.

The same workload against Stockade, moto and the floor (``floor_server.py``: canned
replies, so what remains is boto3 + HTTP + uvicorn): create N groups; authorize 5 rules on
each in one call (3 CIDR, 2 group references); describe every group, paginated (100 a
page; moto ignores MaxResults and answers everything in one page); revoke the 5 rules;
delete the groups. The three servers run at once and take turns, 50 calls each. Per call:
mean, p50, p99 by operation, and the ratio to the floor.
``python bench/api_latency.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from common import (
    ROOT,
    Section,
    Summary,
    console,
    fmt,
    free_port,
    percentile,
    ratio,
    start_stockade,
    stop_process,
    table,
    track,
    wait_http,
)
from rich.progress import Progress

OPS = ("create", "authorize", "describe page", "revoke", "delete")
PAGE = 100


def permissions(i: int, ids: list[str]) -> list[dict[str, Any]]:
    """The 5 rules of group ``i``: three CIDR, two references to other groups."""

    def rule(proto: str, port: int, **peer: Any) -> dict[str, Any]:
        return {"IpProtocol": proto, "FromPort": port, "ToPort": port, **peer}

    n = len(ids)
    return [
        rule("tcp", 22, IpRanges=[{"CidrIp": "10.1.0.0/16"}]),
        rule("tcp", 443, IpRanges=[{"CidrIp": "0.0.0.0/0"}]),
        rule("udp", 53, IpRanges=[{"CidrIp": f"10.{i % 250}.0.0/16"}]),
        rule("tcp", 8080, UserIdGroupPairs=[{"GroupId": ids[(i + 1) % n]}]),
        rule("tcp", 5432, UserIdGroupPairs=[{"GroupId": ids[(i + 7) % n]}]),
    ]


def workload(client: Any, n: int, times: dict[str, list[float]]) -> Iterator[None]:
    """The workload, one call per step (so servers can take turns); seconds per call, by
    operation, go to ``times``."""

    def timed(op: str, fn: Callable[..., Any], **kw: Any) -> Any:
        start = time.perf_counter()
        out = fn(**kw)
        times.setdefault(op, []).append(time.perf_counter() - start)
        return out

    client.describe_security_groups(MaxResults=5)  # warm up: connection, lazy loading
    ids = []
    for i in range(n):
        ids.append(
            timed(
                "create",
                client.create_security_group,
                GroupName=f"lat-{i}",
                Description="latency",
            )["GroupId"]
        )
        yield
    for i, gid in enumerate(ids):
        timed(
            "authorize",
            client.authorize_security_group_ingress,
            GroupId=gid,
            IpPermissions=permissions(i, ids),
        )
        yield
    token, seen = None, 0
    for _ in range(n // PAGE + 10):  # bounded
        kw: dict[str, Any] = {"MaxResults": PAGE}
        if token:
            kw["NextToken"] = token
        page = timed("describe page", client.describe_security_groups, **kw)
        seen += len(page["SecurityGroups"])
        token = page.get("NextToken")
        yield
        if not token:
            break
    for i, gid in enumerate(ids):
        timed(
            "revoke",
            client.revoke_security_group_ingress,
            GroupId=gid,
            IpPermissions=permissions(i, ids),
        )
        yield
    for gid in ids:
        timed("delete", client.delete_security_group, GroupId=gid)
        yield
    if seen < n:
        raise RuntimeError(f"describe saw {seen} groups of {n}")


def _client(url: str, key: str, secret: str) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=BotoConfig(retries={"max_attempts": 1}),
    )


def _serve(args: list[str], probe: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = track(
        subprocess.Popen(
            [sys.executable, *args, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + probe, proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc, url


def stats(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "calls": len(ms),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "total_s": sum(samples),
    }


TURN = 50  # calls a server gets before the next one takes its turn


def run(quick: bool, progress: Progress | None = None) -> Section:
    n = 50 if quick else 1000
    servers = ("stockade", "moto", "floor")
    task = progress.add_task("api latency", total=4 * n * len(servers)) if progress else None
    if progress is not None and task is not None:
        progress.update(task, description=f"latency: {', '.join(servers)}, {n} groups")
    times: dict[str, dict[str, list[float]]] = {name: {op: [] for op in OPS} for name in servers}
    with contextlib.ExitStack() as stack:  # every server stopped, even on errors
        steps: dict[str, Iterator[None]] = {}
        for name in servers:
            if name == "stockade":
                server = start_stockade()
                stack.callback(server.stop)
                client = _client(server.url, server.key, server.secret)
            else:
                if name == "moto":
                    cmd = ["-m", "moto.server", "-p"]
                    probe = "/moto-api/"
                else:
                    cmd = [str(ROOT / "bench" / "floor_server.py"), "--groups", str(n), "--port"]
                    probe = "/"
                proc, url = _serve(cmd, probe)
                stack.callback(stop_process, proc)
                client = _client(url, "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY")
            steps[name] = workload(client, n, times[name])
        # The servers take turns, TURN calls each, so that a slow spell of this shared
        # machine (its speed drifts 10-40% within minutes) falls on all of them alike
        # instead of on whichever server ran its whole workload at the time.
        while steps:
            for name in list(steps):
                for _ in range(TURN):
                    if next(steps[name], "done") == "done":
                        del steps[name]
                        break
                    if progress is not None and task is not None:
                        progress.advance(task)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in servers:
        every = [t for op in OPS for t in times[name][op]]
        writes = [t for op in OPS if op != "describe page" for t in times[name][op]]
        results[name] = {op: stats(times[name][op]) for op in OPS}
        results[name]["all calls"] = stats(every)
        results[name]["writes"] = stats(writes)
    return report(results, n)


def report(results: dict[str, dict[str, dict[str, float]]], n: int) -> Section:
    section = Section("api_latency", data={"groups": n, "results": results})
    t = table(
        f"API latency through boto3, {n} groups (per call, ms: mean / p50 / p99)",
        "operation",
        "Stockade",
        "moto",
        "floor",
        "Stockade/floor",
        "moto/floor",
    )

    def cell(s: dict[str, float]) -> str:
        return f"{fmt(s['mean_ms'])} / {fmt(s['p50_ms'])} / {fmt(s['p99_ms'])}"

    for op in (*OPS, "writes", "all calls"):
        s, m, f = (results[x][op] for x in ("stockade", "moto", "floor"))
        t.add_row(
            op,
            cell(s),
            cell(m),
            cell(f),
            f"{fmt(ratio(s['mean_ms'], f['mean_ms']))}x",
            f"{fmt(ratio(m['mean_ms'], f['mean_ms']))}x",
        )
    s, m, f = (results[x]["all calls"] for x in ("stockade", "moto", "floor"))
    t.add_row(
        "whole workload, s",
        fmt(s["total_s"]),
        fmt(m["total_s"]),
        fmt(f["total_s"]),
        f"{fmt(ratio(s['total_s'], f['total_s']))}x",
        f"{fmt(ratio(m['total_s'], f['total_s']))}x",
    )
    section.tables.append(t)
    sw, fw, mw = (results[x]["writes"] for x in ("stockade", "floor", "moto"))
    section.summary += [
        Summary(
            "latency: write call mean (ms), vs floor",
            fmt(sw["mean_ms"]),
            f"floor {fmt(fw['mean_ms'])}",
            f"{fmt(ratio(sw['mean_ms'], fw['mean_ms']))}x",
            "<= 1.5x",
        ),
        Summary(
            "latency: write call mean (ms), vs moto",
            fmt(sw["mean_ms"]),
            f"moto {fmt(mw['mean_ms'])}",
            f"{fmt(ratio(sw['mean_ms'], mw['mean_ms']))}x",
        ),
        Summary(
            f"latency: whole workload ({n} groups, s)",
            fmt(s["total_s"]),
            f"floor {fmt(f['total_s'])}",
            f"{fmt(ratio(s['total_s'], f['total_s']))}x",
        ),
    ]
    return section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="50 groups instead of 1,000")
    args = ap.parse_args()
    with Progress(console=console, transient=True) as progress:
        section = run(args.quick, progress)
    section.show()
    section.write()


if __name__ == "__main__":
    main()
