"""The compiled validator (fastjsonschema, references inlined) accepts and refuses exactly what
the reference validator (jsonschema, the published 2020-12 schema text) does."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from fixtures import rasters as fx
from rsdata import schemas
from rsdata.cli import main
from rsdata.corpus import Corpus, load_manifest


@pytest.fixture(scope="module")
def corpus(raster_files: dict[str, Path], osm_geojson: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small corpus with OSM stats, objects and captions: metadata of every section."""
    base = tmp_path_factory.mktemp("fast-schema")
    recipe = fx.recipe_dict(raster_files["utm_rgb"], osm=osm_geojson, captions=True, size=64)
    recipe["stages"][0]["keep_objects"] = True
    path = base / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--out", str(base / "out"), "--quiet"]) == 0
    return base / "out"


def fast_accepts(name: str, instance: Any) -> bool:
    import fastjsonschema

    try:
        schemas.fast_validator(name)(copy.deepcopy(instance))  # it may fill defaults in
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def agree(name: str, instance: Any) -> bool:
    return fast_accepts(name, instance) == (not schemas.errors(name, instance))


def test_compiled_code_formats_item_names_without_locals() -> None:
    """Every schema compiles, and its code names array items from named variables: the
    ``**locals()`` fastjsonschema writes cost 27 us per OSM tag and caption."""
    for name in ("sample", "manifest", "recipe", "inputs", "annotation_round"):
        code = schemas.validator_code(name)
        assert schemas.LOCALS_CALL not in code, name
        assert ".format(data__" in code or name in ("inputs", "annotation_round"), name
        schemas.fast_validator(name)  # compiles


def test_an_unknown_code_layout_falls_back_to_fastjsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schemas, "validator_code", lambda name: "# not fastjsonschema's layout\n")
    schemas.fast_validator.cache_clear()
    try:
        check = schemas.fast_validator("manifest")
        assert not fast_accepts("manifest", {"name": 3})
        assert callable(check)
    finally:
        schemas.fast_validator.cache_clear()


MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("no key", lambda m: m.pop("key")),
    ("bad key", lambda m: m.__setitem__("key", "a.b")),
    ("tag count a string", lambda m: m["osm"]["tags"][0].__setitem__("count", "3")),
    ("tag without its name", lambda m: m["osm"]["tags"][0].pop("tag")),
    ("tags not a list", lambda m: m["osm"].__setitem__("tags", {})),
    ("bbox of three", lambda m: m["geo"].__setitem__("bounds", m["geo"]["bounds"][:3])),
    ("bbox of strings", lambda m: m["geo"].__setitem__("bounds", ["0", "0", "1", "1"])),
    ("caption without text", lambda m: m["captions"][0].pop("text")),
    ("template caption without template", lambda m: m["captions"][0].pop("template")),
    ("caption of an unknown kind", lambda m: m["captions"][0].__setitem__("kind", "guess")),
    ("synthetic a string", lambda m: m.__setitem__("synthetic", "no")),
    ("object box of two", lambda m: m["osm"]["objects"][0].__setitem__("box", [0, 0])),
    ("object cell unknown", lambda m: m["osm"]["objects"][0].__setitem__("cell", "middle")),
    ("origin of an unknown type", lambda m: m["origin"].__setitem__("type", "scan")),
    ("raster origin without geo", lambda m: m.pop("geo")),
]


def test_the_compiled_sample_validator_agrees_with_jsonschema(corpus: Path) -> None:
    metas = [e.meta() for e in Corpus(corpus).entries(["json"])]
    with_objects = [m for m in metas if m.get("osm", {}).get("objects")]
    assert metas and with_objects, "the fixture corpus must have samples with OSM objects"
    assert all(fast_accepts("sample", m) for m in metas)
    assert all(not schemas.errors("sample", m) for m in metas)
    for label, mutate in MUTATIONS:
        meta = copy.deepcopy(with_objects[0])
        mutate(meta)
        assert schemas.errors("sample", meta), f"{label}: the mutation must be invalid"
        assert not fast_accepts("sample", meta), f"{label}: the compiled validator accepted it"


def test_the_compiled_manifest_validator_agrees_with_jsonschema(corpus: Path) -> None:
    manifest = load_manifest(corpus)
    assert agree("manifest", manifest) and fast_accepts("manifest", manifest)
    for key in ("shards", "recipe_hash"):
        broken = copy.deepcopy(manifest)
        broken.pop(key)
        assert agree("manifest", broken) and not fast_accepts("manifest", broken), key


def test_compiled_messages_still_name_the_array_item(corpus: Path) -> None:
    """The item names the compiled code formats (from named variables, not ``**locals()``)."""
    import fastjsonschema

    meta = next(m for m in (e.meta() for e in Corpus(corpus).entries(["json"]))
                if len(m.get("osm", {}).get("tags", [])) >= 2 and len(m["captions"]) >= 2)
    meta["osm"]["tags"][1]["count"] = "3"
    with pytest.raises(fastjsonschema.JsonSchemaException) as info:
        schemas.fast_validator("sample")(meta)
    assert info.value.name == "data.osm.tags[1].count"
    meta = copy.deepcopy(meta)
    meta["osm"]["tags"][1]["count"] = 3
    meta["captions"][1]["kind"] = "llm"  # an llm caption needs its backend, model ...
    with pytest.raises(fastjsonschema.JsonSchemaException) as info:
        schemas.fast_validator("sample")(meta)
    assert info.value.name.startswith("data.captions[1]")
