"""`analysis.reach` against the semantic core: random states, every sampled flow's answer
from the equivalence classes equals `policy.evaluate`'s; and the seeds' layouts."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.analysis import reach
from stockade.analysis.inventory import Inventory
from stockade.analysis.ports import EVERYTHING, NOTHING, Ports, of_rule
from stockade.model import Group, Interface, Rule, State
from stockade.policy import Flow, evaluate

GROUPS = ["sg-a", "sg-b", "sg-c", "sg-d"]
CIDRS = ["0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/24", "10.0.1.0/24", "10.0.0.7/32", "192.168.1.0/24"]
PROTOS = ["6", "17", "1", "-1", "50", "58"]


@st.composite
def rules(draw, gid: str) -> Rule:
    proto = draw(st.sampled_from(PROTOS))
    lo = hi = -1
    if proto in ("6", "17"):
        lo = draw(st.sampled_from([0, 22, 80, 443, 1000]))
        hi = draw(st.sampled_from([lo, lo + 1, lo + 100, 65535]))
        hi = min(hi, 65535)
    elif proto in ("1", "58"):
        lo = draw(st.sampled_from([-1, 0, 3, 8]))
        hi = -1 if lo == -1 else draw(st.sampled_from([-1, 0, 1]))
    if draw(st.booleans()):
        peer = {"ref_group_id": draw(st.sampled_from(GROUPS + ["sg-gone"]))}
    else:
        peer = {"cidr": draw(st.sampled_from(CIDRS))}
    return Rule(gid, draw(st.booleans()), proto, lo, hi, **peer)


@st.composite
def states(draw) -> State:
    groups = [Group(g, tuple(draw(st.lists(rules(g), max_size=5)))) for g in GROUPS]
    n = draw(st.integers(1, 8))
    ifaces = []
    for k in range(n):
        addr = draw(st.sampled_from(["10.0.0.", "10.0.1.", "10.2.0."])) + str(k + 2)
        gids = draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=3, unique=True))
        ifaces.append(Interface(f"eni-{k}", f"i-{k}", "h", f"v{k}", (addr,), (), tuple(gids)))
    return State.of(groups, ifaces)


@st.composite
def flows(draw, state: State) -> Flow:
    ids = sorted(state.interfaces)
    outside = draw(st.sampled_from(["192.168.1.130", "8.8.8.8", "10.0.0.7", "10.9.9.9"]))
    src = draw(st.sampled_from(ids + [outside]))
    dst = draw(st.sampled_from(ids + ([outside] if src in ids else [])))
    proto = draw(st.sampled_from([6, 17, 1, 50, 47]))
    if proto in (6, 17):
        return Flow(src, dst, proto, port=draw(st.sampled_from([0, 22, 23, 80, 100, 443, 65535])))
    if proto == 1:
        t = draw(st.sampled_from([0, 3, 8]))
        return Flow(src, dst, proto, icmp_type=t, icmp_code=draw(st.sampled_from([0, 1])))
    return Flow(src, dst, proto)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_reach_agrees_with_evaluate_on_sampled_flows(data):
    state = data.draw(states())
    result = reach.compute(state)
    for _ in range(25):
        flow = data.draw(flows(state))
        try:
            want = evaluate(state, flow).allowed
        except ValueError:
            continue
        assert result.flow_allowed(flow) == want, (flow, evaluate(state, flow).why)
    # the row-by-row listing of every class pair says what the pair-by-pair answer says
    brute = {
        (a.index, b.index, p)
        for a in result.classes
        for b in result.classes
        if (p := result.class_between(a, b)) and not (a is b and len(a.members) < 2)
    }
    assert {(a.index, b.index, p) for a, b, p in result.edges()} == brute


def test_classes_group_alike_interfaces():
    web = Group(
        "sg-web",
        (
            Rule("sg-web", False, "tcp", 80, 80, cidr="0.0.0.0/0"),
            Rule("sg-web", True, "-1", cidr="0.0.0.0/0"),
        ),
    )
    ifaces = [
        Interface(f"eni-{k}", f"i-{k}", "h", f"v{k}", (f"172.31.0.{k + 4}",), (), ("sg-web",))
        for k in range(7)
    ]
    inv = Inventory(
        State.of([web], ifaces),
        subnet_of={i.id: "subnet-1" for i in ifaces},
        public_ip={i.id: f"198.18.0.{k}" for k, i in enumerate(ifaces)},
    )
    result = reach.compute(inv)
    assert len(result.classes) == 1
    assert result.classes[0].public
    (src, dst, ports), *rest = list(result.edges())
    assert not rest and src is dst and ports.describe() == "tcp 80"
    (outside,) = result.from_outside(result.classes[0])
    assert str(outside.cidr) == "0.0.0.0/0" and outside.ports.describe() == "tcp 80"


def test_ports_algebra():
    ssh = of_rule(Rule("g", False, "tcp", 22, 22, cidr="0.0.0.0/0"))
    web = of_rule(Rule("g", False, "tcp", 80, 443, cidr="0.0.0.0/0"))
    ping = of_rule(Rule("g", False, "icmp", 8, -1, cidr="0.0.0.0/0"))
    both = ssh | web | ping
    assert both.describe() == "icmp type 8; tcp 22, 80-443"
    assert both.allows(6, 443) and not both.allows(6, 444) and both.allows(1, -1, 8, 0)
    assert (both & web) == web and (both & EVERYTHING) == both and (ssh & web) == NOTHING
    assert (EVERYTHING & ping).allows(1, icmp_type=8, icmp_code=3)
    assert Ports.of({}) == NOTHING and not NOTHING


def test_outside_addresses_only_reach_public_classes_in_edges():
    g = Group("sg-1", (Rule("sg-1", False, "tcp", 22, 22, cidr="192.168.1.130/32"),))
    a = Interface("eni-a", "i-a", "h", "va", ("172.31.0.4",), (), ("sg-1",))
    b = Interface("eni-b", "i-b", "h", "vb", ("172.31.0.5",), (), ("sg-1",))
    inv = Inventory(State.of([g], [a, b]), public_ip={"eni-a": "198.18.0.9"})
    result = reach.compute(inv)
    public = [k for k in result.classes if k.public]
    assert [k.instance_ids for k in public] == [("i-a",)]
    addr = ipaddress.ip_address("192.168.1.130")
    assert result.from_address(addr, "eni-a").allows(6, 22)
    assert not result.from_address(ipaddress.ip_address("192.168.1.131"), "eni-a").allows(6, 22)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_reach_agrees_with_evaluate_on_prefix_list_peers(data):
    import pytest

    from stockade import model

    if not hasattr(model, "PrefixList"):
        pytest.skip("this tree's model has no managed prefix lists")
    lists = [
        model.PrefixList("pl-1", tuple(data.draw(st.lists(st.sampled_from(CIDRS), max_size=3)))),
        model.PrefixList("pl-2", ("10.0.1.0/24", "8.8.8.0/24")),
    ]
    base = data.draw(states())
    extra = []
    for g in base.groups.values():
        pl = data.draw(st.sampled_from(["pl-1", "pl-2", "pl-unknown"]))
        port = data.draw(st.sampled_from([22, 80]))
        extra.append(Rule(g.id, data.draw(st.booleans()), "tcp", port, port, prefix_list_id=pl))
    groups = [Group(g.id, (*g.rules, r)) for g, r in zip(base.groups.values(), extra, strict=True)]
    state = model.State.of(groups, base.interfaces.values(), lists)
    result = reach.compute(state)
    for _ in range(20):
        flow = data.draw(flows(state))
        try:
            want = evaluate(state, flow).allowed
        except ValueError:
            continue
        assert result.flow_allowed(flow) == want, (flow, evaluate(state, flow).why)
