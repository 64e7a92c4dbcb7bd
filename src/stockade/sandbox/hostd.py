"""One sandbox host: claims instances, runs them as namespaces, and enforces their groups.

Level-triggered: after every change in the control plane's log, the host compares what is
placed on it (``/hosts/{host}/instances``) with the namespaces it runs, builds what is
missing, tears down what is stopping or terminating, and reports each instance's state.
A new instance's host-side link gets its route only after the agent has applied the
revision that includes it, so an instance is never reachable before its groups are
enforced. The host also serves EC2's resolver (169.254.169.253) and metadata service
(169.254.169.254) to its instances.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from stockade.dataplane.agent import DEFAULT_RESYNC_INTERVAL, Agent
from stockade.dataplane.netns import NetnsWorker
from stockade.sandbox import net
from stockade.service.topology import ifname_for

log = logging.getLogger(__name__)

GATEWAY = "169.254.1.1"
RESOLVER = "169.254.169.253"
METADATA = "169.254.169.254"


@dataclass
class Running:
    """An instance this host runs."""

    instance_id: str
    netns: str
    ifname: str
    private_ip: str
    placement: dict[str, Any]
    procs: list[subprocess.Popen] = field(default_factory=list)


def instance_netns(prefix: str, instance_id: str) -> str:
    return f"{prefix}i-{instance_id.removeprefix('i-')}"


def decode_user_data(raw: str | None) -> bytes | None:
    """UserData arrives base64-encoded (boto3 and the CLI encode it); tolerate plain text."""
    if not raw:
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw.encode()


class HostDaemon:
    def __init__(
        self,
        *,
        index: int,
        prefix: str,
        server: str,
        token: str,
        uplink_gateway: str,
        logs: Path,
        resolver: Any = None,
        metadata: Any = None,
        resync_interval: float = DEFAULT_RESYNC_INTERVAL,
    ) -> None:
        """``resync_interval``: seconds between the agent's full rewrites of the host's
        table (repairing drift in the kernel; 0 never)."""
        self.index = index
        self.name = f"host-{index}"
        self.prefix = prefix
        self.netns = f"{prefix}h{index}"
        self.uplink_gateway = uplink_gateway
        self.logs = logs
        self.http = httpx.Client(
            base_url=server,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, read=40.0),
        )
        self.agent = Agent(
            server, token, self.name, netns=self.netns, resync_interval=resync_interval
        )
        self.running: dict[str, Running] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._resolver_factory = resolver
        self._metadata_factory = metadata
        self._servers: list[Any] = []
        self.revision = 0

    # --- set-up --------------------------------------------------------------------------

    def start(self) -> None:
        for address in (RESOLVER, METADATA):
            _add_local(self.netns, address)
        with NetnsWorker(self.netns) as worker:
            if self._resolver_factory is not None:
                udp = worker.call(bound_socket, socket.SOCK_DGRAM, RESOLVER, 53)
                tcp = worker.call(bound_socket, socket.SOCK_STREAM, RESOLVER, 53)
                self._servers.append(self._resolver_factory(udp, tcp).start())
            if self._metadata_factory is not None:
                sock = worker.call(bound_socket, socket.SOCK_STREAM, METADATA, 80)
                self._servers.append(self._metadata_factory(self, sock).start())
        for target in (self.agent.run, self._loop):
            t = threading.Thread(target=target, name=f"{self.name}-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    def signal_stop(self) -> None:
        self._stop.set()
        self.agent.stop()

    def stop(self) -> None:
        self.signal_stop()
        for srv in self._servers:
            srv.close()
        with self.lock:
            for inst in list(self.running.values()):
                self._teardown(inst)
            self.running.clear()
        for t in self._threads:
            t.join(timeout=45)
        self.agent.close()
        self.http.close()

    # --- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
                resp = self.http.get(
                    "/_stockade/v1/changes",
                    params={"since": self.revision, "wait": 10, "limit": 1000},
                )
                resp.raise_for_status()
                data = resp.json()
                for change in data["changes"]:
                    self._on_change(change)
                self.revision = max(self.revision, int(data["revision"]))
            except Exception as exc:  # noqa: BLE001 - keep the host alive
                if self._stop.is_set():
                    break
                log.warning("%s: %s", self.name, exc)
                self._stop.wait(1.0)

    def _on_change(self, change: dict[str, Any]) -> None:
        data = change.get("data") or {}
        if change["kind"] != "instance.state" or data.get("host") != self.name:
            return
        if data.get("previous") == "running" and data.get("state") == "running":
            with self.lock:
                inst = self.running.get(change["resource_id"])
                if inst is not None:
                    self._kill(inst)
                    self._boot(inst)

    def reconcile(self) -> None:
        claim = self.http.post(f"/_stockade/v1/hosts/{self.name}/claim", json={"limit": 50})
        claim.raise_for_status()
        placed = self.http.get(f"/_stockade/v1/hosts/{self.name}/instances")
        placed.raise_for_status()
        wanted = {p["instance_id"]: p for p in placed.json()["instances"]}
        with self.lock:
            for iid, p in wanted.items():
                state = p["state"]
                if state in ("pending", "running"):
                    if iid not in self.running:
                        self._build(p)
                    else:
                        self.running[iid].placement = p
                    if state == "pending":
                        self._report(iid, "running")
                elif state in ("stopping", "shutting-down"):
                    inst = self.running.pop(iid, None)
                    if inst is not None:
                        self._teardown(inst)
                    self._report(iid, "stopped" if state == "stopping" else "terminated")
            for iid in [i for i in self.running if i not in wanted]:
                self._teardown(self.running.pop(iid))

    def _report(self, instance_id: str, state: str) -> None:
        r = self.http.post(
            f"/_stockade/v1/instances/{instance_id}/state",
            json={"state": state, "host": self.name},
        )
        if r.status_code >= 400:
            log.warning("%s: report %s %s: %s", self.name, instance_id, state, r.text)

    # --- instances -----------------------------------------------------------------------

    def _build(self, p: dict[str, Any]) -> None:
        iid = p["instance_id"]
        eni = p["interfaces"][0]
        ns = instance_netns(self.prefix, iid)
        ifname = ifname_for(eni["network_interface_id"])
        ip = eni["private_ip"]
        prefixlen = ipaddress.ip_network(eni["subnet_cidr"]).prefixlen
        net.create(ns)
        net.resolv_conf(ns, RESOLVER)
        net.veth(self.netns, ifname, ns, "eth0")
        net.address(ns, "eth0", f"{ip}/{prefixlen}")
        net.route(ns, f"{GATEWAY}/32", dev="eth0")
        net.route(ns, "default", gateway=GATEWAY)
        net.sysctl(self.netns, instance_link_sysctls(ifname))
        net.address(self.netns, ifname, f"{GATEWAY}/32")
        # the instance is reachable only once its groups are in this host's table
        head = self.http.get("/_stockade/health").json()["revision"]
        deadline = time.monotonic() + 30
        # in slices: a sandbox stopping meanwhile must not wait out the 30 s
        while not self.agent.wait_applied(head, 0.25):
            if self._stop.is_set() or time.monotonic() > deadline:
                log.warning("%s: agent did not apply revision %s in time", self.name, head)
                break
        net.route(self.netns, f"{ip}/32", dev=ifname)
        inst = Running(iid, ns, ifname, ip, p)
        self.running[iid] = inst
        self._boot(inst)

    def _boot(self, inst: Running) -> None:
        """Run the instance's UserData as its init (a shell script, as cloud-init would)."""
        script = decode_user_data(inst.placement.get("user_data"))
        if not script:
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        path = self.logs / f"{inst.instance_id}.user-data"
        path.write_bytes(script)
        path.chmod(0o700)
        out = open(self.logs / f"{inst.instance_id}.log", "ab")  # noqa: SIM115
        argv = [str(path)] if script.startswith(b"#!") else ["/bin/sh", str(path)]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", inst.netns, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/tmp",
        )
        out.close()
        inst.procs.append(proc)

    def _kill(self, inst: Running) -> None:
        for proc in inst.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        inst.procs.clear()
        net.kill_all(inst.netns)

    def _teardown(self, inst: Running) -> None:
        self._kill(inst)
        net.delete_route(self.netns, f"{inst.private_ip}/32")
        net.delete_link(self.netns, inst.ifname)
        net.remove(inst.netns)

    # --- what the metadata service and resolver ask ----------------------------------------

    def by_private_ip(self, ip: str) -> Running | None:
        with self.lock:
            for inst in self.running.values():
                if inst.private_ip == ip:
                    return inst
        return None


def instance_link_sysctls(ifname: str) -> dict[str, int]:
    """The host side of an instance's link: it answers ARP for every address (the instance
    sends even its subnet neighbours' traffic here), at once. Linux delays proxy ARP
    replies by a random time up to ``proxy_delay`` (0.8 s by default), which made the first
    connection between two instances of a subnet take up to a second longer than the rule
    that allowed it."""
    return {
        f"net.ipv4.conf.{ifname}.proxy_arp": 1,
        f"net.ipv4.conf.{ifname}.rp_filter": 0,
        f"net.ipv4.neigh.{ifname}.proxy_delay": 0,
    }


def _add_local(netns_name: str, address: str) -> None:
    net.address(netns_name, "lo", f"{address}/32")


def bound_socket(kind: int, address: str, port: int) -> socket.socket:
    """A socket bound in the calling thread's namespace (call it through a NetnsWorker)."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    if kind == socket.SOCK_STREAM:
        sock.listen(64)
    return sock
