"""The ASGI app: decode an EC2 Query request, authenticate it, run the action, encode.

Every request is one transaction: an :class:`ApiError` (or any failure) rolls it back, so a
failed request changes nothing. A client's mistake is a 4xx with EC2's code; only our own
bugs are 500 ``InternalError`` (and those are logged with their traceback).

:class:`Api` composes the three parts a request goes through: who calls (api/auth.py), what
runs and how (api/dispatch.py, with the action table of api/actions.py), and the change
feed that wakes agents' long polls (api/feed.py). The agent-facing endpoints are one
Starlette ``Mount`` at ``/_stockade/v1`` behind one guard (the agent token and the JSON
error answer of an :class:`ApiError`; see :func:`agent_mount`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URL
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from stockade.api import admin, codec, hosts, insights, sigv4, sts
from stockade.api.actions import ACTIONS
from stockade.api.auth import MSG_BAD_TOKEN, Auth  # noqa: F401  (MSG_BAD_TOKEN: public)
from stockade.api.dispatch import Dispatch, _filtered_read
from stockade.api.feed import Feed
from stockade.errors import ApiError
from stockade.service.common import Config, random_bytes, set_token_key
from stockade.store.db import Store, agent_token, read_changes

log = logging.getLogger("stockade.api")

# The largest request body read: 1 MiB. EC2's largest inputs are far smaller (16 KB of user
# data, 50 tags of 384 characters, 1,000 ids); a Content-Length above it is refused before
# any of the body is read, and a chunked body is cut off there.
MAX_BODY = 1024 * 1024
MSG_TOO_LARGE = f"The request body is larger than {MAX_BODY} bytes, the most this endpoint accepts."
MSG_UNSIGNED_BODY = (
    "The request body is not covered by the signature (UNSIGNED-PAYLOAD): sign the body, "
    "or send its parameters in the query string."
)
AGENT_REPORT = "agent-report:"  # settings key prefix of agents' reports (shared mode)
XML = "text/xml;charset=UTF-8"


@dataclass
class Api:
    """One server's API: :attr:`auth`, :attr:`dispatch` and :attr:`feed`, with the agents'
    reports. The methods below are the names the handlers and the CLI use."""

    store: Store
    config: Config
    agent_token: str
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    auth: Auth = field(init=False)
    dispatch: Dispatch = field(init=False)
    feed: Feed = field(init=False)

    def __post_init__(self) -> None:
        self.auth = Auth(self.store)
        self.feed = Feed(self.store)
        self.dispatch = Dispatch(self.store, self.config, self.committed)

    # --- settings the CLI sets ------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """One of several processes serving the same database (``serve --workers N``, or
        several servers on one PostgreSQL): agents' reports are kept in the database."""
        return self.feed.shared or not self.store.is_sqlite

    @shared.setter
    def shared(self, value: bool) -> None:
        self.feed.shared = value

    @property
    def accept_any_credentials(self) -> bool:
        return self.auth.accept_any_credentials

    @accept_any_credentials.setter
    def accept_any_credentials(self, value: bool) -> None:
        self.auth.accept_any_credentials = value

    @property
    def closing(self) -> bool:
        return self.feed.closing

    # --- agents' reports ------------------------------------------------------------------

    def record_agent(self, report: dict[str, Any]) -> None:
        """Keep an agent's status report (``report["host"]`` names it)."""
        if self.shared:
            self.store.put_setting(AGENT_REPORT + report["host"], json.dumps(report))
        else:
            self.agents[report["host"]] = report

    def agent_reports(self) -> list[dict[str, Any]]:
        if self.shared:
            return [json.loads(v) for v in self.store.settings_under(AGENT_REPORT).values()]
        return list(self.agents.values())

    # --- the change feed ------------------------------------------------------------------

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self.feed.bind_loop(loop)

    def unbind_loop(self) -> None:
        self.feed.unbind_loop()

    async def wait_for_revision(self, since: int, wait: float) -> None:
        await self.feed.wait_for_revision(since, wait)

    def end_long_polls(self) -> None:
        self.feed.end_long_polls()

    def committed(self) -> None:
        """Called after a write commits (on the loop or a worker thread): wake long-polling
        agents."""
        self.feed.committed()

    # --- auth -----------------------------------------------------------------------------

    def secret(self, access_key_id: str) -> tuple[str, str] | None:
        return self.auth.secret(access_key_id)

    def check_credentials(self, scope: Scope) -> tuple[sigv4.SignedRequest, str, str]:
        return self.auth.check_credentials(scope)

    verify = staticmethod(Auth.verify)

    def authenticate(self, scope: Scope, body: bytes) -> tuple[str, str, bool]:
        return self.auth.authenticate(scope, body)

    # --- dispatch -------------------------------------------------------------------------

    def ensure_region(self, account_id: str, region: str) -> None:
        self.dispatch.ensure_region(account_id, region)

    def run(self, action: str, params: dict[str, Any], account_id: str, region: str) -> dict:
        """Run an action in a transaction of its own (answer when this returns)."""
        return self.dispatch.run(action, params, account_id, region)

    async def run_on_loop(
        self, action: str, params: dict[str, Any], account_id: str, region: str
    ) -> dict:
        return await self.dispatch.run_on_loop(action, params, account_id, region)

    async def run_off_loop(
        self, action: str, params: dict[str, Any], account_id: str, region: str
    ) -> dict:
        return await self.dispatch.run_off_loop(action, params, account_id, region)


def _content_type(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"content-type":  # Starlette's Headers.get, on ASGI's lower-case names
            return value.decode("latin-1")
    return ""


def _params(scope: Scope, body: bytes) -> dict[str, str]:
    try:
        query = scope.get("query_string", b"")
        # what Starlette's request.url.query gives (decoding and all), without building a URL
        query_text = URL(scope=scope).query if query else ""
        pairs = _parse_qsl(query_text)
        if body and scope["method"] == "POST" and "json" not in _content_type(scope):
            pairs += _parse_qsl(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(
            "MalformedQueryString", "The request body is not a valid query string."
        ) from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise ApiError("InvalidParameterValue", f"The parameter {key} is given more than once.")
        params[key] = value
    return params


def _parse_qsl(qs: str) -> list[tuple[str, str]]:
    """``parse_qsl(qs, keep_blank_values=True)``, skipping the work plain pairs do not need."""
    pairs = []
    for name_value in qs.split("&") if qs else ():
        if not name_value:
            continue
        name, _, value = name_value.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "%" in name:
            name = unquote(name)
        if "+" in value:
            value = value.replace("+", " ")
        if "%" in value:
            value = unquote(value)
        pairs.append((name, value))
    return pairs


class _TooLarge(ApiError):
    def __init__(self) -> None:
        super().__init__("RequestEntityTooLarge", MSG_TOO_LARGE, 413)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:  # the HTTP server checks it already
                raise ApiError("InvalidRequest", "The Content-Length header is invalid.") from None
    return None


async def _read_body(receive: Receive, limit: int = MAX_BODY) -> bytes:
    """The whole request body (as Starlette's ``Request.body()`` reads it), up to ``limit``
    bytes: past that, :class:`_TooLarge` (a chunked body is not read on)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            body = message.get("body", b"")
            if body:
                size += len(body)
                if size > limit:
                    raise _TooLarge()
                chunks.append(body)
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _request_id() -> str:
    """A random (version 4) UUID, as ``str(uuid.uuid4())`` spells it, a little cheaper."""
    h = random_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


async def serve_ec2(api: Api, scope: Scope, receive: Receive) -> tuple[int, bytes, str, bool]:
    """One EC2 Query request: (HTTP status, XML body, request id, whether to close the
    connection: a body left unread is not read on just to keep the connection)."""
    request_id = _request_id()
    read = False
    service = "ec2"
    try:
        length = _content_length(scope)
        if length is not None and length > MAX_BODY:
            raise _TooLarge()
        # the credentials first: a request without (valid) ones is refused unread
        signed, account_id, secret = api.check_credentials(scope)
        service = signed.service
        body = await _read_body(receive)
        read = True
        region = signed.region
        if not api.verify(signed, secret, body) and body.strip():
            # only what is signed is ever applied: the query string is, this body is not
            raise ApiError("SignatureDoesNotMatch", MSG_UNSIGNED_BODY, 403)
        params = _params(scope, body)
        action = params.pop("Action", None)
        params.pop("Version", None)
        for key in [k for k in params if k.startswith("X-Amz-")]:
            del params[key]
        if service != "ec2":  # STS and IAM, routed by the credential scope
            status, content = sts.answer(service, action, account_id, request_id)
            return status, content, request_id, False
        if not action:
            raise ApiError("MissingAction", "The request must contain the parameter Action.")
        if action not in ACTIONS:
            if action in codec.operation_names():
                raise ApiError(
                    "UnsupportedOperation", f"The action {action} is not supported by Stockade."
                )
            raise ApiError(
                "InvalidAction", f"The action {action} is not valid for this web service."
            )
        decoded = codec.decode_request(action, params)
        if _filtered_read(action, decoded):
            result = await api.run_off_loop(action, decoded, account_id, region)
        elif api.store.is_sqlite:
            # a local SQLite call takes well under a millisecond: a thread hop costs more
            result = await api.run_on_loop(action, decoded, account_id, region)
        else:
            result = await run_in_threadpool(api.run, action, decoded, account_id, region)
        return 200, codec.encode_response(action, result, request_id), request_id, False
    except ApiError as err:
        if service != "ec2":
            content = sts.error(service, err.code, err.message, request_id)
        else:
            content = codec.encode_error(err.code, err.message, request_id)
        return err.status, content, request_id, not read
    except ClientDisconnect:  # nobody to answer: the reply goes nowhere
        content = codec.encode_error("RequestTimeout", "The client went away.", request_id)
        return 400, content, request_id, True
    except Exception:
        log.exception("internal error in request %s", request_id)
        return (
            500,
            codec.encode_error(
                "InternalError",
                "An internal error has occurred. Stockade logged it with this request id.",
                request_id,
            ),
            request_id,
            not read,
        )


def _xml_headers(content: bytes, request_id: str, close: bool) -> list[tuple[bytes, bytes]]:
    # the headers (and their order) Starlette's Response(media_type=XML, headers=...) sends
    headers = [
        (b"x-amzn-requestid", request_id.encode("latin-1")),
        (b"content-length", str(len(content)).encode("latin-1")),
        (b"content-type", _XML_BYTES),
    ]
    if close:
        headers.append((b"connection", b"close"))
    return headers


_XML_BYTES = XML.encode("latin-1")


async def ec2_endpoint(request: Request) -> Response:
    """The EC2 endpoint as a Starlette route (HEAD, and paths under ``/_stockade/``)."""
    api: Api = request.app.state.api
    status, content, request_id, close = await serve_ec2(api, request.scope, request.receive)
    headers = {"x-amzn-RequestId": request_id}
    if close:
        headers["connection"] = "close"
    return Response(content, status, media_type=XML, headers=headers)


async def changes(request: Request) -> Response:
    """The change log, read-only, for data-plane agents: ``?since=REV&limit=N&wait=SECONDS``.

    With ``wait``, the call long-polls until a change after ``since`` is committed.
    """
    api: Api = request.app.state.api
    try:
        since = int(request.query_params.get("since", "0"))
        limit = min(max(int(request.query_params.get("limit", "1000")), 1), 10_000)
        wait = min(max(float(request.query_params.get("wait", "0")), 0.0), 30.0)
    except ValueError:
        return JSONResponse({"error": "since, limit and wait must be numbers"}, 400)
    if wait > 0:
        await api.wait_for_revision(since, wait)
    rows = await run_in_threadpool(read_changes, api.store, since, limit)
    revision = rows[-1]["revision"] if rows else await run_in_threadpool(api.store.revision)
    return JSONResponse({"revision": revision, "changes": rows})


async def health(request: Request) -> Response:
    """Liveness: the process answers (200 whether or not the database does). ``revision``
    is the newest one this server knows of (null before it has read one), ``waiting`` the
    agents' long polls waiting in it now."""
    api: Api = request.app.state.api
    revision: int | None = api.feed.latest
    if revision < 0:
        try:
            revision = await api.feed.newest()
        except Exception:  # noqa: BLE001 - live, even when the database is not
            revision = None
    return JSONResponse({"status": "ok", "revision": revision, "waiting": api.feed.waiting})


READY_TIMEOUT = 2.0  # seconds the database has to answer a readiness check


async def ready(request: Request) -> Response:
    """Readiness: 200 only when the database answers (within :data:`READY_TIMEOUT`) and
    the server is not shutting down; 503 otherwise (a load balancer sends nothing here)."""
    api: Api = request.app.state.api
    if api.closing:
        return JSONResponse({"status": "closing"}, 503)
    try:
        revision = await asyncio.wait_for(run_in_threadpool(api.store.revision), READY_TIMEOUT)
    except Exception as err:  # noqa: BLE001 - any failure means: not ready
        return JSONResponse({"status": "unavailable", "error": type(err).__name__}, 503)
    return JSONResponse({"status": "ready", "revision": revision})


def _agent_error(err: ApiError) -> Response:
    status = 404 if err.code.endswith(".NotFound") else err.status
    # a refused body is left unread: the connection cannot carry another request, so close it
    # (otherwise the client waits for the rest of its upload to be taken, or times out)
    headers = {"Connection": "close"} if status == 413 else None
    return JSONResponse({"error": err.code, "message": err.message}, status, headers=headers)


class AgentGuard:
    """The one wrapper of the agent endpoints: the agent token is required (401 before
    the request reaches a handler), and an :class:`ApiError` a handler raises is answered
    as JSON ``{"error": code, "message": ...}`` (404 for a ``.NotFound``)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Any]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if not hosts.authorised(request, scope["app"].state.api):
            response: Response = JSONResponse({"error": "a valid agent token is required"}, 401)
            await response(scope, receive, send)
            return
        started = False

        async def sending(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except ApiError as err:
            if started:
                raise
            await _agent_error(err)(scope, receive, send)


def agent_mount() -> Mount:
    """The agent-facing endpoints, ``/_stockade/v1/...``: :data:`hosts.ROUTES` (paths
    relative to the mount) and the change log, behind one :class:`AgentGuard`."""
    from starlette.middleware import Middleware

    return Mount(
        "/_stockade/v1",
        routes=[Route("/changes", changes, methods=["GET"]), *hosts.ROUTES],
        middleware=[Middleware(AgentGuard)],
    )


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.api.bind_loop(asyncio.get_running_loop())
    # The EC2 model is loaded now rather than by the first request; then what start-up left
    # alive (the model's hundreds of thousands of objects, mostly) is moved out of the
    # garbage collector's sight, so its full collections no longer walk it every time (they
    # paused a request for tens of milliseconds).
    codec.operation_names()
    gc.collect()
    gc.freeze()
    restore = _end_long_polls_on_exit(app.state.api)
    # A worker thread busy with a filtered read keeps the GIL until the loop has waited a
    # switch interval for it, several times per request the loop serves meanwhile. 1 ms
    # instead of 5: another account's DescribeRegions p99 under worst-case filters over
    # 2,500 groups fell from 87-96 ms to 20-42 ms (bench/hardening.py, alternating runs).
    sys.setswitchinterval(0.001)
    yield
    restore()
    app.state.api.unbind_loop()


def _end_long_polls_on_exit(api: Api) -> Callable[[], None]:
    """Chain SIGINT/SIGTERM (uvicorn's handlers, by now) to :meth:`Api.end_long_polls`."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        prev = signal.getsignal(sig)
        if not callable(prev):
            continue

        def handler(signum: int, frame: Any, prev: Callable[..., Any] = prev) -> None:
            api.end_long_polls()
            prev(signum, frame)

        previous[sig] = prev
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, prev in previous.items():
            signal.signal(sig, prev)

    return restore


class App(Starlette):
    """Starlette, with EC2 requests (GET or POST outside ``/_stockade/``) served directly.

    They are what the routes would send to :func:`ec2_endpoint` anyway; going around the
    middleware, router and Request/Response objects saves a good part of a request's cost.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("POST", "GET")
            and not scope["path"].startswith("/_stockade/")
        ):
            status, content, request_id, close = await serve_ec2(self.state.api, scope, receive)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": _xml_headers(content, request_id, close),
                }
            )
            await send({"type": "http.response.body", "body": content})
            return
        await super().__call__(scope, receive, send)


WORKER_DATABASE_URL = "STOCKADE_WORKER_DATABASE_URL"
WORKER_ENDPOINT = "STOCKADE_WORKER_ENDPOINT"
WORKER_ACCEPT_ANY = "STOCKADE_WORKER_ACCEPT_ANY_CREDENTIALS"


def worker_app() -> Starlette:
    """The app of one ``stockade serve --workers N`` process (an import string for uvicorn).

    ``serve`` has migrated the database and passes its URL and the endpoint in the
    environment. SQLite's WAL lets the processes read at once; their writers take turns on
    a lock file next to the database (see store/db.py).
    """
    store = Store(os.environ[WORKER_DATABASE_URL])
    app = create_app(store, Config(endpoint=os.environ[WORKER_ENDPOINT]))
    app.state.api.shared = True
    app.state.api.accept_any_credentials = os.environ.get(WORKER_ACCEPT_ANY) == "1"
    return app


def create_app(store: Store, config: Config | None = None) -> Starlette:
    app = App(
        routes=[
            Route("/", ec2_endpoint, methods=["GET", "POST"]),
            Route("/_stockade/health", health, methods=["GET"]),
            Route("/_stockade/ready", ready, methods=["GET"]),
            # their own credentials (the agent token or SigV4): outside the agent mount
            *admin.ROUTES,
            Route("/_stockade/v1/explain", insights.explain, methods=["POST"]),
            agent_mount(),
            Route("/{path:path}", ec2_endpoint, methods=["GET", "POST"]),
        ],
        lifespan=_lifespan,
    )
    app.state.api = Api(store, config or Config(), agent_token(store))
    # next tokens are signed with a key every process serving this database shares
    set_token_key(bytes.fromhex(store.setting("next_token_key", lambda: secrets.token_hex(32))))
    return app
