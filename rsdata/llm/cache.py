"""A generation cache shared by every worker and every rerun: SQLite in WAL mode.

Keyed by the sha256 of (model identity, prompt version, prompt, generation settings), so a
rerun, a resumed run or another worker never pays for the same generation twice, and a change
of model, prompt wording or temperature never reuses an old answer. Each answer is committed
as soon as it arrives: a run that dies halfway keeps everything it had generated.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, prompt_version TEXT NOT NULL,
    text TEXT NOT NULL, created REAL NOT NULL)"""


def cache_key(
    model: str, prompt_version: str, prompt: dict[str, Any], settings: dict[str, Any]
) -> str:
    blob = json.dumps(
        {"model": model, "prompt_version": prompt_version, "prompt": prompt, "settings": settings},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """``get``/``put`` raw model answers by key; safe for several processes at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path, timeout=60.0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(SCHEMA)
            self._conn = conn
        return self._conn

    def get_many(self, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT key, text FROM generations WHERE key IN ({marks})", chunk
            )
            out.update(dict(rows.fetchall()))
        return out

    def get(self, key: str) -> str | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, model: str, prompt_version: str, text: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?)",
            (key, model, prompt_version, text, time.time()),
        )

    def __len__(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_conn": None}
