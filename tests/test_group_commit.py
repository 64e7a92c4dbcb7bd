"""Group commit: requests that arrive together share one SQLite transaction, each in a
savepoint, and are answered after the commit (store.db.Batch, Api.run_on_loop)."""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import urlencode

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from stockade.store.db import Store, read_changes

from conftest import Server


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/stockade.db")
    s.migrate()
    yield s
    s.dispose()


def kinds(store: Store) -> list[tuple[int, str]]:
    return [(c["revision"], c["kind"]) for c in read_changes(store, 0, 100)]


def test_a_failed_request_in_a_batch_changes_nothing_and_the_others_commit(store):
    with store.write_in_batch() as (tx, batch):
        tx.log("111111111111", "us-east-1", "first", "r-1")
    with pytest.raises(ValueError), store.write_in_batch() as (tx, same):
        assert same is batch
        tx.log("111111111111", "us-east-1", "failed", "r-2")
        raise ValueError("a request's error")
    with store.write_in_batch() as (tx, same):
        assert same is batch
        tx.log("111111111111", "us-east-1", "third", "r-3")
    assert kinds(store) == []  # nothing is visible before the commit
    assert store.commit_batch() is batch
    assert batch.appended and batch.error is None and not batch.open
    # the failed request's change is gone, and its revision is not skipped
    assert kinds(store) == [(1, "first"), (2, "third")]
    assert store.revision() == 2
    assert store.commit_batch() is None  # nothing open any more


def test_a_write_on_the_batch_thread_commits_the_batch_first(store):
    with store.write_in_batch() as (tx, batch):
        tx.log("111111111111", "us-east-1", "batched", "r-1")
    with store.write() as tx:
        assert not batch.open  # committed before this transaction began
        tx.log("111111111111", "us-east-1", "alone", "r-2")
    assert kinds(store) == [(1, "batched"), (2, "alone")]


def test_a_write_on_another_thread_waits_for_the_batch(store):
    with store.write_in_batch() as (tx, batch):
        tx.log("111111111111", "us-east-1", "batched", "r-1")
    started = threading.Event()

    def other() -> None:
        started.set()
        with store.write() as tx:
            tx.log("111111111111", "us-east-1", "other thread", "r-2")

    thread = threading.Thread(target=other)
    thread.start()
    started.wait(5)
    thread.join(0.2)
    assert thread.is_alive()  # held back by the open batch's writer lock
    store.commit_batch()
    thread.join(10)
    assert not thread.is_alive()
    assert kinds(store) == [(1, "batched"), (2, "other thread")]


def _signed(server: Server, key: str, secret: str, params: dict[str, str]) -> tuple[str, dict]:
    body = urlencode({"Version": "2016-11-15", **params})
    req = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(Credentials(key, secret), "ec2", "us-east-1").add_auth(req)
    return body, dict(req.headers.items())


def test_concurrent_writes_each_get_their_own_answer(sqlite_server: Server):
    check_concurrent_authorizes(sqlite_server)


def check_concurrent_authorizes(server: Server) -> None:
    """Many authorizes at once on one group: every rule sent twice, and a DryRun of one more
    (which runs the whole action, then rolls it back). Exactly one of each pair succeeds and
    the other gets EC2's duplicate error, every DryRun gets DryRunOperation and leaves no
    rule, and each answer comes after its commit: a describe right after sees the rules."""
    acct = server.account()
    ec2 = server.client(acct)
    gid = ec2.create_security_group(GroupName="batch", Description="group commit")["GroupId"]
    ports = range(2000, 2040)

    def authorize(port: int, dry_run: bool = False) -> tuple[str, dict]:
        params = {
            "Action": "AuthorizeSecurityGroupIngress",
            "GroupId": gid,
            "IpPermissions.1.IpProtocol": "tcp",
            "IpPermissions.1.FromPort": str(port),
            "IpPermissions.1.ToPort": str(port),
            "IpPermissions.1.IpRanges.1.CidrIp": "192.0.2.0/24",
        }
        if dry_run:
            params["DryRun"] = "true"
        return _signed(server, acct.access_key_id, acct.secret_access_key, params)

    requests = [r for p in ports for r in (authorize(p), authorize(p + 100, True), authorize(p))]

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=server.url, limits=limits) as client:
            return await asyncio.gather(
                *(client.post("/", content=body, headers=headers) for body, headers in requests)
            )

    answers = asyncio.run(send_all())
    codes: dict[int, list[str]] = {}
    for (body, _), resp in zip(requests, answers, strict=True):
        port = int(body.split("FromPort=")[1].split("&")[0])
        code = "ok" if resp.status_code == 200 else resp.text.split("<Code>")[1].split("<")[0]
        codes.setdefault(port, []).append(code)
    expected = {p: ["InvalidPermission.Duplicate", "ok"] for p in ports}
    expected.update({p + 100: ["DryRunOperation"] for p in ports})
    assert {p: sorted(c) for p, c in codes.items()} == expected
    (group,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert sorted(p["FromPort"] for p in group["IpPermissions"]) == list(ports)
