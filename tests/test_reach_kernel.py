"""`stockade reach` against real packets: seed 004's layout (gateway, load balancer, two
app servers, a database) enforced by the data plane in a host namespace; every instance
pair and two outside machines probed on the layout's ports, and each probe gets through
exactly when reach's answer (and blast's hop 1) says so."""

from __future__ import annotations

import pytest

from stockade.analysis import reach
from stockade.analysis.blast import blast
from stockade.analysis.inventory import Inventory
from stockade.dataplane.nft import Dataplane
from stockade.model import Group, Interface, Rule, State
from stockade.policy import Flow

import netns
from netns import CLOSED, OPEN, Probe, probe_many

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns.can_run() is not None, reason=str(netns.can_run())),
]

PORTS = (22, 80, 443, 3306, 62222)
TIERS = (("gw", "172.31.0.10"), ("elb", "172.31.0.11"), ("app", "172.31.0.12"))
TIERS += (("app", "172.31.0.13"), ("db", "172.31.0.14"))
OUTSIDE = ("203.0.113.7", "198.51.100.9")  # the admin's address, anyone else


def layout() -> list[Group]:
    def tcp(gid: str, port: int, **peer: str) -> Rule:
        return Rule(gid, False, "tcp", port, port, **peer)

    def out(gid: str) -> Rule:
        return Rule(gid, True, "-1", cidr="0.0.0.0/0")

    return [
        Group("sg-gw", (tcp("sg-gw", 62222, cidr="203.0.113.7/32"), out("sg-gw")), "gw"),
        Group(
            "sg-elb",
            (
                tcp("sg-elb", 80, cidr="0.0.0.0/0"),
                tcp("sg-elb", 443, cidr="0.0.0.0/0"),
                out("sg-elb"),
            ),
            "elb",
        ),
        Group(
            "sg-app",
            (
                tcp("sg-app", 80, ref_group_id="sg-elb"),
                tcp("sg-app", 443, ref_group_id="sg-elb"),
                tcp("sg-app", 22, ref_group_id="sg-gw"),
                out("sg-app"),
            ),
            "app",
        ),
        Group("sg-db", (tcp("sg-db", 3306, ref_group_id="sg-app"), out("sg-db")), "db"),
    ]


def test_reach_and_blast_agree_with_the_kernel_on_004():
    with netns.topology() as topo:
        nodes = [topo.add_instance(addr) for _, addr in TIERS]
        outside = [topo.add_outside(addr) for addr in OUTSIDE]
        servers = topo.serve()
        for node in (*nodes, *outside):
            for port in PORTS:
                servers.tcp(node, port)
        ifaces = [
            Interface(
                f"eni-{k}", f"i-{k}", "host-1", node.ifname, (node.ipv4,), (), (f"sg-{tier}",)
            )
            for k, ((tier, _), node) in enumerate(zip(TIERS, nodes, strict=True))
        ]
        state = State.of(layout(), ifaces)
        Dataplane("host-1", topo.nft()).sync(state)
        netns.flush_conntrack(topo.host)
        # every node public, as on EC2 Classic (the seed's first risk)
        result = reach.compute(Inventory(state, public_ip={i.id: i.id for i in ifaces}))

        probes, expected, meta = [], [], []
        for s, src in enumerate((*nodes, *outside)):
            for d, dst in enumerate(nodes):
                if s == d:
                    continue
                for port in PORTS:
                    probes.append(Probe(src, dst.ipv4, "tcp", port, dst_node=dst))
                    sender = ifaces[s].id if s < len(nodes) else src.ipv4
                    expected.append(result.flow_allowed(Flow.tcp(sender, ifaces[d].id, port)))
                    meta.append((s, d, port))
        got = probe_many(probes, timeout=0.4)
        passed = [g in (OPEN, CLOSED) for g in got]
        wrong = [
            f"{(*nodes, *outside)[s].ipv4} -> {nodes[d].ipv4}:{port}: kernel {g}, reach {e}"
            for (s, d, port), g, e in zip(meta, got, expected, strict=True)
            if (g in (OPEN, CLOSED)) != e
        ]
        assert not wrong, "\n".join(wrong)
        # 62222 from the admin (1), 80/443 to the balancer from the 6 others (12), 80/443
        # and 22 to each app server (6), 3306 from each app server (2): not vacuous
        assert sum(expected) == 21

        # blast's first hop from the gateway is what the gateway's packets reach
        hop1 = {h.instance_id for h in blast(result, "i-0", 1).reached}
        pairs = zip(meta, passed, strict=True)
        reached = {ifaces[d].instance_id for (s, d, _), ok in pairs if s == 0 and ok}
        assert hop1 == reached == {"i-1", "i-2", "i-3"}
