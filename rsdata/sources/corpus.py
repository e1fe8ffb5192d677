"""An existing rsdata corpus as a source: ``source: {type: corpus, path: DIR}``.

Re-scoring, re-captioning (``llm_caption`` over an old corpus), filtering and annotation
merges are then ordinary runs: the same markers, resume, Ray, progress and stats by reason.
Every member of every sample is kept (extras included); each sample's json gets
``origin: {type: corpus, parent_key, parent, parent_manifest_sha256, root}`` so a reader never
guesses where it came from, and the new manifest names its parent (path, manifest sha256,
recipe hash).

The parent is checked in the driver before anything is written: its manifest must load, every
shard must match the size and sha256 the manifest records (``verify: false`` skips the
hashing), and it must not be the run's own output directory (or contain it, or lie inside it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsdata.corpus.manifest import ShardRecord, parent_record
from rsdata.corpus.reader import Corpus, iter_shard, Entry
from rsdata.errors import InputError, OutputConflictError
from rsdata.sample import Sample
from rsdata.settings import from_config
from rsdata.sources.base import InputRecord, Partition, PlanContext, Source, SourcePlan, partition_id
from rsdata.stats import StageStats

STAGE_NAME = "read"


@dataclass(frozen=True)
class CorpusSettings:
    """The ``corpus`` source's options, parsed once from the schema-resolved recipe."""

    path: str
    verify: bool
    partition_size: int | None = None  # samples per partition; None: one partition per shard
    max_samples: int | None = None


@dataclass(frozen=True)
class CorpusBlock:
    """The payload of a corpus partition: samples ``[start, start + count)`` of one shard."""

    shard: ShardRecord
    start: int
    count: int
    parent_name: str
    parent_manifest_sha256: str


def _inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


class CorpusSource(Source):
    type = "corpus"
    stats_name = STAGE_NAME

    def __init__(self, config: dict[str, Any], source_id: str, key_prefix: str = "") -> None:
        super().__init__(config, source_id, key_prefix)
        self.settings = from_config(CorpusSettings, self.config, "source")

    def plan(self, ctx: PlanContext) -> SourcePlan:
        cfg = self.settings
        path = ctx.resolve(cfg.path)
        if not path.exists():
            raise InputError(f"source {self.id}: corpus {path} does not exist (source.path, relative "
                             "to the recipe file)")
        if not path.is_dir() or not (path / "manifest.json").is_file():
            raise InputError(f"source {self.id}: {path} holds no manifest.json, so it is not an rsdata "
                             "corpus (or its run has not finished: run it again to write the manifest)")
        here, out = path.resolve(), ctx.out_dir.resolve()
        if _inside(out, here) or _inside(here, out):
            raise OutputConflictError(
                f"source {self.id}: corpus {path} is the run's own output directory {ctx.out_dir} (or "
                "contains it, or lies inside it); a run never reads what it writes: choose another --out")
        corpus = Corpus(path, verify=cfg.verify)
        if cfg.verify:
            corpus.verify_all()  # a changed shard stops the run before anything is written
        sha = corpus.manifest_sha256()
        plan = SourcePlan(partitions=self._partitions(corpus, sha))
        manifest = corpus.manifest
        display = ctx.display(corpus.manifest_path)
        plan.inputs.append(InputRecord(
            os.path.relpath(corpus.manifest_path, ctx.base_dir), sha,
            {"path": display, "role": "corpus", "sha256": sha,
             "bytes": corpus.manifest_path.stat().st_size,
             "license": "see the sources of the parent corpus (listed here after it)",
             "attribution": f"rsdata corpus {manifest['name']}", "manifest": None}))
        for entry in manifest.get("sources", []):  # the licenses of what the samples hold travel on
            plan.inputs.append(InputRecord("", entry.get("sha256", ""), dict(entry)))
        for bbox in manifest.get("footprints_wgs84", []):
            plan.footprints_wgs84.append(tuple(bbox))
        plan.footprint_crs.extend(manifest.get("footprint_crs", []))
        plan.parents.append(parent_record(corpus.manifest_path, manifest, sha, ctx.out_dir))
        plan.report = {"path": display, "shards": len(manifest["shards"]),
                       "samples": plan.size, "verified": cfg.verify}
        return plan

    def _partitions(self, corpus: Corpus, sha: str) -> list[Partition]:
        cfg = self.settings
        budget = cfg.max_samples
        parts: list[Partition] = []
        for rec in corpus.shards():
            step = cfg.partition_size or rec.nsamples
            for start in range(0, rec.nsamples, step):
                count = min(step, rec.nsamples - start)
                if budget is not None:
                    count = min(count, budget)
                    budget -= count
                if count <= 0:
                    break
                block = CorpusBlock(rec, start, count, corpus.name, sha)
                parts.append(Partition(partition_id(self.id, len(parts)), self.id, count, block))
        return parts

    def read(self, partition: Partition, stats: StageStats) -> Iterator[Sample]:
        block: CorpusBlock = partition.payload
        whole = block.start == 0 and block.count == block.shard.nsamples
        # a whole shard is verified while it streams; a slice was verified by plan()
        entries = iter_shard(block.shard.file, block.shard if whole else None,
                             verify=self.settings.verify)
        index = -1
        for raw in entries:
            index += 1
            if index < block.start:
                continue
            if index >= block.start + block.count:
                break
            stats.n_in += 1
            key = raw.pop("__key__")
            sample = Entry(key, str(block.shard.file), raw).sample()
            yield self._adopt(sample, block)
            stats.n_out += 1
        if whole and index + 1 != block.shard.nsamples:
            raise InputError(f"shard {block.shard.file} holds {index + 1} samples but its manifest says "
                             f"{block.shard.nsamples}: the corpus changed after its manifest was written")

    def _adopt(self, sample: Sample, block: CorpusBlock) -> Sample:
        meta = sample.meta
        previous = meta.get("origin") or {}
        root = previous.get("root") or previous.get("type") or (
            "synthetic" if meta.get("synthetic") else "raster")
        meta["origin"] = {"type": "corpus", "source": self.id, "parent_key": sample.key,
                          "parent": block.parent_name,
                          "parent_manifest_sha256": block.parent_manifest_sha256, "root": root}
        key = self.key(sample.key)
        meta["key"] = key
        return Sample(key=key, image=sample.image, image_format=sample.image_format, meta=meta,
                      tif=sample.tif, extra=sample.extra)
