"""A connection probe that runs as its own process inside a namespace (so that its tight
loop never competes with the agent for a GIL): ``ip netns exec NS python bench/probe.py``.

It reads one JSON command a line, ``{"dst": ip, "port": p, "want": "open"|"filtered",
"deadline": seconds}``, and starts a new non-blocking TCP connection to dst:port every
``interval`` (0.5 ms), each from a fresh socket (a new flow for conntrack). A probe is
answered when it connects or is refused (an RST: allowed, nothing listening), unanswered
when nothing comes back within ``timeout`` (20 ms: dropped). After a short warm-up it prints
``{"ready": true}``; then:

- want ``open``: the send time of the first answered probe;
- want ``filtered``: the send time of the first probe of the final unanswered streak, once
  that streak has lasted ``confirm`` (50 ms) past the timeout (a late answer resets it).

It prints ``{"at": <time.monotonic()>, "probes": n}`` (``at`` null if the deadline passed),
CLOCK_MONOTONIC being shared by every process of the machine. Bounded by ``deadline``.
"""

from __future__ import annotations

import errno
import json
import select
import socket
import sys
import time
from typing import Any

INTERVAL = 0.0005
TIMEOUT = 0.02
CONFIRM = 0.05
WARMUP = 0.03


def watch(dst: str, port: int, want: str, deadline: float) -> dict[str, Any]:
    """Probe until the wanted state is seen (see the module's docstring)."""
    ep = select.epoll()
    inflight: dict[int, tuple[socket.socket, float]] = {}
    start = time.monotonic()
    end = start + deadline
    ready_at: float | None = None
    next_send = start
    sent = 0
    last_answer = float("-inf")  # send time of the newest answered probe
    streak: list[float] = []  # unanswered probes sent after last_answer
    found: float | None = None

    def resolve(sent_at: float, answered: bool) -> None:
        nonlocal last_answer, streak, found
        if answered:
            if want == "open" and ready_at is not None and found is None:
                found = sent_at
            if sent_at > last_answer:
                last_answer = sent_at
                streak = [t for t in streak if t > sent_at]
        elif sent_at > last_answer:
            streak.append(sent_at)
            streak.sort()

    try:
        while True:
            now = time.monotonic()
            if now > end:
                break
            if now >= next_send:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.connect_ex((dst, port))
                inflight[sock.fileno()] = (sock, now)
                ep.register(sock.fileno(), select.EPOLLOUT | select.EPOLLERR)
                sent += 1
                next_send = now + INTERVAL
            for fd, _ in ep.poll(max(0.0, next_send - time.monotonic())):
                sock, sent_at = inflight.pop(fd)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                ep.unregister(fd)
                sock.close()
                resolve(sent_at, err in (0, errno.ECONNREFUSED))
            now = time.monotonic()
            for fd in list(inflight):  # in send order
                sock, sent_at = inflight[fd]
                if now - sent_at < TIMEOUT:
                    break
                del inflight[fd]
                ep.unregister(fd)
                sock.close()
                resolve(sent_at, False)
            if ready_at is None and now - start >= WARMUP:
                ready_at = now
                print(json.dumps({"ready": True}), flush=True)
            if want == "open" and found is not None:
                break
            if (
                want == "filtered"
                and ready_at is not None
                and streak
                and streak[0] > ready_at
                and now - streak[0] >= TIMEOUT + CONFIRM
            ):
                found = streak[0]
                break
    finally:
        for sock, _ in inflight.values():
            sock.close()
        ep.close()
    if ready_at is None:
        print(json.dumps({"ready": True}), flush=True)
    return {"at": found, "probes": sent}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        result = watch(cmd["dst"], int(cmd["port"]), cmd["want"], float(cmd.get("deadline", 10)))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
