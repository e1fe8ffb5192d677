"""Throughput of the rsdata spine against a bare I/O floor, OSM-join scaling, and 2 workers vs 1.

    python -m benchmarks.bench_spine [--quick] [--json PATH] [--profile] [--parts a,b,c]
                                     [--wait-quiet SECONDS]

Everything runs in ONE process, on the SAME synthetic inputs, generated (seeded) into a temp
dir that is deleted at the end:

* a tiled RGB uint8 GeoTIFF in UTM 34S (EPSG:32734) at 2.5 m, so a 2.5 m recipe reads it
  without resampling (8192 x 8192 px = 1024 tiles of 256 px; ``--quick``: 3072 px = 144 tiles).
  Content: smooth land-cover patches + mid/fine texture + the buildings, roads, fields and
  ponds of the OSM file burnt in, so JPEG sizes and costs look like aerial photos;
* an OSM GeoJSON (EPSG:4326) over it: a few thousand buildings (clustered in "towns" and
  scattered), road polylines, farmland and water polygons.

Measurements (each at least twice, best taken; the file is cached in RAM first):

(a) floor = one process, for every tile: rasterio windowed read + dataset_mask + Pillow JPEG
    (q90) + webdataset TarWriter of jpg+txt+json; spine = ``run_local(plan, workers=1)`` on the
    same tiles with osm_join + template_captions + shards, and without the two stages; a
    step-by-step ms/tile breakdown; the same pair at 3.0 m (bilinear resampling on read).
(b) the ``osm_join`` stage on a fixed block of tiles (one partition), with N features in the block, with
    10xN where the extra 9xN lie elsewhere on the raster (a spatial index keeps this flat), and
    with 10xN inside the block (denser tiles: expected to cost more).
(c) ``run_local(workers=2)`` vs ``workers=1`` (full spine, fresh output dir each run; each
    2-worker run starts its pool cold, as ``rsdata run --workers 2`` does).

The machine may be shared: every run records how many cores other processes kept busy
meanwhile (``/proc/stat``); ``--wait-quiet`` waits for a calmer moment first.

It prints a markdown table (measurement | value | target | pass/fail) and the machine it ran on.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as _dt
import gc
import io
import json
import math
import os
import platform
import pstats
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks._load import busy_s as _busy_s

TILE = 256
GSD = 2.5
RESAMPLED_GSD = 3.0
EPSG = 32734  # WGS 84 / UTM zone 34S (Western Cape)
X0, Y0 = 320000.0, 6230000.0  # west and north edges of the raster, metres
JPEG_QUALITY = 90
DEFAULT_PARTITION_SIZE = 64

TARGETS = {"spine_vs_floor": 0.8, "join_outside_ratio": 1.5, "workers2_speedup": 1.8,
           "join_vs_floor": 0.25}


@dataclass(frozen=True)
class Sizes:
    raster_px: int  # width = height of the test raster
    towns: int  # building clusters of the spine OSM file
    town_buildings: int
    scattered_buildings: int
    roads: int
    fields: int
    ponds: int
    join_block: int  # (b): a block of join_block x join_block tiles at the top-left corner
    join_buildings_per_tile: int  # (b): N = block tiles x (buildings + roads) per tile
    join_roads_per_tile: float
    repeats: int
    partition_size: int  # tiles per partition (source.partition_size)


FULL = Sizes(raster_px=8192, towns=12, town_buildings=250, scattered_buildings=1000, roads=160,
             fields=40, ponds=12, join_block=10, join_buildings_per_tile=20, join_roads_per_tile=1.0,
             repeats=2, partition_size=64)
QUICK = Sizes(raster_px=3072, towns=3, town_buildings=120, scattered_buildings=150, roads=20,
              fields=6, ponds=3, join_block=4, join_buildings_per_tile=20, join_roads_per_tile=1.0,
              repeats=2, partition_size=16)


class Meter:
    """Wall time, the CPU time of this process group (this process, spawned workers, a fork
    server and the workers it forked and reaped) and the average number of cores other
    processes kept busy meanwhile (from /proc/stat): how noisy a measurement was."""

    def __enter__(self) -> "Meter":
        self._wall, self._busy, self._own = time.perf_counter(), _busy_s(), _group_cpu_s()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_s = _group_cpu_s() - self._own
        busy = _busy_s() - self._busy
        self.others_cores = max(0.0, busy - self.cpu_s) / self.seconds


def _group_cpu_s() -> float:
    """CPU seconds (own + reaped children) of the live processes in this process group."""
    if not Path("/proc/self/stat").exists():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system
    from benchmarks._load import proc_stats

    pgrp, ticks, total = os.getpgrp(), os.sysconf("SC_CLK_TCK"), 0
    for fields in proc_stats().values():
        if int(fields[2]) == pgrp:
            total += sum(int(v) for v in fields[11:15])
    return total / ticks


def busy_cores(seconds: float = 1.0) -> float:
    """Cores the whole machine keeps busy over ``seconds`` (this process idles meanwhile)."""
    b0, t0 = _busy_s(), time.perf_counter()
    time.sleep(seconds)
    return (_busy_s() - b0) / (time.perf_counter() - t0)


def wait_quiet(limit_s: float, threshold: float = 0.3) -> float:
    """Wait up to ``limit_s`` for other processes to use fewer than ``threshold`` cores."""
    deadline = time.perf_counter() + limit_s
    load = busy_cores(1.0)
    while load > threshold and time.perf_counter() < deadline:
        log(f"waiting for a quieter machine: other processes use {load:.2f} cores")
        load = busy_cores(5.0)
    return load


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ==============================================================================================
# synthetic inputs
# ==============================================================================================
@dataclass
class Features:
    """Features in raster pixel coordinates (x right, y down) with their OSM tags."""

    geoms: list[Any]
    tags: list[dict[str, str]]

    def __add__(self, other: "Features") -> "Features":
        return Features(self.geoms + other.geoms, self.tags + other.tags)

    def __len__(self) -> int:
        return len(self.geoms)


def _rect_polygons(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray,
                   angle: np.ndarray) -> list[Any]:
    import shapely

    local = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5]])
    xs = local[None, :, 0] * w[:, None]
    ys = local[None, :, 1] * h[:, None]
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    coords = np.stack([cx[:, None] + xs * c - ys * s, cy[:, None] + xs * s + ys * c], axis=-1)
    return list(shapely.polygons(coords))


BUILDING_VALUES = ["yes", "yes", "yes", "house", "house", "residential", "shed", "farm_auxiliary"]
ROAD_VALUES = ["residential", "residential", "track", "tertiary", "unclassified", "service"]


def buildings_in(rng: np.random.Generator, n: int, box: tuple[float, float, float, float],
                 avoid: Any = None, clusters: list[tuple[float, float, float]] | None = None
                 ) -> Features:
    """``n`` small rotated rectangles (3-9 px = 7.5-22.5 m) inside ``box`` (pixels), none touching
    ``avoid`` (a shapely geometry), uniform or around ``clusters`` [(cx, cy, sigma)]."""
    import shapely

    x0, y0, x1, y1 = box
    out: list[Any] = []
    while len(out) < n:
        m = (n - len(out)) * 2 + 16
        if clusters:
            k = rng.integers(0, len(clusters), m)
            cxy = np.array([clusters[i][:2] for i in k])
            sig = np.array([clusters[i][2] for i in k])
            cx = cxy[:, 0] + rng.normal(0, 1, m) * sig
            cy = cxy[:, 1] + rng.normal(0, 1, m) * sig
        else:
            cx = rng.uniform(x0, x1, m)
            cy = rng.uniform(y0, y1, m)
        w = rng.uniform(3, 9, m)
        h = rng.uniform(3, 9, m)
        polys = _rect_polygons(cx, cy, w, h, rng.uniform(0, math.pi / 2, m))
        arr = np.array(polys, dtype=object)
        inside = shapely.contains(shapely.box(x0, y0, x1, y1), arr)
        if avoid is not None:
            inside &= ~shapely.intersects(avoid, arr)
        out.extend(arr[inside].tolist()[: n - len(out)])
    values = rng.choice(BUILDING_VALUES, n)
    return Features(out, [{"building": str(v)} for v in values])


def roads_in(rng: np.random.Generator, n: int, box: tuple[float, float, float, float],
             avoid: Any = None, min_len: float = 40.0, seg: tuple[float, float] = (40, 140),
             nseg: tuple[int, int] = (4, 14)) -> Features:
    """``n`` wandering polylines clipped to ``box`` (and outside ``avoid``)."""
    import shapely

    x0, y0, x1, y1 = box
    clip = shapely.box(x0, y0, x1, y1)
    if avoid is not None:
        clip = clip.difference(avoid)
    out: list[Any] = []
    while len(out) < n:
        k = int(rng.integers(nseg[0], nseg[1] + 1))
        heading = rng.uniform(0, 2 * math.pi)
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        pts = [(x, y)]
        for _ in range(k):
            heading += rng.normal(0, 0.35)
            step = rng.uniform(*seg)
            x, y = x + step * math.cos(heading), y + step * math.sin(heading)
            pts.append((x, y))
        line = shapely.LineString(pts).intersection(clip)
        if line.is_empty or line.length < min_len:
            continue
        parts = list(getattr(line, "geoms", [line]))
        line = max((p for p in parts if p.geom_type == "LineString"), key=lambda p: p.length,
                   default=None)
        if line is None or line.length < min_len:
            continue
        out.append(line)
    values = rng.choice(ROAD_VALUES, n)
    return Features(out, [{"highway": str(v)} for v in values])


def areas_in(rng: np.random.Generator, n: int, box: tuple[float, float, float, float],
             tags: dict[str, str], size: tuple[float, float]) -> Features:
    x0, y0, x1, y1 = box
    cx = rng.uniform(x0 + size[1] / 2, x1 - size[1] / 2, n)
    cy = rng.uniform(y0 + size[1] / 2, y1 - size[1] / 2, n)
    polys = _rect_polygons(cx, cy, rng.uniform(*size, n), rng.uniform(*size, n),
                           rng.uniform(0, math.pi / 2, n))
    return Features(polys, [dict(tags) for _ in range(n)])


def spine_features(rng: np.random.Generator, sz: Sizes) -> Features:
    s = float(sz.raster_px)
    full = (0.0, 0.0, s, s)
    towns = [(rng.uniform(0.1, 0.9) * s, rng.uniform(0.1, 0.9) * s, rng.uniform(80, 300))
             for _ in range(sz.towns)]
    return (areas_in(rng, sz.fields, full, {"landuse": "farmland"}, (120, 420))
            + areas_in(rng, sz.ponds, full, {"natural": "water"}, (20, 80))
            + roads_in(rng, sz.roads, full)
            + buildings_in(rng, sz.towns * sz.town_buildings, full, clusters=towns)
            + buildings_in(rng, sz.scattered_buildings, full))


def px_to_utm(geoms: list[Any]) -> np.ndarray:
    import shapely

    return shapely.transform(np.array(geoms, dtype=object),
                             lambda c: np.column_stack([X0 + c[:, 0] * GSD, Y0 - c[:, 1] * GSD]))


def write_geojson(path: Path, feats: Features) -> None:
    """The features as an OSM-like GeoJSON in EPSG:4326 (lon, lat)."""
    import shapely
    from pyproj import Transformer

    tr = Transformer.from_crs(EPSG, 4326, always_xy=True)
    wgs = shapely.transform(px_to_utm(feats.geoms),
                            lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
    texts = shapely.to_geojson(wgs)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"type":"FeatureCollection","features":[\n')
        fh.write(",\n".join(
            f'{{"type":"Feature","properties":{json.dumps({"osm_id": i, **t})},"geometry":{g}}}'
            for i, (g, t) in enumerate(zip(texts, feats.tags))))
        fh.write("\n]}\n")


def _bilinear(grid: np.ndarray, r0: int, r1: int, ncols: int, cell: float) -> np.ndarray:
    """Rows r0..r1 (all ncols columns) of ``grid`` (values at cell centres, ``cell`` px apart)
    upsampled bilinearly; grid (gh, gw, C) -> (r1 - r0, ncols, C) float32."""
    ys = np.clip((np.arange(r0, r1) + 0.5) / cell - 0.5, 0, grid.shape[0] - 1.0001)
    xs = np.clip((np.arange(ncols) + 0.5) / cell - 0.5, 0, grid.shape[1] - 1.0001)
    iy, ix = ys.astype(np.intp), xs.astype(np.intp)
    fy = (ys - iy).astype(np.float32)[:, None, None]
    fx = (xs - ix).astype(np.float32)[None, :, None]
    g0, g1 = grid[iy], grid[iy + 1]
    top = g0[:, ix] * (1 - fx) + g0[:, ix + 1] * fx
    bot = g1[:, ix] * (1 - fx) + g1[:, ix + 1] * fx
    return top * (1 - fy) + bot * fy


# label classes burnt into the image: colour (RGB) and opacity
CLASS_COLOURS = {1: ((150, 160, 90), 0.45),   # farmland: tint
                 2: ((40, 60, 80), 0.9),      # water
                 3: ((135, 130, 120), 0.9),   # road
                 4: ((165, 75, 60), 0.9),     # red roof
                 5: ((120, 120, 125), 0.9),   # grey roof
                 6: ((225, 225, 220), 0.9)}   # white roof


def write_raster(path: Path, feats: Features, sz: Sizes, seed: int) -> None:
    """A tiled, deflate-compressed RGB GeoTIFF with aerial-photo-like content."""
    import rasterio
    import shapely
    from rasterio.features import rasterize
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    s = sz.raster_px
    transform = from_origin(X0, Y0, GSD, GSD)
    # land-cover palette: dry grass, green, soil, scrub
    palette = np.array([[170, 160, 120], [110, 130, 80], [150, 120, 90], [95, 100, 75],
                        [185, 175, 150]], np.float32)
    coarse = palette[rng.integers(0, len(palette), (s // 384 + 3, s // 384 + 3))]
    coarse += rng.normal(0, 8, coarse.shape).astype(np.float32)
    mid = rng.normal(0, 14, (s // 24 + 3, s // 24 + 3, 1)).astype(np.float32)
    fine = rng.normal(0, 9, (s // 3 + 3, s // 3 + 3, 1)).astype(np.float32)
    # labels: fields, ponds, roads (buffered to ~3 px), buildings (3 roof colours)
    utm = px_to_utm(feats.geoms)
    shapes = []
    for g, t in zip(utm, feats.tags):
        if "landuse" in t:
            shapes.append((g, 1))
        elif "natural" in t:
            shapes.append((g, 2))
        elif "highway" in t:
            shapes.append((shapely.buffer(g, 1.5 * GSD), 3))
    roof = rng.integers(4, 7, len(utm))
    shapes += [(g, int(r)) for g, t, r in zip(utm, feats.tags, roof) if "building" in t]
    labels = rasterize(shapes, out_shape=(s, s), transform=transform, fill=0, dtype="uint8")
    profile = {"driver": "GTiff", "width": s, "height": s, "count": 3, "dtype": "uint8",
               "crs": f"EPSG:{EPSG}", "transform": transform, "tiled": True, "blockxsize": TILE,
               "blockysize": TILE, "compress": "deflate", "zlevel": 1, "interleave": "pixel",
               "photometric": "RGB"}
    strip = 512
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, s, strip):
            r1 = min(s, r0 + strip)
            img = _bilinear(coarse, r0, r1, s, 384.0)
            img += _bilinear(mid, r0, r1, s, 24.0)
            img += _bilinear(fine, r0, r1, s, 3.0)
            img += rng.normal(0, 3.5, (r1 - r0, s, 1)).astype(np.float32)
            lab = labels[r0:r1]
            for cls, (colour, alpha) in CLASS_COLOURS.items():
                m = lab == cls
                if m.any():
                    img[m] = img[m] * (1 - alpha) + np.array(colour, np.float32) * alpha
            out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
            dst.write(np.moveaxis(out, -1, 0), window=Window(0, r0, s, r1 - r0))


def warm_cache(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(1 << 23):
            pass


# ==============================================================================================
# (a) floor and spine
# ==============================================================================================
def tile_windows(tif: Path, gsd: float) -> list[Any]:
    """The spine's own tile grid (``plan_windows``) for this raster, as rasterio Windows."""
    import rasterio
    from rasterio.windows import Window

    from rsdata.sources.raster import plan_windows

    with rasterio.open(tif) as src:
        wins, _ = plan_windows(src.crs, src.transform, src.width, src.height, TILE, gsd, 0)
    return [Window(w.col_off, w.row_off, w.width, w.height) for w in wins]


def run_floor(tif: Path, windows: list[Any], out_dir: Path, part_size: int = DEFAULT_PARTITION_SIZE
              ) -> dict[str, Any]:
    """The bare I/O floor: read + mask + JPEG + tar (jpg, txt, json), nothing else."""
    import rasterio
    import webdataset as wds
    from PIL import Image
    from rasterio.enums import Resampling

    out_dir.mkdir(parents=True, exist_ok=True)
    nbytes = 0
    tar = None
    with Meter() as meter, rasterio.open(tif) as src:
        for i, win in enumerate(windows):
            if i % part_size == 0:
                if tar is not None:
                    tar.close()
                tar = wds.TarWriter(str(out_dir / f"floor-{i // part_size:05d}.tar"),
                                    encoder=False)
            data = src.read([1, 2, 3], window=win, out_shape=(3, TILE, TILE),
                            resampling=Resampling.bilinear)
            mask = src.dataset_mask(window=win, out_shape=(TILE, TILE))
            rgb = np.ascontiguousarray(np.moveaxis(data, 0, -1))
            valid = mask > 0
            if not valid.all():
                rgb[~valid] = 0
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="JPEG", quality=JPEG_QUALITY)
            jpg = buf.getvalue()
            nbytes += len(jpg)
            key = f"floor_{i:06d}"
            meta = {"key": key, "window": [win.col_off, win.row_off, win.width, win.height]}
            tar.write({"__key__": key, "jpg": jpg, "txt": b"An aerial image.",
                       "json": json.dumps(meta).encode()})
        if tar is not None:
            tar.close()
    shutil.rmtree(out_dir)
    return {"seconds": meter.seconds, "tiles": len(windows),
            "tiles_per_s": len(windows) / meter.seconds, "cpu_s": meter.cpu_s,
            "tiles_per_cpu_s": len(windows) / meter.cpu_s, "others_cores": meter.others_cores,
            "jpeg_kb_mean": nbytes / max(1, len(windows)) / 1024}


def spine_recipe(tif: Path, geojson: Path | None, out_dir: Path, gsd: float,
                 part_size: int = DEFAULT_PARTITION_SIZE) -> dict[str, Any]:
    stages: list[dict[str, Any]] = []
    if geojson is not None:
        stages = [{"type": "osm_join", "sources": [{"path": str(geojson)}],
                   "min_pixels": {"polygon": 16, "line": 8, "point": None}},
                  {"type": "template_captions", "count": 3, "seed": 0}]
    return {
        "version": 1, "name": "bench-spine",
        "source": {"type": "raster", "rasters": [{"id": "bench", "path": str(tif)}],
                   "tile": {"size": TILE, "gsd": gsd, "overlap": 0, "resampling": "bilinear"},
                   "image_format": "jpg", "jpeg_quality": JPEG_QUALITY,
                   "partition_size": part_size},
        "stages": stages,
        "output": {"dir": str(out_dir), "max_samples_per_shard": 1000,
                   "max_bytes_per_shard": "256MB", "min_samples": 1},
    }


def make_plan(tif: Path, geojson: Path | None, out_dir: Path, gsd: float,
              part_size: int = DEFAULT_PARTITION_SIZE) -> Any:
    from rsdata.plan import build_plan
    from rsdata.recipe import parse_recipe

    recipe = parse_recipe(spine_recipe(tif, geojson, out_dir, gsd, part_size),
                          base_dir=out_dir.parent)
    return build_plan(recipe, out_dir=out_dir)


def stop_forkserver() -> bool:
    """Stop this process's multiprocessing fork server, if one runs, so that the next pool
    starts it again (and imports its preloaded modules) as a fresh ``rsdata run`` would."""
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver  # private API; present in CPython 3.8 to 3.13
        running = getattr(server, "_forkserver_pid", None) is not None
        server._stop()
        return running
    except Exception:  # noqa: BLE001 - another Python: measure whatever it does
        return False


def run_spine(tif: Path, geojson: Path | None, work: Path, gsd: float, workers: int = 1,
              part_size: int = DEFAULT_PARTITION_SIZE, profiler: cProfile.Profile | None = None,
              cold_pool: bool = True) -> dict[str, Any]:
    """build_plan + run_local in a fresh output dir; tiles/s counts run_local only.

    With ``workers > 1`` and ``cold_pool``, any fork server left by an earlier run is stopped
    first, so every run pays the pool start-up a command-line run pays."""
    from rsdata.executors.local import run_local

    if workers > 1 and cold_pool:
        stop_forkserver()

    out_dir = Path(tempfile.mkdtemp(prefix="spine-", dir=work))
    try:
        t0 = time.perf_counter()
        plan = make_plan(tif, geojson, out_dir, gsd, part_size)
        plan_s = time.perf_counter() - t0
        if profiler is not None:
            profiler.enable()
        with Meter() as meter:
            result = run_local(plan, workers=workers, progress=False)
        run_s = meter.seconds
        if profiler is not None:
            profiler.disable()
        m = result.manifest
        try:  # per-partition seconds from the completion markers (diagnostics only)
            part_s = [json.loads(f.read_text())["seconds"]
                      for f in (out_dir / ".rsdata" / "partitions").glob("*.json")]
        except (OSError, KeyError, ValueError):
            part_s = [float("nan")]
        return {"seconds": run_s, "plan_seconds": plan_s, "tiles": plan.n_tiles,
                "partition_seconds_sum": sum(part_s),
                "samples": m["nsamples"], "tiles_per_s": plan.n_tiles / run_s,
                "cpu_s": meter.cpu_s, "tiles_per_cpu_s": plan.n_tiles / meter.cpu_s,
                "others_cores": meter.others_cores,
                "shard_mb": sum(s["bytes"] for s in m["shards"]) / 1e6, "workers": workers}
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    b = dict(min(runs, key=lambda r: r["seconds"]))
    b["all_seconds"] = [round(r["seconds"], 3) for r in runs]
    b["all_others_cores"] = [round(r["others_cores"], 2) for r in runs]
    return b


def spine_breakdown(tif: Path, geojson: Path, work: Path, gsd: float, max_tiles: int
                    ) -> dict[str, float]:
    """ms/tile of each step of the spine, run step by step in this process on the first tiles
    (after a warm-up that builds the OSM index): where the spine's time goes."""
    from rsdata import schemas
    from rsdata.captions.templates import captions_for
    from rsdata.corpus.writer import ShardWriter
    from rsdata.sources.base import Partition
    from rsdata.sources.raster import RasterBlock
    from rsdata.stats import StageStats

    out_dir = Path(tempfile.mkdtemp(prefix="breakdown-", dir=work))
    try:
        plan = make_plan(tif, geojson, out_dir, gsd)
        osm = plan.stages[0]
        parts = plan.partitions
        tiles = [t for p in parts for t in p.payload.tiles][:max_tiles]
        source = next(iter(plan.sources.values()))
        part = Partition("bench-breakdown", source.id, len(tiles), RasterBlock(parts[0].payload.raster, tiles))
        t = time.perf_counter()
        samples = list(source.read(part, StageStats("tile")))
        t_tile = time.perf_counter() - t
        n = len(samples)
        # warm-up (a worker's first partition): builds the index, first calls of each code path
        for _ in osm(iter(samples[:DEFAULT_PARTITION_SIZE]), StageStats("osm_join")):
            pass
        def join_all(repeats: int = 3) -> tuple[float, float]:
            """Best wall and CPU seconds of the stage over all samples, as a worker runs it (an
            iterator of samples, joined per partition)."""
            walls, cpus = [], []
            for _ in range(repeats):
                t, c = time.perf_counter(), time.process_time()
                for i in range(0, n, DEFAULT_PARTITION_SIZE):
                    chunk = samples[i:i + DEFAULT_PARTITION_SIZE]
                    for _ in osm(iter(chunk), StageStats("osm_join")):
                        pass
                walls.append(time.perf_counter() - t)
                cpus.append(time.process_time() - c)
            return min(walls), min(cpus)

        t_join, c_join = join_all()
        # the same without per-object geometry (kept only when a stage or the recipe asks)
        keep = bool(getattr(osm, "keep_objects", False))
        osm.keep_objects = False
        t_join_stats, c_join_stats = join_all()
        osm.keep_objects = keep
        if keep:  # the captions read the objects: give them back
            join_all(1)
        cap_cfg = plan.recipe.stages[1]
        t = time.perf_counter()
        for smp in samples:
            for cap in captions_for(smp.meta, cap_cfg["count"], cap_cfg["seed"]):
                smp.add_caption(cap)
        t_cap = time.perf_counter() - t
        schemas.validate("sample", samples[0].meta, samples[0].key)  # builds the validator
        t = time.perf_counter()
        for smp in samples:
            schemas.validate("sample", smp.meta, smp.key)
        t_val = time.perf_counter() - t
        t = time.perf_counter()
        for smp in samples:
            smp.to_wds()
        t_wds = time.perf_counter() - t
        writer = ShardWriter(out_dir, "bench-breakdown", 1000, 1 << 30)
        t = time.perf_counter()
        for smp in samples:
            writer.write(smp)
        writer.close()
        t_write = time.perf_counter() - t
        ms = 1000.0 / n
        return {"tiles": n, "tile_stage_ms": t_tile * ms, "osm_join_ms": t_join * ms,
                "osm_join_objects_kept": float(keep), "of_which_stats_only_ms": t_join_stats * ms,
                "osm_join_cpu_ms": c_join * ms, "of_which_stats_only_cpu_ms": c_join_stats * ms,
                "captions_ms": t_cap * ms, "shard_write_ms": t_write * ms,
                "of_which_schema_validate_ms": t_val * ms, "of_which_to_wds_json_ms": t_wds * ms}
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def read_encode_ms(tif: Path, windows: list[Any]) -> float:
    """ms/tile of the floor's share of the tile stage: read + mask + JPEG, no metadata, no tar."""
    import rasterio
    from PIL import Image
    from rasterio.enums import Resampling

    with rasterio.open(tif) as src:
        t = time.perf_counter()
        for win in windows:
            data = src.read([1, 2, 3], window=win, out_shape=(3, TILE, TILE),
                            resampling=Resampling.bilinear)
            valid = src.dataset_mask(window=win, out_shape=(TILE, TILE)) > 0
            rgb = np.ascontiguousarray(np.moveaxis(data, 0, -1))
            if not valid.all():
                rgb[~valid] = 0
            Image.fromarray(rgb).save(io.BytesIO(), format="JPEG", quality=JPEG_QUALITY)
        return (time.perf_counter() - t) * 1000 / max(1, len(windows))


def worker_import_probe() -> dict[str, float]:
    """Wall time of a fresh interpreter importing what a spawned worker imports, and the share
    of webdataset (which imports torch) in it: a fixed cost each worker process pays."""
    import subprocess

    code = "import rsdata.executors.partition, rsdata.osm.join, rsdata.captions.templates"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                          text=True, check=True)
    wall = time.perf_counter() - t
    cumulative: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].strip()
            cumulative.setdefault(name, int(parts[1]) / 1e6)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = time.perf_counter() - t
    return {"wall_s": wall, "python_startup_s": bare, "webdataset_s": cumulative.get("webdataset", 0.0),
            "torch_s": cumulative.get("torch", 0.0)}


# ==============================================================================================
# (b) OSM join scaling
# ==============================================================================================
def join_features(rng: np.random.Generator, sz: Sizes, variant: str) -> Features:
    """N features inside the sample block; '10x_outside' adds 9N elsewhere on the raster,
    '10x_inside' puts 10N inside the block."""
    import shapely

    s = float(sz.raster_px)
    b = float(sz.join_block * TILE)
    block = (0.0, 0.0, b, b)
    n_tiles = sz.join_block ** 2
    nb = n_tiles * sz.join_buildings_per_tile
    nr = max(1, int(round(n_tiles * sz.join_roads_per_tile)))
    inner_rng = np.random.default_rng(rng.integers(1 << 31))
    mult = 10 if variant == "10x_inside" else 1
    feats = (roads_in(inner_rng, nr * mult, block, seg=(20, 80))
             + buildings_in(inner_rng, nb * mult, block))
    if variant == "10x_outside":
        avoid = shapely.box(-1e6, -1e6, b + 8, b + 8)  # the block plus an 8 px (20 m) margin
        feats = feats + roads_in(inner_rng, 9 * nr, (0.0, 0.0, s, s), avoid=avoid, seg=(20, 80))
        feats = feats + buildings_in(inner_rng, 9 * nb, (0.0, 0.0, s, s), avoid=avoid)
    return feats


def bench_join(tif: Path, work: Path, sz: Sizes, seed: int, repeats: int) -> dict[str, Any]:
    from rsdata.osm.join import OsmJoin
    from rsdata.recipe import parse_recipe
    from rsdata.sources.base import Partition
    from rsdata.sources.raster import RasterBlock, RasterSource, plan_raster
    from rsdata.stage import RunContext
    from rsdata.stats import StageStats

    recipe = parse_recipe(spine_recipe(tif, None, work / "unused", GSD), base_dir=work)
    src_cfg = recipe.source
    prov = {"display_path": tif.name, "sha256": "0" * 64, "license": "bench", "attribution": "bench"}
    source = RasterSource(src_cfg, "raster")
    info, windows = plan_raster(src_cfg["rasters"][0], tif, source.settings, prov)
    sel = [w for w in windows if w.col < sz.join_block and w.row < sz.join_block]
    samples = list(source.read(Partition("join", "raster", len(sel), RasterBlock(info, sel)),
                               StageStats("tile")))
    rng = np.random.default_rng(seed + 1)
    out: dict[str, Any] = {"tiles": len(samples)}
    for variant in ("1x", "10x_outside", "10x_inside"):
        feats = join_features(rng, sz, variant)
        gj = work / f"join-{variant}.geojson"
        write_geojson(gj, feats)
        state = Path(tempfile.mkdtemp(prefix="join-state-", dir=work))
        stage = OsmJoin({"sources": [{"path": str(gj)}]})
        ctx = RunContext(base_dir=work, state_dir=state,
                         footprints_wgs84=[tuple(info.extra["bounds_wgs84"])],
                         footprint_crs=[info.crs_wkt])
        t = time.perf_counter()
        report = stage.prepare(ctx)
        prepare_s = time.perf_counter() - t
        t = time.perf_counter()
        stage.join(samples[0])  # the first call reprojects the features and builds the STRtree
        index_s = time.perf_counter() - t
        times, cpu = [], []
        nfeat = 0
        for _ in range(repeats):
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            # the stage as a worker runs it: the block's samples are one partition
            nfeat = sum(smp.meta["osm"]["n_features"]
                        for smp in stage(iter(samples), StageStats("osm_join")))
            cpu.append(time.process_time() - c)
            times.append(time.perf_counter() - t)
        # CPU time of this (single-threaded) loop: what other processes on a shared machine
        # disturb least; wall time is kept too
        out[variant] = {"features_total": report["features"], "prepare_s": prepare_s,
                        "first_join_s": index_s,
                        "ms_per_tile": min(cpu) * 1000 / len(samples),
                        "wall_ms_per_tile": min(times) * 1000 / len(samples),
                        "all_cpu_ms_per_tile": [round(x * 1000 / len(samples), 3) for x in cpu],
                        "all_wall_ms_per_tile": [round(x * 1000 / len(samples), 3) for x in times],
                        "features_per_tile": nfeat / len(samples)}
        shutil.rmtree(state, ignore_errors=True)
        log(f"  join {variant}: {report['features']} features, "
            f"{out[variant]['ms_per_tile']:.2f} ms/tile, {nfeat / len(samples):.1f} features/tile")
    out["ratio_10x_outside"] = out["10x_outside"]["ms_per_tile"] / out["1x"]["ms_per_tile"]
    out["ratio_10x_inside"] = out["10x_inside"]["ms_per_tile"] / out["1x"]["ms_per_tile"]
    return out


# ==============================================================================================
# report
# ==============================================================================================
def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("numpy", "rasterio", "shapely", "PIL", "webdataset", "pyproj"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except ImportError:
            pass
    try:
        import rasterio

        versions["GDAL"] = rasterio.__gdal_version__
    except ImportError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {"nproc": affinity, "cpu_count": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version(), "platform": platform.platform(),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "loadavg_start": list(os.getloadavg()), "versions": versions}


def row(name: str, value: float | str, fmt: str = "{:.1f}", target: str = "",
        ok: bool | None = None) -> dict[str, Any]:
    text = fmt.format(value) if isinstance(value, (int, float)) else value
    verdict = "" if ok is None else ("pass" if ok else "FAIL")
    return {"measurement": name, "value": value if isinstance(value, (int, float)) else None,
            "shown": text, "target": target, "result": verdict or "info"}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| measurement | value | target | pass/fail |", "|---|---|---|---|"]
    lines += [f"| {r['measurement']} | {r['shown']} | {r['target']} | {r['result']} |" for r in rows]
    return "\n".join(lines)


def measure_a(tif: Path, geojson: Path, work: Path, windows: list[Any], repeats: int, ps: int,
              resampled: bool, settle: Callable[[], None]) -> dict[str, Any]:
    """(a): floor vs spine (and spine without osm/captions), interleaved so noise hits all
    alike; then the step-by-step breakdown, and optionally the resampled pair."""
    floor_runs, full_runs, bare_runs = [], [], []
    for rep in range(repeats):
        settle()
        warm_cache(tif)
        floor_runs.append(run_floor(tif, windows, work / "floor", ps))
        log(f"(a) rep {rep + 1}: floor {floor_runs[-1]['tiles_per_s']:.1f} tiles/s")
        full_runs.append(run_spine(tif, geojson, work, GSD, part_size=ps))
        log(f"(a) rep {rep + 1}: spine {full_runs[-1]['tiles_per_s']:.1f} tiles/s "
            f"(plan {full_runs[-1]['plan_seconds']:.1f} s)")
        bare_runs.append(run_spine(tif, None, work, GSD, part_size=ps))
        log(f"(a) rep {rep + 1}: spine without osm/captions {bare_runs[-1]['tiles_per_s']:.1f} tiles/s")
    floor, full, bare = best(floor_runs), best(full_runs), best(bare_runs)
    out: dict[str, Any] = {
        "floor": floor, "spine": full, "spine_bare": bare, "floor_runs": floor_runs,
        "ratio_spine_floor": full["tiles_per_s"] / floor["tiles_per_s"],
        "ratio_bare_floor": bare["tiles_per_s"] / floor["tiles_per_s"],
        "ratio_spine_floor_cpu": (max(r["tiles_per_cpu_s"] for r in full_runs)
                                  / max(r["tiles_per_cpu_s"] for r in floor_runs)),
        "osm_captions_ms_per_tile": 1000 / full["tiles_per_s"] - 1000 / bare["tiles_per_s"]}
    n_break = min(len(windows), 256)
    steps = spine_breakdown(tif, geojson, work, GSD, n_break)
    floor_share = read_encode_ms(tif, windows[:n_break])
    order = ["tiles", "tile_stage_ms", "of_which_read_mask_jpeg_ms", "osm_join_ms",
             "osm_join_objects_kept", "of_which_stats_only_ms", "osm_join_cpu_ms",
             "of_which_stats_only_cpu_ms", "captions_ms",
             "shard_write_ms", "of_which_schema_validate_ms", "of_which_to_wds_json_ms"]
    steps["of_which_read_mask_jpeg_ms"] = floor_share
    out["breakdown_ms_per_tile"] = {k: steps[k] for k in order if k in steps}
    log("(a) breakdown (ms/tile): "
        + json.dumps({k: round(v, 3) for k, v in out["breakdown_ms_per_tile"].items()}))
    if resampled:
        rwins = tile_windows(tif, RESAMPLED_GSD)
        rf, rs = [], []
        for rep in range(repeats):
            settle()
            rf.append(run_floor(tif, rwins, work / "floor", ps))
            rs.append(run_spine(tif, geojson, work, RESAMPLED_GSD, part_size=ps))
            log(f"(a') rep {rep + 1}: resampled floor {rf[-1]['tiles_per_s']:.1f}, "
                f"spine {rs[-1]['tiles_per_s']:.1f} tiles/s")
        out["resampled"] = {"gsd": RESAMPLED_GSD, "floor": best(rf), "spine": best(rs),
                            "ratio_spine_floor": best(rs)["tiles_per_s"] / best(rf)["tiles_per_s"]}
    return out


def measure_c(tif: Path, geojson: Path, work: Path, repeats: int, ps: int,
              settle: Callable[[], None]) -> dict[str, Any]:
    """(c): 2 workers vs 1, interleaved; every 2-worker run starts its pool cold (as a
    command-line run does), plus one run with the pool's fork server left up."""
    w1_runs, w2_runs = [], []
    for rep in range(repeats):
        settle()
        w1_runs.append(run_spine(tif, geojson, work, GSD, workers=1, part_size=ps))
        w2_runs.append(run_spine(tif, geojson, work, GSD, workers=2, part_size=ps))
        log(f"(c) rep {rep + 1}: 1 worker {w1_runs[-1]['tiles_per_s']:.1f}, "
            f"2 workers {w2_runs[-1]['tiles_per_s']:.1f} tiles/s")
    warm = run_spine(tif, geojson, work, GSD, workers=2, part_size=ps, cold_pool=False)
    log(f"(c) 2 workers, pool server already up: {warm['tiles_per_s']:.1f} tiles/s")
    stop_forkserver()
    w1, w2 = best(w1_runs), best(w2_runs)
    return {"workers1": w1, "workers2": w2, "workers2_warm_pool": warm,
            "speedup": w2["tiles_per_s"] / w1["tiles_per_s"],
            "speedup_warm_pool": warm["tiles_per_s"] / w1["tiles_per_s"],
            # wall time not spent in partitions: pool start-up, imports, the tail
            "overhead_s": w2["seconds"] - w2["partition_seconds_sum"] / 2,
            "partition_time_ratio": w2["partition_seconds_sum"] / w1["partition_seconds_sum"],
            "import_probe": worker_import_probe()}


def build_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "a" in results:
        a = results["a"]
        rows += [
            row(f"(a) floor: read+mask+JPEG q{JPEG_QUALITY}+tar, 1 process [tiles/s]",
                a["floor"]["tiles_per_s"]),
            row("(a) spine: tile+osm_join+template_captions+shards, workers=1 [tiles/s]",
                a["spine"]["tiles_per_s"]),
            row("(a) spine without osm_join/captions (tile+shards) [tiles/s]",
                a["spine_bare"]["tiles_per_s"]),
            row("(a) ratio spine / floor", a["ratio_spine_floor"], "{:.2f}",
                f">= {TARGETS['spine_vs_floor']}",
                a["ratio_spine_floor"] >= TARGETS["spine_vs_floor"]),
            row("(a) ratio spine / floor by process CPU time (less noise-sensitive)",
                a["ratio_spine_floor_cpu"], "{:.2f}"),
            row("(a) ratio spine without osm/captions / floor", a["ratio_bare_floor"], "{:.2f}"),
            row("(a) other processes' load during the best floor / spine runs [cores]",
                f"{a['floor']['others_cores']:.2f} / {a['spine']['others_cores']:.2f}"),
            row("(a) osm_join+captions cost (spine - spine without) [ms/tile]",
                a["osm_captions_ms_per_tile"], "{:.2f}"),
            row("(a) build_plan (hash raster, read OSM), not in tiles/s [s]",
                a["spine"]["plan_seconds"], "{:.2f}"),
        ]
        steps = a["breakdown_ms_per_tile"]
        for k, v in steps.items():
            if k.endswith("_ms"):
                name = k.removesuffix("_ms").replace("_", " ")
                rows.append(row(f"(a) step by step, {name} [ms/tile]", v, "{:.2f}"))
        kept = "with" if steps.get("osm_join_objects_kept") else "without"
        # the join's time per tile over the floor's (best runs); by CPU time too, which other
        # processes on a shared machine disturb less
        floor_ms = 1000 / a["floor"]["tiles_per_s"]
        floor_cpu_ms = 1000 / max(r["tiles_per_cpu_s"] for r in a["floor_runs"])
        for label, join_ms, base in (("wall", "osm_join_ms", floor_ms),
                                     ("CPU", "osm_join_cpu_ms", floor_cpu_ms)):
            ratio = steps[join_ms] / base
            rows.append(row(f"(a) osm_join ({kept} per-object geometry) / floor, {label} time "
                            "per tile", ratio, "{:.2f}", f"<= {TARGETS['join_vs_floor']}",
                            ratio <= TARGETS["join_vs_floor"]))
        if "of_which_stats_only_cpu_ms" in steps:
            ratio = steps["of_which_stats_only_cpu_ms"] / floor_cpu_ms
            rows.append(row("(a) osm_join statistics only / floor, CPU time per tile", ratio,
                            "{:.2f}", f"<= {TARGETS['join_vs_floor']}",
                            ratio <= TARGETS["join_vs_floor"]))
        if "resampled" in a:
            ar = a["resampled"]
            rows += [
                row(f"(a') floor at {ar['gsd']} m, bilinear [tiles/s]", ar["floor"]["tiles_per_s"]),
                row(f"(a') spine at {ar['gsd']} m, bilinear [tiles/s]", ar["spine"]["tiles_per_s"]),
                row("(a') ratio spine / floor, resampled", ar["ratio_spine_floor"], "{:.2f}",
                    f">= {TARGETS['spine_vs_floor']}",
                    ar["ratio_spine_floor"] >= TARGETS["spine_vs_floor"]),
            ]
    if "b" in results:
        b = results["b"]
        rows += [
            row(f"(b) join, N={b['1x']['features_total']} features in the {b['tiles']} tiles "
                f"({b['1x']['features_per_tile']:.0f}/tile) [CPU ms/tile]",
                b["1x"]["ms_per_tile"], "{:.2f}"),
            row(f"(b) join, 10xN: +9N outside the tiles ({b['10x_outside']['features_total']}) "
                "[CPU ms/tile]", b["10x_outside"]["ms_per_tile"], "{:.2f}"),
            row("(b) ratio 10x (outside) / 1x", b["ratio_10x_outside"], "{:.2f}",
                f"<= {TARGETS['join_outside_ratio']}",
                b["ratio_10x_outside"] <= TARGETS["join_outside_ratio"]),
            row(f"(b) join, 10xN inside the tiles ({b['10x_inside']['features_per_tile']:.0f} "
                "features/tile) [CPU ms/tile]", b["10x_inside"]["ms_per_tile"], "{:.2f}"),
            row("(b) ratio 10x (inside, denser tiles) / 1x", b["ratio_10x_inside"], "{:.2f}",
                "grows (expected)"),
            row("(b) index build (first join) 1x / 10x outside [s]",
                f"{b['1x']['first_join_s']:.2f} / {b['10x_outside']['first_join_s']:.2f}"),
        ]
    if "c" in results:
        c = results["c"]
        probe = c["import_probe"]
        rows += [
            row("(c) spine workers=1 [tiles/s]", c["workers1"]["tiles_per_s"]),
            row("(c) spine workers=2 [tiles/s]", c["workers2"]["tiles_per_s"]),
            row("(c) speedup 2 workers / 1", c["speedup"], "{:.2f}",
                f">= {TARGETS['workers2_speedup']}", c["speedup"] >= TARGETS["workers2_speedup"]),
            row("(c) other processes' load during the best 1- / 2-worker runs [cores]",
                f"{c['workers1']['others_cores']:.2f} / {c['workers2']['others_cores']:.2f}"),
            row("(c) speedup with the pool's fork server already up (long-lived driver)",
                c["speedup_warm_pool"], "{:.2f}"),
            row("(c) 2 workers: wall time outside partitions (pool start, imports, tail) [s]",
                c["overhead_s"], "{:.2f}"),
            row("(c) 2 workers: summed partition time / 1 worker's (contention)",
                c["partition_time_ratio"], "{:.2f}"),
            row("(c) fresh interpreter importing the worker modules [s] (of which webdataset)",
                f"{probe['wall_s']:.2f} ({probe['webdataset_s']:.2f})"),
        ]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_spine",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3072 px raster (144 tiles): a smoke run")
    ap.add_argument("--size", type=int, help="raster width/height in px (multiple of 256)")
    ap.add_argument("--repeats", type=int, help="runs per measurement, best taken (default 2)")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--parts", default="a,b,c",
                    help="which measurements to run, e.g. 'c' or 'a,b' (default a,b,c)")
    ap.add_argument("--no-resampled", dest="resampled", action="store_false",
                    help=f"skip floor and spine at {RESAMPLED_GSD} m (resampled on read)")
    ap.add_argument("--no-workers", action="store_true", help="skip (c), 2 workers vs 1")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile one single-worker spine run and print the hot spots")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="first wait up to SECONDS for other processes to use fewer than "
                         "--quiet-cores cores, and up to min(SECONDS, 120) before each repetition")
    ap.add_argument("--quiet-cores", type=float, default=0.3, metavar="N",
                    help="what --wait-quiet waits for (default 0.3 cores busy elsewhere)")
    ap.add_argument("--tmpdir", type=Path, help="where to put the temp data (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temp data (prints where)")
    args = ap.parse_args(argv)

    sz = QUICK if args.quick else FULL
    if args.size:
        if args.size % TILE:
            ap.error(f"--size must be a multiple of {TILE}")
        sz = Sizes(**{**asdict(sz), "raster_px": args.size})
    repeats = max(1, args.repeats or sz.repeats)
    ps = sz.partition_size
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"a", "b", "c"}:
        ap.error(f"--parts takes a, b and/or c, not {args.parts!r}")
    if args.no_workers:
        parts.discard("c")

    def settle() -> None:
        """Before a repetition: give a busy shared machine a chance to calm down."""
        if args.wait_quiet > 0:
            wait_quiet(min(args.wait_quiet, 120.0), args.quiet_cores)

    # a plain `kill` (SIGTERM) still deletes the temp data, through the finally below
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.wait_quiet > 0:
        wait_quiet(args.wait_quiet, args.quiet_cores)
    info = machine()
    info["busy_cores_at_start"] = busy_cores(1.0)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="rsdata-bench-", dir=args.tmpdir))
    results: dict[str, Any] = {
        "machine": info,
        "config": {**asdict(sz), "repeats": repeats, "seed": args.seed, "tile": TILE, "gsd": GSD,
                   "epsg": EPSG, "jpeg_quality": JPEG_QUALITY, "parts": sorted(parts)}}
    try:
        # -- inputs ------------------------------------------------------------------------------
        rng = np.random.default_rng(args.seed)
        t = time.perf_counter()
        feats = spine_features(rng, sz)
        geojson = work / "osm.geojson"
        write_geojson(geojson, feats)
        tif = work / "bench.tif"
        write_raster(tif, feats, sz, args.seed)
        gen_s = time.perf_counter() - t
        windows = tile_windows(tif, GSD)
        results["inputs"] = {"raster_px": sz.raster_px, "raster_mb": tif.stat().st_size / 1e6,
                             "tiles": len(windows), "osm_features": len(feats),
                             "osm_mb": geojson.stat().st_size / 1e6, "generate_s": gen_s}
        log(f"inputs: {sz.raster_px}x{sz.raster_px} px GeoTIFF ({tif.stat().st_size / 1e6:.0f} MB, "
            f"{len(windows)} tiles of {TILE} px), {len(feats)} OSM features, generated in {gen_s:.1f} s")
        warm_cache(tif)

        # warm-up: imports, GDAL, the OSM reader
        run_floor(tif, windows[:16], work / "warm-floor", ps)
        make_plan(tif, geojson, work / "warm-plan", GSD)
        shutil.rmtree(work / "warm-plan", ignore_errors=True)
        results["inputs"]["jpeg_kb_mean"] = run_floor(tif, windows[:64], work / "warm-floor",
                                                      ps)["jpeg_kb_mean"]

        if "a" in parts:
            results["a"] = measure_a(tif, geojson, work, windows, repeats, ps, args.resampled,
                                     settle)
        if "b" in parts:
            log("(b) OSM join scaling")
            settle()
            results["b"] = bench_join(tif, work, sz, args.seed, max(repeats, 2))
        if "c" in parts:
            results["c"] = measure_c(tif, geojson, work, repeats, ps, settle)
        if args.profile:
            prof = cProfile.Profile()
            run_spine(tif, geojson, work, GSD, part_size=ps, profiler=prof)
            buf = io.StringIO()
            st = pstats.Stats(prof, stream=buf).sort_stats("tottime")
            st.print_stats(25)
            buf.write("\n--- by cumulative time ---\n")
            st.sort_stats("cumulative").print_stats(40)
            results["profile"] = buf.getvalue()
    finally:
        stop_forkserver()
        if args.keep:
            log(f"kept temp data in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    rows = build_rows(results)
    results["table"] = rows
    info["loadavg_end"] = list(os.getloadavg())
    info["total_seconds"] = round(time.perf_counter() - started, 1)

    inp = results["inputs"]
    print()
    print(f"## rsdata spine benchmark{' (--quick)' if args.quick else ''}")
    print()
    print(f"Inputs: {inp['raster_px']}x{inp['raster_px']} px RGB uint8 GeoTIFF (EPSG:{EPSG}, "
          f"{GSD} m, tiled {TILE}, deflate; {inp['raster_mb']:.0f} MB), {inp['tiles']} tiles of "
          f"{TILE} px, mean JPEG {inp['jpeg_kb_mean']:.1f} KB; {inp['osm_features']} OSM features "
          f"(GeoJSON, EPSG:4326). Partitions of {ps} tiles. Best of {repeats} runs each.")
    print()
    print(markdown(rows))
    print()
    print(f"Machine: {info['nproc']} CPUs usable ({info['cpu_count']} online), {info['cpu_model']}; "
          f"Python {info['python']} on {info['platform']}; {info['date']}; load average "
          f"{info['loadavg_start'][0]:.2f} at start, {info['loadavg_end'][0]:.2f} at end "
          f"(cores busy just before: {info['busy_cores_at_start']:.2f}); "
          f"total {info['total_seconds']:.0f} s.")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    if "profile" in results:
        print("\n### cProfile of one spine run (workers=1)\n")
        print(results["profile"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
