"""Compile a State into one host's nftables table, ``table inet stockade``; diff two of them.

Pure functions, no I/O. The layout (see DESIGN.md, "Data plane"):

- ``m_<group>_v4`` / ``_v6``: plain hash sets of the private addresses of the members of
  each group that a rule on this host references (members on any host);
- ``sg_<group>_in`` / ``_out``: one chain per group and direction, one rule per allow (a
  group peer gives one rule per IP version), each with a counter, verdict ``accept``;
- ``i_<ifname>_in`` / ``_out``: per interface, ``jump`` to each of its groups' chains, then
  ``counter drop`` (an accept ends evaluation, so the result is the union of the groups);
- ``from_inst`` / ``to_inst``: verdict maps ifname -> that interface's chain;
- ``inst_ifs``, ``own_v4``, ``own_v6``: the instance interfaces and their own addresses
  (``ifname . addr``), for anti-spoofing;
- base chain ``egress`` (forward hook, priority filter): drop a packet from an instance
  interface whose source address is not that interface's own; accept established/related;
  drop invalid; ``iifname vmap @from_inst``. Base chain ``ingress`` (forward, filter + 10):
  accept established/related; drop invalid; ``oifname vmap @to_inst``. A packet between
  two instances passes both, so both ends are checked. Every denial is a silent drop.

Anti-spoofing comes before ``ct state established,related accept`` on purpose: otherwise
an instance could inject packets that forge the reply direction of someone else's tracked
connection.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from stockade.model import ICMP, ICMPV6, TCP, UDP, Group, IPAddress, Rule, State

TABLE = "stockade"
FAMILY = "inet"
QUALIFIED = f"{FAMILY} {TABLE}"

EGRESS_CHAIN = "egress"
INGRESS_CHAIN = "ingress"
FROM_INST = "from_inst"
TO_INST = "to_inst"
INST_IFS = "inst_ifs"
OWN_V4 = "own_v4"
OWN_V6 = "own_v6"

_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_GROUP = re.compile(r"sg-([A-Za-z0-9]{1,60})")

BASE_CHAINS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        EGRESS_CHAIN: (
            "type filter hook forward priority filter; policy accept;",
            f"meta nfproto ipv4 iifname @{INST_IFS} iifname . ip saddr != @{OWN_V4} counter drop",
            f"meta nfproto ipv6 iifname @{INST_IFS} iifname . ip6 saddr != @{OWN_V6} counter drop",
            "ct state established,related accept",
            "ct state invalid counter drop",
            f"iifname vmap @{FROM_INST}",
        ),
        INGRESS_CHAIN: (
            "type filter hook forward priority filter + 10; policy accept;",
            "ct state established,related accept",
            "ct state invalid counter drop",
            f"oifname vmap @{TO_INST}",
        ),
    }
)


def _ident(text: str) -> str:
    if _SAFE.fullmatch(text):
        return text
    return "x" + hashlib.sha1(text.encode()).hexdigest()[:16]


def group_ident(group_id: str) -> str:
    """ "sg-0abc" -> "0abc"; any other id -> "x" + a hash of it (so the two never collide)."""
    found = _GROUP.fullmatch(group_id)
    return found.group(1) if found else "x" + hashlib.sha1(group_id.encode()).hexdigest()[:16]


def group_chain(group_id: str, egress: bool) -> str:
    return f"sg_{group_ident(group_id)}_{'out' if egress else 'in'}"


def member_set(group_id: str, version: int) -> str:
    return f"m_{group_ident(group_id)}_v{version}"


def iface_chain(ifname: str, egress: bool) -> str:
    return f"i_{_ident(ifname)}_{'out' if egress else 'in'}"


def _quote(ifname: str) -> str:
    if '"' in ifname or "\\" in ifname:
        raise ValueError(f"unusable interface name {ifname!r}")
    return f'"{ifname}"'


@dataclass(frozen=True, slots=True)
class NftSet:
    """A named set (``kind`` "set") or verdict map (``kind`` "map").

    ``elements`` maps each element's text to its value text (a map's verdict; "" in a set).
    """

    name: str
    type: str
    elements: Mapping[str, str] = field(default_factory=dict)
    kind: str = "set"

    def __post_init__(self) -> None:
        object.__setattr__(self, "elements", MappingProxyType(dict(self.elements)))

    def element_text(self, key: str) -> str:
        value = self.elements[key]
        return f"{key} : {value}" if self.kind == "map" else key

    def render(self) -> str:
        body = f"type {self.type};"
        if self.elements:
            items = ", ".join(self.element_text(k) for k in sorted(self.elements))
            body += f" elements = {{ {items} }}"
        return f"{self.kind} {self.name} {{ {body} }}"


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    rules: tuple[str, ...] = ()

    def render(self) -> str:
        inner = "".join(f"\t\t{r}\n" for r in self.rules)
        return f"chain {self.name} {{\n{inner}\t}}"


@dataclass(frozen=True, slots=True)
class Ruleset:
    """The desired content of ``table inet stockade`` on one host."""

    sets: Mapping[str, NftSet]
    group_chains: Mapping[str, Chain]
    iface_chains: Mapping[str, Chain]

    def __post_init__(self) -> None:
        for name in ("sets", "group_chains", "iface_chains"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def chains(self) -> dict[str, Chain]:
        return {**self.group_chains, **self.iface_chains}

    def render(self) -> str:
        """The table definition (nft -f syntax), in dependency order."""
        parts: list[str] = []
        plain = [s for s in self.sets.values() if s.kind == "set"]
        maps = [s for s in self.sets.values() if s.kind == "map"]
        parts += [s.render() for s in sorted(plain, key=lambda s: s.name)]
        parts += [c.render() for _, c in sorted(self.group_chains.items())]
        parts += [c.render() for _, c in sorted(self.iface_chains.items())]
        parts += [s.render() for s in sorted(maps, key=lambda s: s.name)]
        parts += [Chain(name, rules).render() for name, rules in BASE_CHAINS.items()]
        body = "".join(f"\t{p}\n" for p in parts)
        return f"table {QUALIFIED} {{\n{body}}}\n"

    def full_script(self) -> str:
        """One transaction replacing the whole table (never a moment without filtering)."""
        return f"table {QUALIFIED}\ndelete table {QUALIFIED}\n{self.render()}"


def _comment(rule: Rule) -> str:
    text = rule.rule_id or ""
    text = re.sub(r"[^A-Za-z0-9 _./:,+-]", "", text)[:120]
    return f' comment "{text}"' if text else ""


def _match(rule: Rule, version: int) -> str | None:
    """The protocol part of a rule for one IP version; None if it cannot match there."""
    proto = rule.proto
    if proto == -1:
        return ""
    if proto == ICMP and version != 4 or proto == ICMPV6 and version != 6:
        return None
    if proto in (TCP, UDP):
        name = "tcp" if proto == TCP else "udp"
        ports = rule.ports
        assert ports is not None
        if ports.is_all:
            return f"meta l4proto {name}"
        return f"{name} dport {ports}"
    if proto in (ICMP, ICMPV6):
        name = "icmp" if proto == ICMP else "icmpv6"
        icmp = rule.icmp
        assert icmp is not None
        if icmp.is_all:
            return f"meta l4proto {name}"
        text = f"{name} type {icmp.type}"
        return text + ("" if icmp.code == -1 else f" {name} code {icmp.code}")
    return f"meta l4proto {proto}"


def rule_lines(rule: Rule) -> list[str]:
    """The nft rules of one security-group rule (one per IP version it can match)."""
    where = "daddr" if rule.egress else "saddr"
    versions = [rule.cidr.version] if rule.cidr is not None else [4, 6]
    lines = []
    for version in versions:
        match = _match(rule, version)
        if match is None:
            continue
        ip = "ip" if version == 4 else "ip6"
        if rule.cidr is not None:
            if rule.cidr.prefixlen == 0:
                peer = f"meta nfproto ipv{version}"
            else:
                peer = f"{ip} {where} {rule.cidr}"
        else:
            assert rule.ref_group_id is not None
            peer = f"{ip} {where} @{member_set(rule.ref_group_id, version)}"
        text = " ".join(p for p in (peer, match) if p)
        lines.append(f"{text} counter accept{_comment(rule)}")
    return lines


@functools.lru_cache(maxsize=4096)
def _group_chains(group_id: str, group: Group | None) -> tuple[Chain, Chain]:
    """The in/out chains of a group (cached: groups are immutable values)."""
    rules = group.rules if group is not None else ()
    chains = []
    for egress in (False, True):
        lines = [line for r in rules if r.egress == egress for line in rule_lines(r)]
        chains.append(Chain(group_chain(group_id, egress), tuple(lines)))
    return chains[0], chains[1]


@functools.lru_cache(maxsize=65536)
def _iface_chains(ifname: str, group_ids: tuple[str, ...]) -> tuple[Chain, Chain]:
    chains = []
    for egress in (False, True):
        jumps = [f"jump {group_chain(g, egress)}" for g in dict.fromkeys(group_ids)]
        chains.append(Chain(iface_chain(ifname, egress), (*jumps, "counter drop")))
    return chains[0], chains[1]


@functools.lru_cache(maxsize=1 << 17)
def _text(address: IPAddress) -> str:
    return str(address)  # ipaddress's str() is slow, IPv6 especially


def _set(name: str, type_: str, keys: Iterable[str]) -> NftSet:
    return NftSet(name, type_, {k: "" for k in keys})


def compile_host(state: State, host: str) -> Ruleset:
    """The table for the interfaces of ``state`` that sit on ``host``."""
    ifaces = sorted(state.on_host(host), key=lambda i: i.ifname)
    names = [i.ifname for i in ifaces]
    if len(set(names)) != len(names):
        raise ValueError(f"two interfaces share an ifname on host {host}")
    group_ids = list(dict.fromkeys(g for i in ifaces for g in i.group_ids))

    group_chains: dict[str, Chain] = {}
    referenced: dict[str, tuple[list[str], list[str]]] = {}
    for gid in group_ids:
        group = state.groups.get(gid)
        for chain in _group_chains(gid, group):
            group_chains[chain.name] = chain
        for rule in group.rules if group is not None else ():
            if rule.ref_group_id is not None:
                referenced.setdefault(rule.ref_group_id, ([], []))

    # members of the referenced groups, on any host, in one pass
    for iface in state.interfaces.values():
        for gid in iface.group_ids:
            found = referenced.get(gid)
            if found is not None:
                found[0].extend(_text(a) for a in iface.private_ipv4)
                found[1].extend(_text(a) for a in iface.private_ipv6)
    sets: dict[str, NftSet] = {}
    for ref, (v4, v6) in referenced.items():
        sets[member_set(ref, 4)] = _set(member_set(ref, 4), "ipv4_addr", sorted(set(v4)))
        sets[member_set(ref, 6)] = _set(member_set(ref, 6), "ipv6_addr", sorted(set(v6)))

    iface_chains = {c.name: c for i in ifaces for c in _iface_chains(i.ifname, tuple(i.group_ids))}
    sets[INST_IFS] = _set(INST_IFS, "ifname", (_quote(n) for n in names))
    own4 = (f"{_quote(i.ifname)} . {_text(a)}" for i in ifaces for a in i.private_ipv4)
    own6 = (f"{_quote(i.ifname)} . {_text(a)}" for i in ifaces for a in i.private_ipv6)
    sets[OWN_V4] = _set(OWN_V4, "ifname . ipv4_addr", own4)
    sets[OWN_V6] = _set(OWN_V6, "ifname . ipv6_addr", own6)
    for name, egress in ((FROM_INST, True), (TO_INST, False)):
        elements = {_quote(n): f"jump {iface_chain(n, egress)}" for n in names}
        sets[name] = NftSet(name, "ifname : verdict", elements, kind="map")
    return Ruleset(sets, group_chains, iface_chains)


def _elements(s: NftSet, keys: Iterable[str]) -> str:
    return ", ".join(s.element_text(k) for k in sorted(keys))


def plan(old: Ruleset, new: Ruleset) -> list[str]:
    """The nft commands (one transaction) that turn table ``old`` into ``new``.

    Order: create sets and chains; add set elements; refill changed chains; update map
    elements; then delete map/set elements, and finally chains and sets no longer used.
    """
    q = QUALIFIED
    cmds: list[str] = []
    dels: list[str] = []
    for name, s in new.sets.items():
        if name not in old.sets:
            cmds.append(f"add {s.kind} {q} {name} {{ type {s.type}; }}")
    old_chains, new_chains = old.chains, new.chains
    cmds += [f"add chain {q} {n}" for n in new_chains if n not in old_chains]

    for name, s in new.sets.items():
        before = old.sets.get(name)
        before_elems = before.elements if before is not None else {}
        added = [k for k, v in s.elements.items() if before_elems.get(k) != v]
        if s.kind == "map":
            continue  # maps are updated after the chains they point at are filled
        if added:
            cmds.append(f"add element {q} {name} {{ {_elements(s, added)} }}")
        removed = [k for k in before_elems if k not in s.elements]
        if removed:
            dels.append(f"delete element {q} {name} {{ {', '.join(sorted(removed))} }}")

    for groups in (new.group_chains, new.iface_chains):
        for name, chain in sorted(groups.items()):
            before = old_chains.get(name)
            if before is not None and before.rules == chain.rules:
                continue
            if before is not None:
                cmds.append(f"flush chain {q} {name}")
            cmds += [f"add rule {q} {name} {r}" for r in chain.rules]

    for name, s in new.sets.items():
        if s.kind != "map":
            continue
        before = old.sets.get(name)
        before_elems = before.elements if before is not None else {}
        changed = [k for k, v in s.elements.items() if k in before_elems and before_elems[k] != v]
        added = [k for k in s.elements if k not in before_elems or k in changed]
        gone = [k for k in before_elems if k not in s.elements or k in changed]
        if gone:
            cmds.append(f"delete element {q} {name} {{ {', '.join(sorted(gone))} }}")
        if added:
            cmds.append(f"add element {q} {name} {{ {_elements(s, added)} }}")

    cmds += dels
    for name in sorted(set(old.iface_chains) - set(new.iface_chains)):
        cmds += [f"flush chain {q} {name}", f"delete chain {q} {name}"]
    for name in sorted(set(old.group_chains) - set(new.group_chains)):
        cmds += [f"flush chain {q} {name}", f"delete chain {q} {name}"]
    for name, s in sorted(old.sets.items()):
        if name not in new.sets:
            cmds.append(f"delete {s.kind} {q} {name}")
    return cmds
