"""Fuzzed, SigV4-signed EC2 requests against ``stockade serve`` on SQLite and PostgreSQL.

The fuzzer of ``tests/fuzzing.py`` (parameters drawn from botocore's EC2 model for every
action Stockade implements, valid-ish then mutated), at volume: 10,000 requests per
database (300 with ``--quick``). Per database: requests, how many were accepted and
rejected, 5xx answers, hangs (no answer within the per-request timeout), stored changes
from rejected requests or reads, replies that are not EC2's XML, and request rates.
PostgreSQL is a temporary server of this run's own (skipped if it is not installed).

``python bench/fuzz.py [--quick] [--requests N] [--seed S] [--all]``; ``--all`` also sends
the mutations of the exclusion list (bugs being fixed on another branch).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import (
    BIN,
    ROOT,
    Section,
    Summary,
    console,
    fmt,
    free_port,
    stop_process,
    table,
    track,
    wait_http,
)
from rich.markup import escape
from rich.progress import Progress

sys.path.insert(0, str(ROOT / "tests"))
import fuzzing  # noqa: E402  (tests/fuzzing.py)

SEED = "20261203"


@contextlib.contextmanager
def postgres() -> Iterator[str | None]:
    """A PostgreSQL server in a temporary directory (its URL), or None if not installed."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        yield None
        return
    bindir = Path(bins[-1]).parent
    tmp = tempfile.mkdtemp(prefix="stockade-bench-pg-")
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port, data = free_port(), os.path.join(tmp, "data")

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", data, "-A", "trust", "-U", "postgres")
    options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1"
    run(str(bindir / "pg_ctl"), "-D", data, "-w", "-l", f"{tmp}/pg.log", "-o", options, "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "fz")
        yield f"postgresql://postgres@127.0.0.1:{port}/fz"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            run(str(bindir / "pg_ctl"), "-D", data, "-m", "fast", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


def fuzz(
    database: str,
    db_url: str | None,
    requests: int,
    seed: str,
    exclude: frozenset[tuple[str, str, str]],
    progress: Progress,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """``requests`` fuzzed requests against a fresh server on ``db_url`` (None: SQLite)."""
    from stockade import accounts
    from stockade.store.db import Store

    data = tempfile.mkdtemp(prefix="stockade-bench-fuzz-")
    port = free_port()
    cmd = [str(BIN / "stockade"), "serve", "--port", str(port), "--data-dir", data]
    if db_url:
        cmd += ["--database-url", db_url]
    log_path = Path(data, "server.log")
    with open(log_path, "wb") as log:
        proc = track(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
    url = f"http://127.0.0.1:{port}"
    store = None
    try:
        wait_http(url + "/_stockade/health", proc)
        store = Store(db_url or f"sqlite:///{data}/stockade.db")
        acct, peer = accounts.create(store, "fuzz"), accounts.create(store, "peer")
        target = fuzzing.Target(
            url, store, acct.account_id, acct.access_key_id, acct.secret_access_key, database
        )
        fuzzer = fuzzing.Fuzzer(target, seed, exclude, only=only)
        fuzzer.setup(peer.account_id)
        per_round = len(fuzzing.actions()) * (1 + fuzzer.mutated_per_valid)
        cases = itertools.islice(fuzzer.cases(-(-requests // per_round)), requests)
        task = progress.add_task(f"fuzz on {database}", total=requests)
        try:
            stats = fuzzer.run(cases, lambda: progress.advance(task))
        finally:
            progress.remove_task(task)
            target.close()
    finally:
        stop_process(proc)
        if store is not None:
            store.dispose()
        tracebacks = log_path.read_text(errors="replace").count("Traceback")
        shutil.rmtree(data, ignore_errors=True)
    findings: dict[str, str] = {}
    for f in stats.findings:  # one example per (problem, action, mutation)
        what = "valid-ish" if f.case.mutation is None else "/".join(f.case.mutation)
        findings.setdefault(f"{f.problem.split(' (')[0]}: {f.case.action} [{what}]", str(f))
    return {
        "database": database,
        "requests": stats.requests,
        "accepted": stats.accepted,
        "rejected": stats.rejected,
        "5xx": stats.server_errors,
        "hangs": stats.hangs,
        "stored_changes": stats.stored_changes,
        "malformed": stats.malformed,
        "tracebacks_logged": tracebacks,
        "request_s": round(stats.seconds, 2),
        "rps": stats.requests / stats.seconds if stats.seconds else float("nan"),
        "slowest_ms": stats.slowest * 1000,
        "codes": dict(stats.codes.most_common(15)),
        "findings": findings,
        "stopped": stats.stopped,
    }


def run(quick: bool, progress: Progress, *, requests: int | None = None, seed: str = SEED,
        everything: bool = False, only: list[str] | None = None,
        databases: tuple[str, ...] = ("sqlite", "postgres")) -> Section:  # fmt: skip
    n = requests or (300 if quick else 10_000)
    exclude = frozenset() if everything else fuzzing.KNOWN_BUGS
    results = []
    if "sqlite" in databases:
        results.append(fuzz("sqlite", None, n, seed, exclude, progress, only))
    with postgres() if "postgres" in databases else contextlib.nullcontext() as pg_url:
        if pg_url is not None:
            results.append(fuzz("postgres", pg_url, n, seed, exclude, progress, only))
    section = Section("fuzz", data={"seed": seed, "excluded": sorted(exclude), "results": results})
    what = "every mutation" if everything else f"{len(exclude)} known-bug mutations left out"
    t = table(
        f"Fuzzed signed requests (seed {seed}, {what})",
        "database",
        "requests",
        "accepted",
        "rejected",
        "5xx",
        "hangs",
        "stored changes",
        "not EC2 XML",
        "req/s",
        "slowest ms",
    )
    for r in results:
        t.add_row(
            r["database"],
            f"{r['requests']:,}",
            f"{r['accepted']:,}",
            f"{r['rejected']:,}",
            str(r["5xx"]),
            str(r["hangs"]),
            str(r["stored_changes"]),
            str(r["malformed"]),
            fmt(r["rps"]),
            fmt(r["slowest_ms"]),
        )
        bad = r["5xx"] + r["hangs"] + r["stored_changes"] + r["malformed"]
        section.summary.append(
            Summary(
                f"fuzz: 5xx/hangs/stored changes on {r['database']} ({r['requests']:,} requests)",
                f"{r['5xx']}/{r['hangs']}/{r['stored_changes']}",
                "-",
                "-",
                "0/0/0",
            )
        )
        if r["stopped"]:
            section.notes.append(f"{r['database']}: stopped early, the server no longer answered")
        for key, example in list(r["findings"].items())[:10]:
            section.notes.append(escape(f"{r['database']}: {key}\n  {example}"))
        if bad and len(r["findings"]) > 10:
            section.notes.append(f"{r['database']}: {len(r['findings']) - 10} more kinds")
    if "postgres" in databases and all(r["database"] != "postgres" for r in results):
        section.notes.append("PostgreSQL is not installed: only SQLite was fuzzed")
    section.tables.append(t)
    return section


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="300 requests per database")
    ap.add_argument("--requests", type=int, default=None, help="requests per database")
    ap.add_argument("--seed", default=SEED)
    ap.add_argument("--all", action="store_true", help="include the known-bug mutations")
    ap.add_argument("--only", default="", help="comma-separated mutations to draw from")
    ap.add_argument("--databases", default="sqlite,postgres", help="sqlite, postgres or both")
    args = ap.parse_args()
    with Progress(console=console, transient=True) as progress:
        section = run(
            args.quick,
            progress,
            requests=args.requests,
            seed=args.seed,
            everything=args.all,
            only=[m for m in args.only.split(",") if m] or None,
            databases=tuple(args.databases.split(",")),
        )
    section.write()
    section.show()
    return 0


if __name__ == "__main__":
    sys.exit(main())
