"""The source protocol: an existing corpus as a source, several sources in one recipe, extra
members that survive a round trip, partition ids that cannot collide, and the registries that
the recipe schema must agree with."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from fixtures import rasters as fx
from fixtures.scene import corpus_keys, write_scene
from rsdata import schemas
from rsdata.cli import main
from rsdata.corpus import Corpus, load_manifest
from rsdata.corpus.writer import ShardWriter
from rsdata.errors import InputError, RsdataError
from rsdata.executors.local import run_local
from rsdata.inputs import sha256_file
from rsdata.plan import build_plan
from rsdata.recipe import load_recipe, parse_recipe
from rsdata.sample import Sample


def write(directory: Path, recipe: dict[str, Any], name: str = "recipe.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def run(recipe: Path, out: Path, *extra: str) -> int:
    return main(["run", str(recipe), "--out", str(out), "--quiet", *extra])


def members(out: Path) -> dict[str, dict[str, bytes]]:
    """key -> {member: bytes} of every sample of a corpus (read through the corpus reader)."""
    return {e.key: dict(e.members) for e in Corpus(out).entries()}


@pytest.fixture
def parent(raster_files: dict[str, Path], osm_geojson: Path, tmp_path: Path) -> Path:
    """A small captioned corpus with OSM stats: the parent of derived runs."""
    recipe = fx.recipe_dict(raster_files["utm_rgb"], osm=osm_geojson, captions=True, size=64)
    path = write(tmp_path / "parent-recipe", recipe)
    out = tmp_path / "parent"
    assert run(path, out) == 0
    return out


def corpus_recipe(parent: Path, stages: list[dict[str, Any]], **source: Any) -> dict[str, Any]:
    return {"version": 1, "name": "derived", "source": {"type": "corpus", "path": str(parent), **source},
            "stages": stages, "output": {"max_samples_per_shard": 7}}


# --- a corpus as a source ---------------------------------------------------------------------


def test_recaption_an_existing_corpus_is_an_ordinary_run(parent: Path, tmp_path: Path) -> None:
    before = {p.name: sha256_file(p) for p in (parent / "shards").iterdir()}
    recipe = write(tmp_path / "r", corpus_recipe(parent, [{"type": "template_captions", "count": 2,
                                                          "seed": 7}]))
    out = tmp_path / "v2"
    assert run(recipe, out) == 0
    assert {p.name: sha256_file(p) for p in (parent / "shards").iterdir()} == before  # untouched
    m, pm = load_manifest(out), load_manifest(parent)
    assert m["parent"] == {"path": "../parent/manifest.json",
                           "manifest_sha256": sha256_file(parent / "manifest.json"),
                           "recipe_hash": pm["recipe_hash"], "name": pm["name"]}
    assert m["nsamples"] == pm["nsamples"] and m["samples_per_source"] == {"corpus": pm["nsamples"]}
    assert [s["name"] for s in m["stages"]] == ["read", "template_captions", "write"]
    assert any(s["role"] == "corpus" for s in m["sources"])
    assert any(s["role"] == "osm" for s in m["sources"])  # the parent's inputs travel on
    old, new = members(parent), members(out)
    assert list(old) == list(new)  # same keys, same order
    changed = 0
    for key in old:
        assert new[key]["jpg"] == old[key]["jpg"]
        meta_old, meta_new = json.loads(old[key]["json"]), json.loads(new[key]["json"])
        schemas.validate("sample", meta_new, key)
        assert meta_new["origin"] == {"type": "corpus", "source": "corpus", "parent_key": key,
                                      "parent": pm["name"], "root": "raster",
                                      "parent_manifest_sha256": m["parent"]["manifest_sha256"]}
        assert meta_new["osm"] == meta_old["osm"] and meta_new["geo"] == meta_old["geo"]
        # the new captions come after the old ones; txt stays the primary caption
        assert meta_new["captions"][:len(meta_old["captions"])] == meta_old["captions"]
        changed += meta_new["captions"] != meta_old["captions"]
        assert new[key]["txt"] == meta_new["captions"][0]["text"].encode()
    assert changed == len(old)
    assert main(["inspect", str(out)]) == 0


def test_score_with_the_baseline_over_a_corpus_source(parent: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("rsdata.models")
    torch.manual_seed(0)
    ckpt = models.save_checkpoint(tmp_path / "ckpt.pt", models.create_model("rs-cnn-tiny", pretrained=False))
    stages = [{"type": "template_captions", "count": 1, "seed": 3},
              {"type": "score", "scorer": "baseline", "model": str(ckpt), "device": "cpu", "name": "base"}]
    out = tmp_path / "scored"
    assert run(write(tmp_path / "r", corpus_recipe(parent, stages)), out) == 0
    metas = [e.meta() for e in Corpus(out).entries(["json"])]
    assert metas and all(-1.0 <= m["scores"]["base"] <= 1.0 for m in metas)
    assert load_manifest(out)["parent"]["name"] == "fixture"


def test_extra_members_round_trip_byte_identical(tmp_path: Path) -> None:
    src = tmp_path / "src"
    writer = ShardWriter(src, "x", 3, 10**9)
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(png, "PNG")
    expected = {}
    for i in range(5):
        key = f"k{i}"
        extra = {"layout.png": png.getvalue(), "vqa.json": json.dumps({"q": i}).encode(),
                 "boxes.json": b'{"boxes": []}'}
        meta = {"schema_version": 1, "key": key, "synthetic": False, "origin": {"type": "corpus",
                "parent_key": key, "parent_manifest_sha256": "0" * 64, "root": "raster"},
                "source": {"type": "raster", "id": "t", "license": "CC0-1.0", "attribution": "t"},
                "geo": {"crs": "EPSG:4326", "bounds": [0, 0, 1, 1], "bounds_wgs84": [0, 0, 1, 1],
                        "gsd_m": 1.0, "size": [8, 8], "bands": [1, 2, 3]},
                "captions": [{"text": f"caption {i}", "kind": "template", "template": "t.v1"}],
                "scores": {}}
        writer.write(Sample(key=key, image=png.getvalue(), image_format="png", meta=meta, extra=extra))
        expected[key] = extra
    from rsdata.corpus.manifest import new_manifest, write_manifest

    write_manifest(src, new_manifest(name="src", recipe={}, recipe_path=None, recipe_hash="a" * 64,
                                     shards=writer.close(), stages=[], sources=[]))
    out = tmp_path / "out"
    assert run(write(tmp_path / "r", corpus_recipe(src, [])), out) == 0
    got = members(out)
    assert list(got) == list(expected)
    for key, extra in expected.items():
        for name, data in extra.items():
            assert got[key][name] == data


# --- bad corpus sources: a clear error, nothing written ---------------------------------------


def test_bad_corpus_sources(parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(write(tmp_path / "r1", corpus_recipe(empty, [])), out) == 2
    assert "holds no manifest.json" in capsys.readouterr().err
    assert not out.exists()
    # the run's own output directory
    assert run(write(tmp_path / "r2", corpus_recipe(parent, [])), parent) == 2
    assert "never reads what it writes" in capsys.readouterr().err
    # a shard whose bytes changed after the manifest was written
    shard = sorted((parent / "shards").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[800] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert run(write(tmp_path / "r3", corpus_recipe(parent, [])), out) == 2
    err = capsys.readouterr().err
    assert "does not match its manifest" in err and shard.name in err
    assert not out.exists()


# --- kill -9 on a corpus source ----------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_on_a_corpus_source_then_rerun(tmp_path: Path) -> None:
    raster, osm = write_scene(tmp_path, size=2048)
    scene = {"version": 1, "name": "scene",
             "source": {"type": "raster", "rasters": [{"id": "scene", "path": str(raster)}],
                        "tile": {"size": 128, "gsd": 2.0}, "partition_size": 16},
             "stages": [{"type": "osm_join", "sources": [{"path": str(osm)}]}],
             "output": {"max_samples_per_shard": 16}}
    parent = tmp_path / "parent"
    assert run(write(tmp_path / "p", scene), parent) == 0
    recipe = write(tmp_path / "d", corpus_recipe(parent, [{"type": "template_captions", "count": 3}],
                                                 partition_size=8))
    reference = tmp_path / "reference"
    assert run(recipe, reference) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rsdata", "run", str(recipe), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    markers = out / ".rsdata" / "partitions"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if markers.exists() and len(list(markers.glob("*.json"))) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed")
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    assert run(recipe, out) == 0
    assert corpus_keys(out) == corpus_keys(reference)
    ref = {s["path"]: s["sha256"] for s in load_manifest(reference)["shards"]}
    assert {s["path"]: s["sha256"] for s in load_manifest(out)["shards"]} == ref


# --- several sources in one recipe ------------------------------------------------------------


def test_two_sources_prefix_keys_and_are_counted(raster_files: dict[str, Path], parent: Path,
                                                 tmp_path: Path) -> None:
    tile = {"size": 64}
    recipe = {"version": 1, "name": "mixed",
              "sources": [
                  {"id": "rgb", "type": "raster", "tile": tile,
                   "rasters": [{"id": "r", "path": str(raster_files["utm_rgb"])}]},
                  {"id": "grey", "type": "raster", "tile": tile, "max_samples": 5,
                   "rasters": [{"id": "r", "path": str(raster_files["utm_grey"])}]},
                  {"id": "old", "type": "corpus", "path": str(parent), "max_samples": 4}],
              "stages": [],
              "output": {"max_samples_per_shard": 50}}
    out = tmp_path / "mixed"
    assert run(write(tmp_path / "r", recipe), out) == 0
    m = load_manifest(out)
    keys = corpus_keys(out)
    per = {sid: sum(k.startswith(f"{sid}_") for k in keys) for sid in ("rgb", "grey", "old")}
    assert m["samples_per_source"] == per and per["grey"] == 5 and per["old"] == 4 and per["rgb"] > 0
    assert sum(per.values()) == m["nsamples"] == len(keys) == len(set(keys))
    assert {s["name"] for s in m["stages"]} >= {"tile", "read"}
    assert m["parent"]["name"] == "fixture"
    old_keys = [k for k in keys if k.startswith("old_")]
    metas = {e.key: e.meta() for e in Corpus(out).entries(["json"])}
    assert all(metas[k]["origin"]["parent_key"] == k[len("old_"):] for k in old_keys)
    assert all(metas[k]["origin"] == {"type": "raster", "source": "rgb"} for k in keys if k.startswith("rgb_"))


def test_single_source_recipes_keep_their_keys(raster_files: dict[str, Path], tmp_path: Path) -> None:
    """A recipe with one ``source:`` gives the keys it always gave (no prefix)."""
    out = tmp_path / "one"
    assert run(write(tmp_path, fx.recipe_dict(raster_files["utm_rgb"], raster_id="abc", size=64)), out) == 0
    assert all(k.startswith("abc_") and k.count("_") == 2 for k in corpus_keys(out))


def test_source_ids_must_be_unique(raster_files: dict[str, Path], tmp_path: Path) -> None:
    src = {"id": "a", "type": "raster", "tile": {"size": 64},
           "rasters": [{"id": "r", "path": str(raster_files["utm_rgb"])}]}
    recipe = {"version": 1, "name": "dup", "sources": [src, src], "stages": [], "output": {}}
    with pytest.raises(RsdataError, match="ids must be unique"):
        build_plan(parse_recipe(recipe, tmp_path), tmp_path / "o")
    no_id = {k: v for k, v in src.items() if k != "id"}
    with pytest.raises(RsdataError, match="id"):
        parse_recipe({**recipe, "sources": [no_id]}, tmp_path)
    with pytest.raises(RsdataError):  # source and sources together
        parse_recipe({**recipe, "sources": [src], "source": no_id}, tmp_path)


# --- partition ids that cannot collide (issue: prefix ids lost shards) -------------------------


def test_raster_ids_that_prefix_each_other_lose_nothing(raster_files: dict[str, Path],
                                                        tmp_path: Path) -> None:
    raster = str(raster_files["utm_rgb"])
    recipe = fx.recipe_dict(raster, size=32, raster_id="a", partition_size=2,
                            output={"max_samples_per_shard": 1})
    recipe["source"]["rasters"].append({"id": "a-00000", "path": raster})
    out = tmp_path / "o"
    path = write(tmp_path, recipe)
    assert run(path, out) == 0
    m = load_manifest(out)
    for shard in m["shards"]:
        assert (out / shard["path"]).is_file(), f"{shard['path']} was deleted"
    # a rerun after losing one partition's marker cleans only that partition's shards
    marker = sorted((out / ".rsdata" / "partitions").glob("a.00000.json"))[0]
    marker.unlink()
    (out / "manifest.json").unlink()
    assert run(path, out) == 0
    m2 = load_manifest(out)
    assert [s["sha256"] for s in m2["shards"]] == [s["sha256"] for s in m["shards"]]
    assert main(["inspect", str(out)]) == 0


# --- the registries and the schema agree ----------------------------------------------------


def test_schema_type_enums_come_from_the_registries() -> None:
    from rsdata.sources import SOURCES
    from rsdata.stage import STAGES

    schema = schemas.validator("recipe").schema
    assert set(schema["$defs"]["source"]["properties"]["type"]["enum"]) == set(SOURCES)
    assert set(schema["$defs"]["stage"]["properties"]["type"]["enum"]) == set(STAGES)
    branches = {b["if"]["properties"]["type"]["const"] for b in schema["$defs"]["source"]["allOf"]}
    assert branches == set(SOURCES)


@pytest.mark.parametrize("kind,cls_path", [("raster", "rsdata.sources.raster:RasterSettings"),
                                           ("corpus", "rsdata.sources.corpus:CorpusSettings")])
def test_source_settings_declare_exactly_the_schema_fields(kind: str, cls_path: str) -> None:
    import importlib

    from rsdata.settings import field_names

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    props = set(schemas.validator("recipe").schema["$defs"][f"{kind}_source"]["properties"])
    assert field_names(cls) == props - {"type", "id"}


def test_a_failed_run_manifest_is_refused_by_readers(raster_files: dict[str, Path], tmp_path: Path) -> None:
    recipe = fx.recipe_dict(raster_files["utm_rgb"], size=64, output={"min_samples": 100000})
    out = tmp_path / "o"
    assert run(write(tmp_path, recipe), out) == 2
    assert load_manifest(out, allow_failed=True)["status"] == "failed"
    with pytest.raises(InputError, match="failed"):
        Corpus(out)
    with pytest.raises(InputError, match="run that failed"):
        build_plan(parse_recipe(corpus_recipe(out, []), tmp_path), tmp_path / "o2")
    assert not (tmp_path / "o2").exists()
