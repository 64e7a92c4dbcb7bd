"""The sandbox region: `up`, `down`, `exec`, `outside`, `demo`, `logs`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stockade import config
from stockade.cli import app
from stockade.cli.common import (
    DatabaseUrl,
    DataDir,
    check_port,
    data_dir_record,
    data_flag,
    dd_flag,
    err,
    fail,
    locate,
    open_store,
    path_prefix,
    require_state,
    running_sandbox,
)


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
        check_port("127.0.0.1", port)  # names the process that holds it
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
                    fail(f"the sandbox failed to start; see `stockade logs sandbox{dd_flag(data)}`")
                time.sleep(0.2)
            else:
                fail(
                    "the sandbox did not come up in time; "
                    f"see `stockade logs sandbox{dd_flag(data)}`"
                )
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


def _sandbox_banner(data: Path, port: int, hosts: int) -> None:
    flags = dd_flag(data)
    env_flags = flags + (
        "" if flags or port == config.DEFAULT_PORT else f" --endpoint http://127.0.0.1:{port}"
    )
    err.print(
        f"[bold]Stockade sandbox[/bold]: EC2 API on http://127.0.0.1:{port}, "
        f"{hosts} host{'' if hosts == 1 else 's'}",
        soft_wrap=True,
    )
    err.print(f'  {path_prefix()}eval "$(stockade env{env_flags})"', markup=False, soft_wrap=True)
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

    explicit = data_flag(data_dir)
    if prefix is not None:
        problem = runtime.check_prefix(prefix)
        if problem is not None:
            fail(problem)
        record = runtime.find(prefix=prefix)
    elif explicit:
        record = runtime.find(data_dir=explicit)
        if record is None:
            prefix = data_dir_record(Path(explicit)).get("prefix")
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
    info = running_sandbox(data_dir)
    ns = instance_netns(info.prefix, instance)
    if not net.exists(ns):
        fail(
            f"{instance} is not running in the sandbox "
            f"(see `stockade status{dd_flag(Path(info.data_dir))}`)"
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

    info = running_sandbox(data_dir)
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
    info = running_sandbox(data_dir)
    data = Path(info.data_dir)
    require_state(data, database_url, info)
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

    data, running = locate(data_dir)
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
            f"`stockade logs{dd_flag(data)} -f {name}` waits for it"
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
