"""Corpus I/O in one place: the safe reader, the shard writer, the manifest, verification.

Everything that reads or writes a corpus goes through this package:

* :mod:`rsdata.corpus.reader` — :class:`Corpus` (manifest-driven), :func:`iter_shard` (one
  member-name rule, hostile members refused, sha256 verified while streaming, never extracts);
* :mod:`rsdata.corpus.writer` — :class:`ShardWriter` (atomic, size-limited shards);
* :mod:`rsdata.corpus.manifest` — one manifest builder for runs and derived versions, one loader;
* :mod:`rsdata.corpus.derived` — a derived version written outside a run (``rsdata filter``).
* :mod:`rsdata.corpus.samples` — samples as ``train`` and ``evaluate`` read them (shards with
  counts and checksums, raw entries, captions, image bytes, the holdout split, key files).

No module here imports webdataset (nor torch): shards are written with the standard library.

This package sits below every stage and tool package: it imports none of ``train``,
``evaluate``, ``scoring``, ``filtering``, ``llm``, ``osm``, ``captions`` or ``executors``
(tests/test_import_direction.py).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Names resolve on first use (PEP 562): a Ray actor or pool worker that only writes shards
# imports rsdata.corpus.writer without the reader, the manifest loader and jsonschema.
_WHERE = {
    "ShardRecord": "manifest", "load_manifest": "manifest", "new_manifest": "manifest",
    "shard_paths": "manifest", "shard_records": "manifest", "write_manifest": "manifest",
    "Corpus": "reader", "CorpusError": "reader", "Entry": "reader", "IntegrityError": "reader",
    "UnsafeShardError": "reader", "iter_samples": "reader", "iter_shard": "reader",
    "verify_shard": "reader",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rsdata.corpus' has no attribute {name!r}")
    value = getattr(import_module(f"rsdata.corpus.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
