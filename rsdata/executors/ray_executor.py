"""The Ray executor: the same partitions, markers and shards as the local one, on a Ray cluster.

Partitions run on a pool of actors. Each actor receives the worker state (stages with their
plain-value configs) once and keeps it, so models and spatial indexes load once per actor, not
once per partition. An actor asks for the resources its stages declare (``Stage.resources()``:
a GPU stage asks for ``num_gpus``). When an actor process dies mid-partition (a node lost, the
OOM killer, ``kill -9``), Ray restarts it and retries the partition, which first cleans what the
dead attempt left: no sample is duplicated or lost. A partition that *raises* is not retried: bad
data stays bad; it is reported and the loss guards decide whether the run fails.

Requires ``pip install 'rsdata[ray]'``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from tqdm import tqdm

from rsdata.errors import MissingDependencyError, OutputWriteError, RsdataError
from rsdata.executors.common import RunResult, finish_run, make_worker, pending_partitions
from rsdata.executors.partition import Worker, run_partition
from rsdata.plan import RunPlan
from rsdata.sources.base import Partition

ACTOR_RESTARTS = 3  # an actor process may die this many times before the run gives up on it


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray", "The Ray executor") from None
    return ray


class PartitionActor:
    """Holds one Worker for its lifetime and runs partitions on it."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def run(self, part: Partition) -> dict[str, Any]:
        return run_partition(self.worker, part)

    def pid(self) -> int:
        return os.getpid()


def stage_resources(plan: RunPlan) -> dict[str, float]:
    """What one actor needs: one CPU, plus the largest GPU share any stage asks for."""
    parts = list(plan.stages) + list(plan.sources.values())
    gpus = max((float(s.resources().get("num_gpus", 0)) for s in parts), default=0.0)
    return {"num_cpus": 1, "num_gpus": gpus}


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


def run_ray(plan: RunPlan, workers: int | None = None, address: str | None = None,
            progress: bool = True) -> RunResult:
    """Run every unfinished partition on Ray actors, then write the manifest."""
    ray = connect(address, workers)
    started = time.perf_counter()
    done, todo = pending_partitions(plan)
    skipped = len(done)
    failures: list[tuple[str, str]] = []
    if todo:
        resources = stage_resources(plan)
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        n_actors = max(1, min(workers or cluster_cpus, len(todo)))
        actor_cls = ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS,
                               **resources)(PartitionActor)
        worker = make_worker(plan)  # passed by value: a restarted actor must not need the object store
        actors = [actor_cls.remote(worker) for _ in range(n_actors)]
        bar = tqdm(total=sum(p.size for p in todo), unit="item", disable=not progress,
                   desc=f"rsdata {plan.recipe.name} (ray)", file=sys.stderr, dynamic_ncols=True)
        queue = list(todo)
        running: dict[Any, tuple[Partition, Any]] = {}
        samples = 0
        stop: OutputWriteError | None = None
        try:
            for actor in actors:  # one partition in flight per actor
                if queue:
                    part = queue.pop(0)
                    running[actor.run.remote(part)] = (part, actor)
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
                        queue.clear()
                    failures.append((part.id, message))
                if queue and stop is None:
                    nxt = queue.pop(0)
                    running[actor.run.remote(nxt)] = (nxt, actor)
        finally:
            bar.close()
            for actor in actors:
                ray.kill(actor)
        if stop is not None:
            raise stop
    return finish_run(plan, done, failures, todo, skipped, started, "ray", workers or 0)
