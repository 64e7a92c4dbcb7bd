"""The `stockade` command's entry point, with a fast path for `stockade explain`.

`explain` is one signed POST and a few lines of output: it runs here with the standard
library only (no typer, rich, httpx, botocore or SQLAlchemy to import), so the whole
command takes a few tens of milliseconds. Every other command (and `explain --help`) goes
to the typer app in :mod:`stockade.cli`.
"""

from __future__ import annotations

import sys


def main() -> int | None:
    argv = sys.argv[1:]
    if argv[:1] == ["explain"] and not {"--help", "-h"} & set(argv):
        return explain_main(argv[1:])
    from stockade.cli import main as full

    return full()


# --- the explain client -------------------------------------------------------------------

DEFAULT_ENDPOINT = "http://127.0.0.1:8773"
PATH = "/_stockade/v1/explain"


def _sign(method: str, url: str, body: bytes, key: str, secret: str, region: str) -> dict:
    """SigV4 headers for one request (service ec2), as botocore's SigV4Auth makes them."""
    import hashlib
    import hmac
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    now = time.gmtime()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", now)
    day = stamp[:8]
    payload = hashlib.sha256(body).hexdigest()
    host = parts.netloc
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            "",
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            payload,
        ]
    )
    scope = f"{day}/{region}/ec2/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    k = ("AWS4" + secret).encode()
    for part in (day, region, "ec2", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {
        "Host": host,
        "X-Amz-Date": stamp,
        "X-Amz-Content-Sha256": payload,
        "Content-Type": "application/json",
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={signed}, "
            f"Signature={signature}"
        ),
    }
    return out


def _fail(message: str, code: int = 2) -> int:
    red = "\x1b[31m" if sys.stderr.isatty() else ""
    reset = "\x1b[0m" if red else ""
    print(f"{red}error:{reset} {message}", file=sys.stderr)
    return code


USAGE = (
    "usage: stockade explain --from END --to END [--port N] [--protocol P] "
    "[--icmp-type T] [--icmp-code C] [--json] [--server URL] [--region R]"
)
_OPTIONS = {
    "--from": "src",
    "--to": "dst",
    "--port": "port",
    "--protocol": "protocol",
    "--icmp-type": "icmp_type",
    "--icmp-code": "icmp_code",
    "--server": "server",
    "--region": "region",
}
_INTS = ("port", "icmp_type", "icmp_code")


def parse(argv: list[str]) -> dict:
    """The options of `stockade explain` (argparse costs more to import than the whole
    request takes); raises ValueError with what is wrong."""
    out: dict = {"port": -1, "protocol": "tcp", "icmp_type": -1, "icmp_code": -1}
    out.update(as_json=False, server=None, region=None)
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg == "--json":
            out["as_json"] = True
            i += 1
            continue
        if name not in _OPTIONS:
            raise ValueError(f"no such option: {arg}")
        if not eq:
            if i + 1 >= len(argv):
                raise ValueError(f"{name} needs a value")
            value = argv[i + 1]
            i += 1
        i += 1
        key = _OPTIONS[name]
        if key in _INTS:
            try:
                out[key] = int(value)
            except ValueError:
                raise ValueError(f"{name} takes a number, not {value!r}") from None
        else:
            out[key] = value
    for key, flag in (("src", "--from"), ("dst", "--to")):
        if not out.get(key):
            raise ValueError(f"missing option {flag}")
    return out


def request(
    url: str, query: dict, key: str, secret: str, region: str, timeout: float = 30
) -> tuple[int, dict]:
    """POST ``query`` to the explain endpoint at ``url``, signed; (HTTP status, JSON)."""
    import http.client
    import json
    from urllib.parse import urlsplit

    body = json.dumps(query).encode()
    target = url.rstrip("/") + PATH
    headers = _sign("POST", target, body, key, secret, region)
    parts = urlsplit(target)
    if parts.scheme == "https":
        import ssl

        ca = _env("AWS_CA_BUNDLE")
        context = ssl.create_default_context(cafile=ca or None)
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("POST", parts.path, body, headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw or b"{}")
    except ValueError:
        return resp.status, {
            "error": {"code": str(resp.status), "message": raw[:200].decode(errors="replace")}
        }


def _env(name: str) -> str:
    import os

    return os.environ.get(name, "").strip()


def explain_main(argv: list[str]) -> int:
    import json

    try:
        args = parse(argv)
    except ValueError as exc:
        print(USAGE, file=sys.stderr)
        return _fail(f"{exc} (see `stockade explain --help`)")
    key, secret = _env("AWS_ACCESS_KEY_ID"), _env("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        return _fail(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, e.g. with "
            '`eval "$(stockade env)"` (or `stockade env --account NAME`)'
        )
    region = args["region"] or _env("AWS_REGION") or _env("AWS_DEFAULT_REGION") or "us-east-1"
    url = (
        args["server"]
        or _env("AWS_ENDPOINT_URL_EC2")
        or _env("AWS_ENDPOINT_URL")
        or _env("EC2_URL")
        or _env("STOCKADE_ENDPOINT")
        or DEFAULT_ENDPOINT
    )
    query = {
        "from": args["src"],
        "to": args["dst"],
        "port": args["port"],
        "protocol": args["protocol"],
        "icmp_type": args["icmp_type"],
        "icmp_code": args["icmp_code"],
    }
    try:
        status, data = request(url, query, key, secret, region)
    except OSError as exc:
        return _fail(
            f"cannot reach the control plane at {url} ({exc}); start it with "
            "`stockade serve` (or `sudo stockade up`), or name it with --server"
        )
    if status != 200:
        err = data.get("error") or {}
        hint = ""
        if err.get("code") in ("AuthFailure", "SignatureDoesNotMatch"):
            hint = ' (are these keys this server\'s? `eval "$(stockade env)"` sets them)'
        return _fail(f"{err.get('message') or status}{hint}")
    if args["as_json"]:
        print(json.dumps(data, indent=2))
    else:
        print(render(data, sys.stdout.isatty()))
    return 0 if data.get("allowed") else 1


def render(data: dict, colour: bool = False) -> str:
    """The answer in words: the verdict, then each direction and the rules that decide."""
    mark = ("\x1b[1;32m" if data["allowed"] else "\x1b[1;31m") if colour else ""
    reset = "\x1b[0m" if colour else ""
    lines = [f"{mark}{data['verdict']}{reset}: {data['flow']} from {data['from']} to {data['to']}"]
    if data.get("gateway"):
        lines.append(f"  through the internet gateway {data['gateway']}")
    blocked = data.get("blocked")
    if blocked:
        lines.append(f"  {blocked['reason']}")
        return "\n".join(lines)
    for name in ("egress", "ingress"):
        side = data[name]
        if not side["checked"]:
            lines.append(f"  {name}: not checked ({side['reason'] or 'not an instance'})")
            continue
        verb = "allows" if side["allowed"] else "denies"
        lines.append(f"  {name}: {verb}: {side['reason']}")
        for r in side["rules"]:
            lines.append(f"    {r['rule_id'] or '-'}  {r['group_id']}  {r['rule']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
