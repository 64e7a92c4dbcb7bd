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
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockade.dataplane.agent import DEFAULT_RESYNC_INTERVAL, Agent
from stockade.dataplane.netns import NetnsWorker
from stockade.hosts.client import HostClient
from stockade.hosts.loop import HostLoop
from stockade.sandbox import guest_ssh, net, plumb
from stockade.service import images

log = logging.getLogger(__name__)

GATEWAY = "169.254.1.1"
RESOLVER = "169.254.169.253"
METADATA = "169.254.169.254"
GUEST = str(Path(__file__).with_name("guest.py"))  # the images' web/app/mysql services


@dataclass
class Running:
    """An instance this host runs."""

    instance_id: str
    netns: str
    ifname: str
    private_ip: str
    placement: dict[str, Any]
    procs: list[subprocess.Popen] = field(default_factory=list)
    launch_key: tuple[str, str] | None = None  # (key pair name, OpenSSH public key)
    links: dict[str, plumb.Link] = field(default_factory=dict)  # by interface id


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
        self.http = HostClient(server, token)
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
        self.loop = HostLoop(
            self.http, self.name, _SandboxRuntime(self), lock=self.lock, stop=self._stop
        )

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

    # --- the runtime the host loop (stockade.hosts.loop) drives ----------------------------

    def running_ids(self) -> list[str]:
        return list(self.running)

    def update(self, placement: dict[str, Any]) -> None:
        inst = self.running[placement["instance_id"]]
        inst.placement = placement
        self._sync_links(inst)  # interfaces attached or detached since

    def teardown(self, instance_id: str, *, terminated: bool) -> None:
        inst = self.running.pop(instance_id, None)
        if inst is not None:
            self._teardown(inst, terminated=terminated)

    def changed(self, change: dict[str, Any]) -> None:
        """A reboot (running -> running) restarts the instance's processes."""
        data = change.get("data") or {}
        if change["kind"] != "instance.state":
            return
        if data.get("previous") == "running" and data.get("state") == "running":
            inst = self.running.get(change["resource_id"])
            if inst is not None:
                self._kill(inst)
                self._boot(inst)

    def reconcile(self) -> None:
        self.loop.reconcile()

    def _loop(self) -> None:
        self.loop.run()

    # --- instances -----------------------------------------------------------------------

    def build(self, p: dict[str, Any]) -> None:
        self._build(p)

    def _build(self, p: dict[str, Any]) -> None:
        iid = p["instance_id"]
        ns = instance_netns(self.prefix, iid)
        links = [plumb.link_of(eni) for eni in p["interfaces"]]
        net.create(ns)
        net.resolv_conf(ns, RESOLVER)
        for link in links:
            plumb.plumb(self.netns, ns, link)
        self._wait_enforced()
        for link in links:
            plumb.route(self.netns, link)
        primary = links[0]
        inst = Running(iid, ns, primary.ifname, primary.ipv4[0], p)
        inst.links = {link.interface_id: link for link in links}
        self.running[iid] = inst
        self._boot(inst)

    def _wait_enforced(self) -> None:
        """Until the agent has applied the control plane's current revision: a link gets
        its routes only once its groups are in this host's table."""
        head = self.http.get("/_stockade/health").json()["revision"]
        deadline = time.monotonic() + 30
        # in slices: a sandbox stopping meanwhile must not wait out the 30 s
        while not self.agent.wait_applied(head, 0.25):
            if self._stop.is_set() or time.monotonic() > deadline:
                log.warning("%s: agent did not apply revision %s in time", self.name, head)
                break

    def _sync_links(self, inst: Running) -> None:
        """Plumb interfaces attached since, unplumb those detached (or whose addresses
        changed, to plumb them again)."""
        wanted = {
            link.interface_id: link for link in map(plumb.link_of, inst.placement["interfaces"])
        }
        gone = [i for i, link in inst.links.items() if wanted.get(i) != link]
        for iface_id in gone:
            plumb.unplumb(self.netns, inst.netns, inst.links.pop(iface_id))
        new = [link for i, link in wanted.items() if i not in inst.links]
        for link in new:
            plumb.plumb(self.netns, inst.netns, link)
        if new:
            self._wait_enforced()
        for link in new:
            plumb.route(self.netns, link)
            inst.links[link.interface_id] = link

    def _boot(self, inst: Running) -> None:
        """Start the image's services, then run the UserData as a shell script (cloud-init)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{inst.instance_id}.log", "ab")  # noqa: SIM115
        try:
            inst.launch_key = self._launch_key(inst)
            self._start_image(inst, out)
            script = decode_user_data(inst.placement.get("user_data"))
            if script:
                path = self.logs / f"{inst.instance_id}.user-data"
                path.write_bytes(script)
                path.chmod(0o700)
                argv = [str(path)] if script.startswith(b"#!") else ["/bin/sh", str(path)]
                inst.procs.append(_spawn(inst.netns, argv, out))
        finally:
            out.close()

    def _launch_key(self, inst: Running) -> tuple[str, str] | None:
        """The key pair the instance was launched with, recorded at its first boot.

        As on EC2, the instance keeps it (for sshd and the metadata service) even if the
        key pair is deleted later.
        """
        state = self.logs / inst.instance_id
        record = state / "launch-key.json"
        if record.exists():
            saved = json.loads(record.read_text())
            return (saved["name"], saved["public_key"]) if saved else None
        name, public = inst.placement.get("key_name"), inst.placement.get("public_key")
        key = (name, public) if name and public else None
        state.mkdir(parents=True, exist_ok=True)
        state.chmod(0o700)
        record.write_text(json.dumps({"name": key[0], "public_key": key[1]} if key else None))
        return key

    def _start_image(self, inst: Running, out: Any) -> None:
        """The image's services, in the instance's namespace, listening before user data runs."""
        services = images.services_of(inst.placement.get("image_id"))
        if not services:
            return
        state = self.logs / inst.instance_id
        waits: list[tuple[subprocess.Popen, int]] = []
        if "ssh" in services and guest_ssh.sshd_path() is None:
            log.warning("%s: sshd is not installed (apt-get install openssh-server)", self.name)
        elif "ssh" in services:
            public_key = inst.launch_key[1] if inst.launch_key else None
            config = guest_ssh.prepare(state, inst.netns, public_key, inst.instance_id)
            proc = _spawn(inst.netns, guest_ssh.command(config), out)
            inst.procs.append(proc)
            waits.append((proc, images.SERVICE_PORTS["ssh"]))
        others = [s for s in services if s != "ssh"]
        if others:
            specs = [f"{s}:{images.SERVICE_PORTS[s]}" for s in others]
            argv = [sys.executable, "-I", "-S", GUEST, "--instance", inst.instance_id, *specs]
            proc = _spawn(inst.netns, argv, out)
            inst.procs.append(proc)
            waits += [(proc, images.SERVICE_PORTS[s]) for s in others]
        for proc, port in waits:
            if not wait_listening(proc, port, timeout=15, netns=inst.netns):
                log.warning("%s: %s: nothing listens on %s", self.name, inst.instance_id, port)

    def _kill(self, inst: Running) -> None:
        for proc in inst.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        inst.procs.clear()
        net.kill_all(inst.netns)

    def _teardown(self, inst: Running, terminated: bool = False) -> None:
        self._kill(inst)
        for link in inst.links.values():
            plumb.unplumb(self.netns, None, link)
        net.remove(inst.netns)
        if terminated:  # its host keys go with it; a stopped instance keeps them
            shutil.rmtree(self.logs / inst.instance_id, ignore_errors=True)

    # --- what the metadata service and resolver ask ----------------------------------------

    def by_private_ip(self, ip: str) -> Running | None:
        with self.lock:
            for inst in self.running.values():
                if inst.private_ip == ip or any(ip in k.ipv4 for k in inst.links.values()):
                    return inst
        return None


class _SandboxRuntime:
    """The sandbox host as a :class:`~stockade.hosts.loop.Runtime` (namespaces)."""

    def __init__(self, host: HostDaemon) -> None:
        self.host = host

    def running(self) -> list[str]:
        return self.host.running_ids()

    def build(self, placement: dict[str, Any]) -> None:
        self.host.build(placement)

    def update(self, placement: dict[str, Any]) -> None:
        self.host.update(placement)

    def teardown(self, instance_id: str, *, terminated: bool) -> None:
        self.host.teardown(instance_id, terminated=terminated)

    def changed(self, change: dict[str, Any]) -> None:
        self.host.changed(change)


instance_link_sysctls = plumb.host_sysctls


def _spawn(netns_name: str, argv: list[str], out: Any) -> subprocess.Popen:
    """A process of an instance: in its namespace, its own session, output to its log."""
    return subprocess.Popen(
        ["ip", "netns", "exec", netns_name, *argv],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/tmp",
    )


def wait_listening(
    proc: subprocess.Popen, port: int, timeout: float, netns: str | None = None
) -> bool:
    """Wait until a TCP socket listens on ``port`` in ``proc``'s namespace (or it exits).

    ``/proc/<pid>/net/tcp`` is the table of the process's own network namespace, so this
    looks inside the instance without entering it. With ``netns``, only once the process
    is in that namespace: until ``ip netns exec`` has switched, the table is the machine's,
    where something else may listen on the port.
    """
    want = f":{port:04X}"
    target = (_netns_inode(netns) or -1) if netns is not None else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if target is not None and os.stat(f"/proc/{proc.pid}/ns/net").st_ino != target:
                rows = []
            else:
                rows = Path(f"/proc/{proc.pid}/net/tcp").read_text().splitlines()[1:]
        except OSError:
            rows = []
        for row in rows:
            cols = row.split()
            if len(cols) > 3 and cols[1].endswith(want) and cols[3] == "0A":  # 0A: LISTEN
                return True
        time.sleep(0.005)
    return False


def _netns_inode(netns_name: str) -> int | None:
    try:
        return os.stat(f"/var/run/netns/{netns_name}").st_ino
    except OSError:
        return None


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
