"""The local executor: partitions in this process or in a process pool (``--workers``)."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rsdata.errors import RunFailedError
from rsdata.executors.partition import Worker, init_worker, read_marker, run_in_worker, run_partition
from rsdata.manifest import build_manifest, write_manifest
from rsdata.plan import RunPlan
from rsdata.sources.raster import Partition


@dataclass
class RunResult:
    manifest: dict[str, Any]
    manifest_path: Path
    skipped: int  # partitions already done by an earlier run
    ran: int
    seconds: float
    failures: list[tuple[str, str]] = field(default_factory=list)


def make_worker(plan: RunPlan) -> Worker:
    return Worker(out_dir=str(plan.out_dir), state_dir=str(plan.state_dir),
                  recipe_hash=plan.recipe_hash, tiler_cfg=plan.recipe.source,
                  stages=plan.stages, max_samples=plan.max_samples, max_bytes=plan.max_bytes)


def _todo(plan: RunPlan) -> tuple[dict[str, dict[str, Any]], list[Partition]]:
    done: dict[str, dict[str, Any]] = {}
    todo: list[Partition] = []
    for part in plan.partitions:
        marker = read_marker(plan.state_dir, plan.out_dir, part.id, plan.recipe_hash)
        if marker is None:
            todo.append(part)
        else:
            done[part.id] = marker
    return done, todo


def run_local(plan: RunPlan, workers: int = 1, progress: bool = True) -> RunResult:
    """Run every unfinished partition, then write the manifest from all markers."""
    started = time.perf_counter()
    done, todo = _todo(plan)
    skipped = len(done)
    worker = make_worker(plan)
    failures: list[tuple[str, str]] = []
    bar = tqdm(total=sum(len(p.tiles) for p in todo), unit="tile", desc=f"rsdata {plan.recipe.name}",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    samples = 0

    def finished(part: Partition, marker: dict[str, Any]) -> None:
        nonlocal samples
        done[part.id] = marker
        samples += marker["nsamples"]
        bar.update(len(part.tiles))
        bar.set_postfix(samples=samples, refresh=False)

    try:
        if workers <= 1 or len(todo) <= 1:
            for part in todo:
                try:
                    finished(part, run_partition(worker, part))
                except Exception as exc:  # noqa: BLE001 - reported below, other partitions go on
                    failures.append((part.id, f"{type(exc).__name__}: {exc}"))
        else:
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
                                     initargs=(worker,)) as pool:
                pending = {pool.submit(run_in_worker, part): part for part in todo}
                while pending:
                    complete, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in complete:
                        part = pending.pop(fut)
                        try:
                            finished(part, fut.result())
                        except Exception as exc:  # noqa: BLE001
                            failures.append((part.id, f"{type(exc).__name__}: {exc}"))
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    if failures:
        lines = "\n".join(f"  {pid}: {msg}" for pid, msg in failures[:10])
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        raise RunFailedError(
            f"{len(failures)} of {len(plan.partitions)} partitions failed; finished partitions are "
            f"kept and a rerun does only the rest. First errors:\n{lines}{more}")
    markers = [done[p.id] for p in plan.partitions]
    tiles = sum(len(p.tiles) for p in todo)
    timing = {"seconds": round(seconds, 3), "workers": workers, "partitions_run": len(todo),
              "partitions_skipped": skipped, "tiles_per_second": round(tiles / seconds, 2) if seconds else None}
    manifest = build_manifest(plan, markers, timing)
    path = write_manifest(plan.out_dir, manifest)
    result = RunResult(manifest, path, skipped, len(todo), seconds)
    min_samples = int(plan.recipe.output.get("min_samples", 1))
    if manifest["nsamples"] < min_samples:
        raise RunFailedError(
            f"the run wrote {manifest['nsamples']} samples (fewer than output.min_samples = "
            f"{min_samples}). {drop_summary(manifest)} Check the inputs (nodata, CRS, OSM coverage) "
            "or relax the filters in the recipe.")
    return result


def drop_summary(manifest: dict[str, Any]) -> str:
    parts = []
    for st in manifest["stages"]:
        for reason, n in st["dropped"].items():
            parts.append(f"{st['name']}/{reason}: {n}")
    return ("Dropped: " + ", ".join(parts) + ".") if parts else "Nothing was dropped."


def summary(result: RunResult) -> str:
    """A few lines for the end of a run: counts, drops by reason, throughput."""
    m = result.manifest
    tile = next((s for s in m["stages"] if s["name"] == "tile"), {"in": 0})
    rate = m["nsamples"] / result.seconds if result.seconds > 0 else 0.0
    nbytes = sum(s["bytes"] for s in m["shards"])
    lines = [
        f"{m['nsamples']} samples in {len(m['shards'])} shards ({nbytes / 1e6:.1f} MB) -> {result.manifest_path}",
        f"{tile['in']} tiles planned; partitions: {result.ran} run, {result.skipped} already done",
    ]
    drops: Counter[str] = Counter()
    for st in m["stages"]:
        for reason, n in st["dropped"].items():
            drops[f"{st['name']}/{reason}"] += n
    if drops:
        lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in drops.most_common()))
    lines.append(f"{result.seconds:.1f} s, {rate:.1f} samples/s")
    return "\n".join(lines)
