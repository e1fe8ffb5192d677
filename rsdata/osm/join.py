"""The ``osm_join`` stage: per-tile statistics of OpenStreetMap tags.

In the driver (``prepare``) every OSM source is read once, limited to the rasters' bounds,
checked and cached as one pickled :class:`FeatureSet`. In each worker the features are
reprojected once per raster CRS and put in an STRtree; each tile then costs one index query
plus the clipping of the features that really touch it, however many features there are.

Per tag (``key=value``) a tile gets: how many features, how many are visible at the tile's GSD,
their area share and area in m², their length in m, where in the tile they are (3×3 grid
words) and which grid cells they cover.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from shapely import STRtree
from shapely.geometry import box

from rsdata.errors import InputError
from rsdata.osm.features import FeatureSet
from rsdata.osm.readers import read_source
from rsdata.osm.vocabulary import Phrase, Vocabulary
from rsdata.sample import Sample
from rsdata.stage import RunContext, Stage
from rsdata.stats import StageStats
from rsdata.writer import atomic_write_bytes

ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
CELL_WORDS = [[f"{r} {c}" for c in COLS] for r in ROWS]
CELL_WORDS[0][1], CELL_WORDS[1][0], CELL_WORDS[1][1], CELL_WORDS[1][2], CELL_WORDS[2][1] = (
    "top", "left", "center", "right", "bottom")
CELL_MIN_SHARE = 0.05
# When one feature carries several feature tags (a reserve tagged leisure=nature_reserve and
# landuse=conservation), the first key here names it in captions; the others are kept in the stats.
KEY_PRIORITY = ("building", "aeroway", "railway", "highway", "waterway", "water", "natural",
                "leisure", "amenity", "landuse", "man_made", "power", "wetland", "barrier")


def _priority(key: str) -> tuple[int, str]:
    return (KEY_PRIORITY.index(key) if key in KEY_PRIORITY else len(KEY_PRIORITY), key)  # a cell counts as covered when it holds at least 5% of the tag's extent


def position_words(weights: np.ndarray) -> tuple[str, list[str]]:
    """Where something is, from its 3×3 distribution of extent.

    Returns the position word (a cell word, or ``across`` when it spans the tile from side to
    side or covers most cells) and the covered cells, largest share first.
    """
    total = float(weights.sum())
    if total <= 0:
        return "center", []
    share = weights / total
    covered = share >= CELL_MIN_SHARE
    cells = [CELL_WORDS[r][c] for r, c in sorted(zip(*np.nonzero(covered)), key=lambda rc: -share[rc])]
    cols_hit = covered.any(axis=0)
    rows_hit = covered.any(axis=1)
    spans = (cols_hit[0] and cols_hit[2]) or (rows_hit[0] and rows_hit[2])
    if covered.sum() >= 6 or (spans and covered.sum() >= 3):
        return "across", cells
    ys, xs = np.mgrid[0:3, 0:3]
    r = int(round(float((share * ys).sum())))
    c = int(round(float((share * xs).sum())))
    return CELL_WORDS[r][c], cells


@dataclass
class _Index:
    """Features of the cache reprojected to one CRS, with an STRtree (worker-local)."""

    tree: STRtree
    geometries: np.ndarray
    tags: list[list[tuple[str, str, Phrase]]]


class OsmJoin(Stage):
    name = "osm_join"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        mp = self.config.get("min_pixels", {})
        self.min_polygon: float = mp.get("polygon", 16)
        self.min_line: float = mp.get("line", 8)
        self.min_point: float | None = mp.get("point")
        self.drop_empty: bool = self.config.get("drop_without_visible", False)
        self.cache_path: str | None = None
        self.source_ids: list[str] = []
        self.init_lazy()

    def init_lazy(self) -> None:
        self._lazy_indexes: dict[str, _Index] = {}
        self._lazy_vocab: Vocabulary | None = None

    # -- driver side ----------------------------------------------------------------------------
    def vocabulary(self, ctx_base: Path | None = None) -> Vocabulary:
        if self._lazy_vocab is None:
            path = self.config.get("vocabulary")
            vocab = Vocabulary.from_file(Path(path)) if path else Vocabulary.default()
            if self.config.get("phrases"):
                vocab = vocab.merged(self.config["phrases"])
            self._lazy_vocab = vocab
        return self._lazy_vocab

    def keys(self) -> frozenset[str]:
        keys = self.config.get("keys")
        return frozenset(keys) if keys else self.vocabulary().keys()

    def input_files(self, ctx: RunContext) -> list[Path]:
        files = [ctx.resolve(s["path"]) for s in self.config["sources"] if "path" in s]
        if self.config.get("vocabulary"):
            files.append(ctx.resolve(self.config["vocabulary"]))
        return files

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        if self.config.get("vocabulary"):
            self.config["vocabulary"] = str(ctx.resolve(self.config["vocabulary"]))
        bbox = _union_bbox(ctx.raster_bounds_wgs84)
        keep = self.keys()
        ident = hashlib.sha256(json.dumps({"cfg": self.config, "bbox": bbox, "keys": sorted(keep),
                                           "files": [_file_ident(p) for p in self.input_files(ctx)]},
                                          sort_keys=True, default=str).encode()).hexdigest()[:16]
        cache = ctx.state_dir / f"osm-{ident}.pkl"
        report: dict[str, Any] = {"sources": []}
        if cache.exists():
            with open(cache, "rb") as fh:
                features: FeatureSet = pickle.load(fh)
            report["sources"] = features.stats.get("_sources", [])  # type: ignore[assignment]
        else:
            features = FeatureSet(source="osm_join")
            per_source = []
            for spec in self.config["sources"]:
                if spec.get("overpass") and not self.config.get("allow_network"):
                    raise InputError("osm_join: an Overpass source needs allow_network: true in the "
                                     "recipe (rsdata never goes online unless told to)")
                path = ctx.resolve(spec["path"]) if "path" in spec else None
                fs = read_source(spec, path, bbox, keep)
                per_source.append({"id": spec.get("id") or (path.name if path else "overpass"),
                                   "features": len(fs), "stats": dict(sorted(fs.stats.items()))})
                features.extend(fs)
            report["sources"] = per_source
            features.stats["_sources"] = per_source  # type: ignore[assignment]
            atomic_write_bytes(cache, pickle.dumps(features, protocol=pickle.HIGHEST_PROTOCOL))
        self.cache_path = str(cache)
        self.source_ids = [s["id"] for s in report["sources"]]
        report["features"] = len(features)
        return report

    # -- worker side ----------------------------------------------------------------------------
    def _index(self, crs_text: str) -> _Index:
        index = self._lazy_indexes.get(crs_text)
        if index is not None:
            return index
        if self.cache_path is None:
            raise RuntimeError("OsmJoin.prepare() must run before the stage is used")
        with open(self.cache_path, "rb") as fh:
            features: FeatureSet = pickle.load(fh)
        vocab = self.vocabulary()
        keys = self.keys()
        geoms, tag_lists = [], []
        for geom, tags in zip(features.geometries, features.tags):
            entries = []
            for k, v in tags.items():
                if k not in keys:
                    continue
                phrase = vocab.phrase(k, v)
                if phrase is not None:
                    entries.append((k, v.split(";")[0].strip(), phrase))
            if entries:
                entries.sort(key=lambda e: _priority(e[0]))
                geoms.append(geom)
                tag_lists.append(entries)
        garr = np.array(geoms, dtype=object)
        crs = CRS.from_user_input(crs_text)
        if garr.size and crs.to_epsg() != 4326:
            tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
            garr = shapely.transform(garr, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
            bad = ~shapely.is_valid(garr)
            if bad.any():
                garr[bad] = shapely.make_valid(garr[bad])
        index = _Index(tree=STRtree(garr), geometries=garr, tags=tag_lists)
        self._lazy_indexes[crs_text] = index
        return index

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        for sample in samples:
            stats.n_in += 1
            osm = self.join(sample)
            sample.meta["osm"] = osm
            if self.drop_empty and not any(t["visible"] for t in osm["tags"]):
                stats.drop("no_visible_osm_tags")
                continue
            stats.n_out += 1
            yield sample

    def join(self, sample: Sample) -> dict[str, Any]:
        """The OSM statistics of one tile (the ``osm`` member of its json)."""
        geo = sample.meta["geo"]
        index = self._index(geo["crs"])
        width, height = geo["size"]
        transform = Affine(*geo["transform"])
        inv = ~transform
        corners = [transform @ xy for xy in ((0, 0), (width, 0), (width, height), (0, height))]
        tile = shapely.Polygon(corners)
        gx, gy = geo["gsd_xy_m"]
        px_area_m2 = gx * gy
        px_len_m = float(np.sqrt(gx * gy))
        hits = np.sort(index.tree.query(tile, predicate="intersects"))
        agg: dict[tuple[str, str], dict[str, Any]] = {}
        members: dict[tuple[str, str], list[int]] = defaultdict(list)
        # vectorised over the features that touch the tile: to tile pixels, clip, measure
        clipped = shapely.intersection(
            _to_pixels(index.geometries[hits], inv), box(0, 0, width, height)) if len(hits) else np.array([])
        kinds = [_kind(g) for g in clipped]
        areas = shapely.area(clipped) if len(hits) else np.array([])
        lengths = shapely.length(clipped) if len(hits) else np.array([])
        weights = _cell_weights(clipped, kinds, width, height)
        n_features = 0
        for j, (i, kind) in enumerate(zip(hits.tolist(), kinds)):
            if kind is None:
                continue
            n_features += 1
            visible = ((kind == "polygon" and areas[j] >= self.min_polygon)
                       or (kind == "line" and lengths[j] >= self.min_line)
                       or (kind == "point" and self.min_point is not None))
            for rank, (key, value, phrase) in enumerate(index.tags[i]):
                entry = agg.get((key, value))
                if entry is None:
                    entry = agg[(key, value)] = {
                        "key": key, "value": value, "phrase": phrase.singular,
                        "plural": phrase.plural, "mass": phrase.mass, "category": phrase.category,
                        "count": 0, "visible_count": 0, "primary_count": 0,
                        "geom_types": Counter()}
                entry["count"] += 1
                entry["primary_count"] += int(rank == 0)
                entry["visible_count"] += int(visible)
                entry["geom_types"][kind] += 1
                members[(key, value)].append(j)
        tags = []
        for tag, entry in agg.items():
            js = members[tag]
            polys = [j for j in js if kinds[j] == "polygon"]
            # overlapping polygons of one tag (duplicated landuse) must not count twice
            area_px = (shapely.union_all(clipped[polys]).area if len(polys) > 1
                       else float(sum(areas[j] for j in polys)))
            length_px = float(sum(lengths[j] for j in js if kinds[j] == "line"))
            position, covered = position_words(weights[js].sum(axis=0).reshape(3, 3))
            entry.update({
                "tag": f"{tag[0]}={tag[1]}",
                "visible": entry["visible_count"] > 0,
                "primary": entry.pop("primary_count") > 0,
                "area_m2": round(area_px * px_area_m2, 1),
                "area_share": round(min(1.0, area_px / (width * height)), 4),
                "length_m": round(length_px * px_len_m, 1),
                "position": position,
                "cells": covered,
                "geom_types": dict(sorted(entry["geom_types"].items())),
            })
            tags.append(entry)
        tags.sort(key=lambda t: (not t["visible"], -t["area_share"], -t["length_m"], -t["count"], t["tag"]))
        return {"sources": self.source_ids, "n_features": n_features, "tags": tags,
                "min_pixels": {"polygon": self.min_polygon, "line": self.min_line, "point": self.min_point}}


def _to_pixels(geoms: np.ndarray, inv: Affine) -> np.ndarray:
    """CRS coordinates -> tile pixel coordinates, for an array of geometries at once."""
    m = np.array([[inv.a, inv.d], [inv.b, inv.e]])
    offset = np.array([inv.xoff, inv.yoff])
    return shapely.transform(geoms, lambda xy: xy @ m + offset)


def _cell_weights(clipped: np.ndarray, kinds: list[str | None], width: int, height: int) -> np.ndarray:
    """(n, 9): how much of each clipped feature lies in each 3x3 cell (area, length or 1 for points).

    Most features (buildings, short ways) lie inside one cell: their whole measure goes there
    from their bounding box alone; only features that cross cell borders are intersected.
    """
    n = len(clipped)
    out = np.zeros((n, 9))
    if not n:
        return out
    kind = np.array([k or "" for k in kinds])
    measure = np.where(kind == "polygon", shapely.area(clipped),
                       np.where(kind == "line", shapely.length(clipped), (kind == "point").astype(float)))
    bounds = shapely.bounds(clipped)
    col0 = np.clip((bounds[:, 0] * 3 // width), 0, 2).astype(int)
    col1 = np.clip((bounds[:, 2] * 3 // width), 0, 2).astype(int)
    row0 = np.clip((bounds[:, 1] * 3 // height), 0, 2).astype(int)
    row1 = np.clip((bounds[:, 3] * 3 // height), 0, 2).astype(int)
    single = (col0 == col1) & (row0 == row1)
    out[np.flatnonzero(single), (row0 * 3 + col0)[single]] = measure[single]
    cross = np.flatnonzero(~single)
    if len(cross):
        xs = np.arange(3) * width / 3
        ys = np.arange(3) * height / 3
        cells = shapely.box(np.tile(xs, 3), np.repeat(ys, 3), np.tile(xs, 3) + width / 3,
                            np.repeat(ys, 3) + height / 3)
        parts = shapely.intersection(clipped[cross][:, None], cells[None, :])
        k = kind[cross][:, None]
        out[cross] = np.where(k == "polygon", shapely.area(parts),
                              np.where(k == "line", shapely.length(parts),
                                       (~shapely.is_empty(parts)).astype(float)))
    return out


def _kind(geom: Any) -> str | None:
    """polygon / line / point for a clipped geometry (collections: the highest dimension)."""
    dim = shapely.get_dimensions(geom)
    if dim == 2 and geom.area > 0:
        return "polygon"
    if dim >= 1 and geom.length > 0:
        return "line"
    if dim >= 0 and not geom.is_empty:
        return "point"
    return None


def _union_bbox(bounds: list[tuple[float, float, float, float]], margin: float = 0.001
                ) -> tuple[float, float, float, float] | None:
    if not bounds:
        return None
    arr = np.array(bounds)
    return (float(arr[:, 0].min() - margin), float(arr[:, 1].min() - margin),
            float(arr[:, 2].max() + margin), float(arr[:, 3].max() + margin))


def _file_ident(path: Path) -> list[Any]:
    try:
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path)]
