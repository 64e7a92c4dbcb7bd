"""Several servers on one PostgreSQL database are one control plane (issue 14).

Three ``stockade serve`` processes share one database (module-scoped): a write on one wakes
a long poll on another (LISTEN/NOTIFY), concurrent writers through different servers keep
EC2's invariants and the change log gap-free, and a server killed with SIGKILL loses no
acknowledged write while its followers move on to another server.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from botocore.exceptions import ClientError

from stockade.store.db import agent_token

from conftest import Server, start_server, stop_server, wait_until

pytestmark = pytest.mark.postgres
# the deadline for a long poll on another server to answer after a write: shorter than the
# servers' safety poll (2 s), so only a NOTIFY can meet it
WOKEN_WITHIN = 1.5


@pytest.fixture(scope="module")
def fleet(postgres_url: str) -> Iterator[list[Server]]:
    servers = [start_server(postgres_url) for _ in range(3)]
    yield servers
    for server in servers:
        if server.proc.poll() is None:
            stop_server(server)


def _token(server: Server) -> dict[str, str]:
    return {"authorization": f"Bearer {agent_token(server.store)}"}


def _revision(server: Server) -> int:
    return server.store.revision()


def _changes(server: Server, since: int, wait: float = 0, timeout: float = 30) -> dict:
    r = httpx.get(
        f"{server.url}/_stockade/v1/changes",
        params={"since": since, "wait": wait, "limit": 10_000},
        headers=_token(server),
        timeout=timeout,
    )
    r.raise_for_status()
    return r.json()


def test_a_write_on_one_server_wakes_a_long_poll_on_another(fleet: list[Server]) -> None:
    a, b, c = fleet
    ec2 = a.client(a.account())
    ec2.describe_security_groups()  # the region's defaults, before the poll starts
    since = _revision(b)
    answers: dict[str, dict] = {}
    polls = [
        threading.Thread(target=lambda s=s: answers.__setitem__(s.url, _changes(s, since, 25)))
        for s in (b, c)
    ]
    for t in polls:
        t.start()
    for s in (b, c):
        wait_until(lambda s=s: httpx.get(s.url + "/_stockade/health").json()["waiting"] > 0, 10)
    group = ec2.create_security_group(GroupName="woken", Description="d")["GroupId"]
    wait_until(lambda: len(answers) == 2, WOKEN_WITHIN, "the long polls on the others")
    for t in polls:
        t.join(20)
    assert set(answers) == {b.url, c.url}, "a long poll on another server was not woken"
    for answer in answers.values():
        assert group in {ch["resource_id"] for ch in answer["changes"]}


def test_ready_and_health(fleet: list[Server]) -> None:
    a = fleet[0]
    ready = httpx.get(a.url + "/_stockade/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    health = httpx.get(a.url + "/_stockade/health").json()
    assert health["status"] == "ok" and health["revision"] >= 0
    # the agent endpoints want the agent token, all behind one guard
    assert httpx.get(a.url + "/_stockade/v1/changes").status_code == 401
    assert httpx.get(a.url + "/_stockade/v1/hosts/h1/state").status_code == 401
    bad = httpx.post(a.url + "/_stockade/v1/hosts/h1/claim", content=b"[1]", headers=_token(a))
    assert bad.status_code == 400 and bad.json()["error"] == "InvalidParameterValue"


def test_concurrent_writers_leave_a_complete_ordered_log(fleet: list[Server]) -> None:
    start = _revision(fleet[0])
    acct = fleet[0].account()
    clients = [s.client(acct) for s in fleet]
    clients[0].describe_security_groups()

    def writer(i: int) -> list[str]:
        ec2 = clients[i % len(clients)]
        made = []
        for n in range(8):
            gid = ec2.create_security_group(GroupName=f"w{i}-{n}", Description="d")["GroupId"]
            ec2.authorize_security_group_ingress(
                GroupId=gid, IpProtocol="tcp", FromPort=n + 1, ToPort=n + 1, CidrIp="10.0.0.0/8"
            )
            made.append(gid)
        return made

    # a follower on the third server long-polls while the writers run
    seen: list[int] = []
    done = threading.Event()

    def follow() -> None:
        since = start
        while not done.is_set() or since < _revision(fleet[2]):
            answer = _changes(fleet[2], since, wait=2)
            seen.extend(ch["revision"] for ch in answer["changes"])
            since = max([since, *(ch["revision"] for ch in answer["changes"])])

    follower = threading.Thread(target=follow)
    follower.start()
    with ThreadPoolExecutor(6) as pool:
        made = [g for gs in pool.map(writer, range(6)) for g in gs]
    done.set()
    follower.join(60)
    assert not follower.is_alive()
    end = _revision(fleet[0])
    assert seen == list(range(start + 1, end + 1)), "the follower saw a gap or a reordering"
    logged = {ch["resource_id"] for ch in _changes(fleet[1], start)["changes"]}
    assert set(made) <= logged


def test_invariants_hold_across_servers(fleet: list[Server]) -> None:
    acct = fleet[0].account()
    a, b = fleet[0].client(acct), fleet[1].client(acct)
    a.describe_security_groups()

    # the same name created at once through two servers: one group, one Duplicate
    def create(ec2: object) -> str:
        try:
            return ec2.create_security_group(GroupName="twice", Description="d")["GroupId"]  # type: ignore[attr-defined]
        except ClientError as err:
            return err.response["Error"]["Code"]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(create, [a, b] * 4))
    assert sorted(o.startswith("sg-") for o in outcomes) == [False] * 7 + [True]
    assert {o for o in outcomes if not o.startswith("sg-")} == {"InvalidGroup.Duplicate"}

    # delete a group on one server while another adds a rule referencing it
    for n in range(4):
        target = a.create_security_group(GroupName=f"t{n}", Description="d")["GroupId"]
        holder = a.create_security_group(GroupName=f"h{n}", Description="d")["GroupId"]

        def delete(gid: str = target) -> str:
            try:
                a.delete_security_group(GroupId=gid)
                return "deleted"
            except ClientError as err:
                return err.response["Error"]["Code"]

        def refer(gid: str = target, holder: str = holder) -> str:
            try:
                b.authorize_security_group_ingress(
                    GroupId=holder,
                    IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": gid}]}],
                )
                return "referred"
            except ClientError as err:
                return err.response["Error"]["Code"]

        with ThreadPoolExecutor(2) as pool:
            got = {pool.submit(delete).result(), pool.submit(refer).result()}
        assert got in ({"deleted", "InvalidGroup.NotFound"}, {"referred", "DependencyViolation"})
        rules = b.describe_security_groups(GroupIds=[holder])["SecurityGroups"][0]
        exists = bool(
            a.describe_security_groups(Filters=[{"Name": "group-id", "Values": [target]}])[
                "SecurityGroups"
            ]
        )
        assert exists == ("referred" in got) == bool(rules["IpPermissions"])

    # all or nothing: a batch with a duplicate rule adds none of its rules, on any server
    gid = a.create_security_group(GroupName="batch", Description="d")["GroupId"]
    a.authorize_security_group_ingress(
        GroupId=gid, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="10.0.0.0/8"
    )
    with pytest.raises(ClientError) as info:
        b.authorize_security_group_ingress(
            GroupId=gid,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 80,
                    "ToPort": 80,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                },
                {
                    "IpProtocol": "tcp",
                    "FromPort": 22,
                    "ToPort": 22,
                    "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
                },
            ],
        )
    assert info.value.response["Error"]["Code"] == "InvalidPermission.Duplicate"
    for ec2 in (a, b):
        perms = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissions"]
        assert [p["FromPort"] for p in perms] == [22]


def test_kill_9_loses_no_acknowledged_write(fleet: list[Server]) -> None:
    victim, other = fleet[2], fleet[0]
    acct = victim.account()
    ec2 = victim.client(acct)
    ec2.describe_security_groups()
    acked: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        n = 0
        while not stop.is_set() and n < 500:
            try:
                acked.append(
                    ec2.create_security_group(GroupName=f"k{n}", Description="d")["GroupId"]
                )
            except Exception:  # noqa: BLE001 - the server is gone: the stream ends
                return
            n += 1

    # raw HTTP long-pollers following the victim, failing over to the other server
    reached: dict[int, int] = {}

    def poller(i: int) -> None:
        servers, at = [victim, other], 0
        since = _revision(victim)
        while not stop.is_set():
            try:
                answer = _changes(servers[at], since, wait=1, timeout=5)
            except httpx.HTTPError:
                at = 1  # connection refused or reset: the next server
                continue
            since = max([since, *(ch["revision"] for ch in answer["changes"])])
            reached[i] = since

    writer = threading.Thread(target=stream)
    pollers = [threading.Thread(target=poller, args=(i,)) for i in range(4)]
    for t in [writer, *pollers]:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 20, 30, "writes to stream")
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)
        writer.join(30)
        assert acked, "no write was acknowledged"
        present = other.client(acct).describe_security_groups(GroupIds=acked)["SecurityGroups"]
        assert {g["GroupId"] for g in present} == set(acked)
        latest = _revision(other)
        wait_until(
            lambda: len(reached) == 4 and min(reached.values()) >= latest,
            30,
            "the pollers to reach the latest revision on another server",
        )
    finally:
        stop.set()
        for t in [writer, *pollers]:
            t.join(30)
        victim.store.dispose()
