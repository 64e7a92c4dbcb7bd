"""`stockade demo albert|mary|bastion`: a seed story, step by step, in the running sandbox.

Every step is a real command (the classic ec2-* tools, nmap from the internet, a connect
from inside an instance), printed before it runs, with its output, and checked: a command
that fails, or an outcome the story does not expect, stops the demo with the step named
and a non-zero exit. A story runs in an account of its own (``demo-<story>``, emptied at
start), so the user's groups and instances are never touched; it cleans up the instances
and groups it made.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from stockade import accounts
from stockade.store.db import Store

BIN = Path(sys.executable).parent
ALBERT = "192.168.1.130"

console = Console(highlight=False, soft_wrap=True)


def listeners(*ports: int) -> str:
    lines = ["#!/bin/sh"]
    for port in ports:
        lines.append(
            f'python3 -c "import socket\ns=socket.socket()\n'
            f"s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind(('0.0.0.0',{port}))\ns.listen(64)\nwhile True:\n"
            f"  c,_=s.accept(); c.sendall(b'hello from port {port}\\\\n'); c.close()\" &"
        )
    return "\n".join([*lines, "wait"]) + "\n"


class StepFailed(Exception):
    """A step of the story did not do what the story needs."""


def demo_account(store: Store, story: str, endpoint: str) -> accounts.Account:
    """The story's own account, ``demo-<story>``: made if missing, emptied if it exists
    (instances a crashed run left are terminated through the API, then the account and
    everything it owns go, and it is made again)."""
    name = f"demo-{story}"
    try:
        old = accounts.get(store, name)
    except accounts.AccountError:
        return accounts.create(store, name)
    leftovers = Demo(
        {
            "EC2_URL": endpoint,
            "EC2_ACCESS_KEY": old.access_key_id,
            "EC2_SECRET_KEY": old.secret_access_key,
        },
        "",
    )
    out = leftovers.run("ec2-describe-instances", quiet=True, check=False)
    live = [
        row[1]
        for row in (line.split("\t") for line in out.splitlines())
        if row[0] == "INSTANCE" and len(row) > 5 and row[5] not in ("terminated", "shutting-down")
    ]
    if live:
        console.print(f"[dim]{name}: terminating {len(live)} instances of an earlier run[/dim]")
        leftovers.instances = live
        leftovers.cleanup(quiet=True)
    accounts.delete_account(store, name)
    return accounts.create(store, name)


class Demo:
    def __init__(self, env: dict[str, str], data_dir: str) -> None:
        self.env = {**os.environ, **env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        self.data_dir = data_dir
        self.instances: list[str] = []
        self.groups: list[str] = []
        self.step = "setting up"
        self.steps = 0

    def run(
        self, *cmd: str, quiet: bool = False, shown: str | None = None, check: bool = True
    ) -> str:
        """Run one command; with ``check``, a non-zero exit fails the step."""
        shown = shown or " ".join(shlex.quote(c) for c in cmd)
        if not quiet:
            console.print(f"[bold cyan]$ {shown}[/bold cyan]")
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StepFailed(f"`{shown}` could not run: {exc}") from None
        text = (out.stdout + out.stderr).rstrip()
        if text and not quiet:
            console.print(text)
        if check and out.returncode != 0:
            last = text.splitlines()[-1] if text else "no output"
            raise StepFailed(f"`{shown}` exited with {out.returncode}: {last}")
        return out.stdout

    def expect(self, out: str, ok: bool, what: str) -> str:
        if not ok:
            raise StepFailed(f"expected {what}")
        return out

    def say(self, text: str) -> None:
        self.steps += 1
        self.step = text
        console.print(f"\n[bold]{text}[/bold]")

    def launch(
        self, ami: str, count: int, group: str, ports: tuple[int, ...]
    ) -> list[tuple[str, str]]:
        out = self.run(
            "ec2-run-instances",
            ami,
            "-n",
            str(count),
            "-g",
            group,
            "-d",
            listeners(*ports),
            shown=f"ec2-run-instances {ami} -n {count} -g {group} "
            f"-d <user data: listen on {', '.join(map(str, ports))}>",
        )
        ids = [line.split("\t")[1] for line in out.splitlines() if line.startswith("INSTANCE")]
        self.instances += ids
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            desc = self.run("ec2-describe-instances", *ids, quiet=True)
            rows = [ln.split("\t") for ln in desc.splitlines() if ln.startswith("INSTANCE")]
            if rows and all(r[5] == "running" for r in rows):
                self.run("ec2-describe-instances", ids[0])
                return [(r[1], r[3]) for r in rows]
            time.sleep(0.5)
        raise StepFailed(f"{ids} did not start in 90 s; see `stockade status`")

    def outside(self, source: str, *cmd: str, check: bool = True) -> str:
        return self.run(
            str(BIN / "stockade"),
            "outside",
            "--from",
            source,
            "--data-dir",
            self.data_dir,
            "--",
            *cmd,
            check=check,
        )

    def inside(self, instance: str, *cmd: str, check: bool = True) -> str:
        return self.run(
            str(BIN / "stockade"),
            "exec",
            instance,
            "--data-dir",
            self.data_dir,
            "--",
            *cmd,
            check=check,
        )

    def until(
        self, step: Callable[[], str], done: Callable[[str], bool], what: str, tries: int = 10
    ) -> str:
        """Retry ``step`` until ``done`` (a rule takes a moment to reach the kernel)."""
        out = step()
        for _ in range(tries):
            if done(out):
                return out
            time.sleep(0.5)
            out = step()
        return self.expect(out, done(out), what)

    def cleanup(self, quiet: bool = False) -> None:
        if self.instances:
            if not quiet:
                self.say("Cleaning up")
            self.run("ec2-terminate-instances", *self.instances, quiet=quiet)
            deadline = time.monotonic() + 60
            while True:
                out = self.run("ec2-describe-instances", *self.instances, quiet=True)
                states = [ln.split("\t")[5] for ln in out.splitlines() if ln.startswith("INSTANCE")]
                if all(s == "terminated" for s in states):
                    break
                if time.monotonic() > deadline:
                    raise StepFailed(f"{self.instances} did not terminate in 60 s")
                time.sleep(0.5)
        for group in reversed(self.groups):
            self.run("ec2-delete-group", group, quiet=quiet)


def nmap(demo: Demo, source: str, name: str, ports: str) -> str:
    return demo.outside(source, "nmap", "-Pn", "-n", "-p", ports, "--max-retries", "1", name)


def is_open(port: int, out: str) -> bool:
    return f"{port}/tcp open" in out


def is_filtered(port: int, out: str) -> bool:
    return f"{port}/tcp filtered" in out


def albert(demo: Demo) -> None:
    demo.say("Albert launches his favourite AMI in the default group (seed 002)")
    ((_iid, name),) = demo.launch("ami-eca54085", 1, "default", (22, 80))
    demo.say("He checks the default group's rules")
    demo.run("ec2-describe-group", "default")
    demo.say("He port-scans his instance from his machine: everything is filtered")
    out = nmap(demo, ALBERT, name, "22,80")
    demo.expect(out, is_filtered(22, out) and is_filtered(80, out), "22 and 80 filtered")
    demo.say("He opens SSH, for his own address only")
    demo.run("ec2-authorize", "default", "-P", "tcp", "-p", "22", "-s", f"{ALBERT}/32")
    demo.say("The same scan now shows 22 open (no restart anywhere)")
    demo.until(lambda: nmap(demo, ALBERT, name, "22,80"), lambda o: is_open(22, o), "22 open")
    demo.say("From any other address, 22 is still filtered")
    out = nmap(demo, "192.168.1.131", name, "22")
    demo.expect(out, is_filtered(22, out), "22 filtered from 192.168.1.131")
    demo.run("ec2-revoke", "default", "-P", "tcp", "-p", "22", "-s", f"{ALBERT}/32")


def mary(demo: Demo) -> None:
    demo.say("Mary creates her web tier's group and opens port 80 to the world (seed 002)")
    demo.run("ec2-add-group", "apache", "-d", "Mary's Apache group")
    demo.groups.append("apache")
    demo.run("ec2-authorize", "apache", "-P", "tcp", "-p", "80", "-s", "0.0.0.0/0")
    web = demo.launch("ami-fba54092", 3, "apache", (80,))
    demo.say("A port scan of a web server: 80 open, the rest filtered")
    demo.until(
        lambda: nmap(demo, ALBERT, web[0][1], "22,80"),
        lambda o: is_open(80, o) and is_filtered(22, o),
        "80 open and 22 filtered",
    )
    demo.say("The app tier admits only members of apache")
    demo.run("ec2-add-group", "appserver", "-d", "Mary's app server")
    demo.groups.append("appserver")
    ((_app, app_name),) = demo.launch("ami-e3a5408a", 1, "appserver", (8080,))
    account = demo.env.get("STOCKADE_ACCOUNT_ID", "")
    demo.run("ec2-authorize", "appserver", "-o", "apache", "-u", account)
    demo.say("From the internet the app server is filtered")
    out = nmap(demo, ALBERT, app_name, "8080")
    demo.expect(out, is_filtered(8080, out), "8080 filtered from the internet")
    demo.say("From a web server, by the same public name (it resolves to the private IP inside)")
    demo.inside(web[0][0], "dig", "+short", app_name)
    demo.until(
        lambda: demo.inside(web[0][0], "nc", "-w", "2", app_name, "8080", check=False),
        lambda o: "hello" in o,
        "an answer from the app server's port 8080",
    )


def bastion(demo: Demo) -> None:
    demo.say("A gateway on port 62222 for one address; app servers reachable only from it (004)")
    for name in ("gw", "app", "db"):
        demo.run("ec2-add-group", name, "-d", f"{name} tier")
        demo.groups.append(name)
    account = demo.env.get("STOCKADE_ACCOUNT_ID", "")
    demo.run("ec2-authorize", "gw", "-P", "tcp", "-p", "62222", "-s", f"{ALBERT}/32")
    demo.run("ec2-authorize", "app", "-P", "tcp", "-p", "22", "-u", account, "-o", "gw")
    demo.run("ec2-authorize", "db", "-P", "tcp", "-p", "3306", "-u", account, "-o", "app")
    ((gw, gw_name),) = demo.launch("ami-fba54092", 1, "gw", (62222,))
    ((_app, app_name),) = demo.launch("ami-fba54092", 1, "app", (22,))
    ((_db, db_name),) = demo.launch("ami-fba54092", 1, "db", (3306,))
    demo.say("Albert reaches the gateway; nobody reaches the app server from outside")
    demo.until(
        lambda: nmap(demo, ALBERT, gw_name, "62222"), lambda o: is_open(62222, o), "62222 open"
    )
    out = nmap(demo, ALBERT, app_name, "22")
    demo.expect(out, is_filtered(22, out), "the app server's 22 filtered from outside")
    demo.say("A compromised gateway reaches the app servers' SSH ...")
    demo.until(
        lambda: demo.inside(gw, "nc", "-w", "2", app_name, "22", check=False),
        lambda o: "hello" in o,
        "an answer from the app server's port 22",
    )
    demo.say("... but not the database")
    out = demo.inside(gw, "nc", "-w", "2", "-v", db_name, "3306", check=False)
    demo.expect(out, "hello" not in out, "no answer from the database")


STORIES = {"albert": albert, "mary": mary, "bastion": bastion}


def run_story(name: str, env: dict[str, str], data_dir: str) -> int:
    """Play story ``name``; 0 if every step did what it should, else 1 (the step named)."""
    demo = Demo(env, data_dir)
    failed: str | None = None
    try:
        STORIES[name](demo)
    except StepFailed as exc:
        failed = f"step {demo.steps} ({demo.step}): {exc}"
    except KeyboardInterrupt:
        failed = f"interrupted at step {demo.steps} ({demo.step})"
    finally:
        try:
            demo.cleanup()
        except StepFailed as exc:
            failed = failed or f"cleaning up: {exc}"
    if failed is not None:
        console.print(f"\n[bold red]demo {name} failed at {failed}[/bold red]")
        return 1
    console.print(f"\n[bold green]demo {name}: every step did what the story says[/bold green]")
    return 0
