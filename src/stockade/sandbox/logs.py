"""The sandbox's logs, one file per component in the data dir (``stockade logs``).

``api`` is the API server's output (``server.log``, as it always was); the hosts, the edge
and the resolvers run as threads of ``stockade up``, and :class:`ComponentLogs` sends each
log record to the file of the component it comes from (``logs/host-1.log``, ...):
by an explicit ``extra={"component": ...}``, else by logger (``dns``, ``metadata``), else
by thread name (``host-1-...``, ``edge``). ``sandbox`` is what ``stockade up -d`` printed.
An instance's name (``i-...``) shows its UserData's output.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

FIXED = ("api", "edge", "dns", "metadata", "sandbox")
_HOST = re.compile(r"^host-\d+$")
_INSTANCE = re.compile(r"^i-[0-9a-f]+$")
_THREAD_HOST = re.compile(r"^(host-\d+)")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def path(data_dir: Path, name: str) -> Path:
    """The file of log ``name`` (which need not exist yet)."""
    if name == "api":
        return data_dir / "server.log"
    if name == "sandbox":
        return data_dir / "sandbox.log"
    if _INSTANCE.match(name):
        return data_dir / "instances" / f"{name}.log"
    return data_dir / "logs" / f"{name}.log"


def known(name: str) -> bool:
    return name in FIXED or bool(_HOST.match(name) or _INSTANCE.match(name))


def available(data_dir: Path, hosts: int = 0) -> list[str]:
    """The names ``stockade logs`` accepts here: the fixed ones, host-1..N (``hosts``, or
    as many as have files) and the instances that wrote output."""
    names = list(FIXED)
    found = {p.stem for p in (data_dir / "logs").glob("host-*.log")}
    found |= {f"host-{k}" for k in range(1, hosts + 1)}
    names += sorted(found, key=lambda n: int(n.split("-")[1]))
    names += sorted(p.stem for p in (data_dir / "instances").glob("i-*.log"))
    return names


def component(record: logging.LogRecord) -> str | None:
    explicit = getattr(record, "component", None)
    if explicit:
        return str(explicit)
    if record.name.startswith("stockade.sandbox.dns"):
        return "dns"
    if record.name.startswith("stockade.sandbox.metadata"):
        return "metadata"
    thread = record.threadName or ""
    match = _THREAD_HOST.match(thread)
    if match:
        return match.group(1)
    if thread == "edge":
        return "edge"
    return None


class ComponentLogs(logging.Handler):
    """Writes each record to its component's file (records of no component are left to
    the other handlers: the terminal of ``stockade up``)."""

    def __init__(self, data_dir: Path, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.data_dir = data_dir
        self.files: dict[str, IO[str]] = {}
        self.setFormatter(logging.Formatter(FORMAT))
        self._saved: list[tuple[logging.Logger | logging.Handler, int]] = []

    def install(self) -> ComponentLogs:
        root = logging.getLogger()
        # the terminal keeps showing what it showed; the files get INFO and up
        for handler in root.handlers:
            if handler.level == logging.NOTSET:
                self._saved.append((handler, handler.level))
                handler.setLevel(root.level or logging.WARNING)
        for name in ("httpx", "httpcore"):  # one line per request: not for these files
            quiet = logging.getLogger(name)
            self._saved.append((quiet, quiet.level))
            quiet.setLevel(logging.WARNING)
        self._saved.append((root, root.level))
        root.setLevel(min(root.level or logging.WARNING, self.level))
        root.addHandler(self)
        return self

    def remove(self) -> None:
        logging.getLogger().removeHandler(self)
        for target, level in reversed(self._saved):
            target.setLevel(level)
        self._saved.clear()
        self.close()

    def emit(self, record: logging.LogRecord) -> None:
        name = component(record)
        if name is None:
            return
        try:
            out = self.files.get(name)
            if out is None:
                target = path(self.data_dir, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                out = self.files[name] = open(target, "a", encoding="utf-8")  # noqa: SIM115
            out.write(self.format(record) + "\n")
            out.flush()
        except Exception:  # noqa: BLE001 - logging must never break the sandbox
            self.handleError(record)

    def close(self) -> None:
        for out in self.files.values():
            out.close()
        self.files.clear()
        super().close()


def tail(file: Path, lines: int) -> tuple[str, int]:
    """The last ``lines`` lines of ``file`` (all of it for 0), and the offset read up to."""
    raw = file.read_bytes()
    text = raw.decode(errors="replace")
    if lines > 0:
        text = "".join(text.splitlines(keepends=True)[-lines:])
    return text, len(raw)


def follow(
    file: Path,
    write: Callable[[str], None],
    stop: threading.Event,
    *,
    start: int = 0,
    interval: float = 0.2,
) -> None:
    """Write what is appended to ``file`` from offset ``start`` until ``stop`` is set
    (``tail -f``: a file that shrinks was truncated and is read again from its start)."""
    offset = start
    while not stop.is_set():
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            size = -1
        if 0 <= size < offset:
            offset = 0
        if size > offset:
            with file.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            write(chunk.decode(errors="replace"))
            continue
        stop.wait(interval)


def wait_for_file(file: Path, stop: threading.Event, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not file.exists():
        if stop.is_set() or time.monotonic() > deadline:
            return False
        stop.wait(0.2)
    return True
