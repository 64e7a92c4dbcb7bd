"""Boot: how long an instance's image services take to start, and an SSH login (root).

In a throwaway instance namespace, through the host daemon's own code
(``sandbox.guest_ssh``, ``sandbox.guest``, ``hostd.wait_listening``), each boot measures:
- the SSH set-up: host key (first boot only), authorized_keys, sshd_config;
- spawn to listening: OpenSSH's sshd on 22, and the web/app/MySQL process (80, 8080, 3306);
- the anchor: ``python3 -m http.server`` to listening, the user-data listener the sandbox
  walk-through needed before the images ran anything.
Then ``ssh -i KEY root@INSTANCE true`` from a client namespace (connect, key exchange,
public-key login, a command in root's shell, exit), and the same login into the sftp
subsystem, which runs no shell (root's ``~/.bashrc`` is the machine's and may be slow).
``python bench/boot.py [--quick]``.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Namespaces, Section, Summary, fmt, ratio, run_alone, table
from rich.progress import Progress

INSTANCE_IP, CLIENT_IP = "10.77.0.2", "10.77.0.3"


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def measure(boots: int, logins: int, progress: Progress | None = None) -> dict[str, Any]:
    from stockade.sandbox import guest_ssh, net
    from stockade.sandbox.hostd import GUEST, _spawn, wait_listening

    if guest_ssh.sshd_path() is None:
        raise RuntimeError("sshd is not installed: apt-get install openssh-server")
    samples: dict[str, list[float]] = {
        "setup_first": [],
        "setup_again": [],
        "sshd": [],
        "guest": [],
        "http_server": [],
        "ssh_login": [],
        "ssh_sftp": [],
    }
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-boot-"))
    task = progress.add_task("boot", total=boots + logins) if progress else None
    with Namespaces() as spaces:
        host = spaces.host()
        inst = spaces.instance(host, "inst", INSTANCE_IP, "vinst")
        client = spaces.instance(host, "cli", CLIENT_IP, "vcli")
        key = work / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        public = (work / "key.pub").read_text()
        log = open(work / "instance.log", "ab")  # noqa: SIM115
        try:
            for i in range(boots):
                state = work / f"state-{i}"
                start = time.perf_counter()
                config = guest_ssh.prepare(state, inst, public, "i-bench")
                samples["setup_first"].append(_ms(start))
                start = time.perf_counter()
                guest_ssh.prepare(state, inst, public, "i-bench")
                samples["setup_again"].append(_ms(start))

                start = time.perf_counter()
                sshd = _spawn(inst, guest_ssh.command(config), log)
                if not wait_listening(sshd, 22, 20, inst):
                    raise RuntimeError(f"sshd did not listen; see {work / 'instance.log'}")
                samples["sshd"].append(_ms(start))

                start = time.perf_counter()
                argv = [sys.executable, "-I", "-S", GUEST, "web:80", "app:8080", "mysql:3306"]
                guest = _spawn(inst, argv, log)
                if not all(wait_listening(guest, p, 20, inst) for p in (80, 8080, 3306)):
                    raise RuntimeError("the image's services did not listen")
                samples["guest"].append(_ms(start))

                start = time.perf_counter()
                anchor = _spawn(inst, [sys.executable, "-m", "http.server", "8000"], log)
                if not wait_listening(anchor, 8000, 20, inst):
                    raise RuntimeError("python -m http.server did not listen")
                samples["http_server"].append(_ms(start))
                # the last boot's sshd stays up for the logins
                for proc in (guest, anchor, sshd) if i < boots - 1 else (guest, anchor):
                    proc.kill()
                    proc.wait()
                if progress is not None and task is not None:
                    progress.advance(task)
            ssh = [
                "ssh", "-F", "/dev/null", "-i", str(key), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR",
            ]  # fmt: skip
            # `true` runs in root's shell (bash reads the machine's ~/.bashrc); the sftp
            # subsystem (internal-sftp, ended by EOF on stdin) is the login without a shell
            ways = {
                "ssh_login": [f"root@{INSTANCE_IP}", "true"],
                "ssh_sftp": ["-s", f"root@{INSTANCE_IP}", "sftp"],
            }
            for _ in range(logins):
                for name, tail in ways.items():
                    start = time.perf_counter()
                    done = subprocess.run(
                        ["ip", "netns", "exec", client, *ssh, *tail],
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        timeout=30,
                    )
                    if done.returncode != 0:
                        err = done.stderr.decode(errors="replace")
                        raise RuntimeError(f"ssh failed: {err}")
                    samples[name].append(_ms(start))
                if progress is not None and task is not None:
                    progress.advance(task)
        finally:
            log.close()
            net.kill_all(inst)
            shutil.rmtree(net.NETNS_ETC / inst, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
    return {
        name: {"median_ms": statistics.median(v), "max_ms": max(v), "n": len(v)}
        for name, v in samples.items()
        if v
    }


LABELS = {
    "setup_first": "ssh set-up, first boot (host key, authorized_keys, config)",
    "setup_again": "ssh set-up, later boots (host key kept)",
    "sshd": "sshd: spawn to listening on 22",
    "guest": "web/app/MySQL process: spawn to listening on 80, 8080, 3306",
    "http_server": "anchor: python3 -m http.server, spawn to listening",
    "ssh_login": "ssh -i KEY root@instance true (login, root's shell, exit)",
    "ssh_sftp": "ssh -i KEY -s root@instance sftp (login without a shell)",
}


def run(quick: bool, progress: Progress) -> Section:
    boots, logins = (3, 3) if quick else (10, 10)
    results = measure(boots, logins, progress)
    section = Section("boot", data={"boots": boots, "logins": logins, "results": results})
    t = table("Instance boot: the image's services (ms)", "step", "median", "max", "n")
    for name, label in LABELS.items():
        r = results[name]
        t.add_row(label, fmt(r["median_ms"], 1), fmt(r["max_ms"], 1), str(r["n"]))
    section.tables.append(t)
    services = results["sshd"]["median_ms"] + results["guest"]["median_ms"]
    anchor = results["http_server"]["median_ms"]
    section.summary.append(
        Summary(
            "boot: sshd + web/app/MySQL listening (ms, spawned one after the other)",
            fmt(services, 1),
            f"http.server {fmt(anchor, 1)}",
            f"{fmt(ratio(services, anchor), 2)}x",
            "",
        )
    )
    section.summary.append(
        Summary(
            "boot: ssh login with the launch key, no shell (ms)",
            fmt(results["ssh_sftp"]["median_ms"], 1),
            "-",
            "-",
            "",
        )
    )
    return section


if __name__ == "__main__":
    run_alone(run, __doc__)
