"""One HTTP client for the agent endpoints, over one or several control-plane servers.

Every host-side caller (the agent, a sandbox host, the ``stockade status`` and ``explain``
commands) talks to the control plane through :class:`HostClient`. It follows one server
at a time (:attr:`HostClient.following`) and stays with it while it answers; a connection
error, a timeout or a 5xx moves it on to the next server in its list at once, and after a
whole round of failures it waits an exponential backoff with full jitter
(:class:`~stockade.dataplane.backoff.Backoff`) before the next round. A 4xx is the answer
(the request or the credential is wrong: another server would say the same). Servers of
one fleet share one database, so a long poll resumes from its revision on whichever
server answers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import httpx

from stockade.dataplane.backoff import Backoff

DEFAULT_TIMEOUT = httpx.Timeout(10.0, read=40.0)  # reads cover a 30 s long poll


def server_list(servers: str | Sequence[str]) -> list[str]:
    """``"http://a:8773,http://b:8773"`` or a list of URLs -> the URLs, in order, once each."""
    items = [servers] if isinstance(servers, str) else list(servers)
    urls: list[str] = []
    for item in items:
        for url in item.split(","):
            url = url.strip().rstrip("/")
            if url and url not in urls:
                urls.append(url)
    if not urls:
        raise ValueError("no control-plane server URL given")
    return urls


class HostClient:
    """An ``httpx`` client for the agent endpoints that fails over between servers.

    ``rounds``: how many passes over the whole list one request makes before it raises the
    last failure (the agent retries in its own loop, so it makes one); ``backoff``: the wait
    between rounds; ``verify``: as httpx's (a CA bundle path or an ``ssl.SSLContext``).
    """

    def __init__(
        self,
        servers: str | Sequence[str],
        token: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        verify: Any = True,
        rounds: int = 1,
        backoff: Backoff | None = None,
    ) -> None:
        self.servers = server_list(servers)
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(
            headers=all_headers, timeout=timeout, transport=transport, verify=verify
        )
        self.rounds = max(rounds, 1)
        self.backoff = backoff if backoff is not None else Backoff()
        self.failovers = 0  # times it moved on to another server
        self._current = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()

    @property
    def following(self) -> str:
        """The server this client talks to now."""
        return self.servers[self._current]

    @property
    def base_url(self) -> httpx.URL:
        return httpx.URL(self.following)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send to the followed server, failing over (see the module's text); the last
        failure (an ``httpx.TransportError``, or the 5xx as ``HTTPStatusError``) when
        every server failed every round."""
        last: Exception | None = None
        for round_ in range(self.rounds):
            if round_:
                self._closed.wait(self.backoff.next_delay())
                if self._closed.is_set():
                    break
            for _ in range(len(self.servers)):
                with self._lock:
                    index = self._current
                url = self.servers[index] + path
                try:
                    resp = self.http.request(method, url, **kwargs)
                except httpx.TransportError as exc:
                    last = exc
                else:
                    if resp.status_code < 500:
                        self.backoff.reset()
                        return resp
                    last = httpx.HTTPStatusError(
                        f"HTTP {resp.status_code} from {self.servers[index]}",
                        request=resp.request,
                        response=resp,
                    )
                self._move_on(index)
        assert last is not None
        raise last

    def _move_on(self, index: int) -> None:
        with self._lock:
            if self._current == index and len(self.servers) > 1:
                self._current = (index + 1) % len(self.servers)
                self.failovers += 1

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def close(self) -> None:
        self._closed.set()
        self.http.close()

    def __enter__(self) -> HostClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
