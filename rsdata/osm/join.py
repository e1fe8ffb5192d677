"""The ``osm_join`` stage: per-tile statistics of OpenStreetMap tags.

In the driver (``prepare``) every OSM source is read once, limited to the run's footprints
(each layer filtered in its own CRS, then reprojected to WGS84), checked and cached as plain
data (JSON + WKB, see ``rsdata.osm.cache``; never pickle). In each worker the features are
reprojected once per raster CRS and put in an STRtree. A worker joins a partition's tiles
together (``rsdata.osm.tilejoin``: one bulk index query, clipping and measuring vectorised over
every (tile, feature) pair), so a tile costs a share of that pass plus the features that really
touch it, however many features there are.

Per tag (``key=value``) a tile gets: how many features (``count``, ``count_ways``) and objects
(``count_objects``: touching ways of a road are one), how many are visible at the tile's GSD,
their area share and area in m², their length in m, where in the tile they are (3×3 grid
words) and which grid cells they cover. ``coverage`` says which share of the tile lies inside
the sources' coverage (``rsdata.osm.coverage``): only there may a caption say nothing is mapped.
When a later stage reads them (``Stage.needs_objects``) or the recipe sets ``keep_objects``, the
tile's visible clipped objects go to ``osm.objects`` (format: ``schemas/sample.schema.json``).

A source may be a labelled layer that is not OSM: ``class_column`` + ``classes`` map each
class value to an OSM-style tag (``"natural=water"``) or to a phrase with its grammar
(``{phrase: cropland, countable: false}``), which becomes the tag ``class:<source>=<value>``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import shapely
from pyproj import Transformer
from rasterio.crs import CRS
from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from rsdata.errors import InputError
from rsdata.osm.cache import SUFFIX as CACHE_SUFFIX
from rsdata.osm.cache import read_cache, write_cache
from rsdata.osm.coverage import NO_COVERAGE, declared_coverage
from rsdata.osm.features import FeatureSet
from rsdata.osm.readers import ClassMap, class_value, read_source
from rsdata.osm.tilejoin import (
    CELL_MIN_SHARE,
    CELL_WORDS,
    TagTable,
    Thresholds,
    Tiles,
    aggregate,
    clip_and_measure,
    coverage_many,
    objects,
    tiles_wgs84,
)
from rsdata.osm.vocabulary import Phrase, Vocabulary, VocabularyError
from rsdata.sample import Sample
from rsdata.settings import from_config, with_schema_defaults
from rsdata.stage import BatchStage, RunContext
from rsdata.stats import StageStats

__all__ = ["CELL_MIN_SHARE", "CELL_WORDS", "KEY_PRIORITY", "OsmJoin", "position_words", "source_id"]
# samples a worker buffers before joining them together (a partition, or this many of it):
# 64 tiles cost ~1.3x less per tile than 16 and ~10x less than one at a time, and hold little
BATCH = 64
# When one feature carries several feature tags (a reserve tagged leisure=nature_reserve and
# landuse=conservation), the first key here names it in captions; the others are kept in the stats.
KEY_PRIORITY = ("building", "aeroway", "railway", "highway", "waterway", "water", "natural",
                "leisure", "amenity", "landuse", "man_made", "power", "wetland", "barrier")
CLASS_KEY_PREFIX = "class:"


def _priority(key: str) -> tuple[int, str]:
    return (KEY_PRIORITY.index(key) if key in KEY_PRIORITY else len(KEY_PRIORITY), key)


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
    table: TagTable  # the same tags as arrays, plus ids, name/ref and visible attributes
    geographic: bool  # the CRS is geographic (object boxes in degrees)


def source_id(spec: Mapping[str, Any]) -> str:
    """How reports and sample jsons name a source: its ``id``, else its file name."""
    if spec.get("id"):
        return str(spec["id"])
    return Path(spec["path"]).name if "path" in spec else "overpass"


def _class_key(spec: Mapping[str, Any], index: int) -> str:
    """The tag key of a source's phrase classes: ``class:<id or file stem>``."""
    name = spec.get("id") or (Path(spec["path"]).name.split(".")[0] if "path" in spec else "")
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_") or f"source{index}"
    return CLASS_KEY_PREFIX + name


def _guess_plural_verb(phrase: str) -> bool:
    """Whether a mass phrase is plural in form ("trees", "crops") rather than "grass"."""
    last = phrase.strip().split(" ")[-1].lower()
    return last.endswith("s") and not last.endswith(("ss", "us", "is", "ics"))


@dataclass(frozen=True)
class MinPixels:
    polygon: float
    line: float
    point: float | None = None


@dataclass(frozen=True)
class OsmJoinSettings:
    """The ``osm_join`` stage's options, parsed once (schema defaults filled in)."""

    sources: list[dict[str, Any]]
    min_pixels: MinPixels
    drop_without_visible: bool
    allow_network: bool
    keep_objects: bool
    keys: list[str] | None = None
    vocabulary: str | None = None
    phrases: dict[str, Any] | None = None


class OsmJoin(BatchStage):
    name = "osm_join"
    batch_size: ClassVar[int] = BATCH
    settings_class: ClassVar[type | None] = OsmJoinSettings

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        resolved = with_schema_defaults(self.config, "osm_join", "osm_join")
        self.settings = from_config(OsmJoinSettings, resolved, "osm_join",
                                    nested={"min_pixels": MinPixels})
        mp = self.settings.min_pixels
        self.min_polygon: float = mp.polygon
        self.min_line: float = mp.line
        self.min_point: float | None = mp.point
        self.drop_empty: bool = self.settings.drop_without_visible
        # keep the visible clipped objects (meta["osm"]["objects"]): asked by the recipe, or by
        # a later stage that reads them (RunContext.keep_objects, set in prepare)
        self.keep_objects: bool = self.settings.keep_objects
        self.vocabulary_path: str | None = None  # resolved in prepare()
        self.cache_path: str | None = None
        self.source_ids: list[str] = []
        self.init_lazy()

    def init_lazy(self) -> None:
        self._lazy_indexes: dict[str, _Index] = {}
        self._lazy_vocab: Vocabulary | None = None
        self._lazy_data: tuple[FeatureSet, dict[str, Any]] | None = None
        self._lazy_coverage: tuple[list[tuple[str, BaseGeometry]], BaseGeometry | None] | None = None
        self._lazy_to_wgs84: dict[str, Transformer | None] = {}

    # -- configuration ----------------------------------------------------------------------------
    def class_maps(self) -> tuple[list[ClassMap | None], dict[str, Any]]:
        """Per source its class map (or None), and the vocabulary overrides its phrases need."""
        maps: list[ClassMap | None] = []
        overrides: dict[str, Any] = {}
        for i, spec in enumerate(self.settings.sources):
            column, classes = spec.get("class_column"), spec.get("classes")
            where = f"osm_join.sources[{i}]"
            if column is None and classes is None:
                maps.append(None)
                continue
            if not column or not isinstance(classes, Mapping) or not classes:
                raise InputError(f"{where}: class_column and classes go together: class_column: "
                                 "<column>, classes: {<value>: 'key=value' or {phrase: ..., "
                                 "countable: true|false}}")
            key = _class_key(spec, i)
            mapping: dict[str, dict[str, str]] = {}
            for raw, target in classes.items():
                value = class_value(raw)
                if value is None:
                    raise InputError(f"{where}.classes: empty class value {raw!r}")
                if isinstance(target, str):
                    k, eq, v = target.partition("=")
                    if not eq or not k.strip() or not v.strip():
                        raise InputError(f"{where}.classes[{value!r}]: {target!r} is not an "
                                         "OSM-style tag 'key=value' (or give {phrase: ..., "
                                         "countable: true|false})")
                    mapping[value] = {k.strip(): v.strip()}
                elif isinstance(target, Mapping) and isinstance(target.get("phrase"), str):
                    countable = target.get("countable", True)
                    entry: dict[str, Any] = {
                        "singular": target["phrase"], "mass": not countable,
                        "category": target.get("category", "other" if countable else "landcover")}
                    if countable and target.get("plural"):
                        entry["plural"] = target["plural"]
                    if not countable:
                        entry["plural_verb"] = bool(target.get("plural_verb",
                                                               _guess_plural_verb(target["phrase"])))
                    overrides[f"{key}={value}"] = entry
                    mapping[value] = {key: value}
                else:
                    raise InputError(f"{where}.classes[{value!r}]: give an OSM-style tag "
                                     "'key=value' or {phrase: <words>, countable: true|false}, got "
                                     f"{target!r}")
            maps.append((str(column), mapping))
        return maps, overrides

    def vocabulary(self, ctx_base: Path | None = None) -> Vocabulary:
        if self._lazy_vocab is None:
            path = self.vocabulary_path or self.settings.vocabulary
            vocab = Vocabulary.from_file(Path(path)) if path else Vocabulary.default()
            if self.settings.phrases:
                vocab = vocab.merged(self.settings.phrases)
            _, overrides = self.class_maps()
            if overrides:
                try:
                    vocab = vocab.merged(overrides)
                except VocabularyError as exc:
                    raise InputError(f"osm_join classes: {exc}") from None
            self._lazy_vocab = vocab
        return self._lazy_vocab

    def keys(self) -> frozenset[str]:
        """OSM keys that make features: the recipe's ``keys`` (else every key the vocabulary
        knows), plus the keys the sources' ``classes`` map to."""
        keys = self.settings.keys
        base = frozenset(keys) if keys else self.vocabulary().keys()
        maps, _ = self.class_maps()
        extra = {k for m in maps if m for tags in m[1].values() for k in tags}
        return base | extra

    def input_files(self, ctx: RunContext) -> list[Path]:
        files = [ctx.resolve(s["path"]) for s in self.settings.sources if "path" in s]
        files += [ctx.resolve(s["coverage"]) for s in self.settings.sources
                  if isinstance(s.get("coverage"), str) and s["coverage"] != NO_COVERAGE]
        if self.settings.vocabulary:
            files.append(ctx.resolve(self.settings.vocabulary))
        return files

    # -- driver side ----------------------------------------------------------------------------
    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        if self.settings.vocabulary:
            self.vocabulary_path = str(ctx.resolve(self.settings.vocabulary))
            self._lazy_vocab = None
        self.keep_objects = self.settings.keep_objects or ctx.keep_objects
        footprints = [tuple(float(v) for v in b) for b in ctx.footprints_wgs84]
        bbox = _union_bbox(footprints)
        maps, _ = self.class_maps()
        keep = self.keys()
        self._check_class_tags(maps)
        cfg = {k: v for k, v in self.config.items() if k != "keep_objects"}  # not in the cache
        ident = hashlib.sha256(json.dumps({"cfg": _jsonable(cfg), "bbox": bbox, "keys": sorted(keep),
                                           "files": [_file_ident(p) for p in self.input_files(ctx)]},
                                          sort_keys=True, default=str).encode()).hexdigest()[:16]
        cache = ctx.state_dir / f"osm-{ident}{CACHE_SUFFIX}"
        report: dict[str, Any] = {"sources": []}
        loaded = read_cache(cache)
        if loaded is None:
            if cache.exists():
                report["cache"] = "rebuilt (the cache file was unreadable, truncated or corrupt)"
            features, extra = self._build(ctx, bbox, footprints, keep, maps)
            write_cache(cache, features, extra)
        else:
            features, extra = loaded
        # workers (and this object, on first use) read the cache file: the driver keeps no copy
        self._lazy_data = None
        self._lazy_indexes = {}
        self._lazy_coverage = None
        self.cache_path = str(cache)
        # the report (manifest) gets the facts, not the coverage polygons themselves
        report["sources"] = [{**s, "coverage": {k: v for k, v in s["coverage"].items() if k != "wkb_hex"}}
                             for s in extra["sources"]]
        self.source_ids = [s["id"] for s in report["sources"]]
        report["features"] = len(features)
        warnings = self._footprint_checks(extra["sources"], footprints, ctx.footprint_crs)
        if warnings:
            report["warnings"] = warnings
        return report

    def _check_class_tags(self, maps: list[ClassMap | None]) -> None:
        vocab = self.vocabulary()
        for i, m in enumerate(maps):
            if m is None:
                continue
            for value, tags in m[1].items():
                for k, v in tags.items():
                    if not k.startswith(CLASS_KEY_PREFIX) and vocab.phrase(k, v) is None:
                        raise InputError(
                            f"osm_join.sources[{i}].classes[{value!r}]: the vocabulary has no "
                            f"phrase for '{k}={v}' (not a tag it knows, or not a visible feature); "
                            f"use a tag it knows (e.g. natural=water, landuse=farmland) or give a "
                            "phrase: {phrase: <words>, countable: true|false}")

    def _build(self, ctx: RunContext, bbox: tuple[float, float, float, float] | None,
               footprints: list[tuple[float, ...]], keep: frozenset[str],
               maps: list[ClassMap | None]) -> tuple[FeatureSet, dict[str, Any]]:
        features = FeatureSet(source="osm_join")
        per_source = []
        area = shapely.union_all([shapely.box(*b) for b in footprints]) if footprints else None
        for i, spec in enumerate(self.settings.sources):
            if spec.get("overpass") and not self.settings.allow_network:
                raise InputError("osm_join: an Overpass source needs allow_network: true in the "
                                 "recipe (rsdata never goes online unless told to)")
            path = ctx.resolve(spec["path"]) if "path" in spec else None
            fs = read_source(spec, path, bbox, keep, maps[i])
            if spec.get("coverage") is not None:
                cover = declared_coverage(spec["coverage"], ctx.resolve, f"osm_join.sources[{i}].coverage")
                kind = "declared" if cover is not None else "none"
            else:
                cover = fs.extent
                kind = "overpass_bbox" if spec.get("overpass") else "data_extent"
            extent = fs.extent
            if cover is not None and bbox is not None:
                cover = shapely.clip_by_rect(cover, *_union_bbox(footprints, margin=0.01))
            if cover is not None and (cover.is_empty or cover.area <= 0):
                cover = None
            in_fp = (int(shapely.intersects(np.asarray(fs.geometries, dtype=object), area).sum())
                     if area is not None and len(fs) else len(fs))
            per_source.append({
                "id": source_id(spec), "features": len(fs), "features_in_footprints": in_fp,
                "crs": fs.crs,
                "extent_wgs84": _rounded_bounds(extent),
                "coverage": {"kind": kind, "bounds_wgs84": _rounded_bounds(cover),
                             "wkb_hex": shapely.to_wkb(cover, hex=True) if cover is not None else None},
                "stats": dict(sorted(fs.stats.items()))})
            features.extend(fs)
        return features, {"sources": per_source}

    def _footprint_checks(self, sources: list[dict[str, Any]], footprints: list[tuple[float, ...]],
                          footprint_crs: list[str]) -> list[str]:
        """Warn about sources with no feature inside the footprints; with drop_without_visible
        and no feature from any source, stop: every tile would be dropped."""
        if not footprints:
            return []
        fp = _rounded_bounds(shapely.box(*_union_bbox(footprints, margin=0.0)))
        crs_names = sorted({_crs_name(c) for c in footprint_crs if c})
        where = f"{fp} (WGS84 lon/lat" + (f"; imagery CRS {', '.join(crs_names)})" if crs_names else ")")
        warnings = []
        for s in sources:
            if s["features_in_footprints"] == 0:
                msg = (f"osm_join source {s['id']!r} (CRS {s['crs'] or 'unknown'}, data extent "
                       f"{s['extent_wgs84'] or 'empty'} in WGS84) has 0 features inside the run's "
                       f"footprints {where}. Check that it covers the imagery and that its CRS is "
                       "right; its tiles get no features from it.")
                warnings.append(msg)
                print(f"rsdata: warning: {msg}", file=sys.stderr)
        if self.drop_empty and all(s["features_in_footprints"] == 0 for s in sources):
            names = ", ".join(f"{s['id']} (CRS {s['crs'] or 'unknown'}, extent {s['extent_wgs84']})"
                              for s in sources)
            raise InputError(
                f"osm_join: no source has any feature inside the run's footprints {where}, and "
                f"drop_without_visible: true would drop every tile. Sources: {names}. Use vector "
                "data that overlaps the imagery (check its CRS), or set drop_without_visible: false.")
        return warnings

    # -- worker side ----------------------------------------------------------------------------
    def _data(self) -> tuple[FeatureSet, dict[str, Any]]:
        if self._lazy_data is None:
            if self.cache_path is None:
                raise RuntimeError("OsmJoin.prepare() must run before the stage is used")
            loaded = read_cache(Path(self.cache_path))
            if loaded is None:
                raise InputError(f"the OSM cache {self.cache_path} is missing or corrupt; run again "
                                 "(the driver rebuilds it)")
            self._lazy_data = loaded
        return self._lazy_data

    def _coverage(self) -> tuple[list[tuple[str, BaseGeometry]], BaseGeometry | None]:
        if self._lazy_coverage is None:
            _, extra = self._data()
            covers = [(s["id"], shapely.from_wkb(s["coverage"]["wkb_hex"]))
                      for s in extra["sources"] if s["coverage"].get("wkb_hex")]
            for _, geom in covers:
                shapely.prepare(geom)
            union = shapely.union_all([g for _, g in covers]) if covers else None
            if union is not None:
                shapely.prepare(union)
            self._lazy_coverage = (covers, union)
        return self._lazy_coverage

    def _to_wgs84(self, crs_text: str) -> Transformer | None:
        if crs_text not in self._lazy_to_wgs84:
            crs = CRS.from_user_input(crs_text)
            self._lazy_to_wgs84[crs_text] = (None if crs.to_epsg() == 4326 else
                                             Transformer.from_crs(crs, "EPSG:4326", always_xy=True))
        return self._lazy_to_wgs84[crs_text]

    def _index(self, crs_text: str) -> _Index:
        index = self._lazy_indexes.get(crs_text)
        if index is not None:
            return index
        features, _ = self._data()
        vocab = self.vocabulary()
        keys = self.keys()
        geoms, tag_lists, raw_tags, fids = [], [], [], []
        for geom, tags, fid in zip(features.geometries, features.tags, features.ids):
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
                raw_tags.append(tags)
                fids.append(fid)
        garr = np.array(geoms, dtype=object)
        crs = CRS.from_user_input(crs_text)
        if garr.size and crs.to_epsg() != 4326:
            tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
            garr = shapely.transform(garr, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
            bad = ~shapely.is_valid(garr)
            if bad.any():
                garr[bad] = shapely.make_valid(garr[bad])
        index = _Index(tree=STRtree(garr), geometries=garr, tags=tag_lists,
                       table=TagTable.build(tag_lists, raw_tags, fids),
                       geographic=bool(crs.is_geographic))
        self._lazy_indexes[crs_text] = index
        return index

    def process_batch(self, batch: list[Sample], stats: StageStats) -> Iterator[Sample]:
        for sample, osm in zip(batch, self.join_many(batch)):
            sample.meta["osm"] = osm
            if self.drop_empty and not any(t["visible"] for t in osm["tags"]):
                stats.drop("no_visible_osm_tags")
                continue
            stats.n_out += 1
            yield sample

    def join(self, sample: Sample) -> dict[str, Any]:
        """The OSM statistics of one tile (the ``osm`` member of its json)."""
        return self.join_many([sample])[0]

    def join_many(self, samples: list[Sample]) -> list[dict[str, Any]]:
        """The OSM statistics of many tiles, computed together (see rsdata.osm.tilejoin):
        one index query, one clip and one measuring pass for all of them."""
        by_crs: dict[str, list[int]] = defaultdict(list)
        for i, sample in enumerate(samples):
            by_crs[sample.meta["geo"]["crs"]].append(i)
        out: list[dict[str, Any]] = [{} for _ in samples]
        for crs_text, which in by_crs.items():
            joined = self._join_crs(crs_text, [samples[i].meta["geo"] for i in which])
            for i, osm in zip(which, joined):
                out[i] = osm
        return out

    def _join_crs(self, crs_text: str, geos: list[dict[str, Any]]) -> list[dict[str, Any]]:
        index = self._index(crs_text)
        tiles = Tiles(geos)
        covers, union = self._coverage()
        wgs84 = tiles_wgs84(tiles.corners, self._to_wgs84(crs_text))
        coverage = coverage_many(wgs84, covers, union)
        pairs = clip_and_measure(index.tree, index.geometries, tiles,
                                 Thresholds(self.min_polygon, self.min_line, self.min_point))
        stats = aggregate(pairs, index.table, tiles)
        objs = objects(pairs, index.table, tiles, index.geographic) if self.keep_objects else None
        min_pixels = {"polygon": self.min_polygon, "line": self.min_line, "point": self.min_point}
        out = []
        for t, (n_features, tags) in enumerate(stats):
            osm = {"sources": list(self.source_ids), "n_features": n_features, "tags": tags,
                   "coverage": coverage[t], "min_pixels": dict(min_pixels)}
            if objs is not None:
                osm["objects"] = objs[t]
            out.append(osm)
        return out


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


def _rounded_bounds(geom: BaseGeometry | None) -> list[float] | None:
    if geom is None or geom.is_empty:
        return None
    return [round(float(v), 6) for v in geom.bounds]


def _crs_name(crs_text: str) -> str:
    try:
        crs = CRS.from_user_input(crs_text)
    except Exception:  # noqa: BLE001
        return "unknown CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]


def _jsonable(value: Any) -> Any:
    """``value`` with every mapping key as text (YAML allows ``{10: ...}`` class codes)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
