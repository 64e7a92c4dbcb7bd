"""The agent follows the control plane by deltas: its view always compiles to the same
table as a fresh snapshot would.

A real server (no automatic start: instances wait for a host), two hosts that claim
instances, and two agents whose executor only records nft scripts (no kernel here; the
kernel side is tests/test_agent.py). After every API change each agent catches up with
``?since=`` deltas (and ``?groups=`` fills); the table it would enforce must equal the one
compiled from the host's whole snapshot at that moment.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from stockade.dataplane.agent import Agent, state_from_snapshot
from stockade.dataplane.compile import compile_host
from stockade.dataplane.fake import FakeNft
from stockade.store.db import agent_token

from conftest import Server, start_server, stop_server

IMAGE = "ami-fba54092"
HOSTS = ("h-view-a", "h-view-b")


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def manual_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    server = start_server(url, env={"STOCKADE_AUTO_RUN": "0"})
    yield server
    stop_server(server)


class World:
    """One account's groups and instances, changed through boto3; two hosts run them."""

    def __init__(self, server: Server, suffix: str) -> None:
        self.server = server
        self.ec2 = server.client(server.account())
        token = agent_token(server.store)
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
        self.suffix = suffix
        self.groups: list[str] = []
        self.names = itertools.count()
        self.instances: dict[str, str] = {}  # instance id -> host
        self.agents = {h: Agent(server.url, token, h + suffix, executor=FakeNft()) for h in HOSTS}

    def close(self) -> None:
        for agent in self.agents.values():
            agent.close()
        self.http.close()

    # --- changes -------------------------------------------------------------------------

    def create_group(self) -> str:
        gid = self.ec2.create_security_group(
            GroupName=f"g{next(self.names)}", Description="view test"
        )["GroupId"]
        self.groups.append(gid)
        return gid

    def authorize(self, gid: str, port: int, peer: str | None = None, egress: bool = False):
        perm: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
        if peer is None:
            perm["IpRanges"] = [{"CidrIp": f"10.{port % 250}.0.0/16"}]
        else:
            perm["UserIdGroupPairs"] = [{"GroupId": peer}]
        call = (
            self.ec2.authorize_security_group_egress
            if egress
            else self.ec2.authorize_security_group_ingress
        )
        call(GroupId=gid, IpPermissions=[perm])

    def launch(self, groups: list[str], host: str) -> str:
        iid = self.ec2.run_instances(
            ImageId=IMAGE, MinCount=1, MaxCount=1, SecurityGroupIds=groups
        )["Instances"][0]["InstanceId"]
        got = self.http.post(f"/_stockade/v1/hosts/{host + self.suffix}/claim", json={"limit": 5})
        assert [p["instance_id"] for p in got.json()["instances"]] == [iid]
        r = self.http.post(
            f"/_stockade/v1/instances/{iid}/state",
            json={"state": "running", "host": host + self.suffix},
        )
        assert r.status_code == 200, r.text
        self.instances[iid] = host
        return iid

    def regroup(self, iid: str, groups: list[str]) -> None:
        self.ec2.modify_instance_attribute(InstanceId=iid, Groups=groups)

    def terminate(self, iid: str) -> None:
        self.ec2.terminate_instances(InstanceIds=[iid])
        del self.instances[iid]

    def revoke_one(self, gid: str, rng: random.Random) -> None:
        rules = self.ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [gid]}]
        )["SecurityGroupRules"]
        ingress = [r["SecurityGroupRuleId"] for r in rules if not r["IsEgress"]]
        if ingress:
            self.ec2.revoke_security_group_ingress(
                GroupId=gid, SecurityGroupRuleIds=[rng.choice(ingress)]
            )

    # --- checking ------------------------------------------------------------------------

    def check(self) -> None:
        """Each agent catches up by deltas; its table equals the full snapshot's."""
        for host, agent in self.agents.items():
            agent.sync_once()
            full = self.http.get(f"/_stockade/v1/hosts/{host + self.suffix}/state").json()
            assert full["full"] is True
            want = compile_host(state_from_snapshot(full), host + self.suffix)
            got = compile_host(agent.view.state(), host + self.suffix)
            assert got == want, f"{host}: the delta-fed view differs from the snapshot"
            assert agent.dataplane.applied == want
            # and the scripts it sent, applied to an nftables (the in-memory one), give it
            fresh = FakeNft()
            fresh.run(want.full_script())
            assert isinstance(agent.nft, FakeNft)
            assert agent.nft.snapshot() == fresh.snapshot(), f"{host}: the table differs"


@pytest.fixture
def world(manual_server: Server) -> Iterator[World]:
    w = World(manual_server, "-" + uuid.uuid4().hex[:8])
    try:
        yield w
    finally:
        w.close()


def test_delta_answers_only_what_changed(world):
    web, db = world.create_group(), world.create_group()
    world.authorize(db, 5432, peer=web)
    a = world.launch([web], "h-view-a")
    world.launch([db], "h-view-a")
    agent = world.agents["h-view-a"]
    agent.sync_once(full=True)
    since = agent.view.revision
    world.authorize(web, 80)
    delta = world.http.get(
        f"/_stockade/v1/hosts/h-view-a{world.suffix}/state", params={"since": since}
    ).json()
    assert delta["full"] is False
    assert [g["id"] for g in delta["groups"]] == [web]
    assert delta["interfaces"] == [] and delta["gone_interfaces"] == []
    assert delta["revision"] > since
    world.terminate(a)
    delta = world.http.get(
        f"/_stockade/v1/hosts/h-view-a{world.suffix}/state", params={"since": since}
    ).json()
    assert delta["full"] is False
    assert len(delta["gone_interfaces"]) == 1 and delta["interfaces"] == []
    # a revision from the future (a restored database): the whole snapshot
    future = world.http.get(
        f"/_stockade/v1/hosts/h-view-a{world.suffix}/state", params={"since": 10**12}
    ).json()
    assert future["full"] is True
    bad = world.http.get(f"/_stockade/v1/hosts/h-view-a{world.suffix}/state", params={"since": "x"})
    assert bad.status_code == 400


def test_long_poll_returns_with_the_change(world):
    web = world.create_group()
    world.launch([web], "h-view-a")
    agent = world.agents["h-view-a"]
    agent.sync_once(full=True)
    since = agent.view.revision
    quiet = agent.fetch(since=since, wait=0.2)  # nothing happens: an empty delta, in time
    assert quiet["full"] is False and quiet["revision"] == since and not quiet["groups"]
    world.authorize(web, 443)
    changed = agent.fetch(since=since, wait=10)
    assert [g["id"] for g in changed["groups"]] == [web]


def test_scripted_changes_follow_by_deltas(world):
    web, app, db, new = (world.create_group() for _ in range(4))
    world.authorize(app, 8080, peer=web)
    world.authorize(db, 5432, peer=app)
    w1 = world.launch([web], "h-view-a")
    a1 = world.launch([app], "h-view-b")
    world.launch([db], "h-view-a")
    for agent in world.agents.values():
        agent.sync_once(full=True)
    world.check()
    world.authorize(web, 80)  # a rule on a group in use
    world.check()
    world.authorize(new, 22)  # a group nobody uses yet, then an instance joins it
    world.check()
    world.regroup(w1, [web, new])  # the fill path: host a did not know "new"
    world.check()
    world.authorize(new, 9000, peer=db)  # a new reference: its members must be fetched
    world.check()
    world.launch([app], "h-view-b")  # a member elsewhere of a referenced group
    world.check()
    world.regroup(a1, [db])  # leaves app, joins db (referenced on host a)
    world.check()
    world.terminate(w1)
    world.check()
    spare = world.create_group()  # referenced, then the reference goes and so does it
    world.authorize(db, 6000, peer=spare)
    world.check()
    world.ec2.revoke_security_group_ingress(
        GroupId=db,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 6000,
                "ToPort": 6000,
                "UserIdGroupPairs": [{"GroupId": spare}],
            }
        ],
    )
    world.ec2.delete_security_group(GroupId=spare)
    world.check()
    assert all(a.status.full_syncs == 1 for a in world.agents.values())
    assert all(a.status.incremental_syncs >= 8 for a in world.agents.values())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_changes_follow_by_deltas(world, seed):
    rng = random.Random(seed)
    for _ in range(3):
        world.create_group()
    for agent in world.agents.values():
        agent.sync_once(full=True)
    for step in range(30):
        op = rng.choice(["group", "rule", "ref", "launch", "regroup", "end", "revoke", "drop"])
        if op == "group" and len(world.groups) < 8:
            world.create_group()
        elif op == "rule":
            world.authorize(rng.choice(world.groups), 1000 + step, egress=rng.random() < 0.3)
        elif op == "ref":
            world.authorize(rng.choice(world.groups), 2000 + step, peer=rng.choice(world.groups))
        elif op == "launch" and len(world.instances) < 10:
            world.launch(rng.sample(world.groups, rng.randint(1, 2)), rng.choice(HOSTS))
        elif op == "regroup" and world.instances:
            iid = rng.choice(sorted(world.instances))
            world.regroup(iid, rng.sample(world.groups, rng.randint(1, 3)))
        elif op == "end" and world.instances:
            world.terminate(rng.choice(sorted(world.instances)))
        elif op == "revoke":
            world.revoke_one(rng.choice(world.groups), rng)
        elif op == "drop" and len(world.groups) > 3:
            gid = rng.choice(world.groups)
            try:
                world.ec2.delete_security_group(GroupId=gid)
                world.groups.remove(gid)
            except ClientError as err:  # in use or referenced: EC2 refuses, nothing changes
                assert err.response["Error"]["Code"] in (
                    "DependencyViolation",
                    "InvalidGroup.InUse",
                )
        world.check()
    assert all(a.status.full_syncs == 1 for a in world.agents.values())
