"""Fan-out: simulated agents long-polling several servers on one PostgreSQL (issue 14).

Each simulated agent is a lightweight async httpx long poller on the real agent endpoint
(``GET /_stockade/v1/hosts/{host}/state?since=R&wait=25`` with the agent token), listing
every server and failing over on a connection error or 5xx (resuming from its revision).
Agents are spread over 1, 2 and 4 ``stockade serve`` processes on one PostgreSQL. Figures:
the time from a write's acknowledgement until every agent holds its revision (p50, p99,
max over the agents), the servers' CPU per woken agent, and the failover time from kill -9
of a server until all its agents have an answer from another.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
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
    wait_http,
)
from fuzz import postgres
from rich.progress import Progress


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(db_url: str) -> tuple[str, subprocess.Popen, str]:
    data = tempfile.mkdtemp(prefix="stockade-fanout-")
    port = free_port()
    log = open(os.path.join(data, "server.log"), "wb")  # noqa: SIM115 - the child keeps it
    cmd = [str(BIN / "stockade"), "serve", "--port", str(port), "--data-dir", data]
    proc = track(
        subprocess.Popen(cmd + ["--database-url", db_url], stdout=log, stderr=subprocess.STDOUT)
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_stockade/health", proc)
    return url, proc, data


class Agent:
    def __init__(self, host: str, servers: list[str], first: int, token: str) -> None:
        self.host, self.servers, self.at = host, servers, first
        self.headers = {"authorization": f"Bearer {token}"}
        self.revision = -1
        self.held: dict[int, float] = {}  # revision -> when it was first held
        self.answered_by: str = servers[first]
        self.answered_at = 0.0

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        backoff = 0.05
        while not stop.is_set():
            url = self.servers[self.at]
            # after a failure, first a plain read (resuming: is it current?), then long polls
            wait = 25 if backoff == 0.05 else 0
            params: dict[str, Any] = {"since": self.revision, "wait": wait}
            if self.revision < 0:
                params = {}
            try:
                r = await client.get(
                    f"{url}/_stockade/v1/hosts/{self.host}/state",
                    params=params,
                    headers=self.headers,
                )
                if r.status_code >= 500:
                    raise httpx.HTTPError(str(r.status_code))
                rev = r.json()["revision"]
            except (httpx.HTTPError, ValueError):
                if stop.is_set():
                    return
                self.at = (self.at + 1) % len(self.servers)
                await asyncio.sleep(backoff * (0.5 + os.urandom(1)[0] / 255))
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            now = time.monotonic()
            self.answered_by, self.answered_at = url, now
            if rev > self.revision:
                self.revision = rev
                self.held.setdefault(rev, now)


async def _wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)  # the bench's own poll of its agents (no server cost)
    return True


async def _scenario(
    db_url: str, urls: list[str], procs: list[subprocess.Popen], agents_n: int, failover: bool
) -> dict[str, Any]:
    import boto3

    from stockade import accounts
    from stockade.store.db import Store, agent_token

    store = Store(db_url)
    acct = accounts.create(store, f"f{os.urandom(4).hex()}")
    token = agent_token(store)
    ec2 = boto3.client(
        "ec2",
        endpoint_url=urls[0],
        region_name="us-east-1",
        aws_access_key_id=acct.access_key_id,
        aws_secret_access_key=acct.secret_access_key,
    )
    gid = ec2.create_security_group(GroupName="fan", Description="d")["GroupId"]
    agents = [Agent(f"h{i}", urls, i % len(urls), token) for i in range(agents_n)]
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    out: dict[str, Any] = {"agents": agents_n, "servers": len(urls)}
    # a connection pool of its own per 25 agents: one pool of thousands of connections
    # costs the client O(connections) per request
    clients = [httpx.AsyncClient(limits=limits, timeout=40) for _ in range((agents_n + 24) // 25)]
    async with contextlib.AsyncExitStack() as stack:
        for c in clients:
            await stack.enter_async_context(c)
        tasks = [asyncio.create_task(a.run(clients[i // 25], stop)) for i, a in enumerate(agents)]
        start_rev = store.revision()
        await _wait(lambda: all(a.revision >= start_rev for a in agents), 120)
        samples: list[float] = []
        cpu_per: list[float] = []
        for n in range(3):
            cpu0 = sum(_cpu(p.pid) for p in procs)
            await asyncio.to_thread(
                ec2.authorize_security_group_ingress,
                GroupId=gid, IpProtocol="tcp", FromPort=n + 1, ToPort=n + 1, CidrIp="10.0.0.0/8",
            )  # fmt: skip
            acked = time.monotonic()
            rev = store.revision()
            await _wait(lambda rev=rev: all(a.revision >= rev for a in agents), 60)
            samples += [min(t for r, t in a.held.items() if r >= rev) - acked for a in agents]
            cpu_per.append((sum(_cpu(p.pid) for p in procs) - cpu0) / agents_n)
        out.update(
            p50_ms=percentile(samples, 50) * 1000,
            p99_ms=percentile(samples, 99) * 1000,
            max_ms=max(samples) * 1000,
            cpu_us_per_agent=sum(cpu_per) / len(cpu_per) * 1e6,
        )
        if failover and len(urls) > 1:
            victim = urls[0]
            theirs = [a for a in agents if a.answered_by == victim]
            killed = time.monotonic()
            os.kill(procs[0].pid, signal.SIGKILL)
            procs[0].wait(10)
            ok = await _wait(
                lambda: all(a.answered_by != victim and a.answered_at > killed for a in theirs),
                30,
            )
            out["failover_s"] = time.monotonic() - killed if ok else float("nan")
            out["failed_over"] = len(theirs)
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    store.dispose()
    return out


def run(quick: bool, progress: Progress) -> Section:
    plan = [(100, 2)] if quick else [(n, s) for n in (1000, 5000) for s in (1, 2, 4)]
    rows = []
    task = progress.add_task("fan-out", total=len(plan))
    with postgres() as db_url:
        if db_url is None:
            return Section("fanout", notes=["PostgreSQL is not installed"])
        for agents_n, servers_n in plan:
            started = [_serve(db_url) for _ in range(servers_n)]
            try:
                rows.append(
                    asyncio.run(
                        _scenario(
                            db_url,
                            [u for u, _, _ in started],
                            [p for _, p, _ in started],
                            agents_n,
                            failover=servers_n > 1,
                        )
                    )
                )
            finally:
                for _, proc, data in started:
                    if proc.poll() is None:
                        stop_process(proc)
                    shutil.rmtree(data, ignore_errors=True)
            progress.advance(task)
    t = table(
        "Fan-out: a write until every agent holds it (PostgreSQL)",
        "agents", "servers", "p50 ms", "p99 ms", "max ms", "CPU µs/agent", "failover s",
    )  # fmt: skip
    for r in rows:
        t.add_row(
            str(r["agents"]), str(r["servers"]), fmt(r["p50_ms"], 1), fmt(r["p99_ms"], 1),
            fmt(r["max_ms"], 1), fmt(r["cpu_us_per_agent"], 0),
            fmt(r.get("failover_s", float("nan"))),
        )  # fmt: skip
    section = Section("fanout", tables=[t], data={"runs": rows})
    for r in rows:
        goal = 250 if r["agents"] <= 1000 else 1000
        section.summary.append(
            Summary(
                f"fan-out p99, {r['agents']} agents on {r['servers']} server(s)",
                f"{fmt(r['p99_ms'], 1)} ms",
                "Typha: a fan-out tier because agents overload the datastore",
                "",
                f"<= {goal} ms",
            )
        )
    return section


if __name__ == "__main__":
    from common import run_alone

    run_alone(run, __doc__)
