"""Write a derived corpus version (``rsdata filter``'s reshard) that points at its parent.

Derived versions never modify their parent: they go to another directory through the one
shard writer (atomic shards) and get their manifest last, built by the one manifest builder,
naming the parent (path, manifest sha256, recipe hash). Runs that read a corpus as a source
(``rsdata score``, re-captioning, annotation merges) are ordinary runs instead; see
:mod:`rsdata.sources.corpus`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from rsdata.corpus.manifest import new_manifest, parent_record, write_manifest
from rsdata.corpus.reader import Corpus
from rsdata.corpus.writer import ShardWriter
from rsdata.errors import OutputConflictError
from rsdata.recipe import parse_bytes
from rsdata.sample import Sample

DEFAULT_MAX_SAMPLES = 1000
DEFAULT_MAX_BYTES = "256MB"
# what a derived corpus directory holds besides its shards (removed by --overwrite)
OWN_FILES = ("manifest.json", "subset.json", "leakage_report.json")


def claim_output(out_dir: Path, parent_dir: Path, overwrite: bool) -> None:
    """Make sure ``out_dir`` can take a new corpus: not the parent, not someone else's data."""
    if out_dir.resolve() == parent_dir.resolve():
        raise OutputConflictError(f"--out {out_dir} is the input corpus itself; rsdata never rewrites a "
                                  "corpus in place: choose a new directory for the new version")
    if parent_dir.resolve() in out_dir.resolve().parents:
        raise OutputConflictError(f"--out {out_dir} lies inside the input corpus {parent_dir}; "
                                  "choose a directory outside it")
    if not out_dir.exists():
        return
    taken = [n for n in OWN_FILES + ("shards",) if (out_dir / n).exists()]
    if taken and not overwrite:
        raise OutputConflictError(f"{out_dir} already holds a corpus ({', '.join(taken)}); choose "
                                  "another --out or pass --overwrite to replace it")
    for name in taken:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()


def shard_limits(parent: dict[str, Any], max_samples: int | None, max_bytes: int | str | None) -> tuple[int, int]:
    """Shard size limits: given ones, else the parent recipe's output settings."""
    out = (parent.get("recipe") or {}).get("output") or {}
    samples = max_samples or int(out.get("max_samples_per_shard", DEFAULT_MAX_SAMPLES))
    nbytes = parse_bytes(max_bytes or out.get("max_bytes_per_shard", DEFAULT_MAX_BYTES))
    return samples, nbytes


def derived_name(parent_name: str, suffix: str) -> str:
    return parent_name if parent_name.endswith(f"-{suffix}") else f"{parent_name}-{suffix}"


class DerivedCorpusWriter:
    """Writes the shards of a new corpus version; :meth:`finish` writes its manifest last."""

    def __init__(self, parent: Corpus, out_dir: str | Path, name: str, overwrite: bool = False,
                 max_samples: int | None = None, max_bytes: int | str | None = None) -> None:
        self.parent = parent
        self.out_dir = Path(out_dir)
        self.name = name
        claim_output(self.out_dir, parent.dir, overwrite)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        limit_samples, limit_bytes = shard_limits(parent.manifest, max_samples, max_bytes)
        prefix = "".join(c if c.isalnum() or c in "_-" else "-" for c in name) or "corpus"
        self.writer = ShardWriter(self.out_dir, prefix, limit_samples, limit_bytes)

    def write(self, sample: Sample) -> None:
        self.writer.write(sample)

    def abort(self) -> None:
        """Remove everything written so far (no manifest was written, so nothing refers to it)."""
        self.writer.abort()
        for shard in self.writer.shards:
            (self.out_dir / shard["path"]).unlink(missing_ok=True)
        self.writer.shards.clear()

    def finish(self, stages: list[dict[str, Any]], derivation: dict[str, Any],
               sources: list[dict[str, Any]] | None = None, seconds: float | None = None) -> dict[str, Any]:
        """Close the shards and write ``manifest.json``; returns the manifest."""
        shards = self.writer.close()
        parent = self.parent.manifest
        parent_sha = self.parent.manifest_sha256()
        derivation = {**derivation, "parent_manifest_sha256": parent_sha,
                      "parent_recipe_hash": parent["recipe_hash"]}
        ident = json.dumps({"parent": parent_sha, "derivation": derivation}, sort_keys=True, default=str)
        manifest = new_manifest(
            name=self.name, recipe=parent["recipe"], recipe_path=parent.get("recipe_path"),
            recipe_hash=hashlib.sha256(ident.encode()).hexdigest(), shards=shards,
            stages=list(parent.get("stages", [])) + stages,
            sources=list(parent.get("sources", [])) + list(sources or []),
            parents=[parent_record(self.parent.manifest_path, parent, parent_sha, self.out_dir)],
            derivation=derivation, osm=parent.get("osm"),
            timing={"seconds": round(seconds, 3)} if seconds is not None else None)
        write_manifest(self.out_dir, manifest)
        return manifest
