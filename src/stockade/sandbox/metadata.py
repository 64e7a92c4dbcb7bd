"""The sandbox's instance metadata service (169.254.169.254): EC2's paths, IMDSv1 and v2."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

Lookup = Callable[[str], dict[str, Any] | None]
"""Client IP -> the metadata of the instance at that address, or None."""

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TTL = 21600  # six hours, as EC2

# The versions EC2 lists at "/"; any of them (and "latest") serves the same tree.
VERSIONS = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2012-01-12",
    "2016-09-02",
    "2021-07-15",
    "latest",
)
_VERSION = re.compile(r"latest|1\.0|\d{4}-\d{2}-\d{2}")

# Lookup keys that are not under meta-data/ (or not as plain leaves: public-keys).
_NOT_META = {"user-data", "account-id", "architecture", "pending-time", "public-keys"}

_ERROR_PAGE = """<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>{code} - {phrase}</title>
 </head>
 <body>
  <h1>{code} - {phrase}</h1>
 </body>
</html>
"""

Tree = dict[str, "Tree | str"]


def meta_data_tree(data: dict[str, Any]) -> Tree:
    """The ``meta-data/`` tree of one instance: nested dicts (directories) of strings."""
    tree: Tree = {}
    for key, value in data.items():
        if key in _NOT_META or value is None:
            continue
        text = "\n".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        if text == "":  # EC2 lists no empty keys (public-* absent without a public IP)
            continue
        _put(tree, key, text)
    keys = data.get("public-keys") or ()
    if keys:
        # EC2 lists each key as "<index>=<name>" and serves it at public-keys/<index>/...
        tree["public-keys"] = {
            f"{i}={name}": {"openssh-key": key.strip()} for i, (name, key) in enumerate(keys)
        }
    if "local-hostname" in data and "hostname" not in data:
        _put(tree, "hostname", str(data["local-hostname"]))
    mac = data.get("mac")
    if mac:
        eni: dict[str, Any] = {
            "device-number": "0",
            "local-hostname": data.get("local-hostname"),
            "local-ipv4s": data.get("local-ipv4"),
            "mac": mac,
            "public-hostname": data.get("public-hostname"),
            "public-ipv4s": data.get("public-ipv4"),
            "security-groups": "\n".join(data.get("security-groups") or ()),
        }
        for key, value in eni.items():
            if value:
                _put(tree, f"network/interfaces/macs/{mac}/{key}", str(value))
    return tree


def _put(tree: Tree, path: str, text: str) -> None:
    *dirs, leaf = [p for p in path.split("/") if p]
    node = tree
    for d in dirs:
        child = node.setdefault(d, {})
        if not isinstance(child, dict):
            return  # a leaf already holds that name
        node = child
    if not isinstance(node.get(leaf), dict):
        node[leaf] = text


def listing(tree: Tree) -> str:
    """EC2's directory listing: one entry a line, subdirectories ending in "/".

    A public key's directory is listed as "0=name", without the slash, as EC2 lists it.
    """
    return "\n".join(
        k + "/" if isinstance(v, dict) and "=" not in k else k for k, v in sorted(tree.items())
    )


def _child(node: Tree, part: str) -> Tree | str | None:
    """``node[part]``; "0" also names the entry "0=<key name>" (public-keys/0/openssh-key)."""
    if part in node:
        return node[part]
    for key, value in node.items():
        if "=" in key and key.split("=", 1)[0] == part:
            return value
    return None


def identity_document(data: dict[str, Any]) -> dict[str, Any]:
    """The ``dynamic/instance-identity/document`` of one instance (unsigned)."""
    doc: dict[str, Any] = {}
    if data.get("account-id"):
        doc["accountId"] = str(data["account-id"])
    if data.get("architecture"):
        doc["architecture"] = data["architecture"]
    doc["availabilityZone"] = data.get("placement/availability-zone")
    doc["imageId"] = data.get("ami-id")
    doc["instanceId"] = data.get("instance-id")
    doc["instanceType"] = data.get("instance-type")
    if data.get("pending-time"):
        doc["pendingTime"] = data["pending-time"]
    doc["privateIp"] = data.get("local-ipv4")
    doc["region"] = data.get("placement/region")
    doc["version"] = "2017-09-30"
    return doc


class _Tokens:
    """Stateless IMDSv2 tokens: an expiry and an HMAC binding it to the client's address."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def _mac(self, client_ip: str, expiry: int) -> bytes:
        msg = f"{client_ip}|{expiry}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def issue(self, client_ip: str, ttl: int) -> str:
        expiry = int(time.monotonic() * 1000) + ttl * 1000
        raw = struct.pack("!Q", expiry) + self._mac(client_ip, expiry)
        return base64.urlsafe_b64encode(raw).decode()

    def valid(self, client_ip: str, token: str) -> bool:
        try:
            raw = base64.b64decode(token.strip().encode("ascii"), altchars=b"-_", validate=True)
        except (ValueError, UnicodeError):
            return False
        if len(raw) != 40:
            return False
        (expiry,) = struct.unpack("!Q", raw[:8])
        if not hmac.compare_digest(raw[8:], self._mac(client_ip, expiry)):
            return False
        return int(time.monotonic() * 1000) < expiry


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    lookup: Lookup
    tokens: _Tokens

    def serve_until(self, stop: threading.Event, wake: socket.socket) -> None:
        """Accept until ``stop`` is set; ``wake`` becomes readable to end the wait at once."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.socket, selectors.EVENT_READ)
            sel.register(wake, selectors.EVENT_READ)
            while not stop.is_set():
                for key, _ in sel.select():
                    if key.fileobj is self.socket and not stop.is_set():
                        self._handle_request_noblock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metadata: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "EC2ws"
    protocol_version = "HTTP/1.1"
    timeout = 10

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metadata %s: " + format, self.client_address[0], *args)

    # --- responses -----------------------------------------------------------------------

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, code: HTTPStatus) -> None:
        page = _ERROR_PAGE.format(code=code.value, phrase=code.phrase)
        self._send(code.value, page.encode("iso-8859-1"), "text/html")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests (the base class's errors) get EC2's page too, and a close."""
        self.close_connection = True
        with contextlib.suppress(OSError, ValueError):
            self._error(HTTPStatus(code))

    # --- dispatch ------------------------------------------------------------------------

    @property
    def _client(self) -> str:
        host = str(self.client_address[0])
        return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host

    def _instance(self) -> dict[str, Any] | None:
        try:
            return self.server.lookup(self._client)
        except Exception:
            log.exception("metadata: lookup of %s failed", self._client)
            return None

    def _discard_body(self) -> None:
        """Read a request body nobody needs, so the connection can carry the next request."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > 0:
            self.rfile.read(min(length, 1 << 20))
        if length > 1 << 20:
            self.close_connection = True

    def do_PUT(self) -> None:
        self._discard_body()
        data = self._instance()
        if data is None:
            return self._error(HTTPStatus.NOT_FOUND)
        if self.path.split("?")[0].rstrip("/") != "/latest/api/token":
            return self._error(HTTPStatus.METHOD_NOT_ALLOWED)
        if self.headers.get("X-Forwarded-For") is not None:  # EC2 refuses proxied token PUTs
            return self._error(HTTPStatus.FORBIDDEN)
        value = self.headers.get(TTL_HEADER, "").strip()
        if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_TTL):
            return self._error(HTTPStatus.BAD_REQUEST)
        ttl = int(value)
        token = self.server.tokens.issue(self._client, ttl)
        self._send(HTTPStatus.OK, token.encode(), headers={TTL_HEADER: str(ttl)})

    def do_GET(self) -> None:
        self._discard_body()
        data = self._instance()
        if data is None:
            return self._error(HTTPStatus.NOT_FOUND)
        token = self.headers.get(TOKEN_HEADER)
        if token is not None and not self.server.tokens.valid(self._client, token):
            return self._error(HTTPStatus.UNAUTHORIZED)
        parts = [p for p in self.path.split("?")[0].split("#")[0].split("/") if p]
        if not parts:
            return self._send(HTTPStatus.OK, "\n".join(VERSIONS).encode())
        if not _VERSION.fullmatch(parts[0]):
            return self._error(HTTPStatus.NOT_FOUND)
        if parts[1:] == ["api", "token"]:
            return self._error(HTTPStatus.METHOD_NOT_ALLOWED)
        found = self._resolve(data, parts[1:])
        if found is None:
            return self._error(HTTPStatus.NOT_FOUND)
        body, content_type = found
        self._send(HTTPStatus.OK, body, content_type)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self._discard_body()
        known = self._instance() is not None
        self._error(HTTPStatus.METHOD_NOT_ALLOWED if known else HTTPStatus.NOT_FOUND)

    do_DELETE = do_PATCH = do_POST

    def _resolve(self, data: dict[str, Any], parts: list[str]) -> tuple[bytes, str] | None:
        user_data = data.get("user-data")
        if isinstance(user_data, str):
            user_data = user_data.encode()
        dynamic: Tree = {"instance-identity": {"document": ""}}
        top: Tree = {"dynamic": dynamic, "meta-data": meta_data_tree(data)}
        if user_data is not None:
            top["user-data"] = ""
        if parts == ["user-data"]:
            return (user_data, "application/octet-stream") if user_data is not None else None
        if parts == ["dynamic", "instance-identity", "document"]:
            doc = json.dumps(identity_document(data), indent=2)
            return doc.encode(), "text/plain"
        node: Tree | str = top
        for part in parts:
            child = _child(node, part) if isinstance(node, dict) else None
            if child is None:
                return None
            node = child
        if isinstance(node, dict):
            return listing(node).encode(), "text/plain"
        return node.encode(), "text/plain"


class MetadataServer:
    """The instance metadata service, answering each client from ``lookup(client_ip)``.

    Serves on ``sock`` (already bound; the server listens on it and owns it) or binds
    ``host``:``port`` (0 picks a free port). Requests run in daemon threads.
    """

    def __init__(
        self,
        lookup: Lookup,
        *,
        sock: socket.socket | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if sock is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
        server = _Server(sock.getsockname(), _Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.server_address = sock.getsockname()
        server.server_name, server.server_port = (
            str(server.server_address[0]),
            server.server_address[1],
        )
        server.lookup = lookup
        server.tokens = _Tokens()
        self._server = server
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.socket.getsockname()[:2]
        return host, port

    def start(self) -> MetadataServer:
        if self._closed:
            raise RuntimeError("MetadataServer is closed")
        if self._thread is None:
            self._server.server_activate()
            self._server.socket.setblocking(False)  # a connection reset before accept: no hang
            self._thread = threading.Thread(
                target=self._server.serve_until,
                args=(self._stop, self._wake_r),
                name="metadata-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and close the socket; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
        self._server.server_close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> MetadataServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
