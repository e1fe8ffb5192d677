"""rsdata side by side with what a user would pick otherwise: same tiles, same machine, one run.

    python -m benchmarks.bench_peers [--quick] [--json PATH] [--parts tiling,join,shards]
                                     [--torchgeo-python PATH] [--repeats N] [--keep]

Inputs are bench_spine's (seeded, generated into a temp dir deleted at the end): an RGB uint8
GeoTIFF in UTM 34S at 2.5 m (8192 px = 1024 tiles of 256 px; ``--quick``: 3072 px = 144 tiles)
and an OSM GeoJSON over it (buildings, roads, farmland, ponds). Three comparisons, each reported
as a ratio **rsdata / peer** of throughput (> 1: rsdata is faster):

* **tiling** — rsdata's raster source + shard writer (``build_plan`` excluded, then
  ``run_local(workers=1)`` with no stages: read + mask + JPEG q90 + metadata + validated json +
  tar shards + manifest) vs torchgeo (``RasterDataset`` + ``GridGeoSampler`` through a
  ``DataLoader`` with ``num_workers=0``, float32 tensor back to uint8, Pillow JPEG q90,
  ``webdataset.TarWriter`` of jpg + json bounds). torchgeo needs torchvision, which needs another
  torch than the one rsdata's environment pins, so it runs in a child process with the
  interpreter of ``.venv-peers`` (``bash benchmarks/peers_env.sh``) or ``--torchgeo-python``;
  it times itself after its imports. Both sides write a tar per 1000 tiles. A few tiles' pixels
  are hashed on both sides: the peer must have read exactly the same tiles.
* **OSM join** — rsdata's ``osm_join`` stage (``OsmJoin.join_many`` per partition of 64 tiles,
  per-tag count, count of objects, visibility, area, length, 3×3 cells, position, coverage) vs a
  straightforward geopandas join (the GeoJSON read and reprojected once; per tile: ``sindex``
  query, ``gpd.clip`` to the tile, then per tag the count of clipped features, their area and
  length). The setup (reading the file, the index) is timed apart on both sides. The per-tag
  results are compared tile by tile: count mismatches, the largest area-share and length
  differences, and each area difference beyond rounding is explained or flagged.
* **shards** — rsdata's ``ShardWriter`` (schema-validated json, temp file + fsync + rename,
  sha256 while writing) vs ``webdataset.ShardWriter`` (``encoder=False``, same mtime) on the same
  joined samples, 1000 per shard; also rsdata without validation. The shards are compared byte
  for byte (sha256).

``--parts probes`` (opt-in) measures the per-core rates that benchmarks/README.md's "Scale on
paper" extrapolates from: the tile stage + shards on a uint8 GeoTIFF, a uint16 GeoTIFF and a
uint16 lossless JPEG 2000 (Sentinel-2's delivery format) cut from the same raster, and the OSM
join's cost when one lake polygon of 1,000 or 100,000 vertices crosses many tiles.

A peer whose package is missing is skipped with a message saying how to install it; the rest
still runs. Timings are best of ``--repeats`` (default 2), interleaved; each records the cores
other processes kept busy meanwhile (the machine may be shared).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_spine import (
    EPSG,
    FULL,
    GSD,
    JPEG_QUALITY,
    QUICK,
    TILE,
    X0,
    Y0,
    Meter,
    Sizes,
    best,
    log,
    machine,
    markdown,
    row,
    run_floor,
    run_spine,
    spine_features,
    spine_recipe,
    stop_forkserver,
    tile_windows,
    warm_cache,
    write_geojson,
    write_raster,
)

ROOT = Path(__file__).resolve().parent.parent
PEER_SCRIPT = Path(__file__).resolve().parent / "_peer_torchgeo.py"
PEERS_VENV_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
PARTITION = 64  # tiles per partition (rsdata's default, and its OSM join's batch)
SHARD_SAMPLES = 1000
SHARD_BYTES = 256 * 10**6
PARTS = ("tiling", "join", "shards")  # the default; "probes" is opt-in
# rsdata rounds area_m2 and length_m to 0.1 (m², m) in the json: equal up to half of that
AREA_TOL_M2 = 0.051
LENGTH_TOL_M = 0.051


# ==============================================================================================
# OSM join: the geopandas peer and the agreement of the two
# ==============================================================================================
TagStats = dict[str, dict[str, float]]  # per tag ("key=value"): count, area_m2, length_m


class GeopandasJoin:
    """The straightforward geopandas join: per tile, ``sindex`` query + ``gpd.clip``, then per
    tag the number of clipped features, their area (polygons) and length (lines), in the
    tile's CRS units (metres here)."""

    def __init__(self, geojson: Path, crs: Any, keys: Sequence[str]) -> None:
        import geopandas as gpd

        gdf = gpd.read_file(geojson).to_crs(crs)
        tags = np.full(len(gdf), None, dtype=object)
        for key in keys:  # a feature is named by the first of ``keys`` it has
            if key in gdf.columns:
                vals = gdf[key]
                has = vals.notna().to_numpy() & np.equal(tags, None)
                tags[has] = [f"{key}={str(v).split(';')[0].strip()}" for v in vals[has]]
        gdf["tag"] = tags
        self.gdf = gdf[gdf["tag"].notna()][["tag", "geometry"]].reset_index(drop=True)
        self.sindex = self.gdf.sindex  # built now, not on the first query

    def join(self, bounds: tuple[float, float, float, float]) -> TagStats:
        import geopandas as gpd
        import shapely

        box = shapely.box(*bounds)
        idx = self.sindex.query(box, predicate="intersects")
        if not len(idx):
            return {}
        clipped = gpd.clip(self.gdf.iloc[idx], box)
        clipped = clipped[~clipped.geometry.is_empty]
        kind = clipped.geom_type
        poly = kind.isin(["Polygon", "MultiPolygon"]).to_numpy()
        line = kind.isin(["LineString", "MultiLineString"]).to_numpy()
        area = np.where(poly, clipped.geometry.area.to_numpy(), 0.0)
        length = np.where(line, clipped.geometry.length.to_numpy(), 0.0)
        out: TagStats = {}
        for tag, rows in clipped.groupby("tag").indices.items():
            out[str(tag)] = {"count": float(len(rows)), "area_m2": float(area[rows].sum()),
                             "length_m": float(length[rows].sum())}
        return out

    def union_area(self, bounds: tuple[float, float, float, float], tag: str) -> float:
        """Area of the union of ``tag``'s polygons clipped to the tile (overlaps once)."""
        import geopandas as gpd
        import shapely

        box = shapely.box(*bounds)
        sub = self.gdf.iloc[self.sindex.query(box, predicate="intersects")]
        sub = gpd.clip(sub[sub["tag"] == tag], box)
        polys = sub[sub.geom_type.isin(["Polygon", "MultiPolygon"])].geometry.to_numpy()
        return float(shapely.union_all(polys).area) if len(polys) else 0.0


def rsdata_tag_stats(osm: Mapping[str, Any]) -> TagStats:
    """The per-tag figures of one tile's ``meta["osm"]`` that the geopandas peer also computes."""
    return {t["tag"]: {"count": float(t["count"]), "area_m2": float(t["area_m2"]),
                       "length_m": float(t["length_m"])} for t in osm["tags"]}


@dataclass
class Agreement:
    """How the per-tag figures of two joins agree, tile by tile."""

    tiles: int = 0
    pairs: int = 0  # (tile, tag) pairs found by both
    only_ours: list[tuple[int, str]] = field(default_factory=list)
    only_peer: list[tuple[int, str]] = field(default_factory=list)
    count_mismatches: list[tuple[int, str, float, float]] = field(default_factory=list)
    area_mismatches: list[tuple[int, str, float, float]] = field(default_factory=list)
    length_mismatches: list[tuple[int, str, float, float]] = field(default_factory=list)
    max_share_diff: float = 0.0  # largest |area share ours - peer|
    max_share_diff_within_tol: float = 0.0  # the same over pairs whose areas agree to rounding
    max_area_rel_diff: float = 0.0  # largest |a - b| / max(a, b) where either is >= 1 m²
    max_length_rel_diff: float = 0.0  # the same for lengths >= 1 m
    max_length_diff_m: float = 0.0  # largest |length ours - peer|

    def summary(self) -> dict[str, Any]:
        return {"tiles": self.tiles, "pairs": self.pairs,
                "only_rsdata": len(self.only_ours), "only_peer": len(self.only_peer),
                "only_rsdata_tags": sorted({t for _, t in self.only_ours}),
                "only_peer_tags": sorted({t for _, t in self.only_peer}),
                "count_mismatches": len(self.count_mismatches),
                "area_mismatches": len(self.area_mismatches),
                "length_mismatches": len(self.length_mismatches),
                "max_area_share_diff": self.max_share_diff,
                "max_area_rel_diff": self.max_area_rel_diff,
                "max_length_rel_diff": self.max_length_rel_diff,
                "max_length_diff_m": self.max_length_diff_m}


def compare_joins(ours: Sequence[TagStats], peer: Sequence[TagStats],
                  tile_area_m2: Sequence[float]) -> Agreement:
    """Tile by tile and tag by tag: counts must be equal; areas and lengths equal up to the
    rounding of rsdata's json (0.1 m², 0.1 m); area shares are compared as area / tile area."""
    if not len(ours) == len(peer) == len(tile_area_m2):
        raise ValueError(f"tile counts differ: {len(ours)}, {len(peer)}, {len(tile_area_m2)}")
    ag = Agreement(tiles=len(ours))
    for t, (a, b, tile_area) in enumerate(zip(ours, peer, tile_area_m2)):
        ag.only_ours += [(t, tag) for tag in sorted(set(a) - set(b))]
        ag.only_peer += [(t, tag) for tag in sorted(set(b) - set(a))]
        for tag in sorted(set(a) & set(b)):
            x, y = a[tag], b[tag]
            ag.pairs += 1
            if x["count"] != y["count"]:
                ag.count_mismatches.append((t, tag, x["count"], y["count"]))
            da = abs(x["area_m2"] - y["area_m2"])
            if da > AREA_TOL_M2:
                ag.area_mismatches.append((t, tag, x["area_m2"], y["area_m2"]))
            else:
                ag.max_share_diff_within_tol = max(ag.max_share_diff_within_tol, da / tile_area)
            ag.max_share_diff = max(ag.max_share_diff, da / tile_area)
            if max(x["area_m2"], y["area_m2"]) >= 1.0:
                ag.max_area_rel_diff = max(ag.max_area_rel_diff,
                                           da / max(x["area_m2"], y["area_m2"]))
            dl = abs(x["length_m"] - y["length_m"])
            ag.max_length_diff_m = max(ag.max_length_diff_m, dl)
            if dl > LENGTH_TOL_M:
                ag.length_mismatches.append((t, tag, x["length_m"], y["length_m"]))
            if max(x["length_m"], y["length_m"]) >= 1.0:
                ag.max_length_rel_diff = max(ag.max_length_rel_diff,
                                             dl / max(x["length_m"], y["length_m"]))
    return ag


def explain_area_mismatches(ag: Agreement, union_area: Callable[[int, str], float],
                            tile_area_m2: Sequence[float]) -> dict[str, Any]:
    """Each area difference beyond rounding: is it the overlap of polygons of one tag, which
    rsdata unions (counted once) and a plain per-feature sum counts twice? ``union_area(tile,
    tag)`` gives the peer's area with overlaps counted once; a difference is explained when
    that equals rsdata's area (up to rounding) and the plain sum is larger. Also returns the
    largest area-share difference left once the explained ones use the union."""
    overlap, unexplained = 0, []
    residual = 0.0
    for t, tag, ours, theirs in ag.area_mismatches:
        union = union_area(t, tag)
        if abs(union - ours) <= AREA_TOL_M2 and theirs > ours:
            overlap += 1
            residual = max(residual, abs(union - ours) / tile_area_m2[t])
        else:
            unexplained.append({"tile": t, "tag": tag, "rsdata_m2": ours, "peer_m2": theirs,
                                "peer_union_m2": union})
            residual = max(residual, abs(theirs - ours) / tile_area_m2[t])
    return {"overlap_counted_twice_by_peer": overlap, "unexplained": unexplained,
            "max_area_share_diff_with_union": max(residual, ag.max_share_diff_within_tol)}


# ==============================================================================================
# the three comparisons
# ==============================================================================================
def tiling(tif: Path, work: Path, repeats: int, peer_python: str | None, skip_reason: str,
           quick: bool) -> dict[str, Any]:
    """rsdata raster source + writer (run_local, no stages) vs torchgeo in a child process."""
    windows = tile_windows(tif, GSD)
    out: dict[str, Any] = {"tiles": len(windows)}
    runs, floors = [], []
    peer: dict[str, Any] | None = None
    for rep in range(repeats):
        warm_cache(tif)
        floors.append(run_floor(tif, windows, work / "floor", PARTITION))
        runs.append(run_spine(tif, None, work, GSD, workers=1, part_size=PARTITION))
        log(f"tiling rep {rep + 1}: rsdata {runs[-1]['tiles_per_s']:.1f} tiles/s "
            f"(floor {floors[-1]['tiles_per_s']:.1f})")
        if rep == 0 and peer_python:
            peer = torchgeo_peer(peer_python, tif, work, 1 if quick else 2)
    out["rsdata"] = best(runs)
    out["floor"] = best(floors)
    out["rsdata_vs_floor"] = out["rsdata"]["tiles_per_s"] / out["floor"]["tiles_per_s"]
    if peer is None:
        out["torchgeo"] = {"skipped": skip_reason}
        return out
    if "error" in peer:
        out["torchgeo"] = {"skipped": peer["error"]}
        return out
    peer["same_tiles"] = check_same_tiles(tif, peer["checks"])
    peer["tiles_match"] = peer["best"]["tiles"] == len(windows)
    out["torchgeo"] = peer
    out["ratio"] = out["rsdata"]["tiles_per_s"] / peer["best"]["tiles_per_s"]
    out["ratio_cpu"] = (max(r["tiles_per_cpu_s"] for r in runs)
                        / max(r["tiles_per_cpu_s"] for r in peer["runs"]))
    out["ratio_with_setup"] = (out["rsdata"]["tiles_per_s"]
                               / (peer["best"]["tiles"]
                                  / (peer["best"]["seconds"] + peer["best"]["setup_s"])))
    return out


def torchgeo_peer(python: str, tif: Path, work: Path, repeats: int) -> dict[str, Any]:
    n_tiles = len(tile_windows(tif, GSD))
    check = sorted({0, n_tiles // 2, n_tiles - 1})
    cmd = [python, str(PEER_SCRIPT), "--tif", str(tif), "--out", str(work / "torchgeo"),
           "--tile", str(TILE), "--quality", str(JPEG_QUALITY), "--repeats", str(repeats),
           "--shard-size", str(SHARD_SAMPLES), "--check", ",".join(map(str, check))]
    log("tiling: torchgeo peer in " + python)
    try:
        with Meter() as meter:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"error": "skipped: the torchgeo peer ran for more than 30 minutes"}
    finally:
        shutil.rmtree(work / "torchgeo", ignore_errors=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": f"skipped: the torchgeo peer failed (exit {proc.returncode}): "
                         + " / ".join(tail)}
    try:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": "skipped: the torchgeo peer printed no result: "
                         + proc.stdout.strip()[-200:]}
    res["process_wall_s"] = meter.seconds
    res["others_cores"] = meter.others_cores
    log(f"tiling: torchgeo {res['best']['tiles_per_s']:.1f} tiles/s "
        f"(imports {res['import_s']:.1f} s, setup {res['best']['setup_s']:.2f} s)")
    return res


def check_same_tiles(tif: Path, checks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The peer's tiles, located by their bounds, against rasterio's read of the same window:
    the md5 of the uint8 pixels must match (no resampling, no shift)."""
    import rasterio
    from rasterio.windows import Window

    same = 0
    with rasterio.open(tif) as src:
        for c in checks:
            minx, _, _, maxy = c["bounds"]
            col = (minx - X0) / GSD
            row_ = (Y0 - maxy) / GSD
            data = src.read([1, 2, 3], window=Window(col, row_, TILE, TILE))
            same += hashlib.md5(np.ascontiguousarray(data).tobytes()).hexdigest() == c["md5"]
    return {"checked": len(checks), "identical": same}


def join_samples(tif: Path, work: Path) -> tuple[list[Any], Any]:
    """Every tile of the raster as an rsdata sample (the tile stage's output), and the raster's
    info."""
    from rsdata.recipe import parse_recipe
    from rsdata.sources.base import Partition
    from rsdata.sources.raster import RasterBlock, RasterSource, plan_raster
    from rsdata.stats import StageStats

    recipe = parse_recipe(spine_recipe(tif, None, work / "unused", GSD), base_dir=work)
    cfg = recipe.source
    prov = {"display_path": tif.name, "sha256": "0" * 64, "license": "bench",
            "attribution": "bench"}
    source = RasterSource(cfg, "raster")
    info, windows = plan_raster(cfg["rasters"][0], tif, source.settings, prov)
    samples = list(source.read(Partition("peers", "raster", len(windows),
                                         RasterBlock(info, windows)), StageStats("tile")))
    return samples, info


def osm_join(tif: Path, geojson: Path, work: Path, repeats: int) -> dict[str, Any]:
    from rsdata.osm.join import KEY_PRIORITY, OsmJoin
    from rsdata.stage import RunContext

    samples, info = join_samples(tif, work)
    n = len(samples)
    bounds = [tuple(s.meta["geo"]["bounds"]) for s in samples]
    tile_area = [(b[2] - b[0]) * (b[3] - b[1]) for b in bounds]
    state = Path(tempfile.mkdtemp(prefix="join-state-", dir=work))
    stage = OsmJoin({"sources": [{"path": str(geojson)}]})
    ctx = RunContext(base_dir=work, state_dir=state,
                     footprints_wgs84=[tuple(info.extra["bounds_wgs84"])],
                     footprint_crs=[info.crs_wkt])
    t = time.perf_counter()
    stage.prepare(ctx)  # read + check + cache the OSM file (the driver's part)
    stage.join_many(samples[:1])  # reprojects the features, builds the STRtree (a worker's)
    ours_setup = time.perf_counter() - t
    t = time.perf_counter()
    peer = GeopandasJoin(geojson, f"EPSG:{EPSG}", KEY_PRIORITY)
    peer_setup = time.perf_counter() - t

    ours_runs, peer_runs = [], []
    osm: list[dict[str, Any]] = []
    theirs: list[TagStats] = []
    for rep in range(repeats):
        gc.collect()
        with Meter() as m:
            osm = [o for i in range(0, n, PARTITION) for o in stage.join_many(samples[i:i + PARTITION])]
        ours_runs.append({"seconds": m.seconds, "cpu_s": m.cpu_s, "others_cores": m.others_cores,
                          "ms_per_tile": m.seconds * 1000 / n})
        gc.collect()
        with Meter() as m:
            theirs = [peer.join(b) for b in bounds]
        peer_runs.append({"seconds": m.seconds, "cpu_s": m.cpu_s, "others_cores": m.others_cores,
                          "ms_per_tile": m.seconds * 1000 / n})
        log(f"join rep {rep + 1}: rsdata {ours_runs[-1]['ms_per_tile']:.2f} ms/tile, geopandas "
            f"{peer_runs[-1]['ms_per_tile']:.2f} ms/tile")
    shutil.rmtree(state, ignore_errors=True)
    for s, o in zip(samples, osm):
        s.meta["osm"] = o
    ours = [rsdata_tag_stats(o) for o in osm]
    ag = compare_joins(ours, theirs, tile_area)
    explained = explain_area_mismatches(ag, lambda t, tag: peer.union_area(bounds[t], tag),
                                        tile_area)
    count_examples = [{"tile": t, "tag": tag, "rsdata": a, "peer": b}
                      for t, tag, a, b in ag.count_mismatches[:5]]
    length_examples = [{"tile": t, "tag": tag, "rsdata": a, "peer": b}
                       for t, tag, a, b in ag.length_mismatches[:5]]
    r_best, p_best = best(ours_runs), best(peer_runs)
    features = sum(o["n_features"] for o in osm)
    return {"tiles": n, "features_touching_tiles": features,
            "rsdata": {**r_best, "setup_s": ours_setup},
            "geopandas": {**p_best, "setup_s": peer_setup},
            "ratio": p_best["ms_per_tile"] / r_best["ms_per_tile"],
            "ratio_cpu": p_best["cpu_s"] / r_best["cpu_s"],
            "agreement": {**ag.summary(), "area_mismatch_explanation": explained,
                          "count_mismatch_examples": count_examples,
                          "length_mismatch_examples": length_examples},
            "_samples": samples}


@contextlib.contextmanager
def _no_fsync(active: bool) -> Iterator[None]:
    """A diagnostic only: the shard writer with its fsyncs (shard file, folder) turned into
    no-ops, to show what durability costs on this disk. Restored on exit."""
    if not active:
        yield
        return
    import rsdata.corpus.writer as writer_module

    fsync, fsync_dir = os.fsync, writer_module.fsync_dir
    os.fsync = lambda fd: None  # type: ignore[assignment]
    writer_module.fsync_dir = lambda path: None  # type: ignore[assignment]
    try:
        yield
    finally:
        os.fsync, writer_module.fsync_dir = fsync, fsync_dir


def shards(samples: list[Any], work: Path, repeats: int) -> dict[str, Any]:
    """rsdata's ShardWriter vs webdataset.ShardWriter on the same samples; bytes compared."""
    from rsdata.corpus.writer import TAR_MTIME, ShardWriter

    wds_missing = ""
    try:
        import webdataset as wds
    except ImportError as exc:
        wds = None
        wds_missing = f"skipped: webdataset is not installed ({exc}): pip install webdataset"
    n = len(samples)
    out: dict[str, Any] = {"samples": n}
    runs: dict[str, list[dict[str, Any]]] = {"rsdata": [], "rsdata_no_validation": [],
                                            "rsdata_no_validation_no_fsync": [],
                                            "webdataset": []}
    digests: dict[str, list[str]] = {}
    variants = (("rsdata", True, True), ("rsdata_no_validation", False, True),
                ("rsdata_no_validation_no_fsync", False, False))
    for rep in range(repeats):
        for name, validate, durable in variants:
            d = Path(tempfile.mkdtemp(prefix="rs-shards-", dir=work))
            gc.collect()
            with Meter() as m, _no_fsync(not durable):
                w = ShardWriter(d, "peers", SHARD_SAMPLES, SHARD_BYTES, validate=validate)
                for s in samples:
                    w.write(s)
                written = w.close()
            runs[name].append({"seconds": m.seconds, "samples_per_s": n / m.seconds,
                               "samples_per_cpu_s": n / max(m.cpu_s, 1e-9),
                               "others_cores": m.others_cores, "shards": len(written),
                               "mb": sum(x["bytes"] for x in written) / 1e6})
            digests[name] = [x["sha256"] for x in written]
            shutil.rmtree(d, ignore_errors=True)
        if wds is not None:
            d = Path(tempfile.mkdtemp(prefix="wds-shards-", dir=work))
            gc.collect()
            with Meter() as m:
                w = wds.ShardWriter(str(d / "peer-%05d.tar"), maxcount=SHARD_SAMPLES,
                                    maxsize=SHARD_BYTES, verbose=0, encoder=False, mtime=TAR_MTIME)
                for s in samples:
                    w.write(s.to_wds())
                w.close()
            files = sorted(d.glob("peer-*.tar"))
            runs["webdataset"].append({"seconds": m.seconds, "samples_per_s": n / m.seconds,
                                       "samples_per_cpu_s": n / max(m.cpu_s, 1e-9),
                                       "others_cores": m.others_cores, "shards": len(files),
                                       "mb": sum(f.stat().st_size for f in files) / 1e6})
            digests["webdataset"] = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
            shutil.rmtree(d, ignore_errors=True)
        log(f"shards rep {rep + 1}: " + ", ".join(
            f"{k} {v[-1]['samples_per_s']:.0f} samples/s" for k, v in runs.items() if v))
    for name, r in runs.items():
        if r:
            out[name] = best(r)
    if wds is None:
        out["webdataset"] = {"skipped": wds_missing}
        return out
    out["ratio"] = out["rsdata"]["samples_per_s"] / out["webdataset"]["samples_per_s"]
    out["ratio_cpu"] = (max(r["samples_per_cpu_s"] for r in runs["rsdata"])
                        / max(r["samples_per_cpu_s"] for r in runs["webdataset"]))
    out["ratio_no_validation_cpu"] = (
        max(r["samples_per_cpu_s"] for r in runs["rsdata_no_validation"])
        / max(r["samples_per_cpu_s"] for r in runs["webdataset"]))
    out["ratio_no_validation"] = (out["rsdata_no_validation"]["samples_per_s"]
                                  / out["webdataset"]["samples_per_s"])
    out["ratio_no_validation_no_fsync"] = (out["rsdata_no_validation_no_fsync"]["samples_per_s"]
                                           / out["webdataset"]["samples_per_s"])
    out["byte_identical"] = (digests["rsdata"] == digests["webdataset"]
                             == digests["rsdata_no_validation_no_fsync"])
    out["shards_compared"] = len(digests["rsdata"])
    return out


# ==============================================================================================
# probes for "Scale on paper" (opt-in: --parts probes)
# ==============================================================================================
PROBE_PX = 4096  # a 4096² crop of the bench raster: 256 tiles


def write_probe_rasters(tif: Path, work: Path, px: int) -> dict[str, Path]:
    """The top-left px² of the bench raster as uint8 GeoTIFF, as uint16 GeoTIFF (values
    x 16 + 100, like reflectances) and as uint16 lossless JPEG 2000 in 1024 px blocks (how
    Sentinel-2 products are delivered)."""
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.windows import Window

    with rasterio.open(tif) as src:
        data = src.read(window=Window(0, 0, px, px))
        prof = src.profile.copy()
    prof.update(width=px, height=px)
    out = {"uint8_gtiff": work / "probe-u8.tif", "uint16_gtiff": work / "probe-u16.tif",
           "uint16_jp2": work / "probe-u16.jp2"}
    with rasterio.open(out["uint8_gtiff"], "w", **prof) as dst:
        dst.write(data)
    u16 = data.astype(np.uint16) * 16 + 100
    prof16 = {**prof, "dtype": "uint16", "photometric": "MINISBLACK"}
    rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    with rasterio.open(out["uint16_gtiff"], "w", **prof16) as dst:
        dst.write(u16)
        dst.colorinterp = rgb
    jp2 = {"driver": "JP2OpenJPEG", "width": px, "height": px, "count": 3,
           "dtype": "uint16", "crs": prof["crs"], "transform": prof["transform"],
           "REVERSIBLE": "YES", "QUALITY": "100", "BLOCKXSIZE": "1024", "BLOCKYSIZE": "1024"}
    with rasterio.open(out["uint16_jp2"], "w", **jp2) as dst:
        dst.write(u16)
        dst.colorinterp = rgb
    return out


def big_polygon(vertices: int, cx: float, cy: float, radius: float, seed: int) -> Any:
    """A lake-like polygon (pixel coordinates): a noisy circle of ``vertices`` vertices."""
    import shapely

    rng = np.random.default_rng(seed)
    ang = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = radius * (1 + 0.08 * np.sin(7 * ang) + 0.01 * rng.standard_normal(vertices))
    return shapely.Polygon(np.column_stack([cx + r * np.cos(ang), cy + r * np.sin(ang)]))


def probes(tif: Path, work: Path, repeats: int, seed: int) -> dict[str, Any]:
    """Per-core rates the scale estimate needs: rsdata's tile stage + shards on uint8 GeoTIFF,
    uint16 GeoTIFF (percentile stretch to 8 bit) and uint16 JPEG 2000; and the OSM join's cost
    when one huge polygon (a lake, a forest) crosses many tiles, by its vertex count."""
    from rsdata.osm.join import OsmJoin
    from rsdata.stage import RunContext

    from benchmarks.bench_spine import Features

    import rasterio

    with rasterio.open(tif) as src:
        px = min(PROBE_PX, src.width, src.height) // TILE * TILE
    rasters = write_probe_rasters(tif, work, px)
    out: dict[str, Any] = {"tiles": (px // TILE) ** 2, "formats": {}}
    for name, path in rasters.items():
        runs = []
        for _ in range(repeats):
            runs.append(run_spine(path, None, work, GSD, workers=1, part_size=PARTITION))
        b = best(runs)
        out["formats"][name] = {"tiles_per_s": b["tiles_per_s"],
                                "tiles_per_cpu_s": max(r["tiles_per_cpu_s"] for r in runs),
                                "others_cores": b["others_cores"], "mb": path.stat().st_size / 1e6}
        log(f"probe {name}: {b['tiles_per_s']:.1f} tiles/s, "
            f"{out['formats'][name]['tiles_per_cpu_s']:.1f} tiles per CPU s")
    samples, info = join_samples(rasters["uint8_gtiff"], work)
    out["big_polygon"] = {}
    for vertices in (1_000, 100_000):
        # centred on the probe raster, radius 0.4 of its width: crosses ~40 tiles' edges
        poly = big_polygon(vertices, px / 2, px / 2, 0.4 * px, seed)
        gj = work / f"lake-{vertices}.geojson"
        write_geojson(gj, Features([poly], [{"natural": "water"}]))
        stage = OsmJoin({"sources": [{"path": str(gj)}]})
        state = Path(tempfile.mkdtemp(prefix="probe-state-", dir=work))
        stage.prepare(RunContext(base_dir=work, state_dir=state,
                                 footprints_wgs84=[tuple(info.extra["bounds_wgs84"])],
                                 footprint_crs=[info.crs_wkt]))
        stage.join_many(samples[:1])
        cpu = []
        for _ in range(repeats):
            with Meter() as m:
                osm = [o for i in range(0, len(samples), PARTITION)
                       for o in stage.join_many(samples[i:i + PARTITION])]
            cpu.append(m.cpu_s)
        touched = sum(1 for o in osm if o["n_features"])
        out["big_polygon"][str(vertices)] = {"ms_per_tile": min(cpu) * 1000 / len(samples),
                                             "tiles_touched": touched}
        shutil.rmtree(state, ignore_errors=True)
        log(f"probe lake of {vertices} vertices: {min(cpu) * 1000 / len(samples):.2f} CPU ms/tile "
            f"({touched} of {len(samples)} tiles touched)")
    return out


# ==============================================================================================
# report
# ==============================================================================================
def find_torchgeo(explicit: str | None) -> tuple[str | None, str]:
    """The interpreter to run the torchgeo peer with, or None and why not."""
    if explicit:
        return explicit, ""
    try:
        import torchgeo  # noqa: F401

        return sys.executable, ""
    except Exception as exc:  # noqa: BLE001 - ImportError, or torchvision failing to load
        here = f"{type(exc).__name__}: {exc}".splitlines()[0]
    if PEERS_VENV_PYTHON.exists():
        return str(PEERS_VENV_PYTHON), ""
    return None, (f"skipped: torchgeo does not import here ({here}) and there is "
                  f"no {PEERS_VENV_PYTHON.relative_to(ROOT)}; build it with "
                  "`bash benchmarks/peers_env.sh` (torchgeo needs torchvision, which needs "
                  "torch==2.14.1, not the CPU torch==2.13.0 rsdata's environment pins), or pass "
                  "--torchgeo-python")


def build_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "tiling" in res:
        t = res["tiling"]
        rows += [row(f"tiling: rsdata raster source + shards, workers=1, {t['tiles']} tiles "
                     "[tiles/s]", t["rsdata"]["tiles_per_s"]),
                 row("tiling: bare I/O floor (read+mask+JPEG+tar) [tiles/s]",
                     t["floor"]["tiles_per_s"]),
                 row("tiling: rsdata / floor", t["rsdata_vs_floor"], "{:.2f}")]
        tg = t["torchgeo"]
        if "skipped" in tg:
            rows.append(row("tiling: torchgeo RasterDataset + GridGeoSampler + DataLoader [tiles/s]",
                            tg["skipped"]))
        else:
            same = tg["same_tiles"]
            rows += [
                row("tiling: torchgeo RasterDataset + GridGeoSampler + DataLoader "
                    f"(num_workers=0), JPEG + tar [tiles/s]", tg["best"]["tiles_per_s"]),
                row("tiling: **ratio rsdata / torchgeo** (tiles/s)", t["ratio"], "{:.2f}",
                    ">= 1", t["ratio"] >= 1),
                row("tiling: ratio by CPU time (tiles per CPU second; less noise-sensitive)",
                    t["ratio_cpu"], "{:.2f}"),
                row("tiling: ratio incl. torchgeo's dataset/sampler setup (rsdata's plan "
                    "excluded)", t["ratio_with_setup"], "{:.2f}"),
                row("tiling: torchgeo imports (torch, torchvision, torchgeo) / setup [s]",
                    f"{tg['import_s']:.1f} / {tg['best']['setup_s']:.2f}"),
                row("tiling: same tiles (peer tiles found by bounds, pixels md5-identical)",
                    f"{same['identical']}/{same['checked']}, tile counts equal: "
                    f"{tg['tiles_match']}", ok=same["identical"] == same["checked"]
                    and tg["tiles_match"]),
                row("tiling: other processes' load during rsdata / torchgeo [cores]",
                    f"{t['rsdata']['others_cores']:.2f} / {tg['others_cores']:.2f}")]
    if "join" in res:
        j = res["join"]
        a = j["agreement"]
        ex = a["area_mismatch_explanation"]
        rows += [
            row(f"OSM join: rsdata osm_join, {j['tiles']} tiles [ms/tile]",
                j["rsdata"]["ms_per_tile"], "{:.2f}"),
            row("OSM join: geopandas sindex + gpd.clip + groupby per tile [ms/tile]",
                j["geopandas"]["ms_per_tile"], "{:.2f}"),
            row("OSM join: **ratio rsdata / geopandas** (tiles/s)", j["ratio"], "{:.1f}",
                ">= 1", j["ratio"] >= 1),
            row("OSM join: ratio by CPU time", j["ratio_cpu"], "{:.1f}"),
            row("OSM join: setup rsdata (read+cache+index) / geopandas (read+reproject+sindex) [s]",
                f"{j['rsdata']['setup_s']:.2f} / {j['geopandas']['setup_s']:.2f}"),
            row("OSM join agreement: (tile, tag) pairs compared / only rsdata / only geopandas",
                f"{a['pairs']} / {a['only_rsdata']} / {a['only_peer']}"
                + (f" (tags only in geopandas: {', '.join(a['only_peer_tags'])})"
                   if a["only_peer_tags"] else "")),
            row("OSM join agreement: count mismatches", a["count_mismatches"], "{:d}", "0",
                a["count_mismatches"] == 0),
            row("OSM join agreement: max abs. area-share difference (all pairs / with the peer's "
                "union where polygons of a tag overlap)",
                f"{a['max_area_share_diff']:.2e} / {ex['max_area_share_diff_with_union']:.2e}"),
            row("OSM join agreement: max relative area difference (areas >= 1 m²)",
                a["max_area_rel_diff"], "{:.2e}"),
            row("OSM join agreement: length differences beyond rounding (0.05 m) / max "
                "abs. length difference [m]",
                f"{a['length_mismatches']} / {a['max_length_diff_m']:.3f}",
                ok=a["length_mismatches"] == 0),
            row("OSM join agreement: area differences beyond rounding / explained by overlapping "
                "polygons (peer sums them, rsdata unions) / unexplained",
                f"{a['area_mismatches']} / {ex['overlap_counted_twice_by_peer']} / "
                f"{len(ex['unexplained'])}", ok=not ex["unexplained"]),
            row("OSM join: other processes' load during rsdata / geopandas [cores]",
                f"{j['rsdata']['others_cores']:.2f} / {j['geopandas']['others_cores']:.2f}")]
    if "probes" in res:
        pr = res["probes"]
        for name, f in pr["formats"].items():
            rows.append(row(f"probe: rsdata tile stage + shards, {name.replace('_', ' ')}, "
                            f"{pr['tiles']} tiles [tiles/s; tiles per CPU s]",
                            f"{f['tiles_per_s']:.0f}; {f['tiles_per_cpu_s']:.0f}"))
        for v, f in pr["big_polygon"].items():
            rows.append(row(f"probe: OSM join, one lake polygon of {int(v):,} vertices over "
                            f"{f['tiles_touched']} of {pr['tiles']} tiles [CPU ms/tile]",
                            f["ms_per_tile"], "{:.2f}"))
    if "shards" in res:
        s = res["shards"]
        rows += [row(f"shards: rsdata ShardWriter (validated json, fsync, sha256), {s['samples']} "
                     "samples [samples/s]", s["rsdata"]["samples_per_s"], "{:.0f}"),
                 row("shards: rsdata ShardWriter without validation [samples/s]",
                     s["rsdata_no_validation"]["samples_per_s"], "{:.0f}"),
                 row("shards: rsdata ShardWriter without validation, fsync made a no-op "
                     "(diagnostic) [samples/s]",
                     s["rsdata_no_validation_no_fsync"]["samples_per_s"], "{:.0f}")]
        if "skipped" in s["webdataset"]:
            rows.append(row("shards: webdataset ShardWriter", s["webdataset"]["skipped"]))
        else:
            rows += [row("shards: webdataset ShardWriter (encoder=False) [samples/s]",
                         s["webdataset"]["samples_per_s"], "{:.0f}"),
                     row("shards: **ratio rsdata / webdataset** (samples/s)", s["ratio"], "{:.2f}",
                         ">= 1", s["ratio"] >= 1),
                     row("shards: ratio by CPU time (with / without rsdata's validation; "
                         "fsync waits for the disk, not the CPU)",
                         f"{s['ratio_cpu']:.2f} / {s['ratio_no_validation_cpu']:.2f}"),
                     row("shards: ratio without rsdata's validation / also without fsync",
                         f"{s['ratio_no_validation']:.2f} / "
                         f"{s['ratio_no_validation_no_fsync']:.2f}"),
                     row(f"shards: byte-identical ({s['shards_compared']} shards, sha256)",
                         str(s["byte_identical"]), ok=s["byte_identical"])]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_peers",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="3072 px raster (144 tiles), 1 repeat, torchgeo only with --torchgeo-python")
    ap.add_argument("--size", type=int, help="raster width/height in px (multiple of 256)")
    ap.add_argument("--repeats", type=int, help="runs per measurement, best taken (default 2)")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"which comparisons to run (default {','.join(PARTS)}; 'probes' adds "
                         "the per-core rates of benchmarks/README.md's 'Scale on paper')")
    ap.add_argument("--torchgeo-python", metavar="PATH",
                    help="interpreter with torchgeo for the tiling peer (default: this one if "
                         "torchgeo imports, else .venv-peers/bin/python if present)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--tmpdir", type=Path, help="where to put the temp data")
    ap.add_argument("--keep", action="store_true", help="keep the temp data (prints where)")
    args = ap.parse_args(argv)

    sz: Sizes = QUICK if args.quick else FULL
    if args.size:
        if args.size % TILE:
            ap.error(f"--size must be a multiple of {TILE}")
        sz = Sizes(**{**sz.__dict__, "raster_px": args.size})
    repeats = max(1, args.repeats or (1 if args.quick else 2))
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - set(PARTS) - {"probes"}:
        ap.error(f"--parts takes {', '.join(PARTS)} and/or probes, not {args.parts!r}")
    if "shards" in parts and "join" not in parts:
        parts.insert(0, "join")  # the shards are written from the joined samples
    peer_python, skip_reason = (None, "not asked for")
    if "tiling" in parts and args.quick and not args.torchgeo_python:
        # its imports alone (torch, torchvision) take 7-14 s: too much for a smoke run
        skip_reason = ("skipped with --quick (torchgeo's imports alone take 7-14 s); pass "
                       "--torchgeo-python .venv-peers/bin/python to include it")
        log(skip_reason)
    elif "tiling" in parts:
        peer_python, skip_reason = find_torchgeo(args.torchgeo_python)
        if skip_reason:
            log(skip_reason)

    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = machine()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="rsdata-peers-", dir=args.tmpdir))
    res: dict[str, Any] = {"machine": info,
                           "config": {"raster_px": sz.raster_px, "tile": TILE, "gsd": GSD,
                                      "epsg": EPSG, "jpeg_quality": JPEG_QUALITY,
                                      "repeats": repeats, "seed": args.seed, "parts": parts}}
    try:
        rng = np.random.default_rng(args.seed)
        t = time.perf_counter()
        feats = spine_features(rng, sz)
        geojson = work / "osm.geojson"
        write_geojson(geojson, feats)
        tif = work / "bench.tif"
        write_raster(tif, feats, sz, args.seed)
        res["inputs"] = {"raster_px": sz.raster_px, "osm_features": len(feats),
                         "generate_s": time.perf_counter() - t}
        log(f"inputs: {sz.raster_px}² px GeoTIFF, {len(feats)} OSM features "
            f"({res['inputs']['generate_s']:.1f} s)")
        warm_cache(tif)
        run_floor(tif, tile_windows(tif, GSD)[:16], work / "warm-floor", PARTITION)  # imports
        if "tiling" in parts:
            res["tiling"] = tiling(tif, work, repeats, peer_python, skip_reason, args.quick)
        samples: list[Any] = []
        if "join" in parts:
            res["join"] = osm_join(tif, geojson, work, repeats)
            samples = res["join"].pop("_samples")
        if "probes" in parts:
            res["probes"] = probes(tif, work, repeats, args.seed)
        if "shards" in parts:
            res["shards"] = shards(samples, work, max(repeats, 2) if args.quick else 5)
    finally:
        stop_forkserver()
        if args.keep:
            log(f"kept temp data in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    rows = build_rows(res)
    res["table"] = rows
    info["loadavg_end"] = list(os.getloadavg())
    info["total_seconds"] = round(time.perf_counter() - started, 1)
    print()
    print(f"## rsdata vs peers{' (--quick)' if args.quick else ''}")
    print()
    print(f"Inputs: {sz.raster_px}² px RGB uint8 GeoTIFF (EPSG:{EPSG}, {GSD} m, tiled {TILE}), "
          f"{math.ceil(sz.raster_px / TILE) ** 2} tiles of {TILE} px, "
          f"{res['inputs']['osm_features']} OSM features. Ratios: rsdata throughput / peer's "
          f"(> 1: rsdata faster). Best of {repeats} runs.")
    print()
    print(markdown(rows))
    print()
    print(f"Machine: {info['nproc']} CPUs usable, {info['cpu_model']}; Python {info['python']}; "
          f"{info['date']}; load average {info['loadavg_start'][0]:.2f} at start, "
          f"{info['loadavg_end'][0]:.2f} at end; total {info['total_seconds']:.0f} s.")
    if "tiling" in res and "versions" in res["tiling"]["torchgeo"]:
        v = res["tiling"]["torchgeo"]["versions"]
        print("torchgeo side: " + ", ".join(f"{k} {x}" for k, x in v.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1, default=str))
        print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
