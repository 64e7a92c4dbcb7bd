"""Paths between ends of an account's network: who may reach whom on which ports, and why.

Pure: :class:`Network` (model values: the policy's :class:`~stockade.model.State` plus what
the edge knows, public addresses and internet gateways) in, answers out. The service layer
builds a Network from the store's records (``stockade.service.insights.account_network``);
``explain``, the Reachability Analyzer and the Network Access Analyzer are views of
:func:`check`, which decides with :func:`stockade.policy.evaluate`.

The edge's semantics (EC2's): the internet reaches an instance only at its public (or
Elastic) IP, through the VPC's internet gateway, and is seen with its own address; an
instance reaches the internet, and other instances' public IPs, only with a public IP of
its own, and is seen with that public IP (so only CIDR rules can admit it).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from stockade.model import (
    ALL,
    ICMP,
    ICMPV6,
    Interface,
    IPAddress,
    IPNetwork,
    Rule,
    State,
    has_ports,
    is_icmp,
    protocol_label,
)
from stockade.policy import Decision, Flow, evaluate

# the outside address assumed when a path names none (TEST-NET-2: no rule names it but
# an open one)
ANY_OUTSIDE = ipaddress.IPv4Address("198.51.100.1")
_DNS = re.compile(r"(?:ec2|ip)-(\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3})(?:\.|$)", re.IGNORECASE)


class PathError(ValueError):
    """An end that names nothing this account has (or is not an end at all)."""


@dataclass(frozen=True)
class Network:
    """One account's network as the policy and the edge see it.

    ``state`` holds the account's groups and live interfaces, plus, as members only (no
    rules of theirs), other accounts' interfaces in groups its rules reference;
    ``owned`` the ids of the account's own interfaces.
    """

    state: State
    owned: frozenset[str] = frozenset()
    public_ips: Mapping[str, IPAddress] = field(default_factory=dict)  # interface -> public
    instances: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # -> interfaces
    vpc_of: Mapping[str, str] = field(default_factory=dict)  # interface -> VPC
    subnet_of: Mapping[str, str] = field(default_factory=dict)  # interface -> subnet
    gateways: Mapping[str, str] = field(default_factory=dict)  # internet gateway -> VPC
    vpc_cidrs: tuple[IPNetwork, ...] = ()  # the account's VPCs' blocks, IPv4 and IPv6

    def interface(self, iface_id: str) -> Interface | None:
        if iface_id not in self.owned:
            return None
        return self.state.interfaces.get(iface_id)

    def by_public_ip(self, address: IPAddress) -> Interface | None:
        for iface_id, public in self.public_ips.items():
            if public == address and iface_id in self.owned:
                return self.state.interfaces[iface_id]
        return None

    def gateway_of(self, iface: Interface) -> str | None:
        vpc = self.vpc_of.get(iface.id)
        return next((g for g, v in self.gateways.items() if v == vpc), None)


@dataclass(frozen=True)
class End:
    """A resolved end: an interface (reached at its private address, or at its public one
    when ``public``), or the internet (``address`` outside; ``gateway`` when named so)."""

    text: str
    interface: Interface | None = None
    address: IPAddress | None = None
    public: bool = False
    gateway: str | None = None

    @property
    def outside(self) -> bool:
        return self.interface is None

    def label(self) -> str:
        if self.interface is not None:
            name = self.interface.instance_id or self.interface.id
            if self.public:
                return f"{name} at its public IP {self.address}"
            shown = self.interface.private_ipv4 or (self.interface.id,)
            return f"{name} ({shown[0]})"
        if self.gateway and self.address is None:
            return f"the internet through {self.gateway}"
        return f"{self.address} (outside)"


def resolve_end(net: Network, text: str, *, address: str | None = None) -> End:
    """An instance id (its primary interface), an interface id, an internet gateway id, a
    private, public or Elastic IP, a public or private DNS name, or an outside address.
    ``address`` is the outside address of an internet gateway end (SourceIp)."""
    value = text.strip()
    if value.startswith("i-"):
        ifaces = net.instances.get(value)
        iface = net.interface(ifaces[0]) if ifaces else None
        if iface is None:
            raise PathError(
                f"the instance {value} has no network interface in this account "
                "(is it running? see aws ec2 describe-instances)"
            )
        return End(value, iface)
    if value.startswith("eni-"):
        iface = net.interface(value)
        if iface is None:
            raise PathError(f"the network interface {value} is not attached to a live instance")
        return End(value, iface)
    if value.startswith("igw-"):
        if value not in net.gateways:
            raise PathError(f"the internet gateway {value} does not exist")
        outside = _parse_address(address) if address else None
        return End(value, address=outside, gateway=value)
    found = _DNS.match(value)
    if found and not _is_address(value):
        value = found.group(1).replace("-", ".")
    addr = _parse_address(value)
    iface = net.state.interface_by_address(addr)
    if iface is not None and iface.id in net.owned:
        return End(text, iface)
    iface = net.by_public_ip(addr)
    if iface is not None:
        return End(text, iface, addr, public=True)
    if net.state.interface_by_address(addr) is not None or (
        addr.is_private and _in_any_vpc(net, addr)
    ):  # another account's (said no more of) or nobody's
        raise PathError(f"no live instance of this account has the private address {text}")
    return End(text, address=addr)


def _in_any_vpc(net: Network, addr: IPAddress) -> bool:
    return any(addr.version == block.version and addr in block for block in net.vpc_cidrs)


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _parse_address(value: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise PathError(
            f"{value!r} is not an instance id, interface id, IP address or EC2 DNS name"
        ) from None


@dataclass(frozen=True)
class Answer:
    """Whether a flow goes from ``src`` to ``dst``, and why: ``decision`` when the security
    groups decided it; ``blocked`` (and ``code``, EC2's explanation code) when the edge
    did (no public IP); ``gateway`` when the path crosses the internet gateway."""

    src: End
    dst: End
    flow: Flow
    allowed: bool
    decision: Decision | None = None
    blocked: str = ""
    code: str = ""
    gateway: str | None = None

    @property
    def why(self) -> str:
        if self.blocked:
            return "denied: " + self.blocked
        assert self.decision is not None
        return self.decision.why


def check(
    net: Network,
    src: End,
    dst: End,
    protocol: int,
    port: int = -1,
    icmp_type: int = -1,
    icmp_code: int = -1,
) -> Answer:
    """Decide one flow from ``src`` to ``dst`` (see the module's text for the edge)."""
    s, d = src.interface, dst.interface
    kw = {"port": port, "icmp_type": icmp_type, "icmp_code": icmp_code}
    src_addr = src.address or ANY_OUTSIDE
    if s is None and d is None:
        flow = Flow(src_addr, dst.address or ANY_OUTSIDE, protocol, **kw)  # type: ignore[arg-type]
        return Answer(src, dst, flow, False, blocked="neither end is in this account")
    if s is None:  # from the internet: to the public address only
        assert d is not None
        public = dst.address if dst.public else net.public_ips.get(d.id)
        flow = Flow(src_addr, d.id, protocol, dst_addr=public, **kw)  # type: ignore[arg-type]
        if public is None:
            return Answer(
                src,
                dst,
                flow,
                False,
                blocked=f"{d.instance_id or d.id} has no public IP, "
                "so the internet cannot reach it",
                code="CANNOT_ROUTE",
            )
        decision = evaluate(net.state, flow)
        if not dst.public:  # reached at its public address, whatever named it
            dst = End(dst.text, d, public, public=True)
        return Answer(src, dst, flow, decision.allowed, decision, gateway=net.gateway_of(d))
    own_public = net.public_ips.get(s.id)
    if d is None or dst.public:
        target = dst.address or ANY_OUTSIDE
        if d is None:
            flow = Flow(s.id, target, protocol, **kw)  # type: ignore[arg-type]
        else:  # hairpin: to another instance's public IP, seen with the sender's
            flow = Flow(s.id, d.id, protocol, src_addr=own_public, dst_addr=target, **kw)  # type: ignore[arg-type]
        if own_public is None:
            return Answer(
                src,
                dst,
                flow,
                False,
                blocked=f"{s.instance_id or s.id} has no public IP, so it cannot reach "
                f"{'the internet' if d is None else 'a public address'}",
                code="CANNOT_ROUTE",
            )
        decision = evaluate(net.state, flow)
        return Answer(src, dst, flow, decision.allowed, decision, gateway=net.gateway_of(s))
    flow = Flow(s.id, d.id, protocol, **kw)  # type: ignore[arg-type]
    decision = evaluate(net.state, flow)
    return Answer(src, dst, flow, decision.allowed, decision)


# --- ports: which of a protocol's ports (or ICMP types) a pair of ends allows -----------------


def _relevant_rules(net: Network, src: End, dst: End) -> list[Rule]:
    rules: list[Rule] = []
    if src.interface is not None:
        rules += net.state.rules_of(src.interface, egress=True)
    if dst.interface is not None:
        rules += net.state.rules_of(dst.interface, egress=False)
    return rules


def outside_candidates(net: Network, src: End, dst: End) -> list[End]:
    """For an outside end with no address (the internet at large): one address per CIDR
    the relevant rules name (the network's first address) and one no rule names, so that
    "some internet address" is decided exactly."""
    rules = _relevant_rules(net, src, dst)
    found: dict[IPAddress, None] = {ANY_OUTSIDE: None}
    for r in rules:
        if r.cidr is not None and r.cidr.version == 4:
            found[r.cidr.network_address] = None
    return list(found)  # type: ignore[return-value]


def allowed_ranges(
    net: Network, src: End, dst: End, protocol: int, within: tuple[int, int] = (0, 65535)
) -> list[tuple[int, int]]:
    """The inclusive port ranges of ``protocol`` (tcp/udp) allowed from ``src`` to ``dst``,
    from sweeping the boundaries of the rules that could decide (exact, not sampled)."""
    lo, hi = within
    points = {lo}
    for r in _relevant_rules(net, src, dst):
        if r.ports is not None:
            points.update((r.from_port, r.to_port + 1))
    starts = sorted(p for p in points if lo <= p <= hi)
    out: list[tuple[int, int]] = []
    for i, start in enumerate(starts):
        end = (starts[i + 1] - 1) if i + 1 < len(starts) else hi
        if check(net, src, dst, protocol, port=start).allowed:
            if out and out[-1][1] == start - 1:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
    return out


def exists(net: Network, src: End, dst: End, protocol: int, port: int | None = None) -> Answer:
    """Some flow of ``protocol`` (on ``port`` if given) from ``src`` to ``dst``: the first
    allowed one (over unnamed outside addresses and ports), else the answer for the first
    candidate, which says why it is denied."""
    srcs = [src]
    if src.interface is None and src.address is None:
        srcs = [
            End(src.text, address=a, gateway=src.gateway) for a in outside_candidates(net, src, dst)
        ]
    dsts = [dst]
    if dst.interface is None and dst.address is None:
        dsts = [
            End(dst.text, address=a, gateway=dst.gateway) for a in outside_candidates(net, src, dst)
        ]
    first: Answer | None = None
    for s in srcs:
        for d in dsts:
            if protocol == ALL or not (has_ports(protocol) or is_icmp(protocol)):
                candidates = [(-1, -1, -1)]
            elif has_ports(protocol):
                if port is not None:
                    candidates = [(port, -1, -1)]
                else:
                    ranges = allowed_ranges(net, s, d, protocol)
                    candidates = [(ranges[0][0] if ranges else 0, -1, -1)]
            else:  # icmp: an echo request stands for the protocol
                echo = 8 if protocol == ICMP else 128
                candidates = [(-1, echo, 0)]
            for p, t, c in candidates:
                answer = check(net, s, d, protocol, port=p, icmp_type=t, icmp_code=c)
                if answer.allowed:
                    return answer
                first = first or answer
    assert first is not None
    return first


def protocol_name(number: int) -> str:
    return protocol_label(number) if number != ICMPV6 else "icmpv6"


def ends_of(net: Network) -> Iterable[End]:
    """Every end an access scope ranges over: each owned interface and each gateway."""
    for iface_id in sorted(net.owned):
        iface = net.state.interfaces.get(iface_id)
        if iface is not None:
            yield End(iface_id, iface)
    for gw in sorted(net.gateways):
        yield End(gw, gateway=gw)
