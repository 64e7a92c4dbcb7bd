"""The agent under failure: its backoff policy (a pure unit, seeded), how it tells failures
apart, and what it reports (a real server, a real agent over the in-memory nftables of
dataplane/fake.py; no root needed)."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import threading
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import update

from stockade.cli.agent import agent_error_cell
from stockade.dataplane.agent import Agent
from stockade.dataplane.backoff import (
    DECODE,
    INTERNAL,
    KERNEL,
    REJECTED,
    TRANSPORT,
    Backoff,
    RecordError,
    classify,
)
from stockade.dataplane.fake import FakeNft
from stockade.dataplane.nft import NftError
from stockade.store import schema
from stockade.store.db import agent_token

from conftest import BIN, Server, free_port, start_server, stop_server, wait_until

# -- the backoff policy ---------------------------------------------------------------------


def test_the_ceiling_doubles_from_the_base_to_the_cap() -> None:
    b = Backoff(base=0.5, cap=30.0)
    ceilings = [b.ceiling(n) for n in range(1, 10)]
    assert ceilings[0] == 0.5
    pairs = zip(ceilings, ceilings[1:], strict=False)
    assert all(later == min(2 * earlier, 30.0) for earlier, later in pairs)
    assert ceilings[-1] == 30.0 and b.ceiling(10_000) == 30.0  # capped, never overflows


def test_delays_are_full_jitter_under_the_ceiling_and_seeded() -> None:
    b = Backoff(base=0.5, cap=30.0, rng=random.Random(42))
    delays = [b.next_delay() for _ in range(12)]
    assert b.failures == 12
    for n, delay in enumerate(delays, start=1):
        assert 0.0 <= delay <= b.ceiling(n)
    # the same seed gives the same waits; the draw is uniform over [0, ceiling]
    twin = random.Random(42)
    assert delays == [twin.uniform(0.0, b.ceiling(n)) for n in range(1, 13)]
    again = Backoff(base=0.5, cap=30.0, rng=random.Random(42))
    assert [again.next_delay() for _ in range(12)] == delays


def test_jitter_spreads_agents_over_the_whole_window() -> None:
    """Full jitter: at the cap, waits cover [0, cap] evenly (so agents that lost the same
    server do not come back together), not a narrow band around it."""
    b = Backoff(base=0.5, cap=30.0, rng=random.Random(7))
    for _ in range(10):
        b.next_delay()  # reach the cap
    capped = [b.next_delay() for _ in range(4000)]
    assert min(capped) < 1.0 and max(capped) > 29.0
    assert 14.0 < statistics.fmean(capped) < 16.0


def test_a_success_resets_the_backoff() -> None:
    b = Backoff(base=0.5, cap=30.0, rng=random.Random(1))
    for _ in range(8):
        b.next_delay()
    b.reset()
    assert b.failures == 0
    assert b.next_delay() <= 0.5


def test_a_backoff_needs_a_positive_base_under_the_cap() -> None:
    for base, cap in ((0.0, 1.0), (2.0, 1.0), (-1.0, 5.0)):
        with pytest.raises(ValueError):
            Backoff(base=base, cap=cap)


def test_failures_are_classified() -> None:
    client = httpx.Client(base_url=f"http://127.0.0.1:{free_port()}", timeout=2)
    with client, pytest.raises(httpx.HTTPError) as refused:
        client.get("/")
    assert classify(refused.value) == TRANSPORT  # connection refused

    def status_error(code: int) -> httpx.HTTPStatusError:
        request = httpx.Request("GET", "http://127.0.0.1/x")
        response = httpx.Response(code, request=request)
        with pytest.raises(httpx.HTTPStatusError) as err:
            response.raise_for_status()
        return err.value

    assert classify(status_error(503)) == TRANSPORT
    assert classify(status_error(500)) == TRANSPORT
    assert classify(status_error(401)) == REJECTED
    assert classify(httpx.ReadTimeout("slow")) == TRANSPORT
    assert classify(RecordError("cannot decode group sg-1")) == DECODE
    assert classify(NftError("Error: busy", "delete chain ...")) == KERNEL
    assert classify(ZeroDivisionError()) == INTERNAL


# -- end to end: a real server, the agent, the report ------------------------------------------


@pytest.fixture(scope="module")
def manual_server() -> Iterator[Server]:
    server = start_server(env={"STOCKADE_AUTO_RUN": "0"})
    yield server
    stop_server(server)


class Running:
    """An agent following ``server`` for ``host`` in a thread, over a FakeNft."""

    def __init__(self, server: Server, host: str, **kw: object) -> None:
        self.fake = FakeNft()
        self.agent = Agent(server.url, agent_token(server.store), host, executor=self.fake, **kw)
        self.thread = threading.Thread(target=self.agent.run, kwargs={"poll_wait": 5}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.agent.stop()
        self.thread.join(15)
        self.agent.close()


def reported(http: httpx.Client, host: str) -> dict:
    for item in http.get("/_stockade/v1/status").json()["agents"]:
        if item["host"] == host:
            return item
    return {}


def stockade_status(server: Server) -> str:
    proc = subprocess.run(
        [str(BIN / "stockade"), "status", "--server", server.url, "--data-dir", server.data_dir],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_bad_record_is_reported_and_retried_with_backoff_until_it_is_fixed(manual_server):
    server = manual_server
    acct = server.account()
    ec2 = server.client(acct)
    token = agent_token(server.store)
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    host = f"h-{os.urandom(3).hex()}"
    gid = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=gid, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="192.168.1.130/32"
    )
    iid = ec2.run_instances(ImageId="ami-fba54092", MinCount=1, MaxCount=1, SecurityGroupIds=[gid])[
        "Instances"
    ][0]["InstanceId"]
    claimed = http.post(f"/_stockade/v1/hosts/{host}/claim", json={"limit": 5}).json()
    assert [p["instance_id"] for p in claimed["instances"]] == [iid]
    assert http.post(
        f"/_stockade/v1/instances/{iid}/state", json={"state": "running", "host": host}
    ).is_success
    run = Running(server, host, resync_interval=0, backoff=Backoff(0.05, 0.2, random.Random(5)))

    def corrupt(cidr: str) -> None:
        """Rewrite the rule's source behind the API's back, and log it as a change."""
        r = schema.rules.c
        with server.store.write() as tx:
            tx.conn.execute(update(schema.rules).where(r.group_id == gid).values(cidr_ipv4=cidr))
            tx.log(acct.account_id, "us-east-1", "group.rules", gid)

    try:
        assert run.agent.wait_applied(server.store.revision(), 15)
        wait_until(lambda: reported(http, host).get("revision", -1) >= 0, 15, "a first report")
        good = run.fake.snapshot()
        assert good is not None
        assert any("192.168.1.130/32" in t for _, rules in good["chains"].values() for t in rules)
        full_syncs = run.agent.status.full_syncs

        corrupt("not-a-cidr")
        wait_until(
            lambda: reported(http, host).get("retries", 0) >= 3,
            20,
            "the agent to report a failing retry loop",
        )
        item = reported(http, host)
        assert item["error_kind"] == DECODE and item["last_error_kind"] == DECODE
        assert "not-a-cidr" in item["error"] and gid in item["error"]
        assert 0 <= item["retry_in_s"] <= 0.2  # capped
        assert run.fake.snapshot() == good  # the last good table stays enforced
        assert run.agent.status.full_syncs == full_syncs  # nothing half-applied
        shown = stockade_status(server)
        assert "decode" in shown and "failed in a row" in shown and "agent's log" in shown

        corrupt("10.9.9.0/24")  # repaired
        wait_until(lambda: reported(http, host).get("error", "x") is None, 20, "recovery")
        item = reported(http, host)
        assert item["retries"] == 0 and item["retry_in_s"] is None
        assert run.agent.backoff.failures == 0  # the next failure starts from the base again
        assert item["last_error_kind"] == DECODE and "not-a-cidr" in item["last_error"]
        table = run.fake.snapshot()
        assert table is not None
        assert any("10.9.9.0/24" in t for _, rules in table["chains"].values() for t in rules)
        assert "ok; last decode error" in stockade_status(server)
    finally:
        run.close()
        http.close()


def test_an_unreachable_control_plane_is_a_transport_error_backing_off():
    agent = Agent(
        f"http://127.0.0.1:{free_port()}",
        "token",
        "h-lost",
        executor=FakeNft(),
        resync_interval=0,
        backoff=Backoff(0.01, 0.05, random.Random(3)),
    )
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: agent.status.retries >= 5, 10, "five failed attempts")
        st = agent.status.as_json()
        assert st["error_kind"] == TRANSPORT and "ConnectError" in st["error"]
        assert 0 <= st["retry_in_s"] <= 0.05
        cell = agent_error_cell(st)
        assert "transport" in cell and "stockade serve" in cell and "in a row" in cell
    finally:
        agent.stop()
        thread.join(10)
        agent.close()


def test_a_lost_long_poll_resumes_from_its_revision_without_a_full_resync(tmp_path):
    """The server goes away and comes back (same database): the agent keeps its view and
    its table, retries the poll with backoff, and carries on with deltas."""
    port = free_port()
    cmd = [str(BIN / "stockade"), "serve", "--port", str(port), "--data-dir", str(tmp_path)]
    env = {**os.environ, "STOCKADE_AUTO_RUN": "0"}

    def serve() -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/_stockade/health").is_success
            except httpx.HTTPError:
                return False

        wait_until(up, 60, "the server to start")
        return proc

    first = serve()
    second = None
    try:
        from stockade.store.db import Store

        store = Store(f"sqlite:///{tmp_path}/stockade.db")
        server = Server(f"http://127.0.0.1:{port}", "", str(tmp_path), store, first)
        acct = server.account()
        ec2 = server.client(acct)
        run = Running(
            server, "h-back", resync_interval=0, backoff=Backoff(0.05, 0.2, random.Random(9))
        )
        try:
            assert run.agent.wait_applied(store.revision(), 15)
            first.terminate()
            first.wait(15)
            wait_until(lambda: run.agent.status.retries >= 2, 20, "failed polls")
            assert run.agent.status.error_kind == TRANSPORT
            second = serve()
            ec2.create_security_group(GroupName="after", Description="after")
            wait_until(lambda: run.agent.status.error is None, 20, "the agent to recover")
            assert run.agent.wait_applied(store.revision(), 15)
            assert run.agent.status.full_syncs == 1  # resumed, not restarted
        finally:
            run.close()
            store.dispose()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(15)
