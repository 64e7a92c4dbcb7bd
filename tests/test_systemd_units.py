"""The systemd units in contrib/systemd: `systemd-analyze verify` accepts them (with the
stockade of this checkout in ExecStart), they restart always, start after the network is
online, and the agent holds CAP_NET_ADMIN and no other capability."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, ROOT

UNITS = ROOT / "contrib" / "systemd"
NAMES = ("stockade-server.service", "stockade-agent.service")


def settings(name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize("name", NAMES)
def test_units_restart_after_the_network_with_few_capabilities(name: str) -> None:
    unit = settings(name)
    assert unit["Restart"] == "always"
    assert unit["After"] == "network-online.target" and unit["Wants"] == "network-online.target"
    assert unit["ExecStart"].startswith("/usr/local/bin/stockade ")
    want = "CAP_NET_ADMIN" if "agent" in name else ""
    assert unit["CapabilityBoundingSet"] == want
    assert unit["NoNewPrivileges"] == "yes"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    for name in NAMES:
        text = (UNITS / name).read_text().replace("/usr/local/bin/stockade", str(BIN / "stockade"))
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / n) for n in NAMES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if "stockade" in line and "Documentation" not in line
    ]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr
