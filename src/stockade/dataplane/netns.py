"""Run code inside a named network namespace (``/var/run/netns/<name>``), in-process.

Python 3.11 has no ``os.setns``; we call libc's ``setns`` through ctypes. A thread's
``setns`` changes only that thread, so each namespace gets its own worker thread that
enters it once and then runs the calls it is given. Sockets (netlink ones included) belong
to the namespace they were created in, whichever thread uses them later.
"""

from __future__ import annotations

import ctypes
import os
import queue
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def setns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (by name or path)."""
    path = name if name.startswith("/") else os.path.join(NETNS_DIR, name)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsWorker:
    """A thread living in one network namespace; ``call`` runs a function there."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"netns-{name}", daemon=True
        )
        self._thread.start()
        ready.result()

    def _run(self, ready: Future[None]) -> None:
        try:
            setns(self.name)
        except BaseException as exc:  # handed to the creator
            ready.set_exception(exc)
            return
        ready.set_result(None)
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed back to the caller
                fut.set_exception(exc)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in the namespace and return its result."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        if not self._thread.is_alive():
            raise RuntimeError(f"the worker of netns {self.name} has stopped")
        fut: Future[T] = Future()
        self._jobs.put((lambda: fn(*args, **kwargs), fut))
        return fut.result()

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(5)

    def __enter__(self) -> NetnsWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def call_in(name: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` once in namespace ``name`` (None: the caller's own) in a short-lived thread."""
    if name is None:
        return fn(*args, **kwargs)
    with NetnsWorker(name) as worker:
        return worker.call(fn, *args, **kwargs)


def socket_in(
    name: str | None, family: int, kind: int, proto: int = 0, worker: NetnsWorker | None = None
) -> socket.socket:
    """A socket created in namespace ``name``; usable from any thread afterwards."""
    if worker is not None:
        return worker.call(socket.socket, family, kind, proto)
    return call_in(name, socket.socket, family, kind, proto)
