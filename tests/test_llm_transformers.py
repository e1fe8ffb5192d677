"""The ``transformers`` backend and the ``llm_caption`` stage on a tiny random Llama built here.

Its answers are garbage, so every one must be rejected and every sample must fall back to its
template captions; the cache must make a rerun generate nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import webdataset as wds
from fixtures import rasters as fx
from llm_support import build_tiny_llm, farm_tile

from rsdata.cli import main as cli_main
from rsdata.llm.audit import read_audit
from rsdata.llm.backends import GenRequest, LlmBackendError, make_backend
from rsdata.llm.facts import build_facts
from rsdata.llm.local import TransformersBackend
from rsdata.llm.prompts import build_prompt
from rsdata.llm.stage import LlmCaption
from rsdata.corpus.manifest import load_manifest, shard_paths
from rsdata.recipe import parse_recipe
from rsdata.sample import Sample
from rsdata.stats import StageStats


def resolved_stage(entry: dict[str, Any]) -> dict[str, Any]:
    """A stage entry as a run hands it to the stage: checked, defaults filled in by the schema."""
    recipe = fx.recipe_dict("unused.tif")
    recipe["stages"] = [entry]
    return parse_recipe(recipe, Path(".")).stages[0]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


def farm_meta() -> dict[str, Any]:
    return {
        "key": "farm",
        "geo": {"size": [256, 256], "gsd_m": 2.5},
        "osm": {"n_features": 11, "tags": farm_tile()},
    }


def test_batched_generation_matches_one_at_a_time(tiny_llm: Path) -> None:
    backend = TransformersBackend(str(tiny_llm), batch_size=4, device="cuda")  # falls back to CPU
    facts = build_facts(farm_meta())
    prompts = [build_prompt(facts, s) for s in ("short", "detailed", "question")]
    reqs = [GenRequest(p, 12) for p in prompts]
    arrived: list[int] = []
    batched = backend.generate(reqs, lambda i, _t: arrived.append(i))
    single = [backend.generate([r])[0] for r in reqs]
    assert sorted(arrived) == [0, 1, 2] and all(isinstance(t, str) and t for t in batched)
    assert batched == single  # left padding does not change greedy answers
    rendered = backend.render(prompts[0])
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith(
        "<|im_start|>assistant\nThis aerial image shows"
    )


def test_sampling_is_seeded(tiny_llm: Path) -> None:
    backend = TransformersBackend(str(tiny_llm))
    prompt = build_prompt(build_facts(farm_meta()))
    a = backend.generate([GenRequest(prompt, 12, 1.0, 0.95, seed=1)])
    b = backend.generate([GenRequest(prompt, 12, 1.0, 0.95, seed=1)])
    c = backend.generate([GenRequest(prompt, 12, 1.0, 0.95, seed=2)])
    assert a == b and a != c


def test_fingerprint_changes_with_the_weights(tiny_llm: Path, tmp_path: Path) -> None:
    other = build_tiny_llm(tmp_path / "other", seed=1)
    assert (
        TransformersBackend(str(tiny_llm)).fingerprint()
        != TransformersBackend(str(other)).fingerprint()
    )
    assert (
        TransformersBackend(str(tiny_llm)).fingerprint()
        == TransformersBackend(str(tiny_llm)).fingerprint()
    )


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LlmBackendError, match="no model at .*config.json"):
        make_backend({"backend": "transformers", "model": str(tmp_path)}).check()
    with pytest.raises(LlmBackendError, match="needs model"):
        make_backend({"backend": "transformers"})


def test_stage_rejects_garbage_and_falls_back(tiny_llm: Path, tmp_path: Path) -> None:
    stage = LlmCaption(
        resolved_stage(
            {
                "type": "llm_caption",
                "backend": "transformers",
                "model": str(tiny_llm),
                "retries": 1,
                "styles": ["short", "question"],
            }
        )
    )
    stage.cache_path = str(tmp_path / "cache.sqlite")
    stage.audit_dir = str(tmp_path / "audit")
    empty = {
        "key": "empty",
        "geo": {"size": [256, 256], "gsd_m": 2.5},
        "osm": {"n_features": 0, "tags": [], "coverage": {"fraction": 1.0, "sources": ["osm"]}},
    }
    samples = [
        Sample(key="farm", image=b"x", meta=farm_meta()),
        Sample(key="empty", image=b"x", meta=empty),
    ]
    stats = StageStats("llm_caption")
    out = list(stage(iter(samples), stats))
    assert [s.key for s in out] == ["farm", "empty"]
    c = stats.extra
    assert c["captions_requested"] == 2 and c["answers"] == 4 and c["rejected"] == 4
    assert c["captions_fallback"] == 2 and c["skipped:no_visible_tags"] == 1 and c["accepted"] == 0
    # no caption survived, so each sample got one template caption
    assert [cap["kind"] for cap in out[0].captions] == ["template"]
    assert "no" in out[1].caption.lower()
    records = [
        json.loads(line) for line in (tmp_path / "audit" / "farm.jsonl").read_text().splitlines()
    ]
    assert Counter((r["style"], r["try"]) for r in records) == Counter(
        {("short", 1): 1, ("short", 2): 1, ("question", 1): 1, ("question", 2): 1}
    )
    assert all(r["reasons"] and r["complaints"] for r in records)
    # a second pass over the same samples is served from the cache
    stats2 = StageStats("llm_caption")
    again = [Sample(key="farm", image=b"x", meta=farm_meta())]
    list(stage(iter(again), stats2))
    assert stats2.extra["cache_hits"] == 4


def test_on_failure_drop_counts_the_reason(tiny_llm: Path, tmp_path: Path) -> None:
    stage = LlmCaption(
        resolved_stage(
            {
                "type": "llm_caption",
                "backend": "transformers",
                "model": str(tiny_llm),
                "retries": 0,
                "on_failure": "drop",
                "audit": False,
            }
        )
    )
    stage.cache_path = str(tmp_path / "cache.sqlite")
    stats = StageStats("llm_caption")
    assert list(stage(iter([Sample(key="farm", image=b"x", meta=farm_meta())]), stats)) == []
    assert stats.dropped["llm_rejected"] == 1 and stats.n_in == 1 and stats.n_out == 0


def test_run_with_a_local_model_and_rerun_from_the_cache(
    tiny_llm: Path, tmp_path: Path, raster_files: dict[str, Path], osm_geojson: Path
) -> None:
    recipe = fx.recipe_dict(
        raster_files["utm_rgb"], osm=osm_geojson, captions=True, size=128, partition_size=2
    )
    recipe["stages"].append(
        {
            "type": "llm_caption",
            "backend": "transformers",
            "model": str(tiny_llm),
            "retries": 1,
            "batch_size": 4,
            "cache": str(tmp_path / "cache.sqlite"),
        }
    )
    path = fx.write_recipe(tmp_path, recipe)
    assert cli_main(["run", str(path), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    manifest = load_manifest(tmp_path / "a")
    stage = next(s for s in manifest["stages"] if s["name"] == "llm_caption")
    c = stage["counters"]
    assert c["captions_requested"] > 0 and c["answers"] == 2 * c["captions_requested"]
    assert c["captions_fallback"] == c["captions_requested"]
    assert sum(v for k, v in c.items() if k.startswith("rejected:")) >= c["rejected"]
    for shard in shard_paths(tmp_path / "a"):
        for entry in wds.WebDataset(str(shard), shardshuffle=False):
            meta = json.loads(entry["json"])
            assert meta["captions"] and meta["captions"][0]["kind"] == "template"
    assert len(list(read_audit(tmp_path / "a"))) == c["answers"]
    # another output directory with the same cache: nothing is generated again
    assert cli_main(["run", str(path), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    c2 = next(s for s in load_manifest(tmp_path / "b")["stages"] if s["name"] == "llm_caption")[
        "counters"
    ]
    assert c2["cache_hits"] == c2["answers"] == c["answers"]
