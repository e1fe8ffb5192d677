"""Executors side by side, and memory while tiling a raster far larger than RAM would like.

    python -m benchmarks.bench_executors [--quick] [--json PATH]

(a) local vs Ray on the same machine: the same recipe (tile + osm_join + template_captions +
    shards) with 2 workers on each executor, fresh output each run, best of two. Ray's cluster
    start is reported apart: a user with a running cluster does not pay it per run.
    Ray overhead = ray / local - 1 (target <= 15%).
(b) peak RSS while tiling a large raster generated on the fly (20000 x 20000 RGB, written block
    by block, tiled; --quick: 6000 x 6000), measured as the max RSS of a child process that runs
    `rsdata run` (target <= 1 GB: the tiler streams windows and never holds the raster).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = {"ray_overhead": 0.15, "peak_rss_gb": 1.0}


def write_raster(path: Path, size: int, seed: int = 0, block: int = 1024) -> None:
    """A tiled, deflated RGB GeoTIFF in UTM 34S at 2 m, written block by block (low memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32734", "transform": from_origin(330000.0, 6230000.0, 2.0, 2.0),
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
               "BIGTIFF": "IF_SAFER"}
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, size, block):
            for c0 in range(0, size, block):
                h, w = min(block, size - r0), min(block, size - c0)
                yy, xx = np.mgrid[r0:r0 + h, c0:c0 + w]
                base = (np.sin(xx / 41.0) + np.cos(yy / 57.0)) * 45 + 120
                data = np.stack([base + rng.normal(0, 6, base.shape) for _ in range(3)])
                dst.write(data.clip(0, 255).astype("uint8"), window=Window(c0, r0, w, h))


def write_osm(path: Path, size: int, n: int = 3000, seed: int = 1) -> None:
    import geopandas as gpd
    from shapely.geometry import LineString, box

    rng = np.random.default_rng(seed)
    geoms, tags = [], []
    for _ in range(n):
        x, y = 330000.0 + rng.uniform(0, size * 2.0), 6230000.0 - rng.uniform(0, size * 2.0)
        geoms.append(box(x, y, x + rng.uniform(8, 25), y + rng.uniform(8, 25)))
        tags.append({"building": "yes", "highway": None})
    for i in range(max(4, size // 256)):
        y = 6230000.0 - (i + 0.5) * size * 2.0 / max(4, size // 256)
        geoms.append(LineString([(330000.0, y), (330000.0 + size * 2.0, y + 40)]))
        tags.append({"building": None, "highway": "residential"})
    gpd.GeoDataFrame(tags, geometry=geoms, crs="EPSG:32734").to_crs(4326).to_file(path, driver="GeoJSON")


def recipe(raster: Path, osm: Path | None, partition_size: int = 32) -> dict[str, Any]:
    stages: list[dict[str, Any]] = []
    if osm is not None:
        stages = [{"type": "osm_join", "sources": [{"path": str(osm)}]},
                  {"type": "template_captions"}]
    return {"version": 1, "name": "bench", "stages": stages,
            "source": {"type": "raster", "rasters": [{"id": "big", "path": str(raster)}],
                       "tile": {"size": 256, "gsd": 2.0}, "partition_size": partition_size},
            "output": {"max_samples_per_shard": 1000}}


def timed_run(data: dict[str, Any], base: Path, out: Path, executor: str, workers: int) -> float:
    from rsdata.executors.local import run_local
    from rsdata.plan import build_plan
    from rsdata.recipe import parse_recipe

    shutil.rmtree(out, ignore_errors=True)
    plan = build_plan(parse_recipe(data, base), out)
    t0 = time.perf_counter()
    if executor == "ray":
        from rsdata.executors.ray_executor import run_ray

        run_ray(plan, workers=workers, progress=False)
    else:
        run_local(plan, workers=workers, progress=False)
    return time.perf_counter() - t0


def bench_ray(work: Path, size: int) -> dict[str, Any]:
    raster, osm = work / "ray.tif", work / "ray.geojson"
    write_raster(raster, size)
    write_osm(osm, size)
    data = recipe(raster, osm)
    local = min(timed_run(data, work, work / "out-local", "local", 2) for _ in range(2))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    startup = time.perf_counter() - t0
    try:
        distributed = min(timed_run(data, work, work / "out-ray", "ray", 2) for _ in range(2))
    finally:
        ray.shutdown()
    tiles = (size // 256) ** 2
    return {"tiles": tiles, "local_s": round(local, 2), "ray_s": round(distributed, 2),
            "ray_startup_s": round(startup, 2), "ray_overhead": round(distributed / local - 1, 3)}


CHILD = """
import json, resource, sys, time
from pathlib import Path
from rsdata.executors.local import run_local
from rsdata.plan import build_plan
from rsdata.recipe import parse_recipe
data = json.loads(sys.argv[1]); out = Path(sys.argv[2])
t0 = time.perf_counter()
result = run_local(build_plan(parse_recipe(data, out.parent), out), workers=1, progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "nsamples": result.manifest["nsamples"],
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def bench_memory(work: Path, size: int) -> dict[str, Any]:
    raster = work / "big.tif"
    t0 = time.perf_counter()
    write_raster(raster, size)
    gen_s = time.perf_counter() - t0
    data = recipe(raster, None, partition_size=256)
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(data), str(work / "out-mem")],
                          capture_output=True, text=True, check=True)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    raw_gb = size * size * 3 / 1e9
    return {"raster_px": f"{size} x {size}", "raster_uncompressed_gb": round(raw_gb, 2),
            "file_gb": round(raster.stat().st_size / 1e9, 2), "generate_s": round(gen_s, 1),
            "tiles": got["nsamples"], "seconds": round(got["seconds"], 1),
            "tiles_per_s": round(got["nsamples"] / got["seconds"], 1),
            "peak_rss_gb": round(got["maxrss_kb"] / 1e6, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_executors", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller rasters")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--ray-size", type=int, default=8192, help="raster px for local vs Ray")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rsdata-bench-exec-"))
    results: dict[str, Any] = {"date": dt.datetime.now().isoformat(timespec="seconds"),
                               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                          f"Python {platform.python_version()}"}
    try:
        if not args.skip_ray:
            results["ray"] = bench_ray(work, 2048 if args.quick else args.ray_size)
        if not args.skip_memory:
            results["memory"] = bench_memory(work, 6000 if args.quick else 20000)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    if "ray" in results:
        r = results["ray"]
        ok = r["ray_overhead"] <= TARGETS["ray_overhead"]
        rows.append(("local vs Ray, 2 workers, " + f"{r['tiles']} tiles",
                     f"local {r['local_s']} s, Ray {r['ray_s']} s (+{r['ray_startup_s']} s cluster start); "
                     f"overhead {r['ray_overhead']:+.1%}", "<= +15%", "pass" if ok else "FAIL"))
    if "memory" in results:
        m = results["memory"]
        ok = m["peak_rss_gb"] <= TARGETS["peak_rss_gb"]
        rows.append((f"peak RSS tiling {m['raster_px']} ({m['raster_uncompressed_gb']} GB raw)",
                     f"{m['peak_rss_gb']} GB ({m['tiles']} tiles, {m['tiles_per_s']} tiles/s)", "<= 1 GB",
                     "pass" if ok else "FAIL"))
    print("| measurement | value | target | |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n{results['date']}; {results['machine']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
