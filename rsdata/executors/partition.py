"""Run one partition: source -> stages -> shards, then a completion marker.

The marker (``.rsdata/partitions/{id}.json``) is written last and atomically, and names the
recipe hash, so a partition either has a marker and complete shards or counts as not done.
Before a partition starts, whatever an earlier, interrupted attempt left of it is removed:
reruns never duplicate a sample.
"""

from __future__ import annotations

import errno
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsdata.atomic import atomic_write_bytes
from rsdata.corpus.writer import ShardWriter, owned_by
from rsdata.errors import OutputWriteError
from rsdata.sources.base import Partition, Source
from rsdata.stage import Stage
from rsdata.stats import StageStats

MARKER_DIR = "partitions"
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass
class Worker:
    """Everything a worker process needs besides the partition (sent once per process)."""

    out_dir: str
    state_dir: str
    recipe_hash: str
    sources: dict[str, Source]
    stages: list[Stage]
    max_samples: int
    max_bytes: int


def marker_path(state_dir: Path, partition_id: str) -> Path:
    return state_dir / MARKER_DIR / f"{partition_id}.json"


def read_marker(state_dir: Path, out_dir: Path, partition_id: str, recipe_hash: str) -> dict[str, Any] | None:
    """The marker of a finished partition, or None when it must be (re)done."""
    path = marker_path(state_dir, partition_id)
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if marker.get("recipe_hash") != recipe_hash:
        return None
    for shard in marker["shards"]:
        f = out_dir / shard["path"]
        if not f.exists() or f.stat().st_size != shard["bytes"]:
            return None
    return marker


def clean_partition(out_dir: Path, partition_id: str) -> None:
    """Remove shards and temp files an interrupted attempt at this partition left behind
    (exactly this partition's: see :func:`rsdata.corpus.writer.owned_by`)."""
    shard_dir = out_dir / "shards"
    if not shard_dir.exists():
        return
    for f in shard_dir.iterdir():
        if owned_by(partition_id, f.name):
            f.unlink(missing_ok=True)


def run_partition(worker: Worker, part: Partition) -> dict[str, Any]:
    """Process one partition end to end and write its marker; returns the marker."""
    out_dir = Path(worker.out_dir)
    state_dir = Path(worker.state_dir)
    clean_partition(out_dir, part.id)
    started = time.perf_counter()
    source = worker.sources[part.source]
    stats = [StageStats(source.stats_name)] + [StageStats(s.name) for s in worker.stages]
    stream = source.read(part, stats[0])
    for stage, st in zip(worker.stages, stats[1:]):
        stream = stage(stream, st)
    writer = ShardWriter(out_dir, part.id, worker.max_samples, worker.max_bytes)
    write_stats = StageStats("write")
    try:
        for sample in stream:
            write_stats.n_in += 1
            writer.write(sample)
            write_stats.n_out += 1
        shards = writer.close()
    except OSError as exc:
        writer.abort()
        if exc.errno in _NO_SPACE:
            raise OutputWriteError(
                f"cannot write the shards of partition {part.id} in {out_dir}: {exc.strerror} "
                f"({errno.errorcode.get(exc.errno or 0, exc.errno)}). Nothing half-written was kept; "
                "free some space (or choose another --out) and run the same command again: finished "
                "partitions are kept.") from None
        raise
    except BaseException:
        writer.abort()
        raise
    for s in shards:
        s["partition"] = part.id
    marker = {
        "recipe_hash": worker.recipe_hash,
        "partition": part.id,
        "source": part.source,
        "tiles": part.size,
        "nsamples": writer.nsamples,
        "shards": shards,
        "stats": [s.to_json() for s in stats + [write_stats]],
        "seconds": round(time.perf_counter() - started, 3),
    }
    try:
        atomic_write_bytes(marker_path(state_dir, part.id), json.dumps(marker, indent=1).encode())
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise OutputWriteError(f"cannot write the completion marker of partition {part.id}: "
                                   f"{exc.strerror}; free some space and run again") from None
        raise
    return marker


_WORKER: Worker | None = None


def init_worker(worker: Worker) -> None:
    """Process-pool initializer: keep the worker (and its lazily built state) per process."""
    global _WORKER
    _WORKER = worker


def run_in_worker(part: Partition) -> dict[str, Any]:
    assert _WORKER is not None, "init_worker was not called in this process"
    return run_partition(_WORKER, part)
