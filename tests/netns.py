"""Test helper: a small topology of network namespaces that is always removed afterwards.

A host namespace (forwarding on, rp_filter off) with instance and "outside" namespaces,
each joined to the host by a veth pair: the node's side is ``eth0`` with one /32 (and
/128) address and a default route via the host (169.254.1.1 / fe80::1); the host's side
is ``<prefix>i<n>`` / ``<prefix>o<n>`` with a route to the node's addresses. Every name
starts with a random ``sk-<6hex>-`` prefix; nothing is connected to the root namespace,
and traffic only ever goes to addresses inside these namespaces.

Servers (TCP echo, UDP echo, raw-protocol sinks) and probes run in this process, on
sockets created inside the namespaces, so probing many flows at once is cheap. A probe
answers ``open`` (connected / answered), ``closed`` (refused: allowed, nothing
listening) or ``filtered`` (no answer before the timeout: dropped).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import re
import selectors
import shutil
import socket
import struct
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from stockade.dataplane.netns import NetnsWorker
from stockade.dataplane.nft import Nft

OPEN, CLOSED, FILTERED = "open", "closed", "filtered"
GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"


def can_run() -> str | None:
    """None if namespaces and nftables are usable here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        import ctypes

        ctypes.CDLL("libnftables.so.1")
    except OSError:
        return "libnftables.so.1 is missing"
    return None


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` until true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.01)


def run(ns: str | None, *cmd: str, check: bool = True, timeout: float = 30) -> str:
    """Run a command in namespace ``ns`` (None: here) and return its stdout."""
    argv = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


@dataclass
class Node:
    """A namespace attached to the host: an instance or an outside machine."""

    topo: Topology
    ns: str
    kind: str
    ifname: str  # the host-side veth
    ipv4: str
    ipv6: str | None = None
    worker: NetnsWorker | None = field(default=None, repr=False)

    def addr(self, version: int = 4) -> str:
        address = self.ipv4 if version == 4 else self.ipv6
        if address is None:
            raise ValueError(f"{self.ns} has no IPv{version} address")
        return address

    def socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        """A socket in this namespace (closed with the topology)."""
        assert self.worker is not None
        sock = self.worker.call(socket.socket, family, kind, proto)
        self.topo._sockets.append(sock)
        return sock

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> str:
        return run(self.ns, *cmd, check=check, timeout=timeout)


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _cleanup(names: list[str], workers: list[NetnsWorker], sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
    for worker in workers:
        worker.close()
    for name in reversed(names):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    names.clear()


class Topology:
    """Namespaces for one test. Use as a context manager; a finalizer also removes them."""

    def __init__(self) -> None:
        self.prefix = f"sk-{os.urandom(3).hex()}-"
        self.names: list[str] = []
        self._workers: list[NetnsWorker] = []
        self._sockets: list[socket.socket] = []
        self._finalizer = weakref.finalize(self, _cleanup, self.names, self._workers, self._sockets)
        self.nodes: list[Node] = []
        self._counts = {"instance": 0, "outside": 0}
        self.servers: Servers | None = None
        self._nfts: list[Nft] = []
        try:
            self.host = self._add_ns("host")
            run(
                self.host,
                "sh",
                "-ec",
                "ip link set lo up\n"
                "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1\n"
                "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0\n"
                "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
            )
        except BaseException:
            self.close()
            raise

    def _add_ns(self, suffix: str) -> str:
        name = self.prefix + suffix
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.names.append(name)
        return name

    def _attach(self, kind: str, ipv4: str, ipv6: str | None, ifname: str | None = None) -> Node:
        index = self._counts[kind]
        self._counts[kind] += 1
        letter = "i" if kind == "instance" else "o"
        ns = self._add_ns(f"{letter}{index}")
        ifname = ifname or f"{self.prefix}{letter}{index}"
        lines = [
            "ip link set lo up",
            "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
        ]
        run(ns, "sh", "-ec", "\n".join(lines))
        run(
            None,
            "ip",
            "-n",
            self.host,
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        node_cmds = [
            "ip link set eth0 up",
            f"ip addr add {ipv4}/32 dev eth0",
            f"ip route add {GATEWAY4} dev eth0 scope link",
            f"ip route add default via {GATEWAY4} dev eth0",
        ]
        host_cmds = [
            f"sysctl -qw net.ipv4.conf.{ifname}.rp_filter=0",
            f"ip link set {ifname} up",
            f"ip addr add {GATEWAY4}/32 dev {ifname}",
            f"ip addr add {GATEWAY6}/64 dev {ifname} nodad",
            f"ip route add {ipv4}/32 dev {ifname}",
        ]
        if ipv6:
            node_cmds += [
                f"ip -6 addr add {ipv6}/128 dev eth0 nodad",
                f"ip -6 route add default via {GATEWAY6} dev eth0",
            ]
            host_cmds.append(f"ip -6 route add {ipv6}/128 dev {ifname}")
        run(ns, "sh", "-ec", "\n".join(node_cmds))
        run(self.host, "sh", "-ec", "\n".join(host_cmds))
        worker = NetnsWorker(ns)
        self._workers.append(worker)
        node = Node(self, ns, kind, ifname, ipv4, ipv6, worker)
        self.nodes.append(node)
        return node

    def add_instance(self, ipv4: str, ipv6: str | None = None, ifname: str | None = None) -> Node:
        """An instance; ``ifname`` names its host-side device (as the control plane does)."""
        return self._attach("instance", ipv4, ipv6, ifname)

    def add_outside(self, ipv4: str, ipv6: str | None = None) -> Node:
        return self._attach("outside", ipv4, ipv6)

    def nft(self) -> Nft:
        """libnftables in the host namespace (closed with the topology)."""
        nft = Nft(self.host)
        self._nfts.append(nft)
        return nft

    def serve(self) -> Servers:
        if self.servers is None:
            self.servers = Servers()
        return self.servers

    def close(self) -> None:
        if self.servers is not None:
            self.servers.close()
        for nft in self._nfts:
            nft.close()
        self._finalizer()

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Servers:
    """TCP echo, UDP echo and raw sinks on sockets in the nodes' namespaces, served by one
    selector thread. ``received`` collects (protocol, node ns, token) of raw packets."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.received: set[tuple[int, str, bytes]] = set()
        self.accepted: list[tuple[str, int, str]] = []  # (ns, port, peer address)
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="servers")
        self._thread.start()

    def tcp(self, node: Node, port: int, version: int = 4) -> socket.socket:
        sock = node.socket(_family(node.addr(version)), socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((node.addr(version), port))
        sock.listen(512)
        sock.setblocking(False)
        self._add(sock, ("accept", node.ns, port))
        return sock

    def udp(self, node: Node, port: int, version: int = 4) -> socket.socket:
        sock = node.socket(_family(node.addr(version)), socket.SOCK_DGRAM)
        sock.bind((node.addr(version), port))
        sock.setblocking(False)
        self._add(sock, ("udp", node.ns, port))
        return sock

    def raw(self, node: Node, proto: int, version: int = 4) -> socket.socket:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        sock = node.socket(family, socket.SOCK_RAW, proto)
        sock.setblocking(False)
        self._add(sock, ("raw", node.ns, proto, version))
        return sock

    def _add(self, sock: socket.socket, data: tuple) -> None:
        self._socks.append(sock)
        self.sel.register(sock, selectors.EVENT_READ, data)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.sel.select(0.05):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    self._handle(key.fileobj, key.data)  # type: ignore[arg-type]

    def _handle(self, sock: socket.socket, data: tuple) -> None:
        kind = data[0]
        if kind == "accept":
            conn, peer = sock.accept()
            conn.setblocking(False)
            self.accepted.append((data[1], data[2], peer[0]))
            self._add(conn, ("echo",))
        elif kind == "echo":
            chunk = sock.recv(65536)
            if chunk:
                sock.sendall(chunk)
            else:
                self.sel.unregister(sock)
                sock.close()
        elif kind == "udp":
            chunk, peer = sock.recvfrom(65536)
            sock.sendto(chunk, peer)
        elif kind == "raw":
            packet = sock.recv(65536)
            proto, version = data[2], data[3]
            payload = packet[(packet[0] & 0x0F) * 4 :] if version == 4 else packet
            self.received.add((proto, data[1], payload[:16]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()
        self.sel.close()


@dataclass(frozen=True)
class Probe:
    """One new flow to try: from ``src`` to ``dst`` (an address) with ``proto``
    ("tcp", "udp", "ping", or an IP protocol number for a one-way raw packet)."""

    src: Node
    dst: str
    proto: str | int
    port: int = 0
    src_addr: str | None = None
    dst_node: Node | None = None  # needed for raw protocols (where it must arrive)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo_request(v6: bool, ident: int, seq: int) -> bytes:
    kind = 128 if v6 else 8
    body = struct.pack("!HH", ident, seq) + b"stockade-probe"
    header = struct.pack("!BBH", kind, 0, 0)
    if v6:  # the kernel fills in the ICMPv6 checksum
        return header + body
    return struct.pack("!BBH", kind, 0, _checksum(header + body)) + body


class _Pending:
    def __init__(self, probe: Probe, sock: socket.socket, check: Callable[[], object]):
        self.probe, self.sock, self.check = probe, sock, check
        self.result: str | None = None

    @property
    def one_way(self) -> bool:
        return isinstance(self.probe.proto, int)


def probe_many(probes: Sequence[Probe], timeout: float = 0.5) -> list[str]:
    """Try all probes at once; each gives open, closed or filtered."""
    sel = selectors.DefaultSelector()
    entries: list[_Pending] = []
    try:
        for index, p in enumerate(probes):
            entries.append(_start(p, index))
        waiting: set[_Pending] = set()
        for entry in entries:
            if not entry.one_way:
                tcp = entry.probe.proto == "tcp"
                sel.register(
                    entry.sock, selectors.EVENT_WRITE if tcp else selectors.EVENT_READ, entry
                )
                waiting.add(entry)
        deadline = time.monotonic() + timeout
        while waiting and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                entry = key.data
                entry.result = entry.check()
                if entry.result is not None:
                    sel.unregister(entry.sock)
                    waiting.discard(entry)
        for entry in entries:
            if entry.one_way:
                node = entry.probe.dst_node
                assert node is not None and node.topo.servers is not None
                want = (entry.probe.proto, node.ns, entry.check())
                received = node.topo.servers.received
                while want not in received and time.monotonic() < deadline:
                    time.sleep(0.005)
                entry.result = OPEN if want in received else FILTERED
        return [entry.result or FILTERED for entry in entries]
    finally:
        sel.close()
        for entry in entries:
            with contextlib.suppress(OSError):
                entry.sock.close()


def _start(probe: Probe, index: int) -> _Pending:
    family = _family(probe.dst)
    v6 = family == socket.AF_INET6
    node = probe.src
    assert node.worker is not None
    if probe.proto == "tcp":
        sock = node.worker.call(socket.socket, family, socket.SOCK_STREAM)
    elif probe.proto == "udp":
        sock = node.worker.call(socket.socket, family, socket.SOCK_DGRAM)
    elif probe.proto == "ping":
        proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
        sock = node.worker.call(socket.socket, family, socket.SOCK_RAW, proto)
    else:
        sock = node.worker.call(socket.socket, family, socket.SOCK_RAW, int(probe.proto))
    sock.setblocking(False)
    if probe.src_addr:
        sock.bind((probe.src_addr, 0))

    if probe.proto == "tcp":
        sock.connect_ex((probe.dst, probe.port))

        def check_tcp() -> str | None:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                return OPEN
            if err == errno.ECONNREFUSED:
                return CLOSED
            return FILTERED

        return _Pending(probe, sock, check_tcp)

    if probe.proto == "udp":
        token = os.urandom(8)
        sock.connect((probe.dst, probe.port))
        sock.send(token)

        def check_udp() -> str | None:
            try:
                return OPEN if sock.recv(2048) == token else None
            except ConnectionRefusedError:
                return CLOSED
            except BlockingIOError:
                return None

        return _Pending(probe, sock, check_udp)

    if probe.proto == "ping":
        ident, seq = int.from_bytes(os.urandom(2), "big"), index & 0xFFFF
        sock.sendto(_echo_request(v6, ident, seq), (probe.dst, 0))
        want_type = 129 if v6 else 0
        dst = ipaddress.ip_address(probe.dst)

        def check_ping() -> str | None:
            while True:
                try:
                    packet, peer = sock.recvfrom(65536)
                except BlockingIOError:
                    return None
                icmp = packet if v6 else packet[(packet[0] & 0x0F) * 4 :]
                if ipaddress.ip_address(peer[0].split("%")[0]) != dst or len(icmp) < 8:
                    continue
                if icmp[0] == want_type and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
                    return OPEN

        return _Pending(probe, sock, check_ping)

    token = b"stockade" + os.urandom(8)
    sock.sendto(token, (probe.dst, 0))
    return _Pending(probe, sock, lambda: token)


def probe(p: Probe, timeout: float = 0.5) -> str:
    return probe_many([p], timeout)[0]


def tcp(src: Node, dst: str, port: int, timeout: float = 0.5, src_addr: str | None = None) -> str:
    return probe(Probe(src, dst, "tcp", port, src_addr), timeout)


def udp(src: Node, dst: str, port: int, timeout: float = 0.5) -> str:
    return probe(Probe(src, dst, "udp", port), timeout)


def ping(src: Node, dst: str, timeout: float = 0.5) -> str:
    return probe(Probe(src, dst, "ping"), timeout)


def connect(src: Node, dst: str, port: int, timeout: float = 2.0) -> socket.socket:
    """An established TCP connection (blocking, with a timeout) from ``src``."""
    sock = src.socket(_family(dst), socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect((dst, port))
    return sock


def echo(sock: socket.socket, data: bytes = b"ping") -> bytes:
    """Send ``data`` on an echo connection and read it back (raises on timeout)."""
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(len(data) - len(got))
        if not chunk:
            break
        got += chunk
    return got


def flush_conntrack(node_or_ns: Node | str) -> None:
    """Forget every tracked connection in a namespace (ctnetlink IPCTNL_MSG_CT_DELETE with
    no tuple = flush), so that each check starts from new flows only."""
    ns = node_or_ns if isinstance(node_or_ns, str) else node_or_ns.ns
    netlink_netfilter = 12
    with NetnsWorker(ns) as worker:
        sock = worker.call(socket.socket, socket.AF_NETLINK, socket.SOCK_RAW, netlink_netfilter)
    with sock:
        sock.settimeout(5)
        msg_type = (1 << 8) | 2  # NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE
        body = struct.pack("!BBH", socket.AF_UNSPEC, 0, 0)  # nfgenmsg
        header = struct.pack("=IHHII", 16 + len(body), msg_type, 1 | 4, 1, 0)  # REQUEST|ACK
        sock.send(header + body)
        reply = sock.recv(4096)
        (error,) = struct.unpack("=i", reply[16:20])
        if error not in (0, -errno.ENOENT):
            raise OSError(-error, f"conntrack flush in {ns}: {os.strerror(-error)}")


def canonical(listing: str) -> list[str]:
    """A JSON listing without handles or counters, elements sorted."""
    out = []
    for item in json.loads(listing)["nftables"]:
        for body in item.values():
            if not isinstance(body, dict):
                continue
            body = {k: v for k, v in body.items() if k != "handle"}
            if "elem" in body:
                body["elem"] = sorted(json.dumps(e, sort_keys=True) for e in body["elem"])
            text = json.dumps(body, sort_keys=True)
            out.append(re.sub(r'\{"counter": \{[^}]*\}\}', "counter", text))
    return sorted(out)


@contextlib.contextmanager
def topology() -> Iterator[Topology]:
    topo = Topology()
    try:
        yield topo
    finally:
        topo.close()
