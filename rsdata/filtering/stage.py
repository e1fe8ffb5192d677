"""The ``filter`` pipeline stage: a score threshold and the eval-leakage guard, while a run writes.

    stages:
      - type: score
        scorer: baseline
        model: ../runs/baseline
      - type: filter
        score: baseline        # scores.<name> set by an earlier score stage
        threshold: 0.2         # keep score >= 0.2 (drops counted as below_threshold)
        leakage:               # drop tiles that near-duplicate evaluation images (eval_leakage)
          - {path: ../eval/rsicd/dataset_rsicd.json, images: ../eval/rsicd/images}
          - {path: ../eval/ucm}

A stage sees one partition at a time, so what needs the whole corpus -- a top fraction (a
global quantile), near-duplicate removal across partitions, semantic matching -- is done
after the run by ``rsdata filter`` on the finished corpus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rsdata.errors import InputError
from rsdata.filtering.decide import BELOW_THRESHOLD, LEAKAGE
from rsdata.filtering.fingerprints import FingerprintBuilder
from rsdata.filtering.leakage import EvalIndex, EvalSpec, build_eval_index, find_leaks, folder_images
from rsdata.sample import Sample
from rsdata.settings import from_config
from rsdata.stage import BatchStage, RunContext
from rsdata.stats import StageStats

BATCH = 64


@dataclass(frozen=True)
class EvalSetSettings:
    """One ``leakage`` entry of the ``filter`` stage."""

    path: str
    images: str | None = None
    splits: list[str] | None = None

    def spec(self) -> EvalSpec:
        return EvalSpec(self.path, self.images, tuple(self.splits) if self.splits else None)


@dataclass(frozen=True)
class FilterStageSettings:
    """The ``filter`` stage's options, parsed once from the schema-resolved recipe
    (``$defs.filter``; not to be confused with ``rsdata filter``'s FilterSettings)."""

    max_phash_distance: int
    max_dhash_distance: int
    score: str | None = None
    threshold: float | None = None
    leakage: list[EvalSetSettings] | None = None


def _listing_ident(specs: list[EvalSpec]) -> str:
    """Changes when an evaluation set's files change (paths, sizes, modification times)."""
    parts: list[Any] = []
    for spec in specs:
        root = Path(spec.path)
        if root.is_file():
            files = [root]
        elif (root / "manifest.json").is_file():
            files = [root / "manifest.json"]
        else:
            files = folder_images(root) if root.is_dir() else []
        if spec.images:
            files += folder_images(Path(spec.images))
        parts.append([spec.to_json(), [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class FilterStage(BatchStage):
    name = "filter"
    batch_size: ClassVar[int] = BATCH
    settings_class: ClassVar[type | None] = FilterStageSettings

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        parsed = dict(self.config)
        if "leakage" in parsed:
            parsed["leakage"] = [from_config(EvalSetSettings, e, f"filter.leakage[{i}]")
                                 for i, e in enumerate(parsed["leakage"])]
        self.settings = from_config(FilterStageSettings, parsed, "filter")
        cfg = self.settings
        # the evaluation sets as the recipe names them (prepare resolves them against ctx)
        self.leakage: list[EvalSpec] = [e.spec() for e in cfg.leakage or []]
        if cfg.threshold is not None and not cfg.score:
            raise InputError("filter stage: a threshold needs 'score', the name of the score to "
                             "compare (set by an earlier score stage)")
        if cfg.threshold is None and not self.leakage:
            raise InputError("filter stage: give a 'threshold' (with 'score') and/or 'leakage'")
        self.index_path: str | None = None
        self.init_lazy()

    def init_lazy(self) -> None:
        self._lazy_index: EvalIndex | None = None

    def input_files(self, ctx: RunContext) -> list[Path]:
        """The files that define the evaluation sets: Karpathy JSONs and corpus manifests (a
        folder's images are not listed one by one; their listing keys the fingerprint cache)."""
        files = []
        for spec in self.leakage:
            path = ctx.resolve(spec.path)
            if path.is_file():
                files.append(path)
            elif (path / "manifest.json").is_file():
                files.append(path / "manifest.json")
        return files

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        """Fingerprint the evaluation images once, in the driver (cached under .rsdata/)."""
        if not self.leakage:
            return {}
        specs = [EvalSpec(str(ctx.resolve(s.path)), str(ctx.resolve(s.images)) if s.images else None,
                          s.splits) for s in self.leakage]
        cache = ctx.state_dir / f"leakage-{_listing_ident(specs)}.npz"
        if cache.exists():
            index = EvalIndex.load(cache)
        else:
            index = build_eval_index(specs)
            index.save(cache)
        self.index_path = str(cache)
        return {"eval_sets": index.sets, "eval_images": len(index.fingerprints),
                "unreadable_eval_images": len(index.unreadable)}

    def _index(self) -> EvalIndex:
        if self._lazy_index is None:
            if self.index_path is None:
                raise RuntimeError("FilterStage.prepare() must run before the stage is used")
            self._lazy_index = EvalIndex.load(Path(self.index_path))
        return self._lazy_index

    def _leaked(self, batch: list[Sample], stats: StageStats) -> set[int]:
        builder = FingerprintBuilder()
        for sample in batch:
            try:
                builder.add(sample.key, sample.image)
            except (OSError, ValueError) as exc:
                raise InputError(f"filter: the image of sample {sample.key} cannot be decoded ({exc})") from None
        leaks = find_leaks(builder.build(), self._index(), self.settings.max_phash_distance,
                           self.settings.max_dhash_distance)
        for leak in leaks.values():
            stats.extra[f"leak_{leak.kind}"] += 1
        return set(leaks)

    def process_batch(self, batch: list[Sample], stats: StageStats) -> Iterator[Sample]:
        leaked = self._leaked(batch, stats) if self.leakage else set()
        for i, sample in enumerate(batch):
            if i in leaked:
                stats.drop(LEAKAGE)
                continue
            threshold, score = self.settings.threshold, self.settings.score
            if threshold is not None:
                value = sample.meta.get("scores", {}).get(score)
                if value is None:
                    raise InputError(f"filter: sample {sample.key} has no score {score!r}; put a "
                                     f"score stage (name: {score}) before the filter stage")
                if value < threshold:
                    stats.drop(BELOW_THRESHOLD)
                    continue
            stats.n_out += 1
            yield sample
