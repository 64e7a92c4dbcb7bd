"""The one semantic core: which new flows the security groups allow, and why.

Pure functions over plain values (``stockade.model``), no I/O. EC2's semantics:

- rules only allow; an interface's rules are the union over all of its groups;
- egress is checked at the source interface (if the source is an instance), ingress at the
  destination interface (if the destination is an instance); both must allow;
- stateful: this core decides new flows; replies to an allowed flow always pass;
- protocol -1 matches everything; tcp/udp port ranges are inclusive; icmp type/code use -1
  as a wildcard; any other protocol number matches on the protocol alone;
- protocol 1 (icmp) is ICMP for IPv4 and matches IPv4 flows only, 58 (icmpv6) IPv6 only;
- a prefix-list peer matches the list's CIDRs of the flow's IP version (an unknown list
  matches nothing);
- a group reference matches the members' *private* addresses only: a flow carries the
  source address as the destination sees it (a public address after the edge's NAT), and
  the destination address as the source sent it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from stockade.model import (
    ICMP,
    ICMPV6,
    Interface,
    IPAddress,
    Rule,
    State,
    has_ports,
    is_icmp,
    protocol_label,
)

__all__ = ["Decision", "Endpoint", "Flow", "Verdict", "evaluate", "resolve", "rule_matches"]


def _address(value: object) -> IPAddress | None:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Flow:
    """A new flow to decide.

    ``src``/``dst``: an interface id ("eni-...") or an address. An address that is an
    interface's private address means that interface. ``src_addr`` overrides the source
    address as the destination sees it (e.g. the sender's public IP after NAT);
    ``dst_addr`` the destination address as the source sent it. ``port`` is the tcp/udp
    destination port; ``icmp_type``/``icmp_code`` the ICMP message. ``version`` picks the
    IP version when both ends are interface ids (default 4).
    """

    src: str | IPAddress
    dst: str | IPAddress
    protocol: int
    port: int = -1
    icmp_type: int = -1
    icmp_code: int = -1
    src_addr: IPAddress | None = None
    dst_addr: IPAddress | None = None
    version: int | None = None

    @classmethod
    def tcp(cls, src: str | IPAddress, dst: str | IPAddress, port: int, **kw: object) -> Flow:
        return cls(src, dst, 6, port=port, **kw)  # type: ignore[arg-type]

    @classmethod
    def udp(cls, src: str | IPAddress, dst: str | IPAddress, port: int, **kw: object) -> Flow:
        return cls(src, dst, 17, port=port, **kw)  # type: ignore[arg-type]

    @classmethod
    def ping(
        cls, src: str | IPAddress, dst: str | IPAddress, version: int = 4, **kw: object
    ) -> Flow:
        """An echo request (icmp 8/0, or icmpv6 128/0)."""
        proto, icmp_type = (ICMP, 8) if version == 4 else (ICMPV6, 128)
        return cls(src, dst, proto, icmp_type=icmp_type, icmp_code=0, version=version, **kw)  # type: ignore[arg-type]

    def what(self) -> str:
        """E.g. "tcp/22", "icmp 8/0", "50"."""
        label = protocol_label(self.protocol)
        if has_ports(self.protocol):
            return f"{label}/{self.port}"
        if is_icmp(self.protocol):
            return f"{label} {self.icmp_type}/{self.icmp_code}"
        return label


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a resolved flow: its address and, if it is an instance, its interface."""

    address: IPAddress
    interface: Interface | None = None

    def __str__(self) -> str:
        if self.interface is None:
            return str(self.address)
        return f"{self.address} ({self.interface.id})"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One side's check. ``checked`` is False when that side is not an instance."""

    direction: str
    checked: bool
    allowed: bool
    rules: tuple[Rule, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    flow: Flow
    src: Endpoint
    dst: Endpoint
    egress: Verdict
    ingress: Verdict

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.egress.rules + self.ingress.rules

    @property
    def why(self) -> str:
        """One line: "allowed: ..." or "denied: <the failing side's reason>"."""
        if not self.allowed:
            failing = [v.reason for v in (self.egress, self.ingress) if not v.allowed]
            return "denied: " + "; ".join(failing)
        parts = [v.reason for v in (self.egress, self.ingress) if v.checked]
        return "allowed: " + ("; ".join(parts) if parts else "no instance end to check")


def _resolve_end(state: State, value: str | IPAddress) -> tuple[Interface | None, IPAddress | None]:
    """(the interface, if any; the address, if ``value`` is one)."""
    iface = state.interfaces.get(value) if isinstance(value, str) else None
    if iface is not None:
        return iface, None
    addr = _address(value)
    if addr is None:
        raise ValueError(f"{value!r} is neither an interface id nor an address")
    return state.interface_by_address(addr), addr


def resolve(state: State, flow: Flow) -> tuple[Endpoint, Endpoint]:
    """The flow's two endpoints with their addresses (as seen where each side is checked)."""
    src_iface, src_addr = _resolve_end(state, flow.src)
    dst_iface, dst_addr = _resolve_end(state, flow.dst)
    src_addr = flow.src_addr or src_addr
    dst_addr = flow.dst_addr or dst_addr
    version = flow.version or (src_addr or dst_addr or ipaddress.IPv4Address(0)).version
    if src_addr is None:
        assert src_iface is not None
        src_addr = src_iface.address(version)
    if dst_addr is None:
        assert dst_iface is not None
        dst_addr = dst_iface.address(version)
    if src_addr is None or dst_addr is None:
        raise ValueError(f"no IPv{version} address for an end of {flow}")
    if src_addr.version != dst_addr.version:
        raise ValueError(f"mixed IP versions in {flow}")
    return Endpoint(src_addr, src_iface), Endpoint(dst_addr, dst_iface)


def rule_matches(state: State, rule: Rule, flow: Flow, peer: IPAddress) -> bool:
    """Whether ``rule`` admits ``flow`` whose other end (source for ingress, destination
    for egress) has address ``peer``."""
    proto = rule.proto
    if proto != -1:
        if proto != flow.protocol:
            return False
        if proto == ICMP and peer.version != 4 or proto == ICMPV6 and peer.version != 6:
            return False
        ports = rule.ports
        if ports is not None and flow.port not in ports:
            return False
        icmp = rule.icmp
        if icmp is not None and not icmp.matches(flow.icmp_type, flow.icmp_code):
            return False
    if rule.cidr is not None:
        return peer.version == rule.cidr.version and peer in rule.cidr
    if rule.prefix_list_id is not None:
        plist = state.prefix_lists.get(rule.prefix_list_id)
        return plist is not None and plist.contains(peer)
    assert rule.ref_group_id is not None
    return peer in state.member_addresses(rule.ref_group_id, peer.version)


def _side(
    state: State, flow: Flow, iface: Interface | None, peer: Endpoint, egress: bool
) -> Verdict:
    direction = "egress" if egress else "ingress"
    if iface is None:
        return Verdict(direction, checked=False, allowed=True, reason=f"{direction}: outside")
    rules = state.rules_of(iface, egress)
    matched = tuple(r for r in rules if rule_matches(state, r, flow, peer.address))
    groups = ", ".join(state.group_label(g) for g in iface.group_ids) or "(no groups)"
    way = "to" if egress else "from"
    if matched:
        first = matched[0]
        reason = f"{direction} of {iface.id} allowed by {state.group_label(first.group_id)}: "
        reason += first.describe()
        if len(matched) > 1:
            reason += f" (+{len(matched) - 1} more)"
        return Verdict(direction, True, True, matched, reason)
    reason = f"no {direction} rule of {groups} allows {flow.what()} {way} {peer.address}"
    return Verdict(direction, True, False, (), reason)


def evaluate(state: State, flow: Flow) -> Decision:
    """Decide a new flow: egress at the source instance, ingress at the destination one."""
    src, dst = resolve(state, flow)
    if src.interface is not None and src.interface == dst.interface:
        local = Verdict("egress", False, True, (), "local to the instance")
        return Decision(flow, src, dst, local, Verdict("ingress", False, True, (), "local"))
    egress = _side(state, flow, src.interface, dst, egress=True)
    ingress = _side(state, flow, dst.interface, src, egress=False)
    return Decision(flow, src, dst, egress, ingress)
