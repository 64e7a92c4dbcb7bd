"""Compile a State into one host's nftables table, ``table inet stockade``; diff two of them.

Pure functions, no I/O. The layout (see DESIGN.md, "Data plane"; docs/architecture.md says
where and why it departs from it):

- ``m_<group>_v4`` / ``_v6``: plain hash sets of the private addresses of the members of
  each group that a rule on this host references (members on any host); only for an IP
  version the group has members of: a reference to an empty one could match nothing, so
  it gets no rule either (nft resolves every set a rule names, and thousands of empty IPv6
  sets made a large table's load half again as slow);
- ``pl_<list>_v4`` / ``_v6``: interval sets of the CIDRs of each managed prefix list a rule
  on this host names (collapsed, so no two overlap), for an IP version the list has CIDRs
  of; a changed list is flushed and refilled in the same transaction;
- ``sg_<group>_in`` / ``_out``: one chain per group and direction, one rule per allow (a
  group peer gives one rule per IP version), each with a counter; an ingress allow
  ``accept``s, an egress allow ``goto ingress`` (the destination's side is checked next);
- ``c_<combo>_in`` / ``_out``: one chain per distinct list of groups that interfaces on this
  host have ("combo"; instances launched alike share it): ``jump`` to each group's chain,
  then ``counter drop`` (an allow ends evaluation, so the result is the union of the
  groups);
- ``from_inst`` / ``to_inst``: verdict maps ifname -> the chain of that interface's combo;
- ``inst_ifs``, ``own_v4``, ``own_v6``: the instance interfaces and their own addresses
  (``ifname . addr``), for anti-spoofing;
- one base chain ``forward`` (forward hook, priority filter): drop a packet from an
  instance interface whose source address is not that interface's own; accept
  established/related; drop invalid; ``iifname vmap @from_inst`` (the sender's egress);
  ``oifname vmap @to_inst`` (the receiver's ingress, for packets from elsewhere). The
  regular chain ``ingress`` (``oifname vmap @to_inst``, then ``accept``) is where an egress
  allow continues, so a packet between two instances is checked at both ends in one pass of
  one hook. Every denial is a silent drop.

Anti-spoofing comes before ``ct state established,related accept`` on purpose: otherwise
an instance could inject packets that forge the reply direction of someone else's tracked
connection.

``compile_host`` rebuilds the whole table on every call, but from cached pieces (a group's
chains, a combo's chains and element texts are computed once per distinct value), and
``plan`` skips pieces that are the same object as before, so a change costs little more
than the pieces it touches.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from stockade.model import ICMP, ICMPV6, TCP, UDP, Group, Interface, IPAddress, Rule, State

TABLE = "stockade"
FAMILY = "inet"
QUALIFIED = f"{FAMILY} {TABLE}"

FORWARD_CHAIN = "forward"
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
        FORWARD_CHAIN: (
            "type filter hook forward priority filter; policy accept;",
            f"meta nfproto ipv4 iifname @{INST_IFS} iifname . ip saddr != @{OWN_V4} counter drop",
            f"meta nfproto ipv6 iifname @{INST_IFS} iifname . ip6 saddr != @{OWN_V6} counter drop",
            "ct state established,related accept",
            "ct state invalid counter drop",
            f"iifname vmap @{FROM_INST}",
            f"oifname vmap @{TO_INST}",
        ),
    }
)
# where an egress allow goes on: the destination's ingress, or out if it is no instance here
INGRESS_RULES: tuple[str, ...] = (f"oifname vmap @{TO_INST}", "accept")


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


@functools.lru_cache(maxsize=1 << 16)
def member_set(group_id: str, version: int) -> str:
    return f"m_{group_ident(group_id)}_v{version}"


_PREFIX_LIST = re.compile(r"pl-([A-Za-z0-9]{1,60})")


def prefix_list_set(prefix_list_id: str, version: int) -> str:
    found = _PREFIX_LIST.fullmatch(prefix_list_id)
    ident = (
        found.group(1) if found else "x" + hashlib.sha1(prefix_list_id.encode()).hexdigest()[:16]
    )
    return f"pl_{ident}_v{version}"


def combo_ident(group_ids: tuple[str, ...]) -> str:
    """A combo's name part: its group's for one group, else a hash of the list."""
    if len(group_ids) == 1:
        return group_ident(group_ids[0])
    return "x" + hashlib.sha1("\0".join(group_ids).encode()).hexdigest()[:16]


def combo_chain(group_ids: tuple[str, ...], egress: bool) -> str:
    return f"c_{combo_ident(group_ids)}_{'out' if egress else 'in'}"


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
    flags: str = ""  # "interval" for the sets of prefix lists

    def __post_init__(self) -> None:
        if not isinstance(self.elements, MappingProxyType):
            object.__setattr__(self, "elements", MappingProxyType(dict(self.elements)))

    def element_text(self, key: str) -> str:
        value = self.elements[key]
        return f"{key} : {value}" if self.kind == "map" else key

    @property
    def spec(self) -> str:
        return f"type {self.type};" + (f" flags {self.flags};" if self.flags else "")

    def render(self) -> str:
        body = self.spec
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
    combo_chains: Mapping[str, Chain]
    # the base chains and where an egress allow goes on (the sandbox's by default; a
    # machine's own, on the input and output hooks, from host_mode())
    base: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: BASE_CHAINS)
    ingress: tuple[str, ...] = INGRESS_RULES

    def __post_init__(self) -> None:
        for name in ("sets", "group_chains", "combo_chains"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    @property
    def chains(self) -> dict[str, Chain]:
        return {**self.group_chains, **self.combo_chains}

    def render(self) -> str:
        """The table definition (nft -f syntax), in dependency order."""
        parts: list[str] = []
        plain = [s for s in self.sets.values() if s.kind == "set"]
        maps = [s for s in self.sets.values() if s.kind == "map"]
        parts += [s.render() for s in sorted(plain, key=lambda s: s.name)]
        parts.append(Chain(INGRESS_CHAIN).render())  # declared first: egress rules name it
        parts += [c.render() for _, c in sorted(self.group_chains.items())]
        parts += [c.render() for _, c in sorted(self.combo_chains.items())]
        parts += [s.render() for s in sorted(maps, key=lambda s: s.name)]
        parts.append(Chain(INGRESS_CHAIN, self.ingress).render())  # after the map it names
        parts += [Chain(name, rules).render() for name, rules in self.base.items()]
        body = "".join(f"\t{p}\n" for p in parts)
        return f"table {QUALIFIED} {{\n{body}}}\n"

    def full_script(self) -> str:
        """One transaction replacing the whole table (never a moment without filtering)."""
        return f"table {QUALIFIED}\ndelete table {QUALIFIED}\n{self.render()}"


INPUT_CHAIN = "input"
OUTPUT_CHAIN = "output"
AUDIT_PREFIX = "stockade-audit"
# never filtered on a machine: neighbour and router discovery (IPv6 needs them to work)
_ND = (
    "meta l4proto ipv6-icmp icmpv6 type { nd-router-solicit, nd-router-advert, "
    "nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept"
)
_PORT = re.compile(r"(tcp|udp):(\d{1,5})")


def failsafe_port(text: str) -> tuple[str, int]:
    """``"tcp:22"`` -> ("tcp", 22) (a ValueError naming the form otherwise)."""
    found = _PORT.fullmatch(text.strip().lower())
    if not found or not 1 <= int(found.group(2)) <= 65535:
        raise ValueError(f"a failsafe port is tcp:PORT or udp:PORT (1-65535), not {text!r}")
    return found.group(1), int(found.group(2))


@dataclass(frozen=True, slots=True)
class HostMode:
    """How a machine enforces its own groups (``stockade agent`` on a joined machine).

    ``failsafe_in``/``failsafe_out``: ("tcp", 22)-style ports that stay open whatever the
    groups say (Calico's failsafe ports); ``control_plane``: (address, port) of each
    control-plane server, which the agent can always reach; ``audit``: count and log what
    the groups would drop (prefix ``stockade-audit``) and accept it."""

    failsafe_in: tuple[tuple[str, int], ...] = ()
    failsafe_out: tuple[tuple[str, int], ...] = ()
    control_plane: tuple[tuple[str, int], ...] = ()
    audit: bool = False

    def base_chains(self) -> dict[str, tuple[str, ...]]:
        """The machine's base chains: its own traffic on the input and output hooks."""
        inbound = [
            "type filter hook input priority filter; policy accept;",
            'iifname "lo" accept',
            "ct state established,related accept",
            "ct state invalid counter drop",
            _ND,
            "udp sport 67 udp dport 68 accept",  # DHCP's answers (before an address)
            "udp sport 547 udp dport 546 accept",  # DHCPv6
        ]
        inbound += [f"{proto} dport {port} accept" for proto, port in self.failsafe_in]
        inbound.append(f"iifname vmap @{TO_INST}")
        outbound = [
            "type filter hook output priority filter; policy accept;",
            'oifname "lo" accept',
            "ct state established,related accept",
            "ct state invalid counter drop",
            _ND,
            "udp sport 68 udp dport 67 accept",
            "udp sport 546 udp dport 547 accept",
        ]
        for address, port in self.control_plane:
            family = "ip6" if ":" in address else "ip"
            outbound.append(f"{family} daddr {address} tcp dport {port} accept")
        outbound += [f"{proto} dport {port} accept" for proto, port in self.failsafe_out]
        outbound.append(f"oifname vmap @{FROM_INST}")
        return {INPUT_CHAIN: tuple(inbound), OUTPUT_CHAIN: tuple(outbound)}


def host_mode(ruleset: Ruleset, mode: HostMode) -> Ruleset:
    """``ruleset`` (compiled for the machine's enrolled interfaces, named by their devices)
    enforced on the machine itself: the same sets, group and combo chains, with base chains
    on the ``input`` hook (packets arriving on an enrolled interface: its ingress, through
    ``to_inst``) and the ``output`` hook (its egress, through ``from_inst``); an egress
    allow ends in ``accept`` (the destination is another machine). With ``audit`` a combo's
    final drop counts, logs and accepts."""
    combos = ruleset.combo_chains
    if mode.audit:
        combos = {
            name: Chain(name, (*chain.rules[:-1], _audit_rule(name)))
            if chain.rules and chain.rules[-1] == "counter drop"
            else chain
            for name, chain in combos.items()
        }
    return Ruleset(
        ruleset.sets,
        ruleset.group_chains,
        MappingProxyType(dict(combos)),
        MappingProxyType(mode.base_chains()),
        ("accept",),
    )


@functools.lru_cache(maxsize=1 << 12)
def _audit_rule(chain: str) -> str:
    return f'counter log prefix "{AUDIT_PREFIX} {chain} " accept'


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


def rule_lines(rule: Rule, empty: frozenset[tuple[str, int]] = frozenset()) -> list[str]:
    """The nft rules of one security-group rule (one per IP version it can match).

    ``empty``: (group, IP version) pairs for which the group has no member address; a
    reference to one can match nothing, so it gets no rule (and its set does not exist).
    """
    where = "daddr" if rule.egress else "saddr"
    if rule.cidr is not None:
        versions = [rule.cidr.version]
    else:
        peer_id = rule.ref_group_id or rule.prefix_list_id
        versions = [v for v in (4, 6) if (peer_id, v) not in empty]
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
        elif rule.prefix_list_id is not None:
            peer = f"{ip} {where} @{prefix_list_set(rule.prefix_list_id, version)}"
        else:
            assert rule.ref_group_id is not None
            peer = f"{ip} {where} @{member_set(rule.ref_group_id, version)}"
        text = " ".join(p for p in (peer, match) if p)
        verdict = f"goto {INGRESS_CHAIN}" if rule.egress else "accept"
        lines.append(f"{text} counter {verdict}{_comment(rule)}")
    return lines


def _group_refs(group: Group | None) -> frozenset[str]:
    """The groups the rules of ``group`` name."""
    rules = group.rules if group is not None else ()
    return frozenset(r.ref_group_id for r in rules if r.ref_group_id is not None)


def _prefix_list_refs(group: Group | None) -> frozenset[str]:
    """The prefix lists the rules of ``group`` name."""
    rules = group.rules if group is not None else ()
    return frozenset(r.prefix_list_id for r in rules if r.prefix_list_id is not None)


def _prefix_list_elements(state: State, prefix_list_id: str) -> tuple[list[str], list[str]]:
    """The collapsed CIDRs (as text) of a prefix list, IPv4 and IPv6 (none if unknown)."""
    plist = state.prefix_lists.get(prefix_list_id)
    out: tuple[list[str], list[str]] = ([], [])
    if plist is None:
        return out
    for version, found in ((4, out[0]), (6, out[1])):
        nets = plist.of_version(version)
        found += [str(n) for n in ipaddress.collapse_addresses(nets)]  # type: ignore[arg-type]
    return out


@functools.lru_cache(maxsize=1 << 15)
def _group_chains(
    group_id: str, group: Group | None, empty: frozenset[tuple[str, int]]
) -> tuple[Chain, Chain]:
    """The in/out chains of a group, given which referenced groups have no member of an IP
    version (cached: groups are immutable values, so an unchanged group gives the very
    same objects)."""
    rules = group.rules if group is not None else ()
    chains = []
    for egress in (False, True):
        lines = [line for r in rules if r.egress == egress for line in rule_lines(r, empty)]
        chains.append(Chain(group_chain(group_id, egress), tuple(lines)))
    return chains[0], chains[1]


@functools.lru_cache(maxsize=1 << 15)
def _combo_chains(group_ids: tuple[str, ...]) -> tuple[Chain, Chain, str, str]:
    """A combo's in/out chains and the map values that jump to them."""
    chains = []
    for egress in (False, True):
        jumps = [f"jump {group_chain(g, egress)}" for g in group_ids]
        chains.append(Chain(combo_chain(group_ids, egress), (*jumps, "counter drop")))
    return chains[0], chains[1], f"jump {chains[0].name}", f"jump {chains[1].name}"


@functools.lru_cache(maxsize=1 << 17)
def _text(address: IPAddress) -> str:
    return str(address)  # ipaddress's str() is slow, IPv6 especially


@functools.lru_cache(maxsize=1 << 17)
def _quoted(ifname: str) -> str:
    return _quote(ifname)


def _keys(keys: Iterable[str]) -> dict[str, str]:
    return dict.fromkeys(keys, "")


@dataclass(frozen=True, slots=True)
class _IfacePiece:
    """What an interface contributes to a table, worked out once per Interface object."""

    iface: Interface
    name: str  # quoted ifname
    combo: tuple[str, ...]  # its groups, each once
    v4: tuple[str, ...]
    v6: tuple[str, ...]
    own4: tuple[str, ...]
    own6: tuple[str, ...]


def _iface_piece(iface: Interface) -> _IfacePiece:
    name = _quoted(iface.ifname)
    v4 = tuple(_text(a) for a in iface.private_ipv4)
    v6 = tuple(_text(a) for a in iface.private_ipv6)
    return _IfacePiece(
        iface,
        name,
        tuple(dict.fromkeys(iface.group_ids)),
        v4,
        v6,
        tuple(f"{name} . {a}" for a in v4),
        tuple(f"{name} . {a}" for a in v6),
    )


# Pieces by the identity of the object they were made from (an entry holds that object,
# so its id cannot be reused while cached): hashing an Interface or a Group by value costs
# more than the piece. A caller that compiles the same host again and again (a Dataplane)
# passes the same ``pieces`` dict each time; each compile keeps only the entries it used.
# On a miss (a new or re-parsed object) a piece is made again (group chains are also
# lru-cached by value).


def _piece(
    obj: Any,
    seen: dict[Any, Any],
    last: dict[Any, Any],
    kind: str,
    make: Any,
    extra: Any = None,
) -> Any:
    """``make(obj)`` for this ``kind`` of piece, cached by ``obj``'s identity (and
    ``extra``, compared by value)."""
    key = (kind, id(obj))
    entry = seen.get(key) or last.get(key)
    if entry is None or entry[0] is not obj or entry[1] != extra:
        entry = (obj, extra, make(obj))
    seen[key] = entry
    return entry[2]


def compile_host(state: State, host: str, pieces: dict[Any, Any] | None = None) -> Ruleset:
    """The table for the interfaces of ``state`` that sit on ``host``.

    ``pieces``: the cache of an earlier compile of this host (updated in place)."""
    last = pieces if pieces is not None else {}
    seen: dict[Any, Any] = {}
    mine = [i for i in state.interfaces.values() if i.host == host]
    local = [_piece(i, seen, last, "iface", _iface_piece) for i in mine]
    names = [p.name for p in local]
    inst_ifs = _keys(names)
    if len(inst_ifs) != len(names):
        raise ValueError(f"two interfaces share an ifname on host {host}")

    own4: dict[str, str] = {}
    own6: dict[str, str] = {}
    from_inst: dict[str, str] = {}
    to_inst: dict[str, str] = {}
    combos: dict[tuple[str, ...], tuple[Chain, Chain, str, str]] = {}
    for piece in local:
        combo = combos.get(piece.combo)
        if combo is None:
            combo = combos[piece.combo] = _combo_chains(piece.combo)
        to_inst[piece.name] = combo[2]
        from_inst[piece.name] = combo[3]
        if piece.own4:
            own4.update(dict.fromkeys(piece.own4, ""))
        if piece.own6:
            own6.update(dict.fromkeys(piece.own6, ""))

    groups = state.groups
    used = {gid: groups.get(gid) for gid in dict.fromkeys(g for key in combos for g in key)}
    refs_of = {
        gid: _group_refs(None) if group is None else _piece(group, seen, last, "refs", _group_refs)
        for gid, group in used.items()
    }
    referenced: dict[str, tuple[dict[str, str], dict[str, str]]] = {
        ref: ({}, {}) for refs in refs_of.values() for ref in refs
    }
    if referenced:  # members of the referenced groups, on any host, in one pass
        for iface in state.interfaces.values():
            for gid in iface.group_ids:
                found = referenced.get(gid)
                if found is not None:
                    piece = _piece(iface, seen, last, "iface", _iface_piece)
                    found[0].update(dict.fromkeys(piece.v4, ""))
                    found[1].update(dict.fromkeys(piece.v6, ""))

    lists_of = {gid: _prefix_list_refs(group) for gid, group in used.items()}
    plists = {pl: _prefix_list_elements(state, pl) for pls in lists_of.values() for pl in pls}
    group_chains: dict[str, Chain] = {}
    for gid, group in used.items():
        empty = frozenset(
            (ref, v)
            for ref in refs_of[gid]
            for v, members in ((4, referenced[ref][0]), (6, referenced[ref][1]))
            if not members
        ) | frozenset(
            (pl, v)
            for pl in lists_of[gid]
            for v, cidrs in ((4, plists[pl][0]), (6, plists[pl][1]))
            if not cidrs
        )
        if group is None:
            chain_in, chain_out = _group_chains(gid, None, empty)
        else:
            chain_in, chain_out = _piece(
                group, seen, last, "chains", lambda g, e=empty: _group_chains(g.id, g, e), empty
            )
        group_chains[chain_in.name] = chain_in
        group_chains[chain_out.name] = chain_out
    if pieces is not None:
        pieces.clear()
        pieces.update(seen)
    sets: dict[str, NftSet] = {}
    for ref, (v4, v6) in referenced.items():  # a set per IP version that has members
        if v4:
            name = member_set(ref, 4)
            sets[name] = NftSet(name, "ipv4_addr", MappingProxyType(v4))
        if v6:
            name = member_set(ref, 6)
            sets[name] = NftSet(name, "ipv6_addr", MappingProxyType(v6))
    for pl, (c4, c6) in plists.items():
        for version, cidrs in ((4, c4), (6, c6)):
            if cidrs:
                name = prefix_list_set(pl, version)
                kind = "ipv4_addr" if version == 4 else "ipv6_addr"
                sets[name] = NftSet(name, kind, MappingProxyType(_keys(cidrs)), flags="interval")
    sets[INST_IFS] = NftSet(INST_IFS, "ifname", MappingProxyType(inst_ifs))
    sets[OWN_V4] = NftSet(OWN_V4, "ifname . ipv4_addr", MappingProxyType(own4))
    sets[OWN_V6] = NftSet(OWN_V6, "ifname . ipv6_addr", MappingProxyType(own6))
    for name, elements in ((FROM_INST, from_inst), (TO_INST, to_inst)):
        sets[name] = NftSet(name, "ifname : verdict", MappingProxyType(elements), kind="map")
    combo_chains = {c.name: c for combo in combos.values() for c in combo[:2]}
    return Ruleset(
        MappingProxyType(sets), MappingProxyType(group_chains), MappingProxyType(combo_chains)
    )


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
            cmds.append(f"add {s.kind} {q} {name} {{ {s.spec} }}")
    old_chains, new_chains = old.chains, new.chains
    cmds += [f"add chain {q} {n}" for n in new_chains if n not in old_chains]

    empty: Mapping[str, str] = MappingProxyType({})
    maps: list[tuple[NftSet, Mapping[str, str]]] = []
    for name, s in new.sets.items():
        before = old.sets.get(name)
        if before is s:
            continue
        before_elems = before.elements if before is not None else empty
        if s.kind == "map":
            maps.append((s, before_elems))  # updated after the chains they point at are filled
            continue
        if s.flags and before is not None:  # intervals: refilled (old and new may overlap)
            if dict(before_elems) != dict(s.elements):
                cmds.append(f"flush set {q} {name}")
                if s.elements:
                    cmds.append(f"add element {q} {name} {{ {_elements(s, s.elements)} }}")
            continue
        added = s.elements.keys() - before_elems.keys()
        if added:
            cmds.append(f"add element {q} {name} {{ {_elements(s, added)} }}")
        removed = before_elems.keys() - s.elements.keys()
        if removed:
            dels.append(f"delete element {q} {name} {{ {', '.join(sorted(removed))} }}")

    for groups in (new.group_chains, new.combo_chains):
        for name, chain in sorted(groups.items()):
            before = old_chains.get(name)
            if before is chain or before is not None and before.rules == chain.rules:
                continue
            if before is not None:
                cmds.append(f"flush chain {q} {name}")
            cmds += [f"add rule {q} {name} {r}" for r in chain.rules]

    for s, before_elems in maps:
        added = {k for k, _ in s.elements.items() - before_elems.items()}
        gone = {k for k, _ in before_elems.items() - s.elements.items()}
        if gone:
            cmds.append(f"delete element {q} {s.name} {{ {', '.join(sorted(gone))} }}")
        if added:
            cmds.append(f"add element {q} {s.name} {{ {_elements(s, added)} }}")

    cmds += dels
    for name in sorted(set(old.combo_chains) - set(new.combo_chains)):
        cmds += [f"flush chain {q} {name}", f"delete chain {q} {name}"]
    for name in sorted(set(old.group_chains) - set(new.group_chains)):
        cmds += [f"flush chain {q} {name}", f"delete chain {q} {name}"]
    for name, s in sorted(old.sets.items()):
        if name not in new.sets:
            cmds.append(f"delete {s.kind} {q} {name}")
    return cmds
