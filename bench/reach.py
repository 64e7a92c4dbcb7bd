"""Reach: `analysis.reach.compute` (who reaches whom, by equivalence classes) on generated
states of 1,000 instances in 100 groups and 10,000 in 1,000 (goals: 0.5 s and 5 s).

Each group has 10 ingress rules (3 group references, 2 CIDRs inside the VPC, 4 outside
CIDRs, one port from 0.0.0.0/0) and an egress rule to 0.0.0.0/0; each instance is in one
or two groups, in one of 6 subnets, half of them with a public address. Measured: the
computation, then every class pair's answer read off it (the table `stockade reach`
prints), the number of classes, and a check of 2,000 sampled flows against
`policy.evaluate`. The anchor is the pair-by-pair way: evaluate() per flow times the
number of instance pairs (one port each), and AWS's Reachability Analyzer, which its
documentation says takes tens of seconds to minutes for one path.
``python bench/reach.py [--quick]``.
"""

from __future__ import annotations

import random
import time
from typing import Any

from common import Section, Summary, fmt, run_alone, table
from rich.progress import Progress

SIZES = ((1000, 100), (10_000, 1000))
GOALS = {1000: 0.5, 10_000: 5.0}


def generate(instances: int, groups: int, seed: int = 7) -> Any:
    """Tiers: group g's instances sit in subnet g % 6 (a /20 of 172.31.0.0/16), tiers with
    g % 3 == 0 have public addresses, and every 10th instance is also in a shared group."""
    from stockade.analysis.inventory import Inventory
    from stockade.model import Group, Interface, Rule, State

    rnd = random.Random(seed)
    gid = [f"sg-{g:017x}" for g in range(groups)]
    subnets = [f"172.31.{16 * k}.0/20" for k in range(6)]
    model_groups = []
    for g, this in enumerate(gid):
        rules = [Rule(this, True, "-1", cidr="0.0.0.0/0")]
        for k in range(3):
            peer = gid[(g + k + 1) % groups]
            rules.append(Rule(this, False, "tcp", 2000 + k, 2000 + k, ref_group_id=peer))
        for k in range(2):
            rules.append(Rule(this, False, "tcp", 3000 + k, 3000 + k, cidr=subnets[(g + k) % 6]))
        for k in range(4):
            rules.append(Rule(this, False, "tcp", 22, 22, cidr=f"198.51.{k}.{g % 250}/32"))
        rules.append(Rule(this, False, "tcp", 443, 443, cidr="0.0.0.0/0"))
        model_groups.append(Group(this, tuple(rules), f"tier-{g}"))
    ifaces, subnet_of, public = [], {}, {}
    used = [0] * 6
    for i in range(instances):
        g = rnd.randrange(groups) if i >= groups else i
        mine = [gid[g]] + ([gid[0]] if i % 10 == 9 and g else [])
        sub = g % 6
        used[sub] += 1
        host = used[sub] + 3
        iface = Interface(
            f"eni-{i:017x}",
            f"i-{i:017x}",
            "",
            "",
            (f"172.31.{16 * sub + host // 256}.{host % 256}",),
            (),
            tuple(mine),
        )
        ifaces.append(iface)
        subnet_of[iface.id] = f"subnet-{sub}"
        if g % 3 == 0:
            public[iface.id] = f"198.18.{i // 250}.{i % 250}"
    return Inventory(State.of(model_groups, ifaces), subnet_of=subnet_of, public_ip=public)


def _sample_check(inv: Any, result: Any, count: int) -> tuple[int, float]:
    """(mismatches between reach and evaluate on ``count`` sampled flows, seconds per
    evaluate)."""
    from stockade.policy import Flow, evaluate

    rnd = random.Random(11)
    ids = list(inv.state.interfaces)
    wrong = 0
    spent = 0.0
    for _ in range(count):
        src, dst = rnd.choice(ids), rnd.choice(ids)
        flow = Flow.tcp(src, dst, rnd.choice((22, 443, 2000, 2001, 2002, 3000, 3001, 9999)))
        start = time.perf_counter()
        want = evaluate(inv.state, flow).allowed
        spent += time.perf_counter() - start
        wrong += result.flow_allowed(flow) != want
    return wrong, spent / count


def run(quick: bool, progress: Progress | None = None) -> Section:
    from stockade.analysis import reach

    sizes = SIZES[:1] if quick else SIZES
    task = progress.add_task("reach", total=len(sizes)) if progress else None
    data: dict[str, Any] = {"sizes": {}}
    for instances, groups in sizes:
        if progress is not None and task is not None:
            progress.update(task, description=f"reach: {instances:,} instances")
        inv = generate(instances, groups)
        start = time.perf_counter()
        result = reach.compute(inv)
        compute_s = time.perf_counter() - start
        start = time.perf_counter()
        edges = sum(1 for _ in result.edges())
        edges_s = time.perf_counter() - start
        behaviours = len({k.behaviour for k in result.classes})
        wrong, per_eval = _sample_check(inv, result, 300 if quick else 2000)
        data["sizes"][str(instances)] = {
            "instances": instances,
            "groups": groups,
            "classes": len(result.classes),
            "behaviour_classes": behaviours,
            "class_edges": edges,
            "compute_s": compute_s,
            "edges_s": edges_s,
            "sampled_mismatches": wrong,
            "pairwise_estimate_s": per_eval * instances * (instances - 1),
            "goal_s": GOALS[instances],
        }
        if progress is not None and task is not None:
            progress.advance(task)
    return report(data)


def report(data: dict[str, Any]) -> Section:
    section = Section("reach", data=data)
    t = table(
        "Reach: who reaches whom by equivalence classes",
        "instances / groups",
        "classes (behaviour)",
        "compute",
        "+ every class pair",
        "class edges",
        "sampled vs evaluate()",
        "pair by pair (est.)",
        "goal",
    )
    for d in data["sizes"].values():
        t.add_row(
            f"{d['instances']:,} / {d['groups']:,}",
            f"{d['classes']:,} ({d['behaviour_classes']:,})",
            f"{fmt(d['compute_s'] * 1000)} ms",
            f"{fmt(d['edges_s'] * 1000)} ms",
            f"{d['class_edges']:,}",
            f"{d['sampled_mismatches']} wrong",
            f"{fmt(d['pairwise_estimate_s'])} s",
            f"<= {d['goal_s']} s",
        )
        total = d["compute_s"] + d["edges_s"]
        section.summary.append(
            Summary(
                f"reach: {d['instances']:,} instances in {d['groups']:,} groups (s)",
                fmt(total, 3),
                f"pair by pair {fmt(d['pairwise_estimate_s'])} s; AWS: tens of s per path",
                f"{fmt(d['pairwise_estimate_s'] / total)}x" if total else "-",
                f"<= {d['goal_s']} s",
            )
        )
    section.tables.append(t)
    section.notes.append(
        "compute builds the classes and the class pairs that differ from the shared part; "
        "'every class pair' reads each pair's answer off it, as the table and JSON do"
    )
    return section


if __name__ == "__main__":
    run_alone(run, __doc__)
