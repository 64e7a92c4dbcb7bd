"""Where a running sandbox is recorded, so that every command finds it.

One directory per namespace prefix, ``/run/stockade/<prefix>/`` (``STOCKADE_RUN_DIR``
moves it): ``sandbox.json`` says who runs it (pid, data dir, port, prefix, ...) and
``lock`` is held with ``fcntl.flock`` by the running ``stockade up`` for its whole life.
The kernel drops the lock when that process dies, however it dies, so "is a sandbox with
this prefix alive?" is "is its lock held?", never a guess from a pid that may be reused.
Only the holder of a prefix's lock removes namespaces with that prefix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PREFIX = "skr-"
RECORD = "sandbox.json"
LOCK = "lock"
STOPPED = "stopped.json"
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


@dataclass
class Teardown:
    """What stopping the sandbox removed (``stockade down`` and Ctrl-C print it)."""

    instances: int = 0
    namespaces: int = 0
    processes: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        def n(count: int, one: str, many: str) -> str:
            return f"{count} {one if count == 1 else many}"

        return (
            f"removed {n(self.instances, 'instance', 'instances')}, "
            f"{n(self.namespaces, 'namespace', 'namespaces')}; "
            f"stopped {n(self.processes, 'process', 'processes')} in {self.seconds:.1f} s"
        )


def namespaces_with(prefix: str) -> list[str]:
    """Names under /var/run/netns starting with ``prefix`` (without importing pyroute2)."""
    try:
        return sorted(n for n in os.listdir("/var/run/netns") if n.startswith(prefix))
    except FileNotFoundError:
        return []


def run_root() -> Path:
    return Path(os.environ.get("STOCKADE_RUN_DIR", "/run/stockade"))


def check_prefix(prefix: str) -> str | None:
    """None if ``prefix`` can name the sandbox's namespaces, else why not."""
    if not _PREFIX.match(prefix):
        return (
            f"--prefix {prefix!r} must be 1-32 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return None


@dataclass
class Record:
    """Who runs the sandbox of one prefix."""

    prefix: str
    pid: int
    data_dir: str
    port: int
    hosts: int = 0
    external_database: bool = False  # started with --database-url (not recorded: secrets)
    endpoint: str = ""
    state: str = "starting"  # starting, ready, stopping
    started: float = field(default_factory=time.time)

    @property
    def directory(self) -> Path:
        return run_root() / self.prefix

    def alive(self) -> bool:
        """True while the ``up`` that wrote this record holds its lock."""
        return held(self.prefix)

    def save(self) -> None:
        path = self.directory / RECORD
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    def describe(self) -> str:
        return f"pid {self.pid}, data dir {self.data_dir}, port {self.port}"

    def flags(self) -> str:
        """The option that names this sandbox to other commands (empty for the default)."""
        if Path(self.data_dir).resolve() != default_data_dir().resolve():
            return f"--data-dir {shlex.quote(self.data_dir)}"
        return ""

    def down_hint(self) -> str:
        extra = f" --prefix {self.prefix}" if self.prefix != DEFAULT_PREFIX else ""
        return f"`stockade down{extra}`"


def default_data_dir() -> Path:
    raw = os.environ.get("STOCKADE_DATA_DIR")
    return Path(raw) if raw else Path.home() / ".local" / "share" / "stockade"


def load(prefix: str) -> Record | None:
    try:
        raw = json.loads((run_root() / prefix / RECORD).read_text())
    except (OSError, ValueError):
        return None
    try:
        return Record(**{k: v for k, v in raw.items() if k in Record.__dataclass_fields__})
    except TypeError:
        return None


def held(prefix: str) -> bool:
    """Is the lock of ``prefix`` held (by a live ``stockade up``)?"""
    path = run_root() / prefix / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class AlreadyRunning(Exception):
    def __init__(self, record: Record | None, prefix: str) -> None:
        self.record = record
        self.prefix = prefix
        if record is not None:
            text = (
                f"a sandbox with prefix {prefix!r} is already running ({record.describe()}); "
                f"{record.down_hint()} stops it, or pick another --prefix"
            )
        else:
            text = f"a sandbox with prefix {prefix!r} is starting or stopping; try again"
        super().__init__(text)


class Lock:
    """The running sandbox's hold on its prefix (taken by ``stockade up``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.directory = run_root() / prefix
        self.fd: int | None = None

    def acquire(self) -> Lock:
        path = self.directory / LOCK
        for _ in range(5):
            self.directory.mkdir(parents=True, exist_ok=True)
            # O_CLOEXEC (Python's default): the API server and instances never inherit it
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AlreadyRunning(load(self.prefix), self.prefix) from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file its last holder removed as we opened it
                self.fd = fd
                (self.directory / STOPPED).unlink(missing_ok=True)
                return self
            os.close(fd)
        raise AlreadyRunning(None, self.prefix)

    def record(self, record: Record) -> None:
        assert self.fd is not None, "the lock is not held"
        record.save()

    def stopped(self, summary: dict[str, Any]) -> None:
        """What the teardown removed (``stockade down`` prints it), then the record goes."""
        with contextlib.suppress(OSError):
            (self.directory / STOPPED).write_text(json.dumps(summary))
        (self.directory / RECORD).unlink(missing_ok=True)

    def release(self) -> None:
        if self.fd is None:
            return
        (self.directory / RECORD).unlink(missing_ok=True)
        (self.directory / LOCK).unlink(missing_ok=True)  # still held: no one else has it
        os.close(self.fd)  # closing the only descriptor drops the flock
        self.fd = None


def running() -> list[Record]:
    """Every sandbox alive now (its lock held), by prefix."""
    root = run_root()
    if not root.is_dir():
        return []
    out = []
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        if held(child.name):
            record = load(child.name)
            if record is not None:
                out.append(record)
        elif not (child / LOCK).exists():
            _sweep(child)
    return out


def _sweep(directory: Path, age: float = 600.0) -> None:
    """Forget a sandbox that stopped cleanly a while ago (only its summary is left)."""
    stopped = directory / STOPPED
    with contextlib.suppress(OSError):
        if stopped.exists() and time.time() - stopped.stat().st_mtime < age:
            return
        stopped.unlink(missing_ok=True)
        directory.rmdir()


def forget_stopped(prefix: str) -> None:
    """`stockade down` has shown the summary: remove it, and the directory if empty."""
    directory = run_root() / prefix
    with contextlib.suppress(OSError):
        (directory / STOPPED).unlink(missing_ok=True)
        directory.rmdir()


def find(data_dir: str | Path | None = None, prefix: str | None = None) -> Record | None:
    """The live sandbox a command means: the one of ``prefix``, or of ``data_dir``, else
    the one with the default prefix, else the only one running."""
    if prefix is not None:
        record = load(prefix)
        return record if record is not None and held(prefix) else None
    alive = running()
    if data_dir is not None:
        want = Path(data_dir).resolve()
        return next((r for r in alive if Path(r.data_dir).resolve() == want), None)
    default = next((r for r in alive if r.prefix == DEFAULT_PREFIX), None)
    if default is not None:
        return default
    return alive[0] if len(alive) == 1 else None


def read_stopped(prefix: str) -> dict[str, Any] | None:
    try:
        return json.loads((run_root() / prefix / STOPPED).read_text())
    except (OSError, ValueError):
        return None
