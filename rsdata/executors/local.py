"""The local executor: partitions in this process or in a process pool (``--workers``).

Interrupts (the driver's SIGINT, i.e. Ctrl-C; workers ignore SIGINT and leave it to the driver):

* the first stops scheduling: no new partition starts; the running ones may finish for up to
  :data:`GRACE_S` seconds, then their workers are stopped (an aborted partition is redone by the
  next run, whose first step removes what the aborted attempt left). Then ``KeyboardInterrupt``
  (exit 130 through the CLI, which says how to resume);
* the second stops at once: workers are killed, ``KeyboardInterrupt``.

Nothing outlives the driver: a worker exits when its parent dies (see
:func:`rsdata.executors.partition.init_worker`). A worker that dies mid-run (the OOM killer,
``kill -9``) breaks the pool; the partitions it was running are retried in a fresh pool, up to
:data:`WORKER_RESTARTS` times each, as the Ray executor retries a dead actor's partition.
"""

from __future__ import annotations

import _thread
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from types import FrameType
from typing import Any, Callable

from tqdm import tqdm

# no tqdm monitor thread: this process may fork its workers, which wants a single thread
tqdm.monitor_interval = 0

from rsdata.errors import OutputWriteError
from rsdata.executors.common import RunResult, finish_run, make_worker, pending_partitions
from rsdata.executors.partition import init_worker, run_in_worker, run_partition
from rsdata.plan import RunPlan
from rsdata.sources.base import Partition


# Modules a worker needs, imported once by the fork server instead of once per worker process
# (the shard writer needs no webdataset, so no torch import per worker).
PRELOAD = ["rsdata.executors.partition", "rsdata.osm.join", "rsdata.captions.templates",
           "rasterio", "shapely"]

GRACE_S = 5.0  # after a first Ctrl-C, how long running partitions may take to finish
WORKER_RESTARTS = 3  # a partition whose worker died is retried this many times
START_METHOD_ENV = "RSDATA_START_METHOD"  # force fork / forkserver / spawn (tests, debugging)
_POLL_S = 0.1  # how often the driver looks at its interrupt flag while partitions run


def _pool_context() -> mp.context.BaseContext:
    """How worker processes start. ``fork`` when this process runs a single thread (workers then
    inherit every imported module and start at once, as PyTorch's DataLoader workers do); else a
    forkserver with the modules preloaded (one import for all workers); spawn where neither exists.
    ``RSDATA_START_METHOD`` overrides the choice."""
    methods = mp.get_all_start_methods()
    forced = os.environ.get(START_METHOD_ENV, "").strip()
    if forced and forced in methods:
        method = forced
    elif "fork" in methods and threading.active_count() == 1:
        method = "fork"
    elif "forkserver" in methods:
        method = "forkserver"
    else:
        method = "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _say(text: str) -> None:
    """A line on stderr, safe inside a signal handler (no buffered writer to re-enter)."""
    try:
        os.write(2, (text.rstrip("\n") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


class Interrupts:
    """Counts SIGINTs while a run is in progress (main thread only; elsewhere it does nothing).

    ``raise_on_second``: raise ``KeyboardInterrupt`` from the handler on the second signal (the
    in-process executor, whose main thread is busy running the partition); the pool executor
    polls :attr:`count` instead, so that the exception never lands inside its bookkeeping.
    """

    def __init__(self, raise_on_second: bool) -> None:
        self.raise_on_second = raise_on_second
        self.count = 0
        self.first_at: float | None = None
        self.running = 0  # partitions running, for the message
        self.on_first: Callable[[Interrupts], None] | None = None
        self.timer: threading.Timer | None = None
        self.expired = False  # the grace period ran out (the timer raised the second interrupt)
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            except (ValueError, OSError):  # not the main interpreter, or no signals here
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1:
            self.first_at = time.monotonic()
            what = (f"the {self.running} running partition(s) may finish for up to {GRACE_S:g} s"
                    if self.running else "the running partition may finish")
            _say(f"\nrsdata: interrupted: no new partitions start; {what}. Finished partitions are "
                 "kept: run the same command again to resume. Press Ctrl-C again to stop at once.")
            if self.on_first is not None:
                self.on_first(self)
            return
        if self.expired:
            _say(f"rsdata: the running partition did not finish within {GRACE_S:g} s: stopping it "
                 "(a rerun redoes it).")
        elif self.count == 2:
            _say("rsdata: interrupted again: stopping now.")
        if self.raise_on_second:
            raise KeyboardInterrupt

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def grace_left(self) -> float:
        return 0.0 if self.first_at is None else GRACE_S - (time.monotonic() - self.first_at)


def run_local(plan: RunPlan, workers: int = 1, progress: bool = True) -> RunResult:
    """Run every unfinished partition, then write the manifest from all markers."""
    started = time.perf_counter()
    done, todo = pending_partitions(plan)
    skipped = len(done)
    failures: list[tuple[str, str]] = []
    bar = tqdm(total=sum(p.size for p in todo), unit="item", desc=f"rsdata {plan.recipe.name}",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    samples = 0
    in_pool = workers > 1 and len(todo) > 1

    def finished(part: Partition, marker: dict[str, Any]) -> None:
        nonlocal samples
        done[part.id] = marker
        samples += marker["nsamples"]
        bar.update(part.size)
        bar.set_postfix(samples=samples, refresh=False)

    try:
        with Interrupts(raise_on_second=not in_pool) as interrupts:
            if in_pool:
                _run_pool(plan, todo, workers, interrupts, finished, failures)
            else:
                _run_here(plan, todo, interrupts, finished, failures)
    finally:
        bar.close()
    return finish_run(plan, done, failures, todo, skipped, started, "local", workers)


def _run_here(plan: RunPlan, todo: list[Partition], interrupts: Interrupts, finished: Any,
              failures: list[tuple[str, str]]) -> None:
    """Partitions one after the other in this process. After a first Ctrl-C the running
    partition has :data:`GRACE_S` seconds to finish, then it is interrupted like by a second."""
    worker = make_worker(plan)
    interrupts.running = 1
    interrupts.on_first = _start_grace_timer
    try:
        for part in todo:
            if interrupts.count:
                break
            try:
                finished(part, run_partition(worker, part))
            except OutputWriteError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported; other partitions go on
                failures.append((part.id, f"{type(exc).__name__}: {exc}"))
        if interrupts.count:
            raise KeyboardInterrupt
    finally:
        interrupts.cancel_timer()


def _start_grace_timer(interrupts: Interrupts) -> None:
    def expire() -> None:
        interrupts.expired = True
        _thread.interrupt_main(signal.SIGINT)  # runs the handler in the main thread: it raises

    interrupts.timer = threading.Timer(GRACE_S, expire)
    interrupts.timer.daemon = True
    interrupts.timer.start()


def _run_pool(plan: RunPlan, todo: list[Partition], workers: int, interrupts: Interrupts,
              finished: Any, failures: list[tuple[str, str]]) -> None:
    """Partitions in a process pool, one in flight per worker: a stop leaves nothing queued."""
    worker = make_worker(plan)
    queue: deque[Partition] = deque(todo)
    attempts: dict[str, int] = {}
    while queue:
        ctx = _pool_context()
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
                                   initargs=(worker, os.getpid()))
        running: dict[Future[dict[str, Any]], Partition] = {}
        broken: list[Partition] = []
        clean = False
        died = ""
        try:
            while queue or running:
                while queue and len(running) < workers and not interrupts.count and not broken:
                    part = queue.popleft()
                    running[pool.submit(run_in_worker, part)] = part
                interrupts.running = len(running)
                if not running:
                    break
                if interrupts.count >= 2:
                    raise KeyboardInterrupt
                if interrupts.count == 1:
                    queue.clear()
                    if interrupts.grace_left() <= 0:
                        _say(f"rsdata: {len(running)} partition(s) did not finish within "
                             f"{GRACE_S:g} s: stopping them (a rerun redoes them).")
                        raise KeyboardInterrupt
                complete, _ = wait(running, timeout=_POLL_S, return_when=FIRST_COMPLETED)
                for fut in complete:
                    part = running.pop(fut)
                    try:
                        finished(part, fut.result())
                    except BrokenProcessPool:
                        broken.append(part)
                    except OutputWriteError:
                        queue.clear()
                        raise
                    except Exception as exc:  # noqa: BLE001 - reported; other partitions go on
                        failures.append((part.id, f"{type(exc).__name__}: {exc}"))
                if broken and not running:
                    break
            if interrupts.count:
                raise KeyboardInterrupt
            clean = True
        finally:
            if clean or broken:
                if broken:
                    died = _worker_deaths(pool)
                pool.shutdown(wait=True, cancel_futures=True)
            else:
                _stop_pool(pool)
        if broken:
            retry = []
            for part in broken:
                attempts[part.id] = attempts.get(part.id, 0) + 1
                if attempts[part.id] > WORKER_RESTARTS:
                    failures.append((part.id, f"its worker process died {attempts[part.id]} times "
                                              f"({died}); is it running out of memory?"))
                else:
                    retry.append(part)
            if retry:
                _say(f"rsdata: a worker process died ({died}); retrying {len(retry)} partition(s) "
                     "in a new pool")
            queue.extendleft(reversed(retry))


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers now and wind the pool down (nothing left to hang at exit)."""
    procs = dict(getattr(pool, "_processes", None) or {})
    for proc in procs.values():
        try:
            proc.kill()
        except (OSError, ValueError, AttributeError):
            pass
    for proc in procs.values():
        try:
            proc.join(timeout=5)
        except (OSError, ValueError, AssertionError):
            pass
    pool.shutdown(wait=True, cancel_futures=True)


def _worker_deaths(pool: ProcessPoolExecutor) -> str:
    """How the broken pool's workers ended, e.g. 'killed by SIGKILL' (the pool itself stops the
    others with SIGTERM)."""
    codes = []
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        try:
            proc.join(timeout=1)
        except (OSError, ValueError, AssertionError):
            pass
    for proc in procs:
        code = proc.exitcode
        if code is None or code == 0:
            continue
        if code < 0:
            try:
                codes.append(f"killed by {signal.Signals(-code).name}")
            except ValueError:
                codes.append(f"killed by signal {-code}")
        else:
            codes.append(f"exit status {code}")
    return ", ".join(sorted(set(codes))) or "ended abruptly"
