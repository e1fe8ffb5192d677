"""Land cover (meta.landcover from landcover_join) feeds the same templates, checked twice: by the
caption checker and by the land-cover package's own check_landcover_phrase."""

from __future__ import annotations

import re

import numpy as np
import pytest
from caption_fixtures import all_texts, hline, obj, problems, stats, tile

from rsdata.captions import templates
from rsdata.captions.templates import captions_for
from rsdata.landcover.classes import WORLDCOVER
from rsdata.landcover.stage import summarize


def landcover(covered: float = 1.0) -> dict:
    codes = np.full((60, 60), 10, np.int64)  # tree cover
    codes[:, 45:] = 40  # cropland: the right quarter
    valid = np.ones_like(codes, bool)
    valid[: int(round(60 * (1 - covered))), :] = False
    return summarize(codes, valid, WORLDCOVER, "worldcover", 0.05)


def lc_tile(covered: float = 1.0, with_osm: bool = False) -> dict:
    meta = tile("lc", [], landcover=landcover(covered))
    if with_osm:
        road = [obj("highway=track", hline(128))]
        meta = tile("lc", [(stats("highway=track", road, count_objects=1), road)], landcover=landcover(covered))
    else:
        del meta["osm"]
    return meta


def test_land_cover_alone_is_captioned_and_checked_by_both_checkers() -> None:
    meta = lc_tile()
    seen_clause = False
    for s in range(12):
        caps = captions_for({**meta, "key": f"k{s}"}, count=9, seed=s)
        assert caps and re.search(r"tree cover", caps[0].text.lower()), caps[0].text
        for cap in caps:
            found = problems(cap.text, {**meta, "osm": {"tags": [], "n_features": 0}}, cap.provenance)
            assert not found, (cap.text, found)
            seen_clause |= "landcover" in cap.provenance
    assert seen_clause  # the land-cover package's phrase, recorded for its checker


def test_land_cover_and_osm_in_one_caption() -> None:
    texts = " ".join(all_texts(lc_tile(with_osm=True))).lower()
    assert "tree cover" in texts and re.search(r"track|dirt road", texts)


def test_without_the_package_the_classes_give_the_phrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates, "_landcover_function", lambda name: None)
    texts = " ".join(c.text for s in range(12) for c in captions_for({**lc_tile(), "key": f"k{s}"},
                                                                     count=9, seed=s)).lower()
    assert "mostly tree cover with some cropland" in texts


def test_a_partly_covered_tile_gets_lower_bound_words_only() -> None:
    meta = lc_tile(covered=0.5)
    for s in range(12):
        for cap in captions_for({**meta, "key": f"k{s}"}, count=9, seed=s):
            assert not re.search(r"a small part|about a|part of the", cap.text.lower()), cap.text
    assert problems("Tree cover takes up about a third of the image.",
                    {**meta, "osm": {"tags": [], "n_features": 0}})
