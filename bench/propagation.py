"""Propagation: from an API call to the kernel enforcing it, through a real agent.

A real ``stockade serve`` (STOCKADE_AUTO_RUN=0) holds N instances (10, 100, 1,000; quick:
10) in N/10 groups of 10 ingress rules each (6 CIDR, 4 group references). One host claims
them all; an :class:`Agent` (a thread of this process) enforces the host's table in a host
namespace, so the table has every instance's chains. Only two instances are real
namespaces (a source and a destination behind veths named as the control plane names
them); the others exist as records and in the agent's table only.

Each change is timed from just before the boto3 call to the send time of the first probe
that sees the new behaviour (``probe.py``, a separate process in the source's namespace
starting a fresh connection every 0.5 ms): authorize (a rule for the source's /32 opens a
port), revoke (it closes), join (ModifyInstanceAttribute adds the source to a group that
the destination's rule references), leave, and first-ref: the destination's group admits a
group new to this host (made fresh each round; its only member, a third real namespace,
is placed on another host, so the agent has never seen it and fetches it with
``?groups=``). p50/p99 over R rounds (20; quick 5).
``python bench/propagation.py [--quick] [--sizes 10,100]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from common import (
    GATEWAY,
    ROOT,
    Namespaces,
    Section,
    Stockade,
    Summary,
    console,
    create_tier_groups,
    fmt,
    percentile,
    ratio,
    start_stockade,
    stop_process,
    table,
    track,
)
from common import run as run_in
from rich.progress import Progress

IMAGE = "ami-fba54092"
OPEN_PORT = 7000  # authorize / revoke
JOIN_PORT = 7001  # the destination admits members of the "joiner" group here
FIRST_PORT = 7002  # first-ref: the destination admits a group new to the host here
CHANGES = ("authorize", "revoke", "join", "leave", "first-ref")
REMOTE = "h-remote"  # the host the first-ref source is placed on (no agent runs for it)
GOAL_MS = 50.0


@dataclass
class Lab:
    server: Stockade
    http: httpx.Client
    ec2: Any
    host: str
    src_id: str
    dst_id: str
    src_ip: str
    dst_ip: str
    src_eni: str
    dst_eni: str
    src_groups: list[str]
    target: str
    joiner: str
    far_id: str = ""
    far_ip: str = ""
    far_eni: str = ""
    subnet_prefix: int = 32


class Probe:
    """The probe process in a namespace (see ``probe.py``)."""

    def __init__(self, ns: str) -> None:
        self.proc = track(
            subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, str(ROOT / "bench" / "probe.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )

    def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the probe process exited")
        return json.loads(line)

    def measure(self, dst: str, port: int, want: str, change: Any, deadline: float = 10) -> float:
        """Start probing, make the change, return ms from the change to enforcement."""
        assert self.proc.stdin is not None
        cmd = {"dst": dst, "port": port, "want": want, "deadline": deadline}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        self._line()  # ready
        t0 = time.monotonic()
        change()
        result = self._line()
        if result["at"] is None:
            return float("nan")
        return (result["at"] - t0) * 1000

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        stop_process(self.proc, 5)


def build(server: Stockade, n: int, host: str) -> Lab:
    """Groups, N instances placed on ``host`` (running), and the two probing instances."""
    ec2 = server.client()
    http = server.http()
    tiers = max(2, n // 10)
    groups = create_tier_groups(ec2, tiers, lambda g, k: f"10.{(g + k) % 250}.{k}.0/24")
    target = ec2.create_security_group(GroupName="target", Description="probed")["GroupId"]
    joiner = ec2.create_security_group(GroupName="joiner", Description="joins")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=target,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": JOIN_PORT,
                "ToPort": JOIN_PORT,
                "UserIdGroupPairs": [{"GroupId": joiner}],
            }
        ],
    )

    def launch(groups_: list[str], count: int) -> list[str]:
        out = ec2.run_instances(
            ImageId=IMAGE, MinCount=count, MaxCount=count, SecurityGroupIds=groups_
        )
        return [i["InstanceId"] for i in out["Instances"]]

    src_id = launch([groups[0]], 1)[0]
    dst_id = launch([groups[1], target], 1)[0]
    left = n - 2
    for g in range(tiers):  # bounded: one launch per tier group
        count = min(left, -(-(n - 2) // tiers))
        if count <= 0:
            break
        launch([groups[g]], count)
        left -= count
    placed: dict[str, dict[str, Any]] = {}
    for _ in range(n // 1000 + 3):  # claim everything (1,000 at most per call)
        got = http.post(f"/_stockade/v1/hosts/{host}/claim", json={"limit": 1000})
        got.raise_for_status()
        batch = got.json()["instances"]
        if not batch:
            break
        placed.update({p["instance_id"]: p for p in batch})
    if len(placed) != n:
        raise RuntimeError(f"claimed {len(placed)} instances of {n}")

    def running(iid: str) -> None:
        r = http.post(
            f"/_stockade/v1/instances/{iid}/state", json={"state": "running", "host": host}
        )
        r.raise_for_status()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(running, placed))
    src, dst = placed[src_id]["interfaces"][0], placed[dst_id]["interfaces"][0]
    # the first-ref source: on another host, so its groups are new to this one
    far_id = launch([groups[0]], 1)[0]
    got = http.post(f"/_stockade/v1/hosts/{REMOTE}/claim", json={"limit": 10})
    got.raise_for_status()
    (far,) = [p for p in got.json()["instances"] if p["instance_id"] == far_id]
    r = http.post(
        f"/_stockade/v1/instances/{far_id}/state", json={"state": "running", "host": REMOTE}
    )
    r.raise_for_status()
    far_eni = far["interfaces"][0]
    return Lab(
        server,
        http,
        ec2,
        host,
        src_id,
        dst_id,
        src["private_ip"],
        dst["private_ip"],
        src["network_interface_id"],
        dst["network_interface_id"],
        [groups[0]],
        target,
        joiner,
        far_id,
        far_eni["private_ip"],
        far_eni["network_interface_id"],
        int(far_eni["subnet_cidr"].split("/")[1]),
    )


def as_in_the_sandbox(host_ns: str, ns: str, ip: str, prefix: int, ifname: str) -> None:
    """Address an instance as the sandbox does: ``ip``/subnet prefix on eth0 (so the other
    instances of its subnet are on-link and it ARPs for them) and the host side of its link
    set up by hostd's sysctls (proxy ARP answers for them)."""
    from stockade.sandbox.hostd import instance_link_sysctls

    run_in(ns, "sh", "-ec", f"ip addr add {ip}/{prefix} dev eth0\nip addr del {ip}/32 dev eth0")
    run_in(ns, "ip", "route", "replace", "default", "via", GATEWAY, "dev", "eth0")
    settings = [f"{k}={v}" for k, v in instance_link_sysctls(ifname).items()]
    run_in(host_ns, "sysctl", "-qw", *settings)


def head(http: httpx.Client) -> int:
    """The control plane's current revision."""
    r = http.get("/_stockade/v1/changes", params={"since": 0, "wait": 0, "limit": 1})
    r.raise_for_status()
    return int(r.json()["revision"])


def instrument(agent: Any) -> dict[str, list[float]]:
    """Time the agent's side of each change (ms): merging the delta into its view (with any
    fetches of groups it lacked) and applying the difference to the kernel. (The long poll
    that brings the delta is not timed: it includes the wait for the change.)"""
    phases: dict[str, list[float]] = {"merge": [], "apply": []}

    def timed(phase: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                phases[phase].append((time.perf_counter() - start) * 1000)

        return wrapper

    agent.absorb = timed("merge", agent.absorb)
    agent.dataplane.sync = timed("apply", agent.dataplane.sync)
    return phases


def explain_cli(lab: Lab, repeat: int) -> list[float]:
    """Wall time (ms) of ``stockade explain`` (a new process each time) against the server."""
    from common import BIN

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            [
                str(BIN / "stockade"),
                "explain",
                "--from",
                lab.src_id,
                "--to",
                lab.dst_id,
                "--port",
                str(JOIN_PORT),
                "--server",
                lab.server.url,
            ],
            capture_output=True,
            timeout=120,
            env={
                **os.environ,
                "AWS_ACCESS_KEY_ID": lab.server.key,
                "AWS_SECRET_ACCESS_KEY": lab.server.secret,
            },
        )
        times.append((time.perf_counter() - start) * 1000)
    return times


def measure_size(
    n: int, rounds: int, tick: Any, cli_repeat: int = 0
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Latencies (ms) of each change at ``n`` instances; and facts about the setup."""
    from stockade.dataplane.agent import Agent
    from stockade.service.topology import ifname_for

    # every clean-up is registered as soon as there is something to clean up; an ExitStack
    # runs all of them even when one is interrupted (e.g. by SIGTERM)
    with contextlib.ExitStack() as stack:
        server = start_stockade(
            {
                "STOCKADE_AUTO_RUN": "0",
                "STOCKADE_MAX_INSTANCES": str(n + 10),
                "STOCKADE_MAX_GROUPS_PER_REGION": str(n + 100),
            }
        )
        stack.callback(server.stop)
        spaces = Namespaces()
        stack.callback(spaces.close)
        info: dict[str, Any] = {}
        host_ns = spaces.host()
        host = f"h-{spaces.prefix.strip('-')}"
        start = time.perf_counter()
        lab = build(server, n, host)
        stack.callback(lab.http.close)
        info["setup_s"] = round(time.perf_counter() - start, 1)
        src_ns = spaces.instance(host_ns, "src", lab.src_ip, ifname_for(lab.src_eni))
        dst_ns = spaces.instance(host_ns, "dst", lab.dst_ip, ifname_for(lab.dst_eni))
        far_ns = spaces.instance(host_ns, "far", lab.far_ip, ifname_for(lab.far_eni))
        for ns, ip, eni in ((dst_ns, lab.dst_ip, lab.dst_eni), (far_ns, lab.far_ip, lab.far_eni)):
            as_in_the_sandbox(host_ns, ns, ip, lab.subnet_prefix, ifname_for(eni))
        agent = Agent(server.url, server.token, host, netns=host_ns)
        stack.callback(agent.close)
        phases = instrument(agent)
        thread = threading.Thread(target=agent.run, kwargs={"poll_wait": 5}, daemon=True)
        thread.start()
        stack.callback(thread.join, 30)
        stack.callback(agent.stop)
        if not agent.wait_applied(head(lab.http), 60):
            raise RuntimeError(f"the agent did not catch up: {agent.status.as_json()}")
        info["full_sync_ms"] = round(agent.status.last_sync_ms, 1)
        probe = Probe(src_ns)
        stack.callback(probe.close)
        far_probe = Probe(far_ns)
        stack.callback(far_probe.close)
        results: dict[str, list[float]] = {c: [] for c in CHANGES}
        rule = {
            "IpProtocol": "tcp",
            "FromPort": OPEN_PORT,
            "ToPort": OPEN_PORT,
            "IpRanges": [{"CidrIp": f"{lab.src_ip}/32"}],
        }
        ec2 = lab.ec2
        fresh: list[dict[str, Any]] = []  # first-ref: this round's new group and its rule

        def new_group() -> None:
            """Untimed: revoke the last round's rule; a new group with the far source in it."""
            if fresh:
                ec2.revoke_security_group_ingress(
                    GroupId=lab.target, IpPermissions=[fresh[-1]["rule"]]
                )
            gid = ec2.create_security_group(
                GroupName=f"fresh-{len(fresh)}", Description="first reference"
            )["GroupId"]
            ec2.modify_instance_attribute(InstanceId=lab.far_id, Groups=[gid])
            perm = {
                "IpProtocol": "tcp",
                "FromPort": FIRST_PORT,
                "ToPort": FIRST_PORT,
                "UserIdGroupPairs": [{"GroupId": gid}],
            }
            fresh.append({"group": gid, "rule": perm})
            # a new client for the destination: it has not resolved the source's address
            run_in(dst_ns, "ip", "neigh", "flush", "to", lab.far_ip)

        def nothing() -> None:
            pass

        steps: tuple[tuple[str, Probe, int, str, Any, Any], ...] = (
            (
                "authorize",
                probe,
                OPEN_PORT,
                "open",
                nothing,
                lambda: ec2.authorize_security_group_ingress(
                    GroupId=lab.target, IpPermissions=[rule]
                ),
            ),
            (
                "revoke",
                probe,
                OPEN_PORT,
                "filtered",
                nothing,
                lambda: ec2.revoke_security_group_ingress(GroupId=lab.target, IpPermissions=[rule]),
            ),
            (
                "join",
                probe,
                JOIN_PORT,
                "open",
                nothing,
                lambda: ec2.modify_instance_attribute(
                    InstanceId=lab.src_id, Groups=[*lab.src_groups, lab.joiner]
                ),
            ),
            (
                "leave",
                probe,
                JOIN_PORT,
                "filtered",
                nothing,
                lambda: ec2.modify_instance_attribute(InstanceId=lab.src_id, Groups=lab.src_groups),
            ),
            (
                "first-ref",
                far_probe,
                FIRST_PORT,
                "open",
                new_group,
                lambda: ec2.authorize_security_group_ingress(
                    GroupId=lab.target, IpPermissions=[fresh[-1]["rule"]]
                ),
            ),
        )
        for _ in range(rounds):
            for name, prober, port, want, prepare, change in steps:
                prepare()
                if not agent.wait_applied(head(lab.http), 30):
                    raise RuntimeError(f"the agent fell behind: {agent.status.as_json()}")
                results[name].append(prober.measure(lab.dst_ip, port, want, change))
            tick()
        info["incremental_syncs"] = agent.status.incremental_syncs
        for phase, samples in phases.items():  # the agent's side of the incremental syncs
            info[f"agent_{phase}_ms_p50"] = round(percentile(samples, 50), 2)
            info[f"agent_{phase}_ms_p99"] = round(percentile(samples, 99), 2)
        info["last_sync_ms"] = round(agent.status.last_sync_ms, 1)
        if cli_repeat:
            info["explain_cli_ms"] = explain_cli(lab, cli_repeat)
        return results, info


def run(quick: bool, progress: Progress | None = None, sizes: list[int] | None = None) -> Section:
    sizes = sizes or ([10] if quick else [10, 100, 1000])
    rounds = 5 if quick else 20
    task = progress.add_task("propagation", total=len(sizes) * rounds) if progress else None
    data: dict[str, Any] = {"rounds": rounds, "sizes": {}}
    for n in sizes:
        if progress is not None and task is not None:
            progress.update(task, description=f"propagation: {n} instances")

        def tick() -> None:
            if progress is not None and task is not None:
                progress.advance(task)

        results, info = measure_size(n, rounds, tick, cli_repeat=3 if n == sizes[-1] else 0)
        data["sizes"][str(n)] = {"ms": results, **info}
    return report(data)


def report(data: dict[str, Any]) -> Section:
    section = Section("propagation", data=data)
    t = table(
        f"Propagation: API call to kernel enforcement, {data['rounds']} rounds (ms, p50/p99; "
        "the agent's part: p50 of merging the delta and applying it)",
        "instances",
        *CHANGES,
        "all",
        "merge/apply",
        "full sync",
    )
    worst: tuple[int, float] | None = None
    for n, entry in data["sizes"].items():
        ms = entry["ms"]
        every = [v for c in CHANGES for v in ms[c] if v == v]
        cells = [
            f"{fmt(percentile(ms[c], 50), 1)}/{fmt(percentile(ms[c], 99), 1)}" for c in CHANGES
        ]
        p99 = percentile(every, 99)
        t.add_row(
            n,
            *cells,
            f"{fmt(percentile(every, 50), 1)}/{fmt(p99, 1)}",
            "/".join(
                fmt(entry.get(f"agent_{p}_ms_p50", float("nan")), 1) for p in ("merge", "apply")
            ),
            fmt(entry.get("full_sync_ms", float("nan")), 1),
        )
        lost = sum(1 for c in CHANGES for v in ms[c] if v != v)
        if lost:
            section.notes.append(f"{n} instances: {lost} changes not seen within the deadline")
        worst = (int(n), p99)
        entry["p50_ms"] = percentile(every, 50)
        entry["p99_ms"] = p99
        entry["mean_ms"] = statistics.fmean(every) if every else float("nan")
    section.tables.append(t)
    if worst is not None:
        n, p99 = worst
        section.summary.append(
            Summary(
                f"propagation p99 at {n:,} instances (ms)",
                fmt(p99, 1),
                f"goal {GOAL_MS:.0f}",
                f"{fmt(ratio(p99, GOAL_MS))}x",
                "<= 1x",
            )
        )
    return section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10 instances, 5 rounds")
    ap.add_argument("--sizes", default="", help="comma-separated instance counts")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    with Progress(console=console, transient=True) as progress:
        section = run(args.quick, progress, sizes)
    section.show()
    section.write()


if __name__ == "__main__":
    main()
