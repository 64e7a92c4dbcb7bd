"""Namespaces, veth pairs, addresses and routes for the sandbox (pyroute2 over netlink).

Every namespace the sandbox makes carries its prefix, so a crashed run's leftovers can be
found and removed; nothing here ever touches the root namespace's links or routes (every
call names the namespace it acts in).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

from pyroute2 import NetNS, netns

NETNS_ETC = Path("/etc/netns")


def exists(name: str) -> bool:
    return name in netns.listnetns()


def create(name: str) -> None:
    """A new namespace with loopback up and forwarding/rp_filter set for routing."""
    if exists(name):
        remove(name)
    netns.create(name)
    with NetNS(name) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
    sysctl(
        name,
        {
            "net.ipv4.ip_forward": 1,
            "net.ipv4.conf.all.rp_filter": 0,
            "net.ipv4.conf.default.rp_filter": 0,
            # IPv6 routes like IPv4 (the VPCs' blocks); addresses are usable at once (no
            # duplicate address detection) and no router advertisement changes a route
            "net.ipv6.conf.all.disable_ipv6": 0,
            "net.ipv6.conf.default.disable_ipv6": 0,
            "net.ipv6.conf.all.forwarding": 1,
            "net.ipv6.conf.all.accept_dad": 0,
            "net.ipv6.conf.default.accept_dad": 0,
            "net.ipv6.conf.default.accept_ra": 0,
        },
    )


def remove(name: str) -> None:
    kill_all(name)
    with contextlib.suppress(OSError, FileNotFoundError):
        netns.remove(name)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def kill_all(name: str) -> None:
    """Kill every process living in namespace ``name``."""
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in out.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.kill(int(pid), 9)


def with_prefix(prefix: str) -> list[str]:
    return [n for n in netns.listnetns() if n.startswith(prefix)]


def sysctl(name: str, values: dict[str, object]) -> None:
    args = [f"{k}={v}" for k, v in values.items()]
    subprocess.run(
        ["ip", "netns", "exec", name, "sysctl", "-qw", *args], check=True, capture_output=True
    )


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair: ``name_a`` in ``ns_a``, ``name_b`` in ``ns_b``, both up."""
    with NetNS(ns_a) as a:
        a.link("add", ifname=name_a, kind="veth", peer={"ifname": name_b, "net_ns_fd": ns_b})
        a.link("set", index=a.link_lookup(ifname=name_a)[0], state="up")
    with NetNS(ns_b) as b:
        b.link("set", index=b.link_lookup(ifname=name_b)[0], state="up")


def link_down(name: str, ifname: str) -> None:
    with NetNS(name) as ns:
        idx = ns.link_lookup(ifname=ifname)
        if idx:
            ns.link("set", index=idx[0], state="down")


def link_up(name: str, ifname: str) -> None:
    with NetNS(name) as ns:
        ns.link("set", index=ns.link_lookup(ifname=ifname)[0], state="up")


def delete_link(name: str, ifname: str) -> None:
    with NetNS(name) as ns:
        idx = ns.link_lookup(ifname=ifname)
        if idx:
            ns.link("del", index=idx[0])


def address(name: str, ifname: str, cidr: str) -> None:
    iface = ipaddress.ip_interface(cidr)
    with NetNS(name) as ns:
        ns.addr(
            "add",
            index=ns.link_lookup(ifname=ifname)[0],
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
            **({"flags": 0x02} if iface.version == 6 else {}),  # nodad
        )


def route(name: str, dst: str, *, gateway: str | None = None, dev: str | None = None) -> None:
    """Add or replace a route (``dst`` "default" or a CIDR)."""
    spec: dict[str, object] = {"dst": dst}
    if ":" in dst or (gateway is not None and ":" in gateway):
        spec["family"] = 10
    with NetNS(name) as ns:
        if dev is not None:
            spec["oif"] = ns.link_lookup(ifname=dev)[0]
        if gateway is not None:
            spec["gateway"] = gateway
        else:
            spec["scope"] = 253  # link
        ns.route("replace", **spec)


def delete_route(name: str, dst: str) -> None:
    extra = {"family": 10} if ":" in dst else {}
    with NetNS(name) as ns, contextlib.suppress(Exception):
        ns.route("del", dst=dst, **extra)


def resolv_conf(name: str, nameserver: str) -> None:
    """/etc/netns/<name>/resolv.conf: `ip netns exec` shows it as /etc/resolv.conf."""
    folder = NETNS_ETC / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "resolv.conf").write_text(f"nameserver {nameserver}\noptions timeout:1 attempts:2\n")
