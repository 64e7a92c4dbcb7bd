"""Apply rulesets with libnftables, in-process (ctypes), inside a given network namespace.

``Nft`` runs nft command buffers (one buffer = one kernel transaction). ``Dataplane`` keeps
the desired table in memory, and ``sync(state)`` turns the difference between the last
applied table and the new one into a single transaction (set elements, chain refills,
interface chains and map elements); ``full_sync`` replaces the whole table atomically.
Only ``table inet stockade`` is ever touched.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from stockade.dataplane.compile import (
    QUALIFIED,
    HostMode,
    Ruleset,
    compile_host,
    host_mode,
    plan,
)
from stockade.dataplane.netns import NetnsWorker
from stockade.model import State

log = logging.getLogger(__name__)

OUTPUT_STATELESS = 1 << 2
OUTPUT_HANDLE = 1 << 3
OUTPUT_JSON = 1 << 4


class NftError(RuntimeError):
    """nft refused a command buffer; nothing of that buffer was applied."""

    def __init__(self, message: str, script: str) -> None:
        super().__init__(message.strip() or "nft failed")
        self.script = script


class Executor(Protocol):
    """What the Dataplane needs: run one command buffer as one transaction."""

    def run(self, script: str, check: bool = False) -> str: ...


_lib: ctypes.CDLL | None = None


def _libnftables() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_free.restype = None
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_int
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
        lib.nft_ctx_set_dry_run.restype = None
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_output_set_flags.restype = None
        _lib = lib
    return _lib


class _Context:
    """One libnftables context; created, used and freed in one thread (one netns)."""

    def __init__(self) -> None:
        self.lib = _libnftables()
        self.ctx = self.lib.nft_ctx_new(0)
        if not self.ctx:
            raise OSError("nft_ctx_new failed")
        self.lib.nft_ctx_buffer_output(self.ctx)
        self.lib.nft_ctx_buffer_error(self.ctx)

    def run(self, script: str, check: bool, flags: int) -> str:
        lib, ctx = self.lib, self.ctx
        lib.nft_ctx_set_dry_run(ctx, check)
        lib.nft_ctx_output_set_flags(ctx, flags)
        rc = lib.nft_run_cmd_from_buffer(ctx, script.encode())
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        if rc != 0:
            raise NftError(err, script)
        return out

    def free(self) -> None:
        if self.ctx:
            self.lib.nft_ctx_free(self.ctx)
            self.ctx = None


class Nft:
    """libnftables in a network namespace (``netns``: a name under /var/run/netns, or
    None for the caller's own). All calls of one namespace run in its worker thread."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._worker = NetnsWorker(netns) if netns is not None else None
        self._lock = threading.Lock()
        self._ctx = self._call(_Context)

    def _call(self, fn, *args):  # type: ignore[no-untyped-def]
        if self._worker is not None:
            return self._worker.call(fn, *args)
        with self._lock:
            return fn(*args)

    def run(self, script: str, check: bool = False, flags: int = 0) -> str:
        """Run ``script`` (nft -f syntax) as one transaction; ``check``: dry run only."""
        return self._call(self._ctx.run, script, check, flags)

    def list_table(self, stateless: bool = True) -> str:
        """The kernel's ``table inet stockade`` (costly on large tables; tests, debugging)."""
        return self.run(f"list table {QUALIFIED}", flags=OUTPUT_STATELESS if stateless else 0)

    def close(self) -> None:
        if self._ctx is not None:
            self._call(self._ctx.free)
            self._ctx = None  # type: ignore[assignment]
        if self._worker is not None:
            self._worker.close()

    def __enter__(self) -> Nft:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingNft:
    """A fake Executor for unit tests: records scripts, applies nothing (``FakeNft`` in
    dataplane/fake.py applies them to tables in memory)."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.scripts: list[str] = []
        self.fail_on = fail_on

    def run(self, script: str, check: bool = False) -> str:
        if self.fail_on is not None and self.fail_on in script:
            raise NftError(f"refused: {self.fail_on}", script)
        self.scripts.append(script)
        return ""


@dataclass(frozen=True, slots=True)
class SyncReport:
    full: bool
    commands: int
    seconds: float


class Dataplane:
    """Enforces one host's part of a State in ``table inet stockade``.

    The desired table lives in memory (reading a large ruleset back costs seconds);
    ``sync`` applies only the difference, in one transaction, and falls back to a full
    sync if the kernel refuses it (e.g. someone else changed the table).
    """

    def __init__(self, host: str, nft: Executor, mode: HostMode | None = None) -> None:
        """``mode``: enforce on the machine itself (input/output hooks), not the sandbox's
        forward hook."""
        self.host = host
        self.nft = nft
        self.mode = mode
        self.applied: Ruleset | None = None
        self._pieces: dict[Any, Any] = {}  # compile's cache for this host (see compile.py)

    def compile(self, state: State) -> Ruleset:
        ruleset = compile_host(state, self.host, self._pieces)
        return ruleset if self.mode is None else host_mode(ruleset, self.mode)

    def full_sync(self, state: State) -> SyncReport:
        """Replace the whole table in one transaction."""
        start = time.perf_counter()
        desired = self.compile(state)
        script = desired.full_script()
        self.nft.run(script)
        self.applied = desired
        return SyncReport(True, script.count("\n"), time.perf_counter() - start)

    def sync(self, state: State) -> SyncReport:
        """Apply the change from the last applied state to ``state``."""
        if self.applied is None:
            return self.full_sync(state)
        start = time.perf_counter()
        desired = self.compile(state)
        cmds = plan(self.applied, desired)
        if cmds:
            try:
                self.nft.run("\n".join(cmds) + "\n")
            except NftError as exc:
                log.warning("incremental sync refused (%s); doing a full sync", exc)
                self.applied = None
                return self.full_sync(state)
        self.applied = desired
        return SyncReport(False, len(cmds), time.perf_counter() - start)

    def uninstall(self) -> None:
        """Delete ``table inet stockade`` (and nothing else)."""
        self.nft.run(f"table {QUALIFIED}\ndelete table {QUALIFIED}\n")
        self.applied = None
