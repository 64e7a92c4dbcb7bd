"""Sets of traffic as interval lists per protocol: what a rule, a union of rules or the
meeting of one side's egress with the other's ingress allows.

A ``Ports`` maps an IP protocol number to sorted, disjoint, inclusive intervals:
tcp/udp over port numbers; icmp/icmpv6 over ``type * 256 + code`` (so "type 8, any code"
is one interval); any other protocol over the single value 0 (it matches on the protocol
alone). The key ``ALL`` (-1) with the full interval stands for every protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stockade.model import ALL, Rule, has_ports, is_icmp, protocol_label

Intervals = tuple[tuple[int, int], ...]
FULL: Intervals = ((0, 65535),)


def _merge(items: Iterable[tuple[int, int]]) -> Intervals:
    out: list[list[int]] = []
    for lo, hi in sorted(items):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1][1] = hi
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def _meet(a: Intervals, b: Intervals) -> Intervals:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _contains(ivs: Intervals, value: int) -> bool:
    return any(lo <= value <= hi for lo, hi in ivs)


@dataclass(frozen=True, slots=True)
class Ports:
    """An immutable set of (protocol, port-or-icmp) values; hashable, so shareable."""

    items: tuple[tuple[int, Intervals], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[int, Intervals]) -> Ports:
        if ALL in mapping:
            return EVERYTHING
        return cls(tuple(sorted((p, iv) for p, iv in mapping.items() if iv)))

    @property
    def everything(self) -> bool:
        return bool(self.items) and self.items[0][0] == ALL

    def __bool__(self) -> bool:
        return bool(self.items)

    def as_dict(self) -> dict[int, Intervals]:
        return dict(self.items)

    def __or__(self, other: Ports) -> Ports:
        if not other or self.everything:
            return self
        if not self or other.everything:
            return other
        merged = self.as_dict()
        for proto, ivs in other.items:
            merged[proto] = _merge(merged.get(proto, ()) + ivs)
        return Ports.of(merged)

    def __and__(self, other: Ports) -> Ports:
        if not self or not other:
            return NOTHING
        if self.everything:
            return other
        if other.everything:
            return self
        mine = self.as_dict()
        out = {}
        for proto, ivs in other.items:
            if proto in mine:
                met = _meet(mine[proto], ivs)
                if met:
                    out[proto] = met
        return Ports.of(out)

    def allows(
        self, protocol: int, port: int = -1, icmp_type: int = -1, icmp_code: int = -1
    ) -> bool:
        """Whether a new flow of ``protocol`` (to ``port``, or of that ICMP message) is in."""
        if self.everything:
            return True
        ivs = self.as_dict().get(protocol)
        if not ivs:
            return False
        if has_ports(protocol):
            return _contains(ivs, port)
        if is_icmp(protocol):
            if icmp_type == -1:  # "any message": only a rule for every type admits it
                return ivs == FULL
            if icmp_code == -1:
                lo, hi = icmp_type * 256, icmp_type * 256 + 255  # every code of the type
                return any(a <= lo and hi <= b for a, b in ivs)
            return _contains(ivs, icmp_type * 256 + icmp_code)
        return True

    def describe(self) -> str:
        """E.g. "all", "tcp 22, 80-90; udp 53; icmp type 8; 50"."""
        if not self:
            return "none"
        if self.everything:
            return "all"
        return "; ".join(_describe_proto(p, ivs) for p, ivs in self.items)

    def to_json(self) -> dict[str, object]:
        if self.everything:
            return {"all": True}
        return {protocol_label(p): [list(iv) for iv in ivs] for p, ivs in self.items}

    def port_count(self) -> int:
        return sum(hi - lo + 1 for _, ivs in self.items for lo, hi in ivs)


def _describe_proto(proto: int, ivs: Intervals) -> str:
    label = protocol_label(proto)
    if has_ports(proto):
        if ivs == FULL:
            return f"{label} all ports"
        return label + " " + ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ivs)
    if is_icmp(proto):
        if ivs == FULL:
            return f"{label} any"
        parts = []
        for lo, hi in ivs:
            if lo % 256 == 0 and hi % 256 == 255:
                t1, t2 = lo // 256, hi // 256
                parts.append(f"type {t1}" if t1 == t2 else f"types {t1}-{t2}")
            else:
                for v in range(lo, min(hi, lo + 16) + 1):
                    parts.append(f"{v // 256}/{v % 256}")
        return f"{label} " + ", ".join(parts)
    return label


NOTHING = Ports()
EVERYTHING = Ports(((ALL, FULL),))


def of_rule(rule: Rule) -> Ports:
    """What one rule admits (over its peer)."""
    proto = rule.proto
    if proto == ALL:
        return EVERYTHING
    if has_ports(proto):
        return Ports(((proto, ((rule.from_port, rule.to_port),)),))
    if is_icmp(proto):
        if rule.from_port == -1:
            return Ports(((proto, FULL),))
        base = rule.from_port * 256
        if rule.to_port == -1:
            return Ports(((proto, ((base, base + 255),)),))
        return Ports(((proto, ((base + rule.to_port, base + rule.to_port),)),))
    return Ports(((proto, ((0, 0),)),))


def union(items: Iterable[Ports]) -> Ports:
    """The union of many sets at once (one merge per protocol)."""
    merged: dict[int, list[tuple[int, int]]] = {}
    for ports in items:
        if ports.everything:
            return EVERYTHING
        for proto, ivs in ports.items:
            merged.setdefault(proto, []).extend(ivs)
    return Ports.of({p: _merge(ivs) for p, ivs in merged.items()})
