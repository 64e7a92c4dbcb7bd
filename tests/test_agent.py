"""The agent: API changes reach the kernel of a host, with no restart (netns, root).

A real server with no automatic start (instances wait for a host), a host namespace that
claims them, and the agent following the change log into that host's nftables table.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from stockade.analysis.explain import explain
from stockade.dataplane.agent import DEFAULT_RESYNC_INTERVAL, Agent
from stockade.dataplane.nft import OUTPUT_JSON, Nft
from stockade.service.insights import account_network
from stockade.service.topology import ifname_for
from stockade.store.db import agent_token

import netns
from conftest import start_server, stop_server, wait_until
from netns import CLOSED, FILTERED, OPEN, Topology

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns.can_run() is not None, reason=str(netns.can_run())),
]

ALBERT = "192.168.1.130"
OTHER = "192.168.1.131"


@pytest.fixture(scope="module")
def manual_server():
    server = start_server(env={"STOCKADE_AUTO_RUN": "0"})
    yield server
    stop_server(server)


@pytest.fixture
def lab(manual_server, request):
    """Two instances on a host namespace and an agent following the server for it
    (``request.param``, if given: the agent's resync interval in seconds)."""
    server = manual_server
    resync_interval = getattr(request, "param", DEFAULT_RESYNC_INTERVAL)
    acct = server.account()
    ec2 = server.client(acct)
    token = agent_token(server.store)
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    topo = Topology()
    agent = None
    thread = None
    try:
        web = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
        a = ec2.run_instances(
            ImageId="ami-fba54092", MinCount=1, MaxCount=1, SecurityGroupIds=[web]
        )["Instances"][0]
        b = ec2.run_instances(ImageId="ami-fba54092", MinCount=1, MaxCount=1)["Instances"][0]
        host = f"h-{topo.prefix.strip('-')}"
        claimed = http.post(f"/_stockade/v1/hosts/{host}/claim", json={"limit": 10}).json()
        by_id = {p["instance_id"]: p for p in claimed["instances"]}
        assert set(by_id) == {a["InstanceId"], b["InstanceId"]}
        nodes = {}
        for iid in by_id:
            iface = by_id[iid]["interfaces"][0] if "interfaces" in by_id[iid] else by_id[iid]
            eni = iface.get("network_interface_id") or iface.get("interface_id") or iface["id"]
            ip = iface.get("private_ip") or iface.get("private_ip_address")
            nodes[iid] = topo.add_instance(ip, ifname=ifname_for(eni))
        for iid in by_id:
            r = http.post(
                f"/_stockade/v1/instances/{iid}/state", json={"state": "running", "host": host}
            )
            assert r.status_code == 200, r.text
        albert = topo.add_outside(ALBERT)
        other = topo.add_outside(OTHER)
        servers = topo.serve()
        for node in nodes.values():
            for port in (22, 80):
                servers.tcp(node, port)
        agent = Agent(server.url, token, host, netns=topo.host, resync_interval=resync_interval)
        thread = threading.Thread(target=agent.run, kwargs={"poll_wait": 5}, daemon=True)
        thread.start()
        head = server.store.revision()
        assert agent.wait_applied(head, 10), "the agent did not apply the current revision"
        yield {
            "server": server,
            "acct": acct,
            "ec2": ec2,
            "web": web,
            "http": http,
            "agent": agent,
            "host": host,
            "a": nodes[a["InstanceId"]],
            "b": nodes[b["InstanceId"]],
            "a_id": a["InstanceId"],
            "b_id": b["InstanceId"],
            "albert": albert,
            "other": other,
            "netns": topo.host,
        }
    finally:
        if agent is not None:
            agent.stop()
            if thread is not None:
                thread.join(10)
            agent.close()
        topo.close()
        http.close()


def until(probe, expected: str, what: str) -> None:
    """Retry the probe until it gives ``expected`` (the change propagates asynchronously)."""
    wait_until(lambda: probe() == expected, timeout=10, what=what)


def test_changes_reach_the_kernel_without_restart(lab):
    ec2, web, a, b = lab["ec2"], lab["web"], lab["a"], lab["b"]
    albert, other = lab["albert"], lab["other"]
    # the default groups: outsiders see nothing
    until(lambda: netns.tcp(albert, a.ipv4, 22), FILTERED, "a filtered from albert")
    assert netns.tcp(albert, b.ipv4, 22) == FILTERED
    # Albert's rule opens port 22 of the web group, for his address only
    ec2.authorize_security_group_ingress(
        GroupId=web, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp=f"{ALBERT}/32"
    )
    until(lambda: netns.tcp(albert, a.ipv4, 22), OPEN, "albert reaches a:22")
    assert netns.tcp(other, a.ipv4, 22) == FILTERED
    assert netns.tcp(albert, b.ipv4, 22) == FILTERED
    # a group reference admits members of the default group (b) on 80
    default = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=web,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 80,
                "UserIdGroupPairs": [{"GroupId": default}],
            }
        ],
    )
    until(lambda: netns.tcp(b, a.ipv4, 80), OPEN, "b reaches a:80 as a member of default")
    assert netns.tcp(albert, a.ipv4, 80) == FILTERED
    # membership follows ModifyInstanceAttribute: b leaves default, loses port 80
    ec2.modify_instance_attribute(InstanceId=lab["b_id"], Groups=[web])
    until(lambda: netns.tcp(b, a.ipv4, 80), FILTERED, "b no longer a member")
    # an established connection survives a revoke; new ones are filtered
    conn = netns.connect(albert, a.ipv4, 22)
    ec2.revoke_security_group_ingress(
        GroupId=web, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp=f"{ALBERT}/32"
    )
    until(lambda: netns.tcp(albert, a.ipv4, 22), FILTERED, "revoke closes port 22")
    assert netns.echo(conn) == b"ping"
    conn.close()
    # a port allowed by the group with nothing listening is refused, not filtered
    ec2.authorize_security_group_ingress(
        GroupId=web, IpProtocol="tcp", FromPort=3389, ToPort=3389, CidrIp="0.0.0.0/0"
    )
    until(lambda: netns.tcp(other, a.ipv4, 3389), CLOSED, "3389 refused")


@pytest.mark.parametrize("lab", [0.5], indirect=True)
def test_a_flushed_or_edited_table_is_restored_by_the_periodic_resync(lab):
    """Someone flushes the agent's table, then deletes one of its rules, in the host's
    namespace: with no change from the control plane, the periodic resync restores it."""
    ec2, web, a, agent = lab["ec2"], lab["web"], lab["a"], lab["agent"]
    albert, other = lab["albert"], lab["other"]
    ec2.authorize_security_group_ingress(
        GroupId=web, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp=f"{ALBERT}/32"
    )
    until(lambda: netns.tcp(albert, a.ipv4, 22), OPEN, "albert reaches a:22")
    nft = Nft(lab["netns"])
    try:

        def table() -> list[str]:
            return netns.canonical(nft.run("list table inet stockade", flags=OUTPUT_JSON))

        good = table()
        # the flush empties every chain: nothing is filtered any more, until the resync
        netns.run(lab["netns"], "nft", "flush", "table", "inet", "stockade")
        refreshed = agent.status.periodic_syncs
        wait_until(lambda: table() == good, timeout=10, what="the flushed table restored")
        assert agent.status.periodic_syncs > refreshed
        assert netns.tcp(other, a.ipv4, 22) == FILTERED
        assert netns.tcp(albert, a.ipv4, 22) == OPEN

        # one rule deleted by handle: Albert's accept
        listing = netns.run(lab["netns"], "nft", "-a", "list", "table", "inet", "stockade")
        chain, handle = None, None
        for line in listing.splitlines():
            words = line.split()
            if words[:1] == ["chain"]:
                chain = words[1]
            elif ALBERT in line and "# handle" in line:
                handle = words[-1]
                break
        assert chain is not None and handle is not None, listing
        netns.run(
            lab["netns"], "nft", "delete", "rule", "inet", "stockade", chain, "handle", handle
        )
        wait_until(lambda: table() == good, timeout=10, what="the deleted rule restored")
        until(lambda: netns.tcp(albert, a.ipv4, 22), OPEN, "albert reaches a:22 again")
        assert agent.status.error is None
    finally:
        nft.close()


def test_status_and_explain_agree_with_the_kernel(lab):
    ec2, web, a = lab["ec2"], lab["web"], lab["a"]
    ec2.authorize_security_group_ingress(
        GroupId=web, IpProtocol="tcp", FromPort=80, ToPort=80, CidrIp="0.0.0.0/0"
    )
    until(lambda: netns.tcp(lab["albert"], a.ipv4, 80), OPEN, "port 80 open to the world")
    http = lab["http"]
    status = http.get("/_stockade/v1/status").json()
    assert lab["host"] in [x["host"] for x in status["agents"]]
    wait_until(
        lambda: (
            next(
                x
                for x in http.get("/_stockade/v1/status").json()["agents"]
                if x["host"] == lab["host"]
            )["lag"]
            == 0
        ),
        what="the agent to catch up",
    )
    with lab["server"].store.read() as conn:
        net = account_network(conn, lab["acct"].account_id, "us-east-1")
    for src, port in ((ALBERT, 80), (ALBERT, 22), (lab["b_id"], 22)):
        decision = explain(net, src, lab["a_id"], port=port)
        src_node = lab["albert"] if src == ALBERT else lab["b"]
        kernel = netns.tcp(src_node, a.ipv4, port)
        assert decision.allowed == (kernel == OPEN), (src, port, decision.why, kernel)
        if not decision.allowed:
            assert "no ingress rule" in decision.why


def test_agent_command_runs_in_a_namespace_and_uninstalls(manual_server):
    """`stockade agent --host H --netns NS` enforces there; `--uninstall` removes the table."""
    import subprocess

    from conftest import BIN

    server = manual_server
    topo = Topology()
    proc = None
    try:
        host = f"cli-{topo.prefix.strip('-')}"
        common = [
            "--server",
            server.url,
            "--data-dir",
            server.data_dir,
            "--database-url",
            server.db_url,
        ]
        proc = subprocess.Popen(
            [
                str(BIN / "stockade"),
                "agent",
                "--host",
                host,
                "--netns",
                topo.host,
                "--resync-interval",
                "0.01",  # minutes
                *common,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        http = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {agent_token(server.store)}"},
        )
        wait_until(
            lambda: host in {a["host"] for a in http.get("/_stockade/v1/status").json()["agents"]},
            timeout=20,
            what="the agent to report",
        )
        mine = next(
            a for a in http.get("/_stockade/v1/status").json()["agents"] if a["host"] == host
        )
        assert mine["resync_interval_s"] == pytest.approx(0.6)
        nft = Nft(topo.host)
        try:
            assert "table inet stockade" in nft.run("list tables")
            proc.terminate()
            proc.wait(10)
            out = subprocess.run(
                [
                    str(BIN / "stockade"),
                    "agent",
                    "--host",
                    host,
                    "--netns",
                    topo.host,
                    "--uninstall",
                    *common,
                ],
                capture_output=True,
                text=True,
            )
            assert out.returncode == 0, out.stderr
            assert "table inet stockade" not in nft.run("list tables")
        finally:
            nft.close()
        http.close()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        topo.close()
