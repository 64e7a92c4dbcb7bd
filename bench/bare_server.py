"""The bare handler: the least a SigV4-checking EC2 endpoint on SQLite can do, for scale.

A Starlette route on uvicorn (as ``stockade serve`` runs) that reads the body, verifies
the request's SigV4 signature (Stockade's own ``sigv4`` module, one fixed key), and then
for DescribeSecurityGroups reads the group's rules from SQLite, and for Authorize/Revoke
SecurityGroupIngress inserts or deletes one rule row and appends a change-log row, in a
transaction of its own; it answers a canned reply. No EC2 parsing, validation, quotas,
accounts, group commit or response encoding: what it serves is about the ceiling of any
Python server on this stack, which is what issue 7's "a bare Starlette handler that
verifies SigV4 and reads SQLite serves about 30x moto" refers to.

``python bench/bare_server.py --port P --db PATH`` (key ``AKIDBARE``).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stockade.api import sigv4
from stockade.errors import ApiError

KEY = "AKIDBARE"
SECRET = "bare-handler-secret-access-key"
_REPLY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<{action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    "<requestId>4044bb54-93cb-402e-907d-d7e5b6a59992</requestId>{body}</{action}Response>"
)


def build(path: str) -> Starlette:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"):
        db.execute(pragma)
    db.execute(
        "CREATE TABLE IF NOT EXISTS rules (id TEXT PRIMARY KEY, group_id TEXT NOT NULL, "
        "port INTEGER, cidr TEXT)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS ix_rules_group ON rules (group_id)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS changes (revision INTEGER PRIMARY KEY, resource TEXT, at TEXT)"
    )

    async def handle(request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            sigv4.verify(sigv4.parse_auth("POST", "/", "", headers, body), SECRET)
        except ApiError as err:
            return Response(err.code, err.status)
        p = dict(parse_qsl(body.decode()))
        action = p.get("Action", "")
        if action == "DescribeSecurityGroups":
            rows = db.execute(
                "SELECT id, port, cidr FROM rules WHERE group_id = ?", (p.get("GroupId.1"),)
            ).fetchall()
            text = _REPLY.format(action=action, body=f"<count>{len(rows)}</count>")
            return Response(text, media_type="text/xml")
        group = p["GroupId"]
        port = int(p["IpPermissions.1.FromPort"])
        cidr = p["IpPermissions.1.IpRanges.1.CidrIp"]
        db.execute("BEGIN IMMEDIATE")
        if action.startswith("Authorize"):
            rid = "sgr-" + os.urandom(9).hex()[:17]
            db.execute("INSERT INTO rules VALUES (?, ?, ?, ?)", (rid, group, port, cidr))
        else:
            db.execute(
                "DELETE FROM rules WHERE group_id = ? AND port = ? AND cidr = ?",
                (group, port, cidr),
            )
        db.execute("INSERT INTO changes (resource, at) VALUES (?, ?)", (group, str(time.time())))
        db.execute("COMMIT")
        text = _REPLY.format(action=action, body="<return>true</return>")
        return Response(text, media_type="text/xml")

    return Starlette(routes=[Route("/", handle, methods=["POST"])])


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", required=True)
    args = ap.parse_args()
    uvicorn.run(
        build(args.db), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
