"""Labelled-polygon layers that are not OSM (issue 10 item 7): ``class_column`` + ``classes``
map a class column to OSM-style tags or to phrases with their grammar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from affine import Affine
from shapely.geometry import box

from caption_check import caption_problems
from rsdata.captions.templates import captions_for
from rsdata.errors import InputError
from rsdata.osm.join import OsmJoin
from rsdata.osm.vocabulary import Vocabulary
from rsdata.sample import Sample
from rsdata.stage import RunContext
from rsdata.stats import StageStats

UTM = "EPSG:32734"
X0, Y0 = 453_800.0, 6_237_800.0
SIZE = 200
FOOTPRINT = (20.49, -34.01, 20.52, -33.99)
CLASSES: dict[str, Any] = {
    "water": "natural=water",
    "crop": {"phrase": "cropland", "countable": False},
    "tree": {"phrase": "trees", "countable": False},
    "developed": {"phrase": "settlement", "countable": True},
}


def rect(a: float, b: float, c: float, d: float) -> Any:
    return box(X0 + a, Y0 - d, X0 + c, Y0 - b)


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    """A UTM GeoPackage of labelled polygons (like a land-cover training set)."""
    rows = [
        (rect(0, 0, 200, 130), "tree"),        # 65% of the tile
        (rect(0, 130, 80, 200), "water"),      # 14%, bottom left
        (rect(120, 140, 200, 200), "crop"),    # 12%, bottom right
        (rect(90, 150, 110, 170), "developed"),
        (rect(85, 175, 105, 195), "developed"),
        (rect(300, 0, 320, 20), "cloud"),      # a class the recipe does not map
    ]
    frame = gpd.GeoDataFrame({"name": [n for _, n in rows], "area_ha": [1.0] * len(rows)},
                             geometry=[g for g, _ in rows], crs=UTM)
    path = tmp_path / "labels.gpkg"
    frame.to_file(path, driver="GPKG")
    return path


def tile() -> Sample:
    meta = {"key": "lc_00000_00000",
            "geo": {"crs": UTM, "transform": list(Affine(1, 0, X0, 0, -1, Y0))[:6], "size": [SIZE, SIZE],
                    "gsd_xy_m": [1.0, 1.0], "gsd_m": 1.0}}
    return Sample(key=meta["key"], image=b"", meta=meta)


def prepare(tmp_path: Path, source: dict[str, Any], **cfg: Any) -> tuple[OsmJoin, dict[str, Any]]:
    stage = OsmJoin({"type": "osm_join", "sources": [source], **cfg})
    ctx = RunContext(base_dir=tmp_path, state_dir=tmp_path / "state", footprints_wgs84=[FOOTPRINT],
                     footprint_crs=[UTM])
    return stage, stage.prepare(ctx)


def test_class_column_maps_to_tags_and_phrases(tmp_path: Path, labels: Path, capsys: Any) -> None:
    stage, report = prepare(tmp_path, {"path": str(labels), "class_column": "name", "classes": CLASSES})
    stats = report["sources"][0]["stats"]
    assert stats["loaded"] == 5 and stats["skipped:unmapped_class"] == 1
    assert "'cloud'" in capsys.readouterr().err
    tags = {t["tag"]: t for t in stage.join(tile())["tags"]}
    assert set(tags) == {"natural=water", "class:labels=crop", "class:labels=tree", "class:labels=developed"}
    assert tags["natural=water"]["phrase"] == "water" and tags["natural=water"]["mass"]
    crop, trees, dev = tags["class:labels=crop"], tags["class:labels=tree"], tags["class:labels=developed"]
    assert crop["phrase"] == "cropland" and crop["mass"] and crop["category"] == "landcover"
    assert trees["phrase"] == "trees" and trees["mass"] and trees["plural_verb"]
    assert trees["area_share"] == pytest.approx(0.65, abs=1e-3)
    assert dev["phrase"] == "settlement" and dev["plural"] == "settlements" and not dev["mass"]
    assert dev["visible_count"] == 2


@pytest.mark.parametrize("seed", range(10))
def test_class_captions_are_grammatical_and_faithful(tmp_path: Path, labels: Path, seed: int) -> None:
    stage, _ = prepare(tmp_path, {"path": str(labels), "class_column": "name", "classes": CLASSES})
    sample = tile()
    sample.meta["osm"] = stage.join(sample)
    osm = sample.meta["osm"]
    assert osm["coverage"]["fraction"] == 1.0  # the tile lies inside the layer's hull
    phrases = {p for _k, _v, ph in Vocabulary.default().entries() for p in (ph.singular, ph.plural)}
    phrases |= {t[k] for t in osm["tags"] for k in ("phrase", "plural")}
    caps = captions_for({**sample.meta, "key": f"lc{seed}"}, count=6, seed=seed)
    assert caps
    for cap in caps:
        low = f" {cap.text.lower()} "
        for bad in (" a trees", " a water", " a cropland", " an water", "trees covers", "trees fills",
                    "trees is ", " one water", " a settlements"):
            assert bad not in low, cap.text
        assert not caption_problems(cap.text, osm, phrases), cap.text
    texts = " ".join(c.text for s in range(10) for c in captions_for({**sample.meta, "key": f"x{s}"},
                                                                       count=6, seed=s))
    assert "two settlements" in texts.lower()


def test_trees_take_plural_verbs(tmp_path: Path, labels: Path) -> None:
    stage, _ = prepare(tmp_path, {"path": str(labels), "class_column": "name", "classes": CLASSES})
    sample = tile()
    sample.meta["osm"] = stage.join(sample)
    texts = [c.text for s in range(30) for c in captions_for({**sample.meta, "key": f"k{s}"},
                                                              families=("sizes", "landcover"), count=3, seed=s)]
    joined = " ".join(texts)
    assert "Trees cover most of the image" in joined or "Trees fill most of" in joined, texts


def test_a_layer_without_wanted_keys_and_no_mapping_is_a_clear_error(tmp_path: Path, labels: Path) -> None:
    with pytest.raises(InputError) as err:
        prepare(tmp_path, {"path": str(labels)})
    text = str(err.value)
    assert "labels.gpkg" in text and "class_column" in text and "'name'" in text


def test_class_errors(tmp_path: Path, labels: Path) -> None:
    with pytest.raises(InputError, match=r"no class column 'kind'.*'name'"):
        prepare(tmp_path, {"path": str(labels), "class_column": "kind", "classes": CLASSES})
    with pytest.raises(InputError, match="no phrase for 'foo=bar'"):
        prepare(tmp_path, {"path": str(labels), "class_column": "name", "classes": {"water": "foo=bar"}})
    with pytest.raises(InputError, match="not an OSM-style tag"):
        prepare(tmp_path, {"path": str(labels), "class_column": "name", "classes": {"water": "water"}})
    with pytest.raises(InputError, match="class_column and classes go together"):
        prepare(tmp_path, {"path": str(labels), "class_column": "name"})


def test_the_recipe_keys_do_not_hide_mapped_classes(tmp_path: Path, labels: Path) -> None:
    stage, _ = prepare(tmp_path, {"path": str(labels), "class_column": "name", "classes": CLASSES},
                       keys=["building"])
    assert {t["tag"] for t in stage.join(tile())["tags"]} >= {"natural=water", "class:labels=tree"}


def test_integer_class_codes(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame({"code": [10, 80]}, geometry=[rect(0, 0, 200, 100), rect(0, 100, 200, 200)],
                             crs=UTM)
    path = tmp_path / "codes.gpkg"
    frame.to_file(path, driver="GPKG")
    stage, _ = prepare(tmp_path, {"path": str(path), "id": "wc", "class_column": "code",
                                  "classes": {10: {"phrase": "tree cover", "countable": False},
                                              "80": "natural=water"}})
    osm = stage.join(tile())
    tags = {t["tag"]: t for t in osm["tags"]}
    assert set(tags) == {"class:wc=10", "natural=water"}
    assert not tags["class:wc=10"].get("plural_verb")  # "tree cover" is singular
    stats = StageStats("osm_join")
    assert list(stage(iter([tile()]), stats))


def test_recipe_schema_accepts_class_columns() -> None:
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "recipe.schema.json").read_text())
    validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/osm_source"})
    assert not list(validator.iter_errors({"path": "l.gpkg", "class_column": "name", "classes": CLASSES}))
    assert list(validator.iter_errors({"path": "l.gpkg", "class_column": "name"}))  # classes missing
    assert list(validator.iter_errors({"path": "l.gpkg", "class_column": "name",
                                       "classes": {"x": {"phrase": "y", "countable": "no"}}}))
    assert list(validator.iter_errors({"path": "l.gpkg", "class_column": "name", "classes": {"x": "water"}}))
