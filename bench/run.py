"""Every Stockade benchmark in one run: ``python bench/run.py [--quick] [--only NAMES]``.

1. api_capacity  - wrk against Stockade and moto (100 / 1,000 / 10,000 groups)
2. api_latency   - boto3 per-call time: Stockade, moto and a canned-reply floor
3. propagation   - API call to kernel enforcement through a real agent (root)
4. reconcile     - agent start-up and one incremental change (root)
5. forwarding    - throughput and connection rate through the host's table (root)
6. policy_core   - evaluate() per second and explain latency
7. teardown      - `stockade up` to ready, `stockade down` and Ctrl-C to stopped (root)
8. boot          - an instance's image services to listening, and an SSH login (root)
9. hardening     - hostile bodies (server RSS) and filters (another account's p99)
10. fuzz         - fuzzed signed requests on SQLite and PostgreSQL: 5xx, hangs, stored changes
11. tls          - serve --tls beside plain serve: boto3, agent reads, new connections

Prints each benchmark's tables, then one summary (figure, anchor, ratio, goal), and writes
bench/results/<benchmark>.json and bench/results/summary.json. Benchmarks assert nothing
about time; the exit status is 1 only if a benchmark raised an error. ``--quick`` is the
smoke run CI executes (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from common import RESULTS, Section, Summary, console, fmt, machine, ratio, table
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

ALL = (
    "api_capacity",
    "api_latency",
    "propagation",
    "reconcile",
    "forwarding",
    "policy_core",
    "teardown",
    "boot",
    "hardening",
    "fuzz",
    "tls",
)
NEEDS_ROOT = {"propagation", "reconcile", "forwarding", "teardown", "boot"}
NEEDS_TOOLS = {
    "api_capacity": ("wrk",),
    "propagation": ("ip", "nft"),
    "reconcile": ("ip", "nft"),
    "forwarding": ("ip", "nft", "iperf3"),
    "teardown": ("ip", "nft"),
    "boot": ("ip", "ssh", "ssh-keygen"),
}


def capacity(quick: bool, progress: Progress) -> Section:
    """Benchmark 1 (``api_capacity.measure``) as a section with its summary lines."""
    import api_capacity

    sizes = [100] if quick else [100, 1000, 10000]
    workers = 1 if quick else 2
    results = api_capacity.measure(
        sizes, 1 if quick else 6, 200 if quick else 2000, progress, workers=workers
    )
    section = Section("api_capacity", data={"sizes": sizes, "results": results})
    many = f"stockade-{workers}w"
    columns = ["workload", "groups", "Stockade req/s", "p50/p99 ms", "moto req/s", "p50/p99 ms"]
    columns.append("ratio")
    if workers > 1:
        columns += [f"--workers {workers} req/s", "p50/p99 ms", "ratio"]
    t = table("API capacity (wrk, 8 connections, pre-signed SigV4 requests)", *columns)
    index = {(r["server"], r["workload"], r["groups"]): r for r in results}

    def latency(r: dict[str, Any]) -> str:  # wrk prints 0 when (nearly) all timed out
        if not r["p50_ms"] and not r["p99_ms"]:
            return "timeouts"
        return f"{fmt(r['p50_ms'])}/{fmt(r['p99_ms'])}"

    workloads = list(dict.fromkeys(r["workload"] for r in results))
    for w in workloads:
        for size in sizes:
            s, m = index.get(("stockade", w, size)), index.get(("moto", w, size))
            if s is None or m is None:
                continue
            cells = [fmt(s["rps"]), latency(s), fmt(m["rps"]), latency(m)]
            cells.append(f"{fmt(ratio(s['rps'], m['rps']), 1)}x")
            s2 = index.get((many, w, size))
            if s2 is not None:
                cells += [fmt(s2["rps"]), latency(s2), f"{fmt(ratio(s2['rps'], m['rps']), 1)}x"]
            t.add_row(w, f"{size:,}", *cells)
    section.tables.append(t)
    for w in workloads:
        bare = [index.get(("bare", w, size)) for size in sizes]
        if all(bare):
            pairs = zip(bare, sizes, strict=True)
            figures = ", ".join(f"{fmt(b['rps'])} at {size:,}" for b, size in pairs)
            section.notes.append(f"the bare handler, {w} (req/s): {figures}")
    errors = [r for r in results if r.get("non_2xx")]
    for r in errors:
        section.notes.append(
            f"{r['server']} {r['workload']} at {r['groups']:,}: {r['non_2xx']} non-2xx answers"
        )
    pivot = 1000 if 1000 in sizes else sizes[-1]

    def against_moto(label: str, r: dict[str, Any], m: dict[str, Any], goal: str = "") -> None:
        moto = f"moto {fmt(m['rps'])}"
        times = f"{fmt(ratio(r['rps'], m['rps']), 1)}x"
        section.summary.append(
            Summary(f"capacity: {label} (req/s)", fmt(r["rps"]), moto, times, goal)
        )

    for w in workloads:
        s, m = index[("stockade", w, pivot)], index[("moto", w, pivot)]
        against_moto(f"{w} at {pivot:,} groups", s, m, ">= 20x")
        s2 = index.get((many, w, pivot))
        if s2 is not None:
            against_moto(f"{w} at {pivot:,} groups, serve --workers {workers}", s2, m)
        b = index.get(("bare", w, pivot))
        if b is not None:
            against_moto(f"{w}, the bare handler (SigV4 + one SQLite query)", b, m)
            section.summary.append(
                Summary(
                    f"capacity: {w} at {pivot:,} groups, Stockade vs the bare handler",
                    fmt(s["rps"]),
                    f"bare {fmt(b['rps'])}",
                    f"{fmt(ratio(s['rps'], b['rps']), 2)}x",
                    "",
                )
            )
    if len(sizes) > 1:
        flat = min(
            ratio(index[("stockade", w, sizes[-1])]["rps"], index[("stockade", w, sizes[0])]["rps"])
            for w in workloads
        )
        section.summary.append(
            Summary(
                f"capacity: Stockade req/s at {sizes[-1]:,} vs {sizes[0]:,} groups (worst)",
                f"{fmt(flat)}x",
                "-",
                f"{fmt(flat)}x",
                "flat (1x)",
            )
        )
    return section


def runners(
    quick: bool, progress: Progress, shared: dict[str, Any]
) -> dict[str, Callable[[], Section]]:
    import api_latency
    import boot
    import forwarding
    import fuzz
    import hardening
    import policy_core
    import propagation
    import reconcile
    import teardown
    import tls

    def prop() -> Section:
        section = propagation.run(quick, progress)
        last = list(section.data["sizes"].values())[-1]
        shared["explain_cli_ms"] = last.get("explain_cli_ms")
        return section

    return {
        "api_capacity": lambda: capacity(quick, progress),
        "api_latency": lambda: api_latency.run(quick, progress),
        "propagation": prop,
        "reconcile": lambda: reconcile.run(quick, progress),
        "forwarding": lambda: forwarding.run(quick, progress),
        "policy_core": lambda: policy_core.run(quick, progress, shared.get("explain_cli_ms")),
        "teardown": lambda: teardown.run(quick, progress),
        "boot": lambda: boot.run(quick, progress),
        "hardening": lambda: hardening.run(quick, progress),
        "fuzz": lambda: fuzz.run(quick, progress),
        "tls": lambda: tls.run(quick, progress),
    }


def why_not(name: str) -> str | None:
    """None if benchmark ``name`` can run here, else the reason."""
    if name in NEEDS_ROOT and os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in NEEDS_TOOLS.get(name, ()):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the ~1-minute smoke run")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(ALL)}")
    args = ap.parse_args()
    chosen = [n for n in ALL if not args.only or n in args.only.split(",")]

    # SIGTERM unwinds like an exception, so every namespace and server is cleaned up (once:
    # a second SIGTERM must not interrupt the clean-up)
    def on_term(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    started = time.perf_counter()
    sections: list[Section] = []
    failures: dict[str, str] = {}
    skipped: dict[str, str] = {}
    shared: dict[str, Any] = {}
    console.print(
        f"[bold]Stockade benchmarks[/bold] ({'quick' if args.quick else 'full'}): "
        + ", ".join(chosen)
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        todo = runners(args.quick, progress, shared)
        for name in chosen:
            reason = why_not(name)
            if reason:
                skipped[name] = reason
                progress.console.print(f"[yellow]{name}: skipped, {reason}[/yellow]")
                continue
            begin = time.perf_counter()
            try:
                section = todo[name]()
            except Exception as exc:  # noqa: BLE001 - report it, run the others
                failures[name] = f"{type(exc).__name__}: {exc}"
                progress.console.print(f"[red]{name} failed:[/red]\n{traceback.format_exc()}")
                continue
            section.data["wall_s"] = round(time.perf_counter() - begin, 1)
            section.write()
            progress.console.print()
            section.show()
            progress.console.print(f"[dim]{name}: {section.data['wall_s']} s[/dim]")
            sections.append(section)
    wall = time.perf_counter() - started
    summary = table(
        f"Summary ({'quick' if args.quick else 'full'} run, {wall:.0f} s)",
        "benchmark",
        "Stockade",
        "anchor",
        "ratio",
        "goal",
    )
    for section in sections:
        for s in section.summary:
            summary.add_row(s.benchmark, s.stockade, s.anchor, s.ratio, s.goal)
    console.print()
    console.print(summary)
    for name, reason in skipped.items():
        console.print(f"[yellow]skipped {name}: {reason}[/yellow]")
    for name, error in failures.items():
        console.print(f"[red]failed {name}: {error}[/red]")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(
        json.dumps(
            {
                "quick": args.quick,
                "machine": machine(),
                "wall_s": round(wall, 1),
                "summary": [
                    {"section": sec.name, **vars(s)} for sec in sections for s in sec.summary
                ],
                "skipped": skipped,
                "failed": failures,
            },
            indent=2,
        )
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
