"""The nftables compiler: layout of the compiled table, the diff between two tables, and
nft's own check of what we render (``nft -c``, and a round trip in a throwaway netns)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import replace

import pytest

from stockade.dataplane.compile import (
    FROM_INST,
    INST_IFS,
    OWN_V4,
    OWN_V6,
    TO_INST,
    combo_chain,
    compile_host,
    group_chain,
    member_set,
    plan,
    rule_lines,
)
from stockade.dataplane.nft import Dataplane, NftError, RecordingNft
from stockade.model import Group, Interface, PrefixList, Rule, State

ALBERT = "192.168.1.130/32"


def iface(n: int, *groups: str, host: str = "h1", v6: bool = True) -> Interface:
    return Interface(
        f"eni-{n}",
        f"i-{n}",
        host,
        f"veth{n}",
        (f"172.31.0.{10 + n}",),
        (f"fd00::{10 + n:x}",) if v6 else (),
        groups,
    )


def default(gid: str = "sg-0d", *extra: Rule) -> Group:
    return Group(
        gid,
        (
            Rule(gid, False, "-1", ref_group_id=gid),
            Rule(gid, True, "-1", cidr="0.0.0.0/0"),
            Rule(gid, True, "-1", cidr="::/0"),
            *extra,
        ),
        name="default",
    )


def layout() -> State:
    web = Group("sg-0eb", (Rule("sg-0eb", False, "6", 80, 80, cidr="0.0.0.0/0"),))
    app = Group(
        "sg-0a9",
        (
            Rule("sg-0a9", False, "6", 8080, 8080, ref_group_id="sg-0eb"),
            Rule("sg-0a9", True, "6", 3306, 3306, ref_group_id="sg-0db"),
        ),
    )
    db = Group("sg-0db", (Rule("sg-0db", False, "6", 3306, 3306, ref_group_id="sg-0a9"),))
    ifaces = [
        iface(1, "sg-0eb", "sg-0d"),
        iface(2, "sg-0a9"),
        iface(3, "sg-0a9"),
        iface(4, "sg-0eb", host="h2"),  # a member elsewhere
        iface(5, "sg-0db", host="h2"),
    ]
    return State.of(
        [web, app, db, default("sg-0d", Rule("sg-0d", False, "6", 22, 22, cidr=ALBERT))], ifaces
    )


# -- layout --------------------------------------------------------------------------------


def test_names() -> None:
    assert group_chain("sg-0abc", False) == "sg_0abc_in"
    assert group_chain("sg-0abc", True) == "sg_0abc_out"
    assert member_set("sg-0abc", 6) == "m_0abc_v6"
    # a combo of one group is named after it; of several, after a hash of the list (order
    # matters: it is the order of the jumps)
    assert combo_chain(("sg-0abc",), True) == "c_0abc_out"
    both = combo_chain(("sg-0abc", "sg-0def"), False)
    assert both.startswith("c_x") and both.endswith("_in")
    assert both == combo_chain(("sg-0abc", "sg-0def"), False)
    assert both != combo_chain(("sg-0def", "sg-0abc"), False)
    assert group_chain("custom id", True) != group_chain("custom-id", True)


def test_layout_of_one_host() -> None:
    rs = compile_host(layout(), "h1")
    assert set(rs.group_chains) == {
        f"sg_{g}_{d}" for g in ("0eb", "0d", "0a9") for d in ("in", "out")
    }  # sg-0db has no member on h1: no chains, but a member set (sg-0a9 refers to it)
    # interfaces with the same groups share one chain per direction (a "combo")
    web_d = combo_chain(("sg-0eb", "sg-0d"), False).removesuffix("_in")
    assert set(rs.combo_chains) == {f"{c}_{d}" for c in (web_d, "c_0a9") for d in ("in", "out")}
    assert set(rs.sets) == {
        "m_0eb_v4",
        "m_0eb_v6",
        "m_0d_v4",
        "m_0d_v6",
        "m_0db_v4",
        "m_0db_v6",
        INST_IFS,
        OWN_V4,
        OWN_V6,
        FROM_INST,
        TO_INST,
    }
    # member sets hold every member's private addresses, on any host; plain hash sets
    assert set(rs.sets["m_0eb_v4"].elements) == {"172.31.0.11", "172.31.0.14"}
    assert set(rs.sets["m_0db_v6"].elements) == {"fd00::f"}
    assert rs.sets["m_0eb_v4"].type == "ipv4_addr"
    assert "interval" not in rs.render()
    # combo chains jump to each group's chain, then drop
    assert rs.combo_chains[f"{web_d}_in"].rules == (
        "jump sg_0eb_in",
        "jump sg_0d_in",
        "counter drop",
    )
    assert rs.combo_chains["c_0a9_out"].rules == ("jump sg_0a9_out", "counter drop")
    # dispatch maps and anti-spoofing pairs, for this host's interfaces only
    assert dict(rs.sets[FROM_INST].elements) == {
        '"veth1"': f"jump {web_d}_out",
        '"veth2"': "jump c_0a9_out",
        '"veth3"': "jump c_0a9_out",
    }
    assert dict(rs.sets[TO_INST].elements) == {
        '"veth1"': f"jump {web_d}_in",
        '"veth2"': "jump c_0a9_in",
        '"veth3"': "jump c_0a9_in",
    }
    assert set(rs.sets[OWN_V4].elements) == {f'"veth{n}" . 172.31.0.{10 + n}' for n in (1, 2, 3)}
    assert set(rs.sets[INST_IFS].elements) == {'"veth1"', '"veth2"', '"veth3"'}
    assert rs.sets[OWN_V6].type == "ifname . ipv6_addr"
    # rules are shared: two members of sg-0a9 on this host, one chain
    assert rs.group_chains["sg_0a9_in"].rules == (
        "ip saddr @m_0eb_v4 tcp dport 8080 counter accept",
        "ip6 saddr @m_0eb_v6 tcp dport 8080 counter accept",
    )
    # an egress allow goes on to the destination's ingress (checked in the same pass)
    assert rs.group_chains["sg_0a9_out"].rules == (
        "ip daddr @m_0db_v4 tcp dport 3306 counter goto ingress",
        "ip6 daddr @m_0db_v6 tcp dport 3306 counter goto ingress",
    )


def test_rendered_base_chains() -> None:
    text = compile_host(layout(), "h1").render()
    forward = text[text.index("chain forward {") :]
    lines = [line.strip() for line in forward.splitlines()]
    assert lines[1] == "type filter hook forward priority filter; policy accept;"
    assert lines[2].startswith("meta nfproto ipv4 iifname @inst_ifs iifname . ip saddr != @own_v4")
    assert lines[3].startswith("meta nfproto ipv6 iifname @inst_ifs iifname . ip6 saddr")
    assert lines[4:9] == [
        "ct state established,related accept",
        "ct state invalid counter drop",
        "iifname vmap @from_inst",
        "oifname vmap @to_inst",
        "}",
    ]
    # the only base chain; "ingress" is where an egress allow continues
    assert text.count("hook forward") == 1
    ingress = text[text.rindex("chain ingress {") :]
    assert [line.strip() for line in ingress.splitlines()][1:3] == [
        "oifname vmap @to_inst",
        "accept",
    ]
    assert "reject" not in text
    # dependency order: sets, group chains, combo chains, maps, then the chains naming maps
    order = [
        text.index(s)
        for s in ("set m_", "chain ingress {", "chain sg_", "chain c_", "map from_inst")
    ]
    assert order == sorted(order)
    assert text.rindex("chain ingress {") > text.index("map to_inst")
    assert text.index("chain forward {") > text.index("map to_inst")


def test_an_empty_host_still_filters_nothing_but_is_valid() -> None:
    rs = compile_host(layout(), "nowhere")
    assert not rs.group_chains and not rs.combo_chains
    assert not rs.sets[FROM_INST].elements


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (Rule("sg-1", False, "6", 22, 22, cidr=ALBERT), ["ip saddr 192.168.1.130/32 tcp dport 22"]),
        (
            Rule("sg-1", False, "17", 1000, 2000, cidr="10.0.0.0/8"),
            ["ip saddr 10.0.0.0/8 udp dport 1000-2000"],
        ),
        (
            Rule("sg-1", False, "6", 0, 65535, cidr="0.0.0.0/0"),
            ["meta nfproto ipv4 meta l4proto tcp"],
        ),
        (Rule("sg-1", True, "-1", cidr="::/0"), ["meta nfproto ipv6"]),
        (
            Rule("sg-1", True, "6", 443, 443, cidr="2001:db8::/32"),
            ["ip6 daddr 2001:db8::/32 tcp dport 443"],
        ),
        (
            Rule("sg-1", False, "1", 8, 0, cidr="0.0.0.0/0"),
            ["meta nfproto ipv4 icmp type 8 icmp code 0"],
        ),
        (Rule("sg-1", False, "1", 3, -1, cidr="10.0.0.0/8"), ["ip saddr 10.0.0.0/8 icmp type 3"]),
        (
            Rule("sg-1", False, "1", -1, -1, cidr="10.0.0.0/8"),
            ["ip saddr 10.0.0.0/8 meta l4proto icmp"],
        ),
        (
            Rule("sg-1", False, "58", 128, -1, cidr="fd00::/8"),
            ["ip6 saddr fd00::/8 icmpv6 type 128"],
        ),
        (Rule("sg-1", False, "1", -1, -1, cidr="fd00::/8"), []),  # icmp never matches IPv6
        (
            Rule("sg-1", False, "58", -1, -1, ref_group_id="sg-2"),
            ["ip6 saddr @m_2_v6 meta l4proto icmpv6"],
        ),
        (Rule("sg-1", False, "50", cidr="10.0.0.0/8"), ["ip saddr 10.0.0.0/8 meta l4proto 50"]),
        (
            Rule("sg-1", False, "-1", ref_group_id="sg-2"),
            ["ip saddr @m_2_v4", "ip6 saddr @m_2_v6"],
        ),
        (
            Rule("sg-1", True, "17", 53, 53, ref_group_id="sg-2"),
            ["ip daddr @m_2_v4 udp dport 53", "ip6 daddr @m_2_v6 udp dport 53"],
        ),
    ],
)
def test_rule_lines(rule: Rule, expected: list[str]) -> None:
    verdict = "goto ingress" if rule.egress else "accept"  # egress: the other end decides next
    assert rule_lines(rule) == [f"{e} counter {verdict}" for e in expected]


def test_rule_id_becomes_a_comment() -> None:
    rule = Rule("sg-1", False, "6", 22, 22, cidr=ALBERT, rule_id='sgr-0abc"; drop')
    assert rule_lines(rule) == [
        'ip saddr 192.168.1.130/32 tcp dport 22 counter accept comment "sgr-0abc drop"'
    ]


# -- plan (the incremental diff) --------------------------------------------------------------


def with_ifaces(state: State, *ifaces: Interface) -> State:
    return State(state.groups, {**state.interfaces, **{i.id: i for i in ifaces}})


def without(state: State, iface_id: str) -> State:
    return State(state.groups, {k: v for k, v in state.interfaces.items() if k != iface_id})


def test_no_change_no_commands() -> None:
    assert plan(compile_host(layout(), "h1"), compile_host(layout(), "h1")) == []


def test_a_member_elsewhere_joining_is_one_set_element() -> None:
    old = compile_host(layout(), "h1")
    new = compile_host(with_ifaces(layout(), iface(6, "sg-0eb", host="h2", v6=False)), "h1")
    assert plan(old, new) == ["add element inet stockade m_0eb_v4 { 172.31.0.16 }"]
    assert plan(new, old) == ["delete element inet stockade m_0eb_v4 { 172.31.0.16 }"]


def test_a_rule_change_refills_only_that_groups_chain() -> None:
    state = layout()
    web = state.groups["sg-0eb"]
    more = Group(web.id, (*web.rules, Rule(web.id, False, "6", 443, 443, cidr="0.0.0.0/0")))
    new = State({**state.groups, web.id: more}, state.interfaces)
    assert plan(compile_host(state, "h1"), compile_host(new, "h1")) == [
        "flush chain inet stockade sg_0eb_in",
        "add rule inet stockade sg_0eb_in meta nfproto ipv4 tcp dport 80 counter accept",
        "add rule inet stockade sg_0eb_in meta nfproto ipv4 tcp dport 443 counter accept",
    ]


def test_an_interface_arriving_and_leaving() -> None:
    old = compile_host(layout(), "h1")
    new = compile_host(with_ifaces(layout(), iface(7, "sg-0db")), "h1")
    cmds = plan(old, new)
    assert cmds[:6] == [
        "add set inet stockade m_0a9_v4 { type ipv4_addr; }",  # sg-0db refers to sg-0a9
        "add set inet stockade m_0a9_v6 { type ipv6_addr; }",
        "add chain inet stockade sg_0db_in",
        "add chain inet stockade sg_0db_out",
        "add chain inet stockade c_0db_in",
        "add chain inet stockade c_0db_out",
    ]
    assert 'add element inet stockade own_v4 { "veth7" . 172.31.0.17 }' in cmds
    assert 'add element inet stockade inst_ifs { "veth7" }' in cmds
    assert "add element inet stockade m_0db_v4 { 172.31.0.17 }" in cmds
    assert "add rule inet stockade c_0db_in jump sg_0db_in" in cmds
    assert 'add element inet stockade from_inst { "veth7" : jump c_0db_out }' in cmds
    # maps point at chains only once those are filled
    assert cmds.index("add rule inet stockade c_0db_out counter drop") < cmds.index(
        'add element inet stockade from_inst { "veth7" : jump c_0db_out }'
    )
    back = plan(new, old)
    assert back[-6:] == [
        "flush chain inet stockade sg_0db_in",
        "delete chain inet stockade sg_0db_in",
        "flush chain inet stockade sg_0db_out",
        "delete chain inet stockade sg_0db_out",
        "delete set inet stockade m_0a9_v4",
        "delete set inet stockade m_0a9_v6",
    ]
    assert back.index('delete element inet stockade to_inst { "veth7" }') < back.index(
        "delete chain inet stockade c_0db_in"
    )


def test_a_set_no_longer_referenced_is_deleted_last() -> None:
    state = layout()
    app = state.groups["sg-0a9"]
    new = State({**state.groups, app.id: Group(app.id, app.rules[:1])}, state.interfaces)
    cmds = plan(compile_host(state, "h1"), compile_host(new, "h1"))
    assert cmds[-2:] == ["delete set inet stockade m_0db_v4", "delete set inet stockade m_0db_v6"]


# -- Dataplane with a fake executor ------------------------------------------------------------


def test_dataplane_full_then_incremental_then_fallback() -> None:
    fake = RecordingNft()
    dp = Dataplane("h1", fake)
    report = dp.full_sync(layout())
    assert report.full and fake.scripts[0].startswith(
        "table inet stockade\ndelete table inet stockade\n"
    )
    report = dp.sync(with_ifaces(layout(), iface(6, "sg-0eb", host="h2", v6=False)))
    assert not report.full and report.commands == 1
    assert fake.scripts[-1] == "add element inet stockade m_0eb_v4 { 172.31.0.16 }\n"
    assert dp.sync(with_ifaces(layout(), iface(6, "sg-0eb", host="h2", v6=False))).commands == 0
    fake.fail_on = "delete element inet"
    with pytest.raises(NftError):
        fake.run("delete element inet stockade m_0eb_v4 { 172.31.0.16 }")
    report = dp.sync(layout())  # the refused incremental step becomes a full sync
    assert report.full and fake.scripts[-1].startswith("table inet stockade\n")
    dp.uninstall()
    assert fake.scripts[-1] == "table inet stockade\ndelete table inet stockade\n"
    assert dp.applied is None


# -- nft itself --------------------------------------------------------------------------------


def needs_nft(test):  # type: ignore[no-untyped-def]
    """Marks a test that runs nft in a throwaway network namespace (root only)."""
    missing = os.geteuid() != 0 or not (shutil.which("nft") and shutil.which("unshare"))
    skip = pytest.mark.skipif(missing, reason="needs root, nft and unshare")
    return pytest.mark.netns(skip(test))


def nft_in_scratch_netns(script: str, *after: str) -> subprocess.CompletedProcess[str]:
    """Run ``nft -f`` (then ``after`` commands) in a throwaway network namespace."""
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as f:
        f.write(script)
    try:
        shell = f"nft -f {f.name}" + "".join(f" && {cmd}" for cmd in after)
        return subprocess.run(
            ["unshare", "--net", "sh", "-c", shell], capture_output=True, text=True, timeout=60
        )
    finally:
        os.unlink(f.name)


@needs_nft
def test_nft_check_mode_accepts_the_full_script_and_the_plan() -> None:
    rs = compile_host(layout(), "h1")
    new = compile_host(with_ifaces(without(layout(), "eni-2"), iface(7, "sg-0db")), "h1")
    script = rs.full_script() + "\n".join(plan(rs, new)) + "\n"
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
        f.write(script)
        f.flush()
        proc = subprocess.run(
            ["unshare", "--net", "nft", "-c", "-f", f.name], capture_output=True, text=True
        )
    assert proc.returncode == 0, proc.stderr


@needs_nft
def test_what_the_kernel_holds_matches_what_we_compiled() -> None:
    rs = compile_host(layout(), "h1")
    proc = nft_in_scratch_netns(rs.full_script(), "nft -j list ruleset")
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)["nftables"]
    chains = {i["chain"]["name"]: i["chain"] for i in items if "chain" in i}
    sets = {i["set"]["name"]: i["set"] for i in items if "set" in i}
    maps = {i["map"]["name"]: i["map"] for i in items if "map" in i}
    tables = [i["table"] for i in items if "table" in i]
    assert [(t["family"], t["name"]) for t in tables] == [("inet", "stockade")]
    assert set(chains) == {*rs.chains, "forward", "ingress"}
    assert (chains["forward"]["hook"], chains["forward"]["prio"]) == ("forward", 0)
    assert "hook" not in chains["ingress"]
    assert set(sets) | set(maps) == set(rs.sets)
    for name, spec in rs.sets.items():
        got = sets.get(name) or maps[name]
        assert len(got.get("elem", [])) == len(spec.elements), name
        assert "flags" not in got, name  # plain hash sets, no interval flag
    rules: dict[str, int] = {}
    for item in items:
        if "rule" in item:
            rules[item["rule"]["chain"]] = rules.get(item["rule"]["chain"], 0) + 1
    for name, chain in rs.chains.items():
        assert rules.get(name, 0) == len(chain.rules), name


def test_a_reference_to_a_group_without_members_of_a_version_gets_no_rule() -> None:
    """IPv4-only members: no IPv6 member set and no IPv6 rule (it could match nothing);
    both appear with the first IPv6 member, and go with the last."""
    base = layout()
    v4_only = State(
        base.groups,
        {i.id: replace(i, private_ipv6=()) for i in base.interfaces.values()},
    )
    rs = compile_host(v4_only, "h1")
    assert not any(name.endswith("_v6") and name.startswith("m_") for name in rs.sets)
    assert rs.group_chains["sg_0a9_in"].rules == (
        "ip saddr @m_0eb_v4 tcp dport 8080 counter accept",
    )
    # the first IPv6 member of sg-0eb: its set, then the rule naming it, in one transaction
    ifaces = dict(v4_only.interfaces)
    ifaces["eni-4"] = replace(ifaces["eni-4"], private_ipv6=("fd00::e",))
    with_v6 = compile_host(State(v4_only.groups, ifaces), "h1")
    cmds = plan(rs, with_v6)
    assert cmds[0] == "add set inet stockade m_0eb_v6 { type ipv6_addr; }"
    assert "add element inet stockade m_0eb_v6 { fd00::e }" in cmds
    assert (
        "add rule inet stockade sg_0a9_in ip6 saddr @m_0eb_v6 tcp dport 8080 counter accept" in cmds
    )
    back = plan(with_v6, rs)
    assert back[-1] == "delete set inet stockade m_0eb_v6"
    assert back.index("flush chain inet stockade sg_0a9_in") < len(back) - 1


def _with_office(state: State, *cidrs: str) -> State:
    """``state`` with sg-0eb allowing tcp/22 from prefix list pl-0f (of ``cidrs``)."""
    web = state.groups["sg-0eb"]
    rule = Rule(web.id, False, "6", 22, 22, prefix_list_id="pl-0f")
    lists = {"pl-0f": PrefixList("pl-0f", cidrs)}
    return State(
        {**state.groups, web.id: Group(web.id, (*web.rules, rule))}, state.interfaces, lists
    )


def test_a_prefix_list_is_an_interval_set_refilled_when_it_changes() -> None:
    from stockade.dataplane.fake import FakeNft

    old = compile_host(_with_office(layout(), "192.168.1.0/24", "192.168.1.130/32"), "h1")
    s = old.sets["pl_0f_v4"]
    assert s.flags == "interval" and dict(s.elements) == {"192.168.1.0/24": ""}  # collapsed
    assert "pl_0f_v6" not in old.sets  # no IPv6 entries: no set, no rule
    (line,) = [r for r in old.group_chains["sg_0eb_in"].rules if "pl_0f" in r]
    assert line.startswith("ip saddr @pl_0f_v4 tcp dport 22 counter accept")
    new = compile_host(_with_office(layout(), "192.168.0.0/16", "2001:db8::/32"), "h1")
    cmds = plan(old, new)
    assert "flush set inet stockade pl_0f_v4" in cmds
    assert "add element inet stockade pl_0f_v4 { 192.168.0.0/16 }" in cmds
    fake = FakeNft()
    fake.run(old.full_script())
    fake.run("\n".join(cmds) + "\n")  # old and new overlap: a refill, not add-then-delete
    table = fake.table()
    assert table is not None and set(table.sets["pl_0f_v4"].elements) == {"192.168.0.0/16"}
    assert set(table.sets["pl_0f_v6"].elements) == {"2001:db8::/32"}
    assert plan(new, compile_host(layout(), "h1"))[-2:] == [
        "delete set inet stockade pl_0f_v4",
        "delete set inet stockade pl_0f_v6",
    ]


@needs_nft
def test_the_kernel_takes_a_prefix_list_table_and_its_refill() -> None:
    old = compile_host(_with_office(layout(), "192.168.1.0/24"), "h1")
    new = compile_host(_with_office(layout(), "192.168.0.0/16", "10.0.0.5/32"), "h1")
    script = old.full_script() + "\n".join(plan(old, new)) + "\n"
    proc = nft_in_scratch_netns(script, "nft list set inet stockade pl_0f_v4")
    assert proc.returncode == 0, proc.stderr
    assert "192.168.0.0/16" in proc.stdout and "10.0.0.5" in proc.stdout
