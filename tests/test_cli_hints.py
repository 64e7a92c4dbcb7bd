"""Where newcomers trip: `stockade --version`, a port already in use, `exec` without a
command, the line that puts the tools on PATH, `make`'s silent install. Each mistake exits
non-zero with a line that says what to do, never a traceback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from importlib.metadata import version
from pathlib import Path

import pytest

import netns
from conftest import BIN, ROOT, free_port, start_server, stop_server


def stockade(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "stockade"), *args], capture_output=True, text=True, timeout=timeout
    )


def said(out: subprocess.CompletedProcess) -> str:
    """stderr with rich's line wrapping undone."""
    assert "Traceback" not in out.stderr, out.stderr
    return " ".join(out.stderr.split())


def test_version():
    out = stockade("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"stockade {version('stockade')}"


@pytest.fixture
def taken_port():
    """A port this test process listens on (on loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_on_a_port_in_use(taken_port, tmp_path):
    out = stockade("serve", "--port", str(taken_port), "--data-dir", str(tmp_path), timeout=30)
    assert out.returncode != 0
    text = said(out)
    assert f"port {taken_port} is in use by pid {os.getpid()} (pytest" in text
    assert "pass --port N" in text


def test_serve_on_an_address_it_cannot_have(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails before listening
    out = stockade(
        "serve", "--host", "192.0.2.1", "--port", str(free_port()), "--data-dir", str(tmp_path)
    )
    assert out.returncode != 0
    assert "cannot listen on 192.0.2.1" in said(out) and "--host" in said(out)


@pytest.mark.netns
@pytest.mark.skipif(netns.can_run() is not None, reason=str(netns.can_run()))
def test_up_on_a_port_in_use(taken_port, tmp_path):
    prefix = f"skt{uuid.uuid4().hex[:4]}-"
    try:
        out = stockade(
            "up",
            "--port",
            str(taken_port),
            "--prefix",
            prefix,
            "--data-dir",
            str(tmp_path),
            timeout=120,
        )
        assert out.returncode != 0
        assert f"port {taken_port} is in use by pid {os.getpid()}" in said(out)
    finally:
        # had it not stopped at the port, this removes what it built
        subprocess.run(
            [str(BIN / "stockade"), "down", "--data-dir", str(tmp_path)],
            capture_output=True,
            timeout=120,
        )
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert prefix not in left


def test_exec_without_a_command(tmp_path):
    out = stockade("exec", "i-0123456789abcdef0", "--data-dir", str(tmp_path))
    assert out.returncode == 2
    text = said(out)
    assert "Usage: stockade exec" in text
    assert "no command to run in i-0123456789abcdef0" in text
    assert "stockade exec i-0123456789abcdef0 -- sh" in text


def _without_bin(path: str) -> str:
    return os.pathsep.join(p for p in path.split(os.pathsep) if p and Path(p) != BIN)


def test_serve_banner_says_how_to_put_the_tools_on_path():
    """The line the banner prints, pasted into a shell that has none of the tools on PATH
    and no credentials, makes `stockade` and the ec2-* tools work against that server."""
    clean_path = _without_bin(os.environ["PATH"])
    server = start_server(env={"PATH": clean_path})
    try:
        log = Path(server.data_dir, "server.log").read_text()
        (line,) = [x.strip() for x in log.splitlines() if 'eval "$(stockade env' in x]
        assert line == (
            f'export PATH={BIN}:$PATH; eval "$(stockade env --data-dir {server.data_dir} '
            f'--endpoint {server.url})"'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EC2_"))}
        env["PATH"] = clean_path
        env["HOME"] = server.data_dir  # no ~/.aws to fall back on
        ran = subprocess.run(
            ["bash", "-c", f"{line}; ec2-describe-group default"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.startswith("GROUP\tsg-") and "\tdefault\t" in ran.stdout
    finally:
        stop_server(server)


def test_the_makefile_says_what_it_installs(tmp_path):
    """`make` on a fresh clone prints a line per step before pip's long wait, and a line
    saying what to do when pip fails. (No network: pip is told to use no index, so the last
    step fails, as it does offline.)"""
    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("src", "scripts"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("*.egg-info"))
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("MAKEFLAGS", None)
    ran = subprocess.run(
        ["make", "--no-print-directory", ".venv/.installed", f"PY={sys.base_prefix}/bin/python3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode != 0
    steps = [x for x in ran.stdout.splitlines() if x.startswith("[")]
    assert steps == [
        "[1/3] creating the Python environment in .venv/ (a few seconds)",
        "[2/3] updating pip (a few seconds)",
        "[3/3] installing Stockade and its Python packages (about a minute the first time)",
    ]
    assert "installing the Python packages failed (see above); is PyPI reachable?" in ran.stdout
    assert not (tmp_path / ".venv" / ".installed").exists()
