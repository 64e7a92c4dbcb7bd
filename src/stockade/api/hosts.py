"""Agent-facing endpoints for hosts (JSON, not the EC2 API; the agent token is required).

``POST /_stockade/v1/hosts/{host}/claim``          body ``{"limit": N}`` (default 10):
    place up to N pending instances on the host; answers ``{"instances": [placement...]}``.
``GET  /_stockade/v1/hosts/{host}/instances``:
    everything placed on the host (for a restarted host).
``POST /_stockade/v1/instances/{instance_id}/state`` body ``{"state": S, "host": H}``:
    the host reports ``running``, ``stopped`` or ``terminated``; answers
    ``{"instance_id", "state", "previous"}``; a transition the state machine does not allow
    is a 409 with the reason.

:data:`ROUTES` are mounted at ``/_stockade/v1`` by ``app.agent_mount()`` behind one guard
(``app.AgentGuard``): the agent token is checked before a handler runs, and an
:class:`ApiError` a handler raises is answered as JSON (``{"error", "message"}``, 404 for a
``.NotFound``). A new endpoint is a handler here plus one ``Route`` in :data:`ROUTES`, its
path relative to the mount; it needs no token check and no ``except ApiError``.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stockade.errors import ApiError
from stockade.service import instances, topology


def authorised(request: Request, api: Any) -> bool:
    """Whether ``request`` carries the agent token (checked by app.AgentGuard for every
    route of :data:`ROUTES`)."""
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return bool(token) and hmac.compare_digest(token, api.agent_token)


# the most an agent-facing request may carry (claims and reports are a few KiB)
MAX_HOST_BODY = 4 * 1024 * 1024


async def read_capped(request: Request, limit: int = MAX_HOST_BODY) -> bytes:
    """The request's body, refused (413) when its Content-Length says it is over ``limit``
    before a byte is read, and cut off at ``limit`` when it comes chunked."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ApiError("RequestEntityTooLarge", f"The body is over {limit} bytes.", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("RequestEntityTooLarge", f"The body is over {limit} bytes.", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_capped(request)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("InvalidParameterValue", "The body must be a JSON object.") from None
    if not isinstance(data, dict):
        raise ApiError("InvalidParameterValue", "The body must be a JSON object.")
    return data


async def claim(request: Request) -> Response:
    api = request.app.state.api
    body = await _body(request)
    limit = body.get("limit", 10)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= 1000:
        raise ApiError("InvalidParameterValue", "limit must be an integer from 0 to 1000.")
    claimed = await run_in_threadpool(
        instances.claim_pending, api.store, request.path_params["host"], limit, api.config
    )
    if claimed:
        api.committed()
    return JSONResponse({"instances": claimed})


async def placed(request: Request) -> Response:
    api = request.app.state.api
    rows = await run_in_threadpool(
        instances.host_instances, api.store, request.path_params["host"], api.config
    )
    return JSONResponse({"instances": rows})


async def report(request: Request) -> Response:
    api = request.app.state.api
    body = await _body(request)
    state, host = body.get("state"), body.get("host")
    if not isinstance(state, str):
        raise ApiError("MissingParameter", "The body must name the state.")
    if host is not None and not isinstance(host, str):
        raise ApiError("InvalidParameterValue", "host must be a string.")
    result = await run_in_threadpool(
        instances.report_state,
        api.store,
        request.path_params["instance_id"],
        state,
        host,
        api.config,
    )
    api.committed()
    return JSONResponse(result)


async def host_state(request: Request) -> Response:
    """The snapshot one host's data plane enforces (see service/topology.py).

    ``?since=R``: only what changed after revision R (``"full": false``), or the whole
    snapshot (``"full": true``) when the change log cannot say; with ``&wait=S`` the call
    first long-polls (up to S seconds, 30 at most) until something after R is committed, so
    an agent learns of a change and of what it is in one round trip. ``?groups=a,b``: those
    groups and their members on any host.
    """
    api = request.app.state.api
    host = request.path_params["host"]
    since_text = request.query_params.get("since")
    group_ids = [g for g in request.query_params.get("groups", "").split(",") if g]
    since: int | None = None
    try:
        if since_text is not None:
            since = int(since_text)
        wait = min(max(float(request.query_params.get("wait", "0")), 0.0), 30.0)
    except ValueError:
        return JSONResponse({"error": "since and wait must be numbers"}, 400)
    if since is not None and wait > 0:
        await api.wait_for_revision(since, wait)
    if since is not None and not group_ids:
        # the delta is the same for every host (scope None): computed once per revision
        # and served to every agent at ``since`` (api/feed.py)
        shared = await api.feed.delta(since, None, lambda: _delta(api.store, since))
        if shared != b"null":
            return Response(shared, media_type="application/json")

    def read() -> dict[str, Any]:
        with api.store.read() as conn:
            if group_ids:
                return topology.members(conn, group_ids)
            if since is not None:
                found = topology.delta(conn, since)
                if found is not None:
                    return found
            return topology.snapshot(conn, host)

    if api.store.is_sqlite and (since is not None or group_ids):
        return JSONResponse(read())  # small reads: inline, as the EC2 reads are
    return JSONResponse(await run_in_threadpool(read))


def _delta(store: Any, since: int) -> dict[str, Any] | None:
    with store.read() as conn:
        return topology.delta(conn, since)


async def region_state(request: Request) -> Response:
    """Every live interface and every group (for explain and reachability)."""
    api = request.app.state.api

    def read() -> dict[str, Any]:
        with api.store.read() as conn:
            return topology.snapshot(conn)

    return JSONResponse(await run_in_threadpool(read))


async def agent_status(request: Request) -> Response:
    """An agent reports the revision it enforces (``stockade status`` shows it)."""
    body = await _body(request)
    body["host"] = request.path_params["host"]
    body["reported_at"] = time.time()
    api = request.app.state.api
    if api.shared:
        await run_in_threadpool(api.record_agent, body)
    else:
        api.record_agent(body)
    return JSONResponse({"ok": True})


async def status(request: Request) -> Response:
    """Hosts, their agents' applied revision and lag, and the instances placed on them."""
    api = request.app.state.api

    def read() -> dict[str, Any]:
        with api.store.read() as conn:
            return topology.snapshot(conn)

    snap = await run_in_threadpool(read)
    now = time.time()
    agents = []
    reports = await run_in_threadpool(api.agent_reports) if api.shared else api.agent_reports()
    for info in reports:
        item = dict(info)
        item["lag"] = max(snap["revision"] - int(item.get("revision", -1)), 0)
        item["age_seconds"] = round(now - item.pop("reported_at", now), 1)
        agents.append(item)
    return JSONResponse(
        {
            "revision": snap["revision"],
            "agents": sorted(agents, key=lambda a: a["host"]),
            "interfaces": snap["interfaces"],
        }
    )


ROUTES = [
    Route("/hosts/{host}/state", host_state, methods=["GET"]),
    Route("/hosts/{host}/status", agent_status, methods=["POST"]),
    Route("/status", status, methods=["GET"]),
    Route("/state", region_state, methods=["GET"]),
    Route("/hosts/{host}/claim", claim, methods=["POST"]),
    Route("/hosts/{host}/instances", placed, methods=["GET"]),
    Route("/instances/{instance_id}/state", report, methods=["POST"]),
]
