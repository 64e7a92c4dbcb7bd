"""Value types shared by every layer: protocols, port and ICMP matches, rules, groups,
interfaces and the state they make up. Immutable, no I/O, imports nothing from stockade.

The encodings follow the control plane's records: a rule's protocol is the IP protocol
number as text ("6", "17", "1", "58", "50", ...) or "-1" for all; tcp/udp rules carry a real
port range, icmp/icmpv6 rules carry type/code (-1 = any), every other protocol -1/-1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALL = -1
ICMP = 1
TCP = 6
UDP = 17
ICMPV6 = 58

_NAMES = {"tcp": TCP, "udp": UDP, "icmp": ICMP, "icmpv6": ICMPV6, "all": ALL, "-1": ALL}
_LABELS = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMPV6: "icmpv6", ALL: "all"}


def protocol_number(value: str | int) -> int:
    """The IP protocol number of ``value`` ("tcp", "6", 6, "-1", "all", ...); -1 means all."""
    if isinstance(value, int):
        number = value
    else:
        text = value.strip().lower()
        if text in _NAMES:
            return _NAMES[text]
        # ASCII digits only (int() also reads "٦" as 6), and few of them (int() refuses
        # thousands of digits with a ValueError of its own)
        if not (text.isascii() and text.isdigit() and len(text) <= 10):
            raise ValueError(f"unknown protocol {value!r:.40}")
        number = int(text)
    if number != ALL and not 0 <= number <= 255:
        raise ValueError(f"protocol number out of range: {value!r}")
    return number


def protocol_label(number: int) -> str:
    """A short human name: tcp, udp, icmp, icmpv6, all, or the number as text."""
    return _LABELS.get(number, str(number))


def has_ports(number: int) -> bool:
    return number in (TCP, UDP)


def is_icmp(number: int) -> bool:
    return number in (ICMP, ICMPV6)


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive tcp/udp port range."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if not (0 <= self.low <= self.high <= 65535):
            raise ValueError(f"bad port range {self.low}-{self.high}")

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    @property
    def is_all(self) -> bool:
        return self.low == 0 and self.high == 65535

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass(frozen=True, slots=True)
class IcmpMatch:
    """An ICMP type/code match; -1 is a wildcard (a wildcard type means any code too)."""

    type: int = -1
    code: int = -1

    def __post_init__(self) -> None:
        if not (-1 <= self.type <= 255 and -1 <= self.code <= 255):
            raise ValueError(f"bad icmp type/code {self.type}/{self.code}")
        if self.type == -1 and self.code != -1:
            raise ValueError("an icmp code needs an icmp type")

    def matches(self, icmp_type: int, icmp_code: int) -> bool:
        if self.type == -1:
            return True
        return self.type == icmp_type and self.code in (-1, icmp_code)

    @property
    def is_all(self) -> bool:
        return self.type == -1

    def __str__(self) -> str:
        if self.type == -1:
            return "any"
        return f"type {self.type}" + ("" if self.code == -1 else f" code {self.code}")


def _network(value: object) -> IPNetwork:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    return ipaddress.ip_network(str(value), strict=False)


@dataclass(frozen=True, slots=True)
class Rule:
    """One allow rule of a group: ingress (peer = source) or egress (peer = destination).

    Exactly one peer: ``cidr`` (an IPv4 or IPv6 network), ``ref_group_id`` (the members'
    private addresses) or ``prefix_list_id`` (the CIDRs of a managed prefix list, looked up
    in the State). ``protocol`` is normalised to the number as text or "-1".
    """

    group_id: str
    egress: bool
    protocol: str
    from_port: int = -1
    to_port: int = -1
    cidr: IPNetwork | None = None
    ref_group_id: str | None = None
    rule_id: str = ""
    description: str = ""
    prefix_list_id: str | None = None

    def __post_init__(self) -> None:
        number = protocol_number(self.protocol)
        object.__setattr__(self, "protocol", str(number))
        if self.cidr is not None:
            object.__setattr__(self, "cidr", _network(self.cidr))
        peers = (self.cidr, self.ref_group_id, self.prefix_list_id)
        if sum(p is not None for p in peers) != 1:
            raise ValueError("a rule needs exactly one peer: a cidr, a group or a prefix list")
        if has_ports(number):
            PortRange(self.from_port, self.to_port)  # validates
        elif is_icmp(number):
            IcmpMatch(self.from_port, self.to_port)  # validates
        else:
            object.__setattr__(self, "from_port", -1)
            object.__setattr__(self, "to_port", -1)

    @property
    def proto(self) -> int:
        return int(self.protocol)

    @property
    def ports(self) -> PortRange | None:
        """The port range of a tcp/udp rule, else None."""
        if has_ports(self.proto):
            return PortRange(self.from_port, self.to_port)
        return None

    @property
    def icmp(self) -> IcmpMatch | None:
        """The type/code match of an icmp/icmpv6 rule, else None."""
        if is_icmp(self.proto):
            return IcmpMatch(self.from_port, self.to_port)
        return None

    @property
    def direction(self) -> str:
        return "egress" if self.egress else "ingress"

    @property
    def peer(self) -> str:
        if self.cidr is not None:
            return str(self.cidr)
        return str(self.ref_group_id or self.prefix_list_id)

    def describe(self) -> str:
        """E.g. "ingress tcp/22 from 192.168.1.130/32", "egress all to sg-1"."""
        proto = self.proto
        what = protocol_label(proto)
        if self.ports is not None:
            what += f"/{self.ports}"
        elif self.icmp is not None and not self.icmp.is_all:
            what += f" {self.icmp}"
        way = "to" if self.egress else "from"
        return f"{self.direction} {what} {way} {self.peer}"


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    rules: tuple[Rule, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        for rule in self.rules:
            if rule.group_id != self.id:
                raise ValueError(f"rule of {rule.group_id} in group {self.id}")

    @property
    def ingress(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if not r.egress)

    @property
    def egress(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.egress)

    @property
    def label(self) -> str:
        """The id with the name, e.g. sg-1 (web)."""
        return f"{self.id} ({self.name})" if self.name else self.id


@dataclass(frozen=True, slots=True)
class Interface:
    """A network interface of an instance, on a host, seen as ``ifname`` there."""

    id: str
    instance_id: str
    host: str
    ifname: str
    private_ipv4: tuple[ipaddress.IPv4Address, ...] = ()
    private_ipv6: tuple[ipaddress.IPv6Address, ...] = ()
    group_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        v4 = tuple(ipaddress.IPv4Address(str(a)) for a in self.private_ipv4)
        v6 = tuple(ipaddress.IPv6Address(str(a)) for a in self.private_ipv6)
        object.__setattr__(self, "private_ipv4", v4)
        object.__setattr__(self, "private_ipv6", v6)
        object.__setattr__(self, "group_ids", tuple(self.group_ids))

    @property
    def addresses(self) -> tuple[IPAddress, ...]:
        return (*self.private_ipv4, *self.private_ipv6)

    def address(self, version: int) -> IPAddress | None:
        """The first private address of that IP version, if any."""
        found = self.private_ipv4 if version == 4 else self.private_ipv6
        return found[0] if found else None


@dataclass(frozen=True, slots=True)
class PrefixList:
    """A managed prefix list: its CIDRs (of one address family), as rules see them."""

    id: str
    cidrs: tuple[IPNetwork, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cidrs", tuple(_network(c) for c in self.cidrs))

    def contains(self, address: IPAddress) -> bool:
        return any(address.version == c.version and address in c for c in self.cidrs)

    def of_version(self, version: int) -> tuple[IPNetwork, ...]:
        return tuple(c for c in self.cidrs if c.version == version)


def _frozen(items: Mapping[str, object] | Iterable[object]) -> Mapping[str, object]:
    if isinstance(items, Mapping):
        return MappingProxyType(dict(items))
    return MappingProxyType({item.id: item for item in items})  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class State:
    """Everything the policy needs: groups, interfaces and prefix lists, each by id."""

    groups: Mapping[str, Group] = field(default_factory=dict)
    interfaces: Mapping[str, Interface] = field(default_factory=dict)
    prefix_lists: Mapping[str, PrefixList] = field(default_factory=dict)
    # lookups built on first use (a State never changes, so they never go stale)
    _index: dict[object, object] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", _frozen(self.groups))
        object.__setattr__(self, "interfaces", _frozen(self.interfaces))
        object.__setattr__(self, "prefix_lists", _frozen(self.prefix_lists))

    @classmethod
    def of(
        cls,
        groups: Iterable[Group] = (),
        interfaces: Iterable[Interface] = (),
        prefix_lists: Iterable[PrefixList] = (),
    ) -> State:
        return cls(
            {g.id: g for g in groups},
            {i.id: i for i in interfaces},
            {p.id: p for p in prefix_lists},
        )

    def __hash__(self) -> int:
        return hash(
            (
                tuple(self.groups.items()),
                tuple(self.interfaces.items()),
                tuple(self.prefix_lists.items()),
            )
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return (
            dict(self.groups) == dict(other.groups)
            and dict(self.interfaces) == dict(other.interfaces)
            and dict(self.prefix_lists) == dict(other.prefix_lists)
        )

    def _membership(self) -> dict[str, list[Interface]]:
        found = self._index.get("members")
        if found is None:
            members: dict[str, list[Interface]] = {}
            for iface in self.interfaces.values():
                for gid in dict.fromkeys(iface.group_ids):
                    members.setdefault(gid, []).append(iface)
            found = self._index["members"] = members
        return found  # type: ignore[return-value]

    def members(self, group_id: str) -> Iterator[Interface]:
        """The interfaces in ``group_id``."""
        return iter(self._membership().get(group_id, ()))

    def member_addresses(self, group_id: str, version: int | None = None) -> frozenset[IPAddress]:
        """The private addresses of the members of ``group_id`` (of one version if given)."""
        key = ("addresses", group_id, version)
        cached = self._index.get(key)
        if cached is not None:
            return cached  # type: ignore[return-value]
        found: set[IPAddress] = set()
        for iface in self.members(group_id):
            if version in (None, 4):
                found.update(iface.private_ipv4)
            if version in (None, 6):
                found.update(iface.private_ipv6)
        result = self._index[key] = frozenset(found)
        return result

    def interface_by_address(self, address: IPAddress) -> Interface | None:
        """The interface that owns ``address`` as a private address."""
        by_address = self._index.get("by_address")
        if by_address is None:
            by_address = {}
            for iface in self.interfaces.values():
                for a in iface.addresses:
                    by_address.setdefault(a, iface)
            self._index["by_address"] = by_address
        return by_address.get(address)  # type: ignore[attr-defined]

    def on_host(self, host: str) -> tuple[Interface, ...]:
        return tuple(i for i in self.interfaces.values() if i.host == host)

    def group_label(self, group_id: str) -> str:
        group = self.groups.get(group_id)
        return group.label if group else group_id

    def rules_of(self, iface: Interface, egress: bool) -> Iterator[Rule]:
        for gid in iface.group_ids:
            group = self.groups.get(gid)
            if group is not None:
                yield from (r for r in group.rules if r.egress == egress)
