"""Reconcile: the agent's start-up (a full table load) and one incremental change.

A synthetic snapshot of N instances on one host (1,000 and 10,000; quick: 1,000) in N/10
groups of 10 ingress rules (6 CIDR, 4 group references) plus an egress rule, driven
through the agent's own code in a throwaway namespace: start-up = parse the snapshot
(``state_from_snapshot``) + ``Dataplane.full_sync`` (compile, render, one nft
transaction). Then ``Dataplane.sync`` for one change (applied and undone, median of the
two directions): a rule added to a group; an instance joining a group; an instance
arriving; a member elsewhere joining a referenced group.
``python bench/reconcile.py [--quick] [--sizes 1000,10000]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from common import Namespaces, Section, Summary, console, fmt, ratio, table, tier_groups
from rich.progress import Progress

HOST = "bench-host"
GOAL_S = 2.0


def address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}"


def snapshot(n: int) -> dict[str, Any]:
    """What ``/_stockade/v1/hosts/{host}/state`` would answer for N local instances."""
    tiers = max(2, n // 10)
    gid = [f"sg-{g:017x}" for g in range(tiers)]
    groups = tier_groups(tiers, lambda g, k: f"172.{16 + k}.{g % 250}.0/24")
    interfaces = [
        {
            "id": f"eni-{i:017x}",
            "instance_id": f"i-{i:017x}",
            "host": HOST,
            "ifname": f"v{i:013x}",
            "private_ipv4": [address(i + 1)],
            "private_ipv6": [],
            "group_ids": [gid[i % tiers]],
        }
        for i in range(n)
    ]
    return {"revision": 1, "groups": groups, "interfaces": interfaces}


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall times in ms."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def measure_size(n: int, repeat: int) -> dict[str, Any]:
    from stockade.dataplane.agent import state_from_snapshot
    from stockade.dataplane.compile import compile_host
    from stockade.dataplane.nft import Dataplane, Nft
    from stockade.model import Group, Interface, Rule, State

    snap = snapshot(n)
    out: dict[str, Any] = {}
    with Namespaces() as spaces:
        ns = spaces.add("reconcile")
        nft = Nft(ns)
        try:
            import stockade.dataplane.compile as compile_module

            def cold() -> None:  # a fresh agent process: nothing cached, nothing applied
                for cached in ("_group_chains", "_combo_chains", "_text", "_quoted"):
                    getattr(compile_module, cached).cache_clear()

            parse_ms, compile_ms, load_ms, startup_ms = [], [], [], []
            state = state_from_snapshot(snap)
            for _ in range(repeat):
                cold()
                compile_ms += timed(lambda s=state: compile_host(s, HOST), 1)
                cold()
                start = time.perf_counter()
                state = state_from_snapshot(snap)
                parsed = time.perf_counter()
                Dataplane(HOST, nft).full_sync(state)
                done = time.perf_counter()
                parse_ms.append((parsed - start) * 1000)
                load_ms.append((done - parsed) * 1000)
                startup_ms.append((done - start) * 1000)
            ruleset = compile_host(state, HOST)
            out["nft_rules"] = sum(len(c.rules) for c in ruleset.chains.values())
            out["chains"] = len(ruleset.chains) + 2
            out["set_elements"] = sum(len(s.elements) for s in ruleset.sets.values())
            out["parse_ms"] = statistics.median(parse_ms)
            out["compile_ms"] = statistics.median(compile_ms)
            out["full_sync_ms"] = statistics.median(load_ms)
            out["startup_ms"] = statistics.median(startup_ms)

            dp = Dataplane(HOST, nft)
            dp.full_sync(state)
            tier = state.groups["sg-" + f"{0:017x}"]
            more = Group(
                tier.id,
                (*tier.rules, Rule(tier.id, False, "6", 443, 443, cidr="0.0.0.0/0")),
                tier.name,
            )
            first = next(iter(state.interfaces.values()))
            other_gid = f"sg-{1:017x}"
            joined = replace(first, group_ids=(*first.group_ids, other_gid))
            new = Interface(
                "eni-new", "i-new", HOST, "vnew", (address(n + 5),), (), first.group_ids
            )
            far = Interface(
                "eni-far", "i-far", "elsewhere", "x", (address(n + 9),), (), (other_gid,)
            )
            changes = {
                "rule added to a group": State({**state.groups, tier.id: more}, state.interfaces),
                "instance joins a group": State(
                    state.groups, {**state.interfaces, first.id: joined}
                ),
                "instance arrives": State(state.groups, {**state.interfaces, new.id: new}),
                "member elsewhere joins": State(state.groups, {**state.interfaces, far.id: far}),
            }
            out["changes_ms"] = {}
            for name, changed in changes.items():
                samples: list[float] = []
                for _ in range(repeat):
                    samples += timed(lambda c=changed: dp.sync(c), 1)
                    samples += timed(lambda: dp.sync(state), 1)
                out["changes_ms"][name] = statistics.median(samples)
            dp.uninstall()
        finally:
            nft.close()
    return out


def run(quick: bool, progress: Progress | None = None, sizes: list[int] | None = None) -> Section:
    sizes = sizes or ([1000] if quick else [1000, 10000])
    repeat = 3 if quick else 5
    task = progress.add_task("reconcile", total=len(sizes)) if progress else None
    data: dict[str, Any] = {"repeat": repeat, "sizes": {}}
    for n in sizes:
        if progress is not None and task is not None:
            progress.update(task, description=f"reconcile: {n} instances")
        data["sizes"][str(n)] = measure_size(n, repeat)
        if progress is not None and task is not None:
            progress.advance(task)
    return report(data)


def report(data: dict[str, Any]) -> Section:
    section = Section("reconcile", data=data)
    t = table(
        f"Reconcile: agent start-up and one change (median of {data['repeat']}, ms)",
        "instances",
        "table",
        "parse",
        "compile",
        "full sync",
        "start-up",
        "goal",
    )
    c = table(
        "Reconcile: one incremental change, Dataplane.sync (median, ms)", "change", *data["sizes"]
    )
    for n, e in data["sizes"].items():
        t.add_row(
            n,
            f"{e['chains']:,} chains, {e['nft_rules']:,} rules, {e['set_elements']:,} elements",
            fmt(e["parse_ms"]),
            fmt(e["compile_ms"]),
            fmt(e["full_sync_ms"]),
            fmt(e["startup_ms"]),
            f"{GOAL_S * 1000:,.0f}",
        )
    names = list(next(iter(data["sizes"].values()))["changes_ms"])
    for name in names:
        c.add_row(name, *(fmt(e["changes_ms"][name]) for e in data["sizes"].values()))
    section.tables += [t, c]
    n, e = list(data["sizes"].items())[-1]
    section.summary.append(
        Summary(
            f"reconcile: agent start-up at {int(n):,} instances (s)",
            fmt(e["startup_ms"] / 1000),
            f"goal {GOAL_S:.0f}",
            f"{fmt(ratio(e['startup_ms'] / 1000, GOAL_S))}x",
            "<= 1x",
        )
    )
    worst = max(e["changes_ms"].values())
    section.summary.append(
        Summary(
            f"reconcile: one change at {int(n):,} instances (ms, worst kind)",
            fmt(worst),
            f"full sync {fmt(e['full_sync_ms'])}",
            f"{fmt(ratio(worst, e['full_sync_ms']))}x",
        )
    )
    return section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="1,000 instances only")
    ap.add_argument("--sizes", default="", help="comma-separated instance counts")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    with Progress(console=console, transient=True) as progress:
        section = run(args.quick, progress, sizes)
    section.show()
    section.write()


if __name__ == "__main__":
    main()
