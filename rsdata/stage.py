"""The stage protocol and the registry of stage types a recipe can name.

A stage is a small class configured by plain values (so it pickles to workers). ``prepare``
runs once per run in the driver (read shared inputs, write caches); ``__call__`` runs in the
worker over an iterator of samples and yields samples, counting drops by reason in ``stats``.
Heavy state (models, spatial indexes) is built lazily inside the worker.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rsdata.remote import resolve_input
from rsdata.sample import Sample
from rsdata.stats import StageStats


@dataclass
class RunContext:
    """What a stage may know about the run: where inputs resolve, where state goes."""

    base_dir: Path  # recipe directory: relative input paths resolve against it
    state_dir: Path  # out/.rsdata: caches and markers
    # where the run's samples lie: one WGS84 bbox (and its native CRS as WKT) per footprint
    # a source declared (a raster, a layout grid, a parent corpus's extent); empty when unknown
    footprints_wgs84: list[tuple[float, float, float, float]] = field(default_factory=list)
    footprint_crs: list[str] = field(default_factory=list)
    allow_remote: bool = False
    # a later stage reads per-object geometry (meta["osm"]["objects"]): the OSM join keeps it
    keep_objects: bool = False

    def resolve(self, path: str) -> Path:
        """An input path of the recipe as a local path (see rsdata.remote)."""
        return resolve_input(path, self.base_dir, self.allow_remote)


class Stage:
    """Base class of pipeline stages."""

    name: ClassVar[str] = "stage"
    # the frozen dataclass a stage parses its schema-resolved options into (rsdata.settings);
    # tests check its fields against the stage's schema section
    settings_class: ClassVar[type | None] = None
    # True for stages that read the OSM join's per-object geometry (meta["osm"]["objects"]):
    # the plan then asks the join to keep it (RunContext.keep_objects)
    needs_objects: ClassVar[bool] = False

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = {k: v for k, v in config.items() if k != "type"}

    def input_files(self, ctx: RunContext) -> list[Path]:
        """Files this stage reads (their checksums go into the recipe hash and the manifest)."""
        return []

    def resources(self) -> dict[str, float]:
        """Resources a worker running this stage needs besides one CPU (e.g. ``{"num_gpus": 1}``);
        executors that schedule by resource (Ray) ask for them."""
        return {}

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        """Run once in the driver before any partition; returns facts for the manifest."""
        return {}

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        raise NotImplementedError

    def init_lazy(self) -> None:
        """(Re)set worker-local state (``_lazy*`` attributes): called on creation and unpickling."""

    def __getstate__(self) -> dict[str, Any]:
        # never ship lazily built worker state (indexes, models) between processes
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_lazy")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.init_lazy()


class BatchStage(Stage):
    """A stage that works on batches of a partition's samples: up to :attr:`batch_size` at a
    time go to :meth:`process_batch`, which yields them (or fewer) in order. For stages whose
    per-sample work vectorises (a bulk spatial query, a model forward pass)."""

    batch_size: ClassVar[int] = 64

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        batch: list[Sample] = []
        for sample in samples:
            stats.n_in += 1
            batch.append(sample)
            if len(batch) >= self.batch_size:
                yield from self.process_batch(batch, stats)
                batch = []
        if batch:
            yield from self.process_batch(batch, stats)

    def process_batch(self, batch: list[Sample], stats: StageStats) -> Iterator[Sample]:
        """Yield the samples of ``batch`` that go on (count ``stats.n_out`` and drops here)."""
        raise NotImplementedError


# stage type -> "module:Class"; imported only when a recipe uses the stage
STAGES: dict[str, str] = {
    "osm_join": "rsdata.osm.join:OsmJoin",
    "template_captions": "rsdata.captions.templates:TemplateCaptions",
    "llm_caption": "rsdata.llm.stage:LlmCaption",
    "score": "rsdata.scoring.stage:ScoreStage",
    "filter": "rsdata.filtering.stage:FilterStage",
    "human_merge": "rsdata.annotation.merge:HumanMerge",
    "landcover_join": "rsdata.landcover.stage:LandcoverJoin",
    "subset": "rsdata.filtering.subset_stage:SubsetStage",
    "vqa": "rsdata.tasks.vqa:VqaStage",
    "grounding": "rsdata.tasks.grounding:GroundingStage",
    "scene_label": "rsdata.tasks.scene:SceneLabel",
    "layout": "rsdata.synth.layout_stage:LayoutStage",
}


def create_stage(config: dict[str, Any]) -> Stage:
    """Build the stage a recipe entry describes (the recipe schema already checked ``type``)."""
    target = STAGES[config["type"]]
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(config)
