"""Policy core: ``stockade.policy.evaluate`` per second, and ``stockade explain`` latency.

A region snapshot of 1,000 interfaces in 100 groups of 10 ingress rules (6 CIDR, 4 group
references) plus an egress rule. Evaluations: a fixed mix of new flows (instance to
instance by interface id, outside address to instance, instance to instance by private
address), evaluated in a loop for 3 s (quick: 1). Explain: ``analysis.explain.explain`` on
the snapshot dict (it parses the snapshot each time, as the CLI does), mean/p50/p99. The
CLI's own figure (a new process that fetches the snapshot from a running server) comes
from the propagation benchmark's server when the runner has one.
``python bench/policy_core.py [--quick]``.
"""

from __future__ import annotations

import ipaddress
import statistics
import time
from typing import Any

from common import Section, Summary, fmt, percentile, run_alone, table, tier_groups
from rich.progress import Progress

INTERFACES = 1000
GROUPS = 100


def snapshot() -> dict[str, Any]:
    """A region snapshot as ``/_stockade/v1/state`` answers it."""
    gid = [f"sg-{g:017x}" for g in range(GROUPS)]
    groups = tier_groups(
        GROUPS, lambda g, k: f"198.51.{k}.{g % 250}/32" if k % 2 else f"203.0.{k}.0/24"
    )
    interfaces = [
        {
            "id": f"eni-{i:017x}",
            "instance_id": f"i-{i:017x}",
            "host": f"host-{i % 10}",
            "ifname": f"v{i:013x}",
            "private_ipv4": [f"172.31.{i // 250}.{i % 250 + 4}"],
            "private_ipv6": [],
            "public_ipv4": None,
            "group_ids": [gid[i % GROUPS]],
        }
        for i in range(INTERFACES)
    ]
    return {"revision": 1, "groups": groups, "interfaces": interfaces}


def flows(snap: dict[str, Any], count: int) -> dict[str, list[Any]]:
    """Flows by kind: id->id, outside address->id, private address->private address."""
    from stockade.policy import Flow

    ifaces = snap["interfaces"]
    n = len(ifaces)
    out: dict[str, list[Any]] = {"by interface id": [], "from outside": [], "by address": []}
    for i in range(count):
        dst = ifaces[(i * 104729 + 1) % n]
        d = int(dst["id"][4:], 16)
        if i % 2:  # allowed: a member of the group the destination's port-2000 rule names
            src = ifaces[((d % GROUPS + 1) % GROUPS + GROUPS * (i % 7)) % n]
            port, outside = 2000, ipaddress.ip_address(f"203.0.0.{i % 250}")
            port_out = 1000
        else:  # denied (most likely): anyone, on another port
            src = ifaces[(i * 7919) % n]
            port, outside = (2001, 22, 1001)[i % 3], ipaddress.ip_address(f"192.0.2.{i % 250}")
            port_out = port
        out["by interface id"].append(Flow.tcp(src["id"], dst["id"], port))
        out["from outside"].append(Flow.tcp(outside, dst["id"], port_out))
        out["by address"].append(
            Flow.tcp(
                ipaddress.ip_address(src["private_ipv4"][0]),
                ipaddress.ip_address(dst["private_ipv4"][0]),
                port,
            )
        )
    return out


def run(
    quick: bool, progress: Progress | None = None, cli_ms: list[float] | None = None
) -> Section:
    from stockade.analysis.explain import explain
    from stockade.analysis.paths import Network
    from stockade.dataplane.agent import state_from_snapshot
    from stockade.policy import evaluate

    seconds = 1.0 if quick else 3.0
    task = progress.add_task("policy core", total=4) if progress else None
    snap = snapshot()
    state = state_from_snapshot(snap)
    data: dict[str, Any] = {"interfaces": INTERFACES, "groups": GROUPS, "evaluations": {}}
    for kind, batch in flows(snap, 1000).items():
        if progress is not None and task is not None:
            progress.update(task, description=f"policy: evaluate, {kind}")
        done = allowed = 0
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end and done < 50_000_000:  # bounded
            for flow in batch[:100]:
                allowed += evaluate(state, flow).allowed
            done += 100
            batch = batch[100:] + batch[:100]
        elapsed = time.perf_counter() - start
        data["evaluations"][kind] = {
            "per_s": done / elapsed,
            "count": done,
            "allowed_share": round(allowed / done, 3),
        }
        if progress is not None and task is not None:
            progress.advance(task)
    if progress is not None and task is not None:
        progress.update(task, description="policy: explain")
    ids = [i["instance_id"] for i in snap["interfaces"]]
    net = Network(
        state,
        owned=frozenset(state.interfaces),
        instances={i.instance_id: (i.id,) for i in state.interfaces.values()},
    )
    samples = []
    deadline = time.perf_counter() + seconds
    for k in range(1000):  # bounded
        start = time.perf_counter()
        explain(net, ids[k % len(ids)], ids[(k * 31 + 3) % len(ids)], port=2000)
        samples.append((time.perf_counter() - start) * 1000)
        if time.perf_counter() > deadline and k >= 10:
            break
    data["explain_ms"] = {
        "mean": statistics.fmean(samples),
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "count": len(samples),
    }
    if cli_ms:
        data["explain_cli_ms"] = {"median": statistics.median(cli_ms), "samples": cli_ms}
    if progress is not None and task is not None:
        progress.advance(task)
    return report(data)


def report(data: dict[str, Any]) -> Section:
    section = Section("policy_core", data=data)
    t = table(
        f"Policy core: {data['interfaces']:,} interfaces, {data['groups']} groups",
        "measure",
        "figure",
    )
    for kind, e in data["evaluations"].items():
        t.add_row(f"evaluate, {kind} ({e['allowed_share']:.0%} allowed)", f"{fmt(e['per_s'])} /s")
    ex = data["explain_ms"]
    t.add_row(
        "explain() on a snapshot dict (parses it)",
        f"{fmt(ex['mean'])} / {fmt(ex['p50'])} / {fmt(ex['p99'])} ms (mean/p50/p99)",
    )
    cli = data.get("explain_cli_ms")
    if cli:
        t.add_row("stockade explain CLI, a new process", f"{fmt(cli['median'])} ms (median)")
    section.tables.append(t)
    rates = [e["per_s"] for e in data["evaluations"].values()]
    section.summary.append(
        Summary(
            "policy: evaluations/s (slowest kind .. fastest)",
            f"{fmt(min(rates))} .. {fmt(max(rates))}",
            "-",
            "-",
        )
    )
    section.summary.append(
        Summary(
            "policy: explain latency (ms, p50; CLI median)",
            fmt(ex["p50"]) + (f"; CLI {fmt(cli['median'])}" if cli else ""),
            "-",
            "-",
        )
    )
    return section


if __name__ == "__main__":
    run_alone(run, __doc__)
