"""The picture-truth labels and the scoring of benchmarks/bench_caption_truth.py on hand-made
captions (the benchmark itself runs recipes and is not part of the test suite)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import bench_caption_truth as bct  # noqa: E402

LABEL = {"key": "r_00001_00002", "scene": "test",
         "visible": ["building", "road_unpaved", "farmland"], "uncertain": ["water_body"],
         "dominant": "farmland", "crs": "EPSG:32734", "bounds": [0.0, 0.0, 640.0, 640.0]}


def meta(*phrases: str, bounds: list[float] | None = None) -> dict[str, Any]:
    return {"geo": {"crs": "EPSG:32734", "bounds": bounds or [0.0, 0.0, 640.0, 640.0]},
            "osm": {"tags": [{"tag": f"x={p}", "phrase": p, "visible": True} for p in phrases]}}


@pytest.fixture(scope="module")
def matcher() -> bct.Matcher:
    return bct.Matcher(extra=bct.lexicon_phrases())


def test_caption_names_only_visible_things(matcher: bct.Matcher) -> None:
    ok = bct.check_caption("A farm building beside fields and a dirt track.", LABEL, matcher)
    assert ok.ok and [p for p, _ in ok.named] == ["farm building", "fields", "dirt track"]
    pond = bct.check_caption("Two ponds near a dirt road.", LABEL, matcher)
    assert pond.ok  # a pond is uncertain in the label: not a failure
    reserve = bct.check_caption("A nature reserve covers most of the image.", LABEL, matcher)
    assert not reserve.ok and reserve.wrong == ["nature reserve"]
    highway = bct.check_caption("A highway crosses the image.", LABEL, matcher)
    assert highway.wrong == ["highway"]  # paved road: not in the picture
    road = bct.check_caption("A road crosses the image.", LABEL, matcher)
    assert road.ok  # "road" may be paved or not: the dirt track answers it
    fence = bct.check_caption("Buildings along a fence.", LABEL, matcher)
    assert fence.ok and fence.unverifiable == ["fence"]
    # longest match first: a railway track is not a dirt "track", parking is not a park
    rail = bct.check_caption("A railway track and a parking lot.", LABEL, matcher)
    assert [p for p, _ in rail.named] == ["railway track", "parking lot"] and not rail.ok


def test_score_tile_visible_and_dominant(matcher: bct.Matcher) -> None:
    caps = ["A farm building and a dirt track.", "A nature reserve covers most of the image.",
            "Fields with a dirt track."]
    tile = bct.score_tile(LABEL, caps, meta("farmland", "nature reserve"), matcher)
    assert not tile.only_visible
    assert tile.wrong == [{"caption": caps[1], "phrases": ["nature reserve"]}]
    assert tile.dominant_mapped and tile.dominant_any and not tile.dominant_primary
    assert tile.osm_not_seen == ["nature reserve"]
    unmapped = bct.score_tile(LABEL, caps[:1], meta("dirt track"), matcher)
    assert unmapped.only_visible and not unmapped.dominant_mapped and not unmapped.dominant_any
    town = dict(LABEL, visible=["building", "residential_area", "road_paved"],
                dominant="residential_area")
    dense = bct.score_tile(town, ["120 buildings with tin roofs."], meta("building"), matcher)
    assert dense.dominant_mapped and dense.dominant_primary  # buildings answer a built-up tile
    summary = bct.summarize_tiles([tile, unmapped, dense])
    assert summary["tiles"] == 3 and summary["only_visible"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["dominant_mapped_tiles"] == 2 and summary["dominant_mentioned"] == 1.0
    assert summary["dominant_mentioned_primary"] == 0.5 and summary["visible_and_dominant"] == 0.5


def test_landcover_classes_map_the_dominant_class(matcher: bct.Matcher) -> None:
    m = meta("dirt track")
    m["landcover"] = {"classes": [{"code": 40, "phrase": "cropland", "share": 0.7},
                                  {"code": None, "phrase": "unknown", "share": 0.3}]}
    assert "farmland" in bct.mapped_classes(m, matcher)
    tile = bct.score_tile(LABEL, ["Mostly cropland with a dirt track."], m, matcher)
    assert tile.only_visible and tile.dominant_mapped and tile.dominant_any


def test_text_stats_vocabulary_skeletons_and_constant_fragments(matcher: bct.Matcher) -> None:
    caps = ["Two buildings near a dirt track.", "Three houses near a minor road.",
            "A dirt track crosses this 640 m wide photo.", "A pond crosses this 640 m wide photo.",
            "Fields seen from above."] + [f"Scene number {w}." for w in ("alpha", "beta", "gamma",
                                                                        "delta", "epsilon")]
    stats = bct.text_stats(caps, matcher, constant_share=0.15)
    assert stats["captions"] == 10
    words = {w for c in caps for w in c.lower().replace(".", "").split() if w.isalpha()}
    assert stats["vocabulary_size"] == len(words)
    # "two buildings near a dirt track" and "three houses near a minor road" share a skeleton
    assert bct.skeleton(caps[0], matcher) == "<N> <P> near a <P> ."
    assert bct.skeleton(caps[1], matcher) == "<N> <P> near a <P> ."
    assert bct.skeleton(caps[2], matcher) == "a <P> crosses this <N> m wide photo ."
    assert stats["skeletons"] == 8
    frags = {f["fragment"]: f["share"] for f in stats["constant_fragments"]}
    # the longest form only ("this 640 m wide" is in the same two captions)
    assert frags == {"crosses this 640 m wide photo": 0.2, "a dirt track": 0.2}
    assert stats["top_fragment"] == {"fragment": "crosses this 640 m wide photo", "share": 0.2}
    assert stats["top_phrase"] == {"phrase": "dirt track", "share": 0.2}


def test_template_fragments_mask_what_the_data_fill_in(matcher: bct.Matcher) -> None:
    """Template fragments (the target) keep template words only: a viewpoint phrase repeated
    in every caption counts, a repeated grid position, share word or roof material does not;
    raw fragments keep them all."""
    caps = ["Farmland in the top right, seen from above.", "Buildings in the top right, seen from above.",
            "Most of the roofs are tin.", "About a third of the roofs are concrete.",
            "Buildings with tin and concrete roofs.", "Farmland with tin and concrete roofs."] + \
        [f"Scene number {w}." for w in ("alpha", "beta", "gamma", "delta")]
    stats = bct.text_stats(caps, matcher, constant_share=0.15)
    tmpl = {f["fragment"]: f["share"] for f in stats["constant_template_fragments"]}
    assert tmpl == {"seen from above": 0.2, "of the roofs are": 0.2}, tmpl
    raw = {f["fragment"] for f in stats["constant_fragments"]}
    assert "with tin and concrete roofs" in raw and any("in the top right" in f for f in raw), raw
    assert bct.template_fragments("A single dirt track and a single house.", matcher) == set()
    assert "in the" not in bct.template_fragments("Fields in the top-left corner.", matcher)


def test_bounds_check_and_corpus_join(matcher: bct.Matcher) -> None:
    assert not bct.bounds_moved(LABEL, meta())
    assert not bct.bounds_moved(LABEL, meta(bounds=[3.0, 0.0, 643.0, 640.0]))  # < 1% of 640 m
    assert bct.bounds_moved(LABEL, meta(bounds=[64.0, 0.0, 704.0, 640.0]))
    samples = [{"key": LABEL["key"], "captions": ["Fields and a dirt track."], "primary": None,
                "meta": meta("farmland")},
               {"key": "r_00009_00009", "captions": ["A building."], "primary": None,
                "meta": meta()}]
    moved = dict(LABEL, key="r_00001_00003", bounds=[640.0, 0.0, 1280.0, 640.0])
    samples.append({"key": moved["key"], "captions": ["A highway."], "primary": None,
                    "meta": meta()})
    gone = dict(LABEL, key="r_00005_00005")
    labels = {lab["key"]: lab for lab in (LABEL, moved, gone)}
    res = bct.score_corpus("t", samples, labels, matcher)
    assert res["labelled_in_corpus"] == 1 and res["bounds_moved"] == ["r_00001_00003"]
    assert res["labelled_not_in_corpus"] == ["r_00005_00005"]
    assert res["only_visible"] == 1.0 and res["dominant_mentioned"] == 1.0
    assert "only visible" in bct.report([res])


def test_phrase_table_covers_the_vocabulary_and_uses_known_classes(matcher: bct.Matcher) -> None:
    table = bct.phrase_table()
    for phrase, classes in table.items():
        assert classes is None or all(c in bct.CLASSES for c in classes), phrase
    assert table["nature reserve"] == () and table["nature reserves"] == ()
    assert table["buildings"] == ("building",) and table["places of worship"] == ("building",)
    missing = sorted(p for p in bct.lexicon_phrases() if p not in table)
    assert not missing, f"add these caption phrases to PHRASE_CLASSES or UNVERIFIABLE: {missing}"


def test_picture_truth_labels() -> None:
    rows = [json.loads(line) for line in bct.LABELS.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    assert len(rows) >= 60
    keys = [r["key"] for r in rows]
    assert len(set(keys)) == len(keys)
    scenes = {r["scene"] for r in rows}
    assert scenes == {"swellendam", "banepa"}
    for r in rows:
        assert set(r) >= {"key", "scene", "gsd_m", "visible", "dominant", "uncertain", "notes",
                          "crs", "bounds", "bounds_wgs84", "size", "labelled"}, r["key"]
        assert r["dominant"] in r["visible"], r["key"]
        assert set(r["visible"]) <= set(bct.CLASSES) and set(r["uncertain"]) <= set(bct.CLASSES)
        assert not set(r["visible"]) & set(r["uncertain"]), r["key"]
        assert len(r["bounds"]) == 4 and r["bounds"][0] < r["bounds"][2], r["key"]
        assert r["gsd_m"] > 0 and r["notes"]
    assert len(bct.load_labels()) == len(rows)
