"""The Ray executor: the same partitions, markers and shards as the local one, on a Ray cluster.

Partitions run on a pool of actors (:class:`rsdata.executors.ray_actor.PartitionActor`). Each
actor fetches the worker state (stages with their plain-value configs) once and keeps it, so
models and spatial indexes load once per actor, not once per partition. An actor asks for the
resources its stages declare (``Stage.resources()``: a GPU stage asks for ``num_gpus``). When an
actor process dies mid-partition (a node lost, the OOM killer, ``kill -9``), Ray restarts it and
retries the partition, which first cleans what the dead attempt left: no sample is duplicated or
lost. A partition that *raises* is not retried: bad data stays bad; it is reported and the loss
guards decide whether the run fails.

Starting Ray costs time that planning can hide: :class:`RayStart` starts (or joins) the cluster
and the actors in a background thread, and the actors import their modules, while the driver
builds the plan::

    start = RayStart(recipe, workers, address)      # returns at once
    plan = build_plan(recipe, out_dir)              # meanwhile: cluster up, actors importing
    result = run_ray(plan, workers, address, start=start)

Requires ``pip install 'rsdata[ray]'``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from tqdm import tqdm

from rsdata.errors import MissingDependencyError, OutputWriteError, RsdataError
from rsdata.executors.common import RunResult, finish_run, make_worker, pending_partitions
from rsdata.executors.ray_actor import PartitionActor
from rsdata.plan import RunPlan
from rsdata.recipe import Recipe
from rsdata.sources import SOURCES, create_source
from rsdata.sources.base import Partition
from rsdata.stage import STAGES, create_stage

ACTOR_RESTARTS = 3  # an actor process may die this many times before the run gives up on it


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray", "The Ray executor") from None
    return ray


def needed_resources(parts: Iterable[Any]) -> dict[str, float]:
    """What one actor needs: one CPU, plus the largest GPU share any source or stage asks for."""
    gpus = max((float(p.resources().get("num_gpus", 0)) for p in parts), default=0.0)
    return {"num_cpus": 1, "num_gpus": gpus}


def stage_resources(plan: RunPlan) -> dict[str, float]:
    """What one actor of this plan needs (see :func:`needed_resources`)."""
    return needed_resources(list(plan.stages) + list(plan.sources.values()))


def recipe_resources(recipe: Recipe) -> dict[str, float]:
    """The same, from the recipe alone (before the plan exists; the configs decide it)."""
    parts: list[Any] = [create_stage(cfg) for cfg in recipe.stages]
    parts += [create_source(cfg, sid, prefix) for sid, cfg, prefix in recipe.source_entries()]
    return needed_resources(parts)


def worker_modules(recipe: Recipe) -> list[str]:
    """The modules a partition of this recipe runs (an actor imports them on start)."""
    names = [SOURCES[cfg["type"]] for _, cfg, _ in recipe.source_entries()]
    names += [STAGES[cfg["type"]] for cfg in recipe.stages]
    return list(dict.fromkeys(n.split(":")[0] for n in names))


def actor_count(ray: Any, resources: dict[str, float], workers: int | None,
                todo: int | None = None) -> int:
    """How many actors to run: ``workers``, else one per cluster CPU; no more than the cluster's
    GPUs can hold when the stages want GPUs, and no more than there are partitions to run."""
    total = ray.cluster_resources()
    n = workers or int(total.get("CPU", 1))
    gpus = resources.get("num_gpus", 0.0)
    if gpus > 0:
        fit = int(total.get("GPU", 0) / gpus + 1e-9)
        if fit < 1:
            raise RsdataError(f"a stage of this recipe asks for {gpus:g} GPU per worker, but the Ray "
                              "cluster has no GPU; join a cluster with GPUs (--address) or set the "
                              "stage's device to cpu")
        n = min(n, fit)
    if todo is not None:
        n = min(n, todo)
    return max(1, n)


def start_actors(ray: Any, resources: dict[str, float], n: int, modules: list[str]) -> list[Any]:
    """Create ``n`` actors; they start (and import ``modules``) asynchronously."""
    actor_cls = ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS,
                           **resources)(PartitionActor)
    return [actor_cls.remote(modules) for _ in range(n)]


def connect(address: str | None, num_cpus: int | None) -> Any:
    """Join the cluster at ``address`` (``auto``, ``ray://host:port``) or start a local one."""
    ray = _ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        if not address:
            start_reaper()  # before ray.init: a driver killed while Ray starts leaves nothing either
        try:
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
        except ConnectionError as exc:
            raise RsdataError(f"cannot reach a Ray cluster at {address!r}: {exc}. Start one "
                              "(ray start --head) or leave out --address to start a local one.") from None
    return ray


# A sidecar that outlives the driver by a moment and kills the Ray processes the driver started
# (what ray.init started here: GCS, raylet, agents, workers; nothing else). Without it, a driver killed with
# SIGKILL leaves Ray's DashboardAgent and RuntimeEnvAgent running for another ~60 s (they wait
# on a hard-coded 60 s timeout to tell the dead GCS that the raylet died). It learns the
# driver's descendants twice a second while the driver lives and acts when its stdin (a pipe only
# the driver holds) reaches EOF: the driver is gone, however it ended.
_REAPER = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the driver's business
import psutil
driver, me, known = int(sys.argv[1]), os.getpid(), {}
def scan():
    try:
        for p in psutil.Process(driver).children(recursive=True):
            if p.pid == me or p.pid in known:
                continue
            try:
                cmd = p.cmdline()
                if cmd and (cmd[0].startswith("ray::") or any("/ray/" in a for a in cmd)):
                    known[p.pid] = p.create_time()
            except psutil.Error:
                pass
    except psutil.Error:
        pass
scan()
while True:
    ready, _, _ = select.select([0], [], [], 0.5)
    if ready and not os.read(0, 4096):
        break
    scan()
time.sleep(float(sys.argv[2]))  # a normal exit has shut Ray down by now
for pid, created in known.items():
    try:
        p = psutil.Process(pid)
        if p.create_time() == created:
            p.kill()
    except psutil.Error:
        pass
"""
_REAPER_GRACE_S = 1.0
_reaper: Any = None


def start_reaper() -> None:
    """Start the sidecar (once per driver; POSIX with psutil, which Ray installs; else nothing)."""
    global _reaper
    if _reaper is not None or os.name != "posix":
        return
    try:
        import subprocess

        import psutil  # noqa: F401 - the sidecar needs it

        _reaper = subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid()), str(_REAPER_GRACE_S)],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, close_fds=True)
    except (ImportError, OSError):
        _reaper = None


def _error_text(exc: BaseException) -> tuple[str, bool]:
    """A readable message for a failed partition, and whether it means 'disk full'."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, OutputWriteError):
        return str(cause), True
    return f"{type(cause).__name__}: {cause}", False


@dataclass
class _Pool:
    ray: Any
    resources: dict[str, float]
    actors: list[Any] = field(default_factory=list)


class RayStart:
    """Start (or join) the Ray cluster and this recipe's actors in a background thread.

    Meant to be created just before ``build_plan``: cluster start, actor processes and their
    imports then overlap with planning. Pass it to :func:`run_ray`, which takes the actors over;
    :meth:`close` kills any it did not take (call it when planning failed). Errors (a cluster that
    cannot be reached) are raised by :func:`run_ray`, where they would have been raised anyway.
    """

    def __init__(self, recipe: Recipe, workers: int | None = None, address: str | None = None) -> None:
        if importlib.util.find_spec("ray") is None:
            _ray()  # the missing dependency, said now rather than after planning
        self.workers, self.address = workers, address
        self.resources = recipe_resources(recipe)
        self.modules = worker_modules(recipe)
        self._pool: _Pool | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._taken = self._closed = False
        if threading.current_thread() is threading.main_thread():
            _exit_on_sigterm()  # what ray.init does itself when called in the main thread
        _in_start_thread(self._start)

    def _start(self) -> None:
        try:
            ray = connect(self.address, self.workers)
            n = actor_count(ray, self.resources, self.workers)
            pool = _Pool(ray, self.resources, start_actors(ray, self.resources, n, self.modules))
            with self._lock:
                self._pool = pool
                if self._closed:  # closed while starting: nobody will take these
                    _kill(ray, pool.actors)
        except BaseException as exc:  # noqa: BLE001 - handed to the driver thread by take()
            self._error = exc
        finally:
            self._done.set()

    def actors(self) -> list[Any]:
        """The actors this start created (waits for the start; raises what the start raised)."""
        return list(self._wait().actors)

    def take(self) -> _Pool:
        """Hand the cluster and actors over (to :func:`run_ray`; waits for the start)."""
        pool = self._wait()
        with self._lock:
            self._taken = True
        return pool

    def _wait(self) -> _Pool:
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._pool is not None
        return self._pool

    def close(self) -> None:
        """Kill the actors unless :func:`run_ray` took them (without waiting for a start still
        in progress: it kills them itself when it ends)."""
        with self._lock:
            self._closed = True
            if self._pool is not None and not self._taken:
                _kill(self._pool.ray, self._pool.actors)


# The thread that starts Ray must outlive what it starts: Ray ties its processes (GCS, raylet)
# to their parent with Linux's parent-death signal, which fires when the *thread* that started
# them ends. So starts run in one daemon thread per driver process that never ends.
_start_queue: queue.SimpleQueue[Callable[[], None]] | None = None
_start_lock = threading.Lock()


def _in_start_thread(fn: Callable[[], None]) -> None:
    global _start_queue
    with _start_lock:
        if _start_queue is None:
            _start_queue = queue.SimpleQueue()
            logging.getLogger("ray._private.worker").addFilter(_no_sigterm_warning)
            threading.Thread(target=_serve_starts, args=(_start_queue,), name="rsdata-ray-start",
                             daemon=True).start()
    _start_queue.put(fn)


def _serve_starts(requests: queue.SimpleQueue[Callable[[], None]]) -> None:
    while True:
        requests.get()()


def _no_sigterm_warning(record: logging.LogRecord) -> bool:
    """Ray warns when ray.init runs outside the main thread that it set no SIGTERM handler;
    :class:`RayStart` sets one itself."""
    return not str(record.msg).startswith("SIGTERM handler is not set")


def _exit_on_sigterm() -> None:
    """SIGTERM ends the driver through ``SystemExit`` (so ``finally`` blocks and Ray's shutdown
    run), unless someone installed a handler already."""
    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    except (ValueError, OSError):
        pass


def _kill(ray: Any, actors: list[Any]) -> None:
    for actor in actors:
        try:
            ray.kill(actor)
        except Exception:  # noqa: BLE001 - already dead or the cluster is gone: nothing to kill
            pass


def run_ray(plan: RunPlan, workers: int | None = None, address: str | None = None,
            progress: bool = True, start: RayStart | None = None) -> RunResult:
    """Run every unfinished partition on Ray actors, then write the manifest.

    ``start``: a :class:`RayStart` made before planning (its cluster and actors are used)."""
    pool = start.take() if start is not None else None
    ray = pool.ray if pool is not None else connect(address, workers)
    actors: list[Any] = list(pool.actors) if pool is not None else []
    started = time.perf_counter()
    try:
        done, todo = pending_partitions(plan)
        skipped = len(done)
        failures: list[tuple[str, str]] = []
        if todo:
            resources = stage_resources(plan)
            if pool is not None and pool.resources != resources:
                _kill(ray, actors)  # a stage asks for other resources after prepare(): start anew
                actors = []
            n_actors = actor_count(ray, resources, workers, len(todo))
            _kill(ray, actors[n_actors:])
            actors = actors[:n_actors]
            modules = start.modules if start is not None else worker_modules(plan.recipe)
            actors += start_actors(ray, resources, n_actors - len(actors), modules)
            # the worker goes to the object store once; each call carries only its reference
            worker = [ray.put(make_worker(plan))]
            _run_partitions(ray, plan, actors, todo, worker, done, failures, progress)
    finally:
        _kill(ray, actors)
    return finish_run(plan, done, failures, todo, skipped, started, "ray", workers or 0)


def _run_partitions(ray: Any, plan: RunPlan, actors: list[Any], todo: list[Partition],
                    worker: list[Any], done: dict[str, dict[str, Any]],
                    failures: list[tuple[str, str]], progress: bool) -> None:
    """One partition in flight per actor until none is left; a full disk stops scheduling."""
    bar = tqdm(total=sum(p.size for p in todo), unit="item", disable=not progress,
               desc=f"rsdata {plan.recipe.name} (ray)", file=sys.stderr, dynamic_ncols=True)
    pending = list(todo)
    pending.reverse()  # pop() from the end takes them in plan order
    running: dict[Any, tuple[Partition, Any]] = {}
    samples = 0
    stop: OutputWriteError | None = None
    try:
        for actor in actors:
            if pending:
                part = pending.pop()
                running[actor.run.remote(part, worker)] = (part, actor)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            ref = ready[0]
            part, actor = running.pop(ref)
            try:
                marker = ray.get(ref)
                done[part.id] = marker
                samples += marker["nsamples"]
                bar.update(part.size)
                bar.set_postfix(samples=samples, refresh=False)
            except Exception as exc:  # noqa: BLE001 - task errors and dead actors alike
                message, no_space = _error_text(exc)
                if no_space:
                    stop = stop or OutputWriteError(message)
                    pending.clear()
                failures.append((part.id, message))
            if pending and stop is None:
                nxt = pending.pop()
                running[actor.run.remote(nxt, worker)] = (nxt, actor)
    finally:
        bar.close()
    if stop is not None:
        raise stop
