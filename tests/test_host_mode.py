"""Host mode against the policy core, in the kernel: a "machine" namespace enforces its own
groups on its input and output hooks (dataplane.compile.host_mode), and every new TCP flow
to and from it gets the verdict policy.evaluate gives, except the failsafe port, which
stays open; --audit drops nothing and counts what it would drop; uninstall leaves the
namespace's ruleset as it was. Real packets between namespaces this test makes."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from stockade.dataplane.compile import HostMode, failsafe_port
from stockade.dataplane.nft import Dataplane, Nft
from stockade.model import TCP, Group, Interface, Rule, State
from stockade.policy import Flow, evaluate
from stockade.store.db import agent_token

import netns
from conftest import BIN, start_server, stop_server, wait_until
from netns import CLOSED, FILTERED, OPEN, Node, Probe, Topology, probe_many

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns.can_run() is not None, reason=str(netns.can_run())),
]

DB, APP, OTHER = "sg-0db", "sg-0app", "sg-0other"
M, A, OUT = "10.91.0.1", "10.91.0.2", "10.91.0.3"
IN_PORTS = (22, 3306, 8080, 9000)
OUT_PORTS = (5000, 5001)


def _rule(group: str, egress: bool, port: int = -1, cidr: str | None = None, ref=None) -> Rule:
    proto = "-1" if port < 0 else str(TCP)
    return Rule(
        group_id=group,
        egress=egress,
        protocol=proto,
        from_port=port,
        to_port=port,
        cidr=ipaddress.ip_network(cidr) if cidr else None,
        ref_group_id=ref,
    )


def _open(group: str) -> Group:
    everything = (_rule(group, False, cidr="0.0.0.0/0"), _rule(group, True, cidr="0.0.0.0/0"))
    return Group(group, everything, group)


STATE = State.of(
    [
        Group(
            DB,
            (
                _rule(DB, False, 3306, ref=APP),
                _rule(DB, False, 8080, cidr=f"{OUT}/32"),
                _rule(DB, True, 5000, cidr="10.91.0.0/24"),
            ),
            "db",
        ),
        _open(APP),
        _open(OTHER),
    ],
    [
        Interface("eni-m", "i-m", "m", "eth0", (ipaddress.ip_address(M),), (), (DB,)),
        Interface("eni-a", "i-a", "elsewhere", "va", (ipaddress.ip_address(A),), (), (APP,)),
        Interface("eni-o", "i-o", "elsewhere", "vo", (ipaddress.ip_address(OUT),), (), (OTHER,)),
    ],
)


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[Topology, dict[str, Node], Nft]]:
    with netns.topology() as topo:
        nodes = {M: topo.add_instance(M), A: topo.add_instance(A), OUT: topo.add_instance(OUT)}
        servers = topo.serve()
        for port in IN_PORTS:
            servers.tcp(nodes[M], port)
        for ip in (A, OUT):
            for port in OUT_PORTS:
                servers.tcp(nodes[ip], port)
        nft = Nft(nodes[M].ns)
        try:
            yield topo, nodes, nft
        finally:
            nft.close()


def flows(nodes: dict[str, Node]) -> list[tuple[str, str, int]]:
    inbound = [(src, M, port) for src in (A, OUT) for port in IN_PORTS]
    return inbound + [(M, dst, port) for dst in (A, OUT) for port in OUT_PORTS]


def kernel(nodes: dict[str, Node]) -> dict[tuple[str, str, int], str]:
    wanted = flows(nodes)
    netns.flush_conntrack(nodes[M])
    got = probe_many([Probe(nodes[s], d, "tcp", p) for s, d, p in wanted], timeout=0.5)
    return dict(zip(wanted, got, strict=True))


def test_failsafe_ports_are_read_and_checked() -> None:
    assert failsafe_port("TCP:22") == ("tcp", 22)
    for bad in ("22", "icmp:1", "tcp:0", "tcp:70000"):
        with pytest.raises(ValueError, match="tcp:PORT or udp:PORT"):
            failsafe_port(bad)


def test_the_machine_enforces_what_the_policy_core_decides(lab) -> None:
    _, nodes, nft = lab
    before = nft.run("list ruleset")
    plane = Dataplane("m", nft, HostMode(failsafe_in=(("tcp", 22),)))
    plane.full_sync(STATE)
    try:
        seen = kernel(nodes)
        for (src, dst, port), verdict in seen.items():
            allowed = evaluate(STATE, Flow.tcp(src, dst, port)).allowed
            if dst == M and port == 22:
                allowed = True  # the failsafe port, whatever the groups say
            assert verdict == (OPEN if allowed else FILTERED), (src, dst, port, verdict)
        # the flows that tell the rules apart went both ways
        assert seen[(A, M, 3306)] == OPEN and seen[(OUT, M, 3306)] == FILTERED
        assert seen[(OUT, M, 8080)] == OPEN and seen[(A, M, 8080)] == FILTERED
        assert seen[(M, A, 5000)] == OPEN and seen[(M, A, 5001)] == FILTERED
        assert seen[(A, M, 22)] == OPEN and seen[(A, M, 9000)] == FILTERED
    finally:
        plane.uninstall()
    assert nft.run("list ruleset") == before  # only table inet stockade went


def test_audit_mode_drops_nothing_and_counts_what_it_would_drop(lab) -> None:
    _, nodes, nft = lab
    plane = Dataplane("m", nft, HostMode(audit=True))
    plane.full_sync(STATE)
    try:
        seen = kernel(nodes)
        assert set(seen.values()) <= {OPEN, CLOSED}, seen
        listing = nft.run("list table inet stockade")
        counted = re.findall(r'packets (\d+) bytes \d+ log prefix "stockade-audit (\S+) "', listing)
        would_drop = {chain: int(n) for n, chain in counted}
        denied = sum(1 for (s, d, p) in seen if not evaluate(STATE, Flow.tcp(s, d, p)).allowed)
        assert denied > 0 and sum(would_drop.values()) >= denied, listing
    finally:
        plane.uninstall()


def test_the_agent_of_a_machine_enforces_from_its_config_and_uninstalls(lab, tmp_path) -> None:
    """`stockade agent --config` (what join writes) loads the machine's table on the input
    and output hooks for its enrolled device; `--uninstall` removes only that table."""
    _, nodes, nft = lab
    ns = nodes[M].ns
    server = start_server(env={"STOCKADE_AUTO_RUN": "0"})
    proc = None
    try:
        before = nft.run("list ruleset")
        ec2 = server.client(server.account())
        ec2.run_instances(ImageId="ami-fba54092", MinCount=1, MaxCount=1)
        token = agent_token(server.store)
        auth = {"Authorization": f"Bearer {token}"}
        claimed = httpx.post(
            f"{server.url}/_stockade/v1/hosts/hm-1/claim", json={"limit": 1}, headers=auth
        ).json()["instances"]
        eni = claimed[0]["interfaces"][0]["network_interface_id"]
        cfg = tmp_path / "agent.json"
        cfg.write_text(
            json.dumps(
                {
                    "servers": [server.url],
                    "token": token,
                    "host": "hm-1",
                    "interfaces": {eni: "eth0"},
                }
            )
        )
        cmd = [str(BIN / "stockade"), "agent", "--config", str(cfg), "--netns", ns]
        proc = subprocess.Popen(
            [*cmd, "--failsafe-in", "tcp:22", "--audit"], stderr=subprocess.PIPE
        )

        def loaded() -> bool:
            listing = nft.run("list ruleset")
            return "hook input" in listing and '"eth0" : jump c_' in listing

        wait_until(loaded, 30, "the machine's table")
        listing = nft.run("list table inet stockade")
        assert "tcp dport 22 accept" in listing and "stockade-audit" in listing
        assert "hook forward" not in listing
        # a new connection the default group refuses: audit lets it in and counts it
        assert netns.tcp(nodes[A], M, 9000) == OPEN
        ec2.create_security_group(GroupName="wake", Description="a change to report after")

        def drops() -> int:
            found = [a for a in status(server)["agents"] if a["host"] == "hm-1"]
            return (found[0].get("would_drop") or {}).get("eth0", {}).get("in", 0) if found else 0

        wait_until(lambda: drops() >= 1, 30, "the agent to report the would-be drop")
        shown = subprocess.run(
            [
                str(BIN / "stockade"),
                "status",
                "--server",
                server.url,
                "--data-dir",
                server.data_dir,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "300"},
        )
        assert shown.returncode == 0, shown.stderr
        row = next(line for line in shown.stdout.splitlines() if "eth0" in line)
        assert "hm-1" in row and str(drops()) in row
        proc.terminate()
        proc.wait(10)
        done = subprocess.run([*cmd, "--uninstall"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert nft.run("list ruleset") == before
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stop_server(server)


def status(server) -> dict:
    auth = {"Authorization": f"Bearer {agent_token(server.store)}"}
    return httpx.get(f"{server.url}/_stockade/v1/status", headers=auth, timeout=10).json()


def test_an_agent_without_a_config_says_what_to_write(tmp_path) -> None:
    missing = tmp_path / "none.json"
    done = subprocess.run(
        [str(BIN / "stockade"), "agent", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert done.returncode == 2
    assert "--config PATH" in done.stderr and str(missing) in done.stderr
