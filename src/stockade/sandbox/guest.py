"""The seed images' own services, run inside an instance's namespace: one small process.

    python -I -S guest.py --instance i-... web:80 app:8080 mysql:3306

``web`` is a web server serving a page (Mary's web tier), ``app`` an application service
speaking HTTP (her application tier), ``mysql`` a MySQL-protocol listener that sends the
server greeting and refuses every login (her database tier). The SSH server is OpenSSH's
(``sandbox/guest_ssh.py``). This file imports only the standard library, so it starts in
a few tens of milliseconds under ``python -I -S``.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
from collections.abc import Callable

Handler = Callable[[socket.socket, tuple], None]

MYSQL_VERSION = "5.0.45-stockade"
READ_TIMEOUT = 30.0
USAGE = "usage: guest.py [--instance ID] [--host ADDRESS] SERVICE:PORT ... (web, app or mysql)"


def page(instance_id: str, role: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html><head><title>It works!</title></head><body>\n"
        f"<h1>It works!</h1>\n<p>{role} on {instance_id}</p>\n</body></html>\n"
    ).encode()


def http_response(status: str, body: bytes, content_type: str, head: bool = False) -> bytes:
    lines = [
        f"HTTP/1.1 {status}",
        "Server: stockade-guest",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + (b"" if head else body)


def http_handler(instance_id: str, role: str, json_body: bool = False) -> Handler:
    """Answer one HTTP request per connection (enough for curl, telnet and nmap)."""

    def handle(conn: socket.socket, _peer: tuple) -> None:
        reader = conn.makefile("rb")
        request = reader.readline(8192)
        while True:  # the headers, up to the blank line
            line = reader.readline(8192)
            if not line.strip(b"\r\n\0 \t"):  # telnet ends lines "\r\0\n" or "\r\n"
                break
        parts = request.decode("latin-1").replace("\0", "").split()
        method = parts[0] if parts else ""
        if method not in ("GET", "HEAD"):
            body, status = b"only GET and HEAD are served here\n", "405 Method Not Allowed"
            conn.sendall(http_response(status, body, "text/plain"))
        elif json_body:
            body = f'{{"service": "{role}", "instance": "{instance_id}", "ok": true}}\n'
            conn.sendall(
                http_response("200 OK", body.encode(), "application/json", method == "HEAD")
            )
        else:
            conn.sendall(
                http_response("200 OK", page(instance_id, role), "text/html", method == "HEAD")
            )

    return handle


def mysql_greeting(connection_id: int, salt: bytes) -> bytes:
    """A MySQL protocol-10 server greeting (the Initial Handshake packet), framed."""
    capabilities = 0x000FF7FF  # long password ... secure connection, plugin auth
    payload = (
        b"\x0a"
        + MYSQL_VERSION.encode()
        + b"\x00"
        + struct.pack("<I", connection_id)
        + salt[:8]
        + b"\x00"
        + struct.pack("<H", capabilities & 0xFFFF)
        + b"\x21"  # utf8_general_ci
        + struct.pack("<H", 0x0002)  # SERVER_STATUS_AUTOCOMMIT
        + struct.pack("<H", capabilities >> 16)
        + bytes([21])
        + b"\x00" * 10
        + salt[8:20]
        + b"\x00"
        + b"mysql_native_password\x00"
    )
    return struct.pack("<I", len(payload))[:3] + b"\x00" + payload


def mysql_error(seq: int, code: int, state: str, message: str) -> bytes:
    payload = b"\xff" + struct.pack("<H", code) + b"#" + state.encode() + message.encode()
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload


def _read(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def mysql_handler() -> Handler:
    counter = iter(range(1, 1 << 31))
    lock = threading.Lock()

    def handle(conn: socket.socket, peer: tuple) -> None:
        with lock:
            connection_id = next(counter)
        conn.sendall(mysql_greeting(connection_id, os.urandom(20).replace(b"\x00", b"\x01")))
        header = _read(conn, 4)
        _read(conn, int.from_bytes(header[:3], "little"))
        message = f"Access denied for user from '{peer[0]}' (this sandbox database has no users)"
        conn.sendall(mysql_error(header[3] + 1, 1045, "28000", message))

    return handle


def handler_for(service: str, instance_id: str) -> Handler:
    if service == "web":
        return http_handler(instance_id, "web server")
    if service == "app":
        return http_handler(instance_id, "app server", json_body=True)
    if service == "mysql":
        return mysql_handler()
    raise ValueError(f"unknown service {service!r}")


def _serve_one(conn: socket.socket, peer: tuple, handler: Handler) -> None:
    try:
        conn.settimeout(READ_TIMEOUT)
        handler(conn, peer)
    except (OSError, ConnectionError, ValueError):
        pass
    finally:
        conn.close()


def _accept(listener: socket.socket, handler: Handler) -> None:
    while True:
        conn, peer = listener.accept()
        threading.Thread(target=_serve_one, args=(conn, peer, handler), daemon=True).start()


def serve(specs: list[tuple[str, int]], instance_id: str, host: str) -> list[threading.Thread]:
    """Listen on every ``(service, port)``; one thread accepts each, one serves each client."""
    threads = []
    for service, port in specs:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
        t = threading.Thread(
            target=_accept, args=(listener, handler_for(service, instance_id)), daemon=True
        )
        t.start()
        threads.append(t)
    return threads


def parse_args(argv: list[str]) -> tuple[str, str, list[tuple[str, int]]]:
    """(instance id, host, [(service, port)]); SystemExit(2) with the usage if wrong.

    No argparse: importing it would cost more than the rest of the start-up.
    """
    instance_id, host, specs = "i-00000000", "0.0.0.0", []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("--instance", "--host") and args:
            value = args.pop(0)
            instance_id, host = (value, host) if arg == "--instance" else (instance_id, value)
            continue
        service, _, port = arg.partition(":")
        if service not in ("web", "app", "mysql") or not port.isdigit():
            sys.stderr.write(f"{USAGE}\nexpected web:PORT, app:PORT or mysql:PORT, not {arg}\n")
            raise SystemExit(2)
        specs.append((service, int(port)))
    if not specs:
        sys.stderr.write(USAGE + "\n")
        raise SystemExit(2)
    return instance_id, host, specs


def main(argv: list[str] | None = None) -> None:
    instance_id, host, specs = parse_args(sys.argv[1:] if argv is None else argv)
    threads = serve(specs, instance_id, host)
    for t in threads:  # until SIGTERM/SIGKILL (the default actions end the process)
        t.join()


if __name__ == "__main__":
    main()
