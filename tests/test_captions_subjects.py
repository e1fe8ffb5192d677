"""What captions are about: visible things only, objects not ways, salience, order (issue 15)."""

from __future__ import annotations

import re

import pytest
from caption_fixtures import all_texts, hline, obj, square, stats, tile, vline
from shapely.geometry import LineString, box

from rsdata.captions.rules import CaptionRules
from rsdata.captions.subjects import Limits, scene_of
from rsdata.captions.templates import TemplateCaptions, captions_for
from rsdata.sample import Sample
from rsdata.stats import StageStats


def buildings(n: int = 3, x: float = 20, y: float = 20) -> tuple[dict, list[dict]]:
    objs = [obj("building=yes", square(x + 14 * i, y)) for i in range(n)]
    return stats("building=yes", objs), objs


# -- visible things only --------------------------------------------------------------------------
@pytest.mark.parametrize("tag", ["leisure=nature_reserve", "boundary=protected_area", "place=village",
                                 "route=hiking", "boundary=administrative", "landuse=conservation"])
def test_administrative_tags_are_never_the_subject(tag: str) -> None:
    rules = CaptionRules.default()
    assert not rules.tag_is_subject(tag)
    key, value = tag.split("=")
    reserve = {"key": key, "value": value, "tag": tag, "phrase": "protected thing", "plural": "protected things",
               "mass": False, "category": "leisure", "count": 1, "visible_count": 1, "visible": True,
               "primary": True, "area_share": 0.9, "length_m": 0.0, "position": "across",
               "cells": ["center", "left", "right", "top", "bottom", "top left"], "geom_types": {"polygon": 1}}
    b = buildings()
    meta = tile("t", [(reserve, []), b])
    texts = " ".join(c.text for s in range(10) for c in captions_for({**meta, "key": f"k{s}"}, count=9, seed=s))
    assert "protected" not in texts and re.search(r"building|structure", texts)
    assert meta["osm"]["tags"][0]["tag"] == tag  # it stays in the json


def test_keys_with_a_prefix_rule_are_no_subjects() -> None:
    rules = CaptionRules.default()
    assert not rules.tag_is_subject("addr:street=Main")
    assert not rules.tag_is_subject("admin_level=8")
    assert rules.tag_is_subject("building=yes") and rules.tag_is_subject("highway=track")


@pytest.mark.parametrize("attrs", [{"tunnel": "yes"}, {"layer": "-1"}, {"covered": "yes"},
                                   {"location": "underground"}, {"tunnel": "culvert"}])
def test_hidden_objects_are_no_subject(attrs: dict[str, str]) -> None:
    road = [obj("highway=primary", hline(128), **attrs)]
    b = buildings()
    meta = tile("t", [(stats("highway=primary", road, count_objects=1), road), b])
    texts = " ".join(all_texts(meta, seeds=6)).lower()
    assert "main road" not in texts and "major road" not in texts
    assert not any(s.tag == "highway=primary" for s in scene_of(meta, Limits()).subjects)
    # "no" never hides, nor does layer=1 (a bridge is seen from above)
    for ok in ({"tunnel": "no"}, {"layer": "1"}):
        road[0]["attrs"] = ok
        assert any(s.tag == "highway=primary" for s in scene_of(meta, Limits()).subjects)


def test_partly_hidden_line_keeps_the_rest_without_a_count() -> None:
    ways = [obj("highway=primary", LineString([(0, 128), (128, 128)])),
            obj("highway=primary", LineString([(128, 128), (256, 128)]), tunnel="yes")]
    meta = tile("t", [(stats("highway=primary", ways, count_objects=1), ways)])
    (s,) = scene_of(meta, Limits()).subjects
    assert s.n is None and not s.many and not s.spans  # the tunnel half does not show
    texts = " ".join(all_texts(meta, seeds=6)).lower()
    assert "across" not in texts and not re.search(r"\bone (main|major) road", texts)


def test_visible_only_false_names_them_again() -> None:
    reserve = [obj("leisure=nature_reserve", box(0, 0, 256, 256))]
    meta = tile("t", [(stats("leisure=nature_reserve", reserve), reserve)])
    assert captions_for(meta) == []
    assert any("nature reserve" in c.text for c in captions_for(meta, count=9, visible_only=False))


def test_stage_drops_tiles_with_only_invisible_or_tiny_things() -> None:
    reserve = [obj("leisure=nature_reserve", box(0, 0, 256, 256))]
    stub = [obj("highway=track", LineString([(0, 0), (10, 10)]))]
    metas = [tile("a", [(stats("leisure=nature_reserve", reserve), reserve)]),
             tile("b", [(stats("highway=track", stub), stub)]),
             tile("c", [buildings()])]
    stage = TemplateCaptions({"type": "template_captions"})
    st = StageStats("template_captions")
    out = list(stage(iter(Sample(key=m["key"], image=b"", meta=m) for m in metas), st))
    assert [s.key for s in out] == ["c"] and st.dropped == {"no_salient_feature": 2}
    assert "_geom" not in str(out[0].meta)  # no cached geometry left in the json


# -- objects, not OSM ways ------------------------------------------------------------------------
def test_a_road_split_into_ways_is_one_road() -> None:
    xs = [0, 40, 90, 130, 170, 210, 256]
    ways = [obj("highway=trunk", LineString([(a, 128), (b, 130)])) for a, b in zip(xs, xs[1:])]
    meta = tile("t", [(stats("highway=trunk", ways, count_objects=1), ways)])
    texts = " ".join(all_texts(meta)).lower()
    assert not re.search(r"highways|main roads|major roads|six|several|a few", texts), texts
    assert re.search(r"\b(a|one|a single) (highway|main road|major road)", texts)
    # without the object count, today's rule: six ways are "highways", never counted
    legacy = tile("t", [(stats("highway=trunk", ways), ways)], with_objects=False)
    legacy_texts = " ".join(all_texts(legacy)).lower()
    assert "six" not in legacy_texts and re.search(r"highways|main roads|major roads", legacy_texts)


def test_object_counts_allow_numbers_for_lines() -> None:
    tracks = [obj("highway=track", vline(60)), obj("highway=track", vline(190))]
    meta = tile("t", [(stats("highway=track", tracks, count_objects=2), tracks)])
    texts = " ".join(all_texts(meta)).lower()
    assert re.search(r"\btwo (dirt|farm|unpaved) (tracks|roads)", texts)


# -- salience -------------------------------------------------------------------------------------
def test_a_stub_in_a_corner_is_not_the_caption() -> None:
    stub = [obj("highway=track", LineString([(0, 0), (30, 20)]))]  # 90 m of a 640 m tile: 14%
    b = buildings()
    meta = tile("t", [(stats("highway=track", stub, count_objects=1), stub), b])
    texts = " ".join(all_texts(meta)).lower()
    assert "track" not in texts and "dirt road" not in texts
    longer = " ".join(all_texts(meta, min_line_fraction=0.1)).lower()
    assert re.search(r"track|dirt road", longer)


def test_small_areas_are_left_out() -> None:
    pond = [obj("natural=water", square(10, 10, 20))]  # 400 px: 0.6% of the tile
    b = buildings()
    meta = tile("t", [(stats("natural=water", pond), pond), b])
    assert "water" not in " ".join(all_texts(meta)).lower()
    assert "water" in " ".join(all_texts(meta, min_area_share=0.005)).lower()


def test_across_only_for_lines_that_span_the_tile() -> None:
    # the join calls this line "across" (it reaches three cells on both sides), but it ends
    # inside the tile: no "runs across", "crossing the image"
    bend = [obj("highway=track", LineString([(20, 40), (236, 60), (236, 200)]))]
    entry = stats("highway=track", bend, count_objects=1)
    assert entry["position"] == "across"
    meta = tile("t", [(entry, bend)])
    texts = " ".join(all_texts(meta)).lower()
    assert not re.search(r"across the|crossing the|crosses the|through the|from left to right", texts), texts
    span = [obj("highway=track", LineString([(0, 40), (256, 60)]))]
    spanning = " ".join(all_texts(tile("s", [(stats("highway=track", span, count_objects=1), span)]))).lower()
    assert re.search(r"across the|crossing the|crosses the|through the", spanning)


def test_without_objects_a_short_line_on_both_sides_does_not_span() -> None:
    parts = [obj("highway=track", LineString([(0, 20), (30, 20)])), obj("highway=track", LineString([(226, 20), (256, 20)]))]
    entry = stats("highway=track", parts)
    assert {"top left", "top right"} <= set(entry["cells"]) and entry["length_m"] < 0.9 * 640
    meta = tile("t", [(entry, parts)], with_objects=False)
    assert not scene_of(meta, Limits()).subjects[0].spans


def test_subjects_lead_with_the_largest_area() -> None:
    farm = [obj("landuse=farmland", box(0, 0, 256, 200))]
    road = [obj("highway=track", hline(230))]
    b = buildings(2, 40, 60)
    meta = tile("t", [b, (stats("highway=track", road, count_objects=1), road),
                      (stats("landuse=farmland", farm), farm)])
    order = [s.tag for s in scene_of(meta, Limits()).subjects]
    assert order == ["landuse=farmland", "highway=track", "building=yes"]
    for s in range(20):  # the primary caption names what dominates the picture
        first = captions_for({**meta, "key": f"k{s}"}, count=3, seed=s)[0].text.lower()
        assert re.search(r"farmland|fields", first), first


def test_a_farmstead_is_not_crowded_out_by_roads() -> None:
    roads = []
    for i, tag in enumerate(["highway=unclassified", "highway=track", "highway=service", "highway=trunk"]):
        line = [obj(tag, hline(30 + 60 * i, 0, 100))]  # 40% of the width each
        roads.append((stats(tag, line, count_objects=1), line))
    farm = buildings(5, 60, 100)  # five small buildings: 0.5% of the tile
    meta = tile("t", roads + [farm])
    tags = [s.tag for s in scene_of(meta, Limits(max_features=4)).subjects]
    assert "building=yes" in tags, tags
