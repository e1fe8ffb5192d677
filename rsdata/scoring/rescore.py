"""``rsdata score`` over an existing corpus: an ordinary run with a corpus source and a score stage.

The corpus is never rewritten in place: the scored version goes to another directory, written
by the same executors as any run (markers, resume after a crash, stats by reason), and its
manifest names the parent (path, manifest sha256, recipe hash). The price is a second copy of
the images on disk; a subset list (``rsdata filter --subset-only``) avoids it for filtering.
Scoring itself is the ``score`` stage's: shards are read in the worker's thread, images are
decoded, resized and tokenised by its background loader, the model scores batch after batch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from rsdata.corpus.manifest import load_manifest
from rsdata.scoring.base import Scorer


def score_recipe(source: str | Path, out_dir: str | Path, scorer: Scorer,
                 corpus_name: str | None = None) -> dict[str, Any]:
    """The recipe (as a dict) that scores ``source`` into ``out_dir`` with ``scorer``'s settings."""
    parent = load_manifest(source)
    name = corpus_name or f"{parent['name']}-scored"
    if parent["name"].endswith("-scored") and corpus_name is None:
        name = parent["name"]
    name = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_") or "scored"
    out = (parent.get("recipe") or {}).get("output") or {}
    stage: dict[str, Any] = {"type": "score", "scorer": scorer.kind, "model": str(Path(scorer.model_path).resolve()),
                             "name": scorer.name, "device": scorer.device_setting}
    if scorer.batch_size_setting is not None:
        stage["batch_size"] = scorer.batch_size_setting
    output: dict[str, Any] = {"dir": str(out_dir)}
    for key in ("max_samples_per_shard", "max_bytes_per_shard"):
        if key in out:
            output[key] = out[key]
    return {"version": 1, "name": name,
            "description": f"scores.{scorer.name} of corpus {parent['name']}",
            "source": {"type": "corpus", "path": str(Path(source).resolve())},
            "stages": [stage], "output": output}


def score_corpus(source: str | Path, out_dir: str | Path, scorer: Scorer, corpus_name: str | None = None,
                 overwrite: bool = False, progress: bool = False, workers: int = 1,
                 after_plan: Callable[[], None] | None = None) -> dict[str, Any]:
    """Score every sample of ``source`` into a new corpus in ``out_dir``; returns its manifest.

    A rerun after a crash resumes (finished partitions are kept); a rerun of a finished job
    changes nothing."""
    from rsdata.executors.local import run_local
    from rsdata.plan import build_plan
    from rsdata.recipe import parse_recipe

    recipe = parse_recipe(score_recipe(source, out_dir, scorer, corpus_name), base_dir=Path.cwd(),
                          what="the score run")
    plan = build_plan(recipe, Path(out_dir), overwrite=overwrite)
    if after_plan is not None:
        after_plan()
    return run_local(plan, workers=workers, progress=progress).manifest
