"""store.watch.WalWatch: another process's SQLite commit wakes the event loop."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from stockade.store.db import Store
from stockade.store.watch import WalWatch

# a commit with a change-log entry, made by a process of its own (as another worker's)
WRITE = """
import sys
from stockade.store.db import Store
store = Store(sys.argv[1])
with store.write() as tx:
    tx.log("123456789012", "us-east-1", "tags.changed", "sg-12345678")
store.dispose()
"""


def test_another_process_commit_wakes_the_loop(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path}/stockade.db")
    store.migrate()
    assert store.path is not None
    before = store.revision()

    async def main() -> None:
        seen = asyncio.Event()
        watch = WalWatch(store.path, seen.set)
        assert watch.start(asyncio.get_running_loop())
        try:
            # a write to another file of the directory is not a commit
            (tmp_path / "notes.txt").write_text("not the database")
            watch._readable()
            assert not seen.is_set()
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITE, store.url)
            assert await proc.wait() == 0
            await asyncio.wait_for(seen.wait(), 10)
        finally:
            watch.close()

    try:
        asyncio.run(main())
        assert store.revision() == before + 1
    finally:
        store.dispose()
