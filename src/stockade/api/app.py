"""The ASGI app: decode an EC2 Query request, authenticate it, run the action, encode.

Every request is one transaction: an :class:`ApiError` (or any failure) rolls it back, so a
failed request changes nothing. A client's mistake is a 4xx with EC2's code; only our own
bugs are 500 ``InternalError`` (and those are logged with their traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URL
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import stockade.service.addresses
import stockade.service.groups
import stockade.service.images
import stockade.service.insights
import stockade.service.instances
import stockade.service.interfaces
import stockade.service.ipv6
import stockade.service.keypairs
import stockade.service.meta
import stockade.service.prefixlists
import stockade.service.vpcs  # noqa: F401  (registers actions)
from stockade import accounts
from stockade.api import admin, codec, hosts, insights, sigv4, sts
from stockade.errors import ApiError
from stockade.service.common import (
    ACTIONS,
    REGIONS,
    Config,
    Ctx,
    random_bytes,
    set_token_key,
)
from stockade.service.vpcs import ensure_region
from stockade.store.db import Store, Tx, agent_token, read_changes
from stockade.store.watch import WalWatch

log = logging.getLogger("stockade.api")

# The largest request body read: 1 MiB. EC2's largest inputs are far smaller (16 KB of user
# data, 50 tags of 384 characters, 1,000 ids); a Content-Length above it is refused before
# any of the body is read, and a chunked body is cut off there.
MAX_BODY = 1024 * 1024
MSG_TOO_LARGE = f"The request body is larger than {MAX_BODY} bytes, the most this endpoint accepts."
MSG_BAD_TOKEN = "The security token included in the request is invalid."
MSG_UNSIGNED_BODY = (
    "The request body is not covered by the signature (UNSIGNED-PAYLOAD): sign the body, "
    "or send its parameters in the query string."
)
_ACCESS_KEY_ID = re.compile(r"[\x21-\x7e]{1,128}")
AGENT_REPORT = "agent-report:"  # settings key prefix of agents' reports (shared mode)
XML = "text/xml;charset=UTF-8"
KEY_CACHE_SECONDS = 2.0
# one account's reads with filters running at once (the others wait for a turn)
FILTERED_READS_PER_ACCOUNT = 2


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
    # per account with filtered reads in hand: [the semaphore they share, how many]
    _filtered: dict[str, list[Any]] = field(default_factory=dict)
    _ready: set[tuple[str, str]] = field(default_factory=set)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    # one of several processes serving the same database (``serve --workers N``): what
    # agents report is kept in the database, and the other processes' commits wake long
    # polls through a watch on the WAL (see poll_interval)
    shared: bool = False
    # writes waiting for :meth:`_flush`: (action, params, account id, region, answer)
    _queue: list[tuple[str, dict[str, Any], str, str, asyncio.Future[dict]]] = field(
        default_factory=list
    )

    _watch: WalWatch | None = None
    # ``serve --accept-any-credentials``: an unknown access key gets an account of its own
    # and any secret signs for it (keys of real accounts are still verified)
    accept_any_credentials: bool = False
    # set when the server is asked to exit: long polls answer at once, so shutdown does not
    # wait for them (uvicorn waits for every open request to finish)
    closing: bool = False

    @property
    def poll_interval(self) -> float:
        """How often a long poll looks for commits it was not woken for (other processes').

        With ``--workers``, the other workers' commits wake the loop through the WAL watch,
        so the poll is only a safety net; without the watch, it polls often."""
        if self.shared:
            return 0.1 if self._watch is None else 5.0
        return 1.0

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

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        if self.shared and self.store.path is not None:
            watch = WalWatch(self.store.path, self._wake)
            if watch.start(loop):
                self._watch = watch

    def unbind_loop(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def changed_event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    async def wait_for_revision(self, since: int, wait: float) -> None:
        """Return once a revision after ``since`` is committed, or after ``wait`` seconds
        (the long poll of the agent-facing endpoints)."""
        deadline = time.monotonic() + wait
        while True:
            event = self.changed_event()
            if self.store.is_sqlite:
                newest = self.store.revision()
            else:
                newest = await run_in_threadpool(self.store.revision)
            remaining = deadline - time.monotonic()
            if newest > since or remaining <= 0 or self.closing:
                return
            with contextlib.suppress(TimeoutError):
                # woken by a commit in this process, or (--workers) by another worker's
                # through the WAL watch; other writers are seen at the next poll
                await asyncio.wait_for(event.wait(), min(remaining, self.poll_interval))

    def end_long_polls(self) -> None:
        """The server is exiting: answer every long poll now (callable from a signal
        handler or any thread)."""
        self.closing = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake)

    def committed(self) -> None:
        """Called after a write commits (on the loop or a worker thread): wake long-polling
        agents."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # a worker thread
            running = None
        if running is loop:
            loop.call_soon(self._wake)  # on the loop already: no need to wake it up
        else:
            loop.call_soon_threadsafe(self._wake)

    def secret(self, access_key_id: str) -> tuple[str, str] | None:
        now = time.monotonic()
        hit = self._keys.get(access_key_id)
        if hit is not None and now - hit[0] < KEY_CACHE_SECONDS:
            return hit[1]
        found = accounts.secret_for(self.store, access_key_id)
        if self.accept_any_credentials:
            found = found or accounts.adopt_key(self.store, access_key_id)
        elif found is not None and found[1] == accounts.ANY_SECRET:
            found = None  # adopted by an earlier --accept-any-credentials run
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[access_key_id] = (now, found)
        return found

    def check_credentials(self, scope: Scope) -> tuple[sigv4.SignedRequest, str, str]:
        """Everything about a request's signature that can be checked before its body is
        read: its shape, age and scope, and that its access key exists and carries no
        session token. Returns the parsed signature, the account id and the secret key.
        A request without credentials is refused here, before a byte of its body is read."""
        signed = sigv4.parse_auth(
            scope["method"],
            scope.get("raw_path", b"/").decode("latin-1"),
            scope.get("query_string", b"").decode("latin-1"),
            {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            b"",
        )
        if signed.service != "ec2" and signed.service not in sts.SERVICES:
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
        found = None
        if _ACCESS_KEY_ID.fullmatch(signed.access_key_id):  # never look up a NUL (PostgreSQL)
            found = self.secret(signed.access_key_id)
        if found is None:
            raise ApiError(
                "AuthFailure", "AWS was not able to validate the provided access credentials", 401
            )
        if signed.security_token is not None:
            # Stockade's keys are long-term keys; AWS refuses a session token sent with one
            raise ApiError("AuthFailure", MSG_BAD_TOKEN, 401)
        account_id, secret = found
        return signed, account_id, secret

    @staticmethod
    def verify(signed: sigv4.SignedRequest, secret: str, body: bytes) -> bool:
        """Check the signature over ``body``; whether it covers the body. A key adopted by
        ``--accept-any-credentials`` accepts any signature (moto's and LocalStack's way)."""
        if secret == accounts.ANY_SECRET:
            return True
        return sigv4.verify(replace(signed, _body=body), secret)

    def authenticate(self, scope: Scope, body: bytes) -> tuple[str, str, bool]:
        """(account id, region, whether the body is signed) of a correctly signed request,
        or EC2's auth error."""
        signed, account_id, secret = self.check_credentials(scope)
        return account_id, signed.region, self.verify(signed, secret, body)

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
        """Run an action in a transaction of its own (answer when this returns)."""
        return self._run(action, params, account_id, region)

    async def run_on_loop(
        self, action: str, params: dict[str, Any], account_id: str, region: str
    ) -> dict:
        """Run an action on the event loop's thread (SQLite). A write is queued and run by
        :meth:`_flush` with the other writes the loop has in hand (group commit, see
        store.db.Batch); this returns once their transaction has committed."""
        spec = ACTIONS[action]
        if not ((spec.write or params.get("dry_run")) and self.store.batches):
            return self._run(action, params, account_id, region)
        self.ensure_region(account_id, region)  # a write of its own, never inside a batch
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dict] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((action, params, account_id, region, done))
        return await done

    async def run_off_loop(
        self, action: str, params: dict[str, Any], account_id: str, region: str
    ) -> dict:
        """Run a read with filters on a worker thread: the loop goes on serving meanwhile
        (between the thread's turns at the GIL). At most :data:`FILTERED_READS_PER_ACCOUNT`
        of one account's run at once, the rest wait their turn: one account cannot take
        every worker thread (and so every other account's turn, all requests' with
        PostgreSQL). With SQLite the account's region is set up first, on the loop, so that
        the thread only reads."""
        if self.store.is_sqlite:
            self.ensure_region(account_id, region)
        entry = self._filtered.get(account_id)
        if entry is None:
            entry = self._filtered[account_id] = [asyncio.Semaphore(FILTERED_READS_PER_ACCOUNT), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                return await run_in_threadpool(self._run, action, params, account_id, region)
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._filtered[account_id]

    def _flush(self) -> None:
        """Run the queued writes in one transaction, each in a savepoint of its own, commit
        it, then answer them all (a failed commit fails each of them).

        The writer lock is held only while this runs, never across a turn of the loop: with
        ``serve --workers N``, another process's flush waits for this one callback at most
        (its loop stops for that long), not for this loop's other requests."""
        queue, self._queue = self._queue, []
        outcomes: list[tuple[asyncio.Future[dict], dict | None, BaseException | None]] = []
        for action, params, account_id, region, done in queue:
            if done.cancelled():
                continue
            try:
                with self.store.write_in_batch() as (tx, _):
                    result = self._handle(action, params, account_id, region, tx)
            except Exception as err:  # noqa: BLE001 - handed to the request that raised it
                outcomes.append((done, None, _answer_of(err)))
            else:
                outcomes.append((done, result, None))
        batch = self.store.commit_batch()
        if batch is not None and batch.error is not None:
            failed = RuntimeError("the group commit failed")
            failed.__cause__ = batch.error
            outcomes = [(done, None, err or failed) for done, _, err in outcomes]
        for done, result, err in outcomes:
            if done.done():
                continue
            if err is not None:
                done.set_exception(err)
            else:
                done.set_result(result)  # type: ignore[arg-type]
        if batch is not None and batch.appended:
            self.committed()

    def _run(self, action: str, params: dict[str, Any], account_id: str, region: str) -> dict:
        self.ensure_region(account_id, region)
        spec = ACTIONS[action]
        try:
            if spec.write or params.get("dry_run"):
                with self.store.write() as tx:
                    result = self._handle(action, params, account_id, region, tx)
                if tx.appended:
                    self.committed()
                return result
            params.pop("dry_run", None)
            with self.store.read() as conn:
                return spec.handler(Ctx(conn, account_id, region, self.config), params)
        except _DryRunOk as err:
            raise _answer_of(err) from None

    def _handle(
        self, action: str, params: dict[str, Any], account_id: str, region: str, tx: Tx
    ) -> dict:
        """Run a write's handler in ``tx``; a DryRun raises :class:`_DryRunOk` once it has
        validated, so that what it did is rolled back."""
        dry_run = bool(params.pop("dry_run", False))
        result = ACTIONS[action].handler(Ctx(tx.conn, account_id, region, self.config, tx), params)
        if dry_run:
            raise _DryRunOk
        return result


# a read with more filter values than this runs on a worker thread even without wildcards
OFF_LOOP_FILTER_VALUES = 16


def _filtered_read(action: str, params: dict[str, Any]) -> bool:
    """A read whose filters may cost much: wildcard values (each matched against every
    item it lists) or many values (up to 200). It runs on a worker thread rather than on
    the event loop, where every other request would wait for it. A few exact values cost
    a string comparison per item and stay on the loop: a thread hop would cost more (the
    filtered describe of the capacity benchmark ran at less than half its rate when every
    filtered read took one)."""
    filters = params.get("filters")
    if not filters or ACTIONS[action].write or params.get("dry_run"):
        return False
    values = [v for f in filters for v in (f.get("values") or ())]
    return len(values) > OFF_LOOP_FILTER_VALUES or any(
        isinstance(v, str) and ("*" in v or "?" in v) for v in values
    )


def _answer_of(err: BaseException) -> BaseException:
    """What a request is answered with for an exception its handler raised."""
    if isinstance(err, _DryRunOk):
        return ApiError(
            "DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412
        )
    return err


def _region_ready(conn: Any, account_id: str, region: str, config: Config) -> bool:
    from stockade.service.vpcs import region_ready

    return region_ready(Ctx(conn, account_id, region, config))


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
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not token or not hmac.compare_digest(token, api.agent_token):
        return JSONResponse({"error": "a valid agent token is required"}, 401)
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
    api: Api = request.app.state.api
    revision = await run_in_threadpool(api.store.revision)
    return JSONResponse({"status": "ok", "revision": revision})


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
            Route("/_stockade/v1/changes", changes, methods=["GET"]),
            Route("/_stockade/v1/explain", insights.explain, methods=["POST"]),
            *hosts.ROUTES,
            *admin.ROUTES,
            Route("/{path:path}", ec2_endpoint, methods=["GET", "POST"]),
        ],
        lifespan=_lifespan,
    )
    app.state.api = Api(store, config or Config(), agent_token(store))
    # next tokens are signed with a key every process serving this database shares
    set_token_key(bytes.fromhex(store.setting("next_token_key", lambda: secrets.token_hex(32))))
    return app
