"""The policy core, driven directly with plain values (no kernel, no I/O)."""

from __future__ import annotations

import ipaddress

import pytest

from stockade.model import (
    Group,
    IcmpMatch,
    Interface,
    PortRange,
    Rule,
    State,
    protocol_label,
    protocol_number,
)
from stockade.policy import Flow, evaluate

ALBERT = "192.168.1.130"
OTHER = "192.168.1.131"
PUBLIC_A = "198.18.0.10"


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def default_group(gid: str = "sg-default", *extra: Rule, name: str = "default") -> Group:
    """EC2's default group: all from members, all out."""
    return Group(
        gid,
        (
            Rule(gid, False, "-1", ref_group_id=gid),
            Rule(gid, True, "-1", cidr="0.0.0.0/0"),
            Rule(gid, True, "-1", cidr="::/0"),
            *extra,
        ),
        name=name,
    )


def iface(n: int, *groups: str, v6: bool = True) -> Interface:
    return Interface(
        f"eni-{n}",
        f"i-{n}",
        "host-1",
        f"veth{n}",
        (f"172.31.0.{10 + n}",),
        (f"fd00::{10 + n:x}",) if v6 else (),
        groups,
    )


def state(groups: list[Group], ifaces: list[Interface]) -> State:
    return State.of(groups, ifaces)


# -- model ---------------------------------------------------------------------------


def test_protocol_encoding() -> None:
    assert protocol_number("tcp") == 6
    assert protocol_number("6") == 6
    assert protocol_number("-1") == -1
    assert protocol_number("icmpv6") == 58
    assert protocol_number(50) == 50
    assert protocol_label(17) == "udp"
    assert protocol_label(50) == "50"
    with pytest.raises(ValueError):
        protocol_number("tcpx")
    with pytest.raises(ValueError):
        protocol_number("300")


def test_rule_normalises_the_stored_encoding() -> None:
    rule = Rule("sg-1", False, "tcp", 22, 22, cidr="192.168.1.130/32")
    assert rule.protocol == "6"
    assert rule.ports == PortRange(22, 22)
    assert rule.cidr == ipaddress.ip_network("192.168.1.130/32")
    esp = Rule("sg-1", False, "50", 1, 2, cidr="10.0.0.0/8")
    assert (esp.from_port, esp.to_port) == (-1, -1)
    assert Rule("sg-1", False, "1", 8, -1, cidr="0.0.0.0/0").icmp == IcmpMatch(8, -1)
    with pytest.raises(ValueError):
        Rule("sg-1", False, "6", 22, 22)  # no peer
    with pytest.raises(ValueError):
        Rule("sg-1", False, "6", 22, 22, cidr="0.0.0.0/0", ref_group_id="sg-2")
    with pytest.raises(ValueError):
        Rule("sg-1", False, "6", 30, 20, cidr="0.0.0.0/0")
    with pytest.raises(ValueError):
        Rule("sg-1", False, "1", -1, 3, cidr="0.0.0.0/0")  # a code without a type


def test_state_members_and_values() -> None:
    s = state([default_group()], [iface(1, "sg-default"), iface(2, "sg-default"), iface(3)])
    assert {i.id for i in s.members("sg-default")} == {"eni-1", "eni-2"}
    assert s.member_addresses("sg-default", 4) == {ip("172.31.0.11"), ip("172.31.0.12")}
    assert ip("fd00::b") in s.member_addresses("sg-default")
    assert s == state([default_group()], [iface(1, "sg-default"), iface(2, "sg-default"), iface(3)])
    assert hash(s) == hash(
        state([default_group()], [iface(1, "sg-default"), iface(2, "sg-default"), iface(3)])
    )


# -- Albert: the default group --------------------------------------------------------


def test_default_group_members_talk_outsiders_do_not() -> None:
    s = state([default_group()], [iface(1, "sg-default"), iface(2, "sg-default")])
    assert evaluate(s, Flow.tcp("eni-1", "eni-2", 22)).allowed
    assert evaluate(s, Flow.udp("eni-2", "eni-1", 53)).allowed
    assert evaluate(s, Flow.ping("eni-1", "eni-2")).allowed
    outside = evaluate(s, Flow.tcp(ip(ALBERT), "eni-1", 22))
    assert not outside.allowed
    assert not outside.egress.checked and outside.egress.allowed
    assert outside.why == (
        "denied: no ingress rule of sg-default (default) allows tcp/22 from 192.168.1.130"
    )


def test_albert_opens_ssh_to_his_own_address_only() -> None:
    ssh = Rule("sg-default", False, "6", 22, 22, cidr=f"{ALBERT}/32", rule_id="sgr-ssh")
    s = state([default_group("sg-default", ssh)], [iface(1, "sg-default")])
    decision = evaluate(s, Flow.tcp(ip(ALBERT), "eni-1", 22))
    assert decision.allowed
    assert decision.ingress.rules == (ssh,)
    assert "sgr" not in decision.why and "tcp/22 from 192.168.1.130/32" in decision.why
    assert not evaluate(s, Flow.tcp(ip(OTHER), "eni-1", 22)).allowed
    assert not evaluate(s, Flow.tcp(ip(ALBERT), "eni-1", 23)).allowed
    assert not evaluate(s, Flow.udp(ip(ALBERT), "eni-1", 22)).allowed


def test_addresses_resolve_to_interfaces() -> None:
    s = state([default_group()], [iface(1, "sg-default"), iface(2, "sg-default")])
    by_addr = evaluate(s, Flow.tcp(ip("172.31.0.11"), ip("172.31.0.12"), 80))
    assert by_addr.allowed
    assert by_addr.src.interface is not None and by_addr.src.interface.id == "eni-1"
    assert by_addr.dst.interface is not None and by_addr.dst.interface.id == "eni-2"


# -- Mary and the best-practice layout: group references --------------------------------


def three_tier() -> State:
    web = Group("sg-web", (Rule("sg-web", False, "6", 80, 80, cidr="0.0.0.0/0"),), name="apache")
    app = Group(
        "sg-app",
        (
            Rule("sg-app", False, "6", 8080, 8080, ref_group_id="sg-web"),
            Rule("sg-app", False, "6", 22, 22, ref_group_id="sg-gw"),
        ),
        name="appserver",
    )
    db = Group("sg-db", (Rule("sg-db", False, "6", 3306, 3306, ref_group_id="sg-app"),))
    gw = Group("sg-gw", (Rule("sg-gw", False, "6", 62222, 62222, cidr=f"{ALBERT}/32"),))
    out = [Rule(g.id, True, "-1", cidr="0.0.0.0/0") for g in (web, app, db, gw)]  # default egress
    groups = [Group(g.id, (*g.rules, out[i]), g.name) for i, g in enumerate((web, app, db, gw))]
    ifaces = [iface(1, "sg-web"), iface(2, "sg-app"), iface(3, "sg-db"), iface(4, "sg-gw")]
    return state(groups, ifaces)


def test_group_reference_admits_members_and_no_one_else() -> None:
    s = three_tier()
    assert evaluate(s, Flow.tcp("eni-1", "eni-2", 8080)).allowed  # web -> app
    assert not evaluate(s, Flow.tcp("eni-3", "eni-2", 8080)).allowed  # db -> app
    assert not evaluate(s, Flow.tcp(ip(ALBERT), "eni-2", 8080)).allowed
    assert evaluate(s, Flow.tcp("eni-2", "eni-3", 3306)).allowed  # app -> db
    assert not evaluate(s, Flow.tcp("eni-1", "eni-3", 3306)).allowed  # web -> db
    assert evaluate(s, Flow.tcp("eni-4", "eni-2", 22)).allowed  # gateway -> app ssh
    assert evaluate(s, Flow.tcp(ip(ALBERT), "eni-4", 62222)).allowed
    assert not evaluate(s, Flow.tcp(ip(OTHER), "eni-4", 62222)).allowed
    assert evaluate(s, Flow.tcp(ip("203.0.113.9"), "eni-1", 80)).allowed  # world -> web


def test_group_reference_follows_membership() -> None:
    s = three_tier()
    new_web = iface(5, "sg-web")
    assert not evaluate(s, Flow.tcp(ip("172.31.0.15"), "eni-2", 8080)).allowed
    s2 = State.of(s.groups.values(), [*s.interfaces.values(), new_web])
    assert evaluate(s2, Flow.tcp("eni-5", "eni-2", 8080)).allowed
    left = State.of(s.groups.values(), [*s.interfaces.values(), iface(5, "sg-db")])
    assert not evaluate(left, Flow.tcp("eni-5", "eni-2", 8080)).allowed


def test_public_source_is_matched_by_cidr_rules_only() -> None:
    s = three_tier()
    # web instance reaches app through app's public address: NAT makes the source public.
    via_nat = Flow.tcp("eni-1", "eni-2", 8080, src_addr=ip(PUBLIC_A))
    decision = evaluate(s, via_nat)
    assert not decision.allowed and decision.egress.allowed
    assert "from 198.18.0.10" in decision.why
    open_web = Flow.tcp("eni-2", "eni-1", 80, src_addr=ip(PUBLIC_A))
    assert evaluate(s, open_web).allowed  # 0.0.0.0/0 matches a public address


def test_multiple_groups_union() -> None:
    s = three_tier()
    both = iface(6, "sg-web", "sg-db")
    s2 = State.of(s.groups.values(), [*s.interfaces.values(), both])
    assert evaluate(s2, Flow.tcp(ip(OTHER), "eni-6", 80)).allowed  # from sg-web
    assert evaluate(s2, Flow.tcp("eni-2", "eni-6", 3306)).allowed  # from sg-db
    assert not evaluate(s2, Flow.tcp("eni-2", "eni-6", 22)).allowed
    ref = iface(7, "sg-app", "sg-gw")
    s3 = State.of(s.groups.values(), [*s.interfaces.values(), ref])
    assert evaluate(s3, Flow.tcp("eni-7", "eni-3", 3306)).allowed  # a member via its 2nd group


def test_an_interface_without_groups_is_closed() -> None:
    s = state([default_group()], [iface(1, "sg-default"), iface(2)])
    decision = evaluate(s, Flow.tcp("eni-1", "eni-2", 22))
    assert not decision.allowed
    assert "(no groups)" in decision.why


# -- protocols ---------------------------------------------------------------------------


def single(*rules: Rule) -> State:
    """eni-1 in sg-x with ``rules``, eni-2 in sg-y; both may send anything anywhere."""
    out = [Rule(g, True, "-1", cidr=c) for g in ("sg-x", "sg-y") for c in ("0.0.0.0/0", "::/0")]
    x = Group("sg-x", (*rules, *out[:2]))
    y = Group("sg-y", tuple(out[2:]))
    return state([x, y], [iface(1, "sg-x"), iface(2, "sg-y")])


def test_port_ranges_are_inclusive() -> None:
    s = single(Rule("sg-x", False, "17", 1000, 2000, cidr="0.0.0.0/0"))
    assert [
        evaluate(s, Flow.udp("eni-2", "eni-1", p)).allowed for p in (999, 1000, 2000, 2001)
    ] == [
        False,
        True,
        True,
        False,
    ]


def test_icmp_type_and_code() -> None:
    echo_only = single(Rule("sg-x", False, "1", 8, 0, cidr="0.0.0.0/0"))
    assert evaluate(echo_only, Flow.ping("eni-2", "eni-1")).allowed
    unreachable = Flow("eni-2", "eni-1", 1, icmp_type=3, icmp_code=4)
    assert not evaluate(echo_only, unreachable).allowed
    any_code = single(Rule("sg-x", False, "1", 3, -1, cidr="0.0.0.0/0"))
    assert evaluate(any_code, unreachable).allowed
    assert not evaluate(any_code, Flow.ping("eni-2", "eni-1")).allowed
    wrong_code = single(Rule("sg-x", False, "1", 8, 1, cidr="0.0.0.0/0"))
    assert not evaluate(wrong_code, Flow.ping("eni-2", "eni-1")).allowed
    all_icmp = single(Rule("sg-x", False, "1", -1, -1, cidr="0.0.0.0/0"))
    assert evaluate(all_icmp, unreachable).allowed
    assert not evaluate(all_icmp, Flow.tcp("eni-2", "eni-1", 22)).allowed


def test_icmp_is_ipv4_and_icmpv6_is_ipv6() -> None:
    both = single(Rule("sg-x", False, "1", -1, -1, ref_group_id="sg-y"))
    assert evaluate(both, Flow.ping("eni-2", "eni-1", version=4)).allowed
    assert not evaluate(both, Flow.ping("eni-2", "eni-1", version=6)).allowed
    v6 = single(Rule("sg-x", False, "58", 128, -1, cidr="::/0"))
    assert evaluate(v6, Flow.ping(ip("2001:db8::1"), "eni-1", version=6)).allowed
    assert not evaluate(v6, Flow.ping(ip("192.0.2.1"), "eni-1", version=4)).allowed


def test_other_protocols_match_on_protocol_alone() -> None:
    esp = single(Rule("sg-x", False, "50", cidr="10.0.0.0/8"))
    assert evaluate(esp, Flow(ip("10.1.2.3"), "eni-1", 50)).allowed
    assert not evaluate(esp, Flow(ip("10.1.2.3"), "eni-1", 51)).allowed
    assert not evaluate(esp, Flow(ip("11.1.2.3"), "eni-1", 50)).allowed
    assert not evaluate(esp, Flow.tcp(ip("10.1.2.3"), "eni-1", 50)).allowed
    assert evaluate(esp, Flow(ip("10.1.2.3"), "eni-1", 50)).why.startswith("allowed: ")


def test_protocol_all_matches_everything() -> None:
    s = single(Rule("sg-x", False, "-1", cidr="10.0.0.0/8"))
    for flow in (
        Flow.tcp(ip("10.0.0.1"), "eni-1", 1),
        Flow.udp(ip("10.0.0.1"), "eni-1", 65535),
        Flow.ping(ip("10.0.0.1"), "eni-1"),
        Flow(ip("10.0.0.1"), "eni-1", 47),
    ):
        assert evaluate(s, flow).allowed, flow


def test_ipv6_cidr_and_group_rules() -> None:
    s = single(
        Rule("sg-x", False, "6", 443, 443, cidr="2001:db8::/32"),
        Rule("sg-x", False, "6", 22, 22, ref_group_id="sg-y"),
    )
    assert evaluate(s, Flow.tcp(ip("2001:db8::5"), "eni-1", 443)).allowed
    assert not evaluate(s, Flow.tcp(ip("2001:db9::5"), "eni-1", 443)).allowed
    assert not evaluate(s, Flow.tcp(ip("192.0.2.5"), "eni-1", 443)).allowed  # v4 never in v6
    assert evaluate(s, Flow.tcp("eni-2", "eni-1", 22, version=6)).allowed
    assert evaluate(s, Flow.tcp(ip("fd00::c"), ip("fd00::b"), 22)).allowed
    assert not evaluate(s, Flow.tcp("eni-2", "eni-1", 443, version=6)).allowed


def test_cidr_rule_matches_a_member_by_address_too() -> None:
    s = single(Rule("sg-x", False, "6", 22, 22, cidr="172.31.0.12/32"))
    assert evaluate(s, Flow.tcp("eni-2", "eni-1", 22)).allowed
    assert not evaluate(s, Flow.tcp("eni-2", "eni-1", 22, version=6)).allowed


# -- egress ------------------------------------------------------------------------------


def test_egress_rules_restrict_outbound() -> None:
    x = Group(
        "sg-x",
        (
            Rule("sg-x", True, "6", 443, 443, cidr="0.0.0.0/0"),
            Rule("sg-x", True, "17", 53, 53, cidr="10.0.0.2/32"),
            Rule("sg-x", True, "-1", ref_group_id="sg-y"),
        ),
        name="locked",
    )
    y = Group("sg-y", (Rule("sg-y", False, "-1", cidr="0.0.0.0/0"),))
    s = state([x, y], [iface(1, "sg-x"), iface(2, "sg-y")])
    assert evaluate(s, Flow.tcp("eni-1", ip("203.0.113.5"), 443)).allowed
    denied = evaluate(s, Flow.tcp("eni-1", ip("203.0.113.5"), 80))
    assert not denied.allowed and not denied.egress.allowed and not denied.ingress.checked
    assert denied.why == ("denied: no egress rule of sg-x (locked) allows tcp/80 to 203.0.113.5")
    assert evaluate(s, Flow.udp("eni-1", ip("10.0.0.2"), 53)).allowed
    assert not evaluate(s, Flow.udp("eni-1", ip("10.0.0.3"), 53)).allowed
    assert evaluate(s, Flow.tcp("eni-1", "eni-2", 9999)).allowed  # egress to group members
    # but not to the same member's public address (group refs match private addresses)
    to_public = Flow.tcp("eni-1", "eni-2", 9999, dst_addr=ip(PUBLIC_A))
    assert not evaluate(s, to_public).egress.allowed


def test_both_ends_must_allow() -> None:
    x = Group("sg-x", (Rule("sg-x", True, "6", 22, 22, cidr="0.0.0.0/0"),))
    y = Group("sg-y", (Rule("sg-y", False, "6", 80, 80, cidr="0.0.0.0/0"),))
    s = state([x, y], [iface(1, "sg-x"), iface(2, "sg-y")])
    for port, egress, ingress in ((22, True, False), (80, False, True)):
        d = evaluate(s, Flow.tcp("eni-1", "eni-2", port))
        assert (d.allowed, d.egress.allowed, d.ingress.allowed) == (False, egress, ingress)
    assert "egress" in evaluate(s, Flow.tcp("eni-1", "eni-2", 80)).why


def test_matched_rules_from_several_groups_are_all_reported() -> None:
    r1 = Rule("sg-x", False, "6", 0, 65535, cidr="0.0.0.0/0")
    r2 = Rule("sg-z", False, "-1", cidr="192.168.0.0/16")
    x = Group("sg-x", (r1,))
    z = Group("sg-z", (r2,))
    s = state([x, z], [iface(1, "sg-x", "sg-z")])
    decision = evaluate(s, Flow.tcp(ip(ALBERT), "eni-1", 5000))
    assert decision.ingress.rules == (r1, r2)
    assert "(+1 more)" in decision.why


def test_flows_must_be_resolvable() -> None:
    s = state([default_group()], [iface(1, "sg-default", v6=False)])
    with pytest.raises(ValueError):
        evaluate(s, Flow.tcp("eni-9", "eni-1", 22))
    with pytest.raises(ValueError):
        evaluate(s, Flow.tcp(ip("2001:db8::1"), "eni-1", 22))  # eni-1 has no IPv6
