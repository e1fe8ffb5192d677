"""Subset lists: which samples of a corpus a filter keeps, and why the others were dropped.

As in DataComp, a filter's result is first a list of keys (``subset.json``), computed from the
stored scores and fingerprints without rewriting any shard; resharding that list into a new
corpus is a second, separate pass. So a threshold sweep costs one read of the metadata, and a
subset can be reviewed (or shared) before any data is copied.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsdata.errors import InputError
from rsdata.atomic import atomic_write_bytes

FORMAT = "rsdata-subset/1"


@dataclass
class Subset:
    """Every key of the parent corpus in corpus order, with ``dropped[key] = {reason, ...}``."""

    parent: str
    parent_manifest_sha256: str
    settings: dict[str, Any]
    keys: list[str]
    dropped: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def kept(self) -> list[str]:
        return [k for k in self.keys if k not in self.dropped]

    def counts(self) -> dict[str, int]:
        """Dropped samples by reason."""
        return dict(sorted(Counter(d["reason"] for d in self.dropped.values()).items()))

    def to_json(self) -> dict[str, Any]:
        kept = self.kept
        return {"format": FORMAT, "parent": self.parent,
                "parent_manifest_sha256": self.parent_manifest_sha256, "settings": self.settings,
                "n_in": len(self.keys), "n_kept": len(kept), "dropped_by_reason": self.counts(),
                "kept": kept,
                "dropped": [{"key": k, **self.dropped[k]} for k in self.keys if k in self.dropped]}

    def save(self, path: Path) -> Path:
        atomic_write_bytes(path, json.dumps(self.to_json(), indent=1, ensure_ascii=False).encode("utf-8"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Subset":
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read subset list {p} ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"{p} is not an rsdata subset list (format {FORMAT}); write one with "
                             "`rsdata filter ... --subset-only`")
        dropped = {d["key"]: {k: v for k, v in d.items() if k != "key"} for d in data["dropped"]}
        keys = list(data["kept"]) + list(dropped)
        return cls(parent=data["parent"], parent_manifest_sha256=data["parent_manifest_sha256"],
                   settings=data.get("settings", {}), keys=keys, dropped=dropped)
