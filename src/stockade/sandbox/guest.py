"""The seed images' own services, run inside an instance's namespace: one small process.

    python -I -S guest.py --instance i-... web:80 app:8080 mysql:3306

``web`` is a web server serving a page (Mary's web tier), ``app`` an application service
speaking HTTP (her application tier), ``mysql`` a MySQL-protocol listener that sends the
server greeting and refuses every login (her database tier). The SSH server is OpenSSH's
(see ``sandbox/hostd.py``). This file imports only the standard library, so it starts in
a few tens of milliseconds under ``python -I -S``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import struct
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

MYSQL_VERSION = "5.0.45-stockade"
READ_TIMEOUT = 30.0


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

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            while True:  # the headers, up to the blank line
                line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                if not line.strip(b"\r\n\0 \t"):  # telnet ends lines "\r\0\n" or "\r\n"
                    break
            parts = request.decode("latin-1").replace("\0", "").split()
            method = parts[0] if parts else ""
            if method not in ("GET", "HEAD"):
                body, status = b"only GET and HEAD are served here\n", "405 Method Not Allowed"
                writer.write(http_response(status, body, "text/plain"))
            elif json_body:
                body = f'{{"service": "{role}", "instance": "{instance_id}", "ok": true}}\n'
                writer.write(
                    http_response("200 OK", body.encode(), "application/json", method == "HEAD")
                )
            else:
                writer.write(
                    http_response("200 OK", page(instance_id, role), "text/html", method == "HEAD")
                )
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

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
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def mysql_handler() -> Handler:
    counter = iter(range(1, 1 << 31))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(mysql_greeting(next(counter), os.urandom(20).replace(b"\x00", b"\x01")))
            await writer.drain()
            header = await asyncio.wait_for(reader.readexactly(4), READ_TIMEOUT)
            length = int.from_bytes(header[:3], "little")
            await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)
            peer = writer.get_extra_info("peername") or ("?",)
            writer.write(
                mysql_error(
                    header[3] + 1,
                    1045,
                    "28000",
                    f"Access denied for user from '{peer[0]}' (this sandbox database has no users)",
                )
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handle


def handler_for(service: str, instance_id: str) -> Handler:
    if service == "web":
        return http_handler(instance_id, "web server")
    if service == "app":
        return http_handler(instance_id, "app server", json_body=True)
    if service == "mysql":
        return mysql_handler()
    raise ValueError(f"unknown service {service!r}")


async def serve(specs: list[tuple[str, int]], instance_id: str, host: str) -> None:
    servers = []
    for service, port in specs:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        servers.append(await asyncio.start_server(handler_for(service, instance_id), sock=sock))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def parse_spec(text: str) -> tuple[str, int]:
    service, _, port = text.partition(":")
    if service not in ("web", "app", "mysql") or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected web:PORT, app:PORT or mysql:PORT, not {text}")
    return service, int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An image's services (web, app, mysql).")
    parser.add_argument("--instance", default="i-00000000", help="the instance id to show")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("services", nargs="+", type=parse_spec, help="SERVICE:PORT")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.services, args.instance, args.host))


if __name__ == "__main__":
    main()
