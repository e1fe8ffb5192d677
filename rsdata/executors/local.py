"""The local executor: partitions in this process or in a process pool (``--workers``)."""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from tqdm import tqdm

# no tqdm monitor thread: this process may fork its workers, which wants a single thread
tqdm.monitor_interval = 0

from rsdata.errors import OutputWriteError
from rsdata.executors.common import RunResult, finish_run, make_worker, pending_partitions
from rsdata.executors.partition import init_worker, run_in_worker, run_partition
from rsdata.plan import RunPlan
from rsdata.sources.base import Partition


# Modules a worker needs, imported once by the fork server instead of once per worker process
# (webdataset pulls in torch when it is installed: seconds per spawned process).
PRELOAD = ["rsdata.executors.partition", "rsdata.osm.join", "rsdata.captions.templates",
           "rasterio", "shapely", "webdataset"]


def _pool_context() -> mp.context.BaseContext:
    """How worker processes start. ``fork`` when this process runs a single thread (workers then
    inherit every imported module and start at once, as PyTorch's DataLoader workers do); else a
    forkserver with the modules preloaded (one import for all workers); spawn where neither exists."""
    methods = mp.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return mp.get_context("fork")
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return mp.get_context("spawn")


def run_local(plan: RunPlan, workers: int = 1, progress: bool = True) -> RunResult:
    """Run every unfinished partition, then write the manifest from all markers."""
    started = time.perf_counter()
    done, todo = pending_partitions(plan)
    skipped = len(done)
    worker = make_worker(plan)
    failures: list[tuple[str, str]] = []
    bar = tqdm(total=sum(p.size for p in todo), unit="item", desc=f"rsdata {plan.recipe.name}",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    samples = 0
    ctx = _pool_context() if workers > 1 and len(todo) > 1 else None

    def finished(part: Partition, marker: dict[str, Any]) -> None:
        nonlocal samples
        done[part.id] = marker
        samples += marker["nsamples"]
        bar.update(part.size)
        bar.set_postfix(samples=samples, refresh=False)

    try:
        if ctx is None:
            for part in todo:
                try:
                    finished(part, run_partition(worker, part))
                except OutputWriteError:
                    raise
                except Exception as exc:  # noqa: BLE001 - reported; other partitions go on
                    failures.append((part.id, f"{type(exc).__name__}: {exc}"))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
                                     initargs=(worker,)) as pool:
                pending: dict[Future[dict[str, Any]], Partition] = {
                    pool.submit(run_in_worker, part): part for part in todo}
                while pending:
                    complete, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in complete:
                        part = pending.pop(fut)
                        try:
                            finished(part, fut.result())
                        except OutputWriteError:
                            for other in pending:
                                other.cancel()
                            raise
                        except Exception as exc:  # noqa: BLE001
                            failures.append((part.id, f"{type(exc).__name__}: {exc}"))
    finally:
        bar.close()
    return finish_run(plan, done, failures, todo, skipped, started, "local", workers)
