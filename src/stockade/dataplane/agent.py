"""The agent: follows the control plane and enforces one host's groups.

On start (and after any error) it fetches the host's whole snapshot
(``/_stockade/v1/hosts/{host}/state``) and replaces the table. Then it long-polls the same
endpoint with ``?since=<revision>&wait=``: the answer is only what changed (the current
record of every touched group and interface, and what is gone), which it merges into its
:class:`View`; when the view then lacks a group it needs (an interface joined a group new
to this host, a rule names a new group) it fetches that group and its members
(``?groups=``). :class:`Dataplane` applies the difference in one transaction. It reports the
revision it applied, so ``stockade status`` can show each host's lag.

Every ``resync_interval`` seconds (Felix's periodic refresh) it replaces the whole table
from its view, so a table someone flushed or edited in the kernel is restored even when
no change comes. A failure is retried after an exponential backoff with full jitter
(:mod:`stockade.dataplane.backoff`), reset by the next success; a failed long poll only
resumes from the view's revision, any other failure (a bad record, the kernel refusing a
transaction) starts again from a full snapshot. The report says what failed, its kind
and how many attempts in a row have failed.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from stockade.dataplane.backoff import TRANSPORT, Backoff, classify
from stockade.dataplane.compile import AUDIT_PREFIX, FROM_INST, QUALIFIED, TO_INST, HostMode
from stockade.dataplane.nft import Dataplane, Executor, Nft
from stockade.hosts.client import HostClient

# the wire format lives in stockade.hosts.wire; these names stay importable from here
from stockade.hosts.wire import (  # noqa: F401
    View,
    _group,
    _group_of,
    _interface,
    _interface_of,
    _prefix_list,
    decoding,
    state_from_snapshot,
)
from stockade.model import State

log = logging.getLogger(__name__)

MAX_FILL_ROUNDS = 4  # fetches of missing groups per change before a full resync
DEFAULT_RESYNC_INTERVAL = 300.0  # s between full replacements of the table (0: never)


@dataclass
class AgentStatus:
    """What the agent reports (``stockade status`` shows it).

    ``error``/``error_kind``: the failure being retried now (None once an attempt
    succeeds); ``retries``: failed attempts in a row; ``retry_in_s``: the wait before the
    next one; ``last_error*``: the latest failure, kept after recovery."""

    host: str
    revision: int = -1
    server_revision: int = -1
    last_sync_ms: float = 0.0
    full_syncs: int = 0
    incremental_syncs: int = 0
    periodic_syncs: int = 0
    resync_interval_s: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    retries: int = 0
    retry_in_s: float | None = None
    errors: int = 0
    last_error: str | None = None
    last_error_kind: str | None = None
    last_error_at: float | None = None
    interfaces: int = 0
    updated: float = field(default_factory=time.time)

    def failed(self, exc: BaseException, kind: str, retries: int, delay: float) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self.error = self.last_error = text
        self.error_kind = self.last_error_kind = kind
        self.last_error_at = time.time()
        self.retries = retries
        self.retry_in_s = round(delay, 3)
        self.errors += 1

    def succeeded(self) -> None:
        self.error = self.error_kind = self.retry_in_s = None
        self.retries = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "revision": self.revision,
            "server_revision": self.server_revision,
            "lag": max(self.server_revision - self.revision, 0),
            "last_sync_ms": round(self.last_sync_ms, 3),
            "full_syncs": self.full_syncs,
            "incremental_syncs": self.incremental_syncs,
            "periodic_syncs": self.periodic_syncs,
            "resync_interval_s": self.resync_interval_s,
            "interfaces": self.interfaces,
            "error": self.error,
            "error_kind": self.error_kind,
            "retries": self.retries,
            "retry_in_s": self.retry_in_s,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_error_kind": self.last_error_kind,
            "last_error_at": self.last_error_at,
        }


class Agent:
    """Keeps one host's ``table inet stockade`` equal to what the control plane says."""

    def __init__(
        self,
        server: str | Sequence[str],
        token: str,
        host: str,
        *,
        verify: Any = True,
        mode: HostMode | None = None,
        devices: Mapping[str, str] | None = None,
        netns: str | None = None,
        transport: httpx.BaseTransport | None = None,
        executor: Executor | None = None,
        resync_interval: float = DEFAULT_RESYNC_INTERVAL,
        backoff: Backoff | None = None,
    ) -> None:
        """``server``: one control-plane URL or several (one fleet: it fails over between
        them, :class:`~stockade.hosts.client.HostClient`); ``verify``: httpx's (a CA bundle
        or an ``ssl.SSLContext`` pinning the control plane's CA).
        ``mode``: enforce on this machine itself (input/output hooks, see
        :func:`~stockade.dataplane.compile.host_mode`), not a sandbox host's forward hook;
        ``devices``: interface id -> the machine's device it is enrolled as (``eth0``).
        ``executor``: what runs nft command buffers, if not libnftables in ``netns``
        (:class:`~stockade.dataplane.fake.FakeNft` lets tests follow the control plane
        without a kernel).
        ``resync_interval``: seconds between full replacements of the table from the view
        (repairing drift in the kernel; 0 never). ``backoff``: the wait between failed
        attempts (default 0.5 s doubling to 30 s, full jitter)."""
        if resync_interval < 0:
            raise ValueError("resync_interval must be 0 (never) or a positive number of seconds")
        self.host = host
        self.http = HostClient(server, token, transport=transport, verify=verify)
        self.nft: Executor = executor if executor is not None else Nft(netns)
        self.dataplane = Dataplane(host, self.nft, mode)
        self.mode = mode
        self.devices = dict(devices or {})
        self.status = AgentStatus(host, resync_interval_s=resync_interval)
        self.resync_interval = resync_interval
        self.backoff = backoff if backoff is not None else Backoff()
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
        with decoding("the control plane's answer"):
            data = resp.json()
            if not isinstance(data, dict) or not isinstance(data.get("revision"), int):
                raise ValueError("not a JSON object with a revision")
        return data

    def report(self) -> None:
        try:
            body = {
                **self.status.as_json(),
                "poll_seconds": self.poll_seconds,
                "server": self.http.following,
                "failovers": self.http.failovers,
            }
            if self.mode is not None and self.mode.audit:
                body["would_drop"] = self.would_drop()
            self.http.post(f"/_stockade/v1/hosts/{self.host}/status", json=body)
        except httpx.HTTPError as exc:
            log.debug("status report failed: %s", exc)

    def would_drop(self) -> dict[str, dict[str, int]]:
        """In audit mode: per enrolled device, the packets the groups would have dropped
        so far, inbound and outbound (read off the audit rules' counters)."""
        applied = self.dataplane.applied
        if applied is None:
            return {}
        try:
            listing = self.nft.run(f"list table {QUALIFIED}")
        except Exception as exc:  # noqa: BLE001 - a report without counters, not a failure
            log.debug("reading the audit counters failed: %s", exc)
            return {}
        counts = {
            chain: int(n)
            for n, chain in re.findall(
                rf'packets (\d+) bytes \d+ log prefix "{AUDIT_PREFIX} (\S+) "', listing
            )
        }
        out: dict[str, dict[str, int]] = {}
        for name, direction in ((TO_INST, "in"), (FROM_INST, "out")):
            found = applied.sets.get(name)
            for key, verdict in found.elements.items() if found else ():
                chain = verdict.removeprefix("jump ")
                out.setdefault(key.strip('"'), {})[direction] = counts.get(chain, 0)
        return out

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
        if self.devices:  # a machine's interfaces are its own devices, not veths
            interfaces = dict(state.interfaces)
            for iid, device in self.devices.items():
                if iid in interfaces:
                    interfaces[iid] = dataclasses.replace(interfaces[iid], ifname=device)
            state = State(state.groups, interfaces)
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

    def refresh(self) -> None:
        """Replace the whole table from the view (the periodic resync: repairs a table
        flushed or edited in the kernel)."""
        self.enforce(full=True)
        self.status.periodic_syncs += 1

    def run(self, poll_wait: float = 20.0) -> None:
        """Follow the control plane until :meth:`stop`."""
        self.poll_seconds = poll_wait
        full = True
        interval = self.resync_interval
        next_refresh = time.monotonic() + interval if interval else float("inf")
        while not self._stop.is_set():
            step = "snapshot" if full else "poll"
            try:
                if full:
                    self.sync_once(full=True)
                    full = False
                    next_refresh = time.monotonic() + interval if interval else float("inf")
                    self._succeeded()
                    self.report()
                    continue
                if time.monotonic() >= next_refresh:
                    step = "refresh"
                    self.refresh()
                    next_refresh = time.monotonic() + interval
                    self._succeeded()
                    self.report()
                    continue
                wait = min(poll_wait, max(next_refresh - time.monotonic(), 0.0))
                data = self.fetch(since=self.view.revision, wait=wait)
                step = "apply"
                self.status.server_revision = max(self.status.server_revision, data["revision"])
                changed = data.get("full", True) or data["revision"] > self.view.revision
                if changed:
                    self.absorb(data)
                    self.enforce()
                self._succeeded()
                # after every poll, changes or not: `stockade status` tells an idle agent
                # (reports every poll_wait s) from a stuck or dead one
                self.report()
            except Exception as exc:  # noqa: BLE001 - the agent must keep going
                if self._stop.is_set():
                    break
                kind = classify(exc)
                # a failed long poll changed nothing: resume from the view's revision; any
                # other failure may have left the view or the table half done
                full = full or not (step == "poll" and kind == TRANSPORT)
                delay = self.backoff.next_delay()
                self.status.failed(exc, kind, self.backoff.failures, delay)
                log.warning(
                    "agent %s: %s error (%s attempt failed): %s; %s in %.2f s",
                    self.host,
                    kind,
                    _ordinal(self.backoff.failures),
                    self.status.error,
                    "full resync" if full else "polling again",
                    delay,
                )
                self.report()
                self._stop.wait(delay)

    def _succeeded(self) -> None:
        self.backoff.reset()
        self.status.succeeded()

    def stop(self) -> None:
        self._stop.set()

    def uninstall(self) -> None:
        self.dataplane.uninstall()

    def close(self) -> None:
        self.stop()
        self.http.close()
        if isinstance(self.nft, Nft):
            self.nft.close()


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
