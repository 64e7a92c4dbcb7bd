"""New-connection rate, run inside namespaces by ``forwarding.py``.

``python bench/connrate.py server IP PORT SECONDS``: accept and close connections until
SECONDS pass (or stdin closes). ``python bench/connrate.py client IP PORT SECONDS``: open
and reset (SO_LINGER 0, so no TIME_WAIT piles up) one connection after the other for
SECONDS; prints ``{"connections": n, "seconds": s, "errors": e}``.
"""

from __future__ import annotations

import json
import selectors
import socket
import struct
import sys
import time

LINGER_RESET = struct.pack("ii", 1, 0)


def server(ip: str, port: int, seconds: float) -> None:
    with socket.socket() as lsock:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((ip, port))
        lsock.listen(4096)
        lsock.setblocking(False)
        print("ready", flush=True)
        sel = selectors.DefaultSelector()
        sel.register(lsock, selectors.EVENT_READ)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in sel.select(0.1):
                for _ in range(256):  # drain the backlog, bounded
                    try:
                        conn, _peer = lsock.accept()
                    except BlockingIOError:
                        break
                    conn.close()


def client(ip: str, port: int, seconds: float) -> None:
    done = errors = 0
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        sock = socket.socket()
        sock.settimeout(1.0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        try:
            sock.connect((ip, port))
            done += 1
        except OSError:
            errors += 1
        finally:
            sock.close()
    elapsed = time.monotonic() - start
    print(json.dumps({"connections": done, "seconds": elapsed, "errors": errors}), flush=True)


if __name__ == "__main__":
    role, ip, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    (server if role == "server" else client)(ip, port, seconds)
