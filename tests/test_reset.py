"""`stockade reset` and `POST /_stockade/v1/reset`: accounts emptied between tests (moto's
reset), their keys kept and each region's defaults recreated; agents follow the change."""

from __future__ import annotations

import json
import subprocess
import uuid

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from stockade import accounts
from stockade.dataplane.agent import Agent, state_from_snapshot
from stockade.dataplane.compile import compile_host
from stockade.dataplane.nft import RecordingNft
from stockade.store.db import agent_token

from conftest import BIN, Server, start_server, stop_server

IMAGE = "ami-fba54092"


def stockade(server: Server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(BIN / "stockade"),
            *args,
            "--data-dir",
            server.data_dir,
            "--database-url",
            server.db_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def populate(ec2) -> dict[str, str]:
    """A group with a rule, an instance in it, a key pair, an Elastic IP and a tag."""
    web = ec2.create_security_group(GroupName="web", Description="reset test")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=web,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 80,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    iid = ec2.run_instances(ImageId=IMAGE, MinCount=1, MaxCount=1, SecurityGroupIds=[web])[
        "Instances"
    ][0]["InstanceId"]
    ec2.create_key_pair(KeyName="k1")
    alloc = ec2.allocate_address(Domain="vpc")["AllocationId"]
    ec2.create_tags(Resources=[web], Tags=[{"Key": "team", "Value": "a"}])
    default = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]
    return {"web": web, "instance": iid, "allocation": alloc, "default": default["GroupId"]}


def assert_fresh(ec2, before: dict[str, str]) -> None:
    """What a new account sees: only the defaults (new ones), and nothing of before."""
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == ["default"]
    assert groups[0]["GroupId"] != before["default"]
    vpcs = ec2.describe_vpcs()["Vpcs"]
    assert len(vpcs) == 1 and vpcs[0]["IsDefault"] and vpcs[0]["CidrBlock"] == "172.31.0.0/16"
    assert groups[0]["VpcId"] == vpcs[0]["VpcId"]
    subnets = ec2.describe_subnets()["Subnets"]
    assert subnets and all(s["DefaultForAz"] for s in subnets)
    assert ec2.describe_instances()["Reservations"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_tags()["Tags"] == []
    with pytest.raises(ClientError) as e:
        ec2.describe_security_groups(GroupIds=[before["web"]])
    assert e.value.response["Error"]["Code"] == "InvalidGroup.NotFound"


def test_reset_cli_needs_yes_then_empties_one_account(server):
    mine, theirs = server.account(), server.account()
    ec2, other = server.client(mine), server.client(theirs)
    before = populate(ec2)
    kept = populate(other)
    # the other account's rule naming one of mine goes with my group
    other.authorize_security_group_ingress(
        GroupId=kept["web"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 5432,
                "ToPort": 5432,
                "UserIdGroupPairs": [{"GroupId": before["web"], "UserId": mine.account_id}],
            }
        ],
    )
    refused = stockade(server, "reset", "--account", mine.name)
    assert refused.returncode == 1
    assert "--yes" in refused.stderr and mine.account_id in refused.stderr
    assert "1 instances" in refused.stderr and "2 security groups" in refused.stderr
    assert theirs.account_id not in refused.stderr  # only the account asked for
    # nothing changed
    assert ec2.describe_security_groups(GroupIds=[before["web"]])["SecurityGroups"]

    done = stockade(server, "reset", "--account", mine.name, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    (report,) = json.loads(done.stdout)["accounts"]
    assert report["account_id"] == mine.account_id and report["regions"] == ["us-east-1"]
    assert report["deleted"]["instances"] == 1 and report["deleted"]["key pairs"] == 1
    assert_fresh(ec2, before)  # the same keys still work
    # the other account keeps everything but the rule naming the deleted group
    (web,) = other.describe_security_groups(GroupIds=[kept["web"]])["SecurityGroups"]
    assert [p["FromPort"] for p in web["IpPermissions"]] == [80]
    assert len(other.describe_instances()["Reservations"]) == 1
    assert other.describe_key_pairs()["KeyPairs"]


def test_reset_cli_unknown_account(server):
    out = stockade(server, "reset", "--account", "nobody-" + uuid.uuid4().hex[:6], "--yes")
    assert out.returncode != 0 and "no account named" in out.stderr
    assert "Traceback" not in out.stderr


def _signed_reset(server: Server, acct: accounts.Account, query: str = "") -> httpx.Response:
    url = f"{server.url}/_stockade/v1/reset{query}"
    req = AWSRequest(method="POST", url=url, data=b"")
    SigV4Auth(Credentials(acct.access_key_id, acct.secret_access_key), "ec2", "us-east-1").add_auth(
        req
    )
    prepared = req.prepare()
    return httpx.post(url, content=b"", headers=dict(prepared.headers))


def test_http_reset_signed_resets_the_caller_only(server):
    mine, theirs = server.account(), server.account()
    ec2, other = server.client(mine), server.client(theirs)
    before = populate(ec2)
    populate(other)
    resp = _signed_reset(server, mine)
    assert resp.status_code == 200, resp.text
    assert [a["account_id"] for a in resp.json()["accounts"]] == [mine.account_id]
    assert_fresh(ec2, before)
    assert len(other.describe_instances()["Reservations"]) == 1
    # an account's keys cannot reset another account
    denied = _signed_reset(server, mine, f"?account={theirs.name}")
    assert denied.status_code == 403
    assert len(other.describe_instances()["Reservations"]) == 1
    # a wrong secret is refused as on the EC2 endpoint
    forged = accounts.Account(mine.name, mine.account_id, mine.access_key_id, "x" * 40)
    assert _signed_reset(server, forged).status_code == 403
    # unsigned: refused, saying how to authorise
    bare = httpx.post(f"{server.url}/_stockade/v1/reset")
    assert bare.status_code == 401 and "agent token" in bare.json()["message"]
    wrong = httpx.post(f"{server.url}/_stockade/v1/reset", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert len(other.describe_instances()["Reservations"]) == 1


def test_http_reset_with_the_agent_token(server):
    acct = server.account()
    ec2 = server.client(acct)
    before = populate(ec2)
    token = agent_token(server.store)
    auth = {"Authorization": f"Bearer {token}"}
    missing = httpx.post(
        f"{server.url}/_stockade/v1/reset", headers=auth, json={"account": "no-such-account"}
    )
    assert missing.status_code == 404
    assert ec2.describe_security_groups(GroupIds=[before["web"]])["SecurityGroups"]
    bad = httpx.post(f"{server.url}/_stockade/v1/reset", headers=auth, content=b"[1]")
    assert bad.status_code == 400
    resp = httpx.post(
        f"{server.url}/_stockade/v1/reset", headers=auth, json={"account": acct.account_id}
    )
    assert resp.status_code == 200, resp.text
    assert [a["name"] for a in resp.json()["accounts"]] == [acct.name]
    assert_fresh(ec2, before)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def manual_server(request: pytest.FixtureRequest):
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    server = start_server(url, env={"STOCKADE_AUTO_RUN": "0"})
    yield server
    stop_server(server)


def test_agents_follow_a_reset(manual_server):
    """A host's agent (recording its nft scripts) drops the reset account's interfaces and
    groups by a delta, as for any delete; its table is then the fresh snapshot's."""
    server = manual_server
    acct, stays = server.account(), server.account()
    ec2, other = server.client(acct), server.client(stays)
    host = "h-reset-" + uuid.uuid4().hex[:8]
    token = agent_token(server.store)
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    agent = Agent(server.url, token, host, executor=RecordingNft())
    try:
        gone = populate(ec2)
        kept = populate(other)
        claimed = http.post(f"/_stockade/v1/hosts/{host}/claim", json={"limit": 10}).json()
        assert {p["instance_id"] for p in claimed["instances"]} == {
            gone["instance"],
            kept["instance"],
        }
        agent.sync_once(full=True)
        since = agent.view.revision
        resp = http.post("/_stockade/v1/reset", json={"account": acct.name})
        assert resp.status_code == 200, resp.text
        delta = http.get(f"/_stockade/v1/hosts/{host}/state", params={"since": since}).json()
        assert delta["full"] is False
        assert gone["web"] in delta["deleted_groups"]
        assert len(delta["gone_interfaces"]) == 1
        # the host's placements: only the other account's instance is left to run
        placed = http.get(f"/_stockade/v1/hosts/{host}/instances").json()["instances"]
        assert [p["instance_id"] for p in placed] == [kept["instance"]]
        agent.sync_once()
        full = http.get(f"/_stockade/v1/hosts/{host}/state").json()
        want = compile_host(state_from_snapshot(full), host)
        assert compile_host(agent.view.state(), host) == want
        assert agent.dataplane.applied == want
        assert {i["id"] for i in full["interfaces"]} and all(
            i["instance_id"] == kept["instance"] for i in full["interfaces"]
        )
    finally:
        agent.close()
        http.close()
