"""Held-out regions for evaluation: whole photos or spatial blocks, never strips of a photo.

Tiles of one photo overlap and share roads, fields and captions with their neighbours, so a
random or banded hold-out measures how well a model remembers the place, not how it does on
a new one. These splits keep whole places apart:

* :func:`source_holdout` — every tile of the given source rasters (photos) is test, the rest train;
* :func:`block_holdout` — tiles lying wholly inside a WGS84 block are test; training keeps only
  tiles whose footprint stays ``buffer_m`` metres clear of the block; tiles in between are used by
  neither side (no pixel is shared across the split);
* :func:`edge_block` — the block covering a ``fraction`` of one source's extent on one side;
* :func:`thin` — a subset of test tiles that overlap each other by at most ``max_overlap`` of
  their area (near-identical neighbours make R@1 a coin toss between copies).

Footprints come from each sample's ``meta["geo"]["bounds_wgs84"]``; the source from
``meta["source"]["id"]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from rsdata.corpus import Corpus

Bounds = tuple[float, float, float, float]


class SplitError(ValueError):
    """A hold-out that leaves one side empty, or samples without footprints."""


@dataclass(frozen=True)
class Tile:
    key: str
    source: str
    bounds: Bounds  # WGS84 min lon, min lat, max lon, max lat


@dataclass
class Split:
    """Keys used for training, keys held out for testing, and keys used by neither (buffer)."""

    train: list[str]
    test: list[str]
    excluded: list[str] = field(default_factory=list)
    description: str = ""

    def not_for_training(self) -> list[str]:
        """What ``rsdata train --exclude-keys`` must leave out: the test keys and the buffer."""
        return sorted(set(self.test) | set(self.excluded))

    def summary(self) -> dict[str, Any]:
        return {"description": self.description, "train": len(self.train), "test": len(self.test),
                "excluded": len(self.excluded)}


def tile_from_meta(key: str, meta: dict[str, Any]) -> Tile:
    geo = meta.get("geo") or {}
    bounds = geo.get("bounds_wgs84")
    if not (isinstance(bounds, (list, tuple)) and len(bounds) == 4):
        raise SplitError(f"sample {key} has no geo.bounds_wgs84: a spatial hold-out needs georeferenced tiles")
    source = (meta.get("source") or {}).get("id") or key.rsplit("_", 2)[0]
    return Tile(key, str(source), (float(bounds[0]), float(bounds[1]), float(bounds[2]), float(bounds[3])))


def read_tiles(corpora: Iterable[str | Path]) -> list[Tile]:
    """Key, source and footprint of every sample (reads the json members only)."""
    tiles: list[Tile] = []
    for corpus in corpora:
        for entry in Corpus(corpus).entries({"json"}):
            tiles.append(tile_from_meta(entry.key, entry.meta()))
    return tiles


def _check(split: Split) -> Split:
    if not split.train:
        raise SplitError(f"{split.description}: no training tiles left")
    if not split.test:
        raise SplitError(f"{split.description}: no test tiles")
    return split


def source_holdout(tiles: Sequence[Tile], test_sources: Iterable[str]) -> Split:
    """Whole photos held out: tiles of ``test_sources`` are test, all others train."""
    held = set(test_sources)
    known = {t.source for t in tiles}
    if held - known:
        raise SplitError(f"no tiles from {sorted(held - known)}; sources here: {sorted(known)}")
    return _check(Split([t.key for t in tiles if t.source not in held], [t.key for t in tiles if t.source in held],
                        [], f"held-out photo(s) {', '.join(sorted(held))}"))


def _intersects(a: Bounds, b: Bounds) -> bool:
    return a[0] < b[2] and a[2] > b[0] and a[1] < b[3] and a[3] > b[1]


def _inside(a: Bounds, b: Bounds) -> bool:
    return a[0] >= b[0] and a[2] <= b[2] and a[1] >= b[1] and a[3] <= b[3]


def grow(block: Bounds, metres: float) -> Bounds:
    """``block`` widened by ``metres`` on every side (local degrees per metre)."""
    if metres <= 0:
        return block
    lat = math.radians((block[1] + block[3]) / 2)
    dy = metres / 110_540.0
    dx = metres / (111_320.0 * max(math.cos(lat), 1e-6))
    return (block[0] - dx, block[1] - dy, block[2] + dx, block[3] + dy)


def block_holdout(tiles: Sequence[Tile], block: Bounds, buffer_m: float = 0.0,
                  sources: Iterable[str] | None = None) -> Split:
    """Tiles wholly inside ``block`` are test; tiles clear of the block grown by ``buffer_m`` are
    train; the rest (straddling the edge or in the buffer) are excluded. ``sources`` limits the
    split to tiles of those photos (others are excluded)."""
    keep = set(sources) if sources is not None else None
    train, test, excluded = [], [], []
    guard = grow(block, buffer_m)
    for t in tiles:
        if keep is not None and t.source not in keep:
            excluded.append(t.key)
        elif _inside(t.bounds, block):
            test.append(t.key)
        elif not _intersects(t.bounds, guard):
            train.append(t.key)
        else:
            excluded.append(t.key)
    desc = (f"held-out block lon {block[0]:.5f}..{block[2]:.5f}, lat {block[1]:.5f}..{block[3]:.5f}"
            + (f", {buffer_m:g} m buffer" if buffer_m else ""))
    return _check(Split(train, test, excluded, desc))


def edge_block(tiles: Sequence[Tile], source: str, side: str = "south", fraction: float = 0.2) -> Bounds:
    """The block covering ``fraction`` of ``source``'s extent on ``side`` (south/north/west/east)."""
    own = [t.bounds for t in tiles if t.source == source]
    if not own:
        raise SplitError(f"no tiles from {source}")
    if not 0 < fraction < 1:
        raise SplitError("the block fraction must lie in (0, 1)")
    x0, y0 = min(b[0] for b in own), min(b[1] for b in own)
    x1, y1 = max(b[2] for b in own), max(b[3] for b in own)
    w, h = (x1 - x0) * fraction, (y1 - y0) * fraction
    blocks = {"south": (x0, y0, x1, y0 + h), "north": (x0, y1 - h, x1, y1),
              "west": (x0, y0, x0 + w, y1), "east": (x1 - w, y0, x1, y1)}
    if side not in blocks:
        raise SplitError(f"side must be one of {sorted(blocks)}, not {side!r}")
    return blocks[side]


def merge(splits: Sequence[Split]) -> Split:
    """Several hold-outs at once: train on what every split trains on; test on any split's test."""
    if not splits:
        raise SplitError("nothing to merge")
    train = set(splits[0].train)
    for s in splits[1:]:
        train &= set(s.train)
    test = sorted(set().union(*(s.test for s in splits)) - train)
    everything = set().union(*(set(s.train) | set(s.test) | set(s.excluded) for s in splits))
    excluded = sorted(everything - train - set(test))
    return _check(Split(sorted(train), test, excluded, "; ".join(s.description for s in splits)))


def overlap_share(a: Bounds, b: Bounds) -> float:
    """Area of a ∩ b as a share of a's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    area = (a[2] - a[0]) * (a[3] - a[1])
    return max(w, 0.0) * max(h, 0.0) / area if area > 0 else 0.0


def thin(tiles: Sequence[Tile], keys: Iterable[str], max_overlap: float = 0.5) -> list[str]:
    """A subset of ``keys`` (greedy, in key order) whose tiles overlap each kept tile by at most
    ``max_overlap`` of their area; 128 px tiles at a 32 px stride thinned at 0.5 keep every
    second row and column."""
    by_key = {t.key: t for t in tiles}
    kept: list[Tile] = []
    for key in sorted(set(keys)):
        t = by_key[key]
        if all(overlap_share(t.bounds, k.bounds) <= max_overlap + 1e-9 for k in kept
               if _intersects(t.bounds, k.bounds)):
            kept.append(t)
    return [t.key for t in kept]
