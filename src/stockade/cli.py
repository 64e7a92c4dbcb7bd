"""The `stockade` command.

`serve` runs the API; `account` and `env` act on the data directory's database directly
(no server needed), so they work before the first `serve` and while it runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stockade import accounts, config
from stockade.store.db import Store

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
account_app = typer.Typer(no_args_is_help=True, help="Accounts and their access keys.")
app.add_typer(account_app, name="account")
err = Console(stderr=True)

DataDir = Annotated[
    str | None,
    typer.Option("--data-dir", help="State directory (default ~/.local/share/stockade)."),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL; PostgreSQL works too."),
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"stockade {version('stockade')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("stockade (not installed: `make run` or `pip install -e .` installs it)")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Stockade: EC2 security groups made real."""


def open_store(data_dir: str | None, database_url: str | None) -> Store:
    data = config.data_dir(data_dir)
    store = Store(config.database_url(data, database_url))
    store.migrate()
    accounts.ensure_default(store)
    return store


def fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)  # hints stay copyable
    raise typer.Exit(2)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = config.DEFAULT_PORT,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes sharing the port (more requests per second on more cores).",
        ),
    ] = 1,
    accept_any_credentials: Annotated[
        bool,
        typer.Option(
            "--accept-any-credentials",
            help="For test suites written for moto or LocalStack: an unknown access key gets "
            "an account of its own on first use, whatever its secret (keys of real accounts "
            "are still verified). Loopback addresses only.",
        ),
    ] = False,
) -> None:
    """Run the EC2 API server."""
    import os

    import uvicorn

    from stockade.api.app import (
        WORKER_ACCEPT_ANY,
        WORKER_DATABASE_URL,
        WORKER_ENDPOINT,
        create_app,
    )
    from stockade.service.common import Config
    from stockade.store.db import agent_token

    if accept_any_credentials and not _loopback(host):
        fail(
            f"--accept-any-credentials lets any key in, so it needs a loopback --host "
            f"(127.0.0.1, another 127.x.y.z, ::1 or localhost), not {host}"
        )
    _check_port(host, port)
    store = open_store(data_dir, database_url)
    endpoint = f"http://{host}:{port}"
    if workers == 1:
        app_: object = create_app(store, Config(endpoint=endpoint))
        app_.state.api.accept_any_credentials = accept_any_credentials  # type: ignore[attr-defined]
        factory = False
    else:
        os.environ[WORKER_ACCEPT_ANY] = "1" if accept_any_credentials else "0"
        # each worker process builds its own app (see stockade.api.app.worker_app)
        agent_token(store)  # created once, here, rather than raced for by the workers
        os.environ[WORKER_DATABASE_URL] = store.url
        os.environ[WORKER_ENDPOINT] = endpoint
        store.dispose()
        app_, factory = "stockade.api.app:worker_app", True
    err.print(f"[bold]Stockade[/bold] EC2 API on [cyan]{endpoint}[/cyan] ({_safe_url(store.url)})")
    err.print("Use it from a shell (stockade, the AWS CLI and the ec2-* tools):")
    err.print(f"  {_use_line(data_dir, database_url, endpoint)}", markup=False, soft_wrap=True)
    err.print("  aws ec2 describe-security-groups; ec2-describe-group", markup=False)
    if accept_any_credentials:
        err.print(
            "[bold yellow]warning: --accept-any-credentials: any access key is accepted with "
            "any secret, each unknown key getting an account of its own (keys of real "
            "accounts are still verified). For test suites only.[/bold yellow]"
        )
    uvicorn.run(
        app_,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # nothing sits in front of it: no X-Forwarded-* to trust
        factory=factory,
        workers=workers if workers > 1 else None,
    )


def _use_line(data_dir: str | None, database_url: str | None, endpoint: str) -> str:
    """The line to paste into a shell to use this server: ``export PATH=…/.venv/bin:$PATH;
    eval "$(stockade env …)"``, with the options that differ from the defaults."""
    import os
    from pathlib import Path

    words = ["stockade", "env"]
    data = config.data_dir(data_dir).resolve()
    if data != (Path.home() / ".local" / "share" / "stockade").resolve():
        words += ["--data-dir", str(data)]
    if database_url and os.environ.get("STOCKADE_DATABASE_URL") != database_url:
        # a password is not printed: the line says where it goes
        words += ["--database-url", re.sub(r"(://[^:/@]+:)[^@]+@", r"\1PASSWORD@", database_url)]
    if endpoint != f"http://127.0.0.1:{config.DEFAULT_PORT}":
        words += ["--endpoint", endpoint]
    return f'{_path_prefix()}eval "$({shlex.join(words)})"'


def _path_prefix() -> str:
    """``export PATH=…/.venv/bin:$PATH; `` when the venv's tools are not on PATH, else ""."""
    import os
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent  # the venv's bin (not resolved: that is its python)
    on_path = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    if (bin_dir / "stockade").exists() and bin_dir not in on_path:
        return f"export PATH={shlex.quote(str(bin_dir))}:$PATH; "
    return ""


def _loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
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
                holder = _port_holder(port)
                by = f" by {holder}" if holder else ""
                fail(
                    f"port {port} is in use{by}; pass --port N for another one "
                    "(or stop what holds it)"
                )
            if exc.errno == errno.EACCES:
                fail(f"port {port} needs root (ports below 1024 do); pass --port N above 1023")
            fail(f"cannot listen on {host}:{port}: {exc.strerror}; check --host and --port")


def _port_holder(port: int) -> str | None:
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


def _safe_url(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@app.command()
def env(
    name: Annotated[str, typer.Argument(help="Account name.")] = accounts.DEFAULT_ACCOUNT,
    endpoint: Annotated[
        str | None,
        typer.Option(help="API endpoint (default: the running sandbox's, or :8773)."),
    ] = None,
    region: Annotated[str, typer.Option(help="Region for AWS_DEFAULT_REGION.")] = "us-east-1",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print `export` lines for boto3, the AWS CLI and the classic ec2-* tools."""
    data, running = _locate(data_dir)
    _require_state(data, database_url, running)
    store = open_store(str(data), database_url)
    try:
        acct = accounts.get(store, name)
    except accounts.AccountError as e:
        fail(str(e))
    url = endpoint or (running.endpoint if running else None) or config.endpoint()
    secret = acct.secret_access_key
    if secret == accounts.ANY_SECRET:  # a key adopted by serve --accept-any-credentials
        secret = "any"
        err.print(
            f"note: {name} was made by `serve --accept-any-credentials` for key "
            f"{acct.access_key_id}: any secret works while the server runs with that flag"
        )
    lines = {
        "AWS_ACCESS_KEY_ID": acct.access_key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": region,
        "AWS_ENDPOINT_URL_EC2": url,
        "EC2_URL": url,
        "EC2_ACCESS_KEY": acct.access_key_id,
        "EC2_SECRET_KEY": secret,
        "STOCKADE_ACCOUNT_ID": acct.account_id,
    }
    for key, value in lines.items():
        print(f"export {key}={shlex.quote(value)}")


def _data_flag(data_dir: str | None) -> str | None:
    return data_dir or os.environ.get("STOCKADE_DATA_DIR") or None


def _locate(data_dir: str | None):
    """(data dir, running sandbox or None): an explicit --data-dir (or STOCKADE_DATA_DIR)
    wins; otherwise the running sandbox's (see stockade.sandbox.runtime.find)."""
    from stockade.sandbox import runtime

    explicit = _data_flag(data_dir)
    running = runtime.find(data_dir=explicit)
    if explicit:
        return Path(explicit), running
    if running is not None:
        return Path(running.data_dir), running
    return runtime.default_data_dir(), None


def _require_state(data: Path, database_url: str | None, running=None) -> None:
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
    flag = "" if data == _default_data() else f" --data-dir {shlex.quote(str(data))}"
    fail(
        f"there is no Stockade state in {data} (no stockade.db): start the sandbox with "
        f"`sudo stockade up{flag}` or the API alone with `stockade serve{flag}`, "
        "then run this again"
    )


def _default_data() -> Path:
    from stockade.sandbox import runtime

    return runtime.default_data_dir()


Server = Annotated[
    str | None,
    typer.Option("--server", help="Control plane URL (default http://127.0.0.1:8773)."),
]


def control_plane(server: str | None, data_dir: str | None, database_url: str | None):
    """An HTTP client for the agent-facing endpoints, with the token from the data dir
    (by default the running sandbox's data dir and endpoint)."""
    import httpx

    from stockade.store.db import agent_token

    data, running = _locate(data_dir)
    _require_state(data, database_url, running)
    token = agent_token(open_store(str(data), database_url))
    url = server or (running.endpoint if running else None) or config.endpoint()
    return httpx.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _get(client, path: str) -> dict:
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


@app.command()
def agent(
    host: Annotated[str, typer.Option("--host", help="This host's name.")],
    server: Server = None,
    netns: Annotated[
        str | None, typer.Option(help="Enforce inside this network namespace.")
    ] = None,
    uninstall: Annotated[
        bool, typer.Option("--uninstall", help="Remove Stockade's table and exit.")
    ] = False,
    resync_interval: Annotated[
        float,
        typer.Option(
            "--resync-interval",
            min=0,
            help="Minutes between full rewrites of the table, repairing changes made to it "
            "outside Stockade (0: never).",
        ),
    ] = 5.0,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Follow the change log and enforce this host's groups with nftables."""
    from stockade.dataplane.agent import Agent
    from stockade.store.db import agent_token

    token = agent_token(open_store(data_dir, database_url))
    worker = Agent(
        config.endpoint(server), token, host, netns=netns, resync_interval=resync_interval * 60
    )
    if uninstall:
        worker.uninstall()
        err.print(f"removed table inet stockade{' in ' + netns if netns else ''}")
        return
    err.print(f"agent for host [cyan]{host}[/cyan] following {config.endpoint(server)}")
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    finally:
        worker.close()


_AGENT_HINTS = {
    "transport": "the agent cannot reach the control plane: is `stockade serve` running?",
    "rejected": "the control plane refused the agent: check its token (`stockade agent-token`)",
    "decode": "the control plane sent a record the agent cannot read: see the agent's log",
    "kernel": "nft refused the table: see the agent's log; `nft list ruleset` on the host",
}


def agent_error_cell(report: dict) -> str:
    """The "error" column of an agent in `stockade status`: the failure it is retrying
    (kind, message, attempts in a row, next attempt), or the last one it recovered from."""
    import time

    error = report.get("error")
    if error:
        kind = report.get("error_kind") or "error"
        cell = f"[red]{kind}[/red]: {escape(str(error)[:160])}"
        hint = _AGENT_HINTS.get(kind)
        if hint:
            cell += f" [dim]({hint})[/dim]"
        retries = report.get("retries")
        if retries:
            cell += f" ({retries} failed in a row"
            retry_in = report.get("retry_in_s")
            cell += f", retrying within {retry_in:.1f} s)" if retry_in is not None else ")"
        return cell
    last, at = report.get("last_error"), report.get("last_error_at")
    if last and isinstance(at, int | float):
        ago = max(time.time() - at, 0)
        kind = report.get("last_error_kind") or "error"
        return f"[dim]ok; last {kind} error {ago:.0f} s ago: {escape(str(last)[:160])}[/dim]"
    return ""


@app.command()
def status(
    server: Server = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Whether the sandbox is up, its hosts, instances and each agent's applied revision."""
    data, running = _locate(data_dir)
    sandbox = _sandbox_state(data, running)
    out = Console()
    if not as_json:
        out.print(sandbox["text"])
    with control_plane(server, str(data), database_url) as client:
        data_ = _get(client, "/_stockade/v1/status")
        names = {g["id"]: g["name"] for g in _get(client, "/_stockade/v1/state")["groups"]}
    now_agents = data_["agents"]
    for a in now_agents:
        a["stale"] = _agent_stale(a)
    if as_json:
        data_["sandbox"] = {k: v for k, v in sandbox.items() if k != "text"}
        data_["group_names"] = names
        print(json.dumps(data_, indent=2))
        return
    out.print(f"control plane revision [bold]{data_['revision']}[/bold]")
    agents = Table(
        "host", "applied revision", "lag", "interfaces", "last sync ms", "last report", "error"
    )
    for a in now_agents:
        age = a.get("age_seconds")
        agents.add_row(
            a["host"],
            str(a.get("revision")),
            str(a["lag"]),
            str(a.get("interfaces", "")),
            str(a.get("last_sync_ms", "")),
            ("[red]" if a["stale"] else "") + (f"{age:.0f} s ago" if age is not None else "?"),
            agent_error_cell(a),
        )
    out.print(agents)
    for a in now_agents:
        if a["stale"]:
            err.print(
                f"[yellow]warning:[/yellow] the agent of {a['host']} has not reported for "
                f"{a['age_seconds']:.0f} s (it polls every {_poll_seconds(a):.0f} s): is it "
                f"stuck? See `stockade logs {a['host']}`"
            )
    inst = Table("instance", "host", "private ip", "public ip", "groups")
    for i in data_["interfaces"]:
        inst.add_row(
            i["instance_id"],
            i["host"],
            ", ".join(i["private_ipv4"]),
            i.get("public_ipv4") or "",
            ", ".join(f"{g} ({names[g]})" if g in names else g for g in i["group_ids"]),
        )
    out.print(inst)


def _poll_seconds(agent: dict) -> float:
    poll = agent.get("poll_seconds")
    return 20.0 if poll is None else float(poll)


def _agent_stale(agent: dict) -> bool:
    """An agent reports after every poll; silent for longer than its poll (and a grace of
    a second and a quarter of the poll, for the report itself), it is stuck or gone."""
    age = agent.get("age_seconds")
    poll = _poll_seconds(agent)
    return age is not None and float(age) > poll * 1.25 + 1.0


def _data_dir_record(data: Path) -> dict:
    """What the data dir's sandbox.json (region.STATE_FILE) says, if anything (read here
    rather than through region.SandboxInfo, whose import costs most of a second)."""
    try:
        raw = json.loads((data / "sandbox.json").read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _sandbox_state(data: Path, running) -> dict:
    """Is the sandbox up? From the runtime record and its lock (a live `stockade up`)."""
    from stockade.sandbox import runtime

    if running is not None:
        flags = running.flags()
        return {
            "up": True,
            "state": running.state,
            "prefix": running.prefix,
            "pid": running.pid,
            "data_dir": running.data_dir,
            "port": running.port,
            "hosts": running.hosts,
            "text": (
                f"sandbox [bold green]{running.state}[/bold green] (prefix {running.prefix}, "
                f"{running.describe()}, {running.hosts} host{'' if running.hosts == 1 else 's'}); "
                f"{running.down_hint()} stops it"
                + (f" [dim](other commands: {flags})[/dim]" if flags else "")
            ),
        }
    stale = _data_dir_record(data)
    prefix = stale.get("prefix", runtime.DEFAULT_PREFIX)
    text = f"sandbox [bold red]not running[/bold red] for {data}"
    if stale:
        text += f" (its record says pid {stale.get('pid')}, which holds no sandbox lock)"
    flag = "" if data == _default_data() else f" --data-dir {shlex.quote(str(data))}"
    text += f"; `sudo stockade up{flag}` starts it"
    return {"up": False, "prefix": prefix, "data_dir": str(data), "text": text}


@app.command()
def explain(
    src: Annotated[
        str, typer.Option("--from", help="Instance id, private/public IP or outside IP.")
    ],
    dst: Annotated[str, typer.Option("--to", help="Instance id or IP.")],
    port: Annotated[int, typer.Option(help="Destination port (tcp/udp).")] = -1,
    protocol: Annotated[str, typer.Option(help="tcp, udp, icmp, icmpv6 or a number.")] = "tcp",
    icmp_type: Annotated[int, typer.Option(help="ICMP type (-1 any).")] = -1,
    icmp_code: Annotated[int, typer.Option(help="ICMP code (-1 any).")] = -1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    server: Server = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Is a flow allowed, and which rules decide it (both directions)?"""
    from stockade.analysis.explain import ExplainError
    from stockade.analysis.explain import as_json as decision_json
    from stockade.analysis.explain import explain as run_explain

    with control_plane(server, data_dir, database_url) as client:
        snap = _get(client, "/_stockade/v1/state")
    try:
        decision = run_explain(
            snap, src, dst, protocol=protocol, port=port, icmp_type=icmp_type, icmp_code=icmp_code
        )
    except (ExplainError, ValueError) as exc:
        fail(str(exc))
    data = decision_json(decision)
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        out = Console()
        colour = "green" if decision.allowed else "red"
        out.print(
            f"[bold {colour}]{data['verdict']}[/bold {colour}]: {data['flow']} "
            f"from {data['from']} to {data['to']}"
        )
        for name in ("egress", "ingress"):
            side = data[name]
            if not side["checked"]:
                out.print(f"  {name}: not checked ({side['reason'] or 'not an instance'})")
                continue
            mark = "allows" if side["allowed"] else "denies"
            out.print(f"  {name}: {mark} — {side['reason']}")
            for r in side["rules"]:
                out.print(f"    {r['rule_id'] or '-'}  {r['group_id']}  {r['rule']}")
    raise typer.Exit(0 if decision.allowed else 1)


@app.command()
def up(
    hosts: Annotated[int, typer.Option(help="Sandbox hosts (each with its agent).")] = 2,
    port: Annotated[int, typer.Option(help="API port.")] = config.DEFAULT_PORT,
    background: Annotated[
        bool, typer.Option("--background", "-d", help="Start, then return to the shell.")
    ] = False,
    prefix: Annotated[str, typer.Option(help="Name prefix of the sandbox's namespaces.")] = "skr-",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Start the sandbox region: the API, the edge, the internet and N hosts (root)."""
    import logging
    import subprocess
    import sys
    import time

    from rich.progress import Progress, SpinnerColumn, TextColumn

    from stockade.sandbox import runtime
    from stockade.sandbox.region import Interrupted, Sandbox, port_free

    if os.geteuid() != 0:
        fail("the sandbox builds network namespaces: run it as root (sudo make run)")
    problem = runtime.check_prefix(prefix)
    if problem is not None:
        fail(problem)
    data = config.data_dir(data_dir)
    for other in (runtime.find(prefix=prefix), runtime.find(data_dir=data)):
        if other is not None and other.pid != os.getpid():
            fail(
                f"a sandbox is already running with prefix {other.prefix!r} "
                f"({other.describe()}); {other.down_hint()} stops it"
                + ("" if other.prefix != prefix else ", or pick another --prefix")
            )
    if not port_free(port):
        holder = next((r for r in runtime.running() if r.port == port), None)
        if holder is not None:
            fail(
                f"port {port} is in use by the sandbox with prefix {holder.prefix} "
                f"({holder.describe()}): pick another with --port"
            )
        _check_port("127.0.0.1", port)  # names the process that holds it
    if background:
        log = open(data / "sandbox.log", "ab")  # noqa: SIM115
        args = [
            sys.executable,
            "-m",
            "stockade.cli",
            "up",
            "--hosts",
            str(hosts),
            "--port",
            str(port),
            "--prefix",
            prefix,
            "--data-dir",
            str(data),
        ]
        if database_url:
            args += ["--database-url", database_url]
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True
        ) as progress:
            progress.add_task("starting the sandbox in the background", total=None)
            while time.monotonic() < deadline:
                record = runtime.load(prefix)
                if record is not None and record.pid == proc.pid and record.state == "ready":
                    break
                if proc.poll() is not None:
                    fail(f"the sandbox failed to start; see `stockade logs sandbox{_dd(data)}`")
                time.sleep(0.2)
            else:
                fail(f"the sandbox did not come up in time; see `stockade logs sandbox{_dd(data)}`")
        record = runtime.load(prefix)
        err.print(
            f"sandbox running in the background (pid {proc.pid}); "
            f"{record.down_hint() if record else '`stockade down`'} stops it"
        )
        _sandbox_banner(data, port, hosts)
        return
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sandbox = Sandbox(data, hosts=hosts, port=port, prefix=prefix, database_url=database_url)

    def ready() -> None:
        _sandbox_banner(data, port, hosts)
        err.print("Ctrl-C stops the sandbox and removes every namespace it made.")

    outcome = "stopped"
    try:
        if err.is_terminal:
            with Progress(
                SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True
            ) as progress:
                task = progress.add_task("starting", total=None)

                def show(text: str) -> None:
                    if text == "ready":
                        progress.stop()
                        ready()
                    else:
                        progress.update(task, description=text)

                sandbox.run(show)
        else:  # a log or a pipe: one line per step

            def line(text: str) -> None:
                err.print(f"up: {text}")
                if text == "ready":
                    ready()

            sandbox.run(line)
    except runtime.AlreadyRunning as exc:
        fail(str(exc))
    except Interrupted as exc:
        outcome = f"interrupted ({exc}) during start-up"
    except Exception as exc:  # noqa: BLE001 - say what failed; down() has cleaned up
        summary = sandbox.teardown
        err.print(f"[red]error:[/red] the sandbox failed to start: {exc}")
        if summary is not None:
            err.print(f"cleaned up: {summary.line()}")
        raise typer.Exit(1) from None
    summary = sandbox.teardown
    err.print(
        f"sandbox {outcome}: {summary.line() if summary else 'nothing to remove'}", soft_wrap=True
    )
    if outcome != "stopped":
        raise typer.Exit(130)


def _dd(data: Path) -> str:
    """`` --data-dir X`` when X is not the default (for the hints commands print)."""
    return (
        ""
        if data.resolve() == _default_data().resolve()
        else f" --data-dir {shlex.quote(str(data))}"
    )


def _sandbox_banner(data: Path, port: int, hosts: int) -> None:
    flags = _dd(data)
    env_flags = flags + (
        "" if flags or port == config.DEFAULT_PORT else f" --endpoint http://127.0.0.1:{port}"
    )
    err.print(
        f"[bold]Stockade sandbox[/bold]: EC2 API on http://127.0.0.1:{port}, "
        f"{hosts} host{'' if hosts == 1 else 's'}",
        soft_wrap=True,
    )
    err.print(f'  {_path_prefix()}eval "$(stockade env{env_flags})"', markup=False, soft_wrap=True)
    err.print("  ec2run ami-fba54092 -n 2 -g default", soft_wrap=True)
    err.print(
        f"  stockade outside{flags} --from 192.168.1.130 -- nmap -Pn -p 22,80 <public dns name>",
        soft_wrap=True,
    )
    err.print(f"  stockade status{flags}; stockade logs{flags} host-1", soft_wrap=True)


@app.command()
def down(
    data_dir: DataDir = None,
    prefix: Annotated[
        str | None,
        typer.Option(help="The sandbox's namespace prefix (default: the running one's, skr-)."),
    ] = None,
) -> None:
    """Stop the sandbox and remove every namespace, link and table it made."""
    import signal
    import time

    from stockade.sandbox import runtime

    explicit = _data_flag(data_dir)
    if prefix is not None:
        problem = runtime.check_prefix(prefix)
        if problem is not None:
            fail(problem)
        record = runtime.find(prefix=prefix)
    elif explicit:
        record = runtime.find(data_dir=explicit)
        if record is None:
            prefix = _data_dir_record(Path(explicit)).get("prefix")
    else:
        prefix = runtime.DEFAULT_PREFIX
        record = runtime.find(prefix=prefix)
    if record is not None:
        started = time.monotonic()
        os.kill(record.pid, signal.SIGTERM)
        deadline = started + 30
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if record.alive():
            os.kill(record.pid, signal.SIGKILL)
            while record.alive() and time.monotonic() < deadline + 5:
                time.sleep(0.05)
        summary = runtime.read_stopped(record.prefix)
        if summary is not None:
            text = runtime.Teardown(**summary).line()
            runtime.forget_stopped(record.prefix)
        else:
            text = "it did not say what it removed"
        err.print(
            f"sandbox {record.prefix} stopped (pid {record.pid}, data dir {record.data_dir}): "
            f"{text}; {time.monotonic() - started:.1f} s in all",
            soft_wrap=True,
        )
        prefix = record.prefix
    left: list[str] = []
    if prefix is not None and runtime.namespaces_with(prefix):
        from stockade.sandbox import net

        # only with the prefix's lock: never the namespaces of a sandbox alive elsewhere
        lock = runtime.Lock(prefix)
        try:
            lock.acquire()
        except runtime.AlreadyRunning as exc:
            if record is not None:
                fail(f"the sandbox did not stop: {exc}")
            # the prefix a stale record named is another data dir's live sandbox now
            prefix = None
        else:
            try:
                left = net.with_prefix(prefix)
                for name in left:
                    net.remove(name)
            finally:
                lock.release()
    if explicit and Path(explicit).is_dir():
        (Path(explicit) / "sandbox.json").unlink(missing_ok=True)  # region.STATE_FILE
    if record is None:
        what = f"with prefix {prefix!r}" if prefix else f"for data dir {explicit}"
        err.print(
            f"no sandbox {what} was running"
            + (f"; removed {len(left)} leftover namespaces" if left else "")
        )
        others = [r for r in runtime.running() if r.prefix != prefix]
        for other in others:
            err.print(f"  running: prefix {other.prefix} ({other.describe()}): {other.down_hint()}")
    elif left:
        err.print(f"removed {len(left)} leftover namespaces")


def _sandbox(data_dir: str | None):
    """The running sandbox a command acts on (its runtime record)."""
    data, running = _locate(data_dir)
    if running is None:
        fail(
            f"no sandbox is running{' for ' + str(data) if _data_flag(data_dir) else ''}: "
            f"start one with `sudo stockade up{_dd(data)}` (or `sudo make run`)"
        )
    return running


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(
    ctx: typer.Context,
    instance: Annotated[str, typer.Argument(help="Instance id (i-...).")],
    data_dir: DataDir = None,
) -> None:
    """Run a command inside an instance: stockade exec i-... -- CMD ..."""
    import os

    from stockade.sandbox import net
    from stockade.sandbox.hostd import instance_netns

    _exec_usage(ctx, instance)
    info = _sandbox(data_dir)
    ns = instance_netns(info.prefix, instance)
    if not net.exists(ns):
        fail(
            f"{instance} is not running in the sandbox "
            f"(see `stockade status{_dd(Path(info.data_dir))}`)"
        )
    cmd = list(ctx.args)
    os.execvp("ip", ["ip", "netns", "exec", ns, *cmd])


def _exec_usage(ctx: typer.Context, instance: str) -> None:
    """No command to run: say how to give one (a shell is ``-- sh``), exit 2."""
    if ctx.args:
        return
    err.print(ctx.get_usage())
    err.print(
        f"[red]error:[/red] no command to run in {instance}: "
        f"give it after --, e.g. `stockade exec {instance} -- ip addr` "
        f"(`stockade exec {instance} -- sh` for a shell)"
    )
    raise typer.Exit(2)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def outside(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Option("--from", help="The outside client's address.")
    ] = "203.0.113.10",
    data_dir: DataDir = None,
) -> None:
    """Run a command on the internet, from an address you name: stockade outside -- CMD ..."""
    import os

    from stockade.sandbox.region import ensure_outside

    info = _sandbox(data_dir)
    try:
        ns = ensure_outside(info.prefix, source)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    cmd = list(ctx.args) or ["sh"]
    os.execvp("ip", ["ip", "netns", "exec", ns, *cmd])


@app.command()
def demo(
    story: Annotated[str, typer.Argument(help="albert, mary or bastion (the seeds' stories).")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run a seed story step by step in the running sandbox, in an account of its own
    (demo-<story>, reset at start): your own groups and instances are never touched."""
    from stockade.sandbox.demo import STORIES, demo_account, run_story

    if story not in STORIES:
        fail(f"unknown story {story!r}: choose one of {', '.join(STORIES)}")
    info = _sandbox(data_dir)
    data = Path(info.data_dir)
    _require_state(data, database_url, info)
    store = open_store(str(data), database_url)
    try:
        acct = demo_account(store, story, info.endpoint)
    finally:
        store.dispose()
    env = {
        "EC2_URL": info.endpoint,
        "EC2_ACCESS_KEY": acct.access_key_id,
        "EC2_SECRET_KEY": acct.secret_access_key,
        "STOCKADE_ACCOUNT_ID": acct.account_id,
    }
    raise typer.Exit(run_story(story, env, str(data)))


@app.command()
def logs(
    name: Annotated[
        str | None,
        typer.Argument(help="api, host-N, edge, dns, metadata, sandbox or an instance id."),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", help="Lines to show first (0: all).")
    ] = 200,
    data_dir: DataDir = None,
) -> None:
    """Show the sandbox's logs (in the data dir); without a name, list them."""
    import sys
    import threading

    from stockade.sandbox import logs as sandbox_logs

    data, running = _locate(data_dir)
    names = sandbox_logs.available(data, running.hosts if running else 0)
    if name is None or not sandbox_logs.known(name):
        table = Table("log", "file", "size")
        for n in names:
            f = sandbox_logs.path(data, n)
            table.add_row(n, str(f), f"{f.stat().st_size} B" if f.exists() else "(none yet)")
        if name is not None:
            err.print(f"[red]error:[/red] no log named {name!r}; these are the logs of {data}:")
            Console(stderr=True).print(table)
            raise typer.Exit(2)
        Console().print(table)
        return
    file = sandbox_logs.path(data, name)
    offset = 0
    if file.exists():
        text, offset = sandbox_logs.tail(file, lines)
        sys.stdout.write(text)
        sys.stdout.flush()
    elif not follow:
        fail(
            f"{name} has written no log in {data} yet ({file}); "
            f"`stockade logs{_dd(data)} -f {name}` waits for it"
        )
    if not follow:
        return
    stop = threading.Event()

    def write(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    try:
        sandbox_logs.follow(file, write, stop, start=offset)
    except KeyboardInterrupt:
        stop.set()


@app.command()
def reset(
    account: Annotated[
        list[str] | None,
        typer.Option(
            "--account", help="Only this account (name or 12-digit id; repeatable). Default: all."
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Really delete (nothing happens without).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete every resource of the accounts, keeping the accounts and their keys (for test
    suites, like moto's reset); each region gets its default VPC, subnets and group again.

    A running server, its agents and the sandbox see the change at once.

    Over HTTP: `POST /_stockade/v1/reset` (the agent token, or an account's SigV4 keys)."""
    from stockade.service import reset as reset_service

    store = open_store(data_dir, database_url)
    ids: list[str] | None = None
    if account:
        known = {a.name: a.account_id for a in accounts.list_all(store)}
        known.update({aid: aid for aid in known.values()})
        missing = [a for a in account if a not in known]
        if missing:
            fail(f"no account named {missing[0]!r} (see `stockade account list`)")
        ids = [known[a] for a in account]
    if not yes:
        found = reset_service.inventory(store, ids)
        err.print("[bold]stockade reset[/bold] would delete:")
        for item in found:
            where = ", ".join(item.regions) or "no region used yet"
            err.print(f"  account {item.name} ({item.account_id}, {where}): {item.summary()}")
        err.print(
            "and then recreate each region's default VPC, subnets and default group; "
            "the accounts and their keys stay."
        )
        err.print("Nothing was changed: run it again with [bold]--yes[/bold] to do it.")
        raise typer.Exit(1)
    done, tx = reset_service.reset(store, ids)
    if as_json:
        print(json.dumps({"revision": tx.revision, "accounts": [d.as_json() for d in done]}))
        return
    for item in done:
        print(f"reset account {item.name} {item.account_id}: deleted {item.summary()}")


@app.command("agent-token")
def agent_token_cmd(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Print the token data-plane agents use to read the change log."""
    from stockade.store.db import agent_token

    print(agent_token(open_store(data_dir, database_url)))


@account_app.command("create")
def account_create(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an account (12-digit id) with an access key pair."""
    store = open_store(data_dir, database_url)
    try:
        acct = accounts.create(store, name)
    except accounts.AccountError as e:
        fail(str(e))
    if as_json:
        data = acct.as_json()
        del data["name"]
        print(json.dumps(data))
    else:
        print(f"account {acct.name} {acct.account_id}")
        print(f"access key {acct.access_key_id}")
        print(f"secret key {acct.secret_access_key}")


@account_app.command("list")
def account_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List accounts."""
    store = open_store(data_dir, database_url)
    rows = accounts.list_all(store)
    if as_json:
        print(json.dumps([a.as_json() for a in rows]))
        return
    table = Table("name", "account id", "access key id")
    for a in rows:
        table.add_row(a.name, a.account_id, a.access_key_id)
    Console().print(table)


@account_app.command("delete")
def account_delete(name: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Delete an account and everything it owns."""
    store = open_store(data_dir, database_url)
    try:
        acct = accounts.delete_account(store, name)
    except accounts.AccountError as e:
        fail(str(e))
    print(f"deleted account {acct.name} {acct.account_id}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
