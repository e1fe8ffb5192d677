"""Stage options are declared once: each stage's settings dataclass names exactly the fields of
its schema section, defaults live only in the schema, and ``prepare`` leaves the options alone."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures import rasters as fx
from PIL import Image

from rsdata import schemas
from rsdata.errors import RecipeError
from rsdata.recipe import parse_recipe
from rsdata.settings import field_names
from rsdata.stage import STAGES, RunContext, Stage



def stage_class(kind: str) -> type[Stage]:
    module, name = STAGES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def settings_class(kind: str) -> type:
    cls = stage_class(kind).settings_class
    if cls is None:
        pytest.fail(f"stage {kind} has no settings_class")
    return cls


def schema_section(kind: str) -> dict[str, Any]:
    return schemas.validator("recipe").schema["$defs"][kind]


def resolved_stage(entry: dict[str, Any]) -> dict[str, Any]:
    """A stage entry as a run hands it to the stage: checked, defaults filled in by the schema."""
    recipe = fx.recipe_dict("unused.tif")
    recipe["stages"] = [entry]
    return parse_recipe(recipe, Path(".")).stages[0]


@pytest.mark.parametrize("kind", sorted(STAGES))
def test_stage_settings_declare_exactly_the_schema_fields(kind: str) -> None:
    cls = settings_class(kind)
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert field_names(cls) == set(schema_section(kind)["properties"]) - {"type"}


@pytest.mark.parametrize("kind", sorted(STAGES))
def test_stage_defaults_live_in_the_schema_only(kind: str) -> None:
    """A field with a schema default has no dataclass default; one without is Optional (None)."""
    cls = settings_class(kind)
    props = schema_section(kind)["properties"]
    for f in dataclasses.fields(cls):
        has_default = (f.default is not dataclasses.MISSING
                       or f.default_factory is not dataclasses.MISSING)
        prop = props[f.name]
        section_defaults = (prop.get("type") == "object" and "properties" in prop
                            and all("default" in p for p in prop["properties"].values()))
        if "default" in prop or section_defaults:  # a section whose fields all have defaults
            assert not has_default, f"{kind}.{f.name}: its default belongs in the schema"
        elif f.name not in schema_section(kind).get("required", []):
            assert f.default is None, f"{kind}.{f.name}: no schema default, so None"


MINIMAL = {
    "llm_caption": {"type": "llm_caption"},
    "score": {"type": "score", "scorer": "hf_clip", "model": "models/clip"},
    "filter": {"type": "filter", "score": "clip", "threshold": 0.2},
}


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_stages_read_their_options_from_the_resolved_recipe(kind: str) -> None:
    config = resolved_stage(MINIMAL[kind])
    stage = stage_class(kind)(config)
    settings = stage.settings  # type: ignore[attr-defined]
    assert isinstance(settings, settings_class(kind))
    for name, prop in schema_section(kind)["properties"].items():
        if name != "type" and "default" in prop and name not in MINIMAL[kind]:
            assert getattr(settings, name) == prop["default"], name
    # a hand-built config without the schema's defaults is refused, not silently defaulted
    with pytest.raises(RecipeError, match="missing option"):
        stage_class(kind)(MINIMAL[kind])


def _eval_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path / "a.png")
    return path


def test_filter_prepare_keeps_its_options_and_ships_the_index(tmp_path: Path) -> None:
    from rsdata.filtering.stage import FilterStage

    _eval_folder(tmp_path / "recipe" / "eval")
    config = resolved_stage({"type": "filter", "leakage": [{"path": "eval"}]})
    stage = FilterStage(config)
    before = (copy.deepcopy(stage.config), stage.settings)
    ctx = RunContext(base_dir=tmp_path / "recipe", state_dir=tmp_path / "state")
    ctx.state_dir.mkdir()
    facts = stage.prepare(ctx)
    assert facts["eval_images"] == 1
    assert (stage.config, stage.settings) == before  # paths resolved elsewhere, not in the options
    assert stage.settings.leakage[0].path == "eval"
    worker = pickle.loads(pickle.dumps(stage))
    assert worker.index_path == stage.index_path and Path(worker.index_path).is_file()


class _FakeBackend:
    model = "fake"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def check(self) -> None:
        pass


def test_llm_prepare_resolves_the_model_without_touching_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rsdata.llm.stage as llm_stage

    seen: list[dict[str, Any]] = []

    def fake_backend(config: dict[str, Any]) -> _FakeBackend:
        seen.append(config)
        return _FakeBackend(config)

    monkeypatch.setattr(llm_stage, "make_backend", fake_backend)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    config = resolved_stage(
        {"type": "llm_caption", "backend": "transformers", "model": "models/tiny"}
    )
    stage = llm_stage.LlmCaption(config)
    before = (copy.deepcopy(stage.config), stage.settings)
    ctx = RunContext(base_dir=tmp_path, state_dir=tmp_path / "state")
    ctx.state_dir.mkdir()
    stage.prepare(ctx)
    stage.prepare(ctx)  # twice: still resolved against the recipe's own path
    assert (stage.config, stage.settings) == before
    resolved = str(tmp_path / "models" / "tiny")
    assert [c["model"] for c in seen] == [resolved, resolved]
    worker = pickle.loads(pickle.dumps(stage))
    assert worker.model_path == resolved and worker.backend_config()["model"] == resolved
    assert worker.cache_path == str(tmp_path / "state" / llm_stage.CACHE_FILE)
