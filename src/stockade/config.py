"""Where Stockade keeps its state: the data directory and the database URL."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ACCOUNT = "default"  # the account `stockade env` and a first `serve` use

DEFAULT_PORT = 8773


def data_dir(explicit: str | None = None) -> Path:
    raw = explicit or os.environ.get("STOCKADE_DATA_DIR")
    path = Path(raw) if raw else Path.home() / ".local" / "share" / "stockade"
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url(data: Path, explicit: str | None = None) -> str:
    return explicit or os.environ.get("STOCKADE_DATABASE_URL") or f"sqlite:///{data}/stockade.db"


def endpoint(explicit: str | None = None) -> str:
    return explicit or os.environ.get("STOCKADE_ENDPOINT") or f"http://127.0.0.1:{DEFAULT_PORT}"
