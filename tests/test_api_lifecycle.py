"""The lifecycle seam between the control plane and hosts, and Config-dependent behaviour.

These drive the API object in-process (the same decode -> service -> encode path as the
server, with its transactions) so each test can choose its own Config: no hosts and
``auto_run`` off, 16 groups per interface, a tiny public pool. The host endpoints of
``stockade.api.hosts`` are exercised over HTTP with Starlette's test client.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from stockade import accounts
from stockade.api import codec, hosts
from stockade.api.app import Api, create_app
from stockade.errors import ApiError
from stockade.service import instances as inst_service
from stockade.service.common import Config
from stockade.store import schema
from stockade.store.db import Store, agent_token, read_changes

AMI = "ami-05d0b1ac3c0f41e5a"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path}/lifecycle.db")
    else:
        s = Store(request.getfixturevalue("postgres_url"))
    s.migrate()
    yield s
    s.dispose()


class Client:
    """One account calling actions through :class:`Api` with wire parameters."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.api = Api(store, config, agent_token(store))
        self.account = accounts.create(store, f"l{os.urandom(5).hex()}")

    def __call__(self, action: str, **wire: Any) -> dict:
        params = codec.decode_request(action, {k: str(v) for k, v in wire.items()})
        result = self.api.run(action, params, self.account.account_id, "us-east-1")
        codec.encode_response(action, result, "test")  # the result fits botocore's shape
        return result

    def error(self, action: str, **wire: Any) -> tuple[str, str]:
        with pytest.raises(ApiError) as info:
            self(action, **wire)
        return info.value.code, info.value.message

    def run(self, n: int = 1, **wire: Any) -> list[str]:
        wire.setdefault("ImageId", AMI)
        res = self("RunInstances", MinCount=n, MaxCount=n, **wire)
        return [i["instance_id"] for i in res["instances"]]

    def get(self, instance_id: str) -> dict:
        res = self("DescribeInstances", **{"InstanceId.1": instance_id})
        return res["reservations"][0]["instances"][0]

    def state(self, instance_id: str) -> str:
        return self.get(instance_id)["state"]["name"]

    def mine(self, placements: list[dict]) -> list[dict]:
        return [p for p in placements if p["account_id"] == self.account.account_id]


def host_of(store: Store, instance_id: str) -> str | None:
    with store.read() as conn:
        return conn.execute(
            select(schema.instances.c.host).where(schema.instances.c.id == instance_id)
        ).scalar_one()


def test_config_from_the_environment(monkeypatch):
    assert Config().auto_run is True
    monkeypatch.setenv("STOCKADE_AUTO_RUN", "0")
    monkeypatch.setenv("STOCKADE_MAX_INSTANCES", "7")
    monkeypatch.setenv("STOCKADE_MAX_ADDRESSES", "2")
    monkeypatch.setenv("STOCKADE_PUBLIC_POOL", "198.19.0.0/16")
    monkeypatch.setenv("STOCKADE_MAX_GROUPS_PER_INTERFACE", "16")
    cfg = Config()
    assert (cfg.auto_run, cfg.max_instances, cfg.max_addresses) == (False, 7, 2)
    assert (cfg.public_pool, cfg.max_groups_per_interface) == ("198.19.0.0/16", 16)
    monkeypatch.setenv("STOCKADE_AUTO_RUN", "true")
    assert Config().auto_run is True


def test_pending_until_a_host_claims_it(store):
    c = Client(store, Config(auto_run=False))
    a, b, d = c.run(3)
    assert {c.state(i) for i in (a, b, d)} == {"pending"}
    # pending instances already have their addresses
    assert c.get(a)["private_ip_address"] and c.get(a)["public_ip_address"]
    claimed = c.mine(inst_service.claim_pending(store, "host-1", limit=1000))
    assert [p["instance_id"] for p in claimed] == [a, b, d]
    place = claimed[0]
    got = c.get(a)
    (nic,) = place["interfaces"]
    assert nic["private_ip"] == got["private_ip_address"]
    assert nic["public_ip"] == got["public_ip_address"]
    assert nic["subnet_cidr"] == "172.31.0.0/20" and nic["device_index"] == 0
    assert nic["group_ids"] == [g["group_id"] for g in got["security_groups"]]
    assert place["host"] == "host-1" and place["state"] == "pending"
    assert place["private_dns_name"] == got["private_dns_name"]
    assert c.mine(inst_service.claim_pending(store, "host-2", 10)) == []  # nothing left
    assert c.state(a) == "pending"  # claimed, not yet running
    # only the holder may report, and only what the state machine allows
    with pytest.raises(inst_service.LifecycleError):
        inst_service.report_state(store, a, "running", host="host-2")
    with pytest.raises(inst_service.LifecycleError):
        inst_service.report_state(store, a, "stopped", host="host-1")
    with pytest.raises(ApiError):
        inst_service.report_state(store, a, "exploded", host="host-1")
    assert c.state(a) == "pending"
    out = inst_service.report_state(store, a, "running", host="host-1")
    assert out == {"instance_id": a, "state": "running", "previous": "pending"}
    assert inst_service.report_state(store, a, "running", host="host-1")["state"] == "running"
    assert c.state(a) == "running"
    # a pending instance cannot be stopped; a claimed one being terminated waits for its host
    assert c.error("StopInstances", **{"InstanceId.1": b})[0] == "IncorrectInstanceState"
    resp = c("TerminateInstances", **{"InstanceId.1": b})
    assert resp["terminating_instances"][0]["current_state"]["name"] == "shutting-down"
    assert c.state(b) == "shutting-down"
    inst_service.report_state(store, b, "terminated", host="host-1")
    assert c.state(b) == "terminated" and c.get(b)["network_interfaces"] == []
    assert host_of(store, b) is None
    # stopping waits for the host; stopped releases the host and the pool address
    public = c.get(a)["public_ip_address"]
    c("StopInstances", **{"InstanceId.1": a})
    assert c.state(a) == "stopping" and c.get(a)["public_ip_address"] == public
    inst_service.report_state(store, a, "stopped", host="host-1")
    assert c.state(a) == "stopped" and c.get(a).get("public_ip_address") is None
    assert host_of(store, a) is None
    # started again: pending, unclaimed, a new public address; any host may claim it
    c("StartInstances", **{"InstanceId.1": a})
    assert c.state(a) == "pending" and host_of(store, a) is None
    assert c.get(a)["public_ip_address"] not in (None, public)
    (again,) = c.mine(inst_service.claim_pending(store, "host-2", 1000))
    assert again["instance_id"] == a
    inst_service.report_state(store, a, "running", host="host-2")
    assert [p["instance_id"] for p in inst_service.host_instances(store, "host-2")] == [a]
    # the guest shuts itself down: running -> stopping -> stopped
    inst_service.report_state(store, a, "stopped", host="host-2")
    got = c.get(a)
    assert got["state"]["name"] == "stopped"
    assert got["state_reason"]["code"] == "Client.InstanceInitiatedShutdown"
    # an unclaimed pending instance terminates at once
    c("TerminateInstances", **{"InstanceId.1": d})
    assert c.state(d) == "shutting-down"  # claimed by host-1 above: waits for it
    inst_service.report_state(store, d, "terminated", host="host-1")
    (e,) = c.run()
    c("TerminateInstances", **{"InstanceId.1": e})
    assert c.state(e) == "terminated"
    kinds = [
        (ch["kind"], ch["data"].get("state"))
        for ch in read_changes(store, 0, 100000)
        if ch["resource_id"] == a and ch["kind"].startswith("instance.")
    ]
    assert kinds[:3] == [
        ("instance.created", "pending"),
        ("instance.claimed", "pending"),
        ("instance.state", "running"),
    ]


def test_illegal_transitions_are_refused(store):
    c = Client(store, Config(auto_run=False))
    (i,) = c.run()
    states = list(inst_service.STATE_CODES)
    for old in states:
        for new in states:
            if new in inst_service.TRANSITIONS[old]:
                continue
            with pytest.raises(inst_service.LifecycleError), store.write() as tx:
                tx.conn.execute(
                    update(schema.instances).where(schema.instances.c.id == i).values(state=old)
                )
                row = tx.conn.execute(
                    select(schema.instances).where(schema.instances.c.id == i)
                ).one()
                ctx = inst_service._host_ctx(tx, row, Config(auto_run=False))
                inst_service.enter(ctx, row, new)
    assert c.state(i) == "pending"  # every attempt rolled back
    assert inst_service.TRANSITIONS["terminated"] == frozenset()
    assert all(s in inst_service.STATE_CODES for v in inst_service.TRANSITIONS.values() for s in v)


def test_sixteen_groups_per_interface_when_configured(store):
    c = Client(store, Config(max_groups_per_interface=16))
    ids = [
        c("CreateSecurityGroup", GroupName=f"g{n}", GroupDescription="d")["group_id"]
        for n in range(17)
    ]
    wire = {f"SecurityGroupId.{n + 1}": g for n, g in enumerate(ids)}
    code, _ = c.error("RunInstances", ImageId=AMI, MinCount=1, MaxCount=1, **wire)
    assert code == "SecurityGroupsPerInterfaceLimitExceeded"
    del wire["SecurityGroupId.17"]
    (i,) = c.run(**wire)
    assert [g["group_id"] for g in c.get(i)["security_groups"]] == ids[:16]
    attrs = c(
        "DescribeAccountAttributes", **{"AttributeName.1": "vpc-max-security-groups-per-interface"}
    )
    assert attrs["account_attributes"][0]["attribute_values"] == [{"attribute_value": "16"}]
    # more than EC2's 16 cannot be configured
    big = Client(store, Config(max_groups_per_interface=40))
    ids = [
        big("CreateSecurityGroup", GroupName=f"g{n}", GroupDescription="d")["group_id"]
        for n in range(17)
    ]
    wire = {f"SecurityGroupId.{n + 1}": g for n, g in enumerate(ids)}
    assert big.error("RunInstances", ImageId=AMI, MinCount=1, MaxCount=1, **wire)[0] == (
        "SecurityGroupsPerInterfaceLimitExceeded"
    )


def test_a_small_public_pool(store):
    # a pool of its own, far from where the servers' tests take addresses
    cfg = Config(public_pool="198.19.255.0/28", max_instances=50, max_addresses=50)
    c = Client(store, cfg)
    pool = ipaddress.ip_network("198.19.255.0/28")
    # the first five and the last address are kept back: 198.19.255.5 - .14
    with store.read() as conn:
        taken = {
            ip
            for ip in conn.execute(select(schema.network_interfaces.c.public_ip)).scalars()
            if ip and ipaddress.ip_address(ip) in pool
        }
    assert not taken
    ids = c.run(9)
    publics = [c.get(i)["public_ip_address"] for i in ids]
    assert len(set(publics)) == 9
    assert all(5 <= int(ipaddress.ip_address(p)) - int(pool.network_address) <= 14 for p in publics)
    # stop and start: the address goes back to the pool, the next free one comes (next-fit)
    c("StopInstances", **{"InstanceId.1": ids[0]})
    assert c.get(ids[0]).get("public_ip_address") is None
    c("StartInstances", **{"InstanceId.1": ids[0]})
    moved = c.get(ids[0])["public_ip_address"]
    assert moved == "198.19.255.14" and moved not in publics
    # the pool has one address left, the one given back
    eip = c("AllocateAddress", Domain="vpc")["public_ip"]
    assert eip == publics[0]
    code, _ = c.error("AllocateAddress", Domain="vpc")
    assert code == "InsufficientAddressCapacity"
    code, _ = c.error("RunInstances", ImageId=AMI, MinCount=1, MaxCount=1)
    assert code == "InsufficientAddressCapacity"
    assert len(c("DescribeInstances")["reservations"]) == 1  # the failed launch left nothing
    # an address asked for by value must be in the pool and free
    assert c.error("AllocateAddress", Address="203.0.113.5")[0] == "InvalidParameterValue"
    assert c.error("AllocateAddress", Address=publics[1])[0] == "InvalidParameterValue"


def test_subnet_runs_out_of_addresses(store):
    c = Client(store, Config(max_instances=50))
    vpc = c("CreateVpc", CidrBlock="10.1.0.0/16")["vpc"]["vpc_id"]
    sub = c("CreateSubnet", VpcId=vpc, CidrBlock="10.1.0.0/28")["subnet"]["subnet_id"]
    # a /28 has 16 addresses; EC2 keeps 5 of them
    code, _ = c.error("RunInstances", ImageId=AMI, MinCount=12, MaxCount=12, SubnetId=sub)
    assert code == "InsufficientFreeAddressesInSubnet"
    res = c("RunInstances", ImageId=AMI, MinCount=1, MaxCount=20, SubnetId=sub)
    ips = [i["private_ip_address"] for i in res["instances"]]
    assert ips == [f"10.1.0.{n}" for n in range(4, 15)]
    (sn,) = c("DescribeSubnets", **{"SubnetId.1": sub})["subnets"]
    assert sn["available_ip_address_count"] == 0


def test_host_endpoints(store):
    cfg = Config(auto_run=False)
    c = Client(store, cfg)
    app = create_app(store, cfg)
    app.router.routes[0:0] = hosts.ROUTES
    token = agent_token(store)
    auth = {"Authorization": f"Bearer {token}"}
    (i,) = c.run()
    with TestClient(app) as http:
        assert http.post("/_stockade/v1/hosts/h1/claim").status_code == 401
        assert (
            http.post(
                "/_stockade/v1/hosts/h1/claim", headers={"Authorization": "Bearer x"}
            ).status_code
            == 401
        )
        r = http.post("/_stockade/v1/hosts/h1/claim", json={"limit": "many"}, headers=auth)
        assert r.status_code == 400
        r = http.post("/_stockade/v1/hosts/h1/claim", content=b"{nope", headers=auth)
        assert r.status_code == 400
        r = http.post("/_stockade/v1/hosts/h1/claim", json={"limit": 1000}, headers=auth)
        assert r.status_code == 200
        mine = c.mine(r.json()["instances"])
        assert [p["instance_id"] for p in mine] == [i]
        r = http.get("/_stockade/v1/hosts/h1/instances", headers=auth)
        assert i in [p["instance_id"] for p in r.json()["instances"]]
        url = f"/_stockade/v1/instances/{i}/state"
        r = http.post(url, json={"state": "stopped", "host": "h1"}, headers=auth)
        assert r.status_code == 409 and r.json()["error"] == "IncorrectInstanceState"
        r = http.post(url, json={"state": "running", "host": "h2"}, headers=auth)
        assert r.status_code == 409
        r = http.post(url, json={"host": "h1"}, headers=auth)
        assert r.status_code == 400
        r = http.post(url, json={"state": "running", "host": "h1"}, headers=auth)
        assert r.status_code == 200
        assert r.json() == {"instance_id": i, "state": "running", "previous": "pending"}
        r = http.post(
            "/_stockade/v1/instances/i-0123456789abcdef0/state",
            json={"state": "running"},
            headers=auth,
        )
        assert r.status_code == 404
        assert http.post(url, json={"state": "running"}).status_code == 401
    assert c.state(i) == "running"


def test_marys_whole_site_fits_the_default_limit(store):
    """002: 7 web + 20 app + 2 database instances is 29, within the default limit of 32."""
    c = Client(store, Config())
    for name in ("apache", "appserver", "dbserver"):
        c("CreateSecurityGroup", GroupName=name, GroupDescription=f"Mary's {name}")
    web = c.run(7, ImageId="ami-fba54092", **{"SecurityGroup.1": "apache"})
    app = c.run(20, ImageId="ami-e3a5408a", **{"SecurityGroup.1": "appserver"})
    db = c.run(2, ImageId="ami-f1a54098", **{"SecurityGroup.1": "dbserver"})
    everyone = [c.get(i) for i in web + app + db]
    assert {i["state"]["name"] for i in everyone} == {"running"}
    assert len({i["private_ip_address"] for i in everyone}) == 29
    assert len({i["public_ip_address"] for i in everyone}) == 29
    c.run(3, ImageId=AMI)
    assert c.error("RunInstances", ImageId=AMI, MinCount=1, MaxCount=1)[0] == (
        "InstanceLimitExceeded"
    )
