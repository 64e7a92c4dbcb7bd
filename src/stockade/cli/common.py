"""What the command modules share: the common options, the data dir and the running
sandbox, the control-plane client, and how a command fails."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from stockade import config

if TYPE_CHECKING:
    from stockade.store.db import Store

err = Console(stderr=True)


DataDir = Annotated[
    str | None,
    typer.Option("--data-dir", help="State directory (default ~/.local/share/stockade)."),
]


DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL; PostgreSQL works too."),
]


def open_store(data_dir: str | None, database_url: str | None) -> Store:
    from stockade import accounts
    from stockade.store.db import Store

    data = config.data_dir(data_dir)
    store = Store(config.database_url(data, database_url))
    store.migrate()
    accounts.ensure_default(store)
    return store


def fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)  # hints stay copyable
    raise typer.Exit(2)


def path_prefix() -> str:
    """``export PATH=…/.venv/bin:$PATH; `` when the venv's tools are not on PATH, else ""."""
    import os
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent  # the venv's bin (not resolved: that is its python)
    on_path = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    if (bin_dir / "stockade").exists() and bin_dir not in on_path:
        return f"export PATH={shlex.quote(str(bin_dir))}:$PATH; "
    return ""


def loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """Fail, saying who holds it and what to do, when ``host:port`` cannot be listened on."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                holder = port_holder(port)
                by = f" by {holder}" if holder else ""
                fail(
                    f"port {port} is in use{by}; pass --port N for another one "
                    "(or stop what holds it)"
                )
            if exc.errno == errno.EACCES:
                fail(f"port {port} needs root (ports below 1024 do); pass --port N above 1023")
            fail(f"cannot listen on {host}:{port}: {exc.strerror}; check --host and --port")


def port_holder(port: int) -> str | None:
    """``pid 1234 (stockade serve --port 8773)``: the process listening on ``port``, read
    from /proc (None when that cannot be told)."""
    import os
    from pathlib import Path

    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # local address "0100007F:2245", state 0A (LISTEN), inode in column 9
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                continue
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
        # "python3 /path/.venv/bin/stockade serve ..." reads better as "stockade serve ..."
        while len(words) > 1 and os.path.basename(words[0]).startswith("python"):
            words = words[1:]
        if len(words) > 1 and words[0] == "-m":  # python -m pytest
            words = words[1:]
        if words:
            words[0] = os.path.basename(words[0])
        return f"pid {pid} ({' '.join(words)[:120]})"
    return None


def safe_url(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def data_flag(data_dir: str | None) -> str | None:
    return data_dir or os.environ.get("STOCKADE_DATA_DIR") or None


def locate(data_dir: str | None):
    """(data dir, running sandbox or None): an explicit --data-dir (or STOCKADE_DATA_DIR)
    wins; otherwise the running sandbox's (see stockade.sandbox.runtime.find)."""
    from stockade.sandbox import runtime

    explicit = data_flag(data_dir)
    running = runtime.find(data_dir=explicit)
    if explicit:
        return Path(explicit), running
    if running is not None:
        return Path(running.data_dir), running
    return runtime.default_data_dir(), None


def require_state(data: Path, database_url: str | None, running=None) -> None:
    """Refuse to invent a new database (and an account whose keys no server knows)."""
    if database_url or os.environ.get("STOCKADE_DATABASE_URL"):
        return
    if running is not None and running.external_database:
        fail(
            f"the running sandbox (prefix {running.prefix}) keeps its state in the database "
            "it was started with: pass the same --database-url (or set STOCKADE_DATABASE_URL)"
        )
    if (data / "stockade.db").exists():
        return
    flag = "" if data == default_data() else f" --data-dir {shlex.quote(str(data))}"
    fail(
        f"there is no Stockade state in {data} (no stockade.db): start the sandbox with "
        f"`sudo stockade up{flag}` or the API alone with `stockade serve{flag}`, "
        "then run this again"
    )


def default_data() -> Path:
    from stockade.sandbox import runtime

    return runtime.default_data_dir()


Server = Annotated[
    str | None,
    typer.Option("--server", help="Control plane URL (default http://127.0.0.1:8773)."),
]


def control_plane(server: str | None, data_dir: str | None, database_url: str | None):
    """An HTTP client for the agent-facing endpoints, with the token from the data dir
    (by default the running sandbox's data dir and endpoint); ``server`` may name several
    URLs of one fleet, comma-separated (it fails over between them)."""
    from stockade.hosts.client import HostClient
    from stockade.store.db import agent_token

    data, running = locate(data_dir)
    require_state(data, database_url, running)
    token = agent_token(open_store(str(data), database_url))
    from stockade import tls

    served = tls.record(data)  # the last `serve --tls` of this data dir
    url = (
        server
        or (running.endpoint if running else None)
        or (served["endpoint"] if served else None)
        or config.endpoint()
    )
    # https: the data dir's CA (`serve --tls`)
    return HostClient(url, token, timeout=30, verify=tls.client_verify(data, url.split(",")[0]))


def get_json(client, path: str) -> dict:
    import httpx

    try:
        resp = client.get(path)
    except httpx.HTTPError as exc:
        fail(
            f"cannot reach the control plane at {client.base_url} ({exc}); "
            "start it with `sudo stockade up` (or `stockade serve`), or name it with --server"
        )
    if resp.status_code != 200:
        fail(f"{path}: HTTP {resp.status_code} {resp.text[:200]}")
    return resp.json()


def data_dir_record(data: Path) -> dict:
    """What the data dir's sandbox.json (region.STATE_FILE) says, if anything (read here
    rather than through region.SandboxInfo, whose import costs most of a second)."""
    try:
        raw = json.loads((data / "sandbox.json").read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def dd_flag(data: Path) -> str:
    """`` --data-dir X`` when X is not the default (for the hints commands print)."""
    return (
        ""
        if data.resolve() == default_data().resolve()
        else f" --data-dir {shlex.quote(str(data))}"
    )


def running_sandbox(data_dir: str | None):
    """The running sandbox a command acts on (its runtime record)."""
    data, running = locate(data_dir)
    if running is None:
        fail(
            f"no sandbox is running{' for ' + str(data) if data_flag(data_dir) else ''}: "
            f"start one with `sudo stockade up{dd_flag(data)}` (or `sudo make run`)"
        )
    return running
