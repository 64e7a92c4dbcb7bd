"""A reset reaches a running sandbox: the reset account's instances are torn down by their
host and its groups leave the host's table; another account's instance keeps running, and
the reset account's keys launch again at once (root, network namespaces)."""

from __future__ import annotations

import os
import subprocess

import boto3
import pytest

from stockade import accounts
from stockade.sandbox import net
from stockade.sandbox.hostd import instance_netns
from stockade.sandbox.region import Sandbox
from stockade.store.db import Store

import netns
from conftest import BIN, running_sandbox, wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns.can_run() is not None, reason=str(netns.can_run())),
]


@pytest.fixture(scope="module")
def sandbox():
    with running_sandbox(hosts=1, tag="skt") as box:
        yield box


def client(box: Sandbox, acct: accounts.Account):
    return boto3.client(
        "ec2",
        endpoint_url=box.endpoint,
        region_name="us-east-1",
        aws_access_key_id=acct.access_key_id,
        aws_secret_access_key=acct.secret_access_key,
    )


def launch(ec2, group: str) -> str:
    iid = ec2.run_instances(
        ImageId="ami-fba54092", MinCount=1, MaxCount=1, SecurityGroupIds=[group]
    )["Instances"][0]["InstanceId"]

    def running() -> bool:
        got = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        return got["State"]["Name"] == "running"

    wait_until(running, timeout=60, what=f"{iid} to run")
    return iid


def table(box: Sandbox) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", f"{box.prefix}h1", "nft", "list", "table", "inet", "stockade"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout


def test_reset_tears_down_the_accounts_instances(sandbox):
    store = Store(f"sqlite:///{sandbox.data_dir}/stockade.db")
    try:
        gone, stays = (accounts.create(store, f"r{os.urandom(4).hex()}") for _ in range(2))
    finally:
        store.dispose()
    ec2, other = client(sandbox, gone), client(sandbox, stays)
    web = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=web, IpProtocol="tcp", FromPort=80, ToPort=80, CidrIp="0.0.0.0/0"
    )
    kept_group = other.create_security_group(GroupName="kept", Description="kept")["GroupId"]
    doomed = launch(ec2, web)
    kept = launch(other, kept_group)
    hex_of = web.removeprefix("sg-")
    wait_until(lambda: hex_of in table(sandbox), 30, "the group's chain in the host's table")
    assert net.exists(instance_netns(sandbox.prefix, doomed))

    out = subprocess.run(
        [str(BIN / "stockade"), "reset", "--account", gone.name, "--yes"]
        + ["--data-dir", str(sandbox.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    wait_until(
        lambda: not net.exists(instance_netns(sandbox.prefix, doomed)),
        30,
        "the host to tear the reset account's instance down",
    )
    wait_until(lambda: hex_of not in table(sandbox), 30, "the group to leave the host's table")
    assert net.exists(instance_netns(sandbox.prefix, kept))
    assert kept_group.removeprefix("sg-") in table(sandbox)
    # the same keys launch again, in the new default group
    again = launch(ec2, ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"])
    assert net.exists(instance_netns(sandbox.prefix, again))
