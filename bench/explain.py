"""Explain and the Reachability Analyzer at 1,000 instances, through a bare `stockade serve`.

One account with 1,000 running instances (quick: 250) in 100 groups (quick: 25) of 10
ingress rules each (CIDRs and references to other groups). Measured:

- ``stockade explain`` wall time, a new process each time, start-up included (the command
  signs one POST with the account's keys; the server decides it from the account's
  records): p50/p99 over 30 runs (quick: 10), against the goal of 150 ms;
- one Reachability Analyzer analysis through boto3 (CreateNetworkInsightsPath +
  StartNetworkInsightsAnalysis, the client already made): p50/p99, beside AWS's documented
  figure for an analysis (tens of seconds to minutes: the anchor says "about a minute").

``python bench/explain.py [--quick]``.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from common import (
    BIN,
    Section,
    Summary,
    create_tier_groups,
    fmt,
    percentile,
    ratio,
    run_alone,
    start_stockade,
    table,
)
from rich.progress import Progress

INSTANCES = 1000  # (quick: 250)
GROUPS = 100
AWS_ANALYSIS_MS = 60_000  # AWS: an analysis takes "from several seconds to minutes"
GOAL_MS = 150


def _layout(ec2: Any, progress: Any, task: Any, count: int = GROUPS) -> list[str]:
    """``count`` groups of 10 rules and 10 instances in each (100: 1,000 instances)."""
    groups = create_tier_groups(ec2, count, lambda g, k: f"203.0.{k}.0/24")
    ids: list[str] = []
    for g, gid in enumerate(groups):
        out = ec2.run_instances(
            ImageId="ami-fba54092", MinCount=10, MaxCount=10, SecurityGroupIds=[gid]
        )
        ids += [i["InstanceId"] for i in out["Instances"]]
        if progress is not None and task is not None and g % (count // 10 or 1) == 0:
            progress.advance(task)
    return ids


def run(quick: bool, progress: Progress | None = None) -> Section:
    task = progress.add_task("explain: 1,000 instances", total=12) if progress else None
    server = start_stockade({"STOCKADE_MAX_INSTANCES": str(INSTANCES * 2)})
    try:
        ec2 = server.client()
        groups = GROUPS // 4 if quick else GROUPS  # quick: a smoke run at 250 instances
        ids = _layout(ec2, progress, task, groups)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": server.key,
            "AWS_SECRET_ACCESS_KEY": server.secret,
            "AWS_ENDPOINT_URL_EC2": server.url,
        }
        repeat = 10 if quick else 30
        cli: list[float] = []
        verdicts: dict[int, int] = {}
        for k in range(repeat):  # bounded
            src, dst = ids[(k * 37) % len(ids)], ids[(k * 91 + 13) % len(ids)]
            start = time.perf_counter()
            done = subprocess.run(
                [str(BIN / "stockade"), "explain", "--from", src, "--to", dst, "--port", "2001"],
                capture_output=True,
                env=env,
                timeout=60,
            )
            cli.append((time.perf_counter() - start) * 1000)
            verdicts[done.returncode] = verdicts.get(done.returncode, 0) + 1
        if progress is not None and task is not None:
            progress.advance(task)
        analyses: list[float] = []
        for k in range(5 if quick else 20):  # bounded
            src, dst = ids[(k * 53) % len(ids)], ids[(k * 17 + 5) % len(ids)]
            start = time.perf_counter()
            path = ec2.create_network_insights_path(
                Source=src, Destination=dst, Protocol="tcp", DestinationPort=2002
            )["NetworkInsightsPath"]
            ec2.start_network_insights_analysis(NetworkInsightsPathId=path["NetworkInsightsPathId"])
            analyses.append((time.perf_counter() - start) * 1000)
        if progress is not None and task is not None:
            progress.advance(task)
    finally:
        server.stop()
    data = {
        "instances": groups * 10,
        "groups": groups,
        "explain_cli_ms": {
            "p50": percentile(cli, 50),
            "p99": percentile(cli, 99),
            "count": len(cli),
            "exit_codes": verdicts,
        },
        "analysis_ms": {
            "p50": percentile(analyses, 50),
            "p99": percentile(analyses, 99),
            "count": len(analyses),
        },
    }
    title = f"explain and Reachability Analyzer, {groups * 10:,} instances"
    t = table(title, "what", "p50 ms", "p99 ms", "runs")
    t.add_row(
        "stockade explain (new process, start-up included)",
        fmt(data["explain_cli_ms"]["p50"]),
        fmt(data["explain_cli_ms"]["p99"]),
        str(len(cli)),
    )
    t.add_row(
        "analysis through boto3 (create path + start)",
        fmt(data["analysis_ms"]["p50"]),
        fmt(data["analysis_ms"]["p99"]),
        str(len(analyses)),
    )
    section = Section("explain", [t], data=data)
    section.summary.append(
        Summary(
            f"explain: CLI wall time at {groups * 10:,} instances (ms, p50/p99)",
            f"{fmt(data['explain_cli_ms']['p50'])}/{fmt(data['explain_cli_ms']['p99'])}",
            "-",
            "-",
            f"<= {GOAL_MS}",
        )
    )
    section.summary.append(
        Summary(
            "explain: one Reachability analysis via boto3 (ms, p50)",
            fmt(data["analysis_ms"]["p50"]),
            f"AWS ~{AWS_ANALYSIS_MS // 1000} s",
            f"{fmt(ratio(AWS_ANALYSIS_MS, data['analysis_ms']['p50']))}x faster",
        )
    )
    return section


if __name__ == "__main__":
    run_alone(run, __doc__)
