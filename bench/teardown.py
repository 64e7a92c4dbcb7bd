"""Teardown: how long `stockade up` takes to be ready, and `stockade down` / Ctrl-C to stop.

Runs the real command as a user would: ``stockade up --hosts 2`` (a random namespace prefix,
a throwaway data dir, port and runtime dir), timed from the start to its "ready" line;
then stopped either by ``stockade down --prefix P`` (timed as that command's wall time) or
by SIGINT to its process group, as a terminal's Ctrl-C (timed until ``up`` has exited).
Full runs repeat each 3 times, and once more with instances running (launched through the
API and waited for). Before the long polls were answered on shutdown, stopping took 15 s:
uvicorn waited for the hosts' and agents' open long polls. (root)
``python bench/teardown.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import Section, Summary, console, fmt, table
from rich.progress import Progress

BIN = Path(sys.executable).parent
BEFORE_S = 15.0  # down() with no instances before this change (server.wait hit its 15 s)
GOAL_S = 3.0
HOSTS = 2


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


class Run:
    """One `stockade up` in the foreground, with a throwaway prefix and directories."""

    def __init__(self, root: Path) -> None:
        self.prefix = f"skb{os.urandom(2).hex()}-"
        self.data = root / self.prefix
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STOCKADE_")},
            "STOCKADE_RUN_DIR": str(root / "run"),
        }
        self.lines: list[str] = []
        self.ready = threading.Event()
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(BIN / "stockade"), "up", "--hosts", str(HOSTS), "--prefix", self.prefix]
            + ["--data-dir", str(self.data), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(120):
            self.kill()
            raise RuntimeError("stockade up did not get ready:\n" + "\n".join(self.lines))
        self.up_s = time.perf_counter() - started

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if "up: ready" in line:
                self.ready.set()
        self.ready.set()

    def launch(self, count: int) -> None:
        """``count`` instances through the API, waited for until running."""
        import boto3

        from stockade import accounts
        from stockade.store.db import Store

        store = Store(f"sqlite:///{self.data}/stockade.db")
        acct = accounts.get(store, "default")
        store.dispose()
        ec2 = boto3.client(
            "ec2",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            region_name="us-east-1",
            aws_access_key_id=acct.access_key_id,
            aws_secret_access_key=acct.secret_access_key,
        )
        ids = [
            i["InstanceId"]
            for i in ec2.run_instances(ImageId="ami-fba54092", MinCount=count, MaxCount=count)[
                "Instances"
            ]
        ]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            found = ec2.describe_instances(InstanceIds=ids)["Reservations"]
            states = [i["State"]["Name"] for r in found for i in r["Instances"]]
            if states and all(s == "running" for s in states):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{ids} did not start")

    def down(self) -> float:
        started = time.perf_counter()
        out = subprocess.run(
            [str(BIN / "stockade"), "down", "--prefix", self.prefix],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        took = time.perf_counter() - started
        if out.returncode != 0:
            raise RuntimeError(f"stockade down failed: {out.stderr}")
        self.proc.wait(30)
        return took

    def ctrl_c(self) -> float:
        started = time.perf_counter()
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(60)
        return time.perf_counter() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        for name in namespaces(self.prefix):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def summary(self) -> str:
        return next((ln for ln in reversed(self.lines) if ln.startswith("sandbox ")), "")


def measure(quick: bool, progress: Progress | None = None) -> dict[str, Any]:
    rounds = 1 if quick else 3
    plans: list[tuple[str, int]] = [("down", 0), ("ctrl-c", 0)] * rounds
    if not quick:
        plans += [("down", 4), ("ctrl-c", 4)]
    task = progress.add_task("teardown", total=len(plans)) if progress else None
    root = Path(tempfile.mkdtemp(prefix="stockade-teardown-"))
    rows: list[dict[str, Any]] = []
    try:
        for how, instances in plans:
            if progress is not None and task is not None:
                progress.update(task, description=f"teardown: up, {instances} instances, {how}")
            run = Run(root)
            try:
                if instances:
                    run.launch(instances)
                stop_s = run.down() if how == "down" else run.ctrl_c()
                left = namespaces(run.prefix)
                rows.append(
                    {
                        "how": how,
                        "instances": instances,
                        "up_s": run.up_s,
                        "stop_s": stop_s,
                        "left": len(left),
                        "said": run.summary(),
                    }
                )
            finally:
                run.kill()
            if progress is not None and task is not None:
                progress.advance(task)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"hosts": HOSTS, "rounds": rounds, "runs": rows}


def run(quick: bool, progress: Progress | None = None) -> Section:
    return report(measure(quick, progress))


def report(data: dict[str, Any]) -> Section:
    section = Section("teardown", data=data)
    t = table(
        f"Sandbox start and stop ({data['hosts']} hosts; median of the runs, s)",
        "stopped by",
        "instances",
        "runs",
        "up (to ready)",
        "stop",
        "namespaces left",
        "what it said",
    )
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in data["runs"]:
        groups.setdefault((r["how"], r["instances"]), []).append(r)
    medians: dict[tuple[str, int], float] = {}
    for (how, instances), rs in groups.items():
        up = statistics.median(r["up_s"] for r in rs)
        stop = medians[(how, instances)] = statistics.median(r["stop_s"] for r in rs)
        t.add_row(
            "stockade down" if how == "down" else "Ctrl-C",
            str(instances),
            str(len(rs)),
            fmt(up, 2),
            fmt(stop, 2),
            str(max(r["left"] for r in rs)),
            rs[-1]["said"].removeprefix("sandbox "),
        )
    section.tables.append(t)
    ups = [r["up_s"] for r in data["runs"]]
    for how, label in (("down", "stockade down"), ("ctrl-c", "Ctrl-C")):
        stop = medians.get((how, 0))
        if stop is None:
            continue
        section.summary.append(
            Summary(
                f"{label}, no instances (s)",
                fmt(stop, 2),
                f"{fmt(BEFORE_S, 1)} before",
                f"{fmt(BEFORE_S / stop, 0)}x faster" if stop else "",
                f"<= {fmt(GOAL_S, 0)} s",
            )
        )
    section.summary.append(
        Summary("stockade up to ready (s)", fmt(statistics.median(ups), 2), "", "", "")
    )
    return section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    section = run(args.quick)
    section.write()
    section.show()
    console.print()


if __name__ == "__main__":
    main()
