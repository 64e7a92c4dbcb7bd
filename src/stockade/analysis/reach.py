"""Who can reach whom: for every pair of interfaces, and from and to outside addresses,
the protocols and ports the security groups allow (the source's egress met with the
destination's ingress, exactly as `policy.evaluate` decides each flow).

Computed by equivalence classes, not pair by pair. Two interfaces answer alike, as either
end of a flow, when they are in the same groups and inside the same set of the CIDRs the
rules name (a group reference matches members, a CIDR rule matches the addresses inside
it; nothing else about an address matters). CIDRs that hold every interface's address
(0.0.0.0/0, the VPC's block) split nothing and are set aside as "universal": what they
admit is one set per class, shared by every peer. So `compute` makes one pass over the
rules and the addresses, and gives each class

- its universal egress and ingress (one port set each);
- its egress and ingress per selector (a group it references, a narrow CIDR it names);
- the selectors it matches as a peer (its groups, the narrow CIDRs it is inside);

and a pair of classes is answered from these in a few set operations: egress = universal
plus the selectors the destination matches, ingress likewise, the two met (memoised per
distinct pair of sets, so the common case of identical sides costs one lookup).

Display classes refine these by subnet and by having a public address (which decides
whether the internet can reach a class at all, through the edge's NAT).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

from stockade.analysis.inventory import Inventory, bare
from stockade.analysis.ports import NOTHING, Ports, of_rule, union
from stockade.model import ICMP, ICMPV6, Interface, IPAddress, IPNetwork, Rule, State
from stockade.policy import Flow


@dataclass(frozen=True)
class Klass:
    """A display class: interfaces alike in groups, CIDR membership, subnet and public
    address presence (``behaviour`` is the coarser class that decides traffic)."""

    index: int
    behaviour: int
    group_ids: tuple[str, ...]
    subnet: str
    public: bool
    members: tuple[Interface, ...]

    @property
    def instance_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i.instance_id for i in self.members))


@dataclass(frozen=True)
class Outside:
    """What outside addresses in ``cidr`` may do to (ingress) or from (egress) a class:
    the union of the rules whose CIDR holds all of ``cidr``."""

    cidr: IPNetwork
    ports: Ports


def _applies(rule: Rule, version: int) -> bool:
    if rule.proto == ICMP and version != 4 or rule.proto == ICMPV6 and version != 6:
        return False  # icmp matches IPv4 flows only, icmpv6 IPv6 only
    return rule.cidr is None or rule.cidr.version == version


def cidrs_of(state: State, rule: Rule, version: int) -> tuple[IPNetwork, ...] | None:
    """The address blocks of IP ``version`` a rule's peer stands for: its CIDR, or the
    CIDRs of its managed prefix list (an unknown list: none); None for a group peer."""
    if rule.cidr is not None:
        return (rule.cidr,) if rule.cidr.version == version else ()
    plist_id = getattr(rule, "prefix_list_id", None)
    if plist_id is not None:
        plist = getattr(state, "prefix_lists", {}).get(plist_id)
        return () if plist is None else tuple(plist.of_version(version))
    return None


@dataclass
class Reach:
    """The answer for one IP version: `between` (two interfaces), `flow_allowed` (one
    flow), `edges` (every class pair), `from_outside`/`to_outside` (outside addresses).
    An interface stands for its first address of the version (as a flow by interface id
    does in `policy.resolve`)."""

    inventory: Inventory
    version: int
    classes: list[Klass]
    class_of: dict[str, int]  # interface id -> display class index
    # per behaviour class: what its egress/ingress admits from/to every peer ("universal"),
    # what it admits per selector (a group it references, a narrow CIDR), and the
    # selectors it matches as a peer (its groups, the narrow CIDRs it is inside)
    _uni_e: list[Ports]
    _uni_i: list[Ports]
    _sel_e: list[dict[object, Ports]]
    _sel_i: list[dict[object, Ports]]
    _atoms: list[frozenset[object]]
    _met: dict[tuple[Ports, Ports], Ports] = field(default_factory=dict)

    # -- class level ---------------------------------------------------------------------

    def behaviour_between(self, src: int, dst: int) -> Ports:
        e = self._side(self._uni_e[src], self._sel_e[src], self._atoms[dst])
        if not e:
            return NOTHING
        i = self._side(self._uni_i[dst], self._sel_i[dst], self._atoms[src])
        if e.everything or not i:
            return i
        if i.everything:
            return e
        key = (e, i)
        met = self._met.get(key)
        if met is None:
            met = self._met[key] = e & i
        return met

    @staticmethod
    def _side(universal: Ports, selectors: dict[object, Ports], atoms: frozenset) -> Ports:
        if not selectors or universal.everything:
            return universal
        if len(selectors) <= len(atoms):
            extra = [p for a, p in selectors.items() if a in atoms]
        else:
            extra = [selectors[a] for a in atoms if a in selectors]
        if not extra:
            return universal
        return union([universal, *extra])

    def class_between(self, src: Klass, dst: Klass) -> Ports:
        return self.behaviour_between(src.behaviour, dst.behaviour)

    def between(self, src: str, dst: str) -> Ports:
        """What interface ``src`` may open to interface ``dst``'s private address."""
        if src == dst:
            return NOTHING  # local traffic is not the groups' business
        a = self.classes[self.class_of[src]]
        b = self.classes[self.class_of[dst]]
        return self.class_between(a, b)

    def behaviour_edges(self) -> Iterator[tuple[int, int, Ports]]:
        """Every pair of behaviour classes with something allowed, row by row: for one
        destination, the sources that match none of its (or their own) selectors share
        one answer per distinct universal egress, so only the others are met one by one."""
        count = len(self._uni_e)
        by_atom: dict[object, list[int]] = {}
        for b, atoms in enumerate(self._atoms):
            for a in atoms:
                by_atom.setdefault(a, []).append(b)
        special_e: list[set[int]] = [set() for _ in range(count)]
        for src in range(count):
            for a in self._sel_e[src]:
                for dst in by_atom.get(a, ()):
                    special_e[dst].add(src)
        by_uni: dict[Ports, list[int]] = {}
        for src, ports in enumerate(self._uni_e):
            by_uni.setdefault(ports, []).append(src)
        met = self._met
        for dst in range(count):
            # the sources that match some of this destination's ingress selectors, and which
            uni_i, sel_i = self._uni_i[dst], self._sel_i[dst]
            matches: dict[int, list[object]] = {src: [] for src in special_e[dst]}
            for a in sel_i:
                for src in by_atom.get(a, ()):
                    matches.setdefault(src, []).append(a)
            for egress, sources in by_uni.items():
                base = egress & uni_i
                if base:
                    for src in sources:
                        if src not in matches:
                            yield src, dst, base
            ingress_of: dict[tuple[object, ...], Ports] = {}
            dst_atoms = self._atoms[dst]
            for src, found in matches.items():
                key = tuple(found)
                ingress = ingress_of.get(key)
                if ingress is None:
                    ingress = ingress_of[key] = union([uni_i, *(sel_i[a] for a in found)])
                if not ingress:
                    continue
                egress = self._uni_e[src]
                if src in special_e[dst]:
                    egress = self._side(egress, self._sel_e[src], dst_atoms)
                pair = (egress, ingress)
                ports = met.get(pair)
                if ports is None:
                    ports = met[pair] = egress & ingress
                if ports:
                    yield src, dst, ports

    def edges(self) -> Iterator[tuple[Klass, Klass, Ports]]:
        """Every (source class, destination class, allowed) with something allowed between
        distinct interfaces (a class of one interface has no edge to itself)."""
        shown: dict[int, list[Klass]] = {}
        for k in self.classes:
            shown.setdefault(k.behaviour, []).append(k)
        for src, dst, ports in self.behaviour_edges():
            for a in shown[src]:
                for b in shown[dst]:
                    if a is b and len(a.members) < 2:
                        continue
                    yield a, b, ports

    # -- outside addresses ---------------------------------------------------------------

    def _blocks(self, klass: Klass, egress: bool) -> list[tuple[IPNetwork, Rule]]:
        """(address block, rule) for every CIDR-like peer of the class's rules."""
        state = self.inventory.state
        out = []
        for g in klass.group_ids:
            for r in self._rules(g, egress):
                if _applies(r, self.version):
                    out.extend((c, r) for c in cidrs_of(state, r, self.version) or ())
        return out

    def _outside(self, klass: Klass, egress: bool) -> list[Outside]:
        blocks = self._blocks(klass, egress)
        cidrs = sorted({c for c, _ in blocks}, key=lambda c: (c.prefixlen, c))
        out = []
        for c in cidrs:
            held = [of_rule(r) for b, r in blocks if c.subnet_of(b)]  # type: ignore[arg-type]
            out.append(Outside(c, union(held)))
        return out

    def from_outside(self, klass: Klass) -> list[Outside]:
        """What outside sources may open to ``klass`` (through its public address, if it
        has one: `Klass.public`), per source CIDR named by its ingress rules."""
        return self._outside(klass, egress=False)

    def to_outside(self, klass: Klass) -> list[Outside]:
        """What ``klass`` may open to outside destinations, per CIDR of its egress rules."""
        return self._outside(klass, egress=True)

    def from_address(self, address: IPAddress, dst: str) -> Ports:
        """What outside ``address`` may open to interface ``dst``."""
        klass = self.classes[self.class_of[dst]]
        return union(of_rule(r) for c, r in self._blocks(klass, False) if address in c)

    def to_address(self, src: str, address: IPAddress) -> Ports:
        """What interface ``src`` may open to outside ``address``."""
        klass = self.classes[self.class_of[src]]
        return union(of_rule(r) for c, r in self._blocks(klass, True) if address in c)

    def _rules(self, group_id: str, egress: bool) -> tuple[Rule, ...]:
        group = self.inventory.state.groups.get(group_id)
        if group is None:
            return ()
        return group.egress if egress else group.ingress

    # -- one flow ------------------------------------------------------------------------

    def flow_allowed(self, flow: Flow) -> bool:
        """The answer for one flow between interfaces or an interface and an outside
        address (what `policy.evaluate` says, read off the classes)."""
        state = self.inventory.state
        src = _end(state, flow.src)
        dst = _end(state, flow.dst)
        args = (flow.protocol, flow.port, flow.icmp_type, flow.icmp_code)
        if isinstance(src, str) and isinstance(dst, str):
            return src == dst or self.between(src, dst).allows(*args)
        if isinstance(dst, str):
            return self.from_address(src, dst).allows(*args)  # type: ignore[arg-type]
        if isinstance(src, str):
            return self.to_address(src, dst).allows(*args)
        return True  # neither end is an instance: nothing checks it


def _end(state: State, value: str | IPAddress) -> str | IPAddress:
    if isinstance(value, str) and value in state.interfaces:
        return value
    addr = value if not isinstance(value, str) else ipaddress.ip_address(value)
    iface = state.interface_by_address(addr)
    return iface.id if iface is not None else addr


def compute(source: Inventory | State, version: int = 4) -> Reach:
    """Who reaches whom over IP ``version`` (interfaces without such an address sit out)."""
    inv = source if isinstance(source, Inventory) else bare(source)
    state = inv.state
    ifaces = [i for i in state.interfaces.values() if i.address(version) is not None]
    if not ifaces:
        return Reach(inv, version, [], {}, [], [], [], [], [])
    addr_int = {i.id: int(i.address(version)) for i in ifaces}  # type: ignore[arg-type]
    low, high = min(addr_int.values()), max(addr_int.values())

    # the CIDRs the rules name, split into universal (hold every address) and narrow
    rule_ports: dict[Rule, Ports] = {}
    rule_blocks: dict[Rule, tuple[IPNetwork, ...] | None] = {}
    narrow: dict[IPNetwork, int] = {}
    for group in state.groups.values():
        for rule in group.rules:
            if not _applies(rule, version):
                continue
            rule_ports[rule] = of_rule(rule)
            blocks = rule_blocks[rule] = cidrs_of(state, rule, version)
            for c in blocks or ():
                if not (int(c[0]) <= low and high <= int(c[-1])):
                    narrow.setdefault(c, len(narrow))

    # the narrow CIDRs each interface is in (bisect over the sorted addresses)
    order = sorted(ifaces, key=lambda i: addr_int[i.id])
    keys = [addr_int[i.id] for i in order]
    inside: dict[str, list[int]] = {}
    for c, n in narrow.items():
        lo = bisect.bisect_left(keys, int(c[0]))
        hi = bisect.bisect_right(keys, int(c[-1]))
        for i in order[lo:hi]:
            inside.setdefault(i.id, []).append(n)

    # behaviour classes, then display classes
    bkey: dict[tuple, int] = {}
    bgroups: list[tuple[str, ...]] = []
    binside: list[tuple[int, ...]] = []
    dkey: dict[tuple, list[Interface]] = {}
    for iface in ifaces:
        groups = tuple(sorted(set(iface.group_ids)))
        sig = tuple(inside.get(iface.id, ()))
        k = (groups, sig)
        b = bkey.get(k)
        if b is None:
            b = bkey[k] = len(bgroups)
            bgroups.append(groups)
            binside.append(sig)
        dk = (b, inv.subnet_of.get(iface.id, ""), iface.id in inv.public_ip)
        dkey.setdefault(dk, []).append(iface)
    classes = []
    class_of: dict[str, int] = {}
    for n, ((b, subnet, public), members) in enumerate(
        sorted(dkey.items(), key=lambda kv: (bgroups[kv[0][0]], kv[0][1], kv[0][2]))
    ):
        classes.append(Klass(n, b, bgroups[b], subnet, public, tuple(members)))
        for m in members:
            class_of[m.id] = n

    # per behaviour class: universal parts, parts per selector, and the selectors it matches
    def sides(b: int, egress: bool) -> tuple[Ports, dict[object, Ports]]:
        universal: list[Ports] = []
        selectors: dict[object, list[Ports]] = {}
        for g in bgroups[b]:
            group = state.groups.get(g)
            if group is None:
                continue
            for rule in group.egress if egress else group.ingress:
                ports = rule_ports.get(rule)
                if ports is None:
                    continue
                blocks = rule_blocks[rule]
                if blocks is None:
                    selectors.setdefault(("g", rule.ref_group_id), []).append(ports)
                    continue
                for c in blocks:
                    n = narrow.get(c)
                    if n is None:
                        universal.append(ports)
                    else:
                        selectors.setdefault(("c", n), []).append(ports)
        return union(universal), {k: union(v) for k, v in selectors.items()}

    uni_e, uni_i, sel_e, sel_i, atoms = [], [], [], [], []
    for b in range(len(bgroups)):
        u, sel = sides(b, True)
        uni_e.append(u)
        sel_e.append(sel)
        u, sel = sides(b, False)
        uni_i.append(u)
        sel_i.append(sel)
        atoms.append(frozenset([*(("g", g) for g in bgroups[b]), *(("c", n) for n in binside[b])]))
    return Reach(inv, version, classes, class_of, uni_e, uni_i, sel_e, sel_i, atoms)


def versions(inv: Inventory) -> list[int]:
    """The IP versions some interface has an address of (4 first)."""
    found = []
    for v in (4, 6):
        if any(i.address(v) is not None for i in inv.state.interfaces.values()):
            found.append(v)
    return found or [4]
