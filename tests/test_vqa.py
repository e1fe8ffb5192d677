"""The vqa and scene_label stages on hand-built tiles whose answers are known (tests/task_tiles.py)."""

from __future__ import annotations

import json
import pickle
import random
import re
from collections import Counter
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from shapely.geometry import LineString, MultiPolygon, Point, box

from rsdata import schemas
from rsdata.stats import StageStats
from rsdata.tasks.objects import MissingObjectsError, build_tile
from rsdata.tasks.scene import classify
from rsdata.tasks.vqa import HALF_WORDS, TEMPLATES, Known, VqaSettings, VqaStage, candidates
from task_tiles import obj, sample, tile_meta, village

SETTINGS = dict(families=["presence", "counting", "comparison", "area", "position"], max_pairs=12,
                max_per_family=4, yes_no_tolerance=2, max_count_share=0.3, max_count=20,
                count_lines=False, absence=True, absence_tags=[], seed=0)


def stage(**over: Any) -> VqaStage:
    return VqaStage({**SETTINGS, **over})


def all_candidates(meta: dict[str, Any], others: list[dict[str, Any]] = (), **over: Any
                   ) -> dict[str, str]:
    """question -> answer for every pair the tile supports (before balancing and caps)."""
    settings = VqaSettings(**{**SETTINGS, **over})
    known = Known()
    for m in [meta, *others]:
        known.add_tile(build_tile(m, "t", "vqa"))
    tile = build_tile(meta, "t", "vqa")
    out: dict[str, str] = {}
    for pairs in candidates(tile, meta, known, settings, random.Random(0), {"residential", "farmland"}).values():
        for p in pairs:
            for tid, text in TEMPLATES[p.template]:  # every wording of the question
                slots = dict(p.question)
                halves = HALF_WORDS.get(slots.get("half"), [None])
                for h in halves:
                    if h is not None:
                        slots["half"] = h
                    out[text.format(**slots)] = p.answer
    return out


def texts(key: str, **slots: str) -> set[str]:
    return {text.format(**slots) for _, text in TEMPLATES[key]}


def answer(qa: dict[str, str], key: str, **slots: str) -> str | None:
    found = {qa[q] for q in texts(key, **slots) if q in qa}
    assert len(found) <= 1, (key, slots, found)
    return found.pop() if found else None


def test_counting_presence_area_position_on_the_village() -> None:
    qa = all_candidates(village())
    # four buildings: the one cut by the left edge counts once
    assert answer(qa, "counting", p="buildings") == "4"
    assert answer(qa, "counting", p="ponds") == "1"
    # lines are not counted (OSM splits roads into ways) unless count_lines
    assert answer(qa, "counting", p="residential roads") is None
    assert answer(qa, "counting", p="rivers") is None
    assert answer(qa, "presence", a="a river", p="rivers") == "yes"
    assert answer(qa, "presence", a="a residential road", p="residential roads") == "yes"
    # a residential road surely is a road
    assert answer(qa, "presence", a="a road", p="roads") == "yes"
    assert answer(qa, "area_share", x="buildings") == "less than 10%"  # 2400 / 65536 px
    # the river runs across the bottom: all of it in the bottom half, none in the top half
    for half in ("bottom half", "lower half"):
        assert answer(qa, "pos_half", s="river", half=half) in (None, "yes")
    assert "yes" in {answer(qa, "pos_half", s="river", half=h) for h in ("bottom half", "lower half")}
    assert "no" in {answer(qa, "pos_half", s="river", half=h) for h in ("top half", "upper half")}
    assert answer(qa, "pos_where", s="pond") == "centre"
    assert answer(qa, "pos_where", s="dirt track") == "top left"
    assert "no" in {answer(qa, "pos_half", s="pond", half=h) for h in ("left half", "left part")}
    # a building lies mostly in every half: "yes" everywhere, never "no"
    for half in ("left half", "right half", "top half", "bottom half", "upper half", "lower half",
                 "left part", "right part"):
        assert answer(qa, "pos_any", a="a building", p="buildings", half=half) in (None, "yes")
    # nothing was asked about a noun with a borderline referent: "How many roads?" (the track)
    assert answer(qa, "counting", p="roads") is None


def test_comparison_answers_follow_the_counts_and_areas() -> None:
    counts = {"buildings": 4, "ponds": 1}
    qa = all_candidates(village())
    seen = 0
    for q, a in qa.items():
        m = re.fullmatch(r"Are there (more|fewer) (\w+) than (\w+)\?", q) or \
            re.fullmatch(r"Is the number of (\w+) equal to the number of (\w+)\?", q)
        if not m or not set(m.groups()[-2:]) <= set(counts):
            continue
        seen += 1
        x, y = counts[m.groups()[-2]], counts[m.groups()[-1]]
        want = {"more": x > y, "fewer": x < y}.get(m.group(1), x == y)
        assert a == ("yes" if want else "no"), q
    assert seen >= 1


def test_touching_ways_are_one_road_with_count_lines() -> None:
    qa = all_candidates(village(), count_lines=True)
    assert answer(qa, "counting", p="residential roads") == "1"  # two ways, one road
    assert answer(qa, "counting", p="rivers") == "1"


def test_a_building_cut_in_two_by_the_edge_counts_once() -> None:
    u = box(-20, 40, 30, 60).union(box(-20, 0, -5, 60)).union(box(-20, 0, 30, 20))  # a U, open right
    cut = obj("building=yes", u, "building", "building")
    assert len(cut["pixels"]) == 2  # two pieces inside the tile
    meta = tile_meta([cut, obj("building=yes", box(100, 100, 120, 120), "building", "building")])
    assert answer(all_candidates(meta), "counting", p="buildings") == "2"


def test_absence_only_inside_coverage_and_for_nouns_the_sources_map() -> None:
    pool = obj("leisure=swimming_pool", box(10, 10, 30, 30), "swimming pool", "leisure")
    elsewhere = tile_meta([pool])  # another tile of the partition, same sources
    qa = all_candidates(village(), [elsewhere])
    assert answer(qa, "presence", a="a swimming pool", p="swimming pools") == "no"
    assert answer(qa, "counting", p="swimming pools") == "0"
    # another source saw it: this tile's source is not known to map pools
    other = tile_meta([pool], sources=("pools.geojson",))
    qa = all_candidates(village(), [other])
    assert answer(qa, "presence", a="a swimming pool", p="swimming pools") is None
    # partial coverage: only what is there; no absence, no numbers, nothing about "the X"
    qa = all_candidates(village(coverage=0.6), [elsewhere])
    assert set(qa.values()) <= {"yes"}, qa
    assert answer(qa, "presence", a="a river", p="rivers") == "yes"
    # absence off
    qa = all_candidates(village(), [elsewhere], absence=False)
    assert "no" not in qa.values() or all("swimming" not in q for q in qa)
    assert answer(qa, "counting", p="swimming pools") is None


def test_invisible_and_hidden_features_block_absence_and_counts() -> None:
    meta = village()
    # a shed too small to see: the tile's tags know it, so nothing is said about sheds
    shed = {"key": "building", "value": "shed", "tag": "building=shed", "phrase": "shed",
            "plural": "sheds", "category": "building"}
    meta["osm"]["tags"].append({**shed, "count": 1, "count_ways": 1, "count_objects": 1,
                                "visible_count": 0, "visible_count_objects": 0, "visible": False,
                                "primary": True, "area_share": 0.0, "area_m2": 2.0, "length_m": 0.0,
                                "position": "center", "cells": [], "geom_types": {"polygon": 1}})
    shed_tile = tile_meta([obj("building=shed", box(0, 0, 20, 20), "shed", "building")])
    qa = all_candidates(meta, [shed_tile])
    assert answer(qa, "presence", a="a shed", p="sheds") is None
    # counts are of visible objects: the unseen shed is not one of them
    assert answer(qa, "counting", p="buildings") == "4"
    # a road in a tunnel is not seen: no "yes", and its roads are not counted
    tunnel = obj("highway=primary", LineString([(0, 240), (256, 240)]), "primary road", "road",
                 attrs={"tunnel": "yes"})
    qa = all_candidates(tile_meta([tunnel, obj("building=yes", box(5, 5, 25, 25), "building", "building")]))
    assert answer(qa, "presence", a="a primary road", p="primary roads") is None
    assert answer(qa, "presence", a="a road", p="roads") is None


def _random_tile(rng: random.Random, i: int) -> dict[str, Any]:
    objs = []
    for _ in range(rng.randint(0, 6)):
        x, y = rng.uniform(0, 230), rng.uniform(0, 230)
        objs.append(obj("building=yes", box(x, y, x + rng.uniform(5, 25), y + rng.uniform(5, 25)),
                        "building", "building"))
    if rng.random() < 0.5:
        y = rng.uniform(0, 256)
        objs.append(obj("waterway=river", LineString([(0, y), (256, 256 - y)]), "river", "water"))
    if rng.random() < 0.4:
        x, y = rng.uniform(0, 200), rng.uniform(0, 200)
        objs.append(obj("natural=water", box(x, y, x + 30, y + 20), "pond", "water"))
    if rng.random() < 0.5:
        x = rng.uniform(0, 256)
        objs.append(obj("highway=track", LineString([(x, 0), (256 - x, 256)]), "dirt track", "road"))
    if not objs:
        objs.append(obj("landuse=farmland", box(0, 0, 256, rng.uniform(30, 256)), "farmland",
                        "landcover", mass=True))
    return tile_meta(objs, coverage=1.0 if rng.random() < 0.8 else 0.5)


def test_answer_balance_stays_within_the_caps() -> None:
    rng = random.Random(7)
    metas = [_random_tile(rng, i) for i in range(120)]
    st = StageStats("vqa")
    s = stage(yes_no_tolerance=2, max_count_share=0.3, max_pairs=10, max_per_family=3)
    out = list(s(iter(sample(f"t_{i:05d}", m) for i, m in enumerate(metas)), st))
    yes_no: dict[str, Counter[str]] = {}
    counts: Counter[str] = Counter()
    for smp in out:
        pairs = smp.meta["vqa"]["pairs"]
        assert len(pairs) <= 10
        assert max(Counter(p["family"] for p in pairs).values(), default=0) <= 3
        assert len({p["question"] for p in pairs}) == len(pairs)
        for p in pairs:
            if p["answer_type"] == "yes/no":
                yes_no.setdefault(p["family"], Counter())[p["answer"]] += 1
            if p["family"] == "counting":
                counts[p["answer"]] += 1
    assert sum(c["yes"] + c["no"] for c in yes_no.values()) > 100
    for family, c in yes_no.items():
        assert abs(c["yes"] - c["no"]) <= 2, (family, c)
    n = sum(counts.values())
    assert n >= 10
    for value, k in counts.items():
        assert k <= 0.3 * n + 2, (value, k, n)
    # without balancing the same tiles give a skewed yes/no split
    free = list(stage(yes_no_tolerance=None, max_count_share=None, max_pairs=10, max_per_family=3)(
        iter(sample(f"t_{i:05d}", m) for i, m in enumerate(metas)), StageStats("vqa")))
    c = Counter(p["answer"] for smp in free for p in smp.meta["vqa"]["pairs"] if p["answer_type"] == "yes/no")
    assert abs(c["yes"] - c["no"]) > 2


def _sub_validator(name: str) -> Draft202012Validator:
    schema = schemas.validator("sample").schema
    return Draft202012Validator({**schema["properties"][name], "$defs": schema["$defs"]})


def test_stage_output_json_member_provenance_and_schema() -> None:
    meta = village()
    smp = next(stage()(iter([sample("v_00000_00000", meta)]), StageStats("vqa")))
    doc = smp.meta["vqa"]
    assert json.loads(smp.extra["vqa.json"]) == {"key": "v_00000_00000", **doc}
    _sub_validator("vqa").validate(doc)
    assert doc["pairs"]
    objects = meta["osm"]["objects"]
    for p in doc["pairs"]:
        assert p["template"].split(".")[1] == "v1"
        assert len(p["object_ids"]) == len(p["objects"])
        for i in p["objects"]:
            assert objects[i]["tag"] in p["tags"]
        assert {objects[i]["id"] for i in p["objects"]} == set(p["object_ids"])
        if p["absence"]:
            assert p["answer"] in ("no", "0")
    # deterministic, and the stage pickles to workers
    again = next(pickle.loads(pickle.dumps(stage()))(iter([sample("v_00000_00000", village())]),
                                                      StageStats("vqa")))
    assert again.meta["vqa"] == doc


def test_missing_objects_fail_with_a_clear_error() -> None:
    meta = village()
    del meta["osm"]["objects"]
    with pytest.raises(MissingObjectsError, match="did not keep its objects"):
        list(stage()(iter([sample("v_00000_00000", meta)]), StageStats("vqa")))
    with pytest.raises(MissingObjectsError, match="put an osm_join stage before vqa"):
        list(stage()(iter([sample("v_00000_00000", {"geo": meta["geo"]})]), StageStats("vqa")))
    assert VqaStage.needs_objects


# -- scene labels --------------------------------------------------------------------------------
def test_scene_labels_from_osm_and_landcover() -> None:
    farm = obj("landuse=farmland", box(0, 0, 256, 200), "farmland", "landcover", mass=True)
    scene = classify(tile_meta([farm]))
    assert scene["label"] == "farmland" and scene["labels"] == ["farmland"]
    assert scene["prompt"] == "farmland"
    houses = [obj("building=house", box(x, y, x + 12, y + 12), "house", "building")
              for x in range(0, 250, 25) for y in range(0, 250, 25)]  # 100 houses, 23% of the tile
    assert classify(tile_meta(houses))["label"] == "dense residential"
    assert "residential" not in classify(tile_meta(houses))["labels"]  # implied by dense
    few = houses[:8]  # 8 buildings on 6.6 ha, 1.8% of the tile: sparse
    assert classify(tile_meta(few))["label"] == "sparse residential"
    # sparseness says few buildings are there: not where the map is partial
    partial = classify(tile_meta(few, coverage=0.5))
    assert partial["label"] is None and partial["reason"]
    # a minority class is no label under partial coverage; a majority one is
    assert classify(tile_meta([obj("landuse=farmland", box(0, 0, 256, 110), "farmland", "landcover",
                                   mass=True)], coverage=0.5))["label"] is None
    assert classify(tile_meta([farm], coverage=0.5))["label"] == "farmland"
    # landcover shares count as land evidence; the larger of OSM and landcover wins
    meta = tile_meta([obj("waterway=river", LineString([(0, 128), (256, 128)]), "river", "water")])
    meta["landcover"] = {"source": "wc.tif", "covered": 1.0, "dominant": "tree cover",
                         "classes": [{"code": 10, "name": "tree cover", "phrase": "tree cover", "share": 0.7},
                                     {"code": 40, "name": "cropland", "phrase": "cropland", "share": 0.3}]}
    scene = classify(meta)
    assert scene["label"] == "forest" and set(scene["labels"]) >= {"forest", "farmland", "river"}
    assert scene["evidence"] == ["osm", "landcover"]
    # nothing to go on
    assert classify(tile_meta([obj("highway=path", LineString([(0, 5), (30, 5)]), "path", "road")]))["label"] is None


def test_scene_label_stage_and_schema() -> None:
    from rsdata.tasks.scene import SceneLabel

    st = StageStats("scene_label")
    smp = next(SceneLabel({"classes": None})(iter([sample("v_00000_00000", village())]), st))
    _sub_validator("scene").validate(smp.meta["scene"])
    assert st.extra[f"label:{smp.meta['scene']['label'] or 'none'}"] == 1


def test_a_generic_building_may_be_the_house_asked_about() -> None:
    house = obj("building=house", box(10, 10, 30, 30), "house", "building")
    generic = obj("building=yes", box(100, 100, 130, 120), "building", "building")
    temple = tile_meta([obj("building=temple", box(5, 5, 25, 25), "temple", "building")])
    qa = all_candidates(tile_meta([house, generic]), [temple])
    assert answer(qa, "presence", a="a house", p="houses") == "yes"
    assert answer(qa, "counting", p="houses") is None     # the building=yes may be a second house
    assert answer(qa, "counting", p="buildings") == "2"
    assert answer(qa, "presence", a="a temple", p="temples") is None  # it may be a temple
    qa = all_candidates(tile_meta([house]), [temple])
    assert answer(qa, "counting", p="houses") == "1"
    assert answer(qa, "presence", a="a temple", p="temples") is None  # a building of some kind is there
