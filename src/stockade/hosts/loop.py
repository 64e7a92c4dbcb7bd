"""The level-triggered claim/reconcile/report loop of a host, over a small runtime protocol.

A host (a sandbox host running instances as namespaces, a real machine, later containers
or VMs) is a :class:`Runtime`: it can build an instance from its placement, tear one down,
and say what it runs. :class:`HostLoop` does the rest, the same for every kind: after
every change in the control plane's log it claims pending instances, compares what is
placed on the host (``/hosts/{host}/instances``) with what the runtime runs, builds what is
missing, tears down what is stopping or terminating (or no longer placed here), and
reports each instance's state. A new kind of host is a new runtime, not a new loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from typing import Any, Protocol

from stockade.hosts.client import HostClient

log = logging.getLogger(__name__)

LIVE = ("pending", "running")
ENDING = {"stopping": "stopped", "shutting-down": "terminated"}


class Runtime(Protocol):
    """What runs a host's instances (the loop calls it holding :attr:`HostLoop.lock`)."""

    def running(self) -> Collection[str]:
        """The ids of the instances it runs now."""
        ...

    def build(self, placement: dict[str, Any]) -> None:
        """Start an instance placed here that it does not run yet."""
        ...

    def update(self, placement: dict[str, Any]) -> None:
        """The current placement of an instance it runs."""
        ...

    def teardown(self, instance_id: str, *, terminated: bool) -> None:
        """Stop running an instance (``terminated``: its state goes too)."""
        ...

    def changed(self, change: dict[str, Any]) -> None:
        """A change of the log about an instance on this host (a reboot, ...)."""
        ...


class HostLoop:
    """Claims, reconciles and reports for one host until :meth:`stop`."""

    def __init__(
        self,
        client: HostClient,
        host: str,
        runtime: Runtime,
        *,
        claim_limit: int = 50,
        lock: threading.Lock | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.client = client
        self.host = host
        self.runtime = runtime
        self.claim_limit = claim_limit
        self.lock = lock if lock is not None else threading.Lock()
        self._stop = stop if stop is not None else threading.Event()
        self.revision = 0  # of the change log, as far as this loop has read it

    def reconcile(self) -> None:
        claim = self.client.post(
            f"/_stockade/v1/hosts/{self.host}/claim", json={"limit": self.claim_limit}
        )
        claim.raise_for_status()
        placed = self.client.get(f"/_stockade/v1/hosts/{self.host}/instances")
        placed.raise_for_status()
        wanted = {p["instance_id"]: p for p in placed.json()["instances"]}
        with self.lock:
            for iid, p in wanted.items():
                state = p["state"]
                if state in LIVE:
                    if iid not in self.runtime.running():
                        self.runtime.build(p)
                    else:
                        self.runtime.update(p)
                    if state == "pending":
                        self.report(iid, "running")
                elif state in ENDING:
                    if iid in self.runtime.running():
                        self.runtime.teardown(iid, terminated=state == "shutting-down")
                    self.report(iid, ENDING[state])
            for iid in [i for i in self.runtime.running() if i not in wanted]:
                self.runtime.teardown(iid, terminated=False)

    def report(self, instance_id: str, state: str) -> None:
        r = self.client.post(
            f"/_stockade/v1/instances/{instance_id}/state",
            json={"state": state, "host": self.host},
        )
        if r.status_code >= 400:
            log.warning("%s: report %s %s: %s", self.host, instance_id, state, r.text)

    def run(self, wait: float = 10.0) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
                resp = self.client.get(
                    "/_stockade/v1/changes",
                    params={"since": self.revision, "wait": wait, "limit": 1000},
                )
                resp.raise_for_status()
                data = resp.json()
                for change in data["changes"]:
                    if self._mine(change):
                        with self.lock:
                            self.runtime.changed(change)
                self.revision = max(self.revision, int(data["revision"]))
            except Exception as exc:  # noqa: BLE001 - keep the host alive
                if self._stop.is_set():
                    break
                log.warning("%s: %s", self.host, exc)
                self._stop.wait(1.0)

    def _mine(self, change: dict[str, Any]) -> bool:
        data = change.get("data") or {}
        return change.get("kind", "").startswith("instance.") and data.get("host") == self.host

    def stop(self) -> None:
        self._stop.set()
