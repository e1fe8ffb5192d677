"""Executors side by side (local process pool, Ray actors, Ray Data), and memory while tiling a
raster far larger than RAM would like.

    python -m benchmarks.bench_executors [--quick] [--json PATH] [--repeats N]
        [--long-seconds S] [--skip-ray] [--skip-memory] [--no-ray-data] [--ray-size PX]

Every job is the same recipe (tile + osm_join + template_captions + shards, 32 tiles per
partition) with 2 workers, into a fresh output directory each run. Each repetition runs, in this
order: local (no Ray running), Ray on a fresh local cluster, Ray on that running cluster, then
shuts Ray down; the best of ``--repeats`` is kept. Timings are wall seconds; CPU seconds are those
of this process and all its descendants (pool workers, every Ray process), and each row shows how
many cores *other* processes kept busy meanwhile.

(a) actor start: seconds from creating an actor on a running cluster (a new worker process, as a
    new run on a running cluster gets) until it has imported what its partitions run; split into
    Ray's worker boot and our imports. Plus ``python -X importtime`` of exactly what an actor
    imports (``import ray`` and the actor's modules), with any heavy module (torch, webdataset,
    pandas...) named. Target: start <= 1 s, no heavy module.
(b) the 1024-tile job (8192 px raster): local vs Ray (cluster up, actors started while the
    driver plans, as ``RayStart`` does) by run time and end to end (plan + run); Ray with actors
    started only after planning; Ray on a fresh cluster end to end (``rsdata run --executor ray``
    without ``--address``: cluster start + plan + run); Ray Data (``ray.data`` over the partitions,
    an actor pool of 2 running the same ``run_partition``: same shards). Target: Ray <= 2x local.
(c) a job of >= ``--long-seconds`` (default 60) of local wall time: the 8192 px raster listed as
    many times as the rate measured in (b) says, local vs Ray (cluster up). Target: overhead
    (ray / local - 1) <= 15%, by wall time and by CPU time.
(d) peak RSS while tiling a large raster generated on the fly (20000 x 20000 RGB, written block by
    block, tiled; --quick: 6000 x 6000), measured as the max RSS of a child process that runs
    `rsdata run` (target <= 1 GB: the tiler streams windows and never holds the raster).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks._load import busy_s

TARGETS = {"ray_overhead_long": 0.15, "ray_vs_local_1024": 2.0, "actor_start_s": 1.0,
           "peak_rss_gb": 1.0}
WORKERS = 2


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- inputs --------------------------------------------------------------------------------------

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


def recipe(raster: Path, osm: Path | None, partition_size: int = 32, copies: int = 1) -> dict[str, Any]:
    """The benchmark recipe; ``copies`` lists the raster that many times (ids big0, big1...: a
    job ``copies`` times as long, hashed once)."""
    stages: list[dict[str, Any]] = []
    if osm is not None:
        stages = [{"type": "osm_join", "sources": [{"path": str(osm)}]},
                  {"type": "template_captions"}]
    rasters = ([{"id": "big", "path": str(raster)}] if copies == 1 else
               [{"id": f"big{i}", "path": str(raster)} for i in range(copies)])
    return {"version": 1, "name": "bench", "stages": stages,
            "source": {"type": "raster", "rasters": rasters,
                       "tile": {"size": 256, "gsd": 2.0}, "partition_size": partition_size},
            "output": {"max_samples_per_shard": 1000}}


# --- measuring -----------------------------------------------------------------------------------

def _tree_cpu_s() -> float:
    """CPU seconds of this process and all its live descendants, each with its reaped children
    (Ray's worker processes lead process groups of their own, so a process group is not enough;
    a dead actor's time is in its reaper's, the raylet's, children times)."""
    ticks = os.sysconf("SC_CLK_TCK")
    from benchmarks._load import proc_stats

    parent: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for pid, fields in proc_stats().items():
        parent[pid], cpu[pid] = int(fields[1]), sum(int(v) for v in fields[11:15])
    me, total = os.getpid(), 0
    for pid, ticks_used in cpu.items():
        p, seen = pid, 0
        while p not in (me, 0, 1) and p in parent and seen < 64:
            p, seen = parent[p], seen + 1
        if p == me:
            total += ticks_used
    return total / ticks


class Meter:
    """Wall seconds, CPU seconds of this process and its descendants, and cores other processes
    kept busy meanwhile (from /proc/stat)."""

    def __enter__(self) -> Meter:
        self._cpu0 = _tree_cpu_s()
        self._wall, self._busy = time.perf_counter(), busy_s()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        busy = busy_s() - self._busy
        self.cpu_s = max(0.0, _tree_cpu_s() - self._cpu0)
        self.others = max(0.0, busy - self.cpu_s) / max(self.seconds, 1e-9)


@dataclass
class Run:
    plan_s: float  # build_plan (with Ray: after RayStart returned, overlapping the start)
    run_s: float  # the executor alone
    total_s: float  # everything the user waits for (cluster start, plan, run)
    cpu_s: float
    others: float  # cores other processes kept busy
    nsamples: int

    def as_json(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def one_run(data: dict[str, Any], base: Path, out: Path, executor: str) -> Run:
    """One job, timed: executor ``local``, ``ray`` (RayStart, then plan, then run), ``ray-late``
    (plan, then run_ray starts the actors) or ``ray-data``."""
    from rsdata.plan import build_plan
    from rsdata.recipe import parse_recipe

    shutil.rmtree(out, ignore_errors=True)
    rec = parse_recipe(data, base)
    with Meter() as m:
        t0 = time.perf_counter()
        start = None
        if executor == "ray":
            from rsdata.executors.ray_executor import RayStart

            start = RayStart(rec, WORKERS)
        t1 = time.perf_counter()
        plan = build_plan(rec, out)
        t2 = time.perf_counter()
        if executor == "local":
            from rsdata.executors.local import run_local

            result = run_local(plan, workers=WORKERS, progress=False)
        elif executor == "ray-data":
            result = run_ray_data(plan, WORKERS)
        else:
            from rsdata.executors.ray_executor import run_ray

            result = run_ray(plan, workers=WORKERS, progress=False, start=start)
        t3 = time.perf_counter()
    return Run(plan_s=t2 - t1, run_s=t3 - t2, total_s=t3 - t0, cpu_s=m.cpu_s, others=m.others,
               nsamples=result.manifest["nsamples"])


def run_ray_data(plan: Any, workers: int) -> Any:
    """The alternative tried: Ray Data over the partitions, an actor pool running the very same
    ``run_partition`` (same shards and markers), the manifest written as the Ray executor does."""
    import ray

    from rsdata.executors.common import finish_run, make_worker, pending_partitions
    from rsdata.executors.partition import Worker, run_partition

    started = time.perf_counter()
    done, todo = pending_partitions(plan)
    by_id = {p.id: p for p in todo}

    class RunPartitions:
        def __init__(self, worker: Worker) -> None:
            self.worker = worker

        def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
            return {"marker": json.dumps(run_partition(self.worker, by_id[row["id"]]))}

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ds = ray.data.from_items([{"id": p.id} for p in todo], override_num_blocks=len(todo))
    ds = ds.map(RunPartitions, fn_constructor_args=(make_worker(plan),),
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
    for row in ds.iter_rows():
        marker = json.loads(row["marker"])
        done[marker["partition"]] = marker
    return finish_run(plan, done, [], todo, 0, started, "ray-data", workers)


def actor_start(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Create WORKERS actors on the running cluster and wait until they are ready. Right after
    ``ray.init`` they take the worker processes Ray prestarted; later ones start new processes."""
    import ray

    from rsdata.executors.ray_executor import recipe_resources, start_actors, worker_modules
    from rsdata.recipe import parse_recipe

    rec = parse_recipe(data, base)
    t0 = time.perf_counter()
    actors = start_actors(ray, recipe_resources(rec), WORKERS, worker_modules(rec))
    facts = ray.get([a.ready.remote() for a in actors])
    wall = time.perf_counter() - t0
    for a in actors:
        ray.kill(a)
    boot = [f["boot_s"] for f in facts if f["boot_s"] is not None]
    return {"start_s": round(wall, 3), "boot_s": round(max(boot), 3) if boot else None,
            "import_s": round(max(f["import_s"] for f in facts), 3),
            # CPU seconds of the slowest actor from process start to ready: its start on an idle core
            "start_cpu_s": round(max(f["boot_cpu_s"] + f["import_cpu_s"] for f in facts), 3),
            "boot_cpu_s": round(max(f["boot_cpu_s"] for f in facts), 3),
            "import_cpu_s": round(max(f["import_cpu_s"] for f in facts), 3),
            "heavy": sorted({m for f in facts for m in f["heavy"]})}


def import_probe(modules: list[str]) -> dict[str, Any]:
    """``python -X importtime`` of what an actor imports: Ray's own (ray, and pyarrow, which a Ray
    worker imports where it is installed), then the actor module and the recipe's modules."""
    code = ("import ray, sys\ntry:\n    import pyarrow\nexcept ImportError:\n    pass\n"
            "from rsdata.executors.ray_actor import PartitionActor, HEAVY\n"
            f"PartitionActor({modules!r})\n"
            "print('HEAVY', ','.join(m for m in HEAVY if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                          text=True, check=True)
    top: dict[str, float] = {}
    ray_s = ours_s = 0.0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum, raw = line.split(":", 1)[1].split("|", 2)
        name = raw.strip()
        if raw[:2] == "  ":
            continue  # imported by another module; its time is in that module's cumulative
        secs = int(cum) / 1e6
        if name.split(".")[0] in ("ray", "pyarrow"):
            ray_s += secs
        else:
            ours_s += secs
            top[name] = secs
    heavy = [m for m in proc.stdout.split("HEAVY", 1)[1].strip().split(",") if m]
    return {"import_ray_s": round(ray_s, 3), "import_ours_s": round(ours_s, 3), "heavy": heavy,
            "top": {k: round(v, 3) for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:6]}}


# --- the jobs ------------------------------------------------------------------------------------

def best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.run_s)


def bench_short(work: Path, size: int, repeats: int, ray_data: bool, fresh_probe: bool) -> dict[str, Any]:
    import ray

    raster, osm = work / "ray.tif", work / "ray.geojson"
    write_raster(raster, size)
    write_osm(osm, size)
    data = recipe(raster, osm)
    runs: dict[str, list[Run]] = {k: [] for k in ("local", "ray_cold", "ray", "ray_late", "ray_data")}
    starts: list[dict[str, Any]] = []
    prestarted = None
    if fresh_probe:
        log("(a) actor start right after a fresh local cluster started")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            prestarted = actor_start(data, work)
        finally:
            ray.shutdown()
    for rep in range(repeats):
        log(f"(b) repetition {rep + 1}/{repeats}: local")
        runs["local"].append(one_run(data, work, work / "out-local", "local"))
        log("(b) Ray on a fresh cluster")
        runs["ray_cold"].append(one_run(data, work, work / "out-ray", "ray"))  # RayStart starts it
        log("(a) actor start on the running cluster")
        starts.append(actor_start(data, work))
        for kind in ("ray", "ray_late"):
            log(f"(b) {kind} on the running cluster")
            runs[kind].append(one_run(data, work, work / "out-ray", kind.replace("_", "-")))
        if ray_data and rep == 0:
            log("(b) Ray Data on the running cluster")
            runs["ray_data"].append(one_run(data, work, work / "out-ray", "ray-data"))
        ray.shutdown()
    res: dict[str, Any] = {"tiles": (size // 256) ** 2, "raster_px": size}
    for k, v in runs.items():
        if v:
            res[k] = best(v).as_json()
    res["actor_start"] = min(starts, key=lambda s: s["start_cpu_s"])
    res["actor_start_fresh_cluster"] = prestarted
    return res


def bench_long(work: Path, size: int, seconds: float, local_rate: float, repeats: int) -> dict[str, Any]:
    """A job of >= ``seconds`` of local wall time: the raster of (b) listed ``copies`` times.
    Ray twice: on a fresh cluster (end to end, cluster start included) and on that cluster."""
    import ray

    raster, osm = work / "ray.tif", work / "ray.geojson"
    tiles_per_copy = (size // 256) ** 2
    copies = max(1, math.ceil(seconds * 1.3 * local_rate / tiles_per_copy))  # (b) was the best run
    data = recipe(raster, osm, copies=copies)
    runs: dict[str, list[Run]] = {"local": [], "ray_cold": [], "ray": []}
    for rep in range(repeats):
        log(f"(c) repetition {rep + 1}/{repeats}: local, {copies * tiles_per_copy} tiles")
        runs["local"].append(one_run(data, work, work / "out-long-local", "local"))
        try:
            log("(c) Ray on a fresh cluster")
            runs["ray_cold"].append(one_run(data, work, work / "out-long-ray", "ray"))
            log("(c) Ray on the running cluster")
            runs["ray"].append(one_run(data, work, work / "out-long-ray", "ray"))
        finally:
            ray.shutdown()
    lo, cold, warm = best(runs["local"]), best(runs["ray_cold"]), best(runs["ray"])
    return {"tiles": copies * tiles_per_copy, "copies": copies, "local": lo.as_json(),
            "ray_cold": cold.as_json(), "ray": warm.as_json(),
            "overhead_wall": round(warm.run_s / lo.run_s - 1, 3),
            "overhead_cpu": round(warm.cpu_s / lo.cpu_s - 1, 3),
            "overhead_cold_wall": round(cold.total_s / lo.total_s - 1, 3),
            "overhead_cold_cpu": round(cold.cpu_s / lo.cpu_s - 1, 3)}


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


# --- report --------------------------------------------------------------------------------------

def _noise(r: dict[str, Any]) -> str:
    return f"{r['others']:.1f}"


def table(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    flag: Callable[[bool], str] = lambda ok: "pass" if ok else "FAIL"
    if "ray" in results:
        r = results["ray"]
        a, p = r["actor_start"], results.get("actor_imports", {})
        rows.append(("(a) actor start on a running cluster (new worker process), CPU s",
                     f"**{a['start_cpu_s']:.2f} CPU s** (Ray worker boot {a['boot_cpu_s']}, our imports "
                     f"{a['import_cpu_s']}): the wall time on an idle core; heavy modules: "
                     f"{', '.join(a['heavy']) or 'none'}", "<= 1 s, none",
                     flag(a["start_cpu_s"] <= TARGETS["actor_start_s"] and not a["heavy"]), "-"))
        f = r["actor_start_fresh_cluster"]
        if f:
            rows.append(("(a) actor start right after `ray.init` (Ray's prestarted worker processes)",
                         f"{f['start_s']:.2f} s wall (they may still be booting), our imports "
                         f"{f['import_cpu_s']} CPU s", "<= 1 s",
                         flag(f["start_s"] <= TARGETS["actor_start_s"]), "-"))
        rows.append(("(a) actor start on a running cluster, wall time on this machine now",
                     f"{a['start_s']:.2f} s (boot {a['boot_s']} s, imports {a['import_s']} s)",
                     "<= 1 s", flag(a["start_s"] <= TARGETS["actor_start_s"]), _noise(r["ray"])))
        if p:
            rows.append(("(a) `python -X importtime` of an actor's imports",
                         f"Ray's (ray, pyarrow) {p['import_ray_s']} s, ours {p['import_ours_s']} s "
                         f"({', '.join(f'{k} {v}' for k, v in p['top'].items())}); "
                         f"heavy: {', '.join(p['heavy']) or 'none'}", "no torch/webdataset",
                         flag(not p["heavy"]), "-"))
        lo, ray_, late, cold = r["local"], r["ray"], r["ray_late"], r["ray_cold"]
        ratio = ray_["run_s"] / lo["run_s"]
        rows.append((f"(b) {r['tiles']} tiles, run: local vs Ray (cluster up, actors started while planning)",
                     f"local {lo['run_s']:.2f} s, Ray {ray_['run_s']:.2f} s: **{ratio:.2f}x** "
                     f"(CPU {lo['cpu_s']:.1f} vs {ray_['cpu_s']:.1f} s)", "<= 2x",
                     flag(ratio <= TARGETS["ray_vs_local_1024"]), f"{_noise(lo)} / {_noise(ray_)}"))
        rows.append((f"(b) {r['tiles']} tiles, plan + run",
                     f"local {lo['total_s']:.2f} s, Ray {ray_['total_s']:.2f} s "
                     f"({ray_['total_s'] / lo['total_s']:.2f}x); actors started after planning: "
                     f"Ray {late['total_s']:.2f} s ({late['total_s'] / lo['total_s']:.2f}x, run "
                     f"{late['run_s']:.2f} s)", "-", "info", f"{_noise(late)}"))
        rows.append((f"(b) {r['tiles']} tiles, fresh local cluster, end to end (`--executor ray`)",
                     f"local {lo['total_s']:.2f} s, Ray {cold['total_s']:.2f} s "
                     f"({cold['total_s'] / lo['total_s']:.2f}x; the cluster start adds "
                     f"{cold['total_s'] - ray_['total_s']:.1f} s beyond the plan it overlaps)", "-", "info",
                     _noise(cold)))
        if "ray_data" in r:
            rd = r["ray_data"]
            rows.append((f"(b) {r['tiles']} tiles, Ray Data (actor pool of {WORKERS}) vs Ray actors",
                         f"Ray Data run {rd['run_s']:.2f} s vs {ray_['run_s']:.2f} s "
                         f"({rd['run_s'] / ray_['run_s']:.2f}x; CPU {rd['cpu_s']:.1f} vs "
                         f"{ray_['cpu_s']:.1f} s)", "simpler at equal speed", "info", _noise(rd)))
    if "long" in results:
        g = results["long"]
        ok = max(g["overhead_wall"], g["overhead_cpu"]) <= TARGETS["ray_overhead_long"]
        rows.append((f"(c) {g['tiles']} tiles (sized for >= {results['long_seconds']:g} s of local "
                     "work), local vs Ray (cluster up)",
                     f"local {g['local']['run_s']:.1f} s, Ray {g['ray']['run_s']:.1f} s: "
                     f"**{g['overhead_wall']:+.1%}** wall, {g['overhead_cpu']:+.1%} CPU "
                     f"({g['local']['cpu_s']:.0f} vs {g['ray']['cpu_s']:.0f} CPU s)", "<= +15%",
                     flag(ok), f"{_noise(g['local'])} / {_noise(g['ray'])}"))
        c = g["ray_cold"]
        rows.append(("(c) same job, fresh local cluster, end to end (cluster start + plan + run)",
                     f"local {g['local']['total_s']:.1f} s, Ray {c['total_s']:.1f} s: "
                     f"**{g['overhead_cold_wall']:+.1%}** wall, {g['overhead_cold_cpu']:+.1%} CPU",
                     "<= +15%", flag(max(g["overhead_cold_wall"], g["overhead_cold_cpu"])
                                     <= TARGETS["ray_overhead_long"]), _noise(c)))
    if "memory" in results:
        m = results["memory"]
        rows.append((f"(d) peak RSS tiling {m['raster_px']} ({m['raster_uncompressed_gb']} GB raw)",
                     f"{m['peak_rss_gb']} GB ({m['tiles']} tiles, {m['tiles_per_s']} tiles/s)", "<= 1 GB",
                     flag(m["peak_rss_gb"] <= TARGETS["peak_rss_gb"]), "-"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_executors", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smaller rasters, one repetition, no long job, no Ray Data")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--no-ray-data", action="store_true", help="leave out the Ray Data run")
    ap.add_argument("--ray-size", type=int, default=8192, help="raster px of the short job (b)")
    ap.add_argument("--repeats", type=int, default=2, help="repetitions (best kept)")
    ap.add_argument("--long-seconds", type=float, default=60.0,
                    help="local wall seconds the long job (c) must last at least; 0 skips it")
    ap.add_argument("--long-repeats", type=int, default=1, help="repetitions of the long job")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.long_seconds = 1, 0.0
    work = Path(tempfile.mkdtemp(prefix="rsdata-bench-exec-"))
    results: dict[str, Any] = {"date": dt.datetime.now().isoformat(timespec="seconds"),
                               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                          f"Python {platform.python_version()}",
                               "loadavg_start": list(os.getloadavg())}
    try:
        if not args.skip_ray:
            size = 2048 if args.quick else args.ray_size
            results["ray"] = bench_short(work, size, args.repeats, not (args.no_ray_data or args.quick),
                                         fresh_probe=not args.quick)
            from rsdata.executors.ray_executor import worker_modules
            from rsdata.recipe import parse_recipe

            mods = worker_modules(parse_recipe(recipe(work / "ray.tif", work / "ray.geojson"), work))
            results["actor_imports"] = import_probe(mods)
            if args.long_seconds > 0:
                lo = results["ray"]["local"]
                rate = lo["nsamples"] / lo["run_s"]
                results["long_seconds"] = args.long_seconds
                results["long"] = bench_long(work, size, args.long_seconds, rate, args.long_repeats)
        if not args.skip_memory:
            results["memory"] = bench_memory(work, 6000 if args.quick else 20000)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["loadavg_end"] = list(os.getloadavg())
    print("| measurement | value | target | | other procs' cores |\n|---|---|---|---|---|")
    for row in table(results):
        print("| " + " | ".join(row) + " |")
    print(f"\n{results['date']}; {results['machine']}; loadavg {results['loadavg_start']} at the "
          f"start, {results['loadavg_end']} at the end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
