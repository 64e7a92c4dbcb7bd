"""The sandbox region: an EC2-like cloud on one machine, built only from namespaces.

```
  <p>o-<ip> (outside clients) --veth-- <p>inet (the internet, outside DNS 100.127.53.53)
                                           |  100.127.0.2 / 100.127.0.1
                                        <p>edge: 1:1 NAT public/Elastic <-> private, hairpin
                                           |  100.64.k.1 / 100.64.k.2  (one link per host)
                                        <p>h<k>: host k, its agent (table inet stockade),
                                           |     resolver 169.254.169.253, metadata .254
                                        <p>i-<id>: an instance, eth0 with its private IP
```
Nothing is linked to the root namespace. The control plane (``stockade serve``) runs as a
child process; hosts, the edge and the outside resolver run as threads of this process.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from stockade.dataplane.netns import NetnsWorker
from stockade.dataplane.nft import Nft
from stockade.sandbox import logs, net, runtime
from stockade.sandbox.hostd import HostDaemon, bound_socket
from stockade.sandbox.runtime import Teardown

log = logging.getLogger(__name__)

INET_EDGE, EDGE_INET = "100.127.0.2", "100.127.0.1"
OUTSIDE_GATEWAY = "100.127.255.1"
OUTSIDE_RESOLVER = "100.127.53.53"
STATE_FILE = "sandbox.json"


def host_link(k: int) -> tuple[str, str]:
    """(edge side, host side) addresses of host k's uplink."""
    return f"100.64.{k}.1", f"100.64.{k}.2"


# IPv6: the VPCs' blocks (service/ipv6.py's pool) are routed like the private IPv4
# addresses: the internet namespace sends them to the edge, the edge each /128 to its host
IPV6_POOL = "fd00:ec2::/32"
INET_EDGE6, EDGE_INET6 = "fdff:127::2", "fdff:127::1"
OUTSIDE_GATEWAY6 = "fdff:ffff::1"


def host_link6(k: int) -> tuple[str, str]:
    """(edge side, host side) IPv6 addresses of host k's uplink."""
    return f"fdff:64:{k}::1", f"fdff:64:{k}::2"


@dataclass
class SandboxInfo:
    """What `stockade exec/outside/down/status` need to find a running sandbox."""

    prefix: str
    hosts: int
    pid: int
    endpoint: str
    region: str
    public_domain: str
    public_pool: str

    @classmethod
    def load(cls, data_dir: Path) -> SandboxInfo | None:
        path = data_dir / STATE_FILE
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, data_dir: Path) -> None:
        (data_dir / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def outside_netns(prefix: str, address: str) -> str:
    return f"{prefix}o-{address.replace('.', '-').replace(':', '-')}"


def ensure_outside(prefix: str, address: str) -> str:
    """A small namespace on the internet whose only address is ``address``."""
    ip = ipaddress.ip_address(address)
    address = str(ip)
    name = outside_netns(prefix, address)
    if net.exists(name):
        return name
    inet = f"{prefix}inet"
    if not net.exists(inet):
        raise RuntimeError("the sandbox is not running: start it with `stockade up`")
    peer = "o" + (format(int(ip), "08x") if ip.version == 4 else f"{int(ip) % (1 << 48):012x}")
    net.create(name)
    net.veth(inet, peer, name, "eth0")
    if ":" in address:  # an IPv6 client: the gateway is an address of the link's far end
        net.address(name, "eth0", f"{address}/128")
        net.address(inet, peer, f"{OUTSIDE_GATEWAY6}/128")
        net.route(name, f"{OUTSIDE_GATEWAY6}/128", dev="eth0")
        net.route(name, "default", gateway=OUTSIDE_GATEWAY6)
        net.route(inet, f"{address}/128", dev=peer)
        net.resolv_conf(name, OUTSIDE_RESOLVER)
        return name
    net.address(name, "eth0", f"{address}/32")
    net.route(name, f"{OUTSIDE_GATEWAY}/32", dev="eth0")
    net.route(name, "default", gateway=OUTSIDE_GATEWAY)
    net.sysctl(inet, {f"net.ipv4.conf.{peer}.proxy_arp": 1, f"net.ipv4.conf.{peer}.rp_filter": 0})
    net.address(inet, peer, f"{OUTSIDE_GATEWAY}/32")
    net.route(inet, f"{address}/32", dev=peer)
    net.resolv_conf(name, OUTSIDE_RESOLVER)
    return name


class Edge:
    """Routes each live instance to its host and NATs its public address (1:1, hairpin)."""

    def __init__(self, prefix: str, hosts: int, public_pool: str) -> None:
        self.netns = f"{prefix}edge"
        self.hosts = hosts
        self.public_pool = public_pool
        self.nft: Nft | None = None
        self.routes: dict[str, str] = {}
        self.nat: dict[str, str] = {}
        self.applied = False

    def build(self, inet: str) -> None:
        net.create(self.netns)
        net.veth(self.netns, "inet", inet, "edge")
        net.address(self.netns, "inet", f"{EDGE_INET}/30")
        net.address(inet, "edge", f"{INET_EDGE}/30")
        net.route(self.netns, "default", gateway=INET_EDGE)
        net.route(inet, self.public_pool, gateway=EDGE_INET)
        net.address(self.netns, "inet", f"{EDGE_INET6}/64")
        net.address(inet, "edge", f"{INET_EDGE6}/64")
        net.route(self.netns, "default", gateway=INET_EDGE6)
        net.route(inet, IPV6_POOL, gateway=EDGE_INET6)
        self.nft = Nft(self.netns)

    def attach_host(self, k: int, host_ns: str) -> None:
        edge_ip, host_ip = host_link(k)
        net.veth(self.netns, f"h{k}", host_ns, "up")
        net.address(self.netns, f"h{k}", f"{edge_ip}/30")
        net.address(host_ns, "up", f"{host_ip}/30")
        net.route(host_ns, "default", gateway=edge_ip)
        edge6, host6 = host_link6(k)
        net.address(self.netns, f"h{k}", f"{edge6}/64")
        net.address(host_ns, "up", f"{host6}/64")
        net.route(host_ns, "default", gateway=edge6)

    def apply(self, snapshot: dict[str, Any]) -> None:
        routes: dict[str, str] = {}
        nat: dict[str, str] = {}
        for iface in snapshot["interfaces"]:
            k = int(str(iface["host"]).rsplit("-", 1)[-1]) if iface["host"] else 0
            if not 1 <= k <= self.hosts:
                continue
            private = iface["private_ipv4"][0]
            if f"{private}/32" in routes:
                # one flat network: an address two VPCs both use cannot be routed twice
                log.warning("edge: %s is used twice; %s is not routed", private, iface["id"])
                continue
            for extra in iface["private_ipv4"]:
                routes.setdefault(f"{extra}/32", host_link(k)[1])
            for six in iface.get("private_ipv6") or ():
                routes.setdefault(f"{six}/128", host_link6(k)[1])
            if iface.get("public_ipv4"):
                nat[iface["public_ipv4"]] = private
        for dst in set(self.routes) - set(routes):
            net.delete_route(self.netns, dst)
        for dst, gw in routes.items():
            if self.routes.get(dst) != gw:
                net.route(self.netns, dst, gateway=gw)
        self.routes = routes
        if (nat != self.nat or not self.applied) and self.nft is not None:
            self.nft.run(nat_script(nat, self.public_pool))
            self.nat = nat
            self.applied = True


def nat_script(nat: dict[str, str], public_pool: str = "198.18.0.0/15") -> str:
    """The edge's NAT table, replaced whole in one transaction (conntrack keeps flows)."""

    def elements(items: list[str]) -> str:
        return f"elements = {{ {', '.join(items)} }}" if items else ""

    pairs = sorted(nat.items())
    return f"""table ip stockade_nat
delete table ip stockade_nat
table ip stockade_nat {{
  map pub2priv {{
    type ipv4_addr : ipv4_addr
    {elements([f"{p} : {q}" for p, q in pairs])}
  }}
  map priv2pub {{
    type ipv4_addr : ipv4_addr
    {elements([f"{q} : {p}" for p, q in pairs])}
  }}
  set public_owners {{
    type ipv4_addr
    {elements([q for _, q in pairs])}
  }}
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    dnat ip to ip daddr map @pub2priv
  }}
  chain unassigned {{
    type filter hook forward priority filter; policy accept;
    # a public address no instance holds is silently dropped (a scan shows "filtered")
    ip daddr {public_pool} drop
  }}
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "inet" ip saddr @public_owners snat ip to ip saddr map @priv2pub
    ct status dnat iifname != "inet" ip saddr @public_owners snat ip to ip saddr map @priv2pub
  }}
}}
"""


class Interrupted(BaseException):
    """SIGINT/SIGTERM arrived while the sandbox was starting: unwind and tear down."""


def _die_with_parent() -> None:
    """In the API server's child, before exec: SIGTERM when the parent thread exits."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Sandbox:
    """`stockade up`: the control plane, the edge, the internet and N hosts.

    :meth:`up` first takes the prefix's lock (:mod:`stockade.sandbox.runtime`); only then
    does it remove leftover namespaces of that prefix, so a sandbox alive under another
    data dir is never touched. :meth:`down` undoes whatever part of :meth:`up` ran.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        hosts: int = 2,
        port: int = 8773,
        prefix: str = runtime.DEFAULT_PREFIX,
        region: str = "us-east-1",
        database_url: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.hosts = hosts
        self.port = port
        self.prefix = prefix
        self.region = region
        self.database_url = database_url
        self.endpoint = f"http://127.0.0.1:{port}"
        self.public_domain = os.environ.get("STOCKADE_PUBLIC_DOMAIN", "stockade.test")
        self.public_pool = os.environ.get("STOCKADE_PUBLIC_POOL", "198.18.0.0/15")
        self.server: subprocess.Popen | None = None
        self.daemons: list[HostDaemon] = []
        self.edge = Edge(prefix, hosts, self.public_pool)
        self.lock = runtime.Lock(prefix)
        self.record: runtime.Record | None = None
        self.teardown: Teardown | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._servers: list[Any] = []
        self._logs: logs.ComponentLogs | None = None
        self.interrupted: str | None = None  # the signal that asked start-up to stop
        self.snapshot: dict[str, Any] = {"interfaces": [], "groups": [], "revision": 0}

    # --- lifecycle -----------------------------------------------------------------------

    def clean_leftovers(self) -> list[str]:
        """Remove every namespace of this prefix (only while holding the prefix's lock)."""
        if self.lock.fd is None:
            return []
        names = net.with_prefix(self.prefix)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(net.remove, names))
        return names

    def start_server(self) -> str:
        cmd = [
            sys.executable,
            "-m",
            "stockade.cli",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        env = {**os.environ, "STOCKADE_AUTO_RUN": "0"}
        with open(logs.path(self.data_dir, "api"), "ab") as out:
            # its own process group: a Ctrl-C in the terminal reaches `up`, which stops it
            # in order; and it dies with `up`, however `up` dies (kill -9 included)
            self.server = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(
                    f"the API server exited; see `stockade logs api` "
                    f"({logs.path(self.data_dir, 'api')})"
                )
            try:
                if httpx.get(self.endpoint + "/_stockade/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                self._stop.wait(0.05)
            self.check_interrupted()
        else:
            raise RuntimeError(f"the API server did not answer on {self.endpoint}")
        if self.server.poll() is not None:
            raise RuntimeError(f"another server answers on {self.endpoint}; pick another --port")
        from stockade import config
        from stockade.store.db import Store, agent_token

        store = Store(config.database_url(self.data_dir, self.database_url))
        try:
            return agent_token(store)
        finally:
            store.dispose()

    def up(self, progress: Any = None) -> None:
        """Start everything; on any failure (or :class:`Interrupted`) the caller must call
        :meth:`down`, which removes what was made."""

        def step(text: str) -> None:
            self.check_interrupted()
            if progress is not None:
                progress(text)

        problem = runtime.check_prefix(self.prefix)
        if problem is not None:
            raise ValueError(problem)
        self.lock.acquire()  # raises AlreadyRunning, naming the sandbox that runs
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._logs = logs.ComponentLogs(self.data_dir).install()
        self.record = runtime.Record(
            prefix=self.prefix,
            pid=os.getpid(),
            data_dir=str(self.data_dir.resolve()),
            port=self.port,
            hosts=self.hosts,
            endpoint=self.endpoint,
            external_database=self.database_url is not None,
        )
        self.lock.record(self.record)
        if not port_free(self.port):
            raise RuntimeError(
                f"port {self.port} is in use (another `stockade serve`?): pick another --port"
            )
        step("cleaning leftovers of an earlier run")
        self.clean_leftovers()
        step(f"starting the EC2 API on {self.endpoint}")
        token = self.start_server()
        step("building the internet and the edge")
        inet = f"{self.prefix}inet"
        net.create(inet)
        self.edge.build(inet)
        self._start_outside_resolver(inet)
        from stockade.sandbox import services

        for k in range(1, self.hosts + 1):
            step(f"starting host-{k} and its agent")
            host_ns = f"{self.prefix}h{k}"
            log.info(
                "host-%d: namespace %s, uplink %s",
                k,
                host_ns,
                host_link(k)[1],
                extra={"component": f"host-{k}"},
            )
            net.create(host_ns)
            self.edge.attach_host(k, host_ns)
            daemon = HostDaemon(
                index=k,
                prefix=self.prefix,
                server=self.endpoint,
                token=token,
                uplink_gateway=host_link(k)[0],
                logs=self.data_dir / "instances",
                resolver=services.inside_resolver(self),
                metadata=services.metadata_server(self),
            )
            self.daemons.append(daemon)
            daemon.start()
        self.check_interrupted()
        self._follow(token)
        SandboxInfo(
            self.prefix,
            self.hosts,
            os.getpid(),
            self.endpoint,
            self.region,
            self.public_domain,
            self.public_pool,
        ).save(self.data_dir)
        self.check_interrupted()
        self.record.state = "ready"
        self.lock.record(self.record)
        if progress is not None:
            progress("ready")

    def _start_outside_resolver(self, inet: str) -> None:
        from stockade.sandbox import services

        net.address(inet, "lo", f"{OUTSIDE_RESOLVER}/32")
        with NetnsWorker(inet) as worker:
            udp = worker.call(bound_socket, socket.SOCK_DGRAM, OUTSIDE_RESOLVER, 53)
            tcp = worker.call(bound_socket, socket.SOCK_STREAM, OUTSIDE_RESOLVER, 53)
        self._servers.append(services.outside_resolver(self)(udp, tcp).start())

    def _follow(self, token: str) -> None:
        """Keep the edge (routes, NAT) and the region snapshot current."""
        http = httpx.Client(
            base_url=self.endpoint,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, read=40.0),
        )

        def loop() -> None:
            log.info("edge: following %s (%d hosts)", self.endpoint, self.hosts)
            revision = -1
            while not self._stop.is_set():
                try:
                    snap = http.get("/_stockade/v1/state").json()
                    self.snapshot = snap
                    self.edge.apply(snap)
                    revision = snap["revision"]
                    http.get(
                        "/_stockade/v1/changes",
                        params={"since": revision, "wait": 10, "limit": 1},
                    )
                    if self.server is not None and self.server.poll() is not None:
                        break
                except Exception as exc:  # noqa: BLE001 - keep the edge alive
                    if self._stop.is_set():
                        break
                    log.warning("edge: %s", exc)
                    self._stop.wait(1.0)
            http.close()

        t = threading.Thread(target=loop, name="edge", daemon=True)
        t.start()
        self._threads.append(t)

    def down(self) -> Teardown:
        """Stop everything :meth:`up` started, in whatever state it got to (idempotent).

        The stop flags are set first and the API server is asked to exit: it answers every
        long poll at once, so the hosts' loops, the agents and the edge all return within
        milliseconds rather than at the end of their poll waits."""
        started = time.monotonic()
        summary = Teardown()
        if self.record is not None and self.lock.fd is not None:
            self.record.state = "stopping"
            with contextlib.suppress(OSError):
                self.lock.record(self.record)
        self._stop.set()
        for daemon in self.daemons:
            daemon.signal_stop()
        server = self.server
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            summary.processes += 1
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
        stopped: list[subprocess.Popen] = []
        for daemon in self.daemons:
            # the instances' namespaces go with all the others below, at once; one by one
            # (routes, links, then the namespace) they took a fifth of a second each
            with daemon.lock:
                instances = list(daemon.running.values())
                daemon.running.clear()
            summary.instances += len(instances)
            for inst in instances:
                for proc in inst.procs:
                    if proc.poll() is None:
                        summary.processes += 1
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    stopped.append(proc)
            daemon.stop()
        for proc in stopped:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2)
        for srv in self._servers:
            srv.close()
        self._servers.clear()
        if self.edge.nft is not None:
            self.edge.nft.close()
            self.edge.nft = None
        summary.namespaces += len(self.clean_leftovers())
        if self.lock.fd is not None:
            (self.data_dir / STATE_FILE).unlink(missing_ok=True)
        summary.seconds = time.monotonic() - started
        self.teardown = summary
        if self.lock.fd is not None:
            self.lock.stopped(asdict(summary))
            log.info("sandbox %s: %s", self.prefix, summary.line())
        self.lock.release()
        if self._logs is not None:
            self._logs.remove()
            self._logs = None
        return summary

    def wait(self, done: threading.Event | None = None) -> None:
        """Run until ``done`` is set (or SIGINT/SIGTERM without ``done``), or the API
        server exits."""
        if done is None:
            done = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: done.set())
            signal.signal(signal.SIGTERM, lambda *_: done.set())
        while not done.is_set():
            if self.server is not None and self.server.poll() is not None:
                log.error("the API server exited; shutting the sandbox down")
                break
            done.wait(0.5)

    def check_interrupted(self) -> None:
        """Between start-up steps: stop if a signal asked to (a step is never cut in the
        middle, where it may hold a lock that the teardown needs)."""
        if self.interrupted is not None:
            raise Interrupted(self.interrupted)

    def run(self, progress: Any = None, ready: Any = None) -> Teardown:
        """`stockade up` in the foreground: start, call ``ready``, run until SIGINT or
        SIGTERM, tear down. A signal during start-up interrupts it; every exit path,
        including an exception in any step, removes what was made."""
        phase = "starting"
        done = threading.Event()
        pid = os.getpid()

        def on_signal(signum: int, _frame: Any) -> None:
            if os.getpid() != pid:
                # a child pyroute2 forked to enter a namespace inherits this handler: it
                # must never unwind into a copy of this process's start-up or teardown.
                # Ctrl-C reaches it too (same process group): it finishes its job; a
                # SIGTERM (pyroute2 stopping it) ends it
                if signum != signal.SIGINT:
                    os._exit(1)
                return
            if phase == "starting" and self.interrupted is None:
                self.interrupted = signal.Signals(signum).name
            done.set()  # starting: stop after this step; running: stop; stopping: under way

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                try:
                    self.up(progress)
                except Exception:
                    # a step broken by the signal (a forked helper killed, say) was an
                    # interruption, not a failure
                    self.check_interrupted()
                    raise
                phase = "running"
                if ready is not None:
                    ready()
                self.wait(done)
            finally:
                phase = "stopping"
                summary = self.down()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return summary
