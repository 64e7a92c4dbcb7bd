"""An in-memory nftables for unit tests (a test tool: the product never uses it).

:class:`FakeNft` is an :class:`~stockade.dataplane.nft.Executor`: it parses the nft script
text the data plane sends to libnftables and applies it to tables held in memory, as the
kernel would, one buffer as one transaction (all or nothing). knftables' ``Fake``
(kubernetes-sigs/knftables, fake.go) is the anchor; where knftables' fake applies its own
transaction objects, this one reads nft's syntax, since text is what ``Dataplane`` emits.

What it understands, and checks as the kernel does:

- ``table F T [{ ... }]``, ``add|delete|flush table F T``; a table block holds ``set``,
  ``map`` and ``chain`` blocks (a second block of the same chain adds to it);
- ``add|create|delete|flush chain F T C [{ type .. hook .. priority ..; policy ..; }]``:
  deleting a chain removes its rules and fails while a rule or a map element jumps to it;
- ``add|create|delete|flush set|map F T S [{ type ..; flags ..; elements = { .. } }]``:
  deleting a set fails while a rule names it; a map element's verdict must name a chain;
- ``add|create|delete element F T S { .. }``: elements are checked against the set's type
  (``ipv4_addr``, ``ipv6_addr``, ``ifname``, ``inet_service``, concatenations with
  ``.``, maps ``key : verdict``) and kept in canonical form; deleting an element that is
  not there fails, as adding one that is there with another value does;
- ``add|insert rule F T C <statement>``, ``delete rule F T C handle N``: the rule is kept
  as text (whitespace folded); every ``@set`` and ``jump``/``goto`` chain it names must
  exist. Handles count per table, as the kernel's do.

Anything else raises :class:`NftError` ("the fake does not support ..."), so a test never
passes on syntax the fake only pretends to know. :meth:`FakeNft.dump` renders a table as
a script that loads it, which is how tests compare the fake with the real kernel.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from stockade.dataplane.nft import NftError

_WORD = re.compile(r"[A-Za-z0-9_.:/-]+")
_REF_SET = re.compile(r"@([A-Za-z0-9_-]+)")
_REF_CHAIN = re.compile(r"\b(?:jump|goto)\s+([A-Za-z0-9_-]+)")
_VERDICTS = ("accept", "drop", "continue", "return")
_KEY_TYPES = ("ipv4_addr", "ipv6_addr", "ifname", "inet_service", "inet_proto", "mark")


class _Refused(Exception):
    """A command the kernel (or nft) would refuse: the whole transaction fails."""


@dataclass
class FakeSet:
    kind: str  # "set" or "map"
    type: str  # e.g. "ipv4_addr", "ifname . ipv4_addr", "ifname : verdict"
    flags: tuple[str, ...] = ()
    elements: dict[str, str] = field(default_factory=dict)  # canonical key -> value ("")
    handle: int = 0

    @property
    def key_types(self) -> list[str]:
        key = self.type.split(" : ")[0]
        return [t.strip() for t in key.split(" . ")]

    @property
    def value_type(self) -> str | None:
        parts = self.type.split(" : ")
        return parts[1].strip() if len(parts) == 2 else None


@dataclass
class FakeChain:
    base: str | None = None  # canonical "type filter hook forward priority 0; policy accept;"
    rules: list[tuple[int, str]] = field(default_factory=list)  # (handle, text)
    handle: int = 0


@dataclass
class FakeTable:
    sets: dict[str, FakeSet] = field(default_factory=dict)
    chains: dict[str, FakeChain] = field(default_factory=dict)
    handles: int = 0

    def next_handle(self) -> int:
        self.handles += 1
        return self.handles

    def snapshot(self) -> dict[str, Any]:
        """The table's content as plain values, without handles (compare two with ==)."""
        return {
            "sets": {
                name: (s.kind, s.type, tuple(sorted(s.flags)), dict(sorted(s.elements.items())))
                for name, s in sorted(self.sets.items())
            },
            "chains": {
                name: (c.base, tuple(text for _, text in c.rules))
                for name, c in sorted(self.chains.items())
            },
        }


class FakeNft:
    """nftables in memory: ``run(script)`` applies one transaction (see the module)."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], FakeTable] = {}
        self.scripts: list[str] = []  # every script applied, in order

    # --- the Executor protocol ---------------------------------------------------------

    def run(self, script: str, check: bool = False) -> str:
        tables = copy.deepcopy(self.tables)
        out: list[str] = []
        try:
            for statement in _statements(script):
                result = _Applier(tables).command(statement)
                if result:
                    out.append(result)
        except _Refused as exc:
            raise NftError(f"Error: {exc}", script) from None
        if not check:
            self.tables = tables
            self.scripts.append(script)
        return "".join(out)

    # --- looking at it -----------------------------------------------------------------

    def table(self, qualified: str = "inet stockade") -> FakeTable | None:
        family, name = qualified.split()
        return self.tables.get((family, name))

    def snapshot(self, qualified: str = "inet stockade") -> dict[str, Any] | None:
        table = self.table(qualified)
        return None if table is None else table.snapshot()

    def dump(self, qualified: str = "inet stockade") -> str:
        """A script that makes a table like this one (replacing any of the same name):
        sets, every chain declared, maps (their verdicts name the chains), then rules."""
        table = self.table(qualified)
        if table is None:
            raise KeyError(qualified)
        parts: list[str] = []
        ordered = sorted(table.sets.items(), key=lambda kv: (kv[1].kind == "map", kv[0]))
        for kind in ("set", "map"):
            if kind == "map":
                for name, chain in sorted(table.chains.items()):
                    base = f"\t\t{chain.base}\n" if chain.base else ""
                    parts.append(f"\tchain {name} {{\n{base}\t}}\n")
            for name, s in ordered:
                if s.kind != kind:
                    continue
                body = f"type {s.type};"
                if s.flags:
                    body += f" flags {', '.join(s.flags)};"
                if s.elements:
                    items = ", ".join(
                        f"{k} : {v}" if s.kind == "map" else k
                        for k, v in sorted(s.elements.items())
                    )
                    body += f" elements = {{ {items} }}"
                parts.append(f"\t{s.kind} {name} {{ {body} }}\n")
        for name, chain in sorted(table.chains.items()):
            if chain.rules:
                rules = "".join(f"\t\t{text}\n" for _, text in chain.rules)
                parts.append(f"\tchain {name} {{\n{rules}\t}}\n")
        return (
            f"table {qualified}\ndelete table {qualified}\n"
            f"table {qualified} {{\n{''.join(parts)}}}\n"
        )


# --- parsing -------------------------------------------------------------------------------


def _statements(script: str) -> list[str]:
    """Top-level commands: one a line, or across lines while a ``{`` is open; ``;`` also
    ends one outside braces. Comment lines (starting with ``#``) are dropped."""
    return [s for s in _split(script, "\n;", strict=True) if not s.startswith("#")]


def _split(text: str, seps: str, strict: bool = False) -> list[str]:
    """Split at ``seps`` outside quotes and braces; pieces stripped, empty ones dropped.
    ``strict``: an unbalanced ``}``, brace or quote is nft's syntax error."""
    out: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for ch in text:
        if quoted:
            current.append(ch)
            quoted = ch != '"'
            continue
        if ch == '"':
            quoted = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if strict and depth < 0:
                raise _Refused("syntax error, unexpected '}'")
        elif ch in seps and depth == 0:
            out.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if strict and (quoted or depth):
        raise _Refused("syntax error, unexpected end of file")
    out.append("".join(current).strip())
    return [p for p in out if p]


def _head_and_block(text: str) -> tuple[str, str | None]:
    """``"set s { type x; }"`` -> ``("set s", "type x;")``; no block -> (text, None)."""
    start = _brace(text)
    if start < 0:
        return text.strip(), None
    if not text.rstrip().endswith("}"):
        raise _Refused(f"syntax error after the block in {text!r}")
    return text[:start].strip(), text[start + 1 : text.rstrip().rfind("}")].strip()


def _brace(text: str) -> int:
    quoted = False
    for index, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == "{" and not quoted:
            return index
    return -1


def _fold(text: str) -> str:
    """Whitespace folded outside quotes."""
    parts = re.split(r'("(?:[^"\\]|\\.)*")', text)
    return "".join(p if i % 2 else re.sub(r"\s+", " ", p) for i, p in enumerate(parts)).strip()


_PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50}
_PRIORITIES["srcnat"] = 100


class _Applier:
    def __init__(self, tables: dict[tuple[str, str], FakeTable]) -> None:
        self.tables = tables

    # --- top level ---------------------------------------------------------------------

    def command(self, statement: str) -> str:
        first = statement.split(None, 2)
        if len(first) >= 2 and first[1] == "rule":
            return self.rule_cmd(first[0], statement)
        head, block = _head_and_block(statement)
        words = head.split()
        if not words:
            raise _Refused(f"syntax error in {statement!r}")
        verb = words[0]
        if verb == "table":
            return self.table_block(words[1:], block)
        if verb == "list":
            return self.list(words[1:])
        if verb not in ("add", "create", "delete", "flush", "insert"):
            raise _Refused(f"the fake does not support {verb!r} ({statement!r})")
        if len(words) < 2:
            raise _Refused(f"syntax error in {statement!r}")
        what = words[1]
        if what == "table":
            return self.table_cmd(verb, words[2:], block)
        fam_tab_name = words[2:]
        if len(fam_tab_name) != 3:
            raise _Refused(f"syntax error in {statement!r} (want {what} FAMILY TABLE NAME)")
        family, tname, name = fam_tab_name
        table = self.lookup(family, tname)
        if what == "chain":
            self.chain_cmd(table, verb, name, block)
        elif what in ("set", "map"):
            self.set_cmd(table, verb, what, name, block)
        elif what == "element":
            self.element_cmd(table, verb, name, block)
        else:
            raise _Refused(f"the fake does not support {verb} {what!r}")
        return ""

    def lookup(self, family: str, name: str) -> FakeTable:
        table = self.tables.get((family, name))
        if table is None:
            raise _Refused(f"Could not process rule: No such file or directory (table {name})")
        return table

    def table_block(self, words: list[str], block: str | None) -> str:
        if len(words) != 2:
            raise _Refused("syntax error: table FAMILY NAME")
        family, name = words
        if family not in ("inet", "ip", "ip6", "arp", "bridge", "netdev"):
            raise _Refused(f"unknown family {family!r}")
        table = self.tables.setdefault((family, name), FakeTable())
        if block:
            for item in _split(block, "\n;"):
                self.table_item(table, item)
        return ""

    def table_cmd(self, verb: str, words: list[str], block: str | None) -> str:
        if len(words) != 2:
            raise _Refused("syntax error: table FAMILY NAME")
        key = (words[0], words[1])
        if verb in ("add", "create"):
            if verb == "create" and key in self.tables:
                raise _Refused(f"Could not process rule: File exists (table {words[1]})")
            return self.table_block(words, block)
        table = self.lookup(*key)
        if verb == "delete":
            del self.tables[key]
        elif verb == "flush":
            for chain in table.chains.values():
                chain.rules.clear()
        else:
            raise _Refused(f"the fake does not support {verb} table")
        return ""

    def table_item(self, table: FakeTable, item: str) -> None:
        head, block = _head_and_block(item)
        words = head.split()
        if len(words) != 2 or words[0] not in ("set", "map", "chain"):
            raise _Refused(f"the fake does not support {item!r} in a table block")
        kind, name = words
        if kind == "chain":
            chain = self.add_chain(table, name, None)
            for line in _split(block or "", "\n"):
                spec = _base_spec(line)
                if spec is not None:
                    self.set_base(chain, name, spec)
                    continue
                for rule in _split(line, ";"):
                    self.add_rule(table, chain, rule, append=True)
        else:
            self.add_set(table, kind, name, block or "", exclusive=False)

    # --- chains --------------------------------------------------------------------------

    def chain_cmd(self, table: FakeTable, verb: str, name: str, block: str | None) -> None:
        if verb in ("add", "create"):
            if verb == "create" and name in table.chains:
                raise _Refused(f"Could not process rule: File exists (chain {name})")
            chain = self.add_chain(table, name, None)
            if block:
                spec = _base_spec(block)
                if spec is None:
                    raise _Refused(f"syntax error in the chain block {block!r}")
                self.set_base(chain, name, spec)
            return
        chain = table.chains.get(name)
        if chain is None:
            raise _Refused(f"Could not process rule: No such file or directory (chain {name})")
        if verb == "flush":
            chain.rules.clear()
        elif verb == "delete":
            users = [
                f"rule in {other}"
                for other, c in table.chains.items()
                if other != name
                for _, text in c.rules
                if name in _REF_CHAIN.findall(text)
            ] + [
                f"element of {s_name}"
                for s_name, s in table.sets.items()
                for value in s.elements.values()
                if name in _REF_CHAIN.findall(value)
            ]
            if users:
                raise _Refused(
                    f"Could not process rule: Device or resource busy (chain {name}: {users[0]})"
                )
            del table.chains[name]
        else:
            raise _Refused(f"the fake does not support {verb} chain")

    def add_chain(self, table: FakeTable, name: str, base: str | None) -> FakeChain:
        if not _WORD.fullmatch(name):
            raise _Refused(f"syntax error: chain name {name!r}")
        chain = table.chains.get(name)
        if chain is None:
            chain = table.chains[name] = FakeChain(base, handle=table.next_handle())
        return chain

    def set_base(self, chain: FakeChain, name: str, spec: str) -> None:
        if chain.base is not None and chain.base != spec:
            raise _Refused(f"Could not process rule: Operation not supported (chain {name})")
        if chain.base is None and chain.rules:
            raise _Refused(f"Could not process rule: File exists (chain {name})")
        chain.base = spec

    # --- sets and maps -------------------------------------------------------------------

    def set_cmd(self, table: FakeTable, verb: str, kind: str, name: str, block: str | None) -> None:
        if verb in ("add", "create"):
            if block is None:
                raise _Refused(f"syntax error: {kind} {name} needs a {{ type ...; }} block")
            self.add_set(table, kind, name, block, exclusive=verb == "create")
            return
        s = self.get_set(table, name, kind)
        if verb == "flush":
            s.elements.clear()
        elif verb == "delete":
            for chain_name, chain in table.chains.items():
                for _, text in chain.rules:
                    if name in _REF_SET.findall(text):
                        raise _Refused(
                            f"Could not process rule: Device or resource busy ({kind} {name} "
                            f"is used by a rule in {chain_name})"
                        )
            del table.sets[name]
        else:
            raise _Refused(f"the fake does not support {verb} {kind}")

    def get_set(self, table: FakeTable, name: str, kind: str | None = None) -> FakeSet:
        s = table.sets.get(name)
        if s is None or kind is not None and s.kind != kind:
            raise _Refused(
                f"Could not process rule: No such file or directory ({kind or 'set'} {name})"
            )
        return s

    def add_set(self, table: FakeTable, kind: str, name: str, block: str, exclusive: bool) -> None:
        if not _WORD.fullmatch(name):
            raise _Refused(f"syntax error: {kind} name {name!r}")
        type_: str | None = None
        flags: tuple[str, ...] = ()
        elements: str | None = None
        for item in _split(block, "\n;"):
            key, _, rest = item.partition(" ")
            rest = rest.strip()
            if key == "type":
                type_ = _fold(rest)
            elif key == "flags":
                flags = tuple(sorted(f.strip() for f in rest.split(",")))
            elif key == "elements":
                if not rest.startswith("="):
                    raise _Refused(f"syntax error in {item!r}")
                _, inner = _head_and_block(rest[1:].strip())
                elements = inner or ""
            else:
                raise _Refused(f"the fake does not support {key!r} in a {kind}")
        if type_ is None:
            raise _Refused(f"{kind} {name}: a type is required")
        new = FakeSet(kind, type_, flags)
        _check_type(new)
        old = table.sets.get(name)
        if old is not None:
            if exclusive:
                raise _Refused(f"Could not process rule: File exists ({kind} {name})")
            if (old.kind, old.type, old.flags) != (new.kind, new.type, new.flags):
                raise _Refused(f"Could not process rule: File exists ({kind} {name})")
            target = old
        else:
            new.handle = table.next_handle()
            table.sets[name] = target = new
        if elements:
            self.add_elements(table, target, name, elements, exclusive=False)

    def element_cmd(self, table: FakeTable, verb: str, name: str, block: str | None) -> None:
        if block is None:
            raise _Refused("syntax error: element commands need { ... }")
        s = self.get_set(table, name)
        if verb in ("add", "create"):
            self.add_elements(table, s, name, block, exclusive=verb == "create")
        elif verb == "delete":
            for raw in _split(block, ","):
                key = _element_key(s, raw.partition(" : ")[0] if s.kind == "map" else raw)
                if key not in s.elements:
                    raise _Refused(
                        f"Could not process rule: No such file or directory (element {raw} "
                        f"of {name})"
                    )
                del s.elements[key]
        else:
            raise _Refused(f"the fake does not support {verb} element")

    def add_elements(
        self, table: FakeTable, s: FakeSet, name: str, block: str, exclusive: bool
    ) -> None:
        for raw in _split(block, ","):
            if s.kind == "map":
                key_text, sep, value_text = raw.partition(" : ")
                if not sep:
                    raise _Refused(f"map {name}: element {raw!r} needs a value")
                value = _map_value(table, s, value_text)
            else:
                key_text, value = raw, ""
            key = _element_key(s, key_text)
            before = s.elements.get(key)
            if before is not None and (exclusive or before != value):
                raise _Refused(f"Could not process rule: File exists (element {raw} of {name})")
            if "interval" in s.flags and _overlapping(s, key) is not None:
                raise _Refused(f"Error: interval overlaps with an existing one ({raw} in {name})")
            s.elements[key] = value

    # --- rules ---------------------------------------------------------------------------

    def rule_cmd(self, verb: str, statement: str) -> str:
        words = statement.split(None, 5)
        if len(words) < 5:
            raise _Refused(f"syntax error in {statement!r}")
        _, _, family, tname, chain_name, *rest = words
        table = self.lookup(family, tname)
        chain = table.chains.get(chain_name)
        if chain is None:
            raise _Refused(
                f"Could not process rule: No such file or directory (chain {chain_name})"
            )
        text = rest[0] if rest else ""
        if verb == "delete":
            found = re.fullmatch(r"handle\s+(\d+)", text.strip())
            if not found:
                raise _Refused("the fake deletes rules by handle only")
            handle = int(found.group(1))
            kept = [(h, t) for h, t in chain.rules if h != handle]
            if len(kept) == len(chain.rules):
                raise _Refused(
                    f"Could not process rule: No such file or directory (handle {handle})"
                )
            chain.rules[:] = kept
            return ""
        if verb not in ("add", "insert"):
            raise _Refused(f"the fake does not support {verb} rule")
        self.add_rule(table, chain, text, append=verb == "add")
        return ""

    def add_rule(self, table: FakeTable, chain: FakeChain, text: str, append: bool) -> None:
        text = _fold(text)
        if not text:
            raise _Refused("syntax error: an empty rule")
        if _brace(text) >= 0:
            raise _Refused("the fake does not support anonymous sets or maps in rules")
        for ref in _REF_SET.findall(text):
            if ref not in table.sets:
                raise _Refused(f"Error: No such file or directory; did you mean set {ref}?")
        for ref in _REF_CHAIN.findall(text):
            target = table.chains.get(ref)
            if target is None:
                raise _Refused(f"Could not process rule: No such file or directory (chain {ref})")
            if target.base is not None:
                raise _Refused(f"Could not process rule: Operation not supported (jump to {ref})")
        entry = (table.next_handle(), text)
        if append:
            chain.rules.append(entry)
        else:
            chain.rules.insert(0, entry)

    def list(self, words: list[str]) -> str:
        if len(words) == 3 and words[0] == "table":
            self.lookup(words[1], words[2])
            fake = FakeNft()
            fake.tables = self.tables
            return fake.dump(f"{words[1]} {words[2]}")
        if words == ["tables"]:
            return "".join(f"table {f} {n}\n" for f, n in sorted(self.tables))
        raise _Refused(f"the fake does not support list {' '.join(words)}")


def _base_spec(text: str) -> str | None:
    """The canonical spec of a base chain (``type .. hook .. priority ..; policy ..;``), or
    None if ``text`` is not one."""
    items = _split(text, ";\n")
    if not items or not items[0].startswith("type "):
        return None
    found = re.fullmatch(r"type (\w+) hook (\w+)(?: device \S+)? priority (.+)", _fold(items[0]))
    if not found:
        raise _Refused(f"syntax error in the chain spec {text!r}")
    kind, hook, prio = found.groups()
    prio = prio.strip()
    named = re.fullmatch(r"(\w+)(?:\s*([+-])\s*(\d+))?", prio)
    if named and named.group(1) in _PRIORITIES:
        value = _PRIORITIES[named.group(1)]
        if named.group(2):
            value += int(named.group(3)) * (1 if named.group(2) == "+" else -1)
    else:
        try:
            value = int(prio)
        except ValueError:
            raise _Refused(f"unknown priority {prio!r}") from None
    policy = "accept"
    for item in items[1:]:
        found = re.fullmatch(r"policy (accept|drop)", _fold(item))
        if not found:
            raise _Refused(f"the fake does not support {item!r} in a base chain")
        policy = found.group(1)
    return f"type {kind} hook {hook} priority {value}; policy {policy};"


def _check_type(s: FakeSet) -> None:
    for t in s.key_types:
        if t not in _KEY_TYPES:
            raise _Refused(f"the fake does not support the type {t!r}")
    if s.kind == "map":
        if s.value_type != "verdict":
            raise _Refused(f"the fake supports verdict maps only, not {s.type!r}")
    elif s.value_type is not None:
        raise _Refused(f"a set has no value type ({s.type!r}): did you mean a map?")
    if set(s.flags) - {"interval", "constant", "timeout", "dynamic"}:
        raise _Refused(f"unknown set flags {s.flags}")
    if "interval" in s.flags and (s.kind != "set" or tuple(s.key_types) not in _INTERVAL_TYPES):
        raise _Refused("the fake supports interval sets of one address type only")


_INTERVAL_TYPES = (("ipv4_addr",), ("ipv6_addr",))


def _interval_key(s: FakeSet, text: str) -> str:
    """A prefix of an interval set, canonical (a /32 or /128 as the bare address)."""
    version = 4 if s.key_types[0] == "ipv4_addr" else 6
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise _Refused(f"Error: {text!r} is not a {s.key_types[0]} prefix") from None
    if net.version != version:
        raise _Refused(f"Error: datatype mismatch: {text!r} is not a {s.key_types[0]}")
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def _overlapping(s: FakeSet, key: str) -> str | None:
    new = ipaddress.ip_network(key)
    for other in s.elements:
        if other != key and ipaddress.ip_network(other).overlaps(new):
            return other
    return None


def _element_key(s: FakeSet, text: str) -> str:
    if "interval" in s.flags:
        return _interval_key(s, text)
    parts = [p.strip() for p in _split_concat(text)]
    types = s.key_types
    if len(parts) != len(types):
        raise _Refused(f"Error: datatype mismatch: {text!r} is not a {s.type.split(' : ')[0]}")
    return " . ".join(_component(t, p) for t, p in zip(types, parts, strict=True))


def _split_concat(text: str) -> list[str]:
    """``"a" . 1.2.3.4`` -> the two parts (a ``.`` separator has spaces around it)."""
    out: list[str] = []
    quoted = False
    current: list[str] = []
    index = 0
    while index < len(text):
        ch = text[index]
        if ch == '"':
            quoted = not quoted
        if not quoted and text.startswith(" . ", index):
            out.append("".join(current))
            current = []
            index += 3
            continue
        current.append(ch)
        index += 1
    out.append("".join(current))
    return out


def _component(type_: str, text: str) -> str:
    try:
        if type_ == "ipv4_addr":
            return str(ipaddress.IPv4Address(text))
        if type_ == "ipv6_addr":
            return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise _Refused(f"Error: Could not resolve hostname: {text!r} is not a {type_}") from None
    if type_ == "ifname":
        if text.startswith('"'):
            if len(text) < 2 or not text.endswith('"'):
                raise _Refused(f"syntax error: unterminated string {text!r}")
            name = text[1:-1]
        else:
            name = text
        if not name or len(name) > 15 or '"' in name:
            raise _Refused(f"Error: {text!r} is not an interface name (at most 15 bytes)")
        return f'"{name}"'
    if type_ in ("inet_service", "inet_proto", "mark"):
        if not text.isdigit():
            raise _Refused(f"the fake takes numbers only for {type_}, not {text!r}")
        return str(int(text))
    raise _Refused(f"the fake does not support the type {type_!r}")


def _map_value(table: FakeTable, s: FakeSet, text: str) -> str:
    value = _fold(text)
    if value in _VERDICTS:
        return value
    found = re.fullmatch(r"(jump|goto) ([A-Za-z0-9_-]+)", value)
    if not found:
        raise _Refused(f"Error: {value!r} is not a verdict")
    target = table.chains.get(found.group(2))
    if target is None:
        raise _Refused(
            f"Could not process rule: No such file or directory (chain {found.group(2)})"
        )
    if target.base is not None:
        raise _Refused(f"Could not process rule: Operation not supported (jump to {value})")
    return value
