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
from rsdata.corpus.manifest import build_run_manifest, write_manifest
from rsdata.plan import RunPlan
from rsdata.sources.base import Partition


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
                  recipe_hash=plan.recipe_hash, sources=plan.sources,
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
    tiles = sum(p.size for p in ran)
    timing = {"seconds": round(seconds, 3), "executor": executor, "workers": workers,
              "partitions_run": len(ran), "partitions_skipped": skipped,
              "tiles_per_second": round(tiles / seconds, 2) if seconds > 0 and tiles else None}
    manifest = build_run_manifest(plan, markers, timing)
    if failures:
        sizes = {p.id: p.size for p in plan.partitions}
        manifest["failed_partitions"] = [{"partition": pid, "error": msg, "tiles": sizes.get(pid, 0)}
                                         for pid, msg in failures]
        print(f"rsdata: warning: {len(failures)} partition(s) failed and are left out "
              f"(allowed by output.max_error_rate); rerun to retry them:\n"
              + "\n".join(f"  {pid}: {msg}" for pid, msg in failures[:10]), file=sys.stderr)
    verify_outputs(plan, manifest)
    failure = _check_losses(plan, manifest)
    if failure:
        manifest["status"] = "failed"
        manifest["failure"] = failure
    path = write_manifest(plan.out_dir, manifest)
    if failure:
        raise RunFailedError(failure + " The manifest says status: failed, so no reader uses the "
                             "corpus unless told; rsdata inspect shows it.")
    return RunResult(manifest, path, skipped, len(ran), seconds, failures)


def verify_outputs(plan: RunPlan, manifest: dict[str, Any]) -> None:
    """Every shard the manifest lists exists with the size its marker recorded, once."""
    seen: set[str] = set()
    for shard in manifest["shards"]:
        f = plan.out_dir / shard["path"]
        if shard["path"] in seen:
            raise RunFailedError(f"shard {shard['path']} is claimed by two partitions; this is a bug, "
                                 "please report it. Rerun with --overwrite into a fresh directory.")
        seen.add(shard["path"])
        if not f.is_file() or f.stat().st_size != shard["bytes"]:
            raise RunFailedError(f"shard {f} of a finished partition is missing or changed since its "
                                 "marker was written (another process writing to this --out?); rerun "
                                 "the same command to redo that partition")


def _check_losses(plan: RunPlan, manifest: dict[str, Any]) -> str | None:
    """Why the run counts as failed (a loss guard), or None."""
    out = plan.recipe.output
    min_samples = int(out["min_samples"])
    if manifest["nsamples"] < min_samples:
        return (f"the run wrote {manifest['nsamples']} samples (fewer than output.min_samples = "
                f"{min_samples}). {drop_summary(manifest)} Check the inputs (nodata, CRS, OSM "
                "coverage) or relax the filters in the recipe.")
    max_drop = out["max_drop_rate"]
    if max_drop is not None:
        planned = sum(s["in"] for s in manifest["stages"] if s["name"] in plan.source_stats_names)
        if planned:
            rate = 1 - manifest["nsamples"] / planned
            if rate > max_drop:
                return (f"{rate:.0%} of {planned} planned samples were dropped, more than "
                        f"output.max_drop_rate = {max_drop:.0%}. {drop_summary(manifest)} Fix the "
                        "inputs or relax the limit.")
    return None


def drop_summary(manifest: dict[str, Any]) -> str:
    parts = []
    for st in manifest["stages"]:
        for reason, n in st["dropped"].items():
            parts.append(f"{st['name']}/{reason}: {n}")
    return ("Dropped: " + ", ".join(parts) + ".") if parts else "Nothing was dropped."


def summary(result: RunResult) -> str:
    """A few lines for the end of a run: counts, drops by reason, throughput."""
    m = result.manifest
    planned = sum(s["in"] for s in m["stages"] if s["name"] in ("tile", "read"))
    rate = m["nsamples"] / result.seconds if result.seconds > 0 else 0.0
    nbytes = sum(s["bytes"] for s in m["shards"])
    lines = [
        f"{m['nsamples']} samples in {len(m['shards'])} shards ({nbytes / 1e6:.1f} MB) -> {result.manifest_path}",
        f"{planned} items read by the sources; partitions: {result.ran} run, {result.skipped} already done"
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
