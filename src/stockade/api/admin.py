"""Administration endpoints for test suites (JSON, not the EC2 API).

``POST /_stockade/v1/reset`` empties accounts as ``stockade reset --yes`` does (see
service/reset.py), the way a test suite calls moto's ``POST /moto-api/reset`` between tests:

- with the agent token (``Authorization: Bearer …``, from ``stockade agent-token``): every
  account, or only the one named by ``?account=NAME`` (or a JSON body ``{"account": NAME}``;
  a 12-digit account id works too);
- signed with an account's SigV4 keys (service ``ec2``, as for any EC2 request): that
  account only.

Answers ``{"revision": R, "accounts": [{"account_id", "name", "regions", "deleted"}]}``.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stockade import accounts, tls
from stockade.api import hosts
from stockade.errors import ApiError
from stockade.service import reset as reset_service


def _error(code: str, message: str, status: int) -> Response:
    return JSONResponse({"error": code, "message": message}, status)


def _account_named(api: Any, wanted: str) -> str | None:
    for acct in accounts.list_all(api.store):
        if wanted in (acct.name, acct.account_id):
            return acct.account_id
    return None


NO_CREDENTIALS = (
    "Sign the request with an account's keys (SigV4, service ec2), or send the "
    "agent token as 'Authorization: Bearer TOKEN' (see `stockade agent-token`)."
)


async def reset(request: Request) -> Response:
    api = request.app.state.api
    auth = request.headers.get("authorization", "")
    # no credentials at all: refused before a byte of the body is read
    if not auth and "X-Amz-Signature" not in request.query_params:
        return _error("AuthFailure", NO_CREDENTIALS, 401)
    try:
        body = await hosts.read_capped(request, 1024 * 1024)
    except ApiError as err:
        return _error(err.code, err.message, err.status)
    token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
    wanted = request.query_params.get("account")
    if body:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("account", ""), str):
            return _error(
                "InvalidParameterValue",
                'The body must be a JSON object like {"account": NAME}.',
                400,
            )
        wanted = data.get("account") or wanted
    if token:
        if not hmac.compare_digest(token, api.agent_token):
            return _error("AuthFailure", "The agent token is not valid.", 401)
        ids: list[str] | None = None
        if wanted:
            found = await run_in_threadpool(_account_named, api, wanted)
            if found is None:
                return _error(
                    "InvalidParameterValue",
                    f"No account named {wanted!r} (see `stockade account list`).",
                    404,
                )
            ids = [found]
    else:
        try:
            account_id, _, _ = api.authenticate(request.scope, body)
        except ApiError as err:
            return _error(err.code, err.message, err.status)
        if wanted and _account_named(api, wanted) != account_id:
            return _error(
                "UnauthorizedOperation",
                "An account's keys reset that account only; use the agent token for others.",
                403,
            )
        ids = [account_id]
    done, tx = await run_in_threadpool(reset_service.reset, api.store, ids, api.config)
    if tx.appended:
        api.committed()
    return JSONResponse({"revision": tx.revision, "accounts": [d.as_json() for d in done]})


async def ca_certificate(request: Request) -> Response:
    """``GET /_stockade/v1/ca``: the CA certificate of ``serve --tls`` (public: clients that
    know only its hash fetch it over unverified TLS and check it; see stockade/tls.py)."""
    path = os.environ.get(tls.CA_FILE_ENV)
    if not path:
        return _error("NotServingTls", "This server does not serve TLS (`serve --tls`).", 404)
    content = await run_in_threadpool(Path(path).read_bytes)
    return Response(content, media_type="application/x-pem-file")


ROUTES = [
    Route("/_stockade/v1/reset", reset, methods=["POST"]),
    Route(tls.CA_PATH, ca_certificate, methods=["GET"]),
]
