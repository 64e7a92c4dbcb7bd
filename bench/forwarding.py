"""Forwarding cost: what a host's table costs the traffic between two instances.

Two instance namespaces (a: client, b: server) behind a host namespace that forwards
between them. The host's table holds K rules besides the ones the measured flows need
(K = 0, 1,000, 10,000; quick: 0, 1,000), written two ways:

- Stockade: the table ``Dataplane.full_sync`` loads for a State of K/10 more interfaces
  (ifnames only, no devices), each in its own group of 10 CIDR rules;
- naive: the same K rules as one linear chain of per-address rules in a separate table
  (``ip daddr <instance> ip saddr <cidr> tcp dport <port> accept``), stateful like an
  iptables security-group firewall (``ct state established,related accept`` first), with
  the measured flow's rule last (the worst case of a linear scan);

and two anchors: no firewall at all, and conntrack alone (a table holding only ``ct state
established,related accept``: the price of any stateful firewall).

Throughput: ``iperf3 -t 3`` (quick: 1), one TCP stream a->b. New connections:
``connrate.py`` connects and resets, one after the other, for 3 s (quick: 1). Full runs
interleave 3 rounds of every mode and keep the median. Each figure and its ratio to no
firewall. ``python bench/forwarding.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

from common import ROOT, Namespaces, Section, Summary, console, fmt, ratio, table, track
from common import run as run_in
from rich.progress import Progress

A_IP, B_IP = "172.31.0.10", "172.31.0.20"
A_IF, B_IF = "vbencha", "vbenchb"
IPERF_PORT, CONN_PORT = 5201, 5300
NAIVE = "skb_naive"
HOST = "bench-host"


def state_for(extra_rules: int) -> Any:
    """The two real instances (a may send anything; b admits a on both ports) and
    ``extra_rules`` / 10 more interfaces with 10 CIDR rules each."""
    from stockade.model import Group, Interface, Rule, State

    groups = [
        Group("sg-a", (Rule("sg-a", True, "-1", cidr="0.0.0.0/0"),)),
        Group(
            "sg-b",
            (
                Rule("sg-b", False, "6", IPERF_PORT, IPERF_PORT, cidr=f"{A_IP}/32"),
                Rule("sg-b", False, "6", CONN_PORT, CONN_PORT, cidr=f"{A_IP}/32"),
                Rule("sg-b", True, "-1", cidr="0.0.0.0/0"),
            ),
        ),
    ]
    ifaces = [
        Interface("eni-a", "i-a", HOST, A_IF, (A_IP,), (), ("sg-a",)),
        Interface("eni-b", "i-b", HOST, B_IF, (B_IP,), (), ("sg-b",)),
    ]
    for j in range(extra_rules // 10):
        gid = f"sg-{j:08x}"
        rules = tuple(Rule(gid, False, "6", *port_cidr(j, k)) for k in range(10))
        groups.append(Group(gid, rules))
        ifaces.append(
            Interface(f"eni-{j}", f"i-{j}", HOST, f"vf{j:05d}", (fake_ip(j),), (), (gid,))
        )
    return State.of(groups, ifaces)


def fake_ip(j: int) -> str:
    return f"10.{200 + j // 65536}.{(j // 256) % 256}.{j % 256}"


def port_cidr(j: int, k: int) -> tuple[int, int, str]:
    port = 1000 + k * 100 + j % 100
    return port, port, f"192.168.{k}.{j % 256}/32"


def naive_script(extra_rules: int) -> str:
    """One forward chain, per-address rules, the measured flows' rules last."""
    lines = [
        f"table inet {NAIVE} {{",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        "    ct state established,related accept",
        "    ct state invalid drop",
    ]
    for j in range(extra_rules // 10):
        for k in range(10):
            port, _, cidr = port_cidr(j, k)
            lines.append(f"    ip daddr {fake_ip(j)} ip saddr {cidr} tcp dport {port} accept")
    for port in (IPERF_PORT, CONN_PORT):
        lines.append(f"    ip daddr {B_IP} ip saddr {A_IP} tcp dport {port} accept")
    lines += [f'    iifname "{A_IF}" accept', "    drop", "  }", "}"]
    return "\n".join(lines) + "\n"


# the stateful floor: conntrack's own cost, with no rule at all
CONNTRACK_ONLY = (
    f"table inet {NAIVE} {{\n  chain forward {{\n"
    "    type filter hook forward priority filter; policy accept;\n"
    "    ct state established,related accept\n  }\n}\n"
)


def flush_conntrack(ns: str) -> None:
    """Forget every tracked connection in ``ns`` (ctnetlink delete with no tuple)."""
    from stockade.dataplane.netns import NetnsWorker

    with NetnsWorker(ns) as worker:
        sock = worker.call(socket.socket, socket.AF_NETLINK, socket.SOCK_RAW, 12)
    with sock:
        sock.settimeout(5)
        body = struct.pack("!BBH", socket.AF_UNSPEC, 0, 0)
        header = struct.pack("=IHHII", 16 + len(body), (1 << 8) | 2, 1 | 4, 1, 0)
        sock.send(header + body)
        reply = sock.recv(4096)
        (error,) = struct.unpack("=i", reply[16:20])
        if error not in (0, -errno.ENOENT):
            raise OSError(-error, f"conntrack flush in {ns}: {os.strerror(-error)}")


def track_child(argv: list[str], **kw: Any) -> subprocess.Popen:
    return track(subprocess.Popen(argv, **kw))


def iperf(a: str, b: str, seconds: int) -> float:
    """Gbit/s of one TCP stream a -> b."""
    server = track_child(
        ["ip", "netns", "exec", b, "iperf3", "-s", "-1", "-B", B_IP, "-p", str(IPERF_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):  # bounded: the server needs a moment to listen
            out = run_in(
                a,
                "iperf3", "-c", B_IP, "-p", str(IPERF_PORT), "-t", str(seconds), "-J",
                check=False,
                timeout=seconds + 30,
            )  # fmt: skip
            with contextlib.suppress(ValueError, KeyError):
                data = json.loads(out)
                if "error" not in data:
                    return data["end"]["sum_received"]["bits_per_second"] / 1e9
            time.sleep(0.1)
        raise RuntimeError(f"iperf3 failed: {out[:500]}")
    finally:
        server.kill()
        server.wait(10)


def connection_rate(a: str, b: str, seconds: int) -> tuple[float, int]:
    """(connections/s, errors) from a to b, one after the other."""
    script = str(ROOT / "bench" / "connrate.py")
    server = track_child(
        ["ip", "netns", "exec", b, sys.executable, script, "server", B_IP, str(CONN_PORT),
         str(seconds + 30)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        server.stdout.readline()  # ready
        out = run_in(
            a, sys.executable, script, "client", B_IP, str(CONN_PORT), str(seconds),
            timeout=seconds + 30,
        )  # fmt: skip
        data = json.loads(out)
        return data["connections"] / data["seconds"], data["errors"]
    finally:
        server.kill()
        server.wait(10)


def measure_mode(
    nft: Any, host: str, a: str, b: str, kind: str, k: int, seconds: int
) -> dict[str, Any]:
    """Load the firewall, measure throughput and connection rate, unload it."""
    from stockade.dataplane.nft import Dataplane

    dp = Dataplane(HOST, nft)
    start = time.perf_counter()
    if kind == "stockade":
        dp.full_sync(state_for(k))
    elif kind == "naive":
        nft.run(naive_script(k))
    elif kind == "conntrack only":
        nft.run(CONNTRACK_ONLY)
    load_s = time.perf_counter() - start
    try:
        flush_conntrack(host)
        gbps = iperf(a, b, seconds)
        rate, errors = connection_rate(a, b, seconds)
    finally:
        if kind == "stockade":
            dp.uninstall()
        elif kind in ("naive", "conntrack only"):
            nft.run(f"delete table inet {NAIVE}\n")
    return {"gbit_s": gbps, "connections_s": rate, "connect_errors": errors, "load_s": load_s}


def run_bench(quick: bool, progress: Progress | None = None) -> dict[str, Any]:
    from stockade.dataplane.nft import Nft

    sizes = [0, 1000] if quick else [0, 1000, 10000]
    seconds = 1 if quick else 3
    modes = [("no firewall", 0), ("conntrack only", 0)] + [
        (kind, k) for k in sizes for kind in ("stockade", "naive")
    ]
    rounds = 1 if quick else 3
    task = progress.add_task("forwarding", total=len(modes) * rounds) if progress else None
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {m: [] for m in modes}
    with Namespaces() as spaces:
        host = spaces.host()
        a = spaces.instance(host, "a", A_IP, A_IF)
        b = spaces.instance(host, "b", B_IP, B_IF)
        nft = Nft(host)
        try:
            for _ in range(rounds):  # interleaved, so that drift hits every mode alike
                for kind, k in modes:
                    if progress is not None and task is not None:
                        progress.update(task, description=f"forwarding: {kind}, {k:,} rules")
                    samples[(kind, k)].append(measure_mode(nft, host, a, b, kind, k, seconds))
                    if progress is not None and task is not None:
                        progress.advance(task)
        finally:
            nft.close()
    results = []
    for (kind, k), got in samples.items():
        results.append(
            {
                "firewall": kind,
                "rules": k,
                "gbit_s": statistics.median(s["gbit_s"] for s in got),
                "connections_s": statistics.median(s["connections_s"] for s in got),
                "connect_errors": sum(s["connect_errors"] for s in got),
                "load_s": statistics.median(s["load_s"] for s in got),
                "rounds": got,
            }
        )
    return {"seconds": seconds, "rounds": rounds, "results": results}


def run(quick: bool, progress: Progress | None = None) -> Section:
    return report(run_bench(quick, progress))


def report(data: dict[str, Any]) -> Section:
    section = Section("forwarding", data=data)
    rows = data["results"]
    base = next(r for r in rows if r["firewall"] == "no firewall")
    t = table(
        f"Forwarding a -> b through the host (iperf3 -t {data['seconds']}, connect loop "
        f"{data['seconds']} s; median of {data['rounds']} interleaved rounds)",
        "firewall",
        "rules",
        "Gbit/s",
        "vs none",
        "connections/s",
        "vs none",
        "table load s",
    )
    for r in rows:
        r["gbit_ratio"] = ratio(r["gbit_s"], base["gbit_s"])
        r["conn_ratio"] = ratio(r["connections_s"], base["connections_s"])
        t.add_row(
            r["firewall"],
            f"{r['rules']:,}",
            fmt(r["gbit_s"]),
            fmt(r["gbit_ratio"]),
            fmt(r["connections_s"]),
            fmt(r["conn_ratio"]),
            fmt(r["load_s"]) if r["firewall"] in ("stockade", "naive") else "",
        )
        if r["connect_errors"]:
            section.notes.append(
                f"{r['firewall']} {r['rules']}: {r['connect_errors']} connections failed"
            )
    section.tables.append(t)
    top = max(r["rules"] for r in rows)
    s = next(r for r in rows if r["firewall"] == "stockade" and r["rules"] == top)
    n = next(r for r in rows if r["firewall"] == "naive" and r["rules"] == top)
    ct = next((r for r in rows if r["firewall"] == "conntrack only"), base)
    section.summary += [
        Summary(
            f"forwarding: throughput, {top:,} rules (Gbit/s)",
            fmt(s["gbit_s"]),
            f"none {fmt(base['gbit_s'])}, naive {fmt(n['gbit_s'])}",
            f"{fmt(s['gbit_ratio'])}x",
            ">= 0.9x",
        ),
        Summary(
            f"forwarding: new connections/s, {top:,} rules",
            fmt(s["connections_s"]),
            f"none {fmt(base['connections_s'])}, naive {fmt(n['connections_s'])}",
            f"{fmt(s['conn_ratio'])}x",
            ">= 0.9x",
        ),
        Summary(
            f"forwarding: new connections/s, {top:,} rules, vs conntrack alone",
            fmt(s["connections_s"]),
            f"conntrack {fmt(ct['connections_s'])}",
            f"{fmt(ratio(s['connections_s'], ct['connections_s']))}x",
        ),
    ]
    return section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="0 and 1,000 rules, 1 s each")
    args = ap.parse_args()
    with Progress(console=console, transient=True) as progress:
        section = run(args.quick, progress)
    section.show()
    section.write()


if __name__ == "__main__":
    main()
