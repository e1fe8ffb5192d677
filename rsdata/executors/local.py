"""The local executor: partitions in this process or in a process pool (``--workers``)."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from tqdm import tqdm

from rsdata.errors import OutputWriteError
from rsdata.executors.common import RunResult, finish_run, make_worker, pending_partitions
from rsdata.executors.partition import init_worker, run_in_worker, run_partition
from rsdata.plan import RunPlan
from rsdata.sources.raster import Partition


# Modules a worker needs, imported once by the fork server instead of once per worker process
# (webdataset pulls in torch when it is installed: seconds per spawned process).
PRELOAD = ["rsdata.executors.partition", "rsdata.osm.join", "rsdata.captions.templates",
           "rasterio", "shapely", "webdataset"]


def _pool_context() -> mp.context.BaseContext:
    """forkserver with preloaded modules where available (Linux): workers start in milliseconds
    from a clean single-threaded server; spawn elsewhere."""
    if "forkserver" in mp.get_all_start_methods():
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
                except OutputWriteError:
                    raise
                except Exception as exc:  # noqa: BLE001 - reported; other partitions go on
                    failures.append((part.id, f"{type(exc).__name__}: {exc}"))
        else:
            ctx = _pool_context()
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
