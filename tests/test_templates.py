"""Template captions: deterministic, faithful to the stats, with provenance."""

from __future__ import annotations

import re

from typing import Any

import pytest

from caption_check import caption_problems
from rsdata.captions.templates import FAMILIES, TemplateCaptions, captions_for
from rsdata.osm.vocabulary import Vocabulary
from rsdata.sample import Sample
from rsdata.stats import StageStats


def tag(tag: str, phrase: str, plural: str, *, count: int = 1, visible: int | None = None,
        share: float = 0.0, length: float = 0.0, position: str = "center", mass: bool = False,
        kind: str = "polygon", category: str = "building", primary: bool = True,
        cells: list[str] | None = None) -> dict[str, Any]:
    key, value = tag.split("=")
    vis = count if visible is None else visible
    return {"key": key, "value": value, "tag": tag, "phrase": phrase, "plural": plural, "mass": mass,
            "category": category, "count": count, "visible_count": vis, "visible": vis > 0,
            "primary": primary, "area_share": share, "area_m2": share * 640 * 640,
            "length_m": length, "position": position, "geom_types": {kind: count},
            "cells": cells if cells is not None else ([] if position == "across" else [position])}


def meta(key: str, tags: list[dict[str, Any]], n_features: int | None = None,
         coverage: float = 1.0, gsd: float = 2.5, platform: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": key, "geo": {"size": [256, 256], "gsd_m": gsd},
        "osm": {"tags": tags, "n_features": len(tags) if n_features is None else n_features,
                "coverage": {"fraction": coverage, "sources": ["osm"] if coverage else []}}}
    if platform is not None:
        out["source"] = {"type": "raster", "platform": platform}
    return out


RICH = [
    tag("landuse=farmland", "farmland", "farmland", share=0.7, mass=True, category="landuse", position="across",
        cells=["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom"]),
    tag("building=yes", "building", "buildings", count=7, share=0.01, position="top left"),
    tag("highway=residential", "residential road", "residential roads", count=3, length=812.0,
        kind="line", category="road", position="across", cells=["left", "center", "right"]),
    tag("building=house", "house", "houses", count=1, share=0.002, position="bottom right"),
]


def phrases() -> set[str]:
    return {p for _k, _v, ph in Vocabulary.default().entries() for p in (ph.singular, ph.plural)}


def test_deterministic_per_key_and_seed() -> None:
    a = captions_for(meta("k1", RICH), count=3, seed=0)
    assert [c.text for c in a] == [c.text for c in captions_for(meta("k1", RICH), count=3, seed=0)]
    texts = {tuple(c.text for c in captions_for(meta(f"k{i}", RICH), 3, seed)) for i in range(8) for seed in (0, 1)}
    assert len(texts) > 4, "different keys/seeds should vary the templates"


@pytest.mark.parametrize("key", [f"tile_{i}" for i in range(30)])
def test_captions_only_state_what_the_stats_support(key: str) -> None:
    caps = captions_for(meta(key, RICH), count=5, seed=3)
    assert len(caps) >= 3
    for cap in caps:
        assert cap.kind == "template" and cap.provenance["template"].split(".")[0] in FAMILIES
        assert not caption_problems(cap.text, meta(key, RICH)["osm"], phrases()), cap.text


def test_numbers_only_for_separate_objects() -> None:
    texts = " ".join(c.text for i in range(20)
                     for c in captions_for(meta(f"k{i}", RICH), count=5, families=("counts",))).lower()
    assert "seven buildings" in texts or "seven structures" in texts
    # three residential ways, object count unknown: OSM splits roads into ways, so no number
    assert not any(f"{n} {w}" in texts for n in ("three", "3") for w in ("residential", "streets", "roads"))
    assert any(f"{q} {h}" in texts for q in ("a", "one", "a single") for h in ("house", "home"))


def test_invisible_and_secondary_tags_are_not_mentioned() -> None:
    tags = [tag("building=yes", "building", "buildings", count=2, visible=0),
            tag("leisure=nature_reserve", "nature reserve", "nature reserves", share=0.8, category="leisure"),
            tag("landuse=conservation", "conservation area", "conservation areas", share=0.8,
                category="landuse", primary=False)]
    # a reserve shows nothing in the picture: it is never the subject (it stays in the json)
    assert captions_for(meta("k", tags), count=5) == []
    stage = TemplateCaptions({"type": "template_captions"})
    stats = StageStats("template_captions")
    sample = Sample(key="k", image=b"", meta=meta("k", tags))
    assert list(stage(iter([sample]), stats)) == []
    assert stats.dropped == {"no_salient_feature": 1}
    assert any(t["tag"] == "leisure=nature_reserve" for t in sample.meta["osm"]["tags"])
    # visible_only: false lets a recipe name it again; secondary tags stay out either way
    for cap in captions_for(meta("k", tags), count=5, visible_only=False):
        assert "building" not in cap.text and "conservation" not in cap.text
        assert "nature reserve" in cap.text


def test_empty_tiles_say_so_honestly() -> None:
    nothing = captions_for(meta("k", [], n_features=0), count=3)
    assert nothing and all("no" in c.text for c in nothing)
    assert all(c.provenance["template"].startswith("empty.") for c in nothing)
    tiny = captions_for(meta("k", [tag("building=yes", "building", "buildings", visible=0)]), count=3)
    assert "large enough to see" in tiny[0].text


def test_stage_adds_captions_and_counts() -> None:
    stage = TemplateCaptions({"type": "template_captions", "count": 2, "families": ["lengths"],
                              "metres": True})
    stats = StageStats("template_captions")
    samples = [Sample(key="a", image=b"", meta=meta("a", RICH)),
               Sample(key="b", image=b"", meta=meta("b", [RICH[0]]))]
    out = list(stage(iter(samples), stats))
    assert [s.key for s in out] == ["a"]
    assert stats.dropped["no_template_applies"] == 1
    assert "812" in out[0].caption or "810" in out[0].caption  # metres: asked for


# -- absence claims only inside coverage (issue 10 item 2) -----------------------------------------
ABSENCE = ("no features", "no mapped", "nothing", "not mapped", " no ")


def has_absence_claim(text: str) -> bool:
    return any(w in f" {text.lower()} " for w in ABSENCE)


@pytest.mark.parametrize("coverage", [0.0, 0.5, 0.998])
def test_no_absence_claim_outside_full_coverage(coverage: float) -> None:
    for i in range(20):
        assert captions_for(meta(f"k{i}", [], n_features=0, coverage=coverage), count=5) == []
        tiny = [tag("building=yes", "building", "buildings", visible=0)]
        assert captions_for(meta(f"k{i}", tiny, coverage=coverage), count=5) == []
        for cap in captions_for(meta(f"k{i}", RICH, coverage=coverage), count=6):
            assert not cap.provenance["template"].startswith("empty.")
            assert not has_absence_claim(cap.text), cap.text


def test_one_mapped_building_on_a_partly_mapped_tile_is_a_lower_bound() -> None:
    """19% of a tile mapped, one building in it: "a building" would read as the only one (the
    photo may show twenty); "at least one building" / "one or more buildings" are true of the
    picture. A line keeps "a dirt track" among its forms (true beside unmapped ones), never
    "one" or "a single"; a school mapped once stays "a school"."""
    one = [tag("building=yes", "building", "buildings", count=1, share=0.01, position="top right",
               cells=["top right"])]
    said = [c.text for i in range(20) for c in captions_for(meta(f"k{i}", one, coverage=0.19), count=6)]
    lower = ("at least one", "one or more")
    assert said and all(any(w in t.lower() for w in lower) for t in said), said
    assert {w for t in said for w in lower if w in t.lower()} == set(lower)
    assert not any(re.search(r"(?<!at least )\b(?:a|one|a single) (?:building|structure)", t.lower())
                   for t in said)
    full = [c.text for i in range(20) for c in captions_for(meta(f"k{i}", one, coverage=1.0), count=6)]
    assert full and not any(w in t.lower() for t in full for w in lower)
    track = [tag("highway=track", "dirt track", "dirt tracks", count=1, length=300.0, kind="line",
                 category="road", position="bottom right", cells=["bottom right"])]
    said = [c.text.lower() for i in range(30)
            for c in captions_for(meta(f"t{i}", track, coverage=0.0), count=6)]
    assert said and not any(re.search(r"\b(?:one|a single) (?:dirt|farm|unpaved) (?:track|road)", t)
                            and "at least one" not in t for t in said), said
    school = [tag("amenity=school", "school", "schools", count=1, share=0.02, position="center",
                  category="amenity")]
    said = [c.text.lower() for i in range(10)
            for c in captions_for(meta(f"s{i}", school, coverage=0.5), count=6)]
    assert said and not any(w in t for t in said for w in lower), said


def test_absence_claims_inside_full_coverage_only() -> None:
    inside = captions_for(meta("k", [], n_features=0, coverage=1.0), count=3)
    assert inside and all(has_absence_claim(c.text) for c in inside)
    # a legacy osm member without coverage facts: nobody knows, so no absence claim
    legacy = meta("k", [], n_features=0)
    del legacy["osm"]["coverage"]
    assert captions_for(legacy, count=3) == []


def test_no_osm_at_all_gives_no_caption_and_is_dropped_as_uncaptioned() -> None:
    stage = TemplateCaptions({"type": "template_captions", "count": 3})
    stats = StageStats("template_captions")
    bare = {"key": "a", "geo": {"size": [256, 256], "gsd_m": 2.5}}  # a recipe without osm_join
    outside = meta("b", [], n_features=0, coverage=0.0)
    partial = meta("c", RICH, coverage=0.4)
    samples = [Sample(key=m["key"], image=b"", meta=m) for m in (bare, outside, partial)]
    out = list(stage(iter(samples), stats))
    assert [s.key for s in out] == ["c"]
    assert stats.dropped["uncaptioned"] == 2 and "no_template_applies" not in stats.dropped
    assert all(not has_absence_claim(c["text"]) for c in out[0].meta["captions"])


# -- platform wording (issue 10 item 8) --------------------------------------------------------------
def subjects(m: dict[str, Any], platform: str = "auto") -> str:
    text = " ".join(c.text for i in range(12) for c in captions_for(
        {**m, "key": f"k{i}"}, count=6, seed=i, platform=platform))
    return text.lower()


def test_platform_auto_is_neutral_without_a_source_platform() -> None:
    text = subjects(meta("k", RICH))
    assert "aerial" not in text and "satellite" not in text and "overhead" in text


def test_platform_from_the_source_or_the_recipe() -> None:
    assert "satellite" in subjects(meta("k", RICH, platform="satellite"))
    assert "aerial" in subjects(meta("k", RICH, platform="aerial"))
    assert "satellite" in subjects(meta("k", RICH), platform="satellite")
    assert "aerial" in subjects(meta("k", RICH, platform="satellite"), platform="aerial")


@pytest.mark.parametrize("gsd", [5.0, 10.0, 30.0])
def test_never_aerial_at_coarse_gsd(gsd: float) -> None:
    for platform in ("auto", "aerial"):
        text = subjects(meta("k", RICH, gsd=gsd, platform="aerial"), platform=platform)
        assert "aerial" not in text, text
    assert "aerial" in subjects(meta("k", RICH, gsd=2.5), platform="aerial")


def test_platform_keeps_the_caption_structure() -> None:
    for i in range(10):
        m = meta(f"k{i}", RICH)
        aerial = captions_for(m, count=5, seed=i, platform="aerial")
        sat = captions_for(m, count=5, seed=i, platform="satellite")
        assert [c.provenance for c in aerial] == [c.provenance for c in sat]


# -- grammar of mass nouns ----------------------------------------------------------------------------
MASS = [
    tag("class:lc=tree", "trees", "trees", share=0.65, mass=True, category="landcover", position="across"),
    tag("natural=water", "water", "water", share=0.2, mass=True, category="water", position="left"),
    tag("class:lc=crop", "cropland", "cropland", share=0.1, mass=True, category="landcover",
        position="bottom right"),
]
MASS[0]["plural_verb"] = True


@pytest.mark.parametrize("seed", range(12))
def test_mass_nouns_are_grammatical(seed: int) -> None:
    for cap in captions_for(meta(f"m{seed}", MASS), count=6, seed=seed):
        low = cap.text.lower()
        for bad in ("a trees", "a water", "a cropland", "an water", "trees covers", "trees fills",
                    "trees is ", "two trees", "one water"):
            assert bad not in low, cap.text
