"""The host client and a machine's agent pin the control plane's CA (``serve --tls``): the
right hash connects, a wrong one is a clear error naming the config and --ca-hash."""

from __future__ import annotations

import json
import os

from stockade import tls
from stockade.hosts.client import HostClient
from stockade.store.db import agent_token
from test_tls import _stockade, served  # noqa: F401 - the TLS server fixture


def test_the_host_client_pins_the_ca_hash(served) -> None:  # noqa: F811
    pin = tls.data_ca_hash(served.data_dir)
    verify = tls.httpx_verify(ca_hash=pin, url=served.url)
    with HostClient(served.url, agent_token(served.store), verify=verify) as client:
        assert client.get("/_stockade/v1/status").status_code == 200


def test_a_machine_agent_with_a_wrong_ca_hash_fails_clearly(served, tmp_path) -> None:  # noqa: F811
    cfg = tmp_path / "agent.json"
    wrong = "sha256:" + "0" * 64
    cfg.write_text(
        json.dumps({"servers": [served.url], "token": "t", "host": "m-1", "ca_hash": wrong})
    )
    out = _stockade("agent", "--config", str(cfg), env={**os.environ, "COLUMNS": "300"})
    assert out.returncode == 2, out.stderr
    assert "--ca-hash" in out.stderr and str(cfg) in out.stderr
