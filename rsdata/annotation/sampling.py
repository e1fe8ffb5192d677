"""The sample of a round: stratified, seeded, leaving out what earlier rounds reviewed.

Strata (``sampling.stratify``, any of):

* ``tag`` — the sample's dominant visible OSM tag (largest area share, then most visible
  features, then the tag itself; ``none`` when nothing is visible);
* ``score_bucket`` — ``scores.<sampling.score>`` cut at ``sampling.score_buckets``
  (``<0.2``, ``0.2-0.3``, ``>=0.3``; ``none`` without that score);
* ``origin`` — ``real`` or ``synthetic`` (the root origin of the sample's chain).

The round's ``count`` is shared out in proportion to each stratum's size (largest remainder,
ties by stratum name), every stratum getting at least one sample while the count allows (the
largest strata give way first). Inside a stratum samples are ranked by
``sha256(seed:key)``, so the same corpus and template always give the same sample, and
raising ``count`` only adds samples. Samples that cannot be asked about (no caption for a
caption or match round, no tag for a tag check) and samples earlier rounds reviewed
(:meth:`rsdata.annotation.state.RoundStore.reviewed_keys`, or an ``annotation`` entry in their
json) are left out and counted.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from rsdata.corpus.reader import Corpus


@dataclass
class Candidate:
    key: str
    stratum: tuple[str, ...]
    rank: str


@dataclass
class Selection:
    keys: list[str]  # in corpus order
    strata: dict[str, dict[str, int]]  # stratum label -> {available, chosen}
    skipped: Counter[str] = field(default_factory=Counter)

    def report(self) -> dict[str, Any]:
        return {"strata": self.strata, "skipped": dict(sorted(self.skipped.items()))}


def visible_tags(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in (meta.get("osm") or {}).get("tags", []) if t.get("visible") and t.get("tag")]


def dominant_tag(meta: dict[str, Any]) -> str:
    tags = visible_tags(meta)
    if not tags:
        return "none"
    best = min(tags, key=lambda t: (-float(t.get("area_share") or 0), -int(t.get("visible_count") or 0),
                                    str(t["tag"])))
    return str(best["tag"])


def score_bucket(meta: dict[str, Any], score: str | None, edges: list[float]) -> str:
    value = (meta.get("scores") or {}).get(score) if score else None
    if not isinstance(value, (int, float)):
        return "none"
    if value < edges[0]:
        return f"<{edges[0]:g}"
    for lo, hi in zip(edges, edges[1:]):
        if lo <= value < hi:
            return f"{lo:g}-{hi:g}"
    return f">={edges[-1]:g}"


def origin_of(meta: dict[str, Any]) -> str:
    origin = meta.get("origin") or {}
    root = origin.get("root") or origin.get("type")
    return "synthetic" if meta.get("synthetic") or root == "synthetic" else "real"


def stratum_of(meta: dict[str, Any], sampling: dict[str, Any]) -> tuple[str, ...]:
    parts = []
    for name in sampling["stratify"]:
        if name == "tag":
            parts.append(dominant_tag(meta))
        elif name == "score_bucket":
            parts.append(score_bucket(meta, sampling["score"], sampling["score_buckets"]))
        else:
            parts.append(origin_of(meta))
    return tuple(parts)


def askable(meta: dict[str, Any], kind: str) -> str | None:
    """Why a sample cannot be asked about in a round of ``kind`` (None: it can)."""
    if kind in ("caption_verification", "match_rating"):
        caps = meta.get("captions") or []
        if not caps or not str(caps[0].get("text", "")).strip():
            return "no_caption"
    if kind == "tag_check" and not [t for t in (meta.get("osm") or {}).get("tags", []) if t.get("tag")]:
        return "no_tags"
    return None


def reviewed_in_json(meta: dict[str, Any]) -> bool:
    return bool(((meta.get("annotation") or {}).get("rounds")))


def allocate(sizes: dict[tuple[str, ...], int], count: int) -> dict[tuple[str, ...], int]:
    """Proportional shares of ``count`` (largest remainder), at least one per stratum if possible."""
    total = sum(sizes.values())
    if count >= total:
        return dict(sizes)
    strata = sorted(sizes)
    quota = {s: count * sizes[s] / total for s in strata}
    share = {s: int(quota[s]) for s in strata}
    left = count - sum(share.values())
    for s in sorted(strata, key=lambda s: (-(quota[s] - share[s]), s))[:left]:
        share[s] += 1
    # every stratum gets one while the count allows: the largest shares give way
    for s in sorted(strata, key=lambda s: (sizes[s], s)):
        if share[s] == 0 and count >= len(strata):
            donor = max((d for d in strata if share[d] > 1), key=lambda d: (share[d], d), default=None)
            if donor is None:
                break
            share[donor] -= 1
            share[s] = 1
    return share


def select(corpus: Corpus, kind: str, sampling: dict[str, Any], exclude: set[str]) -> Selection:
    """Choose the round's samples from ``corpus`` (reads only the json members)."""
    seed = sampling["seed"]
    candidates: list[Candidate] = []
    order: dict[str, int] = {}
    skipped: Counter[str] = Counter()
    for index, entry in enumerate(corpus.entries(members={"json"})):
        meta = entry.meta()
        order[entry.key] = index
        reason = askable(meta, kind)
        if reason:
            skipped[reason] += 1
            continue
        if sampling["exclude_reviewed"] and (entry.key in exclude or reviewed_in_json(meta)):
            skipped["reviewed_earlier"] += 1
            continue
        rank = hashlib.sha256(f"{seed}:{entry.key}".encode()).hexdigest()
        candidates.append(Candidate(entry.key, stratum_of(meta, sampling), rank))
    by_stratum: dict[tuple[str, ...], list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_stratum[c.stratum].append(c)
    shares = allocate({s: len(v) for s, v in by_stratum.items()}, sampling["count"])
    chosen: list[str] = []
    report: dict[str, dict[str, int]] = {}
    for stratum in sorted(by_stratum):
        ranked = sorted(by_stratum[stratum], key=lambda c: c.rank)[: shares[stratum]]
        chosen.extend(c.key for c in ranked)
        report["|".join(stratum) or "all"] = {"available": len(by_stratum[stratum]), "chosen": len(ranked)}
    chosen.sort(key=lambda k: order[k])
    return Selection(chosen, report, skipped)
