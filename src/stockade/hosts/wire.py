"""The wire format of the agent endpoints and its decoding into :mod:`stockade.model` values.

The control plane (``service/topology.py``) answers JSON records:

- a *group*: ``{"id", "name", "rules": [{"id", "egress", "protocol", "from_port",
  "to_port", "cidr", "ref_group_id", "prefix_list_id", "description"}]}``;
- a *prefix list*: ``{"id", "cidrs": [...]}`` (a managed prefix list rules name);
- an *interface*: ``{"id", "instance_id", "host", "ifname", "private_ipv4": [...],
  "private_ipv6": [...], "public_ipv4", "group_ids": [...], "account_id", "region",
  "vpc_id"}``;
- a *snapshot*: ``{"revision", "full": true, "groups", "interfaces", "prefix_lists"}``; a
  *delta*: ``{"revision", "full": false, "groups", "deleted_groups", "interfaces",
  "gone_interfaces", "prefix_lists", "deleted_prefix_lists"}``;
- a *placement* (``/hosts/{host}/claim`` and ``/instances``): ``{"instance_id", "state",
  "image_id", "user_data", "key_name", "public_key", "interfaces": [{"network_interface_id",
  "private_ip", "subnet_cidr", ...}]}``.

A record that cannot be read raises :class:`~stockade.dataplane.backoff.RecordError`
naming it (:func:`decoding`).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from typing import Any

from stockade.dataplane.backoff import RecordError
from stockade.model import Group, Interface, PrefixList, Rule, State


@contextlib.contextmanager
def decoding(what: str) -> Iterator[None]:
    """Turn a malformed answer or record into a :class:`RecordError` naming ``what``."""
    try:
        yield
    except RecordError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise RecordError(f"cannot decode {what}: {type(exc).__name__}: {detail}") from exc


def _group(g: dict[str, Any]) -> Group:
    with decoding(f"group {g.get('id') if isinstance(g, dict) else g!r}"):
        return _group_of(g)


def _interface(i: dict[str, Any]) -> Interface:
    with decoding(f"interface {i.get('id') if isinstance(i, dict) else i!r}"):
        return _interface_of(i)


def _group_of(g: dict[str, Any]) -> Group:
    return Group(
        id=g["id"],
        name=g.get("name", ""),
        rules=tuple(
            Rule(
                group_id=g["id"],
                egress=r["egress"],
                protocol=r["protocol"],
                from_port=r["from_port"] if r["from_port"] is not None else -1,
                to_port=r["to_port"] if r["to_port"] is not None else -1,
                cidr=ipaddress.ip_network(r["cidr"]) if r.get("cidr") else None,
                ref_group_id=r.get("ref_group_id"),
                prefix_list_id=r.get("prefix_list_id"),
                rule_id=r.get("id", ""),
                description=r.get("description", ""),
            )
            for r in g["rules"]
        ),
    )


def _interface_of(i: dict[str, Any]) -> Interface:
    return Interface(
        id=i["id"],
        instance_id=i["instance_id"],
        host=i["host"],
        ifname=i["ifname"],
        private_ipv4=tuple(ipaddress.ip_address(a) for a in i["private_ipv4"]),
        private_ipv6=tuple(ipaddress.ip_address(a) for a in i.get("private_ipv6", ())),
        group_ids=tuple(i["group_ids"]),
    )


def _prefix_list(p: dict[str, Any]) -> PrefixList:
    with decoding(f"prefix list {p.get('id') if isinstance(p, dict) else p!r}"):
        return PrefixList(p["id"], tuple(ipaddress.ip_network(c) for c in p["cidrs"]))


def state_from_snapshot(data: dict[str, Any]) -> State:
    return State.of(
        map(_group, data["groups"]),
        map(_interface, data["interfaces"]),
        map(_prefix_list, data.get("prefix_lists", ())),
    )


class View:
    """What one host's agent knows: the groups its table needs and their members.

    ``complete`` names the groups whose rules and whole membership the view holds; a delta
    carries every touched interface anywhere, so a complete group stays complete. Other
    hosts' interfaces are kept only while they belong to a complete group.
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self.revision = -1
        self.groups: dict[str, Group] = {}
        self.interfaces: dict[str, Interface] = {}
        self.complete: set[str] = set()
        self.prefix_lists: dict[str, PrefixList] = {}

    def load(self, data: dict[str, Any]) -> None:
        """Replace everything with a full snapshot (a :class:`RecordError` if it is
        malformed; the view is then unchanged)."""
        with decoding("a snapshot"):
            groups = {g.id: g for g in map(_group, data["groups"])}
            interfaces = {i.id: i for i in map(_interface, data["interfaces"])}
            lists = {p.id: p for p in map(_prefix_list, data.get("prefix_lists", ()))}
            revision = int(data["revision"])
        self.groups, self.interfaces, self.prefix_lists = groups, interfaces, lists
        self.complete = set(self.groups)
        self.revision = revision

    def merge(self, data: dict[str, Any], *, fill: bool = False) -> None:
        """Apply a delta (or, with ``fill``, groups fetched with all their members).

        A malformed delta raises :class:`RecordError`, possibly after part of it was
        merged: the caller must then start again from a snapshot."""
        with decoding("a delta"):
            self._merge(data, fill)

    def _merge(self, data: dict[str, Any], fill: bool) -> None:
        for gid in data.get("deleted_groups", ()):
            self.groups.pop(gid, None)
            self.complete.discard(gid)
        for g in data["groups"]:
            if fill or g["id"] in self.complete:
                self.groups[g["id"]] = _group(g)
                self.complete.add(g["id"])
        for pid in data.get("deleted_prefix_lists", ()):
            self.prefix_lists.pop(pid, None)
        for raw in data.get("prefix_lists", ()):
            self.prefix_lists[raw["id"]] = _prefix_list(raw)
        for iid in data.get("gone_interfaces", ()):
            self.interfaces.pop(iid, None)
        for raw in data["interfaces"]:
            iface = _interface(raw)
            if iface.host == self.host or self.complete.intersection(iface.group_ids):
                self.interfaces[iface.id] = iface
            else:
                self.interfaces.pop(iface.id, None)
        if not fill:
            self.revision = max(self.revision, data["revision"])

    def needed(self) -> set[str]:
        """The groups this host's table depends on: its interfaces' groups and the groups
        their rules name."""
        own = {g for i in self.interfaces.values() if i.host == self.host for g in i.group_ids}
        refs = {
            r.ref_group_id
            for gid in own
            if (group := self.groups.get(gid)) is not None
            for r in group.rules
            if r.ref_group_id is not None
        }
        return own | refs

    def missing(self) -> set[str]:
        return self.needed() - self.complete

    def state(self) -> State:
        return State(self.groups, self.interfaces, self.prefix_lists)
