"""Tests of rsdata.osm.osm_file.read_osm_file on real extracts and hand-written OSM XML."""

from __future__ import annotations

import bz2
import gzip
import sys
from pathlib import Path

import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from rsdata.errors import InputError, MissingDependencyError
from rsdata.osm.features import FeatureSet
from rsdata.osm.osm_file import is_area_way, read_osm_file

pytest.importorskip("osmium")

DATA = Path(__file__).resolve().parents[2] / "data" / "osm-pbf"
HELSINKI = DATA / "Helsinki.osm.pbf"
TEST_PBF = DATA / "test.osm.pbf"


# --- helpers: tiny OSM XML files -----------------------------------------------------------


def _tags(tags: dict[str, str]) -> str:
    return "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())


def node(nid: int, lon: float, lat: float, **tags: str) -> str:
    return f'<node id="{nid}" version="1" lat="{lat}" lon="{lon}">{_tags(tags)}</node>'


def way(wid: int, refs: list[int], **tags: str) -> str:
    nds = "".join(f'<nd ref="{r}"/>' for r in refs)
    return f'<way id="{wid}" version="1">{nds}{_tags(tags)}</way>'


def relation(rid: int, members: list[tuple[str, int, str]], **tags: str) -> str:
    mems = "".join(f'<member type="{t}" ref="{r}" role="{role}"/>' for t, r, role in members)
    return f'<relation id="{rid}" version="1">{mems}{_tags(tags)}</relation>'


def osm_xml(*objects: str) -> str:
    """An OSM XML document; objects must be given sorted (nodes, ways, relations by id)."""
    body = "\n".join(objects)
    header = '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="test">'
    return f"{header}\n{body}\n</osm>\n"


def write_osm(tmp_path: Path, name: str, *objects: str) -> Path:
    path = tmp_path / name
    path.write_text(osm_xml(*objects), encoding="utf-8")
    return path


# The unit square: nodes 1..4 at its corners, counter-clockwise from (0, 0).
SQUARE = [node(1, 0, 0), node(2, 1, 0), node(3, 1, 1), node(4, 0, 1)]


def by_id(features: FeatureSet) -> dict[str, tuple[BaseGeometry, dict[str, str]]]:
    assert len(set(features.ids)) == len(features.ids), "an OSM object became two features"
    return {fid: (g, t) for fid, g, t in zip(features.ids, features.geometries, features.tags)}


# --- hand-written files: what becomes a feature ---------------------------------------------


def test_nodes_ways_and_areas(tmp_path: Path) -> None:
    path = write_osm(
        tmp_path, "basic.osm",
        *SQUARE,
        node(5, 0.5, 0.5, amenity="bench"),
        way(10, [1, 2, 3], highway="footway"),           # open way -> line
        way(11, [1, 2, 3, 4, 1], building="yes"),       # closed building -> polygon only
        way(12, [1, 2, 3, 4, 1], highway="residential"),  # closed highway -> line
        way(13, [1, 2, 3, 4, 1], highway="pedestrian", area="yes"),  # -> polygon
        way(14, [1, 2, 3, 4, 1], barrier="fence"),      # closed fence -> line
        way(15, [1, 2, 3, 4, 1], building="yes", area="no"),  # area=no wins -> line
        way(16, [1, 3]),                                 # untagged way -> nothing
    )
    features = read_osm_file(path)
    got = by_id(features)

    assert sorted(got) == ["n5", "w10", "w11", "w12", "w13", "w14", "w15"]
    assert got["n5"][0].equals(Point(0.5, 0.5))
    assert got["n5"][1] == {"amenity": "bench"}
    assert got["w10"][0].equals(LineString([(0, 0), (1, 0), (1, 1)]))
    assert isinstance(got["w11"][0], Polygon) and got["w11"][0].area == pytest.approx(1.0)
    assert isinstance(got["w12"][0], LineString) and got["w12"][0].is_ring
    assert isinstance(got["w13"][0], Polygon)
    assert isinstance(got["w14"][0], LineString)
    assert isinstance(got["w15"][0], LineString)
    assert features.stats == {"loaded": 7}
    assert features.source == str(path)


def test_way_with_missing_node_is_dropped_and_counted(tmp_path: Path) -> None:
    path = write_osm(
        tmp_path, "clipped.osm",
        *SQUARE,
        node(5, 0.5, 0.5, amenity="bench"),
        way(10, [1, 2, 99], highway="residential"),   # last node not in the file
        way(11, [99, 2, 3], highway="residential"),   # first node not in the file
        way(12, [2, 99, 3], highway="service"),       # middle node not in the file
        way(13, [1, 2, 3, 99, 1], building="yes"),    # ring with a missing node
        way(14, [1, 2], highway="footway"),
        way(15, [1, 2, 3, 4, 1], building="yes"),
    )
    features = read_osm_file(path)

    assert sorted(features.ids) == ["n5", "w14", "w15"]
    assert features.stats == {"loaded": 3, "dropped:missing_nodes": 4}


def test_multipolygon_with_missing_member_way(tmp_path: Path) -> None:
    path = write_osm(
        tmp_path, "mp.osm",
        *SQUARE,
        node(5, 0.25, 0.25), node(6, 0.75, 0.25), node(7, 0.75, 0.75), node(8, 0.25, 0.75),
        way(30, [1, 2, 3, 4, 1]),   # untagged outer ring
        way(31, [5, 6, 7, 8, 5]),   # untagged inner ring
        relation(20, [("w", 30, "outer"), ("w", 99, "inner")],
                 type="multipolygon", landuse="grass"),   # member way 99 is missing
        relation(21, [("w", 30, "outer"), ("w", 31, "inner")],
                 type="multipolygon", building="yes"),
        relation(22, [("w", 30, "outer")], type="route", route="bus"),  # not an area
    )
    features = read_osm_file(path)
    got = by_id(features)

    assert list(got) == ["r21"]
    geometry, tags = got["r21"]
    assert isinstance(geometry, Polygon)
    assert geometry.area == pytest.approx(1.0 - 0.25)   # square minus the inner square
    assert len(geometry.interiors) == 1
    assert tags == {"building": "yes"}                   # the relation's tags without type
    assert features.stats == {"loaded": 1, "dropped:missing_members": 1}


def test_multipolygon_member_with_missing_node(tmp_path: Path) -> None:
    path = write_osm(
        tmp_path, "mp_nodes.osm",
        node(1, 0, 0), node(2, 1, 0), node(3, 1, 1),
        way(30, [1, 2, 3, 4, 1]),   # node 4 is missing
        relation(20, [("w", 30, "outer")], type="multipolygon", landuse="grass"),
    )
    features = read_osm_file(path)
    assert len(features) == 0
    assert features.stats == {"loaded": 0, "dropped:missing_nodes": 1}


def test_multipolygon_that_osmium_cannot_assemble(tmp_path: Path) -> None:
    path = write_osm(
        tmp_path, "mp_bad.osm",
        *SQUARE,
        way(30, [1, 3, 2, 4, 1]),   # self-intersecting ring
        way(31, [1, 2, 3]),         # ring that does not close
        relation(20, [("w", 30, "outer")], type="multipolygon", landuse="grass"),
        relation(21, [("w", 31, "outer")], type="multipolygon", landuse="grass"),
    )
    features = read_osm_file(path)
    assert len(features) == 0
    assert features.stats == {"loaded": 0, "dropped:invalid_geometry": 2}


def test_bow_tie_building_is_repaired_and_degenerate_rings_dropped(tmp_path: Path) -> None:
    path = write_osm(
        tmp_path, "bowtie.osm",
        *SQUARE,
        way(40, [1, 3, 2, 4, 1], building="yes"),     # bow tie: two triangles
        way(41, [1, 2, 1], building="yes"),           # two distinct points
        way(42, [1, 2, 3, 2, 1], building="yes"),     # encloses no area
        way(43, [1, 1], highway="footway"),           # line of one point
    )
    features = read_osm_file(path)
    got = by_id(features)

    assert list(got) == ["w40"]
    bow_tie = got["w40"][0]
    assert isinstance(bow_tie, MultiPolygon) and len(bow_tie.geoms) == 2
    assert bow_tie.is_valid
    assert bow_tie.area == pytest.approx(0.5)
    assert features.stats == {
        "loaded": 1, "repaired:invalid_geometry": 1, "dropped:degenerate": 3,
    }


# --- bbox and keep_keys ----------------------------------------------------------------------


def _filter_fixture(tmp_path: Path) -> Path:
    return write_osm(
        tmp_path, "filter.osm",
        *SQUARE,
        node(5, 0.5, 0.5, amenity="bench"),
        node(6, 10, 10, amenity="bench"),
        node(7, 10, 11),
        way(10, [1, 2, 3, 4, 1], building="yes"),
        way(11, [3, 6], highway="service"),           # from (1, 1) to (10, 10)
        way(12, [6, 7], highway="footway", building="no"),
    )


def test_bbox_keeps_intersecting_features(tmp_path: Path) -> None:
    features = read_osm_file(_filter_fixture(tmp_path), bbox=(-1.0, -1.0, 2.0, 2.0))
    assert features.ids == ["n5", "w10", "w11"]   # w11 crosses the bbox edge: kept
    assert features.stats == {"loaded": 3, "skipped:outside_bbox": 2}


def test_bbox_is_checked(tmp_path: Path) -> None:
    path = _filter_fixture(tmp_path)
    with pytest.raises(InputError, match="min > max"):
        read_osm_file(path, bbox=(2.0, 0.0, 1.0, 1.0))
    with pytest.raises(InputError, match="four numbers"):
        read_osm_file(path, bbox=(0.0, 0.0, 1.0))  # type: ignore[arg-type]


def test_keep_keys(tmp_path: Path) -> None:
    path = _filter_fixture(tmp_path)
    assert read_osm_file(path, keep_keys={"building"}).ids == ["w10", "w12"]
    assert read_osm_file(path, keep_keys="highway").ids == ["w11", "w12"]
    assert read_osm_file(path, keep_keys=["amenity", "highway"]).ids == [
        "n5", "n6", "w11", "w12"]
    nothing = read_osm_file(path, keep_keys=[])
    assert len(nothing) == 0 and nothing.stats == {"loaded": 0}


def test_keep_keys_and_bbox_together(tmp_path: Path) -> None:
    features = read_osm_file(_filter_fixture(tmp_path), bbox=(-1, -1, 2, 2),
                             keep_keys=["highway"])
    assert features.ids == ["w11"]
    assert features.stats == {"loaded": 1, "skipped:outside_bbox": 1}


# --- formats and errors ----------------------------------------------------------------------


def test_compressed_and_suffixless_xml(tmp_path: Path) -> None:
    xml = osm_xml(*SQUARE, node(5, 0.5, 0.5, amenity="bench"),
                  way(10, [1, 2, 3, 4, 1], building="yes"))
    (tmp_path / "a.osm.gz").write_bytes(gzip.compress(xml.encode()))
    (tmp_path / "a.osm.bz2").write_bytes(bz2.compress(xml.encode()))
    (tmp_path / "a.download").write_text(xml)
    for name in ("a.osm.gz", "a.osm.bz2", "a.download"):
        features = read_osm_file(tmp_path / name)
        assert features.ids == ["n5", "w10"], name


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.osm.pbf"
    with pytest.raises(InputError, match="not found") as info:
        read_osm_file(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(InputError, match="is not a file"):
        read_osm_file(tmp_path)


@pytest.mark.parametrize("name, content", [
    ("garbage.osm", b"this is not xml"),
    ("garbage.osm.pbf", b"this is not a pbf file at all"),
    ("empty.osm", b""),
    ("truncated.osm", b'<?xml version="1.0"?>\n<osm version="0.6"><node id="1" lat="0" '),
    ("garbage.osm.gz", gzip.compress(b"not xml either")),
    ("garbage.bin", b"\x00\x01\x02 binary noise"),
])
def test_unparseable_file(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a valid OSM XML/PBF file") as info:
        read_osm_file(path)
    assert str(path) in str(info.value)


def test_truncated_pbf(tmp_path: Path) -> None:
    path = tmp_path / "truncated.osm.pbf"
    path.write_bytes(TEST_PBF.read_bytes()[:50_000])
    with pytest.raises(InputError, match="not a valid OSM XML/PBF file"):
        read_osm_file(path)


def test_missing_osmium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "osmium", None)  # makes `import osmium` fail
    with pytest.raises(MissingDependencyError, match=r"rsdata\[osm\]"):
        read_osm_file(tmp_path / "any.osm")


def test_is_area_way() -> None:
    assert is_area_way({"building": "yes"})
    assert is_area_way({"landuse": "forest"})
    assert is_area_way({"natural": "water"})
    assert is_area_way({"highway": "pedestrian", "area": "yes"})
    assert is_area_way({"highway": "rest_area"})
    assert not is_area_way({"highway": "residential"})
    assert not is_area_way({"natural": "coastline"})
    assert not is_area_way({"building": "yes", "area": "no"})
    assert not is_area_way({"building": "no"})
    assert not is_area_way({"barrier": "fence"})
    assert not is_area_way({"name": "x"})


# --- real extracts -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helsinki() -> FeatureSet:
    return read_osm_file(HELSINKI)


def _count(features: FeatureSet, key: str, geom_types: tuple[str, ...]) -> int:
    return sum(key in t and g.geom_type in geom_types
               for g, t in zip(features.geometries, features.tags))


def test_helsinki(helsinki: FeatureSet) -> None:
    # 433 building ways, 48 of which reference nodes cut off by the extract; 61 building
    # multipolygon relations assemble (6 more miss member ways).
    polygonal = ("Polygon", "MultiPolygon")
    assert _count(helsinki, "building", polygonal) == 385 + 61
    assert sum(fid.startswith("r") and "building" in t
               for fid, t in zip(helsinki.ids, helsinki.tags)) == 61
    assert _count(helsinki, "highway", ("LineString",)) == 2395
    assert len(helsinki) == 12710
    assert helsinki.stats == {
        "loaded": 12710, "dropped:missing_nodes": 412, "dropped:missing_members": 20,
    }


def test_helsinki_geometries_are_sane(helsinki: FeatureSet) -> None:
    assert len(set(helsinki.ids)) == len(helsinki.ids)
    geoms = helsinki.geometries
    assert all(shapely.is_valid(geoms))
    assert not any(shapely.is_empty(geoms))
    minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    assert 24.5 < minx < maxx < 25.5 and 60.0 < miny < maxy < 60.3  # lon/lat, not lat/lon
    for fid, geom in zip(helsinki.ids, geoms):
        expected = {"n": ("Point",), "w": ("LineString", "Polygon", "MultiPolygon"),
                    "r": ("Polygon", "MultiPolygon")}[fid[0]]
        assert geom.geom_type in expected, fid
    assert all(len(t) > 0 for t in helsinki.tags)


def test_helsinki_bbox_matches_intersection(helsinki: FeatureSet) -> None:
    bbox = (24.93, 60.16, 24.95, 60.17)
    clipped = read_osm_file(HELSINKI, bbox=bbox)
    inside = shapely.intersects(helsinki.geometries, shapely.box(*bbox))
    expected = [fid for fid, keep in zip(helsinki.ids, inside) if keep]
    assert clipped.ids == expected
    assert 0 < len(clipped) < len(helsinki)
    assert clipped.stats["skipped:outside_bbox"] == len(helsinki) - len(clipped)
    assert clipped.stats["loaded"] == len(clipped)


def test_helsinki_keep_keys(helsinki: FeatureSet) -> None:
    keep = {"building", "landuse"}
    kept = read_osm_file(HELSINKI, keep_keys=keep)
    assert kept.ids == [fid for fid, t in zip(helsinki.ids, helsinki.tags) if keep & set(t)]
    assert all(keep & set(t) for t in kept.tags)


def test_test_pbf() -> None:
    features = read_osm_file(TEST_PBF)
    got = by_id(features)
    assert _count(features, "building", ("Polygon", "MultiPolygon")) == 2171
    assert _count(features, "highway", ("LineString",)) == 288
    assert len(got) == 2636
    assert features.stats == {"loaded": 2636, "dropped:missing_nodes": 133}
    assert all(shapely.is_valid(features.geometries))
