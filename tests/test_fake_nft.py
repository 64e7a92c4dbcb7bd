"""The in-memory nftables (dataplane/fake.py): it applies what ``plan`` emits exactly, it
refuses what the kernel refuses, and (netns, root) it holds what the kernel holds after
the same scripts."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.dataplane.compile import QUALIFIED, Ruleset, compile_host, plan
from stockade.dataplane.fake import FakeNft
from stockade.dataplane.nft import OUTPUT_JSON, Dataplane, NftError
from stockade.model import Group, Interface, Rule, State

import netns

HOST = "h1"
GROUPS = [f"sg-0{c}" for c in "abcde"]


# -- random states -------------------------------------------------------------------------


@st.composite
def rules(draw: st.DrawFn, gid: str) -> Rule:
    egress = draw(st.booleans())
    proto = draw(st.sampled_from(["6", "17", "1", "58", "-1", "50"]))
    if proto in ("6", "17"):
        low = draw(st.integers(0, 65535))
        ports = (low, draw(st.integers(low, min(low + 100, 65535))))
    elif proto in ("1", "58"):
        kind = draw(st.integers(-1, 20))
        ports = (kind, -1 if kind == -1 else draw(st.integers(-1, 5)))
    else:
        ports = (-1, -1)
    peer = draw(st.sampled_from(["v4", "v6", "any4", "group"]))
    if peer == "group":
        return Rule(gid, egress, proto, *ports, ref_group_id=draw(st.sampled_from(GROUPS)))
    cidr = {
        "v4": f"10.{draw(st.integers(0, 3))}.0.0/16",
        "v6": f"fd0{draw(st.integers(0, 3))}::/64",
        "any4": "0.0.0.0/0",
    }[peer]
    return Rule(gid, egress, proto, *ports, cidr=cidr)


@st.composite
def states(draw: st.DrawFn) -> State:
    groups = []
    for gid in GROUPS:
        if draw(st.booleans()):
            groups.append(Group(gid, tuple(draw(st.lists(rules(gid), max_size=4)))))
    ifaces = []
    for n in range(draw(st.integers(0, 6))):
        ifaces.append(
            Interface(
                f"eni-{n}",
                f"i-{n}",
                draw(st.sampled_from([HOST, HOST, "h2"])),
                f"veth{n}",
                (f"172.31.0.{10 + draw(st.integers(0, 8))}",),
                (f"fd00::{10 + n:x}",) if draw(st.booleans()) else (),
                tuple(draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=3))),
            )
        )
    # addresses of one host's interfaces are unique (anti-spoofing is by address)
    seen: set[str] = set()
    unique = []
    for i in ifaces:
        if str(i.private_ipv4[0]) not in seen:
            seen.add(str(i.private_ipv4[0]))
            unique.append(i)
    return State.of(groups, unique)


def holding(ruleset: Ruleset) -> FakeNft:
    fake = FakeNft()
    fake.run(ruleset.full_script())
    return fake


# -- the property ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states(), states())
def test_plan_applied_to_the_fake_holding_a_gives_the_fake_holding_b(a: State, b: State) -> None:
    old, new = compile_host(a, HOST), compile_host(b, HOST)
    fake = holding(old)
    cmds = plan(old, new)
    if cmds:
        fake.run("\n".join(cmds) + "\n")
    assert fake.snapshot() == holding(new).snapshot()


@settings(max_examples=60, deadline=None)
@given(states())
def test_the_fake_holds_what_the_ruleset_declares(state: State) -> None:
    rs = compile_host(state, HOST)
    held = holding(rs).snapshot()
    assert held is not None
    assert set(held["sets"]) == set(rs.sets)
    for name, s in rs.sets.items():
        kind, type_, _, elements = held["sets"][name]
        assert (kind, type_) == (s.kind, s.type)
        assert elements == dict(s.elements), name
    for name, chain in rs.chains.items():
        assert held["chains"][name] == (None, chain.rules), name
    assert held["chains"]["forward"][0] == "type filter hook forward priority 0; policy accept;"


@settings(max_examples=40, deadline=None)
@given(st.lists(states(), min_size=2, max_size=5))
def test_a_dataplane_over_the_fake_follows_a_sequence_of_states(seq: list[State]) -> None:
    fake = FakeNft()
    dp = Dataplane(HOST, fake)
    for state in seq:
        dp.sync(state)
        assert fake.snapshot() == holding(compile_host(state, HOST)).snapshot()


def test_an_incremental_sync_onto_a_drifted_table_falls_back_to_a_full_one() -> None:
    """Someone emptied a member set behind the agent's back: the next change deletes an
    element that is no longer there, the (fake) kernel refuses the transaction, and the
    data plane replaces the table instead, so the result is still exactly the new table."""
    web = Group("sg-0a", (Rule("sg-0a", False, "6", 80, 80, ref_group_id="sg-0b"),))
    member = Interface("eni-9", "i-9", "h2", "veth9", ("172.31.0.9",), (), ("sg-0b",))
    local = Interface("eni-1", "i-1", HOST, "veth1", ("172.31.0.1",), (), ("sg-0a",))
    other = Interface("eni-8", "i-8", "h2", "veth8", ("172.31.0.8",), (), ("sg-0b",))
    before = State.of([web], [local, member, other])
    after = State.of([web], [local, other])  # eni-9 leaves: delete one element
    fake = FakeNft()
    dp = Dataplane(HOST, fake)
    dp.full_sync(before)
    fake.run("flush set inet stockade m_0b_v4")  # drift
    report = dp.sync(after)
    assert report.full
    assert fake.snapshot() == holding(compile_host(after, HOST)).snapshot()


# -- what it refuses, as the kernel does -----------------------------------------------------

BASE = """table inet t {
\tset s4 { type ipv4_addr; elements = { 10.0.0.1 } }
\tset own { type ifname . ipv6_addr; }
\tchain c {
\t}
\tmap m { type ifname : verdict; elements = { "veth0" : jump c } }
\tchain c {
\t\tip saddr @s4 counter accept
\t}
\tchain base {
\t\ttype filter hook forward priority filter + 10; policy accept;
\t\tiifname vmap @m
\t}
}
"""

REFUSED = [
    "delete element inet t s4 { 10.0.0.2 }",  # not there
    "add element inet t s4 { fd00::1 }",  # wrong type
    "add element inet t s4 { 10.0.0.300 }",
    'add element inet t own { "veth0" }',  # half a concatenation
    "delete chain inet t c",  # a map element jumps to it
    "delete set inet t s4",  # a rule names it
    "add rule inet t c ip saddr @nope accept",  # no such set
    "add rule inet t c jump nowhere",  # no such chain
    "add rule inet t nowhere accept",
    'add element inet t m { "veth1" : jump nowhere }',
    'add element inet t m { "veth0" : drop }',  # there, with another verdict
    "delete table inet nope",
    "flush chain inet t nope",
    "create chain inet t c",  # exists
]


@pytest.mark.parametrize("script", REFUSED)
def test_a_refused_command_changes_nothing(script: str) -> None:
    fake = FakeNft()
    fake.run(BASE)
    before = fake.snapshot("inet t")
    with pytest.raises(NftError):
        fake.run("add element inet t s4 { 10.0.0.9 }\n" + script + "\n")
    assert fake.snapshot("inet t") == before  # the whole buffer is one transaction


def test_elements_are_canonical_and_handles_delete_rules() -> None:
    fake = FakeNft()
    fake.run(BASE)
    fake.run(
        "add element inet t own { veth0 . fd00:0:0::0001 }\nadd element inet t s4 { 10.0.0.1 }"
    )
    table = fake.table("inet t")
    assert table is not None
    assert table.sets["own"].elements == {'"veth0" . fd00::1': ""}
    assert table.sets["s4"].elements == {"10.0.0.1": ""}  # adding what is there is no error
    fake.run('delete element inet t own { "veth0" . fd00::1 }')
    table = fake.table("inet t")
    assert table is not None and table.sets["own"].elements == {}
    ((handle, text),) = table.chains["c"].rules
    assert text == "ip saddr @s4 counter accept"
    fake.run(f"delete rule inet t c handle {handle}\ndelete set inet t s4")
    table = fake.table("inet t")
    assert table is not None and "s4" not in table.sets and table.chains["c"].rules == []
    with pytest.raises(NftError, match="does not support"):
        fake.run("add rule inet t c ip saddr { 10.0.0.1 } accept")


# -- the fake against the kernel (netns) -----------------------------------------------------

SCRIPTS = [
    BASE,
    BASE + "add element inet t s4 { 10.0.0.2, 10.0.0.3 }\ndelete element inet t s4 { 10.0.0.1 }\n",
    BASE + "flush table inet t\n",
    BASE + 'flush chain inet t c\ndelete element inet t m { "veth0" }\ndelete chain inet t c\n',
    BASE + "add set inet t s6 { type ipv6_addr; }\nadd element inet t s6 { fd00::0:1 }\n"
    "add chain inet t d\nadd rule inet t d ip6 saddr @s6 tcp dport 22 counter accept\n"
    'add element inet t m { "veth9" : goto d }\n',
    BASE + "delete table inet t\ntable inet t {\n\tchain only {\n\t\tdrop\n\t}\n}\n",
    BASE + "add chain inet t e\nadd rule inet t e counter accept\ninsert rule inet t e drop\n"
    "add rule inet t c jump e\n",
    BASE + "add chain inet t e\nadd rule inet t e accept\ndelete chain inet t e\n",  # with rules
    BASE + 'delete element inet t m { "veth0" }\nadd element inet t m { "veth0" : drop }\n',
]
KERNEL_REFUSES = [BASE + cmd + "\n" for cmd in REFUSED if "inet nope" not in cmd]


@pytest.fixture
def kernel_pair():
    """libnftables in two namespaces: one takes the scripts, the other the fake's dump."""
    if netns.can_run() is not None:
        pytest.skip(str(netns.can_run()))
    first, second = netns.Topology(), None
    try:
        second = netns.Topology()
        yield first.nft(), second.nft()
    finally:
        first.close()
        if second is not None:
            second.close()


def listing(nft, table: str = "inet t") -> dict[str, object] | None:  # type: ignore[no-untyped-def]
    """The kernel's table: everything but rules as ``netns.canonical`` gives it, and each
    chain's rules in order (both without handles and counters)."""
    if f"table {table}" not in nft.run("list tables"):
        return None
    text = nft.run(f"list table {table}", flags=OUTPUT_JSON)
    items = json.loads(text)["nftables"]
    rules: dict[str, list[str]] = {}
    for item in items:
        if "rule" in item:
            body = {k: v for k, v in item["rule"].items() if k != "handle"}
            flat = re.sub(r'\{"counter": \{[^}]*\}\}', "counter", json.dumps(body, sort_keys=True))
            rules.setdefault(body["chain"], []).append(flat)
    others = json.dumps({"nftables": [i for i in items if "rule" not in i]})
    return {"objects": netns.canonical(others), "rules": rules}


@pytest.mark.netns
@pytest.mark.parametrize("index", range(len(SCRIPTS)))
def test_the_fake_holds_what_the_kernel_holds(kernel_pair, index: int) -> None:
    kernel, mirror = kernel_pair
    script = SCRIPTS[index]
    kernel.run(script)
    fake = FakeNft()
    fake.run(script)
    mirror.run(fake.dump("inet t"))
    assert listing(mirror) == listing(kernel)


@pytest.mark.netns
def test_the_fake_refuses_what_the_kernel_refuses(kernel_pair) -> None:
    kernel, _ = kernel_pair
    for script in KERNEL_REFUSES:
        kernel.run("table inet t\ndelete table inet t\n")
        with pytest.raises(NftError):
            kernel.run(script)
        fake = FakeNft()
        with pytest.raises(NftError):
            fake.run(script)
        assert listing(kernel) is None  # not even the buffer's first line was applied


@pytest.mark.netns
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(states(), states())
def test_a_plan_leaves_the_kernel_and_the_fake_alike(kernel_pair, a: State, b: State) -> None:
    kernel, mirror = kernel_pair
    old, new = compile_host(a, HOST), compile_host(b, HOST)
    script = old.full_script() + "".join(f"{c}\n" for c in plan(old, new))
    kernel.run(script)
    fake = FakeNft()
    fake.run(script)
    mirror.run(fake.dump(QUALIFIED))
    assert listing(mirror, QUALIFIED) == listing(kernel, QUALIFIED)
