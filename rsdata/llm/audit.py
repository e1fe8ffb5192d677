"""The audit trail of LLM captions: every answer, accepted or not, with the validator's reasons.

One JSONL file per partition under ``OUT/.rsdata/llm_audit/``, named after the partition's
first sample key and written atomically when the partition's stream ends. A rerun of an
interrupted partition rewrites its file whole, so resumed runs never duplicate a record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rsdata.atomic import atomic_write_bytes

AUDIT_DIR = "llm_audit"


class AuditLog:
    """Records of one partition, kept in memory and written once."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory else None
        self.records: list[dict[str, Any]] = []
        self.first_key: str | None = None

    def add(self, record: dict[str, Any]) -> None:
        if self.first_key is None:
            self.first_key = str(record["key"])
        self.records.append(record)

    def note_sample(self, key: str) -> None:
        if self.first_key is None:
            self.first_key = key

    def write(self) -> Path | None:
        if self.directory is None or self.first_key is None:
            return None
        path = self.directory / f"{self.first_key}.jsonl"
        lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in self.records]
        atomic_write_bytes(path, ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
        return path


def read_audit(out_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Every audit record of an output directory (partition files in name order)."""
    directory = Path(out_dir) / ".rsdata" / AUDIT_DIR
    for path in sorted(directory.glob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)
