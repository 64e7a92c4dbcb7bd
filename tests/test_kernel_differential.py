"""Differential test: the kernel's verdict must equal the policy core's for every flow.

Hypothesis draws groups, rules (tcp/udp ports, icmp type/code, -1, protocol 50; CIDR,
group and managed prefix list peers, ingress and egress), memberships and the prefix
lists' entries (overlapping ones too), then flows between three instances and
two outside machines: most flows are derived from some rule (so that allowed and denied
flows are both common), the rest are random. The Dataplane applies each state to a real
host namespace (incrementally, from whatever the previous example left), real packets are
sent, and each flow must get through exactly when ``evaluate`` allows it. Then the table is
rebuilt with a full sync and must list the same as the incrementally built one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.dataplane.nft import OUTPUT_JSON, Dataplane, Nft
from stockade.model import Group, Interface, PrefixList, Rule, State
from stockade.policy import Flow, evaluate

import netns
from netns import CLOSED, OPEN, Node, Probe, Topology, probe_many

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns.can_run() is not None, reason=str(netns.can_run())),
]

GROUPS = ("sg-0a", "sg-0b", "sg-0c")
# listeners on every port a rule range starts or ends at, and on the ports just outside
PORTS = (21, 22, 23, 79, 80, 81, 442, 443, 444, 999, 1000, 8079, 8080, 8081, 9000, 9001)
INSTANCES = (("172.31.0.10", "fd00::10"), ("172.31.0.11", "fd00::11"), ("172.31.0.12", "fd00::12"))
OUTSIDE = (("192.168.1.130", "2001:db8::130"), ("203.0.113.7", "2001:db8:1::7"))
NODES = (*INSTANCES, *OUTSIDE)
CIDRS = (
    "0.0.0.0/0",
    "::/0",
    "192.168.1.130/32",
    "192.168.1.0/24",
    "203.0.113.0/24",
    "172.31.0.0/20",
    "172.31.0.11/32",
    "2001:db8::/32",
    "2001:db8::130/128",
    "fd00::/64",
    "fd00::12/128",
)
PORT_RANGES = ((22, 22), (80, 80), (80, 443), (0, 65535), (1000, 9000), (8080, 8080))
ICMP_MATCHES = ((-1, -1), (8, -1), (8, 0), (8, 1), (0, -1), (3, -1))
ICMPV6_MATCHES = ((-1, -1), (128, -1), (128, 0), (128, 1), (129, -1))
KINDS = ("tcp", "udp", "ping", "50")

PREFIX_LISTS = {  # a managed prefix list per address family, its entries drawn from these
    "pl-0a": ("192.168.1.0/24", "192.168.1.130/32", "203.0.113.0/24", "172.31.0.11/32"),
    "pl-0b": ("2001:db8::/32", "2001:db8::130/128", "fd00::12/128", "fd00::/64"),
}
# groups, each instance's groups, the prefix lists
Spec = tuple[tuple[Group, ...], tuple[tuple[str, ...], ...], tuple[PrefixList, ...]]
FlowSpec = tuple[int, int, int, str, int]  # src node, dst node, IP version, kind, port


@dataclass
class World:
    topo: Topology
    instances: list[Node]
    outside: list[Node]
    nft: Nft
    dp: Dataplane


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with netns.topology() as topo:
        instances = [topo.add_instance(v4, v6) for v4, v6 in INSTANCES]
        outside = [topo.add_outside(v4, v6) for v4, v6 in OUTSIDE]
        servers = topo.serve()
        for node in (*instances, *outside):
            for version in (4, 6):
                for port in PORTS:
                    servers.tcp(node, port, version)
                    servers.udp(node, port, version)
                servers.raw(node, 50, version)
        nft = topo.nft()
        yield World(topo, instances, outside, nft, Dataplane("host-1", nft))


@st.composite
def rules(draw: st.DrawFn, group_id: str) -> Rule:
    egress = draw(st.booleans())
    proto = draw(st.sampled_from(["tcp", "udp", "icmp", "icmpv6", "-1", "50"]))
    low, high = -1, -1
    if proto in ("tcp", "udp"):
        low, high = draw(st.sampled_from(PORT_RANGES))
    elif proto == "icmp":
        low, high = draw(st.sampled_from(ICMP_MATCHES))
    elif proto == "icmpv6":
        low, high = draw(st.sampled_from(ICMPV6_MATCHES))
    peer = draw(st.integers(0, 3))
    if peer == 0:
        return Rule(group_id, egress, proto, low, high, ref_group_id=draw(st.sampled_from(GROUPS)))
    if peer == 1:
        pl = draw(st.sampled_from(sorted(PREFIX_LISTS)))
        return Rule(group_id, egress, proto, low, high, prefix_list_id=pl)
    return Rule(group_id, egress, proto, low, high, cidr=draw(st.sampled_from(CIDRS)))


@st.composite
def states(draw: st.DrawFn) -> Spec:
    groups = []
    for gid in GROUPS:
        drawn = draw(st.lists(rules(gid), min_size=1, max_size=5))
        if draw(st.booleans()):  # EC2 gives new groups "all out"; many keep it
            drawn += [Rule(gid, True, "-1", cidr=c) for c in ("0.0.0.0/0", "::/0")]
        groups.append(Group(gid, tuple(drawn)))
    members = tuple(
        tuple(draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True))) for _ in INSTANCES
    )
    lists = tuple(
        PrefixList(pl, tuple(draw(st.lists(st.sampled_from(cidrs), max_size=3, unique=True))))
        for pl, cidrs in PREFIX_LISTS.items()
    )
    return tuple(groups), members, lists


@st.composite
def random_flow(draw: st.DrawFn) -> FlowSpec:
    src = draw(st.integers(0, len(NODES) - 1))
    if src >= len(INSTANCES):
        dst = draw(st.integers(0, len(INSTANCES) - 1))  # outside -> an instance
    else:
        dst = draw(st.integers(0, len(NODES) - 1).filter(lambda d: d != src))
    kind = draw(st.sampled_from(KINDS))
    port = draw(st.sampled_from(PORTS)) if kind in ("tcp", "udp") else 0
    return src, dst, draw(st.sampled_from([4, 6])), kind, port


def _peers(spec: Spec, rule: Rule, me: int) -> list[tuple[int, int]]:
    """(node, IP version) pairs that ``rule``'s peer matches, other than node ``me``."""
    found = []
    for index, addresses in enumerate(NODES):
        for version, text in zip((4, 6), addresses, strict=True):
            addr = ipaddress.ip_address(text)
            if rule.cidr is not None:
                hit = addr.version == rule.cidr.version and addr in rule.cidr
            elif rule.prefix_list_id is not None:
                (plist,) = [p for p in spec[2] if p.id == rule.prefix_list_id]
                hit = plist.contains(addr)
            else:
                hit = index < len(INSTANCES) and rule.ref_group_id in spec[1][index]
            if hit and index != me:
                found.append((index, version))
    return found


@st.composite
def guided_flows(draw: st.DrawFn, spec: Spec, me: int, rule: Rule) -> list[FlowSpec]:
    """Flows at ``rule`` of instance ``me``: for tcp/udp one per port at and just outside
    each end of its range; the other end of each flow decides for itself."""
    peer, version = draw(st.sampled_from(_peers(spec, rule, me)))
    src, dst = (me, peer) if rule.egress else (peer, me)
    proto = rule.proto
    if proto in (6, 17):
        lo, hi = rule.from_port, rule.to_port
        kind = "tcp" if proto == 6 else "udp"
        ports = [p for p in PORTS if p in (lo - 1, lo, hi, hi + 1)]
        ports = ports or [draw(st.sampled_from(PORTS))]
        return [(src, dst, version, kind, port) for port in ports]
    if proto in (1, 58):
        return [(src, dst, 4 if proto == 1 else 6, "ping", 0)]
    if proto == 50:
        return [(src, dst, version, "50", 0)]
    kind = draw(st.sampled_from(KINDS))
    port = draw(st.sampled_from(PORTS)) if kind in ("tcp", "udp") else 0
    return [(src, dst, version, kind, port)]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Spec, list[FlowSpec]]:
    """A state, flows at every rule of every member, and a few random flows."""
    spec = draw(states())
    groups = {g.id: g for g in spec[0]}
    flows = [
        flow
        for i, gids in enumerate(spec[1])
        for g in gids
        for rule in groups[g].rules
        if _peers(spec, rule, i)
        for flow in draw(guided_flows(spec, i, rule))
    ]
    flows += draw(st.lists(random_flow(), min_size=2, max_size=6))
    # Protocol 50 has no ports: a packet b -> a while a -> b is tracked *is* its reply (and
    # passes as established), so keep one direction per pair; the core decides new flows.
    kept: dict[tuple, FlowSpec] = {}
    for flow in flows:
        src, dst, version, kind, port = flow
        key = (min(src, dst), max(src, dst), version, kind) if kind == "50" else flow
        kept.setdefault(key, flow)
    return spec, list(kept.values())


def to_state(world: World, spec: Spec) -> State:
    groups, members, lists = spec
    ifaces = [
        Interface(f"eni-{i}", f"i-{i}", "host-1", node.ifname, (node.ipv4,), (node.ipv6,), gids)
        for i, (node, gids) in enumerate(zip(world.instances, members, strict=True))
    ]
    return State.of(groups, ifaces, lists)


def policy_flow(flow: FlowSpec) -> Flow:
    src_i, dst_i, version, kind, port = flow
    src = ipaddress.ip_address(NODES[src_i][0 if version == 4 else 1])
    dst = ipaddress.ip_address(NODES[dst_i][0 if version == 4 else 1])
    if kind == "tcp":
        return Flow.tcp(src, dst, port)
    if kind == "udp":
        return Flow.udp(src, dst, port)
    if kind == "ping":
        return Flow.ping(src, dst, version=version)
    return Flow(src, dst, int(kind))


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_kernel_agrees_with_the_policy_core(
    world: World, scenario: tuple[Spec, list[FlowSpec]]
) -> None:
    spec, flows = scenario
    state = to_state(world, spec)
    world.dp.sync(state)
    netns.flush_conntrack(world.topo.host)  # every probe below is a new flow
    nodes = [*world.instances, *world.outside]
    probes = []
    for src_i, dst_i, version, kind, port in flows:
        dst = nodes[dst_i]
        proto: str | int = int(kind) if kind == "50" else kind
        probes.append(Probe(nodes[src_i], dst.addr(version), proto, port, dst_node=dst))
    expected = [evaluate(state, policy_flow(f)) for f in flows]
    got = probe_many(probes, timeout=0.4)
    mismatches = [
        f"{p.src.ns}->{p.dst} {p.proto}/{p.port}: kernel {g}, policy {d.why}"
        for p, g, d in zip(probes, got, expected, strict=True)
        if (g in (OPEN, CLOSED)) != d.allowed
    ]
    assert world.dp.applied is not None
    assert not mismatches, "\n".join(mismatches) + "\n" + world.dp.applied.render()

    incremental = netns.canonical(world.nft.run("list table inet stockade", flags=OUTPUT_JSON))
    world.dp.full_sync(state)
    full = netns.canonical(world.nft.run("list table inet stockade", flags=OUTPUT_JSON))
    assert incremental == full
