"""A background loader: prepare the next batches in threads while the model runs on this one.

    for batch, prepared in prefetch(batches, prepare, workers=1, depth=2):
        model(prepared)            # the caller's thread runs the model, the loader prepares ahead

What it guarantees, like a torch ``DataLoader`` with a prefetch factor but without processes:

* **order**: ``(batch, prepare(batch))`` pairs come out in the order the batches went in;
* **bounded memory**: at most ``depth`` batches are prepared (or being prepared) ahead of the
  one the caller holds, so ``depth + 1`` prepared batches exist at any time;
* **the source stays in the caller's thread**: ``batches`` is iterated by the caller's thread
  only (upstream stages, open files and sqlite handles never change threads); only
  ``prepare`` runs in the loader's threads;
* **errors surface in the caller**, in order: the first batch whose preparation failed raises
  its exception (with its traceback, naming the sample: ``prepare`` is expected to say which)
  when the caller reaches it; batches before it are delivered first;
* **clean shutdown**: when the caller stops early (an exception, ``KeyboardInterrupt``, closing
  or dropping the generator), batches not started are cancelled and the running one is waited
  for, so no thread outlives the loop.

Threads, not processes: decoding (PIL), resizing and the tensor copies release the GIL, and a
scorer's model stays loaded once per worker process. ``workers=0`` prepares in the caller's
thread (no threads; the plain loop, for debugging and comparisons).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from rsdata.scoring.base import ScorerError

B = TypeVar("B")
R = TypeVar("R")

DEFAULT_DEPTH = 2


def default_workers(device_type: str) -> int:
    """Loader threads: one on the CPU (the model's forward wants the cores; one thread keeps up
    with every bundled model, see ``benchmarks/bench_scoring.py``); on CUDA, where the model is
    fast and the CPU only prepares, up to 8, leaving one core for the caller."""
    if device_type == "cuda":
        return max(1, min(8, (os.cpu_count() or 2) - 1))
    return 1


def prefetch(batches: Iterable[B], prepare: Callable[[B], R], workers: int = 1,
             depth: int = DEFAULT_DEPTH, name: str = "rsdata-loader") -> Iterator[tuple[B, R]]:
    """``(batch, prepare(batch))`` for each batch, in order, with ``prepare`` running in
    ``workers`` background threads up to ``depth`` batches ahead (see the module docstring)."""
    if workers < 0:
        raise ScorerError(f"loader workers must be 0 or more, not {workers}")
    if depth < 1:
        raise ScorerError(f"loader depth must be 1 or more, not {depth}")
    if workers == 0:
        for batch in batches:
            yield batch, prepare(batch)
        return
    yield from _threaded(iter(batches), prepare, workers, depth, name)


def _threaded(source: Iterator[B], prepare: Callable[[B], R], workers: int, depth: int,
              name: str) -> Iterator[tuple[B, R]]:
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    pending: deque[tuple[B, Future[R]]] = deque()
    exhausted = False
    try:
        while True:
            # keep `depth` batches in the loader beyond the one about to be handed out
            while not exhausted and len(pending) < depth + 1:
                try:
                    batch = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((batch, pool.submit(prepare, batch)))
            if not pending:
                return
            batch, future = pending.popleft()
            result = future.result()  # re-raises the loader's exception here, in order
            del future
            yield batch, result
    finally:
        for _, future in pending:
            future.cancel()
        pending.clear()
        pool.shutdown(wait=True, cancel_futures=True)
