"""The independent caption checker catches each kind of false statement (and passes true ones)."""

from __future__ import annotations

import pytest
from caption_fixtures import hline, obj, problems, square, stats, tile
from shapely.geometry import LineString, box


@pytest.fixture(scope="module")
def meta() -> dict:
    farm = [obj("landuse=farmland", box(0, 0, 256, 150))]  # 58.6% of the tile
    houses = [obj("building=house", square(20 + 30 * i, 173)) for i in range(7)]  # along the road
    road = [obj("highway=unclassified", hline(170))]  # spans left to right
    stub = [obj("highway=track", LineString([(250, 250), (256, 240)]))]  # a 12 px stub
    bend = [obj("highway=service", LineString([(10, 20), (240, 40), (240, 120)]))]  # ends inside
    reserve = [obj("leisure=nature_reserve", box(0, 0, 256, 256))]
    return tile("c", [(stats("landuse=farmland", farm), farm),
                      (stats("building=house", houses, count_objects=7), houses),
                      (stats("highway=unclassified", road, count_objects=1), road),
                      (stats("highway=track", stub, count_objects=1), stub),
                      (stats("highway=service", bend, count_objects=1), bend),
                      (stats("leisure=nature_reserve", reserve), reserve)])


@pytest.mark.parametrize("text", [
    "Seven houses and a minor road.",
    "More than half of the image is farmland.",
    "Farmland covers more than half of the image.",
    "A minor road runs across the image from left to right.",
    "Houses along a minor road.",
    "Several homes at the bottom.",
    "A service road running from the top left to the right.",
    "Farmland with scattered houses, seen from above.",
])
def test_true_statements_pass(meta: dict, text: str) -> None:
    assert not problems(text, meta), problems(text, meta)


@pytest.mark.parametrize("text, why", [
    ("A nature reserve covers the image.", "not caption-worthy"),
    ("A dirt track in the bottom right.", "not caption-worthy"),  # a stub
    ("A lighthouse and seven houses.", "not a visible tag"),
    ("Six houses.", "says 6 house"),
    ("Dozens of houses.", "'dozens of'"),
    ("A house on the left.", "'a house' but 7"),
    ("Farmland covers most of the image.", "says most of"),
    ("About a third of the image is farmland.", "says about a third of"),
    ("Houses in the top left.", "its cells are"),
    ("A service road crosses the image.", "does not span"),
    ("A minor road runs across the image from top to bottom.", "it spans"),
    ("A service road running from the bottom left to the top right.", "its cells are"),
    ("Houses spread across the image.", "not spread across"),
    ("A densely built-up area.", "'dense' buildings"),
    ("A 300 m wide aerial image.", "m wide"),
    ("Farmland dotted with houses and mostly farmland.", None),  # true: no problem expected
])
def test_false_statements_are_caught(meta: dict, text: str, why: str | None) -> None:
    found = problems(text, meta)
    if why is None:
        assert not found, found
    else:
        assert any(why in p for p in found), found
