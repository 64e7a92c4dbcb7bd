"""The host loop (stockade.hosts.loop) over a runtime that records what it is asked to do:
it claims pending instances, builds them and reports them running, tears down what is
terminating and reports it terminated. A real server; no root needed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from stockade.hosts.client import HostClient
from stockade.hosts.loop import HostLoop
from stockade.store.db import agent_token

from conftest import Server, start_server, stop_server, wait_until


@pytest.fixture(scope="module")
def manual_server() -> Iterator[Server]:
    server = start_server(env={"STOCKADE_AUTO_RUN": "0"})
    yield server
    stop_server(server)


class Recording:
    """A runtime that runs nothing and remembers what it was asked."""

    def __init__(self) -> None:
        self.instances: dict[str, dict[str, Any]] = {}
        self.torn_down: list[tuple[str, bool]] = []

    def running(self) -> list[str]:
        return list(self.instances)

    def build(self, placement: dict[str, Any]) -> None:
        self.instances[placement["instance_id"]] = placement

    def update(self, placement: dict[str, Any]) -> None:
        self.instances[placement["instance_id"]] = placement

    def teardown(self, instance_id: str, *, terminated: bool) -> None:
        self.instances.pop(instance_id)
        self.torn_down.append((instance_id, terminated))

    def changed(self, change: dict[str, Any]) -> None:
        pass


def test_the_loop_builds_reports_and_tears_down_through_its_runtime(manual_server) -> None:
    server = manual_server
    ec2 = server.client(server.account())
    runtime = Recording()
    client = HostClient(server.url, agent_token(server.store))
    loop = HostLoop(client, "loop-1", runtime)
    thread = threading.Thread(target=loop.run, kwargs={"wait": 2}, daemon=True)
    thread.start()

    def state(iid: str) -> str:
        found = ec2.describe_instances(InstanceIds=[iid])["Reservations"]
        return found[0]["Instances"][0]["State"]["Name"]

    try:
        iid = ec2.run_instances(ImageId="ami-fba54092", MinCount=1, MaxCount=1)["Instances"][0][
            "InstanceId"
        ]
        wait_until(lambda: state(iid) == "running", 30, "the loop to run the instance")
        placement = runtime.instances[iid]
        assert placement["interfaces"][0]["private_ip"]
        ec2.terminate_instances(InstanceIds=[iid])
        wait_until(lambda: state(iid) == "terminated", 30, "the loop to terminate it")
        assert runtime.torn_down == [(iid, True)] and runtime.running() == []
    finally:
        loop.stop()
        thread.join(15)
        client.close()
