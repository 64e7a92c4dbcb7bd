"""`stockade demo albert|mary|bastion`: a seed story, step by step, in the running sandbox.

Every step is a real command (the classic ec2-* tools, nmap from the internet, a connect
from inside an instance), printed before it runs, with its output. The demo cleans up the
instances and groups it made.
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


class Demo:
    def __init__(self, env: dict[str, str], data_dir: str) -> None:
        self.env = {**os.environ, **env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        self.data_dir = data_dir
        self.instances: list[str] = []
        self.groups: list[str] = []

    def run(self, *cmd: str, quiet: bool = False, shown: str | None = None) -> str:
        shown = shown or " ".join(shlex.quote(c) for c in cmd)
        if not quiet:
            console.print(f"[bold cyan]$ {shown}[/bold cyan]")
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=120)
        text = (out.stdout + out.stderr).rstrip()
        if text and not quiet:
            console.print(text)
        return out.stdout

    def say(self, text: str) -> None:
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
        raise RuntimeError(f"{ids} did not start; see `stockade status`")

    def outside(self, source: str, *cmd: str) -> str:
        return self.run(
            str(BIN / "stockade"),
            "outside",
            "--from",
            source,
            "--data-dir",
            self.data_dir,
            "--",
            *cmd,
        )

    def inside(self, instance: str, *cmd: str) -> str:
        return self.run(
            str(BIN / "stockade"), "exec", instance, "--data-dir", self.data_dir, "--", *cmd
        )

    def until(self, step: Callable[[], str], done: Callable[[str], bool], tries: int = 10) -> str:
        out = step()
        for _ in range(tries):
            if done(out):
                break
            time.sleep(0.5)
            out = step()
        return out

    def cleanup(self) -> None:
        if self.instances:
            self.say("Cleaning up")
            self.run("ec2-terminate-instances", *self.instances)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                out = self.run("ec2-describe-instances", *self.instances, quiet=True)
                states = [ln.split("\t")[5] for ln in out.splitlines() if ln.startswith("INSTANCE")]
                if all(s == "terminated" for s in states):
                    break
                time.sleep(0.5)
        for group in reversed(self.groups):
            self.run("ec2-delete-group", group)


def nmap(demo: Demo, source: str, name: str, ports: str) -> str:
    return demo.outside(source, "nmap", "-Pn", "-n", "-p", ports, "--max-retries", "1", name)


def albert(demo: Demo) -> None:
    demo.say("Albert launches his favourite AMI in the default group (seed 002)")
    ((iid, name),) = demo.launch("ami-eca54085", 1, "default", (22, 80))
    demo.say("He checks the default group's rules")
    demo.run("ec2-describe-group", "default")
    demo.say("He port-scans his instance from his machine: everything is filtered")
    nmap(demo, ALBERT, name, "22,80")
    demo.say("He opens SSH, for his own address only")
    demo.run("ec2-authorize", "default", "-P", "tcp", "-p", "22", "-s", f"{ALBERT}/32")
    demo.say("The same scan now shows 22 open (no restart anywhere)")
    demo.until(lambda: nmap(demo, ALBERT, name, "22,80"), lambda out: "22/tcp open" in out)
    demo.say("From any other address, 22 is still filtered")
    nmap(demo, "192.168.1.131", name, "22")
    demo.run("ec2-revoke", "default", "-P", "tcp", "-p", "22", "-s", f"{ALBERT}/32")
    del iid


def mary(demo: Demo) -> None:
    demo.say("Mary creates her web tier's group and opens port 80 to the world (seed 002)")
    demo.run("ec2-add-group", "apache", "-d", "Mary's Apache group")
    demo.groups.append("apache")
    demo.run("ec2-authorize", "apache", "-P", "tcp", "-p", "80", "-s", "0.0.0.0/0")
    web = demo.launch("ami-fba54092", 3, "apache", (80,))
    demo.say("A port scan of a web server: 80 open, the rest filtered")
    demo.until(lambda: nmap(demo, ALBERT, web[0][1], "22,80"), lambda o: "80/tcp open" in o)
    demo.say("The app tier admits only members of apache")
    demo.run("ec2-add-group", "appserver", "-d", "Mary's app server")
    demo.groups.append("appserver")
    ((app, app_name),) = demo.launch("ami-e3a5408a", 1, "appserver", (8080,))
    account = demo.env.get("STOCKADE_ACCOUNT_ID", "")
    demo.run("ec2-authorize", "appserver", "-o", "apache", "-u", account)
    demo.say("From the internet the app server is filtered")
    nmap(demo, ALBERT, app_name, "8080")
    demo.say("From a web server, by the same public name (it resolves to the private IP inside)")
    demo.inside(web[0][0], "dig", "+short", app_name)
    demo.until(
        lambda: demo.inside(web[0][0], "nc", "-w", "2", app_name, "8080"), lambda o: "hello" in o
    )
    del app


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
    demo.until(lambda: nmap(demo, ALBERT, gw_name, "62222"), lambda o: "open" in o)
    nmap(demo, ALBERT, app_name, "22")
    demo.say("A compromised gateway reaches the app servers' SSH ...")
    demo.until(lambda: demo.inside(gw, "nc", "-w", "2", app_name, "22"), lambda o: "hello" in o)
    demo.say("... but not the database")
    demo.inside(gw, "nc", "-w", "2", "-v", db_name, "3306")


STORIES = {"albert": albert, "mary": mary, "bastion": bastion}


def run_story(name: str, env: dict[str, str], data_dir: str) -> None:
    demo = Demo(env, data_dir)
    try:
        STORIES[name](demo)
    finally:
        demo.cleanup()
