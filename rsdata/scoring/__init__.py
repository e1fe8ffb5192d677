"""Contrastive scorers: how well does a caption match its image?

    from rsdata.scoring import create_scorer
    scorer = create_scorer("hf_clip", "models/remoteclip-vit-b-32")   # or "baseline", "runs/base"
    scorer.score(images, captions)        # (N,) cosine per pair
    scorer.embed_images(images)           # (N, D) L2-normalised
    scorer.embed_texts(captions)          # (N, D) L2-normalised

Implementations: ``baseline`` (a checkpoint of the rsdata dual encoder) and ``hf_clip`` (a
Hugging Face ``CLIPModel`` saved in a local directory). The ``score`` pipeline stage and
``rsdata score`` store each sample's score under ``scores.<name>`` in its json.

For throughput, ``score`` splits in two: ``scorer.prepare_pairs(keys, images, texts)`` (CPU:
resize, tokenise; thread-safe once loaded) and ``scorer.score_prepared(batch)`` (the model's
forward pass); :func:`rsdata.scoring.loader.prefetch` runs the first in background threads
while the caller runs the second, which is how the ``score`` stage works.
"""

from __future__ import annotations

import importlib
from typing import Any

from rsdata.scoring.base import Scorer, ScorerError, check_name

# scorer kind -> "module:Class"; imported only when used
SCORERS: dict[str, str] = {
    "baseline": "rsdata.scoring.baseline:BaselineScorer",
    "hf_clip": "rsdata.scoring.hf_clip:HFClipScorer",
}


def create_scorer(kind: str, model: str, name: str | None = None, batch_size: int | None = None,
                  device: str = "auto", **kwargs: Any) -> Scorer:
    """A scorer of ``kind`` for the model at ``model`` (nothing is loaded until first use)."""
    if kind not in SCORERS:
        raise ScorerError(f"unknown scorer {kind!r}; choose one of {', '.join(sorted(SCORERS))}")
    module, cls = SCORERS[kind].split(":")
    return getattr(importlib.import_module(module), cls)(model, name=name, batch_size=batch_size,
                                                          device=device, **kwargs)


__all__ = ["SCORERS", "Scorer", "ScorerError", "check_name", "create_scorer"]
