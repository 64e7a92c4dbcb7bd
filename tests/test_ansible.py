"""Ansible's amazon.aws modules against a live `stockade serve`: the playbook in
tests/ansible/groups.yml, as a user writes it (security groups with CIDR and group rules, an
idempotent re-run, purge, egress and delete; VPC, subnet, interface, key pair, instance and
Elastic IP)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import stockade.api.app  # noqa: F401  (registers the actions)
from stockade.accounts import Account
from stockade.service.common import ACTIONS

from conftest import BIN, Server, start_server, stop_server

PLAYBOOK = Path(__file__).parent / "ansible" / "groups.yml"
PLAYBOOK_BIN = BIN / "ansible-playbook"
PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ansible"
)

pytestmark = pytest.mark.skipif(
    not PLAYBOOK_BIN.exists(),
    reason="ansible is not installed in the venv (make deps installs it: pip '.[ansible]')",
)


@pytest.fixture(scope="module")
def played() -> Iterator[tuple[Server, dict, Account]]:
    server = start_server()
    try:
        acct = server.account()
        work = tempfile.mkdtemp(prefix="stockade-ansible-")
        report = os.path.join(work, "report.json")
        extra = {
            "endpoint": server.url,
            "access_key": acct.access_key_id,
            "secret_key": acct.secret_access_key,
            "public_key": PUBLIC_KEY,
            "report": report,
            # ec2_eni needs network interfaces as resources (CreateNetworkInterface)
            "enis": "CreateNetworkInterface" in ACTIONS,
            "ansible_python_interpreter": str(BIN / "python"),
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
        env.update(
            PATH=f"{BIN}:{env.get('PATH', '')}",
            ANSIBLE_LOCAL_TEMP=os.path.join(work, "tmp"),
            ANSIBLE_HOME=os.path.join(work, "home"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_PYTHON_INTERPRETER=str(BIN / "python"),
            ANSIBLE_LOCALHOST_WARNING="0",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        )
        proc = subprocess.run(
            [str(PLAYBOOK_BIN), "-i", "localhost,", str(PLAYBOOK), "-e", json.dumps(extra)],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        yield server, json.loads(Path(report).read_text()), acct
        shutil.rmtree(work, ignore_errors=True)
    finally:
        stop_server(server)


def test_identity_and_vpc(played: tuple[Server, dict, Account]) -> None:
    _, r, acct = played
    account_id = acct.account_id
    assert r["me"]["account"] == account_id
    assert r["me"]["arn"] == f"arn:aws:iam::{account_id}:root"
    assert r["vpc"]["changed"] is True
    assert r["vpc"]["vpc"]["cidr_block"] == "10.40.0.0/16"
    assert r["vpc_again"]["changed"] is False
    assert r["vpc_again"]["vpc"]["id"] == r["vpc"]["vpc"]["id"]
    assert r["subnet"]["subnet"]["cidr_block"] == "10.40.1.0/24"


def _ingress(group: dict) -> set[tuple]:
    out = set()
    for perm in group["ip_permissions"]:
        key = (perm["ip_protocol"], perm.get("from_port"), perm.get("to_port"))
        out |= {(*key, r["cidr_ip"]) for r in perm.get("ip_ranges", [])}
        out |= {(*key, p["group_id"]) for p in perm.get("user_id_group_pairs", [])}
    return out


def test_security_group_rules_idempotence_purge(played: tuple[Server, dict, Account]) -> None:
    _, r, _ = played
    web, app = r["web"], r["app"]
    assert web["changed"] is True
    assert _ingress(web) == {
        ("tcp", 80, 80, "0.0.0.0/0"),
        ("tcp", 443, 443, "0.0.0.0/0"),
        ("tcp", 22, 22, "10.40.0.0/16"),
        ("tcp", 22, 22, "192.0.2.0/24"),
        ("tcp", 8000, 8099, app["group_id"]),
    }
    egress = web["ip_permissions_egress"]
    assert [(e["ip_protocol"], e["from_port"]) for e in egress] == [("tcp", 5432)]
    assert egress[0]["user_id_group_pairs"][0]["group_id"] == app["group_id"]
    assert r["web_again"]["changed"] is False
    assert r["purged"]["changed"] is True
    assert ("tcp", 22, 22, "10.40.0.0/16") not in _ingress(r["purged"])
    (info,) = r["web_info"]["security_groups"]
    assert info["group_id"] == web["group_id"]
    assert _ingress(info) == _ingress(r["purged"])
    assert r["web_gone"]["changed"] is True
    assert r["web_gone_again"]["changed"] is False


def test_interface_key_instance_address(played: tuple[Server, dict, Account]) -> None:
    server, r, acct = played
    if "CreateNetworkInterface" in ACTIONS:
        assert r["eni"]["interface"]["private_ip_address"] == "10.40.1.20"
    assert r["key"]["key"]["name"] == "ansible-key"
    assert r["instance"]["instance_ids"]
    assert r["eip"]["public_ip"]
    # what the playbook deleted is gone on the server, what it kept is there
    ec2 = server.client(acct)
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    (instance,) = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert instance["InstanceId"] == r["instance"]["instance_ids"][0]
    assert instance["State"]["Name"] == "terminated"
    assert ec2.describe_addresses()["Addresses"] == []
    names = {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert "ansible-app" in names and "ansible-web" not in names
