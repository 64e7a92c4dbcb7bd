"""The links of an instance's network interfaces in the sandbox (one veth pair each).

Interface ``n`` of an instance (its device index) is ``eth<n>`` in the instance's namespace
and ``v<eni id>`` in its host's. Its private IPv4 addresses (primary first) sit on
``eth<n>`` with the subnet's prefix length; its IPv6 addresses as /128s (every packet goes
through the host, which answers for the gateways: 169.254.1.1 by proxy ARP, fe80::1 as
an address of the host side). Every interface has its own routing table (100 + n) chosen
by source address, so a reply leaves by the interface its request came in by (the host's
anti-spoofing drops a packet whose source address is not its link's own); the main table's
default route goes by ``eth0``.

The host side gets a /32 or /128 route per address only in :func:`route`, which the host
calls once its agent enforces the interface's groups.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from pyroute2 import NetNS

from stockade.sandbox import net
from stockade.service.topology import ifname_for

GATEWAY = "169.254.1.1"
GATEWAY6 = "fe80::1"
TABLE_BASE = 100


@dataclass(frozen=True)
class Link:
    """One interface as plumbed: what must change when its record changes."""

    interface_id: str
    ifname: str  # host side
    guest: str  # instance side (eth<n>)
    device_index: int
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]
    prefixlen: int

    @property
    def addresses(self) -> tuple[str, ...]:
        return (*self.ipv4, *self.ipv6)


def link_of(eni: dict[str, Any]) -> Link:
    """The link a placement's interface entry asks for."""
    index = int(eni.get("device_index") or 0)
    cidr = eni.get("subnet_cidr") or f"{eni['private_ip']}/32"
    return Link(
        eni["network_interface_id"],
        ifname_for(eni["network_interface_id"]),
        f"eth{index}",
        index,
        (eni["private_ip"], *(eni.get("secondary_ips") or ())),
        tuple(eni.get("ipv6_addresses") or ()),
        ipaddress.ip_network(cidr).prefixlen,
    )


def host_sysctls(ifname: str) -> dict[str, int]:
    """The host side of an instance's link: it answers ARP for every address (the instance
    sends even its subnet neighbours' traffic here), at once. Linux delays proxy ARP
    replies by a random time up to ``proxy_delay`` (0.8 s by default), which made the first
    connection between two instances of a subnet take up to a second longer than the rule
    that allowed it."""
    return {
        f"net.ipv4.conf.{ifname}.proxy_arp": 1,
        f"net.ipv4.conf.{ifname}.rp_filter": 0,
        f"net.ipv4.neigh.{ifname}.proxy_delay": 0,
    }


def plumb(host_ns: str, inst_ns: str, link: Link) -> None:
    """The veth pair of ``link``, its addresses and the instance's routes (no host route)."""
    net.veth(host_ns, link.ifname, inst_ns, link.guest)
    net.sysctl(host_ns, host_sysctls(link.ifname))
    net.address(host_ns, link.ifname, f"{GATEWAY}/32")
    net.address(host_ns, link.ifname, f"{GATEWAY6}/64")
    table = TABLE_BASE + link.device_index
    with NetNS(inst_ns) as ns:
        idx = ns.link_lookup(ifname=link.guest)[0]
        for ip in link.ipv4:
            ns.addr("add", index=idx, address=ip, prefixlen=link.prefixlen)
        for ip in link.ipv6:
            ns.addr("add", index=idx, address=ip, prefixlen=128, flags=0x02)  # nodad
        ns.route("replace", dst=f"{GATEWAY}/32", oif=idx, scope=253)
        ns.route("replace", dst="default", gateway=GATEWAY, oif=idx, table=table)
        if link.ipv6:
            ns.route("replace", dst="default", gateway=GATEWAY6, oif=idx, table=table, family=10)
        if link.device_index == 0:
            ns.route("replace", dst="default", gateway=GATEWAY, oif=idx)
            if link.ipv6:
                ns.route("replace", dst="default", gateway=GATEWAY6, oif=idx, family=10)
        for ip in link.addresses:
            family = 10 if ":" in ip else 2
            ns.rule("add", table=table, src=ip, src_len=128 if family == 10 else 32, family=family)


def route(host_ns: str, link: Link) -> None:
    """The host's routes to the interface's addresses (the instance is reachable now)."""
    for ip in link.addresses:
        net.route(host_ns, f"{ip}/{128 if ':' in ip else 32}", dev=link.ifname)


def unplumb(host_ns: str, inst_ns: str | None, link: Link) -> None:
    """Remove the host's routes and the link (the instance side goes with its pair)."""
    for ip in link.addresses:
        net.delete_route(host_ns, f"{ip}/{128 if ':' in ip else 32}")
    if inst_ns is not None and net.exists(inst_ns):
        with NetNS(inst_ns) as ns, contextlib.suppress(Exception):
            for ip in link.addresses:
                family = 10 if ":" in ip else 2
                with contextlib.suppress(Exception):
                    ns.rule(
                        "del",
                        table=TABLE_BASE + link.device_index,
                        src=ip,
                        src_len=128 if family == 10 else 32,
                        family=family,
                    )
    net.delete_link(host_ns, link.ifname)
