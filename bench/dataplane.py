"""Data-plane micro benchmark: ``python bench/dataplane.py [N]`` (moved here from
``stockade.dataplane.bench``; ``bench/reconcile.py`` is the one ``make bench`` runs).

Needs root. Works in a throwaway network namespace (removed afterwards) with N interfaces
(default 1,000) on one host; the interfaces need not exist for nftables to match their
names. Prints a table; not a test, no assertions.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from stockade.dataplane.compile import compile_host, plan
from stockade.dataplane.nft import Dataplane, Nft
from stockade.model import Group, Interface, Rule, State

HOST = "bench-host"


def build(n_ifaces: int, n_groups: int = 50) -> State:
    groups = []
    for g in range(n_groups):
        gid = f"sg-{g:04x}"
        ref = f"sg-{(g + 1) % n_groups:04x}"
        groups.append(
            Group(
                gid,
                (
                    Rule(gid, False, "-1", ref_group_id=gid),
                    Rule(gid, False, "6", 22, 22, cidr="192.168.1.130/32"),
                    Rule(gid, False, "6", 8080, 8090, ref_group_id=ref),
                    Rule(gid, False, "1", 8, -1, cidr="0.0.0.0/0"),
                    Rule(gid, True, "-1", cidr="0.0.0.0/0"),
                    Rule(gid, True, "-1", cidr="::/0"),
                ),
            )
        )
    ifaces = []
    for i in range(n_ifaces):
        gids = (f"sg-{i % n_groups:04x}",) + ((f"sg-{(i * 7) % n_groups:04x}",) if i % 3 else ())
        ifaces.append(
            Interface(
                f"eni-{i:05x}",
                f"i-{i:05x}",
                HOST,
                f"v{i:05d}",
                (f"172.31.{i // 250}.{i % 250 + 1}",),
                (f"fd00::{i + 1:x}",),
                tuple(dict.fromkeys(gids)),
            )
        )
    return State.of(groups, ifaces)


def timed(fn: Callable[[], object], repeat: int = 5) -> tuple[float, float]:
    """(median, min) wall time in milliseconds."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), min(samples)


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 1000
    ns = f"skb-{uuid.uuid4().hex[:6]}-dataplane"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    rows: list[tuple[str, float, float, str]] = []
    try:
        nft = Nft(ns)
        dp = Dataplane(HOST, nft)
        state = build(n)
        ruleset = compile_host(state, HOST)
        script = ruleset.full_script()
        chains = len(ruleset.chains) + 2
        elems = sum(len(s.elements) for s in ruleset.sets.values())
        rules = sum(len(c.rules) for c in ruleset.chains.values())
        size = f"{chains} chains, {rules} rules, {elems} elements, {len(script) // 1024} KiB"

        rows.append(("compile (State -> Ruleset)", *timed(lambda: compile_host(state, HOST)), ""))
        rows.append(("render full script", *timed(ruleset.full_script), size))
        rows.append(("full sync (replace whole table)", *timed(lambda: dp.full_sync(state)), ""))

        a_iface = next(iter(state.interfaces.values()))
        joined = replace(a_iface, group_ids=(*a_iface.group_ids, "sg-0031"))
        state_b = State(state.groups, {**state.interfaces, a_iface.id: joined})
        other = Interface("eni-far", "i-far", "elsewhere", "x", ("172.31.200.1",), (), ("sg-0001",))
        state_c = State(state.groups, {**state.interfaces, other.id: other})
        one = "add element inet stockade m_0001_v4 { 172.31.200.1 }\n"
        undo = "delete element inet stockade m_0001_v4 { 172.31.200.1 }\n"

        def element_pair() -> None:
            nft.run(one)
            nft.run(undo)

        med, low = timed(element_pair, 21)
        rows.append(("one set element add (nft only)", med / 2, low / 2, "libnftables"))
        dp.full_sync(state)

        def member_elsewhere() -> None:
            dp.sync(state_c)
            dp.sync(state)

        med, low = timed(member_elsewhere, 11)
        rows.append(("sync: member elsewhere joins", med / 2, low / 2, "compile+diff+nft"))
        cmds = plan(compile_host(state, HOST), compile_host(state_c, HOST))
        rows.append(("  plan() for it", *timed(lambda: plan(ruleset, ruleset)), f"{len(cmds)} cmd"))

        group = state.groups["sg-0002"]
        more = Group(
            group.id, (*group.rules, Rule(group.id, False, "6", 443, 443, cidr="0.0.0.0/0"))
        )
        state_d = State({**state.groups, group.id: more}, state.interfaces)

        def rule_change() -> None:
            dp.sync(state_d)
            dp.sync(state)

        med, low = timed(rule_change, 11)
        rows.append(("sync: one group's rules change", med / 2, low / 2, "flush+refill"))

        def local_join() -> None:
            dp.sync(state_b)
            dp.sync(state)

        med, low = timed(local_join, 11)
        rows.append(("sync: local iface joins a group", med / 2, low / 2, ""))
        new_iface = Interface("eni-new", "i-new", HOST, "vnew", ("172.31.201.1",), (), ("sg-0001",))
        state_e = State(state.groups, {**state.interfaces, new_iface.id: new_iface})

        def add_remove() -> None:
            dp.sync(state_e)
            dp.sync(state)

        med, low = timed(add_remove, 11)
        rows.append(("sync: interface added/removed", med / 2, low / 2, ""))

        def forked() -> None:
            subprocess.run(
                ["ip", "netns", "exec", ns, "nft", "-f", "-"],
                input=one + undo,
                text=True,
                check=True,
            )

        med, low = timed(forked, 11)
        rows.append(("fork ip netns exec nft -f (add+del)", med, low, "for comparison"))
        dp.uninstall()
        nft.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)

    print(f"data plane, {n} interfaces on one host, 50 groups")
    print(f"{'operation':42} {'median ms':>10} {'min ms':>8}  note")
    for name, med, low, note in rows:
        print(f"{name:42} {med:10.2f} {low:8.2f}  {note}")


if __name__ == "__main__":
    main(sys.argv[1:])
