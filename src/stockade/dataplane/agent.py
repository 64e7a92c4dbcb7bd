"""The agent: follows the control plane and enforces one host's groups.

On start (and after any error) it fetches the host's whole snapshot
(``/_stockade/v1/hosts/{host}/state``) and replaces the table. Then it long-polls the same
endpoint with ``?since=<revision>&wait=``: the answer is only what changed (the current
record of every touched group and interface, and what is gone), which it merges into its
:class:`View`; when the view then lacks a group it needs (an interface joined a group new
to this host, a rule names a new group) it fetches that group and its members
(``?groups=``). :class:`Dataplane` applies the difference in one transaction. It reports the
revision it applied, so ``stockade status`` can show each host's lag.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from stockade.dataplane.nft import Dataplane, Executor, Nft
from stockade.model import Group, Interface, Rule, State

log = logging.getLogger(__name__)

MAX_FILL_ROUNDS = 4  # fetches of missing groups per change before a full resync


def _group(g: dict[str, Any]) -> Group:
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
                rule_id=r.get("id", ""),
                description=r.get("description", ""),
            )
            for r in g["rules"]
        ),
    )


def _interface(i: dict[str, Any]) -> Interface:
    return Interface(
        id=i["id"],
        instance_id=i["instance_id"],
        host=i["host"],
        ifname=i["ifname"],
        private_ipv4=tuple(ipaddress.ip_address(a) for a in i["private_ipv4"]),
        private_ipv6=tuple(ipaddress.ip_address(a) for a in i.get("private_ipv6", ())),
        group_ids=tuple(i["group_ids"]),
    )


def state_from_snapshot(data: dict[str, Any]) -> State:
    return State.of(map(_group, data["groups"]), map(_interface, data["interfaces"]))


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

    def load(self, data: dict[str, Any]) -> None:
        """Replace everything with a full snapshot."""
        self.groups = {g.id: g for g in map(_group, data["groups"])}
        self.interfaces = {i.id: i for i in map(_interface, data["interfaces"])}
        self.complete = set(self.groups)
        self.revision = data["revision"]

    def merge(self, data: dict[str, Any], *, fill: bool = False) -> None:
        """Apply a delta (or, with ``fill``, groups fetched with all their members)."""
        for gid in data.get("deleted_groups", ()):
            self.groups.pop(gid, None)
            self.complete.discard(gid)
        for g in data["groups"]:
            if fill or g["id"] in self.complete:
                self.groups[g["id"]] = _group(g)
                self.complete.add(g["id"])
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
        return State(self.groups, self.interfaces)


@dataclass
class AgentStatus:
    host: str
    revision: int = -1
    server_revision: int = -1
    last_sync_ms: float = 0.0
    full_syncs: int = 0
    incremental_syncs: int = 0
    error: str | None = None
    interfaces: int = 0
    updated: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "revision": self.revision,
            "server_revision": self.server_revision,
            "lag": max(self.server_revision - self.revision, 0),
            "last_sync_ms": round(self.last_sync_ms, 3),
            "full_syncs": self.full_syncs,
            "incremental_syncs": self.incremental_syncs,
            "interfaces": self.interfaces,
            "error": self.error,
        }


class Agent:
    """Keeps one host's ``table inet stockade`` equal to what the control plane says."""

    def __init__(
        self,
        server: str,
        token: str,
        host: str,
        *,
        netns: str | None = None,
        transport: httpx.BaseTransport | None = None,
        executor: Executor | None = None,
    ) -> None:
        """``executor``: what runs nft command buffers, if not libnftables in ``netns``
        (a :class:`RecordingNft` lets tests follow the control plane without a kernel)."""
        self.host = host
        self.http = httpx.Client(
            base_url=server,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, read=40.0),
            transport=transport,
        )
        self.nft: Executor = executor if executor is not None else Nft(netns)
        self.dataplane = Dataplane(host, self.nft)
        self.status = AgentStatus(host)
        self.view = View(host)
        self.applied = threading.Condition()
        self._stop = threading.Event()
        self.poll_seconds = 20.0  # the long poll's wait (reported, for `stockade status`)

    # --- talking to the control plane ----------------------------------------------------

    def fetch(
        self, since: int | None = None, wait: float = 0.0, groups: Iterable[str] = ()
    ) -> dict[str, Any]:
        """The host's snapshot; with ``since``, what changed after it (long-polling up to
        ``wait`` s); with ``groups``, those groups and their members."""
        params: dict[str, Any] = {}
        if since is not None:
            params["since"] = since
            if wait:
                params["wait"] = wait
        if groups:
            params["groups"] = ",".join(sorted(groups))
        resp = self.http.get(f"/_stockade/v1/hosts/{self.host}/state", params=params)
        resp.raise_for_status()
        return resp.json()

    def report(self) -> None:
        try:
            body = {**self.status.as_json(), "poll_seconds": self.poll_seconds}
            self.http.post(f"/_stockade/v1/hosts/{self.host}/status", json=body)
        except httpx.HTTPError as exc:
            log.debug("status report failed: %s", exc)

    # --- enforcing -----------------------------------------------------------------------

    def sync_once(self, *, full: bool = False) -> int:
        """Bring the view and the table up to date; returns the revision now enforced.

        ``full``: fetch the whole snapshot and replace the table; otherwise fetch only
        what changed since the view's revision and apply the difference."""
        if full or self.view.revision < 0:
            self.view.load(self.fetch())
        else:
            self.absorb(self.fetch(since=self.view.revision))
        return self.enforce(full=full)

    def absorb(self, data: dict[str, Any]) -> None:
        """Merge an answer of the state endpoint into the view, filling in missing groups."""
        if data.get("full", True):
            self.view.load(data)
            return
        self.view.merge(data)
        for _ in range(MAX_FILL_ROUNDS):
            missing = self.view.missing()
            if not missing:
                return
            self.view.merge(self.fetch(groups=missing), fill=True)
        self.view.load(self.fetch())  # a chain of new references: start from a snapshot

    def enforce(self, *, full: bool = False) -> int:
        """Apply the view to the table."""
        state = self.view.state()
        report = self.dataplane.full_sync(state) if full else self.dataplane.sync(state)
        st = self.status
        st.last_sync_ms = report.seconds * 1000
        st.interfaces = sum(1 for i in state.interfaces.values() if i.host == self.host)
        if report.full:
            st.full_syncs += 1
            gc.collect()
            gc.freeze()  # the big, long-lived view: keep it out of later collections
        else:
            st.incremental_syncs += 1
        st.error = None
        st.updated = time.time()
        revision = self.view.revision
        with self.applied:
            st.revision = max(st.revision, revision)
            st.server_revision = max(st.server_revision, revision)
            self.applied.notify_all()
        return revision

    def wait_applied(self, revision: int, timeout: float) -> bool:
        """Block until the agent enforces ``revision`` (for callers in this process)."""
        with self.applied:
            return self.applied.wait_for(lambda: self.status.revision >= revision, timeout)

    def run(self, poll_wait: float = 20.0) -> None:
        """Follow the control plane until :meth:`stop`."""
        self.poll_seconds = poll_wait
        full = True
        while not self._stop.is_set():
            try:
                if full:
                    self.sync_once(full=True)
                    full = False
                    self.report()
                    continue
                data = self.fetch(since=self.view.revision, wait=poll_wait)
                self.status.server_revision = max(self.status.server_revision, data["revision"])
                if data.get("full", True) or data["revision"] > self.view.revision:
                    self.absorb(data)
                    self.enforce()
                # after every poll, changes or not: `stockade status` tells an idle agent
                # (reports every poll_wait s) from a stuck or dead one
                self.report()
            except Exception as exc:  # noqa: BLE001 - the agent must keep going
                if self._stop.is_set():
                    break
                self.status.error = f"{type(exc).__name__}: {exc}"
                log.warning("agent %s: %s; full resync", self.host, self.status.error)
                self.report()
                full = True
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()

    def uninstall(self) -> None:
        self.dataplane.uninstall()

    def close(self) -> None:
        self.stop()
        self.http.close()
        if isinstance(self.nft, Nft):
            self.nft.close()
