"""The `stockade` command.

`serve` runs the API; `account` and `env` act on the data directory's database directly
(no server needed), so they work before the first `serve` and while it runs.
"""

from __future__ import annotations

import json
import re
import shlex
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
    err.print(f"[red]error:[/red] {message}")
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
    import sys
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
    line = f'eval "$({shlex.join(words)})"'
    bin_dir = Path(sys.executable).parent  # the venv's bin (not resolved: that is its python)
    on_path = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    if (bin_dir / "stockade").exists() and bin_dir not in on_path:
        line = f"export PATH={shlex.quote(str(bin_dir))}:$PATH; {line}"
    return line


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
        str | None, typer.Option(help="API endpoint (default http://127.0.0.1:8773).")
    ] = None,
    region: Annotated[str, typer.Option(help="Region for AWS_DEFAULT_REGION.")] = "us-east-1",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print `export` lines for boto3, the AWS CLI and the classic ec2-* tools."""
    store = open_store(data_dir, database_url)
    try:
        acct = accounts.get(store, name)
    except accounts.AccountError as e:
        fail(str(e))
    url = config.endpoint(endpoint)
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


Server = Annotated[
    str | None,
    typer.Option("--server", help="Control plane URL (default http://127.0.0.1:8773)."),
]


def control_plane(server: str | None, data_dir: str | None, database_url: str | None):
    """An HTTP client for the agent-facing endpoints, with the token from the data dir."""
    import httpx

    from stockade.store.db import agent_token

    token = agent_token(open_store(data_dir, database_url))
    return httpx.Client(
        base_url=config.endpoint(server),
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
            "is `stockade serve` running?"
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
    """Hosts, instances and each agent's applied revision."""
    with control_plane(server, data_dir, database_url) as client:
        data = _get(client, "/_stockade/v1/status")
    if as_json:
        print(json.dumps(data, indent=2))
        return
    out = Console()
    out.print(f"control plane revision [bold]{data['revision']}[/bold]")
    agents = Table("host", "applied revision", "lag", "interfaces", "last sync ms", "error")
    for a in data["agents"]:
        agents.add_row(
            a["host"],
            str(a.get("revision")),
            str(a["lag"]),
            str(a.get("interfaces", "")),
            str(a.get("last_sync_ms", "")),
            agent_error_cell(a),
        )
    out.print(agents)
    inst = Table("instance", "host", "private ip", "public ip", "groups")
    for i in data["interfaces"]:
        inst.add_row(
            i["instance_id"],
            i["host"],
            ", ".join(i["private_ipv4"]),
            i.get("public_ipv4") or "",
            ", ".join(i["group_ids"]),
        )
    out.print(inst)


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
    import os
    import subprocess
    import sys

    from rich.progress import Progress, SpinnerColumn, TextColumn

    from stockade.sandbox.region import Sandbox, SandboxInfo

    if os.geteuid() != 0:
        fail("the sandbox builds network namespaces: run it as root (sudo make run)")
    data = config.data_dir(data_dir)
    running = SandboxInfo.load(data)
    if running is not None and running.alive() and running.pid != os.getpid():
        fail(f"a sandbox is already running (pid {running.pid}); `stockade down` stops it")
    _check_port("127.0.0.1", port)
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
        import time

        deadline = time.monotonic() + 120
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True
        ) as progress:
            progress.add_task("starting the sandbox in the background", total=None)
            while time.monotonic() < deadline:
                info = SandboxInfo.load(data)
                if info is not None and info.pid == proc.pid:
                    break
                if proc.poll() is not None:
                    fail(f"the sandbox failed to start; see {data / 'sandbox.log'}")
                time.sleep(0.2)
            else:
                fail(f"the sandbox did not come up in time; see {data / 'sandbox.log'}")
        err.print(f"sandbox running in the background (pid {proc.pid}); `stockade down` stops it")
        _sandbox_banner(port, hosts, data_dir)
        return
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sandbox = Sandbox(data, hosts=hosts, port=port, prefix=prefix, database_url=database_url)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True
    ) as progress:
        task = progress.add_task("starting", total=None)
        try:
            sandbox.up(lambda text: progress.update(task, description=text))
        except Exception as exc:
            sandbox.down()
            fail(f"the sandbox failed to start: {exc}")
    _sandbox_banner(port, hosts, data_dir)
    err.print("Ctrl-C stops the sandbox and removes every namespace it made.")
    try:
        sandbox.wait()
    finally:
        err.print("stopping the sandbox ...")
        sandbox.down()


def _sandbox_banner(port: int, hosts: int, data_dir: str | None = None) -> None:
    endpoint = f"http://127.0.0.1:{port}"
    err.print(f"[bold]Stockade sandbox[/bold]: EC2 API on {endpoint}, {hosts} hosts")
    err.print(f"  {_use_line(data_dir, None, endpoint)}", markup=False, soft_wrap=True)
    err.print("  ec2run ami-fba54092 -n 2 -g default")
    err.print("  stockade outside --from 192.168.1.130 -- nmap -Pn -p 22,80 <public dns name>")


@app.command()
def down(data_dir: DataDir = None) -> None:
    """Stop the sandbox and remove every namespace, link and table it made."""
    import os
    import signal
    import time

    from stockade.sandbox import net
    from stockade.sandbox.region import STATE_FILE, SandboxInfo

    data = config.data_dir(data_dir)
    info = SandboxInfo.load(data)
    prefix = info.prefix if info else "skr-"
    if info is not None and info.alive():
        os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while info.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    left = net.with_prefix(prefix)
    for name in left:
        net.remove(name)
    (data / STATE_FILE).unlink(missing_ok=True)
    err.print("sandbox stopped" + (f"; removed {len(left)} leftover namespaces" if left else ""))


def _sandbox(data_dir: str | None):
    from stockade.sandbox.region import SandboxInfo

    info = SandboxInfo.load(config.data_dir(data_dir))
    if info is None or not info.alive():
        fail("no sandbox is running: start one with `stockade up` (or `make run`)")
    return info


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
        fail(f"{instance} is not running in the sandbox (see `stockade status`)")
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
) -> None:
    """Run a seed story step by step against the running sandbox."""
    from stockade.sandbox.demo import STORIES, run_story

    if story not in STORIES:
        fail(f"unknown story {story!r}: choose one of {', '.join(STORIES)}")
    info = _sandbox(data_dir)
    data = config.data_dir(data_dir)
    acct = accounts.get(open_store(str(data), None), accounts.DEFAULT_ACCOUNT)
    env = {
        "EC2_URL": info.endpoint,
        "EC2_ACCESS_KEY": acct.access_key_id,
        "EC2_SECRET_KEY": acct.secret_access_key,
        "STOCKADE_ACCOUNT_ID": acct.account_id,
    }
    run_story(story, env, str(data))


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
