"""Where newcomers trip: `stockade --version`, a port already in use, `exec` without a
command. Each mistake exits non-zero with a line that says what to do, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from importlib.metadata import version

import pytest

import netns
from conftest import BIN, free_port


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
