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

import contextlib
import gc
import ipaddress
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from stockade.dataplane.backoff import TRANSPORT, Backoff, RecordError, classify
from stockade.dataplane.nft import Dataplane, Executor, Nft
from stockade.model import Group, Interface, PrefixList, Rule, State

log = logging.getLogger(__name__)

MAX_FILL_ROUNDS = 4  # fetches of missing groups per change before a full resync
DEFAULT_RESYNC_INTERVAL = 300.0  # s between full replacements of the table (0: never)


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
        server: str,
        token: str,
        host: str,
        *,
        netns: str | None = None,
        transport: httpx.BaseTransport | None = None,
        executor: Executor | None = None,
        resync_interval: float = DEFAULT_RESYNC_INTERVAL,
        backoff: Backoff | None = None,
    ) -> None:
        """``executor``: what runs nft command buffers, if not libnftables in ``netns``
        (:class:`~stockade.dataplane.fake.FakeNft` lets tests follow the control plane
        without a kernel).
        ``resync_interval``: seconds between full replacements of the table from the view
        (repairing drift in the kernel; 0 never). ``backoff``: the wait between failed
        attempts (default 0.5 s doubling to 30 s, full jitter)."""
        if resync_interval < 0:
            raise ValueError("resync_interval must be 0 (never) or a positive number of seconds")
        self.host = host
        self.http = httpx.Client(
            base_url=server,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, read=40.0),
            transport=transport,
        )
        self.nft: Executor = executor if executor is not None else Nft(netns)
        self.dataplane = Dataplane(host, self.nft)
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
