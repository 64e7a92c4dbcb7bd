"""Seed 002 replayed verbatim in a sandbox region: Albert's and Mary's commands, as typed.

The seed's images run what the stories need (no user data): Albert's AMI an SSH server,
Mary's web tier a web server on 80, her application tier a service on 8080. The commands
are the real ec2-* tools with the sandbox's environment; scans, telnet and ssh run from
192.168.1.130 (a namespace of the sandbox's internet) or inside an instance. Nothing
waits a fixed time: what can lag (an instance booting) is retried until a deadline.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stockade import accounts
from stockade.sandbox import guest_ssh
from stockade.sandbox.hostd import instance_netns
from stockade.sandbox.region import Sandbox, ensure_outside
from stockade.store.db import Store

import netns
from conftest import running_sandbox, wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns.can_run() is not None, reason=str(netns.can_run())),
    pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed"),
    pytest.mark.skipif(shutil.which("telnet") is None, reason="telnet is not installed"),
    pytest.mark.skipif(
        guest_ssh.sshd_path() is None or shutil.which("ssh") is None,
        reason="OpenSSH is not installed (make system-deps: openssh-server openssh-client)",
    ),
]

ALBERT = "192.168.1.130"  # Albert's (and Mary's) workstation in the seed
BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with running_sandbox(hosts=2, tag="s2") as box:
        yield box


@dataclass
class Out:
    rc: int
    out: str
    err: str

    @property
    def rows(self) -> list[list[str]]:
        """Tab-separated rows, empty columns dropped (the seed's transcripts show none)."""
        return [[c for c in line.split("\t") if c] for line in self.out.splitlines() if line]

    def row(self, *words: str) -> list[str]:
        """The first row holding ``words`` in this order (not necessarily adjacent)."""
        for row in self.rows:
            it = iter(row)
            if all(w in it for w in words):
                return row
        raise AssertionError(f"no row with {words} in:\n{self.out}")


class User:
    """One account of the sandbox, typing the seed's commands."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box
        store = Store(f"sqlite:///{box.data_dir}/stockade.db")
        try:
            self.account = accounts.create(store, f"seed{os.urandom(4).hex()}")
        finally:
            store.dispose()
        self.env = {
            **os.environ,
            "EC2_URL": box.endpoint,
            "EC2_ACCESS_KEY": self.account.access_key_id,
            "EC2_SECRET_KEY": self.account.secret_access_key,
        }

    def ec2(self, *argv: str) -> Out:
        tool = shutil.which(argv[0]) or str(BIN / argv[0])
        done = subprocess.run(
            [tool, *argv[1:]], capture_output=True, text=True, env=self.env, timeout=60
        )
        return Out(done.returncode, done.stdout, done.stderr)

    def ok(self, *argv: str) -> Out:
        out = self.ec2(*argv)
        assert out.rc == 0, f"{' '.join(argv)}: {out.err}"
        assert "Traceback" not in out.out + out.err
        return out

    def wait_running(self, instance_id: str) -> list[str]:
        """`ec2din i-...` until the instance runs; its INSTANCE row."""
        row: list[str] = []

        def running() -> bool:
            nonlocal row
            rows = [r for r in self.ok("ec2din", instance_id).rows if r[0] == "INSTANCE"]
            row = rows[0] if rows else []
            return "running" in row

        wait_until(running, timeout=90, what=f"{instance_id} to run")
        return row

    def inside(self, instance_id: str, *cmd: str, timeout: float = 30) -> Out:
        ns = instance_netns(self.box.prefix, instance_id)
        done = subprocess.run(
            ["ip", "netns", "exec", ns, *cmd],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
        return Out(done.returncode, done.stdout, done.stderr)


def outside(box: Sandbox, source: str, *cmd: str, timeout: float = 120) -> Out:
    """`stockade outside --from SOURCE -- CMD`: a client on the internet at that address."""
    exe = shutil.which("stockade") or str(BIN / "stockade")
    done = subprocess.run(
        [exe, "outside", "--from", source, "--data-dir", str(box.data_dir), "--", *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Out(done.returncode, done.stdout, done.stderr)


def nmap_seed(box: Sandbox, name: str, ports: str = "1-100") -> Out:
    """The seed's scan, as typed: `nmap -P0 -p1-100 <public DNS name>`."""
    out = outside(box, ALBERT, "nmap", "-P0", f"-p{ports}", name)
    assert out.rc == 0, out.err
    return out


def port_lines(out: Out) -> dict[str, str]:
    """The scan's PORT lines: {"22/tcp": "open ssh", ...}."""
    found = {}
    for line in out.out.splitlines():
        parts = line.split()
        if parts and "/tcp" in parts[0] and len(parts) >= 2:
            found[parts[0]] = " ".join(parts[1:])
    return found


def all_filtered(out: Out, count: int = 100) -> bool:
    # nmap 3.81: "All 100 scanned ports on ... are: filtered"; 7.x: "... are in ignored
    # states." with "Not shown: 100 filtered tcp ports"
    text = out.out
    return f"All {count} scanned ports" in text and f"{count} filtered" in text


def until_scan(box: Sandbox, name: str, want: dict[str, str], what: str) -> Out:
    last: list[Out] = []

    def check() -> bool:
        last[:] = [nmap_seed(box, name)]
        return port_lines(last[0]) == want

    try:
        wait_until(check, timeout=90, what=what)
    except AssertionError:
        raise AssertionError(f"{what}: last scan\n{last[0].out if last else ''}") from None
    return last[0]


def telnet(argv: list[str], request: bytes, until: bytes, timeout: float = 20) -> str:
    """Run telnet, type ``request``, read until ``until`` shows (or the deadline); the text."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdin is not None and proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    seen = b""
    sent = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and until not in seen:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                chunk = proc.stdout.read() or b""
                if not chunk and proc.poll() is not None:
                    break
                seen += chunk
            if not sent and b"Escape character" in seen:
                proc.stdin.write(request)
                proc.stdin.flush()
                sent = True
    finally:
        proc.kill()
        proc.wait()
    return seen.decode("utf-8", "replace")


# --- Albert modifies the default group --------------------------------------------------------


def test_albert_modifies_the_default_group(sandbox: Sandbox) -> None:
    albert = User(sandbox)
    acct = albert.account.account_id

    # 1. Albert launches a copy of his favourite public AMI.
    ran = albert.ok("ec2-run-instances", "ami-eca54085").rows
    assert ran[0][0] == "RESERVATION" and ran[0][2:] == [acct, "default"]
    (inst,) = [r for r in ran if r[0] == "INSTANCE"]
    iid = inst[1]
    assert inst[2] == "ami-eca54085" and "pending" in inst
    name = albert.wait_running(iid)[3]
    assert name.startswith("ec2-")

    # 2. He checks the access rules of the default group.
    group = albert.ok("ec2-describe-group", "default")
    group.row("GROUP", acct, "default")
    group.row("PERMISSION", "default", "ALLOWS", "all", "FROM", "USER", acct, "GRPNAME", "default")

    # 3. He port scans his instance: all 100 ports filtered (the sshd runs, the group drops).
    first = nmap_seed(sandbox, name)
    assert all_filtered(first), first.out
    assert albert.inside(iid, "ss", "-Hltn", "sport = :22").out.strip(), "sshd is not running"

    # 4. He authorizes SSH from his own machine only.
    rows = albert.ok("ec2-authorize", "default", "-P", "tcp", "-p", "22", "-s", f"{ALBERT}/32").rows
    assert rows == [
        ["GROUP", "default"],
        ["PERMISSION", "default", "ALLOWS", "tcp", "22", "22", "FROM", "CIDR", f"{ALBERT}/32"],
    ]

    # 5. He repeats the scan: 22/tcp open ssh, the 99 others filtered.
    again = until_scan(sandbox, name, {"22/tcp": "open ssh"}, "22/tcp open for Albert")
    assert "99 filtered" in again.out, again.out


# --- Mary's three-tier web site ---------------------------------------------------------------


def test_mary_builds_her_three_tier_site(sandbox: Sandbox) -> None:
    mary = User(sandbox)
    acct = mary.account.account_id

    # 1. A group for her Apache web servers, HTTP open to the world.
    mary.ok("ec2-add-group", "apache", "-d", "Mary's Apache group").row(
        "GROUP", "apache", "Mary's Apache group"
    )
    described = mary.ok("ec2-describe-group", "apache")
    described.row("GROUP", acct, "apache", "Mary's Apache group")
    assert "ingress" not in described.out
    rows = mary.ok("ec2-authorize", "apache", "-P", "tcp", "-p", "80", "-s", "0.0.0.0/0").rows
    assert rows == [
        ["GROUP", "apache"],
        ["PERMISSION", "apache", "ALLOWS", "tcp", "80", "80", "FROM", "CIDR", "0.0.0.0/0"],
    ]
    mary.ok("ec2-describe-group", "apache").row(
        "PERMISSION", acct, "apache", "ALLOWS", "tcp", "80", "80", "FROM", "CIDR", "0.0.0.0/0"
    )

    # 2. Seven instances of her web server AMI in the apache group.
    ran = mary.ok("ec2run", "ami-fba54092", "-n", "7", "-g", "apache").rows
    web = [r[1] for r in ran if r[0] == "INSTANCE"]
    assert len(web) == 7 and all(r[2] == "ami-fba54092" and "pending" in r for r in ran[1:])
    row = mary.wait_running(web[0])
    assert row[1:3] == [web[0], "ami-fba54092"]
    name = row[3]
    for iid in web[1:]:
        mary.wait_running(iid)

    # 3. Her scan: 80/tcp open http, the rest filtered.
    scan = until_scan(sandbox, name, {"80/tcp": "open http"}, "80/tcp open for the world")
    assert "99 filtered" in scan.out, scan.out

    # 4. She reaches her web server with telnet, and it serves its page.
    seen = telnet(
        ["ip", "netns", "exec", ensure_outside(sandbox.prefix, ALBERT), "telnet", name, "80"],
        b"GET / HTTP/1.0\r\n\r\n",
        b"</html>",
    )
    assert f"Connected to {name}" in seen, seen
    assert "Escape character is '^]'." in seen
    assert "HTTP/1.1 200 OK" in seen and web[0] in seen, seen

    # 5.-7. A group for the application servers, open to the apache group only.
    mary.ok("ec2-add-group", "appserver", "-d", "Mary's app server").row(
        "GROUP", "appserver", "Mary's app server"
    )
    ran = mary.ok("ec2run", "ami-e3a5408a", "-n", "1", "-g", "appserver").rows
    (app,) = [r[1] for r in ran if r[0] == "INSTANCE"]
    rows = mary.ok("ec2-authorize", "appserver", "-o", "apache", "-u", acct).rows
    assert rows[0] == ["GROUP", "appserver"]
    assert rows[1] == [
        "PERMISSION", "appserver", "ALLOWS", "all", "FROM", "USER", acct, "GRPNAME", "apache"
    ]  # fmt: skip
    app_name = mary.wait_running(app)[3]

    # 8. Her scan of an application server: everything filtered, 8080 too.
    assert mary.inside(app, "ss", "-Hltn", "sport = :8080").out.strip(), "nothing on 8080"
    scan = nmap_seed(sandbox, app_name)
    assert all_filtered(scan), scan.out
    assert port_lines(nmap_seed(sandbox, app_name, "8080")) == {"8080/tcp": "filtered http-proxy"}

    # 9. SSH to the web servers from her workstation (temporarily); from a web server, telnet
    # to the application server on 8080 connects.
    mary.ok("ec2-authorize", "apache", "-P", "tcp", "-p", "22", "-s", f"{ALBERT}/32")
    until_scan(sandbox, name, {"22/tcp": "open ssh", "80/tcp": "open http"}, "22 open to Mary")
    ns = instance_netns(sandbox.prefix, web[0])
    seen = telnet(
        ["ip", "netns", "exec", ns, "telnet", app_name, "8080"],
        b"GET / HTTP/1.0\r\n\r\n",
        b"}",
    )
    assert f"Connected to {app_name}" in seen, seen
    assert "Escape character is '^]'." in seen
    assert f'"instance": "{app}"' in seen, seen
    mary.ok("ec2-revoke", "apache", "-P", "tcp", "-p", "22", "-s", f"{ALBERT}/32")
    until_scan(sandbox, name, {"80/tcp": "open http"}, "22 filtered again")

    # 10. The same for the database tier: reachable on 3306 from the app servers only.
    mary.ok("ec2-add-group", "dbserver", "-d", "Mary's database")
    ran = mary.ok("ec2run", "ami-f1a54098", "-n", "1", "-g", "dbserver").rows
    (db,) = [r[1] for r in ran if r[0] == "INSTANCE"]
    mary.ok("ec2-authorize", "dbserver", "-o", "appserver", "-u", acct)
    db_name = mary.wait_running(db)[3]
    assert port_lines(nmap_seed(sandbox, db_name, "3306")) == {"3306/tcp": "filtered mysql"}
    greeting = mary.inside(app, "nc", "-w", "2", db_name, "3306")
    assert "5.0.45-stockade" in greeting.out and "mysql_native_password" in greeting.out
    assert mary.inside(web[0], "nc", "-z", "-w", "2", db_name, "3306").rc == 1


# --- SSH with the launch key pair -------------------------------------------------------------


def ssh(box: Sandbox, key: Path, target: str, *cmd: str) -> Out:
    return outside(
        box,
        ALBERT,
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        str(key),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
        target,
        *cmd,
        timeout=60,
    )


def test_ssh_accepts_the_launch_key_pair_only(sandbox: Sandbox, tmp_path: Path) -> None:
    albert = User(sandbox)
    made = albert.ok("ec2-create-keypair", "albert-key").out
    first, _, private = made.partition("\n")
    assert first.split("\t")[:2] == ["KEYPAIR", "albert-key"]
    key = tmp_path / "albert-key.pem"
    key.write_text(private.strip() + "\n")
    key.chmod(0o600)
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)

    ran = albert.ok("ec2-run-instances", "ami-eca54085", "-k", "albert-key").rows
    (iid,) = [r[1] for r in ran if r[0] == "INSTANCE"]
    row = albert.wait_running(iid)
    name = row[3]
    albert.ok("ec2-authorize", "default", "-P", "tcp", "-p", "22", "-s", f"{ALBERT}/32")

    # the metadata service serves the launch key, as EC2 does
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True
    ).stdout.split()[:2]
    got = albert.inside(
        iid, "curl", "-s", "http://169.254.169.254/latest/meta-data/public-keys/"
    ).out
    assert got == "0=albert-key"
    got = albert.inside(
        iid, "curl", "-s", "http://169.254.169.254/latest/meta-data/public-keys/0/openssh-key"
    ).out
    assert got.split()[:2] == public and got.split()[2] == "albert-key"

    # the launch key logs in, as root and as ec2-user, into the instance itself
    url = "http://169.254.169.254/latest/meta-data/instance-id"
    logged: list[Out] = []

    def logs_in() -> bool:
        logged[:] = [ssh(sandbox, key, f"root@{name}", "curl", "-s", url)]
        return logged[0].rc == 0

    try:
        wait_until(logs_in, timeout=60, what="ssh with the launch key")
    except AssertionError:
        raise AssertionError(f"ssh failed: {logged[0].err if logged else ''}") from None
    assert logged[0].out.strip() == iid
    as_user = ssh(sandbox, key, f"ec2-user@{name}", "echo $LOGNAME")
    assert as_user.rc == 0, as_user.err
    assert as_user.out.strip() == "ec2-user"

    # any other key is refused
    refused = ssh(sandbox, other, f"root@{name}", "true")
    assert refused.rc == 255 and "Permission denied (publickey)" in refused.err, refused.err

    # the host key is the instance's own, made for it in its state directory
    state = sandbox.data_dir / "instances" / iid
    scanned = outside(sandbox, ALBERT, "ssh-keyscan", "-t", "ed25519", name).out.split()
    host_key = (state / "ssh_host_ed25519_key.pub").read_text()
    assert scanned[1:3] == host_key.split()[:2]
    before = sshd_pids(state)
    assert before, "no sshd of the instance"

    # the instance keeps its key and host key: the key pair deleted, a reboot, ssh still works
    albert.ok("ec2-delete-keypair", "albert-key")
    albert.ok("ec2-reboot-instances", iid)
    wait_until(lambda: sshd_pids(state) not in ([], before), 60, "sshd to start again")
    wait_until(logs_in, timeout=60, what="ssh after the reboot")
    got = albert.inside(
        iid, "curl", "-s", "http://169.254.169.254/latest/meta-data/public-keys/0/openssh-key"
    ).out
    assert got.split()[:2] == public  # the metadata service still serves the launch key
    rescanned = outside(sandbox, ALBERT, "ssh-keyscan", "-t", "ed25519", name).out.split()
    assert rescanned[1:3] == scanned[1:3]

    # terminated: its sshd (and every login) is gone, and its host keys with it
    albert.ok("ec2-terminate-instances", iid)
    wait_until(lambda: "terminated" in albert.ok("ec2din", iid).out, 60, "terminated")
    wait_until(lambda: not sshd_pids(state), 30, "the instance's sshd to exit")
    assert not state.exists()


def sshd_pids(state: Path) -> list[int]:
    """Processes whose command line names the instance's sshd_config."""
    needle = str(state / "sshd_config").encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids
