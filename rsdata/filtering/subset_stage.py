"""The ``subset`` stage: keep the samples a subset list keeps (pass 2 of ``rsdata filter``).

Run over a ``corpus`` source, it makes resharding an ordinary run (markers, resume, Ray, stats
by reason): every sample whose key the subset list drops is dropped with the list's reason. A
subset list applies only to the corpus it was computed from: each sample's ``origin`` names its
parent's manifest sha256, and a sample of another corpus version stops the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rsdata.errors import InputError
from rsdata.filtering.subset import Subset
from rsdata.sample import Sample
from rsdata.settings import from_config
from rsdata.stage import RunContext, Stage
from rsdata.stats import StageStats


@dataclass(frozen=True)
class SubsetSettings:
    path: str  # a subset list (rsdata filter --subset-only), relative to the recipe


class SubsetStage(Stage):
    name = "subset"
    settings_class: ClassVar[type | None] = SubsetSettings

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.settings = from_config(SubsetSettings, self.config, "stages[subset]")
        self.subset_path: str | None = None  # resolved in prepare()
        self.init_lazy()

    def init_lazy(self) -> None:
        self._lazy_subset: tuple[frozenset[str], dict[str, str], str] | None = None

    def input_files(self, ctx: RunContext) -> list[Path]:
        return [ctx.resolve(self.settings.path)]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        self.subset_path = str(ctx.resolve(self.settings.path))
        subset = Subset.load(self.subset_path)
        return {"subset": self.subset_path, "kept": len(subset.kept), "dropped": subset.counts(),
                "parent_manifest_sha256": subset.parent_manifest_sha256}

    def _subset(self) -> tuple[frozenset[str], dict[str, str], str]:
        if self._lazy_subset is None:
            if self.subset_path is None:
                raise RuntimeError("SubsetStage.prepare() was not called")
            subset = Subset.load(self.subset_path)
            reasons = {k: str(v.get("reason", "not_in_subset")) for k, v in subset.dropped.items()}
            self._lazy_subset = (frozenset(subset.kept), reasons, subset.parent_manifest_sha256)
        return self._lazy_subset

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        kept, reasons, parent_sha = self._subset()
        for sample in samples:
            stats.n_in += 1
            origin = sample.meta.get("origin") or {}
            key = sample.key
            if origin.get("type") == "corpus":
                key = origin.get("parent_key", key)
                if origin.get("parent_manifest_sha256") != parent_sha:
                    raise InputError(
                        f"the subset list {self.subset_path} was computed from another corpus (or "
                        f"another version of it): its parent manifest sha256 is {parent_sha[:12]}..., "
                        f"sample {sample.key} comes from "
                        f"{str(origin.get('parent_manifest_sha256'))[:12]}...; compute the subset again")
            if key in kept:
                stats.n_out += 1
                yield sample
            else:
                stats.drop(reasons.get(key, "not_in_subset"))
