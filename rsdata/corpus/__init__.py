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

from rsdata.corpus.manifest import (ShardRecord, load_manifest, new_manifest, shard_paths,
                                    shard_records, write_manifest)
from rsdata.corpus.reader import (Corpus, CorpusError, Entry, IntegrityError, UnsafeShardError,
                                  iter_samples, iter_shard, verify_shard)

__all__ = ["Corpus", "CorpusError", "Entry", "IntegrityError", "ShardRecord", "UnsafeShardError",
           "iter_samples", "iter_shard", "load_manifest", "new_manifest", "shard_paths",
           "shard_records", "verify_shard", "write_manifest"]
