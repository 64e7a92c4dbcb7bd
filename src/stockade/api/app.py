"""The ASGI app: decode an EC2 Query request, authenticate it, run the action, encode.

Every request is one transaction: an :class:`ApiError` (or any failure) rolls it back, so a
failed request changes nothing. A client's mistake is a 4xx with EC2's code; only our own
bugs are 500 ``InternalError`` (and those are logged with their traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import stockade.service.addresses
import stockade.service.groups
import stockade.service.images
import stockade.service.instances
import stockade.service.interfaces
import stockade.service.keypairs
import stockade.service.meta
import stockade.service.vpcs  # noqa: F401  (registers actions)
from stockade import accounts
from stockade.api import codec, hosts, sigv4
from stockade.errors import ApiError
from stockade.service.common import ACTIONS, REGIONS, Config, Ctx
from stockade.service.vpcs import ensure_region
from stockade.store.db import Store, agent_token, read_changes

log = logging.getLogger("stockade.api")

MAX_BODY = 4 * 1024 * 1024
XML = "text/xml;charset=UTF-8"
KEY_CACHE_SECONDS = 2.0


class _DryRunOk(Exception):
    """Raised inside the transaction so a DryRun request rolls back after validating."""


@dataclass
class Api:
    store: Store
    config: Config
    agent_token: str
    _loop: asyncio.AbstractEventLoop | None = None
    _event: asyncio.Event | None = None
    _keys: dict[str, tuple[float, tuple[str, str] | None]] = field(default_factory=dict)
    _ready: set[tuple[str, str]] = field(default_factory=set)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def changed_event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    def committed(self) -> None:
        """Called from a worker thread after a write commits: wake long-polling agents."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake)

    def secret(self, access_key_id: str) -> tuple[str, str] | None:
        now = time.monotonic()
        hit = self._keys.get(access_key_id)
        if hit is not None and now - hit[0] < KEY_CACHE_SECONDS:
            return hit[1]
        found = accounts.secret_for(self.store, access_key_id)
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[access_key_id] = (now, found)
        return found

    def authenticate(self, request: Request, body: bytes) -> tuple[str, str]:
        """(account id, region) of a correctly signed request, or EC2's auth error."""
        signed = sigv4.parse_auth(
            request.method,
            request.scope.get("raw_path", b"/").decode("latin-1"),
            request.scope.get("query_string", b"").decode("latin-1"),
            {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers.raw},
            body,
        )
        if signed.service != "ec2":
            raise ApiError(
                "SignatureDoesNotMatch",
                f"Credential should be scoped to correct service: 'ec2', not '{signed.service}'.",
                403,
            )
        if signed.region not in REGIONS:
            raise ApiError(
                "SignatureDoesNotMatch",
                f"Credential should be scoped to a valid region, not '{signed.region}'.",
                403,
            )
        found = self.secret(signed.access_key_id)
        if found is None:
            raise ApiError(
                "AuthFailure", "AWS was not able to validate the provided access credentials", 401
            )
        account_id, secret = found
        sigv4.verify(signed, secret)
        return account_id, signed.region

    def ensure_region(self, account_id: str, region: str) -> None:
        if (account_id, region) in self._ready:
            return
        with self.store.read() as conn:
            ready = _region_ready(conn, account_id, region, self.config)
        if not ready:
            with self.store.write() as tx:
                ensure_region(Ctx(tx.conn, account_id, region, self.config, tx))
        self._ready.add((account_id, region))

    def run(self, action: str, params: dict[str, Any], account_id: str, region: str) -> dict:
        self.ensure_region(account_id, region)
        spec = ACTIONS[action]
        dry_run = bool(params.pop("dry_run", False))
        try:
            if spec.write or dry_run:
                with self.store.write() as tx:
                    result = spec.handler(Ctx(tx.conn, account_id, region, self.config, tx), params)
                    if dry_run:
                        raise _DryRunOk
                if tx.appended:
                    self.committed()
            else:
                with self.store.read() as conn:
                    result = spec.handler(Ctx(conn, account_id, region, self.config), params)
        except _DryRunOk:
            raise ApiError(
                "DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412
            ) from None
        return result


def _region_ready(conn: Any, account_id: str, region: str, config: Config) -> bool:
    from stockade.service.vpcs import region_ready

    return region_ready(Ctx(conn, account_id, region, config))


def _params(request: Request, body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(request.url.query, keep_blank_values=True, strict_parsing=False)
        ctype = request.headers.get("content-type", "")
        if body and (request.method == "POST") and "json" not in ctype:
            pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
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


async def ec2_endpoint(request: Request) -> Response:
    api: Api = request.app.state.api
    request_id = str(uuid.uuid4())
    try:
        body = await request.body()
        if len(body) > MAX_BODY:
            raise ApiError("RequestEntityTooLarge", "The request body is too large.", 413)
        params = _params(request, body)
        account_id, region = api.authenticate(request, body)
        action = params.pop("Action", None)
        params.pop("Version", None)
        for key in [k for k in params if k.startswith("X-Amz-")]:
            del params[key]
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
        if api.store.is_sqlite:
            # a local SQLite call takes well under a millisecond: a thread hop costs more
            result = api.run(action, decoded, account_id, region)
        else:
            result = await run_in_threadpool(api.run, action, decoded, account_id, region)
        content = codec.encode_response(action, result, request_id)
        return Response(content, 200, media_type=XML, headers={"x-amzn-RequestId": request_id})
    except ApiError as err:
        return _error(err.code, err.message, err.status, request_id)
    except Exception:
        log.exception("internal error in request %s", request_id)
        return _error(
            "InternalError",
            "An internal error has occurred. Stockade logged it with this request id.",
            500,
            request_id,
        )


def _error(code: str, message: str, status: int, request_id: str) -> Response:
    return Response(
        codec.encode_error(code, message, request_id),
        status,
        media_type=XML,
        headers={"x-amzn-RequestId": request_id},
    )


async def changes(request: Request) -> Response:
    """The change log, read-only, for data-plane agents: ``?since=REV&limit=N&wait=SECONDS``.

    With ``wait``, the call long-polls until a change after ``since`` is committed.
    """
    api: Api = request.app.state.api
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not token or not hmac.compare_digest(token, api.agent_token):
        return JSONResponse({"error": "a valid agent token is required"}, 401)
    try:
        since = int(request.query_params.get("since", "0"))
        limit = min(max(int(request.query_params.get("limit", "1000")), 1), 10_000)
        wait = min(max(float(request.query_params.get("wait", "0")), 0.0), 30.0)
    except ValueError:
        return JSONResponse({"error": "since, limit and wait must be numbers"}, 400)
    deadline = time.monotonic() + wait
    while True:
        event = api.changed_event()
        rows = await run_in_threadpool(read_changes, api.store, since, limit)
        remaining = deadline - time.monotonic()
        if rows or remaining <= 0:
            break
        with contextlib.suppress(TimeoutError):
            # woken by a commit in this process; other writers are seen within a second
            await asyncio.wait_for(event.wait(), min(remaining, 1.0))
    revision = rows[-1]["revision"] if rows else await run_in_threadpool(api.store.revision)
    return JSONResponse({"revision": revision, "changes": rows})


async def health(request: Request) -> Response:
    api: Api = request.app.state.api
    revision = await run_in_threadpool(api.store.revision)
    return JSONResponse({"status": "ok", "revision": revision})


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.api.bind_loop(asyncio.get_running_loop())
    yield


def create_app(store: Store, config: Config | None = None) -> Starlette:
    app = Starlette(
        routes=[
            Route("/", ec2_endpoint, methods=["GET", "POST"]),
            Route("/_stockade/health", health, methods=["GET"]),
            Route("/_stockade/v1/changes", changes, methods=["GET"]),
            *hosts.ROUTES,
            Route("/{path:path}", ec2_endpoint, methods=["GET", "POST"]),
        ],
        lifespan=_lifespan,
    )
    app.state.api = Api(store, config or Config(), agent_token(store))
    return app
