"""The Ray actor that runs partitions, apart from the driver's code.

An actor process imports this module, the modules its preload list names (the recipe's source
and stage modules: the same ones a partition needs, imported while the driver is still
planning) and nothing else: no tqdm, no manifest or loss-guard code, no torch or webdataset
unless a stage of the recipe needs them (the shard writer is a standard-library tar writer).
``benchmarks/bench_executors.py`` measures these imports (``python -X importtime``).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from typing import Any

from rsdata.executors.partition import Worker, run_partition
from rsdata.sources.base import Partition

# Heavy modules an actor must not import unless a stage asks for them (checked by the tests).
# Not pyarrow: every Ray worker process imports it itself (Ray registers Arrow serializers).
HEAVY = ("torch", "webdataset", "transformers", "geopandas", "pandas", "ray.data")


class PartitionActor:
    """Runs partitions on one :class:`Worker`, fetched once from the object store and kept (models
    and spatial indexes load once per actor, not once per partition).

    The worker travels as a one-element list holding an ``ObjectRef``: a nested reference is not
    resolved by Ray when the call arrives, so only the actor's first call fetches it, and a
    restarted actor (the process died; Ray reran ``__init__``) fetches it again on its retried call.
    The driver holds the reference for the whole run, so the object stays available."""

    def __init__(self, preload: list[str]) -> None:
        self.boot_s, self.boot_cpu_s = _process_age(), time.process_time()
        started = time.perf_counter()
        for name in preload:
            importlib.import_module(name)
        self.import_s = time.perf_counter() - started
        self.import_cpu_s = time.process_time() - self.boot_cpu_s
        self.worker: Worker | None = None

    def ready(self) -> dict[str, Any]:
        """Facts about this actor once it is up: pid; seconds from its process start to this
        actor (Ray's worker boot; None where unknown) and the CPU seconds it used meanwhile; the
        seconds (and CPU seconds) its imports took; heavy modules it holds."""
        return {"pid": os.getpid(), "boot_s": self.boot_s, "boot_cpu_s": round(self.boot_cpu_s, 3),
                "import_s": round(self.import_s, 3), "import_cpu_s": round(self.import_cpu_s, 3),
                "heavy": sorted(m for m in HEAVY if m in sys.modules)}

    def run(self, part: Partition, worker: list[Any]) -> dict[str, Any]:
        if self.worker is None:
            import ray

            self.worker = ray.get(worker[0])
        return run_partition(self.worker, part)


def _process_age() -> float | None:
    """Seconds since this process started (Linux: /proc), or None."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 3)

