"""Visible attributes (roof material, storeys, surface) with the share they cover; scene words."""

from __future__ import annotations

import re

from caption_fixtures import all_texts, hline, obj, problems, square, stats, tile

from rsdata.captions.templates import captions_for


def town(roofs: list[str | None], levels: list[str | None] | None = None, coverage: float = 1.0,
         side: float = 8) -> dict:
    objs = []
    for i, material in enumerate(roofs):
        attrs = {} if material is None else {"roof__material": material}
        if levels and levels[i] is not None:
            attrs["building__levels"] = levels[i]
        x, y = 10 + (i % 10) * 24, 10 + (i // 10) * 24
        objs.append(obj("building=yes", square(x, y, side), **attrs))
    return tile("t", [(stats("building=yes", objs, count_objects=len(objs)), objs)], coverage=coverage)


def test_roof_materials_with_their_shares() -> None:
    meta = town(["concrete"] * 6 + ["tin"] * 4)
    text = " ".join(all_texts(meta)).lower()
    assert re.search(r"with (concrete and tin|tin and concrete) roofs", text), text
    assert re.search(r"(more than half|about half|about two thirds) of (the roofs|them) are concrete|concrete "
                     r"(roofs account for|roofing covers) (more than half|about half|about two thirds) of them",
                     text), text
    mostly = " ".join(all_texts(town(["concrete"] * 7 + ["tin"] * 3))).lower()
    assert "with mostly concrete roofs" in mostly or re.search(
        r"of (the roofs|them) are concrete|concrete (roofs account for|roofing covers)", mostly)
    # misspellings and synonyms of the data become one word ("concerte" is concrete)
    assert "concerte" not in " ".join(all_texts(town(["concerte"] * 10))).lower()


def test_attributes_need_enough_objects_that_say() -> None:
    meta = town(["tin", "tin", "tin"] + [None] * 7)  # 30% known: not stated
    assert "roof" not in " ".join(all_texts(meta)).lower()


def test_building_levels() -> None:
    meta = town(["tin"] * 10, levels=["3"] * 10)
    assert re.search(r"three-storey (buildings|structures)", " ".join(all_texts(meta)).lower())
    mixed = town(["tin"] * 10, levels=["1", "2", "3", "4", "5"] * 2)
    assert "storey" not in " ".join(all_texts(mixed)).lower()


def test_road_surface() -> None:
    road = [obj("highway=unclassified", hline(128), surface="asphalt")]
    meta = tile("t", [(stats("highway=unclassified", road, count_objects=1), road)])
    assert re.search(r"\bpaved (minor|small) road|paved road", " ".join(all_texts(meta)).lower())


def test_attribute_shares_from_the_statistics() -> None:
    meta = town([None] * 10)
    meta["osm"]["tags"][0]["attributes"] = {"roof:material": {"tin": 0.95}}
    meta["osm"]["objects"] = []
    assert "with tin roofs" in " ".join(all_texts(meta)).lower()


def test_roof_share_sentences_vary_and_stay_true() -> None:
    """The roof-share sentence takes several structures (no constant "of the roofs are"); every
    one keeps a clause the checker reads, and a wrong share in any of them is caught."""
    from rsdata.captions.attributes import tile_attributes
    from rsdata.captions.subjects import Limits, scene_of
    from rsdata.captions.templates import (
        ROOF_CLAUSES,
        ROOF_FIRST,
        ROOF_LEADS,
        ROOF_MIXED_LEADS,
        Ctx,
        roof_share_sentence,
    )

    meta = town(["concrete"] * 6 + ["tin"] * 4)
    scene = scene_of(meta, Limits())
    shares = next(a for a in tile_attributes(scene.subjects) if a.key == "roof:material")
    seen, clauses = set(), set()
    for seed in range(200):
        import random

        ctx = Ctx(scene=scene, rng=random.Random(seed), subject="An aerial image", noun="image",
                  metres=False, n_features=1)
        text = roof_share_sentence(shares, ctx)
        assert text is not None and not problems(text, meta), (text, problems(text or "", meta))
        low = text.lower()
        seen.add(next((p.lower() for p in ROOF_LEADS + ROOF_MIXED_LEADS if p and low.startswith(p.lower())),
                      "share first"))
        clauses |= {c for c in ("them are", "roofs account for", "roofing covers") if c in low}
        clauses |= {"q are"} if re.search(r"(?:most|half|third|quarter|tenth|all) are", low) else set()
        # "most of the roofs are tin and concrete roofs account for ..." would read "tin and concrete"
        assert " and concrete roofs" not in low and " and tin roofs" not in low, text
        assert " and concrete roofing" not in low and " and tin roofing" not in low, text
    assert len(seen) >= 5 and len(clauses) == 4, (seen, clauses)
    # the checker reads every structure: a wrong share is caught in each, a right one passes
    structures = list(ROOF_FIRST) + [lead + c for lead in ROOF_LEADS + ROOF_MIXED_LEADS if lead
                                     for c in ROOF_CLAUSES]
    for form in structures:
        def say(p: str, w: str, form: str = form) -> str:
            return capitalize_first(form.format(p=p, q=p[:-3], w=w)) + "."
        assert problems(say("most of", "tin"), meta), form
        assert not problems(say("more than half of", "concrete"), meta), form
        assert problems(say("more than half of", "tin"), meta), form


def capitalize_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def test_the_checker_rejects_wrong_attributes() -> None:
    meta = town(["concrete"] * 5 + ["tin"] * 5)
    assert problems("Buildings with tin roofs.", meta)
    assert problems("Most of the roofs are tin.", meta)
    assert problems("Three-storey buildings.", meta)
    assert not problems("Buildings with tin and concrete roofs.", meta)
    assert not problems("About half of the roofs are tin.", meta)


def test_scene_words_follow_building_share_and_count() -> None:
    dense = town(["tin"] * 30, side=20)  # 30 x 400 px of 65536: 18% -> built-up
    text = " ".join(all_texts(dense)).lower()
    assert "built-up" in text and "densely" not in text
    denser = town(["tin"] * 30, side=24)  # 26%: still not dense
    assert "densely" not in " ".join(all_texts(denser)).lower()
    assert problems("A densely built-up area.", dense)
    farm = [obj("landuse=farmland", square(0, 60, 196))]
    few = [obj("building=yes", square(20 + 50 * i, 20, 6)) for i in range(4)]
    meta = tile("f", [(stats("landuse=farmland", farm), farm), (stats("building=yes", few, count_objects=4), few)])
    assert re.search(r"(scattered|dotted with) (buildings|structures)", " ".join(all_texts(meta)).lower())
    assert problems("Farmland with scattered buildings.", dense)


def test_partly_mapped_tiles_make_no_upper_bound_claims() -> None:
    meta = town(["tin"] * 12, coverage=0.4)
    for s in range(20):
        for cap in captions_for({**meta, "key": f"k{s}"}, count=9, seed=s):
            low = cap.text.lower()
            assert not re.search(r"\b(12|twelve)\b|scattered|a small part|a small share|about a", low), low
            assert not problems(cap.text, meta)
    assert problems("Twelve buildings.", meta)
