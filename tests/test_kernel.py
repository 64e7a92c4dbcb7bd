"""Security groups enforced by the real kernel, in namespaces (see tests/netns.py).

Each test builds a host namespace with instances and outside machines, applies a State
with ``Dataplane`` (libnftables in the host namespace) and sends real traffic.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from stockade.dataplane.nft import OUTPUT_JSON, Dataplane
from stockade.model import Group, Interface, Rule, State

import netns
from netns import CLOSED, FILTERED, OPEN, Node, Probe, Topology, probe_many

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns.can_run() is not None, reason=str(netns.can_run())),
]

ALBERT4, ALBERT6 = "192.168.1.130", "2001:db8::130"
OTHER4, OTHER6 = "192.168.1.131", "2001:db8::131"


class Lab:
    """Three instances (a, b, c), Albert and another outside machine, and a Dataplane."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.a = topo.add_instance("172.31.0.10", "fd00::10")
        self.b = topo.add_instance("172.31.0.11", "fd00::11")
        self.c = topo.add_instance("172.31.0.12", "fd00::12")
        self.albert = topo.add_outside(ALBERT4, ALBERT6)
        self.other = topo.add_outside(OTHER4, OTHER6)
        self.nft = topo.nft()
        self.dp = Dataplane("host-1", self.nft)
        self.servers = topo.serve()
        self.groups: dict[str, Group] = {}
        self.members: dict[str, tuple[str, ...]] = {}

    def iface(self, node: Node, name: str) -> Interface:
        return Interface(
            f"eni-{name}",
            f"i-{name}",
            "host-1",
            node.ifname,
            (node.ipv4,),
            (node.ipv6,) if node.ipv6 else (),
            self.members.get(name, ()),
        )

    def state(self) -> State:
        """Only instances given groups (in ``members``) are managed by the table."""
        nodes = {"a": self.a, "b": self.b, "c": self.c}
        managed = [self.iface(n, k) for k, n in nodes.items() if k in self.members]
        return State.of(self.groups.values(), managed)

    def group(self, gid: str, *rules: Rule, name: str = "") -> None:
        self.groups[gid] = Group(gid, rules, name)

    def sync(self, full: bool = False) -> None:
        if full:
            self.dp.full_sync(self.state())
        else:
            self.dp.sync(self.state())

    def listen(self, *ports: int, nodes: tuple[Node, ...] | None = None) -> None:
        for node in nodes or (self.a, self.b, self.c, self.albert, self.other):
            for port in ports:
                for version in (4, 6):
                    self.servers.tcp(node, port, version)
                    self.servers.udp(node, port, version)


def default_group(gid: str = "sg-0d", *extra: Rule) -> tuple[Rule, ...]:
    return (
        Rule(gid, False, "-1", ref_group_id=gid),
        Rule(gid, True, "-1", cidr="0.0.0.0/0"),
        Rule(gid, True, "-1", cidr="::/0"),
        *extra,
    )


@pytest.fixture
def lab() -> Iterator[Lab]:
    with netns.topology() as topo:
        yield Lab(topo)


def test_without_stockade_everything_is_open(lab: Lab) -> None:
    lab.listen(22)
    assert netns.tcp(lab.albert, lab.a.ipv4, 22) == OPEN
    assert netns.tcp(lab.a, ALBERT4, 22) == OPEN
    assert netns.ping(lab.albert, lab.a.ipv6) == OPEN


def test_default_group_blocks_outsiders_but_lets_members_talk(lab: Lab) -> None:
    lab.group("sg-0d", *default_group(), name="default")
    lab.members.update(a=("sg-0d",), b=("sg-0d",))
    lab.sync()
    lab.listen(22, 80)
    a, b, c, albert = lab.a, lab.b, lab.c, lab.albert
    got = probe_many(
        [
            Probe(albert, a.ipv4, "tcp", 22),
            Probe(albert, a.ipv4, "udp", 80),
            Probe(albert, a.ipv4, "ping"),
            Probe(albert, a.ipv6, "tcp", 22),
            Probe(b, a.ipv4, "tcp", 22),
            Probe(a, b.ipv4, "udp", 80),
            Probe(a, b.ipv6, "tcp", 80),
            Probe(b, a.ipv4, "ping"),
            Probe(a, ALBERT4, "tcp", 22),  # default egress: anything out
            Probe(c, a.ipv4, "tcp", 22),  # c is not a member of sg-0d
        ]
    )
    assert got == [FILTERED] * 4 + [OPEN] * 5 + [FILTERED]


def test_albert_authorizes_ssh_from_his_address_only(lab: Lab) -> None:
    """Seed 002: nmap shows every port filtered; after the authorize, 22/tcp is open."""
    lab.members.update(a=("sg-0d",))
    lab.group("sg-0d", *default_group(), name="default")
    lab.sync()
    lab.listen(22, 80, nodes=(lab.a,))

    def scan() -> str:  # grepable output: "Ports: 22/open/tcp//ssh///  Ignored State: ..."
        out = lab.albert.run(
            "nmap",
            "-Pn",
            "-n",
            "-p1-100",
            "--max-retries",
            "0",
            "-T5",
            "--max-rtt-timeout",
            "150ms",
            "-oG",
            "-",
            lab.a.ipv4,
        )
        return out

    first = scan()
    assert "Ignored State: filtered (100)" in first  # all 100 scanned ports are filtered
    ssh = Rule("sg-0d", False, "tcp", 22, 22, cidr=f"{ALBERT4}/32")
    lab.group("sg-0d", *default_group(), ssh, name="default")
    lab.sync()
    line = scan()
    assert re.search(r"22/open/tcp", line) and "Ignored State: filtered (99)" in line
    assert netns.tcp(lab.albert, lab.a.ipv4, 22) == OPEN
    assert netns.tcp(lab.other, lab.a.ipv4, 22) == FILTERED
    assert netns.tcp(lab.albert, lab.a.ipv4, 80) == FILTERED
    assert netns.tcp(lab.albert, lab.a.ipv6, 22) == FILTERED  # the rule is IPv4 only


def test_refused_is_told_apart_from_filtered(lab: Lab) -> None:
    lab.group("sg-0w", Rule("sg-0w", False, "-1", cidr=f"{ALBERT4}/32"))
    lab.members.update(a=("sg-0w",))
    lab.sync()
    assert netns.tcp(lab.albert, lab.a.ipv4, 5555) == CLOSED  # allowed, nothing listening
    assert netns.udp(lab.albert, lab.a.ipv4, 5555) == CLOSED
    assert netns.tcp(lab.other, lab.a.ipv4, 5555) == FILTERED  # denied: silently dropped
    assert netns.udp(lab.other, lab.a.ipv4, 5555) == FILTERED


def test_group_reference_follows_membership(lab: Lab) -> None:
    """Seed 004: the app group admits port 8080 from the web group's members only."""
    lab.group("sg-0eb", *default_group("sg-0eb")[1:], name="web")
    lab.group(
        "sg-0a9",
        Rule("sg-0a9", False, "tcp", 8080, 8080, ref_group_id="sg-0eb"),
        name="app",
    )
    lab.members.update(a=("sg-0eb",), b=("sg-0a9",), c=("sg-0d",))
    lab.group("sg-0d", *default_group())
    lab.sync()
    lab.listen(8080, nodes=(lab.b,))

    def reach() -> list[str]:
        return probe_many(
            [
                Probe(lab.a, lab.b.ipv4, "tcp", 8080),
                Probe(lab.c, lab.b.ipv4, "tcp", 8080),
                Probe(lab.c, lab.b.ipv6, "tcp", 8080),
                Probe(lab.albert, lab.b.ipv4, "tcp", 8080),
            ]
        )

    assert reach() == [OPEN, FILTERED, FILTERED, FILTERED]
    lab.members["c"] = ("sg-0d", "sg-0eb")  # c joins web
    report = lab.dp.sync(lab.state())
    assert not report.full
    assert reach() == [OPEN, OPEN, OPEN, FILTERED]
    lab.members["a"] = ("sg-0d",)  # a leaves web
    lab.sync()
    assert reach() == [FILTERED, OPEN, OPEN, FILTERED]
    incremental = netns.canonical(lab.nft.run("list table inet stockade", flags=OUTPUT_JSON))
    lab.sync(full=True)
    assert (
        netns.canonical(lab.nft.run("list table inet stockade", flags=OUTPUT_JSON)) == incremental
    )


def test_revoke_closes_new_connections_but_not_established_ones(lab: Lab) -> None:
    ssh = Rule("sg-0d", False, "tcp", 22, 22, cidr=f"{ALBERT4}/32")
    lab.group("sg-0d", *default_group(), ssh)
    lab.members.update(a=("sg-0d",))
    lab.sync()
    lab.listen(22, nodes=(lab.a,))
    conn = netns.connect(lab.albert, lab.a.ipv4, 22)
    assert netns.echo(conn, b"before") == b"before"
    lab.group("sg-0d", *default_group())  # revoke
    lab.sync()
    assert netns.tcp(lab.albert, lab.a.ipv4, 22) == FILTERED
    assert netns.echo(conn, b"after the revoke") == b"after the revoke"
    conn.close()


def test_egress_rules_restrict_outbound(lab: Lab) -> None:
    lab.group(
        "sg-0e",
        Rule("sg-0e", True, "tcp", 443, 443, cidr="0.0.0.0/0"),
        Rule("sg-0e", True, "udp", 53, 53, cidr=f"{OTHER4}/32"),
        Rule("sg-0e", True, "-1", ref_group_id="sg-0d"),
        name="locked",
    )
    lab.group(
        "sg-0d",
        *default_group(),
        Rule("sg-0d", False, "-1", cidr="172.31.0.0/16"),
        Rule("sg-0d", False, "-1", cidr="fd00::/64"),
    )
    lab.members.update(a=("sg-0e",), b=("sg-0d",), c=("sg-0d",))
    lab.sync()
    lab.listen(443, 80, 53)
    a = lab.a
    got = probe_many(
        [
            Probe(a, ALBERT4, "tcp", 443),
            Probe(a, ALBERT4, "tcp", 80),
            Probe(a, ALBERT6, "tcp", 443),  # the 443 rule is IPv4 only
            Probe(a, OTHER4, "udp", 53),
            Probe(a, ALBERT4, "udp", 53),
            Probe(a, lab.b.ipv4, "tcp", 80),  # to a member of sg-0d: all
            Probe(a, lab.c.ipv6, "udp", 53),
            Probe(a, ALBERT4, "ping"),
        ]
    )
    assert got == [OPEN, FILTERED, FILTERED, OPEN, FILTERED, OPEN, OPEN, FILTERED]


def test_icmp_rules(lab: Lab) -> None:
    lab.group(
        "sg-0c",
        Rule("sg-0c", False, "icmp", 8, -1, cidr=f"{ALBERT4}/32"),
        Rule("sg-0c", False, "icmp", 0, -1, cidr=f"{OTHER4}/32"),  # echo *reply*: no ping
        Rule("sg-0c", False, "icmpv6", 128, 0, cidr=f"{OTHER6}/128"),
        Rule("sg-0c", True, "-1", cidr="0.0.0.0/0"),
    )
    lab.members.update(a=("sg-0c",))
    lab.sync()
    got = probe_many(
        [
            Probe(lab.albert, lab.a.ipv4, "ping"),
            Probe(lab.other, lab.a.ipv4, "ping"),
            Probe(lab.other, lab.a.ipv6, "ping"),
            Probe(lab.albert, lab.a.ipv6, "ping"),
            Probe(lab.a, ALBERT4, "ping"),  # egress all (v4)
            Probe(lab.a, ALBERT6, "ping"),  # no v6 egress rule
        ]
    )
    assert got == [OPEN, FILTERED, OPEN, FILTERED, OPEN, FILTERED]


def test_ipv6(lab: Lab) -> None:
    lab.group(
        "sg-06",
        Rule("sg-06", False, "tcp", 22, 22, cidr=f"{ALBERT6}/128"),
        Rule("sg-06", False, "udp", 53, 53, ref_group_id="sg-06"),
        Rule("sg-06", True, "-1", cidr="::/0"),
    )
    lab.members.update(a=("sg-06",), b=("sg-06",))
    lab.sync()
    lab.listen(22, 53)
    got = probe_many(
        [
            Probe(lab.albert, lab.a.ipv6, "tcp", 22),
            Probe(lab.albert, lab.a.ipv4, "tcp", 22),
            Probe(lab.other, lab.a.ipv6, "tcp", 22),
            Probe(lab.b, lab.a.ipv6, "udp", 53),
            Probe(lab.b, lab.a.ipv4, "udp", 53),  # no IPv4 egress rule
            Probe(lab.c, lab.a.ipv6, "udp", 53),
        ]
    )
    assert got == [OPEN, FILTERED, FILTERED, OPEN, FILTERED, FILTERED]


def test_other_ip_protocols_match_on_protocol_alone(lab: Lab) -> None:
    lab.group("sg-0p", Rule("sg-0p", False, "50", cidr=f"{ALBERT4}/32"))
    lab.members.update(a=("sg-0p",))
    lab.sync()
    lab.servers.raw(lab.a, 50)
    lab.servers.raw(lab.a, 51)
    got = probe_many(
        [
            Probe(lab.albert, lab.a.ipv4, 50, dst_node=lab.a),
            Probe(lab.albert, lab.a.ipv4, 51, dst_node=lab.a),
            Probe(lab.other, lab.a.ipv4, 50, dst_node=lab.a),
        ]
    )
    assert got == [OPEN, FILTERED, FILTERED]


def test_a_spoofed_source_is_dropped(lab: Lab) -> None:
    """b admits 172.31.0.99, an address no instance owns; a adds it to its eth0 and the
    host even routes it back to a: only the anti-spoofing check stops a."""
    lab.group(
        "sg-0b",
        Rule("sg-0b", False, "tcp", 22, 22, cidr="172.31.0.99/32"),
        Rule("sg-0b", True, "-1", cidr="::/0"),
    )
    lab.group("sg-0d", *default_group())
    lab.members.update(a=("sg-0d",), b=("sg-0b",))
    lab.sync()
    lab.listen(22, nodes=(lab.b,))
    lab.a.run("ip", "addr", "add", "172.31.0.99/32", "dev", "eth0")
    netns.run(lab.topo.host, "ip", "route", "add", "172.31.0.99/32", "dev", lab.a.ifname)
    spoofed = Probe(lab.a, lab.b.ipv4, "tcp", 22, src_addr="172.31.0.99")
    assert probe_many([spoofed]) == [FILTERED]
    assert not [x for x in lab.servers.accepted if x[2] == "172.31.0.99"]
    # the same connection is allowed once the address really is a's
    iface = lab.iface(lab.a, "a")
    state = lab.state()
    owned = Interface(
        iface.id,
        iface.instance_id,
        iface.host,
        iface.ifname,
        (*iface.private_ipv4, "172.31.0.99"),
        iface.private_ipv6,
        iface.group_ids,
    )
    lab.dp.sync(State(state.groups, {**state.interfaces, iface.id: owned}))
    assert probe_many([spoofed]) == [OPEN]
    # IPv6, one-way (ESP): a claims b's address to reach c, which admits b only
    lab.group("sg-0c", Rule("sg-0c", False, "-1", cidr="fd00::11/128"))
    lab.members.update(c=("sg-0c",))
    lab.sync()
    lab.servers.raw(lab.c, 50, version=6)
    lab.a.run("ip", "-6", "addr", "add", "fd00::11/128", "dev", "eth0", "nodad")
    got = probe_many(
        [
            Probe(lab.b, lab.c.ipv6, 50, dst_node=lab.c),
            Probe(lab.a, lab.c.ipv6, 50, src_addr="fd00::11", dst_node=lab.c),
        ]
    )
    assert got == [OPEN, FILTERED]


def test_full_sync_and_uninstall_touch_only_our_table(lab: Lab) -> None:
    lab.nft.run("table inet neighbour { chain c { type filter hook forward priority 5; }; }\n")
    lab.group("sg-0d", *default_group())
    lab.members.update(a=("sg-0d",), b=("sg-0d",))
    lab.sync(full=True)
    lab.sync(full=True)
    tables = lab.nft.run("list tables")
    assert "table inet stockade" in tables and "table inet neighbour" in tables
    lab.dp.uninstall()
    lab.dp.uninstall()  # idempotent
    assert lab.nft.run("list tables").split() == ["table", "inet", "neighbour"]
    lab.listen(22, nodes=(lab.a,))
    assert netns.tcp(lab.albert, lab.a.ipv4, 22) == OPEN


def test_interfaces_come_and_go(lab: Lab) -> None:
    lab.group("sg-0d", *default_group())
    lab.members.update(a=("sg-0d",))
    lab.sync()
    lab.listen(22, nodes=(lab.a, lab.b))
    # b is not managed yet (not in the table): it reaches a only if a admits it — it doesn't
    assert netns.tcp(lab.b, lab.a.ipv4, 22) == FILTERED
    assert netns.tcp(lab.albert, lab.b.ipv4, 22) == OPEN
    lab.members.update(b=("sg-0d",))
    assert not lab.dp.sync(lab.state()).full
    assert netns.tcp(lab.b, lab.a.ipv4, 22) == OPEN
    assert netns.tcp(lab.albert, lab.b.ipv4, 22) == FILTERED
    assert lab.dp.sync(State(lab.state().groups, {})).commands > 0  # all leave
    assert netns.tcp(lab.albert, lab.b.ipv4, 22) == OPEN


def test_sync_recovers_when_the_table_was_changed_behind_its_back(lab: Lab) -> None:
    lab.group("sg-0d", *default_group())
    lab.members.update(a=("sg-0d",))
    lab.sync()
    lab.listen(22, nodes=(lab.a,))
    lab.nft.run("delete table inet stockade\n")  # someone else removed it
    assert netns.tcp(lab.albert, lab.a.ipv4, 22) == OPEN
    lab.members.update(b=("sg-0d",))
    report = lab.dp.sync(lab.state())  # the diff no longer applies: a full sync instead
    assert report.full
    assert netns.tcp(lab.albert, lab.a.ipv4, 22) == FILTERED
    assert netns.tcp(lab.b, lab.a.ipv4, 22) == OPEN
