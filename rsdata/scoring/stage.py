"""The ``score`` pipeline stage: each sample's image-caption cosine under ``scores.<name>``.

    stages:
      - type: template_captions
      - type: score
        scorer: hf_clip              # or baseline (an rsdata checkpoint / run directory)
        model: ../models/remoteclip  # relative to the recipe
        name: remoteclip             # key under scores (default: the scorer kind)
        batch_size: 16               # default: 64 on CUDA, 16 on the CPU
        device: auto                 # CUDA (float16 autocast) when there is a GPU, else CPU

The model is loaded once per worker process, on its first batch. The primary caption (the
``txt`` member) is scored. A sample without a caption stops the run: put a captioning stage
before ``score``.

Decoding, resizing and tokenising run in a background loader (:mod:`rsdata.scoring.loader`,
one thread on the CPU) that prepares the next batches while the model scores this one; the
upstream stages and the source stay in the worker's own thread. Scores are the same as
``scorer.score`` on the same batches (the same arithmetic, only moved to another thread).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from rsdata.errors import InputError
from rsdata.sample import Sample
from rsdata.scoring import Scorer, create_scorer
from rsdata.scoring.base import PreparedBatch
from rsdata.scoring.loader import DEFAULT_DEPTH, default_workers, prefetch
from rsdata.imaging import decode_rgb
from rsdata.settings import from_config
from rsdata.stage import RunContext, Stage
from rsdata.stats import StageStats

SCORE_DIGITS = 6


@dataclass(frozen=True)
class ScoreSettings:
    """The ``score`` stage's options, parsed once from the schema-resolved recipe (``$defs.score``)."""

    scorer: str
    model: str
    device: str
    name: str | None = None  # key under scores; None: the scorer kind
    batch_size: int | None = None  # None: the scorer's default (64 on CUDA, 16 on the CPU)


def decode_image(sample: Sample) -> Image.Image:
    """The sample's 8-bit rendering as an RGB PIL image."""
    return decode_rgb(sample.image, f"sample {sample.key}")


Pairs = list[tuple[Sample, str]]  # a batch of samples with the caption to score


def prepare_samples(scorer: Scorer, batch: Pairs) -> PreparedBatch:
    """The loader's work for one batch: decode each image and prepare the pairs for the model.
    An undecodable image or a caption the tokenizer refuses names its sample."""
    images = [decode_image(sample) for sample, _ in batch]
    return scorer.prepare_pairs([s.key for s, _ in batch], images, [text for _, text in batch])


def store_scores(scorer: Scorer, batch: Pairs, values: Iterable[float]) -> None:
    """Each sample's score under ``scores.<scorer.name>``, rounded to 6 digits."""
    for (sample, _), value in zip(batch, values):
        sample.meta.setdefault("scores", {})[scorer.name] = round(float(value), SCORE_DIGITS)


def caption_batches(samples: Iterator[Sample], stats: StageStats, size: int) -> Iterator[Pairs]:
    """Batches of ``size`` (sample, caption) pairs; a sample without a caption is an error."""
    batch: Pairs = []
    for sample in samples:
        stats.n_in += 1
        text = sample.caption.strip()
        if not text:
            raise InputError(f"score: sample {sample.key} has no caption; put a captioning stage "
                             "(e.g. template_captions) before the score stage in the recipe")
        batch.append((sample, text))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class ScoreStage(Stage):
    name = "score"
    settings_class: ClassVar[type | None] = ScoreSettings
    # the background loader: threads (None: 1 on the CPU, up to 8 on CUDA; 0: none, prepare
    # in this thread) and batches prepared ahead of the one being scored
    loader_workers: int | None = None
    loader_depth: int = DEFAULT_DEPTH

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.settings = from_config(ScoreSettings, self.config, "score")
        self.score_name: str = self.settings.name or self.settings.scorer
        # the model path as prepare resolved it (relative to the recipe); shipped to workers
        self.model_path: str = self.settings.model
        self._make_scorer(self.model_path)  # checks name, batch size and device now
        self.init_lazy()

    def init_lazy(self) -> None:
        self._lazy_scorer: Scorer | None = None

    def _make_scorer(self, model: str) -> Scorer:
        cfg = self.settings
        return create_scorer(cfg.scorer, model, name=self.score_name, batch_size=cfg.batch_size,
                             device=cfg.device)

    def resources(self) -> dict[str, float]:
        return {"num_gpus": 1} if self.settings.device == "cuda" else {}

    def input_files(self, ctx: RunContext) -> list[Path]:
        scorer = self._make_scorer(str(ctx.resolve(self.settings.model)))
        scorer.check()
        return scorer.input_files()

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        self.model_path = str(ctx.resolve(self.settings.model))
        scorer = self._make_scorer(self.model_path)
        scorer.check()  # a wrong model directory fails here, before any partition runs
        return {"scorer": self.settings.scorer, "name": self.score_name, "model": self.model_path}

    def scorer(self) -> Scorer:
        if self._lazy_scorer is None:
            self._lazy_scorer = self._make_scorer(self.model_path)
        return self._lazy_scorer

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        scorer = self.scorer()
        workers = default_workers(scorer.device.type) if self.loader_workers is None else self.loader_workers
        batches = caption_batches(samples, stats, scorer.batch_size)
        first = next(batches, None)  # load the model only when there is something to score
        if first is None:
            return
        scorer.load()  # here, in this thread, before the loader's threads use it
        loaded = prefetch(itertools.chain([first], batches), lambda b: prepare_samples(scorer, b),
                          workers=workers, depth=self.loader_depth, name="rsdata-score-loader")
        try:
            for batch, prepared in loaded:
                store_scores(scorer, batch, scorer.score_prepared(prepared))
                stats.n_out += len(batch)
                yield from (sample for sample, _ in batch)
        finally:
            loaded.close()  # stops the loader's threads when a later stage stops early
