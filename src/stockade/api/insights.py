"""``POST /_stockade/v1/explain``: one flow decided on the server, for `stockade explain`.

Signed like an EC2 request (SigV4, service ``ec2``, the caller's own keys) and answered
from the caller's account's records only; the body and the answer are JSON, so the CLI
needs neither botocore nor an XML parser. Bad ends are a 400 naming them.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from stockade.analysis.paths import PathError
from stockade.errors import ApiError
from stockade.service.insights import explain_flow

MAX_BODY = 64 * 1024


def _error(code: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status)


async def explain(request: Request) -> JSONResponse:
    api: Any = request.app.state.api
    try:
        signed, account_id, secret = api.check_credentials(request.scope)
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error("InvalidRequest", "The request body is too large.", 413)
        if not api.verify(signed, secret, body):
            return _error("SignatureDoesNotMatch", "The request body is not signed.", 403)
        api.ensure_region(account_id, signed.region)
        try:
            query = json.loads(body or b"{}")
        except ValueError:
            return _error("InvalidParameterValue", "The body is not JSON.", 400)
        if not isinstance(query, dict):
            return _error("InvalidParameterValue", "The body must be a JSON object.", 400)
        for key in ("from", "to"):
            if not isinstance(query.get(key), str) or not query[key]:
                return _error("MissingParameter", f"The request must contain '{key}'.", 400)

        def run() -> dict:
            with api.store.read() as conn:
                return explain_flow(conn, account_id, signed.region, query)

        if api.store.is_sqlite:
            answer = run()
        else:
            answer = await run_in_threadpool(run)
    except ApiError as err:
        return _error(err.code, err.message, err.status)
    except (PathError, ValueError, TypeError) as exc:
        return _error("InvalidParameterValue", str(exc), 400)
    return JSONResponse(answer)
