"""An instance's SSH server: Debian's OpenSSH, one ``sshd`` per instance in its namespace.

Each instance has its own state directory (``<data dir>/instances/<id>/``) holding its host
key (made at its first boot, kept across reboots, stop and start; removed on terminate),
the ``authorized_keys`` of its launch key pair (the key recorded at its first boot, so it
survives the key pair's deletion) and its ``sshd_config``.

Nobody is added to the machine's users: you log in as ``root``, or as ``ec2-user``, a
second name for root that exists only inside the instance (the namespace's
``/etc/passwd``, which ``ip netns exec`` mounts over the machine's from
``/etc/netns/<namespace>/``). Only public-key logins are accepted, and only with the
launch key: ``AuthorizedKeysFile`` names the instance's file, whoever logs in.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from stockade.sandbox.net import NETNS_ETC

USERS = ("root", "ec2-user")
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it (Debian's unit makes it)
HOST_KEY = "ssh_host_ed25519_key"


def sshd_path() -> str | None:
    """The absolute path of sshd (it re-executes itself and needs one), or None."""
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and Path(candidate).is_file():
            return str(Path(candidate).resolve())
    return None


def sshd_config(state: Path) -> str:
    return "\n".join(
        [
            "# written by the Stockade sandbox for one instance; sshd runs in its namespace",
            "Port 22",
            "ListenAddress 0.0.0.0",
            f"HostKey {state / HOST_KEY}",
            "PidFile none",
            f"AuthorizedKeysFile {state / 'authorized_keys'}",
            f"AllowUsers {' '.join(USERS)}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # the data directory may live under /tmp, which StrictModes would refuse
            "StrictModes no",
            "UseDNS no",
            # no post-quantum hybrid key exchange (sntrup761x25519, OpenSSH 9's default):
            # it made each login in the sandbox 90 ms slower (234 against 143 ms)
            "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org,"
            "ecdh-sha2-nistp256,diffie-hellman-group14-sha256",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def prepare(state: Path, netns: str, public_key: str | None, instance_id: str) -> Path:
    """Write the instance's host key (once), authorized_keys and sshd_config; the config."""
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    key = state / HOST_KEY
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{instance_id}"]
            + ["-f", str(key)],
            check=True,
            capture_output=True,
        )
    keys = state / "authorized_keys"
    keys.write_text(f"{public_key.strip()}\n" if public_key else "")
    keys.chmod(0o600)
    config = state / "sshd_config"
    config.write_text(sshd_config(state))
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    _accounts(netns)
    return config


def _accounts(netns: str) -> None:
    """The namespace's /etc/passwd (the machine's, plus ec2-user as uid 0) and /etc/shadow.

    The shadow file names only the two login users, with no password ("*"), so sshd never
    finds them locked even where the machine locks root's password ("!").
    """
    folder = NETNS_ETC / netns
    folder.mkdir(parents=True, exist_ok=True)
    passwd = Path("/etc/passwd").read_text()
    names = {line.split(":", 1)[0] for line in passwd.splitlines() if line}
    if "ec2-user" not in names:
        shell = "/bin/bash" if Path("/bin/bash").exists() else "/bin/sh"
        passwd = passwd.rstrip("\n") + f"\nec2-user:x:0:0:EC2 Default User:/root:{shell}\n"
    (folder / "passwd").write_text(passwd)
    shadow = folder / "shadow"
    shadow.write_text("".join(f"{user}:*:19000:0:99999:7:::\n" for user in USERS))
    shadow.chmod(0o640)


def command(config: Path) -> list[str]:
    """sshd in the foreground, logging to stderr (the instance's log)."""
    sshd = sshd_path()
    if sshd is None:
        raise FileNotFoundError("sshd is not installed: apt-get install openssh-server")
    return [sshd, "-D", "-e", "-f", str(config)]
