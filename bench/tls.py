"""What TLS costs: ``stockade serve --tls`` beside a plain ``stockade serve``.

Both servers run at once and take turns, call by call: boto3 DescribeSecurityGroups on a
kept-alive connection (what the AWS CLI, Terraform and test suites do), an agent-endpoint
read (``GET /_stockade/v1/changes``) on a kept-alive connection, and a new connection per
request (the TLS handshake included). p50/p99 per kind, http vs https.
``python bench/tls.py [--quick]``.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from common import (
    BIN,
    Section,
    Summary,
    fmt,
    free_port,
    percentile,
    stop_process,
    table,
    track,
)
from rich.progress import Progress


def _start(tls: bool) -> tuple[str, str, subprocess.Popen]:
    data = tempfile.mkdtemp(prefix="stockade-bench-tls-")
    port = free_port()
    args = [str(BIN / "stockade"), "serve", "--port", str(port), "--data-dir", data]
    log = open(os.path.join(data, "server.log"), "wb")  # noqa: SIM115 - the child keeps it
    proc = track(subprocess.Popen([*args, *(["--tls"] if tls else [])], stdout=log, stderr=log))
    log.close()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(Path(data, "server.log").read_text())
        try:
            httpx.get(url + "/_stockade/health", verify=False, timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.05)
    return url, data, proc


def _clients(url: str, data: str) -> dict[str, Callable[[], Any]]:
    import boto3
    from botocore.config import Config as BotoConfig

    from stockade import accounts, tls
    from stockade.store.db import Store, agent_token

    store = Store(f"sqlite:///{data}/stockade.db")
    try:
        acct = accounts.create(store, "bench")
        token = agent_token(store)
    finally:
        store.dispose()
    ca = tls.data_ca(data) if url.startswith("https") else None
    # made once for both: an httpx client made with verify=True loads the system's CAs
    # (tens of ms), which would be counted against plain http
    verify = tls.httpx_verify(ca_file=ca) if ca else ssl.create_default_context()
    ec2 = boto3.client(
        "ec2",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=acct.access_key_id,
        aws_secret_access_key=acct.secret_access_key,
        verify=str(ca) if ca else True,
        config=BotoConfig(retries={"max_attempts": 1}),
    )
    headers = {"Authorization": f"Bearer {token}"}
    agent = httpx.Client(base_url=url, headers=headers, verify=verify, timeout=30)

    def fresh() -> Any:
        with httpx.Client(base_url=url, verify=verify, timeout=30) as once:
            return once.get("/_stockade/health").raise_for_status()

    return {
        "DescribeSecurityGroups (boto3, kept alive)": ec2.describe_security_groups,
        "agent read /changes (kept alive)": lambda: agent.get(
            "/_stockade/v1/changes", params={"since": 0, "limit": 100}
        ).raise_for_status(),
        "new connection per request": fresh,
    }


def run(quick: bool, progress: Progress) -> Section:
    calls = 100 if quick else 2000
    servers: dict[str, tuple[str, str, subprocess.Popen]] = {}
    samples: dict[tuple[str, str], list[float]] = {}
    try:
        for scheme, tls in (("http", False), ("https", True)):
            servers[scheme] = _start(tls)
        clients = {scheme: _clients(url, data) for scheme, (url, data, _) in servers.items()}
        kinds = list(clients["http"])
        task = progress.add_task("tls: http vs https", total=calls * len(kinds))
        for kind in kinds:
            for scheme in clients:  # warm up: connections, the server's first requests
                for _ in range(5):
                    clients[scheme][kind]()
            for _ in range(calls):
                for scheme in clients:  # turns, so both see the same machine load
                    start = time.perf_counter()
                    clients[scheme][kind]()
                    samples.setdefault((kind, scheme), []).append(time.perf_counter() - start)
                progress.advance(task)
    finally:
        for _, data, proc in servers.values():
            stop_process(proc)
            shutil.rmtree(data, ignore_errors=True)

    t = table(
        f"TLS cost ({calls} calls each, taking turns)",
        "request",
        "http p50/p99 ms",
        "https p50/p99 ms",
        "p99 added ms",
    )
    results: list[dict[str, Any]] = []
    section = Section("tls", tables=[t], data={"calls": calls, "results": results})
    for kind in kinds:
        row: dict[str, Any] = {"request": kind}
        for scheme in ("http", "https"):
            ms = [s * 1000 for s in samples[(kind, scheme)]]
            row[f"{scheme}_p50_ms"] = percentile(ms, 50)
            row[f"{scheme}_p99_ms"] = percentile(ms, 99)
        added = row["https_p99_ms"] - row["http_p99_ms"]
        results.append(row)
        t.add_row(
            kind,
            f"{fmt(row['http_p50_ms'])}/{fmt(row['http_p99_ms'])}",
            f"{fmt(row['https_p50_ms'])}/{fmt(row['https_p99_ms'])}",
            f"{added:+.2f}",
        )
        section.summary.append(
            Summary(
                f"tls: {kind}, p99 over https (ms)",
                fmt(row["https_p99_ms"]),
                f"http {fmt(row['http_p99_ms'])}",
                f"{added:+.2f} ms",
                "<= +2 ms" if "kept alive" in kind else "",
            )
        )
    return section


if __name__ == "__main__":
    from common import run_alone

    run_alone(run, __doc__)
