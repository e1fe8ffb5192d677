"""The caption validator: tables of accepted and rejected captions, its agreement with the fact
phrases and template captions, and its recall on the hand-labeled set of real model outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from llm_support import farm_tile, tag

from rsdata.captions.templates import captions_for, join_words
from rsdata.llm.facts import build_facts
from rsdata.llm.validator import REASONS, Limits, Validator

PREFILL = "This aerial image shows"
LABELED = Path(__file__).parent / "data" / "llm_labeled.jsonl"
FRESH = Path(__file__).parent / "data" / "llm_eval_fresh.jsonl"
FRESH2 = Path(__file__).parent / "data" / "llm_eval_fresh2.jsonl"
# Kept-caption faithfulness to the OSM stats on the first fresh set. Its false keeps (relation
# claims) were read to write the geometry relation rules, so since then it is a TUNED-ON
# figure: 21 of 22 kept (95.5%; before those rules 21 of 25, 84%). A change that lets more
# unsupported captions through fails here.
FRESH_KEPT_STATS_FAITHFUL = 0.95
FRESH_MIN_KEPT = 20
# The second fresh set (tests/data/llm_eval_fresh2.jsonl): generated, labelled by hand and frozen
# before any of its answers was read against the relation rules; measured once: 10 of 10 kept
# answers faithful to the stats (Wilson 95%: 72-100%), 10 of 157 kept.
FRESH2_KEPT_STATS_FAITHFUL = 1.0
FRESH2_MIN_KEPT = 8
GEO = {"size": [256, 256], "gsd_m": 2.5}


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


def water_tile() -> list[dict[str, Any]]:
    return [
        tag(
            "natural=water",
            "water",
            share=0.31,
            position="bottom right",
            mass=True,
            category="water",
            cells=["bottom right", "bottom", "right"],
        ),
        tag(
            "building=house",
            "house",
            count=12,
            share=0.04,
            position="top left",
            category="building",
            cells=["top left", "top", "left"],
            area_m2=1500.0,
        ),
        tag(
            "highway=path",
            "path",
            count=1,
            length=120.0,
            position="center",
            geom="line",
            category="road",
            cells=["center"],
        ),
        tag(
            "landuse=forest",
            "forest",
            share=0.002,
            mass=True,
            category="landcover",
            visible=False,
            position="top right",
        ),
    ]


FARM = farm_tile()
FARM_FACTS = [t["tag"] for t in FARM]
WATER = water_tile()
WATER_FACTS = ["natural=water", "building=house", "highway=path"]

ACCEPTED = [
    (
        FARM,
        "This aerial image shows seven buildings in the top left, farmland covering most of the image and minor roads running across it.",
    ),
    (
        FARM,
        "This aerial image shows farmland covering most of the image, with seven buildings in the top left and minor roads crossing it.",
    ),
    (
        FARM,
        "This aerial image shows mostly farmland, seven buildings in the upper left corner and a road across the image.",
    ),
    (
        FARM,
        "This aerial image shows farmland dominating the scene, 7 buildings near the top left and roads running across the image.",
    ),
    (
        FARM,
        "This aerial image shows fields over most of the image, several buildings in the top left and a few minor roads.",
    ),
    (
        FARM,
        "What does this aerial image show? It shows seven buildings in the top left, minor roads and farmland.",
    ),
    (
        FARM,
        "This aerial image shows about 820 m of minor road across farmland, and seven buildings in the northwest.",
    ),
    (
        WATER,
        "This aerial image shows twelve houses in the top left, water in the bottom right and a path in the center.",
    ),
    (
        FARM,
        "This aerial image shows minor roads running across the farmland, with seven buildings in the top left.",
    ),
    (
        WATER,
        "This aerial image shows water covering part of the image on the lower right, 12 homes at the top left and a footpath in the middle.",
    ),
    (
        WATER,
        "This aerial image shows a dozen houses in the top left corner, a body of water on the right and a path in the center.",
    ),
    # issue 15: the image itself as the frame of the caption is no self-reference
    (
        FARM,
        "This aerial image shows a scene of farmland covering most of the image, seven buildings in the top left and minor roads running across it.",
    ),
    (
        FARM,
        "What does this aerial image show? It shows a scene with seven buildings in the top left of this image, farmland covering most of it and minor roads.",
    ),
    (
        FARM,
        "This aerial image shows farmland over more than half of the image, seven buildings in the top left and minor roads cutting across it.",
    ),
    (
        FARM,
        "This aerial image shows seven buildings located in the top left part of the image, farmland covering a large part of it and minor roads.",
    ),
]

REJECTED = [
    # (tile, caption, expected reason)
    (
        FARM,
        "This aerial image shows a small village surrounded by farmland, seven buildings in the top left and minor roads.",
        "invented_scene_word",
    ),
    (
        FARM,
        "This aerial image shows farmland, seven buildings in the top left, minor roads and a mountain.",
        "invented_scene_word",
    ),
    (
        FARM,
        "This aerial image shows farmland, seven buildings in the top left, minor roads and a river.",
        "unsupported_class",
    ),
    (
        FARM,
        "This aerial image shows farmland, seven houses in the top left and minor roads.",
        "unsupported_class",
    ),
    (
        FARM,
        "This aerial image shows farmland, a building in the top left and minor roads across the image.",
        "number_agreement",
    ),
    (
        FARM,
        "This aerial image shows farmland, five buildings in the top left and minor roads across the image.",
        "wrong_count",
    ),
    (
        FARM,
        "This aerial image shows farmland, seven buildings in the top left and three minor roads.",
        "wrong_count",
    ),
    (
        FARM,
        "This aerial image shows farmland, many buildings in the top left and minor roads.",
        "wrong_count",
    ),
    (
        FARM,
        "This aerial image shows farmland, seven buildings in the bottom right and minor roads.",
        "wrong_position",
    ),
    (
        FARM,
        "This aerial image shows farmland in the center, seven buildings on the right and minor roads across it.",
        "wrong_position",
    ),
    (
        FARM,
        "This aerial image shows farmland covering a small part of the image, seven buildings in the top left and minor roads.",
        "wrong_share",
    ),
    (
        FARM,
        "This aerial image shows minor roads dominating the image, farmland and seven buildings in the top left.",
        "wrong_share",
    ),
    (
        FARM,
        "This aerial image shows farmland, seven large buildings in the top left and minor roads.",
        "wrong_size",
    ),
    (FARM, "This aerial image shows a farmhouse with a river at its center.", "unsupported_class"),
    (
        FARM,
        "This aerial image shows farmland, seven buildings next to a minor road at its center.",
        "unsupported_relation",
    ),
    (
        FARM,
        "This aerial image shows seven buildings surrounded by farmland and minor roads.",
        "unsupported_relation",
    ),
    (
        FARM,
        "This aerial image shows farmland with seven buildings in the top left corner of the minor road.",
        "unsupported_relation",
    ),
    (
        FARM,
        "This aerial image shows farmland, seven buildings in the top left and minor roads, taken in 2010.",
        "unsupported_number",
    ),
    (
        FARM,
        "This aerial image shows 500 m of minor road, farmland and seven buildings in the top left.",
        "unsupported_number",
    ),
    (
        FARM,
        "This aerial image shows farmland near Swellendam, seven buildings in the top left and minor roads.",
        "invented_name",
    ),
    (
        FARM,
        "This aerial image shows farmland, seven buildings in the top left, which are a minor road across the image.",
        "unsupported_relation",
    ),
    (
        FARM,
        "This aerial image shows farmland covering most of the image, in the center, covered by seven buildings in the top left and roads.",
        "unsupported_relation",
    ),
    (
        FARM,
        "This aerial image shows seven buildings in the top left of a cityscape, farmland and minor roads.",
        "invented_scene_word",
    ),
    (
        FARM,
        "This aerial image shows farmland covering most of the image, leaving out the buildings and roads.",
        "prompt_echo",
    ),
    (FARM, "This aerial image shows farmland.", "low_coverage"),
    (FARM, "This aerial image shows", "empty"),
    (
        FARM,
        "This aerial image shows farmland, seven buildings in the top left and minor roads running",
        "truncated",
    ),
    (FARM, "This aerial image shows the the farmland of of buildings roads.", "not_english"),
    (FARM, "This aerial image shows farmland <|im_end|> seven buildings", "prompt_echo"),
    (
        FARM,
        "This aerial image shows Ackerland mit sieben Gebäuden in der oberen linken Ecke.",
        "not_english",
    ),
    (
        FARM,
        "This aerial image shows farmland. Seven buildings stand in the top left. Minor roads run across.",
        "too_long",
    ),
    (
        WATER,
        "This aerial image shows twelve houses in the top left, water in the bottom right, a path in the center and a forest.",
        "invisible_feature",
    ),
    (
        WATER,
        "This aerial image shows a house in the top left, water in the bottom right and a path in the center.",
        "number_agreement",
    ),
    (
        WATER,
        "This aerial image shows twelve houses in the top left and a path running across the water.",
        "unsupported_relation",
    ),
    (
        FARM,
        "This aerial image shows dirt running across a road, farmland and seven buildings in the top left.",
        "invented_scene_word",
    ),
    (
        WATER,
        "This aerial image shows twelve houses in the top left, a lake in the bottom right and a path in the center.",
        "unsupported_class",
    ),
    (
        WATER,
        "This aerial image shows twelve houses in the top left, water in the bottom right and paths in the center.",
        "number_agreement",
    ),
    (
        WATER,
        "This aerial image shows twelve houses in the top left, water filling most of the image and a path in the center.",
        "wrong_share",
    ),
    (
        WATER,
        "This aerial image shows twelve large houses in the top left, water in the bottom right and a path in the center.",
        "wrong_size",
    ),
    # issue 15: statements no tag supports although every class, count and position is right
    (
        FARM,
        "This aerial image shows seven buildings in the corner of a map, farmland covering most of the image and minor roads.",
        "self_reference",
    ),
    (
        FARM,
        "This aerial image shows seven buildings in the top left of the page, farmland covering most of the image and minor roads.",
        "self_reference",
    ),
    (
        FARM,
        "This aerial image shows farmland covering most of the screen, seven buildings in the top left and minor roads.",
        "self_reference",
    ),
    (
        FARM,
        "This aerial image shows minor roads running across the image of farmland, with seven buildings in the top left.",
        "self_reference",
    ),
    (
        FARM,
        "This aerial image shows seven buildings in the top left and minor roads, which is a scene in the scene of farmland covering most of the image.",
        "self_reference",
    ),
    (
        FARM,
        "This aerial image shows the image's seven buildings in the top left, farmland covering most of it and minor roads.",
        "self_reference",
    ),
    (
        FARM,
        "This aerial image shows farmland covering most of the image, seven buildings in the top left and minor roads, which is all there is.",
        "filler",
    ),
    (
        FARM,
        "This aerial image shows farmland covering most of the image, seven buildings in the top left and minor roads, which is a scene in itself.",
        "filler",
    ),
    (
        FARM,
        "This aerial image shows a large part of farmland, covering a large part of the image, with seven buildings in the top left and minor roads.",
        "part_of_whole",
    ),
    (
        FARM,
        "This aerial image shows seven buildings in the top left, minor roads and a small piece of a larger farmland.",
        "part_of_whole",
    ),
    (
        FARM,
        "This aerial image shows farmland and a portion of it with seven buildings in the top left and minor roads.",
        "part_of_whole",
    ),
    (
        FARM,
        "This aerial image shows seven brightly painted buildings in the top left, farmland covering most of the image and minor roads.",
        "unsupported_detail",
    ),
    (
        FARM,
        "This aerial image shows farmland covering most of the image, seven buildings in the top left and winding minor roads.",
        "unsupported_detail",
    ),
    (
        FARM,
        "This aerial image shows a peaceful farmland covering most of the image, seven buildings in the top left and minor roads.",
        "unsupported_detail",
    ),
    (
        FARM,
        "This aerial image shows farmland covering most of the image with no trees, seven buildings in the top left and minor roads.",
        "unsupported_detail",
    ),
    (
        FARM,
        "This aerial image shows seven buildings in the top left, each with its own unique style, farmland and minor roads.",
        "unsupported_detail",
    ),
    (
        FARM,
        "This aerial image shows seven densely packed buildings in the top left, farmland covering most of the image and minor roads.",
        "wrong_share",
    ),
]


@pytest.mark.parametrize("tags,text", ACCEPTED)
def test_accepted(validator: Validator, tags: list[dict[str, Any]], text: str) -> None:
    facts = [t["tag"] for t in tags if t["visible"]]
    verdict = validator.validate(
        text, tags, facts, Limits(max_words=45, max_sentences=2), prefill=PREFILL, geo=GEO
    )
    assert verdict.ok, verdict.complaints()
    assert verdict.coverage >= 0.75


@pytest.mark.parametrize("tags,text,reason", REJECTED)
def test_rejected(validator: Validator, tags: list[dict[str, Any]], text: str, reason: str) -> None:
    facts = [t["tag"] for t in tags if t["visible"]]
    verdict = validator.validate(
        text, tags, facts, Limits(max_words=45, max_sentences=2), prefill=PREFILL, geo=GEO
    )
    assert reason in REASONS
    assert reason in verdict.reasons, (verdict.reasons, verdict.complaints())
    assert all(p.detail for p in verdict.problems)


def test_complaints_name_what_is_wrong(validator: Validator) -> None:
    verdict = validator.validate(
        "This aerial image shows a village and a building in the bottom right.",
        FARM,
        FARM_FACTS,
        prefill=PREFILL,
    )
    text = " ".join(verdict.complaints())
    assert (
        "village" in text and "there are 7" in text and "top left" in text and "leaves out" in text
    )


def test_coverage_floor_is_configurable(validator: Validator) -> None:
    text = "This aerial image shows farmland covering most of the image and seven buildings in the top left."
    assert validator.validate(text, FARM, FARM_FACTS, Limits(min_coverage=0.6), prefill=PREFILL).ok
    verdict = validator.validate(text, FARM, FARM_FACTS, Limits(min_coverage=1.0), prefill=PREFILL)
    assert verdict.reasons == ["low_coverage"] and verdict.coverage == pytest.approx(2 / 3)


def tiles_for_self_check() -> list[dict[str, Any]]:
    tiles = [FARM, WATER]
    tiles.append(
        [
            tag(
                "landuse=residential",
                "residential area",
                share=0.8,
                position="across",
                category="landuse",
                cells=["top", "center", "bottom", "left", "right"],
            ),
            tag(
                "building=house",
                "house",
                count=23,
                share=0.12,
                position="across",
                category="building",
                cells=["top", "center", "bottom", "left", "right"],
            ),
            tag(
                "highway=residential",
                "residential road",
                count=5,
                length=1300.0,
                position="across",
                geom="line",
                category="road",
                cells=["top", "center"],
            ),
        ]
    )
    tiles.append(
        [
            tag(
                "waterway=river",
                "river",
                count=2,
                length=640.0,
                position="across",
                geom="line",
                category="water",
                cells=["top", "center", "bottom"],
            ),
            tag(
                "landuse=farmland",
                "farmland",
                share=0.4,
                mass=True,
                position="left",
                category="landuse",
                cells=["left", "top left", "bottom left"],
            ),
            tag(
                "landuse=meadow",
                "meadow",
                share=0.2,
                position="right",
                category="landcover",
                cells=["right", "bottom right"],
            ),
        ]
    )
    tiles.append(
        [
            tag(
                "building=yes",
                "building",
                count=1,
                share=0.004,
                position="bottom right",
                category="building",
                cells=["bottom right"],
                area_m2=160.0,
            )
        ]
    )
    # a town: plain buildings plus typed ones ("146 buildings ...; 12 residential buildings"),
    # one school mapped twice (amenity=school and building=school)
    every = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom",
             "bottom right"]
    tiles.append(
        [
            tag("building=yes", "building", count=146, share=0.44, position="across",
                category="building", cells=every, area_m2=7300.0),
            tag("building=residential", "residential building", count=12, share=0.04,
                position="bottom left", category="building", cells=["bottom left", "bottom"],
                area_m2=650.0),
            tag("building=temple", "temple", count=1, share=0.001, position="top",
                category="building", area_m2=20.0),
            tag("amenity=school", "school grounds", "school grounds", count=1, share=0.017,
                position="top left", category="amenity", area_m2=280.0),
            tag("building=school", "school building", count=1, share=0.01, position="top left",
                category="building", area_m2=165.0),
        ]
    )
    return tiles


@pytest.mark.parametrize("index", range(6))
def test_fact_phrases_and_template_captions_always_pass(validator: Validator, index: int) -> None:
    """What code writes from the stats must never be rejected: facts joined into a sentence,
    and every template caption (coverage aside)."""
    tags = tiles_for_self_check()[index]
    meta = {"key": f"t{index}", "geo": GEO, "osm": {"n_features": 9, "tags": tags}}
    facts = build_facts(meta)
    text = f"{PREFILL} {join_words([f.text for f in facts])}."
    verdict = validator.validate(
        text, tags, [f.tag for f in facts], Limits(max_words=80), prefill=PREFILL, geo=GEO
    )
    assert verdict.ok and verdict.coverage == 1.0, (text, verdict.complaints())
    for seed in range(4):
        for cap in captions_for(meta, count=6, seed=seed):
            v = validator.validate(
                cap.text, tags, [], Limits(max_words=80, max_sentences=2), geo=GEO
            )
            assert v.ok, (cap.text, v.complaints())


# -- the labeled set of real model outputs --------------------------------------------------------
def labeled() -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in LABELED.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def verdicts(validator: Validator) -> list[tuple[dict[str, Any], Any]]:
    out = []
    for rec in labeled():
        tags = rec["tile"]["osm"]["tags"]
        v = validator.validate(
            rec["caption"],
            tags,
            rec["facts"],
            Limits(rec["limits"]["max_words"], rec["limits"]["max_sentences"], 0.75),
            prefill=rec["prefill"],
            geo=rec["tile"]["geo"],
        )
        out.append((rec, v))
    return out


def _bench() -> Any:
    """benchmarks/bench_llm.py (the labeled-set relabelling and the fresh-set metrics)."""
    import importlib.util
    import sys

    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    spec = importlib.util.find_spec("benchmarks.bench_llm")
    assert spec is not None
    import benchmarks.bench_llm as bench

    return bench


def test_labeled_set_is_large_varied_and_hand_marked() -> None:
    recs = labeled()
    assert len(recs) >= 100
    models = {r["model"] for r in recs}
    assert len(models) >= 2 and len({r["tile"]["key"] for r in recs}) >= 20
    for r in recs:
        assert isinstance(r["faithful"], bool)
        assert r["faithful"] == (not r["errors"]), r["id"]
    assert 0 < sum(r["faithful"] for r in recs) < len(recs)


def test_validator_recall_of_unfaithful_captions(validator: Validator) -> None:
    faithful_now = _bench().faithful_now
    results = verdicts(validator)
    unfaithful = [(r, v) for r, v in results if not faithful_now(r)]
    missed = [(r["id"], r["caption"], r["errors"]) for r, v in unfaithful if v.ok]
    recall = 1 - len(missed) / len(unfaithful)
    assert recall >= 0.95, missed


def test_validator_rarely_accuses_faithful_captions(validator: Validator) -> None:
    """A faithful caption may be rejected for leaving facts out (coverage) or its form, but the
    validator should almost never claim it states something false."""
    faithful_now = _bench().faithful_now
    results = verdicts(validator)
    faithful = [(r, v) for r, v in results if faithful_now(r)]
    form = {"low_coverage", "too_long", "truncated", "not_english", "empty", "prompt_echo"}
    accused = [
        (r["id"], r["caption"], v.complaints()) for r, v in faithful if set(v.reasons) - form
    ]
    assert len(accused) <= max(1, 0.1 * len(faithful)), accused


def test_issue15_relabelling_names_real_records() -> None:
    """The captions issue 15 counts as unsupported (filler, self-reference, part-of-whole) are
    records the labeled set marked faithful; each is rejected by one of the new rules."""
    bench = _bench()
    recs = {r["id"]: r for r in labeled()}
    new = {"self_reference", "filler", "part_of_whole", "unsupported_detail"}
    validator = Validator()
    for rid in bench.ISSUE15_UNSUPPORTED:
        rec = recs[rid]
        assert rec["faithful"], rid
        verdict = bench.validate_record(validator, rec)
        assert set(verdict.reasons) & new, (rid, verdict.reasons)


# -- the frozen fresh evaluation set (issue 15) ------------------------------------------------
def test_fresh_set_is_frozen_large_and_hand_labelled() -> None:
    header, recs = _bench().read_fresh(FRESH)
    assert header["frozen"] and len(header["git_commit"]) == 40 and header["generated_at"]
    assert len(recs) >= 100 and header["n"] == len(recs)
    assert len({r["key"] for r in recs}) >= 60 and {r["scene"] for r in recs} == {
        "banepa",
        "swellendam",
    }
    old_keys = {r["tile"]["key"] for r in labeled()}
    assert not old_keys & {r["key"] for r in recs}  # tiles the labeled set never used
    for r in recs:
        assert isinstance(r["faithful_stats"], bool), r["id"]
        assert r["faithful_stats"] or r["unsupported"], r["id"]
        assert r["faithful_picture"] in ("yes", "no", "unsure"), r["id"]
        assert set(r["validator_before"]) >= {"ok", "reasons"}
        assert {"style", "temperature", "prompt_version", "facts", "caption"} <= set(r)


def test_fresh_set_kept_faithfulness_does_not_regress(validator: Validator) -> None:
    """Of the fresh answers the validator keeps, the share faithful to the stats is at least
    the figure the README reports (and the validator keeps some)."""
    bench = _bench()
    _, recs = bench.read_fresh(FRESH)
    kept = [r for r in recs if bench.validate_record(validator, r).ok]
    assert len(kept) >= FRESH_MIN_KEPT
    faithful = sum(r["faithful_stats"] for r in kept)
    bad = [(r["id"], r["caption"], r["unsupported"]) for r in kept if not r["faithful_stats"]]
    assert faithful / len(kept) >= FRESH_KEPT_STATS_FAITHFUL - 1e-9, bad


def test_second_fresh_set_is_frozen_new_and_hand_labelled() -> None:
    """>= 100 answers on tiles no earlier set used (another tiling: other sizes and GSDs), every
    one labelled against the stats, a sample against the picture, the relation geometry kept."""
    header, recs = _bench().read_fresh(FRESH2)
    assert header["frozen"] and len(header["git_commit"]) == 40 and header["labelled_at"]
    assert len(recs) >= 100 and header["n"] == len(recs)
    assert {r["scene"] for r in recs} == {"banepa2", "demo2"}

    def tile_id(r: dict[str, Any]) -> tuple[Any, ...]:
        geo = r["tile"]["geo"]
        return (r["key"], float(geo["gsd_m"]), tuple(geo["size"]))

    _, old = _bench().read_fresh(FRESH)
    seen = {tile_id(r) for r in old} | {
        (r["tile"]["key"], float(r["tile"]["geo"]["gsd_m"]), tuple(r["tile"]["geo"]["size"]))
        for r in labeled()
    }
    assert not seen & {tile_id(r) for r in recs}
    pictured = set(header["picture_sample"])
    for i, r in enumerate(recs):
        assert isinstance(r["faithful_stats"], bool), r["id"]
        assert r["faithful_stats"] or r["unsupported"], r["id"]
        assert (r["faithful_picture"] in ("yes", "no", "unsure")) == (i in pictured), r["id"]
        assert r["tile"]["osm"]["objects"], r["id"]  # what a relation check reads
    assert sum(r["faithful_stats"] for r in recs) >= 20
    assert all(recs[i]["faithful_stats"] is False or i in pictured for i in range(len(recs)))


def test_second_fresh_set_kept_faithfulness(validator: Validator) -> None:
    """The headline figure: of the answers the validator keeps on the second fresh set, the
    share faithful to the stats (target >= 97%), and the validator keeps some."""
    bench = _bench()
    _, recs = bench.read_fresh(FRESH2)
    kept = [r for r in recs if bench.validate_record(validator, r).ok]
    assert len(kept) >= FRESH2_MIN_KEPT
    bad = [(r["id"], r["caption"], r["unsupported"]) for r in kept if not r["faithful_stats"]]
    assert (len(kept) - len(bad)) / len(kept) >= FRESH2_KEPT_STATS_FAITHFUL - 1e-9, bad


def test_never_crashes_on_word_salad(validator: Validator) -> None:
    """Random mixes of every kind of word the validator reads give a verdict, never an error."""
    import random

    rng = random.Random(0)
    words = [
        "farmland",
        "buildings",
        "a",
        "the",
        "seven",
        "12",
        "m",
        "%",
        "top",
        "left",
        "across",
        "of",
        "near",
        "surrounded",
        "by",
        "dominated",
        "most",
        "large",
        "small",
        "village",
        "road",
        "roads",
        ",",
        ".",
        "and",
        "with",
        "in",
        "corner",
        "covered",
        "part",
        "image",
        "Swellendam",
        "few",
        "several",
        "at",
        "its",
        "center",
        "minor",
        "houses",
        "2.5",
    ]
    for tags in (FARM, WATER, []):
        facts = [t["tag"] for t in tags if t["visible"]]
        for _ in range(300):
            text = PREFILL + " " + " ".join(rng.choice(words) for _ in range(rng.randint(0, 25)))
            verdict = validator.validate(text, tags, facts, prefill=PREFILL, geo=GEO)
            assert 0.0 <= verdict.coverage <= 1.0
            assert set(verdict.reasons) <= set(REASONS)


# -- relation claims against the object geometry (issue 15: the fresh set's false keeps) -----------
def _relation_tile() -> dict[str, Any]:
    """Houses strung along a track in the top third; a stream down the right edge, which the
    track crosses; a minor road along the bottom, far from the houses; farmland on the left with
    a school in it."""
    from caption_fixtures import hline, obj, square, stats, tile, vline

    houses = [obj("building=house", square(20 + 30 * i, 32, 10)) for i in range(6)]
    track = [obj("highway=track", hline(45))]
    stream = [obj("waterway=stream", vline(230))]
    road = [obj("highway=unclassified", hline(240))]
    farm = [obj("landuse=farmland", square(0, 100, 120))]
    school = [obj("amenity=school", square(40, 140, 14))]
    return tile("rel", [(stats("building=house", houses, count_objects=6), houses),
                        (stats("amenity=school", school, count_objects=1), school),
                        (stats("highway=track", track, count_objects=1), track),
                        (stats("waterway=stream", stream, count_objects=1), stream),
                        (stats("highway=unclassified", road, count_objects=1), road),
                        (stats("landuse=farmland", farm), farm)])


RELATION_CASES = [
    ("houses along a dirt track", True),
    ("a dirt track crossing a stream", True),
    ("a stream crossed by a dirt track", True),
    ("houses near a dirt track", True),
    ("houses between a dirt track and a minor road", False),  # the track runs through them
    ("houses along a minor road", False),  # the road is at the bottom, the houses at the top
    ("houses next to a stream", False),
    ("a minor road crossing a stream", True),
    ("a dirt track crossing farmland", False),  # the track passes above the farmland
    ("farmland next to a stream", False),
    ("houses surrounded by farmland", False),
    ("a school surrounded by farmland", True),
    ("a school on farmland", True),
    ("houses on farmland", False),
    ("a dirt track on a minor road", False),
    ("a minor road running across the stream", True),
    ("houses spread across a dirt track", False),
    ("a dirt track that runs across a minor road", False),
]


@pytest.mark.parametrize(("claim", "holds"), RELATION_CASES)
def test_relation_claims_follow_the_geometry(validator: Validator, claim: str, holds: bool) -> None:
    meta = _relation_tile()
    osm = meta["osm"]
    v = validator.validate(f"{PREFILL} {claim}.", osm["tags"], [], Limits(max_words=80),
                           prefill=PREFILL, geo=meta["geo"], objects=osm["objects"])
    relation = "unsupported_relation" in v.reasons
    assert relation != holds, (claim, v.complaints())


def test_relation_claims_without_geometry_are_unsupported(validator: Validator) -> None:
    """Stats alone cannot show a relation: a shared grid cell is no evidence."""
    meta = _relation_tile()
    v = validator.validate(f"{PREFILL} houses along a dirt track.", meta["osm"]["tags"], [],
                           Limits(max_words=80), prefill=PREFILL, geo=meta["geo"])
    assert "unsupported_relation" in v.reasons, v.complaints()


def test_template_relations_pass_the_geometry_check(validator: Validator) -> None:
    """What the template captions' relations family writes from the objects the validator
    accepts from the same objects."""
    meta = _relation_tile()
    osm = meta["osm"]
    seen = 0
    for seed in range(12):
        for cap in captions_for({**meta, "key": f"rel-{seed}"}, count=9, seed=seed, families=("relations",)):
            seen += 1
            v = validator.validate(cap.text, osm["tags"], [], Limits(max_words=80, max_sentences=2),
                                   geo=meta["geo"], objects=osm["objects"])
            assert "unsupported_relation" not in v.reasons, (cap.text, v.complaints())
    assert seen
