"""The data-plane agent and what it reports: `agent`, `status`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stockade import config
from stockade.cli import app
from stockade.cli.common import (
    DatabaseUrl,
    DataDir,
    Server,
    control_plane,
    data_dir_record,
    default_data,
    err,
    fail,
    get_json,
    locate,
    open_store,
)

DEFAULT_CONFIG = "/etc/stockade/agent.json"


@app.command()
def agent(
    host: Annotated[
        str | None,
        typer.Option("--host", help="This host's name (a sandbox host; else the config's)."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="Control plane URL (default http://127.0.0.1:8773); several of one fleet, "
            "comma-separated, to fail over between them.",
        ),
    ] = None,
    netns: Annotated[
        str | None, typer.Option(help="Enforce inside this network namespace.")
    ] = None,
    config_path: Annotated[
        str | None,
        typer.Option(
            "--config",
            help=f"A machine's agent config (default {DEFAULT_CONFIG} when --host is not "
            "given): its servers, credential and enrolled interfaces.",
        ),
    ] = None,
    failsafe_in: Annotated[
        list[str] | None,
        typer.Option("--failsafe-in", help="tcp:PORT or udp:PORT always open inbound."),
    ] = None,
    failsafe_out: Annotated[
        list[str] | None,
        typer.Option("--failsafe-out", help="tcp:PORT or udp:PORT always open outbound."),
    ] = None,
    audit: Annotated[
        bool,
        typer.Option("--audit", help="Count and log what the groups would drop; drop nothing."),
    ] = False,
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
    """Follow the change log and enforce this host's groups with nftables (a sandbox host
    with --host; this machine itself, as `stockade join` enrolled it, without)."""
    from stockade.dataplane.agent import Agent

    if uninstall and host is None and config_path is None:
        from stockade.dataplane.nft import Dataplane, Nft

        nft = Nft(netns)
        try:
            Dataplane("-", nft).uninstall()
        finally:
            nft.close()
        err.print(f"removed table inet stockade{' in ' + netns if netns else ''}")
        return
    if host is not None and config_path is None:
        from stockade.store.db import agent_token

        token = agent_token(open_store(data_dir, database_url))
        worker = Agent(
            config.endpoint(server),
            token,
            host,
            netns=netns,
            resync_interval=resync_interval * 60,
        )
    else:
        worker = _machine_agent(
            config_path or DEFAULT_CONFIG,
            server,
            netns,
            failsafe_in or [],
            failsafe_out or [],
            audit,
            resync_interval * 60,
        )
    if uninstall:
        worker.uninstall()
        worker.close()
        err.print(f"removed table inet stockade{' in ' + netns if netns else ''}")
        return
    err.print(
        f"agent for host [cyan]{worker.host}[/cyan] following {', '.join(worker.http.servers)}"
        + (" [yellow](audit: nothing is dropped)[/yellow]" if audit else "")
    )
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    finally:
        worker.close()


def _machine_agent(
    path: str,
    server: str | None,
    netns: str | None,
    failsafe_in: list[str],
    failsafe_out: list[str],
    audit: bool,
    resync_interval: float,
):
    """The agent of a machine, from its config (what `stockade join` wrote)."""
    import socket
    from urllib.parse import urlsplit

    from stockade.dataplane.agent import Agent
    from stockade.dataplane.compile import HostMode, failsafe_port
    from stockade.hosts.client import server_list

    try:
        raw = json.loads(Path(path).read_text())
        servers = server_list(server or raw["servers"])
        token, host = str(raw["token"]), str(raw["host"])
        devices = {str(k): str(v) for k, v in (raw.get("interfaces") or {}).items()}
    except FileNotFoundError:
        fail(
            f"there is no agent config at {path}: write one (a JSON object with servers, "
            "token, host and interfaces, as docs/hosts.md shows) and pass --config PATH, "
            "or pass --host for a sandbox host"
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        fail(f"cannot read the agent config {path} ({exc}); run `stockade join` again")
    try:
        ins = tuple(failsafe_port(p) for p in [*raw.get("failsafe_in", []), *failsafe_in])
        outs = tuple(failsafe_port(p) for p in [*raw.get("failsafe_out", []), *failsafe_out])
    except ValueError as exc:
        fail(f"{exc}; for example --failsafe-in tcp:22")
    control = []
    for url in servers:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(parts.hostname or "", port, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            fail(f"cannot resolve the control plane {url} ({exc}); check the config's servers")
        control += sorted({(str(info[4][0]), port) for info in infos})
    mode = HostMode(ins, outs, tuple(control), audit)
    verify = _pinned(raw, servers, path)
    return Agent(
        servers,
        token,
        host,
        netns=netns,
        mode=mode,
        devices=devices,
        resync_interval=resync_interval,
        verify=verify,
    )


def _pinned(raw: dict, servers: list[str], path: str):
    """httpx's ``verify`` for the agent: the CA the config pins (``ca_hash``, with the CA
    itself in ``ca_pem`` or fetched from the first server), else the system's."""
    from stockade import tls

    pin, pem = raw.get("ca_hash"), raw.get("ca_pem")
    if not pin and not pem:
        return True
    try:
        # with the CA at hand no server need be up: the agent starts and retries
        return tls.httpx_verify(ca_hash=pin, ca_pem=pem, url=None if pem else servers[0])
    except tls.TlsError as exc:
        fail(f"{exc} (the pin of {path}); run `stockade join` with the control plane's --ca-hash")


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
    data, running = locate(data_dir)
    sandbox = _sandbox_state(data, running)
    out = Console()
    if not as_json:
        out.print(sandbox["text"])
    with control_plane(server, str(data), database_url) as client:
        data_ = get_json(client, "/_stockade/v1/status")
        names = {g["id"]: g["name"] for g in get_json(client, "/_stockade/v1/state")["groups"]}
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
        "host",
        "server",
        "applied revision",
        "lag",
        "interfaces",
        "last sync ms",
        "last report",
        "error",
    )
    for a in now_agents:
        age = a.get("age_seconds")
        agents.add_row(
            a["host"],
            _following(a),
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
    audits = [
        (a["host"], dev, n) for a in now_agents for dev, n in (a.get("would_drop") or {}).items()
    ]
    if audits:
        drops = Table("host", "interface", "would drop in", "would drop out", title="audit mode")
        for host_name, device, n in audits:
            drops.add_row(host_name, device, str(n.get("in", 0)), str(n.get("out", 0)))
        out.print(drops)
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


def _following(agent: dict) -> str:
    """The server an agent follows (and how often it failed over), from its report."""
    server = str(agent.get("server") or "?")
    failovers = agent.get("failovers")
    return f"{server} ({failovers} failovers)" if failovers else server


def _poll_seconds(agent: dict) -> float:
    poll = agent.get("poll_seconds")
    return 20.0 if poll is None else float(poll)


def _agent_stale(agent: dict) -> bool:
    """An agent reports after every poll; silent for longer than its poll (and a grace of
    a second and a quarter of the poll, for the report itself), it is stuck or gone."""
    age = agent.get("age_seconds")
    poll = _poll_seconds(agent)
    return age is not None and float(age) > poll * 1.25 + 1.0


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
    stale = data_dir_record(data)
    prefix = stale.get("prefix", runtime.DEFAULT_PREFIX)
    text = f"sandbox [bold red]not running[/bold red] for {data}"
    if stale:
        text += f" (its record says pid {stale.get('pid')}, which holds no sandbox lock)"
    flag = "" if data == default_data() else f" --data-dir {shlex.quote(str(data))}"
    text += f"; `sudo stockade up{flag}` starts it"
    return {"up": False, "prefix": prefix, "data_dir": str(data), "text": text}
