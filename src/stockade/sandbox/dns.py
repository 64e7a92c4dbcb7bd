"""The sandbox's DNS: EC2 instance names and a small split-horizon server (UDP and TCP)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import re
import selectors
import socket
import struct
import threading
from collections.abc import Callable

from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSError, DNSHeader, DNSRecord

log = logging.getLogger(__name__)

Resolver = Callable[[str, str], list[str] | None]
"""(qname without trailing dot, lower-case; client IP) -> A records, or None for NXDOMAIN."""

_UDP_PLAIN = 512  # the most a client without EDNS accepts over UDP (RFC 1035)
_UDP_EDNS = 1232  # what we advertise, and the most we send, to EDNS clients
_TCP_IDLE = 10.0  # seconds a TCP client may sit idle between queries
_CLASS_IN, _CLASS_ANY = 1, 255
_OPCODE_QUERY = 0

# --- EC2 instance names ------------------------------------------------------------------------


def _dashed(ip: str) -> str:
    return str(ipaddress.IPv4Address(ip)).replace(".", "-")


def private_dns_name(ip: str, region: str) -> str:
    """``ip-172-31-0-4.ec2.internal`` in us-east-1, else ``ip-....<region>.compute.internal``."""
    if region == "us-east-1":
        return f"ip-{_dashed(ip)}.ec2.internal"
    return f"ip-{_dashed(ip)}.{region}.compute.internal"


def public_dns_name(ip: str, region: str, domain: str) -> str:
    """``ec2-<ip>.compute-1.<domain>`` in us-east-1, else ``ec2-....<region>.compute.<domain>``."""
    domain = domain.strip(".")
    if region == "us-east-1":
        return f"ec2-{_dashed(ip)}.compute-1.{domain}"
    return f"ec2-{_dashed(ip)}.{region}.compute.{domain}"


_NAME_IP = re.compile(r"(ip|ec2)-(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})(?:\.|$)", re.IGNORECASE)


def ip_from_name(name: str) -> str | None:
    """The IPv4 address encoded in an ``ip-a-b-c-d...`` or ``ec2-a-b-c-d...`` name, else None."""
    m = _NAME_IP.match(name.strip())
    if m is None:
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(m.group(2, 3, 4, 5))))
    except ValueError:  # an octet above 255, or a leading zero
        return None


_REGION = r"[a-z0-9]+(?:-[a-z0-9]+)*"  # any region label; the canonical check decides


def split_horizon(
    inside: Callable[[str], bool],
    public_to_private: Callable[[str], str | None],
    domain: str,
) -> Resolver:
    """A resolver answering EC2 names as the region's resolvers do.

    A public name ``ec2-<ip>...<domain>`` answers the private IP of the instance holding that
    public IP to clients ``inside`` the EC2 network, the public IP itself to everyone else, and
    NXDOMAIN if no instance holds it. A private name ``ip-<ip>...internal`` answers its IP to
    inside clients only. Any other name is NXDOMAIN.
    """
    dom = re.escape(domain.strip(".").lower())
    public = re.compile(rf"ec2-[0-9-]+\.(?:compute-1|(?P<region>{_REGION})\.compute)\.{dom}")
    private = re.compile(rf"ip-[0-9-]+\.(?:ec2|(?P<region>{_REGION})\.compute)\.internal")

    def resolve(qname: str, client_ip: str) -> list[str] | None:
        name = qname.strip().rstrip(".").lower()
        ip = ip_from_name(name)
        if ip is None:
            return None
        if m := public.fullmatch(name):
            # canonical only: us-east-1 says compute-1, no leading zeros, the region's form
            if public_dns_name(ip, m["region"] or "us-east-1", domain).lower() != name:
                return None
            private_ip = public_to_private(ip)
            if private_ip is None:
                return None
            return [private_ip] if inside(client_ip) else [ip]
        if m := private.fullmatch(name):
            if private_dns_name(ip, m["region"] or "us-east-1") != name:
                return None
            if not inside(client_ip):
                return None
            return [ip]
        return None

    return resolve


# --- the server --------------------------------------------------------------------------------


def _client_ip(addr: tuple) -> str:
    host = str(addr[0])
    return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host


class DnsServer:
    """A DNS server answering A queries from ``resolver``, over UDP and TCP, in threads.

    Pass already-bound sockets (``udp_sock`` and/or ``tcp_sock``; only those are served) or
    neither, and the server binds both on ``host``:``port`` (the same port for the two; 0
    picks a free one). The server owns its sockets and closes them in :meth:`close`.
    """

    def __init__(
        self,
        resolver: Resolver,
        *,
        udp_sock: socket.socket | None = None,
        tcp_sock: socket.socket | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ttl: int = 5,
    ) -> None:
        self.resolver = resolver
        self.ttl = ttl
        if udp_sock is None and tcp_sock is None:
            udp_sock, tcp_sock = _bind_pair(host, port)
        self._udp = udp_sock
        self._tcp = tcp_sock
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._conn_threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound UDP address (the TCP one if only TCP is served)."""
        sock = self._udp if self._udp is not None else self._tcp
        assert sock is not None
        host, port = sock.getsockname()[:2]
        return host, port

    def start(self) -> DnsServer:
        if self._closed:
            raise RuntimeError("DnsServer is closed")
        if self._thread is not None:
            return self
        if self._tcp is not None:
            self._tcp.listen(64)
        self._thread = threading.Thread(target=self._serve, name="dns-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the threads and close every socket; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            conns, threads = list(self._conns), list(self._conn_threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(5)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- threads --------------------------------------------------------------------------

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            if self._udp is not None:
                self._udp.setblocking(False)
                sel.register(self._udp, selectors.EVENT_READ)
            if self._tcp is not None:
                self._tcp.setblocking(False)
                sel.register(self._tcp, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in sel.select():
                    if self._stop.is_set():
                        return
                    if key.fileobj is self._udp:
                        self._udp_once()
                    elif key.fileobj is self._tcp:
                        self._accept()

    def _udp_once(self) -> None:
        assert self._udp is not None
        try:
            data, addr = self._udp.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. ICMP port unreachable reported on a later recv
            log.debug("dns udp recv: %s", exc)
            return
        reply = self.handle(data, _client_ip(addr), udp=True)
        if reply is not None:
            try:
                self._udp.sendto(reply, addr)
            except OSError as exc:
                log.debug("dns udp send to %s: %s", addr, exc)

    def _accept(self) -> None:
        assert self._tcp is not None
        try:
            conn, addr = self._tcp.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("dns tcp accept: %s", exc)
            return
        conn.setblocking(True)
        conn.settimeout(_TCP_IDLE)
        t = threading.Thread(
            target=self._tcp_conn, args=(conn, _client_ip(addr)), name="dns-tcp", daemon=True
        )
        with self._lock:
            self._conns.add(conn)
            self._conn_threads.add(t)
        t.start()

    def _tcp_conn(self, conn: socket.socket, client: str) -> None:
        try:
            while not self._stop.is_set():
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                (length,) = struct.unpack("!H", head)
                data = _recv_exact(conn, length)
                if data is None:
                    return
                reply = self.handle(data, client, udp=False)
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError as exc:  # timeouts, resets, and close() shutting us down
            log.debug("dns tcp %s: %s", client, exc)
        finally:
            conn.close()
            with self._lock:
                self._conns.discard(conn)
                self._conn_threads.discard(threading.current_thread())

    # --- answering --------------------------------------------------------------------------

    def handle(self, data: bytes, client_ip: str, *, udp: bool = True) -> bytes | None:
        """The wire reply to one query, or None to ignore it (malformed, or not a query)."""
        try:
            request = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError, struct.error, UnicodeError) as exc:
            log.debug("dns: ignoring malformed packet from %s: %s", client_ip, exc)
            return None
        except Exception:  # dnslib may raise anything on hostile input; never die on it
            log.debug("dns: ignoring unparseable packet from %s", client_ip, exc_info=True)
            return None
        if request.header.qr:  # a response: never answer those (no loops)
            return None
        try:
            reply = self._answer(request, client_ip)
            packed = reply.pack()
        except Exception:
            log.exception("dns: answering %s for %s failed", request.q, client_ip)
            reply = self._reply(request, RCODE.SERVFAIL)
            packed = reply.pack()
        if udp:
            edns = _edns(request)
            limit = max(_UDP_PLAIN, min(edns.edns_len, _UDP_EDNS)) if edns else _UDP_PLAIN
            if len(packed) > limit:
                reply.rr, reply.auth, reply.header.tc = [], [], 1
                packed = reply.pack()
        return packed

    def _reply(self, request: DNSRecord, rcode: int) -> DNSRecord:
        header = DNSHeader(
            id=request.header.id,
            qr=1,
            aa=1,
            ra=1,
            rd=request.header.rd,
            opcode=request.header.opcode,
            rcode=rcode,
        )
        reply = DNSRecord(header, questions=list(request.questions))
        if _edns(request) is not None:
            reply.add_ar(EDNS0(udp_len=_UDP_EDNS))
        return reply

    def _answer(self, request: DNSRecord, client_ip: str) -> DNSRecord:
        if request.header.opcode != _OPCODE_QUERY:
            return self._reply(request, RCODE.NOTIMP)
        if len(request.questions) != 1:
            return self._reply(request, RCODE.FORMERR)
        q = request.q
        if q.qclass not in (_CLASS_IN, _CLASS_ANY):
            return self._reply(request, RCODE.REFUSED)
        qname = str(q.qname).rstrip(".").lower()
        answers = self.resolver(qname, client_ip)
        if answers is None:
            return self._reply(request, RCODE.NXDOMAIN)
        reply = self._reply(request, RCODE.NOERROR)
        if q.qtype in (QTYPE.A, QTYPE.ANY):
            for ip in answers:
                reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(ip), ttl=self.ttl))
        # any other type (AAAA included: the sandbox is IPv4 only) is NODATA
        return reply


def _edns(request: DNSRecord) -> RR | None:
    return next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same ``host``:``port`` (0: a free port for both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1 if port else 50):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((host, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, udp.getsockname()[1]))
            return udp, tcp
        except OSError as exc:
            udp.close()
            tcp.close()
            if port or exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no free port on {host} for both UDP and TCP")


__all__ = [
    "DnsServer",
    "Resolver",
    "ip_from_name",
    "private_dns_name",
    "public_dns_name",
    "split_horizon",
]
