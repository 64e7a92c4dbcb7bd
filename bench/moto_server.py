"""moto's own server (``python -m moto.server``, the same app and werkzeug server) plus
one benchmark-only route to fill it fast: ``python bench/moto_server.py -p PORT``.

``POST /_bench/fill`` with ``{"start": a, "count": b}`` creates groups ``bench-a`` ..
``bench-(b-1)`` with 5 tcp CIDR rules each (the same groups and rules as
``api_capacity.populate``) through moto's in-process EC2 backend, the very objects the
server answers from. Through the API, moto takes about 5 ms per call and cannot take
concurrent writes, so 10,000 groups take minutes; in-process they take about 10 s. Answers
``{"groups": [every bench-* group id]}``. Every other request goes to moto untouched.
"""

from __future__ import annotations

import argparse
import json
import threading
from typing import Any

PORTS = (22, 80, 443, 8080, 3306)


def fill(start: int, count: int) -> list[str]:
    """Create groups ``start..count-1`` in the default account and region."""
    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID

    ec2 = get_backend("ec2")[DEFAULT_ACCOUNT_ID]["us-east-1"]
    for i in range(start, count):
        group = ec2.create_security_group(f"bench-{i}", "bench", force=True)
        for port in PORTS:
            ec2.authorize_security_group_ingress(
                group.id, "tcp", port, port, [{"CidrIp": f"10.{i % 250}.{port % 250}.0/24"}]
            )
    return [
        g.id
        for groups in ec2.groups.values()
        for g in groups.values()
        if g.name.startswith("bench-")
    ]


def with_fill(app: Any) -> Any:
    """A WSGI app answering ``/_bench/fill`` and passing everything else to ``app``."""
    lock = threading.Lock()

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != "/_bench/fill":
            return app(environ, start_response)
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(size) or b"{}")
        with lock:
            groups = fill(int(body.get("start", 0)), int(body["count"]))
        payload = json.dumps({"groups": groups}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [payload]

    return wsgi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-H", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, required=True)
    args = ap.parse_args()
    import os
    import signal
    import sys

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # as moto.server.main sets it
    run_simple(
        args.host, args.port, with_fill(app), threaded=True, request_handler=MotoRequestHandler
    )


if __name__ == "__main__":
    main()
