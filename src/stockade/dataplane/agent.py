"""The agent: follows the control plane's change log and enforces one host's groups.

It long-polls ``/_stockade/v1/changes``; when anything changed it fetches the host's
snapshot (``/_stockade/v1/hosts/{host}/state``) and lets :class:`Dataplane` apply the
difference in one transaction. On start (and after any error) it does a full sync, so a
restarted agent rebuilds everything from a snapshot. It reports the revision it applied,
so ``stockade status`` can show each host's lag.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from stockade.dataplane.nft import Dataplane, Nft
from stockade.model import Group, Interface, Rule, State

log = logging.getLogger(__name__)


def state_from_snapshot(data: dict[str, Any]) -> State:
    groups = [
        Group(
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
        for g in data["groups"]
    ]
    interfaces = [
        Interface(
            id=i["id"],
            instance_id=i["instance_id"],
            host=i["host"],
            ifname=i["ifname"],
            private_ipv4=tuple(ipaddress.ip_address(a) for a in i["private_ipv4"]),
            private_ipv6=tuple(ipaddress.ip_address(a) for a in i.get("private_ipv6", ())),
            group_ids=tuple(i["group_ids"]),
        )
        for i in data["interfaces"]
    ]
    return State.of(groups, interfaces)


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
    ) -> None:
        self.host = host
        self.http = httpx.Client(
            base_url=server,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, read=40.0),
            transport=transport,
        )
        self.nft = Nft(netns)
        self.dataplane = Dataplane(host, self.nft)
        self.status = AgentStatus(host)
        self.applied = threading.Condition()
        self._stop = threading.Event()

    # --- talking to the control plane ----------------------------------------------------

    def fetch(self) -> dict[str, Any]:
        resp = self.http.get(f"/_stockade/v1/hosts/{self.host}/state")
        resp.raise_for_status()
        return resp.json()

    def wait_changes(self, since: int, wait: float) -> int:
        resp = self.http.get(
            "/_stockade/v1/changes", params={"since": since, "wait": wait, "limit": 1}
        )
        resp.raise_for_status()
        return int(resp.json()["revision"])

    def report(self) -> None:
        try:
            self.http.post(f"/_stockade/v1/hosts/{self.host}/status", json=self.status.as_json())
        except httpx.HTTPError as exc:
            log.debug("status report failed: %s", exc)

    # --- enforcing -----------------------------------------------------------------------

    def sync_once(self, *, full: bool = False) -> int:
        """Fetch the snapshot and apply it; returns the revision now enforced."""
        data = self.fetch()
        state = state_from_snapshot(data)
        report = self.dataplane.full_sync(state) if full else self.dataplane.sync(state)
        st = self.status
        st.last_sync_ms = report.seconds * 1000
        st.interfaces = len(state.on_host(self.host))
        if report.full:
            st.full_syncs += 1
        else:
            st.incremental_syncs += 1
        st.error = None
        st.updated = time.time()
        with self.applied:
            st.revision = max(st.revision, data["revision"])
            st.server_revision = max(st.server_revision, data["revision"])
            self.applied.notify_all()
        return data["revision"]

    def wait_applied(self, revision: int, timeout: float) -> bool:
        """Block until the agent enforces ``revision`` (for callers in this process)."""
        with self.applied:
            return self.applied.wait_for(lambda: self.status.revision >= revision, timeout)

    def run(self, poll_wait: float = 20.0) -> None:
        """Follow the change log until :meth:`stop`."""
        full = True
        while not self._stop.is_set():
            try:
                if full:
                    self.sync_once(full=True)
                    full = False
                    self.report()
                newest = self.wait_changes(self.status.revision, poll_wait)
                self.status.server_revision = newest
                if newest > self.status.revision:
                    self.sync_once()
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
        self.nft.close()
