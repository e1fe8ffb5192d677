"""Run one partition: source -> stages -> shards, then a completion marker.

The marker (``.rsdata/partitions/{id}.json``) is written last and atomically, and names the
recipe hash, so a partition either has a marker and complete shards or counts as not done.
Before a partition starts, whatever an earlier, interrupted attempt left of it is removed:
reruns never duplicate a sample.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import sys
import threading
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

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 0.25  # how often a worker checks that its parent still lives (the portable watch)


def init_worker(worker: Worker, driver_pid: int | None = None) -> None:
    """Process-pool initializer: keep the worker (and its lazily built state) per process, leave
    Ctrl-C to the driver (see :mod:`rsdata.executors.local`), and exit when the parent dies.

    ``driver_pid``: the process that runs the pool; with ``fork`` and ``spawn`` it is this
    worker's parent, with ``forkserver`` the parent is the fork server (which exits when the driver
    does, and the worker with it)."""
    global _WORKER
    _WORKER = worker
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):
        pass
    exit_with_parent(driver_pid)


def exit_with_parent(driver_pid: int | None = None, use_prctl: bool = True) -> None:
    """Make this process die (SIGKILL) as soon as its parent process dies.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, the kernel's parent-death signal. Everywhere (and
    as a second line on Linux): a daemon thread that polls ``os.getppid()`` and kills this process
    when the parent changed (the orphan was re-parented), or when ``driver_pid`` no longer exists.
    A worker killed mid-partition leaves only what the next run's :func:`clean_partition` removes.
    """
    parent = os.getppid()
    if use_prctl and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if driver_pid is not None and driver_pid != parent and not _exists(driver_pid):
        _die()  # the driver died before we could ask to follow it (the driver may be pid 1 in a
        # container, so a parent of 1 alone proves nothing)
    if driver_pid == parent:
        driver_pid = None  # watching the parent covers it
    if os.getppid() != parent:
        _die()
    watch = threading.Thread(target=_watch_parent, args=(parent, driver_pid),
                             name="rsdata-parent-watch", daemon=True)
    watch.start()


def _watch_parent(parent: int, driver_pid: int | None) -> None:
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent or (driver_pid is not None and not _exists(driver_pid)):
            _die()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, another user's (EPERM)
    return True


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)  # not reached


def run_in_worker(part: Partition) -> dict[str, Any]:
    assert _WORKER is not None, "init_worker was not called in this process"
    return run_partition(_WORKER, part)
