"""uvicorn's HTTP protocol for ``serve --tls``, closing idle TLS connections at once.

Closing a TLS connection, asyncio and uvloop send close_notify and then wait for the
client's, up to 30 s, before they let go of the connection. A client that keeps a
connection idle in its pool (boto3, httpx, an agent between two calls) does not read until
its next request, so every such connection held a stopping ``serve --tls`` for 30 s. An
idle connection has nothing left to say: once what was written has left, it is dropped
(TLS 1.3 lets a side close without waiting for the other's close_notify).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

GRACE_S = 0.2  # what was written gets this long to leave before the connection is dropped
GIVE_UP_S = 5.0  # dropped then even if the client is not reading


class HttpsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that drops an idle connection it closes (shutdown, keep-alive
    timeout) instead of waiting for the client's close_notify."""

    _lost = False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        super().connection_lost(exc)

    def shutdown(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        super().shutdown()
        if idle:
            self._drop_when_flushed()

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        self._drop_when_flushed()

    def _drop_when_flushed(self) -> None:
        start = time.monotonic()
        loop = asyncio.get_running_loop()

        def check() -> None:
            transport: Any = self.transport
            if self._lost or not transport.is_closing():
                return
            waited = time.monotonic() - start
            flushed = transport.get_write_buffer_size() == 0
            if (flushed and waited >= GRACE_S) or waited >= GIVE_UP_S:
                transport.abort()
                return
            loop.call_later(0.05, check)

        loop.call_later(0.05, check)
