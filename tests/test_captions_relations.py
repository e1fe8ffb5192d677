"""Geometric relations computed from the objects, and checked by the independent checker."""

from __future__ import annotations

import re

from caption_fixtures import all_texts, hline, obj, problems, square, stats, tile, vline
from shapely.geometry import LineString, box

from rsdata.captions.relations import relations
from rsdata.captions.subjects import Limits, scene_of

ALONG = r"\b(along|lining|alongside)\b(?! the (top|bottom))"


def road(y: float = 128, tag: str = "highway=unclassified") -> tuple[dict, list[dict]]:
    objs = [obj(tag, hline(y))]
    return stats(tag, objs, count_objects=1), objs


def houses(y: float, xs: range = range(20, 230, 40), tag: str = "building=house") -> tuple[dict, list[dict]]:
    objs = [obj(tag, square(x, y)) for x in xs]
    return stats(tag, objs, count_objects=len(objs)), objs


def kinds(meta: dict) -> set[str]:
    return {r.kind for r in relations(scene_of(meta, Limits()))}


def test_houses_along_a_road() -> None:
    meta = tile("t", [road(), houses(131)])
    assert "along" in kinds(meta)
    texts = all_texts(meta)
    assert any(re.search(r"(houses|homes) " + ALONG + r" (a|the) (minor|small) road|(houses|homes) "
                         + ALONG + r" a road", t.lower()) for t in texts), texts
    far = tile("f", [road(), houses(20)])
    assert "along" not in kinds(far)
    assert not any(re.search(ALONG, t.lower()) for t in all_texts(far))


def test_a_cluster_near_one_point_is_not_along() -> None:
    meta = tile("t", [road(), houses(131, range(100, 130, 12))])  # three houses side by side
    assert "along" not in kinds(meta)


def test_crossing_and_meeting() -> None:
    track = [obj("highway=track", vline(100))]
    meta = tile("t", [road(), (stats("highway=track", track, count_objects=1), track)])
    assert "crossing" in kinds(meta)
    assert any(re.search(r"(road|track) (crossing|that crosses) (a|the) (\w+ )?(road|track)", t.lower())
               for t in all_texts(meta))
    stub = [obj("highway=track", LineString([(100, 0), (100, 128)]))]  # ends on the road
    meta = tile("m", [road(), (stats("highway=track", stub, count_objects=1), stub)])
    assert kinds(meta) == {"meets"}
    assert any(re.search(r"meeting|joins", t.lower()) for t in all_texts(meta))


def test_a_road_crossing_a_river_area() -> None:
    river = [obj("waterway=riverbank", box(110, 0, 150, 256))]
    meta = tile("t", [road(), (stats("waterway=riverbank", river), river)])
    assert "crossing" in kinds(meta)
    assert any(re.search(r"crossing (a|the) river|crosses (a|the) river", t.lower()) for t in all_texts(meta))


def test_buildings_between_two_roads() -> None:
    a, b = road(50, "highway=residential"), road(206, "highway=unclassified")
    meta = tile("t", [a, b, houses(124)])
    assert "between" in kinds(meta)
    assert any(" between " in t for t in all_texts(meta))
    outside = tile("o", [a, b, houses(226)])
    assert "between" not in kinds(outside)


def test_buildings_surrounded_by_farmland() -> None:
    farm = [obj("landuse=farmland", box(0, 0, 256, 256))]
    meta = tile("t", [(stats("landuse=farmland", farm), farm), houses(120, range(100, 160, 20))])
    assert "surrounded_by" in kinds(meta)
    assert any(re.search(r"surrounded by (farmland|fields|farm fields)", t.lower()) for t in all_texts(meta))
    half = [obj("landuse=farmland", box(0, 0, 110, 256))]
    assert "surrounded_by" not in kinds(tile("h", [(stats("landuse=farmland", half), half),
                                                   houses(120, range(100, 160, 20))]))


def test_a_school_next_to_a_pitch() -> None:
    school = [obj("building=school", box(60, 60, 120, 100))]
    pitch = [obj("leisure=pitch", box(123, 60, 200, 120))]
    meta = tile("t", [(stats("building=school", school, count_objects=1), school),
                      (stats("leisure=pitch", pitch, count_objects=1), pitch)])
    assert "next_to" in kinds(meta)
    assert any(re.search(r"next to|beside", t) for t in all_texts(meta))


def test_the_checker_rejects_relations_the_geometry_does_not_show() -> None:
    far = tile("f", [road(), houses(20)])
    assert problems("Houses along a minor road.", far)
    assert not problems("Houses along a minor road.", tile("n", [road(), houses(131)]))
    track = [obj("highway=track", LineString([(100, 0), (100, 60)]))]
    apart = tile("a", [road(), (stats("highway=track", track, count_objects=1), track)])
    assert problems("A dirt track crossing a minor road.", apart)
    assert problems("Houses between a minor road and a dirt track.", apart)
    without = tile("w", [road(), houses(131)], with_objects=False)
    assert any("no object geometry" in p for p in problems("Houses along a minor road.", without))


def test_between_accepts_lines_clipped_into_collections() -> None:
    """A line clipped at a tile corner can come back as a GeometryCollection holding a point;
    `between` must not fail on it (GEOS cannot project onto points: "LinearIterator only supports
    lineal geometry components"), and still finds houses between two roads."""
    from types import SimpleNamespace

    from shapely.geometry import GeometryCollection, LineString, Point, box

    from rsdata.captions import relations

    road1 = GeometryCollection([LineString([(0, 10), (100, 10)]), Point(100, 0)])
    road2 = LineString([(0, 60), (100, 60)])
    houses = [box(20 + 15 * i, 30, 28 + 15 * i, 38) for i in range(4)]
    l1 = SimpleNamespace(geometry=lambda: road1)
    l2 = SimpleNamespace(geometry=lambda: road2)
    group = SimpleNamespace(geometry=lambda: None)
    scene = SimpleNamespace(width_px=100, height_px=100, gsd_m=1.0)
    original = relations._geoms
    relations._geoms = lambda subject: houses  # type: ignore[assignment]
    try:
        assert relations.between(group, l1, l2, scene)  # type: ignore[arg-type]
        far = LineString([(0, 32), (100, 32)])  # both "roads" on one side of some houses
        assert not relations.between(group, l1, SimpleNamespace(geometry=lambda: far), scene)  # type: ignore[arg-type]
    finally:
        relations._geoms = original  # type: ignore[assignment]
