"""Counts of what each stage took in, let out, and dropped (by reason)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageStats:
    """``n_in``/``n_out`` samples and ``dropped[reason]``; ``extra`` holds other counters."""

    name: str
    n_in: int = 0
    n_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    extra: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "in": self.n_in, "out": self.n_out,
                               "dropped": dict(sorted(self.dropped.items()))}
        if self.extra:
            out["counters"] = dict(sorted(self.extra.items()))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "StageStats":
        return cls(name=data["name"], n_in=data["in"], n_out=data["out"],
                   dropped=Counter(data.get("dropped", {})), extra=Counter(data.get("counters", {})))

    def merge(self, other: "StageStats") -> None:
        self.n_in += other.n_in
        self.n_out += other.n_out
        self.dropped.update(other.dropped)
        self.extra.update(other.extra)


def merge_stats(parts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Add up per-partition stage stats (lists in pipeline order) into one list."""
    total: dict[str, StageStats] = {}
    for part in parts:
        for entry in part:
            s = StageStats.from_json(entry)
            if s.name in total:
                total[s.name].merge(s)
            else:
                total[s.name] = s
    return [s.to_json() for s in total.values()]
