"""What every executor shares: which partitions are done, and how a run is finished.

Executors only decide *where* partitions run. Deciding what is left to do (markers), and
turning markers into a manifest with the loss guards applied, happens here, the same way for
the local process pool and for Ray.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsdata.errors import RunFailedError
from rsdata.executors.partition import Worker, read_marker
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


def pending_partitions(plan: RunPlan) -> tuple[dict[str, dict[str, Any]], list[Partition]]:
    """Markers of finished partitions (by id) and the partitions still to run."""
    done: dict[str, dict[str, Any]] = {}
    todo: list[Partition] = []
    for part in plan.partitions:
        marker = read_marker(plan.state_dir, plan.out_dir, part.id, plan.recipe_hash)
        if marker is None:
            todo.append(part)
        else:
            done[part.id] = marker
    return done, todo


def finish_run(plan: RunPlan, done: dict[str, dict[str, Any]], failures: list[tuple[str, str]],
               ran: list[Partition], skipped: int, started: float, executor: str,
               workers: int) -> RunResult:
    """Apply the loss guards and write the manifest of a run whose partitions have all ended."""
    seconds = time.perf_counter() - started
    n_parts = len(plan.partitions)
    max_error_rate = float(plan.recipe.output.get("max_error_rate", 0))
    if failures and len(failures) / max(n_parts, 1) > max_error_rate:
        lines = "\n".join(f"  {pid}: {msg}" for pid, msg in failures[:10])
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        raise RunFailedError(
            f"{len(failures)} of {n_parts} partitions failed (output.max_error_rate allows "
            f"{max_error_rate:.0%}); finished partitions are kept and a rerun does only the rest. "
            f"First errors:\n{lines}{more}")
    failed_ids = {pid for pid, _ in failures}
    markers = [done[p.id] for p in plan.partitions if p.id not in failed_ids]
    tiles = sum(len(p.tiles) for p in ran)
    timing = {"seconds": round(seconds, 3), "executor": executor, "workers": workers,
              "partitions_run": len(ran), "partitions_skipped": skipped,
              "tiles_per_second": round(tiles / seconds, 2) if seconds > 0 and tiles else None}
    manifest = build_manifest(plan, markers, timing)
    if failures:
        sizes = {p.id: len(p.tiles) for p in plan.partitions}
        manifest["failed_partitions"] = [{"partition": pid, "error": msg, "tiles": sizes.get(pid, 0)}
                                         for pid, msg in failures]
        print(f"rsdata: warning: {len(failures)} partition(s) failed and are left out "
              f"(allowed by output.max_error_rate); rerun to retry them:\n"
              + "\n".join(f"  {pid}: {msg}" for pid, msg in failures[:10]), file=sys.stderr)
    path = write_manifest(plan.out_dir, manifest)
    result = RunResult(manifest, path, skipped, len(ran), seconds, failures)
    _check_losses(plan, manifest)
    return result


def _check_losses(plan: RunPlan, manifest: dict[str, Any]) -> None:
    out = plan.recipe.output
    min_samples = int(out.get("min_samples", 1))
    if manifest["nsamples"] < min_samples:
        raise RunFailedError(
            f"the run wrote {manifest['nsamples']} samples (fewer than output.min_samples = "
            f"{min_samples}). {drop_summary(manifest)} Check the inputs (nodata, CRS, OSM coverage) "
            "or relax the filters in the recipe.")
    max_drop = out.get("max_drop_rate")
    if max_drop is not None:
        planned = next((s["in"] for s in manifest["stages"] if s["name"] == "tile"), 0)
        if planned:
            rate = 1 - manifest["nsamples"] / planned
            if rate > max_drop:
                raise RunFailedError(
                    f"{rate:.0%} of {planned} tiles were dropped, more than output.max_drop_rate = "
                    f"{max_drop:.0%}. {drop_summary(manifest)} The manifest was written so you can "
                    "inspect the corpus; fix the inputs or relax the limit.")


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
        f"{tile['in']} tiles planned; partitions: {result.ran} run, {result.skipped} already done"
        + (f", {len(result.failures)} failed" if result.failures else ""),
    ]
    drops: Counter[str] = Counter()
    for st in m["stages"]:
        for reason, n in st["dropped"].items():
            drops[f"{st['name']}/{reason}"] += n
    if drops:
        lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in drops.most_common()))
    lines.append(f"{result.seconds:.1f} s, {rate:.1f} samples/s")
    return "\n".join(lines)
