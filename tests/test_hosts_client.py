"""The one client of the agent endpoints (stockade.hosts.client): it follows one server,
moves on to the next at a refused connection or a 5xx, keeps a 4xx as the answer, backs
off between rounds, and the agent reports which server it follows (`stockade status`
shows it). Real servers on 127.0.0.1, no root needed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from stockade.dataplane.agent import Agent
from stockade.dataplane.backoff import Backoff
from stockade.dataplane.fake import FakeNft
from stockade.hosts.client import HostClient, server_list
from stockade.store.db import agent_token
from test_agent_resilience import reported, stockade_status

from conftest import Server, free_port, start_server, stop_server, wait_until


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    server = start_server(env={"STOCKADE_AUTO_RUN": "0"})
    yield server
    stop_server(server)


class _Busy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def busy() -> Iterator[str]:
    """A server on 127.0.0.1 that answers every request 503."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def dead() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: refused


def test_server_lists_read_commas_and_drop_repeats() -> None:
    assert server_list("http://a:1, http://b:2/,http://a:1") == ["http://a:1", "http://b:2"]
    with pytest.raises(ValueError, match="no control-plane server"):
        server_list(" , ")


def test_a_refused_server_fails_over_to_the_next_and_the_client_stays(live: Server) -> None:
    with HostClient([dead(), live.url], agent_token(live.store)) as client:
        assert client.get("/_stockade/health").status_code == 200
        assert client.following == live.url and client.failovers == 1
        assert client.get("/_stockade/v1/status").status_code == 200
        assert client.failovers == 1  # it stays with the server that answers


def test_a_5xx_moves_on_and_a_4xx_is_the_answer(live: Server, busy: str) -> None:
    with HostClient([busy, live.url], agent_token(live.store)) as client:
        assert client.get("/_stockade/v1/status").status_code == 200
        assert client.following == live.url
    with HostClient([live.url, busy], "not-the-token") as client:
        assert client.get("/_stockade/v1/status").status_code == 401
        assert client.following == live.url and client.failovers == 0


def test_every_server_failing_raises_the_last_failure_after_the_rounds(busy: str) -> None:
    backoff = Backoff(base=0.01, cap=0.02)
    with HostClient([dead(), busy], "t", rounds=3, backoff=backoff) as client:
        with pytest.raises(httpx.HTTPStatusError, match="503"):
            client.get("/_stockade/health")
        assert backoff.failures == 2  # it waited between the three rounds
        assert client.failovers == 6


def test_the_agent_reports_the_server_it_follows(live: Server) -> None:
    token = agent_token(live.store)
    agent = Agent([dead(), live.url], token, "hc-1", executor=FakeNft())
    thread = threading.Thread(target=agent.run, kwargs={"poll_wait": 2}, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"}) as c:
            wait_until(lambda: reported(c, "hc-1").get("server") == live.url, 30, "a report")
            assert reported(c, "hc-1")["failovers"] == 1
        row = next(line for line in stockade_status(live).splitlines() if "hc-1" in line)
        assert live.url in row and "1 failovers" in row
    finally:
        agent.stop()
        thread.join(15)
        agent.close()
