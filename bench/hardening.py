"""API hardening: what hostile requests cost the server, and everyone else.

1. Bodies: ten connections at once each send a 1 GiB body (quick: 8 MiB), generated as it
   is sent, never held in memory, to 127.0.0.1: unsigned with a Content-Length, unsigned
   chunked, and signed (a valid Authorization header) chunked. The server's RSS is sampled
   every 5 ms; the table shows its rise over the idle server (goal <= 20 MiB), how long
   the refusals took and how much of the bodies the server let through before closing.
2. Filters: one account keeps sending the worst filters it may (200 wildcard values such
   as ``*a*a*a*a*a*a*a*b??``, against 255-character descriptions) over its groups (2,500,
   the region's quota; quick: 100) from two processes, while another account calls
   DescribeRegions one call at a time: p50/p99 against the same calls on an idle server
   (goal p99 <= 50 ms).

``python bench/hardening.py [--quick]``.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import time
import urllib.parse
from typing import Any

from common import Section, Summary, fmt, percentile, run_alone, start_stockade, table
from rich.progress import Progress

MiB = 1024 * 1024
CONNECTIONS = 10
PIECE = b"a" * (256 * 1024)  # one piece of every generated body, sent again and again
WORST = ["*a*a*a*a*a*a*a*b" + "?" * k for k in range(200)]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """The largest RSS of ``pid`` seen while the ``with`` block runs (every 5 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self._stop.wait(0.005)

    def __enter__(self) -> RssSampler:
        self.peak = rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kib(self.pid))


def _signed_headers(url: str, key: str, secret: str) -> dict[str, str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(
        method="POST",
        url=url + "/",
        data=b"Action=DescribeRegions&Version=2016-11-15",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    SigV4Auth(Credentials(key, secret), "ec2", "us-east-1").add_auth(req)
    headers = dict(req.prepare().headers)
    headers.pop("Content-Length", None)
    return headers


def send_body(url: str, headers: dict[str, str], size: int, chunked: bool) -> dict[str, Any]:
    """POST a generated ``size``-byte body; stop when the server answers or hangs up."""
    parts = urllib.parse.urlsplit(url)
    head = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host")
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {size}\r\n"
    started = time.perf_counter()
    sent = 0
    reply = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall((head + "\r\n").encode("latin-1"))
        frame = f"{len(PIECE):x}\r\n".encode() + PIECE + b"\r\n" if chunked else PIECE
        sock.setblocking(False)
        try:
            while sent < size:
                try:
                    reply += sock.recv(65536)
                    if reply:
                        break  # answered: no point sending on
                except BlockingIOError:
                    pass
                sock.settimeout(30)
                sock.sendall(frame)
                sock.setblocking(False)
                sent += len(PIECE)
        except OSError:
            pass  # the server closed the connection while the body was coming
        sock.settimeout(10)
        try:
            while b"\r\n\r\n" not in reply:
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
        except OSError:
            pass
    status = reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/1.1 ") else "-"
    return {"status": status, "sent": sent, "seconds": time.perf_counter() - started}


def bodies(server: Any, quick: bool, progress: Progress | None) -> dict[str, Any]:
    size = 8 * MiB if quick else 1024 * MiB
    kinds = {
        "unsigned, Content-Length": ({"Content-Type": "application/x-www-form-urlencoded"}, False),
        "unsigned, chunked": ({"Content-Type": "application/x-www-form-urlencoded"}, True),
        "signed, chunked": (_signed_headers(server.url, server.key, server.secret), True),
    }
    rows = []
    task = progress.add_task("hardening: bodies", total=len(kinds)) if progress else None
    server.client().describe_regions()  # warm: the first request loads the model
    idle = rss_kib(server.proc.pid)
    for label, (headers, chunked) in kinds.items():
        results: list[dict[str, Any]] = []

        def one(h: dict[str, str] = headers, c: bool = chunked, out: list = results) -> None:
            out.append(send_body(server.url, h, size, c))

        with RssSampler(server.proc.pid) as rss:
            threads = [threading.Thread(target=one) for _ in range(CONNECTIONS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        rows.append(
            {
                "kind": label,
                "body_mib": size / MiB,
                "statuses": sorted({r["status"] for r in results}),
                "rss_rise_mib": max(0, rss.peak - idle) / 1024,
                "slowest_s": max(r["seconds"] for r in results),
                "sent_mib": sum(r["sent"] for r in results) / MiB,
            }
        )
        if progress and task is not None:
            progress.advance(task)
    alive = server.client().describe_regions()["Regions"] != []
    return {"idle_rss_mib": idle / 1024, "rows": rows, "alive": alive}


def _hammer(url: str, key: str, secret: str, stop: Any, done: Any) -> None:
    """A process sending worst-case filters until ``stop`` is set."""
    import boto3
    from botocore.config import Config as BotoConfig

    ec2 = boto3.client(
        "ec2",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=BotoConfig(retries={"max_attempts": 1}, read_timeout=120),
    )
    while not stop.is_set():
        started = time.perf_counter()
        ec2.describe_security_groups(Filters=[{"Name": "description", "Values": WORST}])
        done.put(time.perf_counter() - started)


def filters(server: Any, quick: bool, progress: Progress | None) -> dict[str, Any]:
    from stockade import accounts
    from stockade.store.db import Store

    groups = 100 if quick else 2499  # with the default group: the region quota, 2,500
    calls = 40 if quick else 300
    task = progress.add_task("hardening: filters", total=groups + 2 * calls) if progress else None
    heavy = server.client()
    for i in range(groups):
        heavy.create_security_group(GroupName=f"g{i}", Description="a" * 255)
        if progress and task is not None:
            progress.advance(task)
    store = Store(f"sqlite:///{server.data_dir}/stockade.db")
    try:
        other_acct = accounts.create(store, "other")
    finally:
        store.dispose()
    import boto3
    from botocore.config import Config as BotoConfig

    other = boto3.client(
        "ec2",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=other_acct.access_key_id,
        aws_secret_access_key=other_acct.secret_access_key,
        config=BotoConfig(retries={"max_attempts": 1}),
    )

    def regions() -> list[float]:
        out = []
        for _ in range(calls):
            started = time.perf_counter()
            other.describe_regions()
            out.append((time.perf_counter() - started) * 1000)
            if progress and task is not None:
                progress.advance(task)
        return out

    other.describe_regions()
    idle = regions()
    ctx = multiprocessing.get_context("spawn")
    stop, done = ctx.Event(), ctx.Queue()
    senders = [
        ctx.Process(target=_hammer, args=(server.url, server.key, server.secret, stop, done))
        for _ in range(2)
    ]
    for p in senders:
        p.start()
    try:
        first = done.get(timeout=300)  # the heavy requests are flowing
        loaded = regions()
    finally:
        stop.set()
        heavy_s = [first]
        while True:
            try:
                heavy_s.append(done.get(timeout=1))
            except Exception:  # noqa: BLE001 - queue.Empty: the senders are done
                if not any(p.is_alive() for p in senders):
                    break
        for p in senders:
            p.join(120)
            if p.is_alive():
                p.kill()
    return {
        "groups": groups,
        "calls": calls,
        "idle_p50_ms": percentile(idle, 50),
        "idle_p99_ms": percentile(idle, 99),
        "loaded_p50_ms": percentile(loaded, 50),
        "loaded_p99_ms": percentile(loaded, 99),
        "heavy_requests": len(heavy_s),
        "heavy_p50_ms": percentile([s * 1000 for s in heavy_s], 50),
    }


def run(quick: bool, progress: Progress | None = None) -> Section:
    server = start_stockade()
    try:
        b = bodies(server, quick, progress)
        f = filters(server, quick, progress)
    finally:
        server.stop()
    section = Section("hardening", data={"bodies": b, "filters": f})
    t = table(
        f"Hostile bodies: {CONNECTIONS} connections at once, "
        f"{fmt(b['rows'][0]['body_mib'], 0)} MiB each (idle RSS {fmt(b['idle_rss_mib'], 1)} MiB)",
        "body",
        "answers",
        "RSS rise MiB",
        "slowest refusal s",
        "MiB sent before the server hung up",
    )
    for r in b["rows"]:
        t.add_row(
            r["kind"],
            ", ".join(r["statuses"]),
            fmt(r["rss_rise_mib"], 1),
            fmt(r["slowest_s"], 3),
            fmt(r["sent_mib"], 1),
        )
    section.tables.append(t)
    t = table(
        f"Another account's DescribeRegions while one sends worst-case filters "
        f"({f['groups']:,} groups, 200 wildcard values, 2 processes)",
        "server",
        "calls",
        "p50 ms",
        "p99 ms",
    )
    t.add_row("idle", str(f["calls"]), fmt(f["idle_p50_ms"]), fmt(f["idle_p99_ms"]))
    t.add_row("under attack", str(f["calls"]), fmt(f["loaded_p50_ms"]), fmt(f["loaded_p99_ms"]))
    section.tables.append(t)
    section.notes.append(
        f"worst-case filter requests answered meanwhile: {f['heavy_requests']}, "
        f"p50 {fmt(f['heavy_p50_ms'])} ms each; the server answered after the bodies: "
        f"{'yes' if b['alive'] else 'NO'}"
    )
    rise = max(r["rss_rise_mib"] for r in b["rows"])
    section.summary.append(
        Summary(
            "hardening",
            f"RSS +{fmt(rise, 1)} MiB",
            f"{CONNECTIONS} x {fmt(b['rows'][0]['body_mib'], 0)} MiB bodies",
            "-",
            "<= 20 MiB",
        )
    )
    section.summary.append(
        Summary(
            "hardening",
            f"p99 {fmt(f['loaded_p99_ms'])} ms",
            f"idle p99 {fmt(f['idle_p99_ms'])} ms",
            f"{fmt(f['loaded_p99_ms'] / f['idle_p99_ms'], 1)}x" if f["idle_p99_ms"] else "-",
            "<= 50 ms",
        )
    )
    return section


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_alone(run, __doc__)
