"""The osm_join stage on hand-built tiles whose answers can be computed by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from rasterio.warp import transform_bounds
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from rsdata.errors import InputError
from rsdata.osm.join import OsmJoin, position_words
from rsdata.sample import Sample
from rsdata.stage import RunContext
from rsdata.stats import StageStats

# a 100 x 100 px tile at 1 m/px in UTM 34S; top-left corner at (X0, Y0)
X0, Y0 = 330000.0, 6230000.0
UTM = "EPSG:32734"
AREA = tuple(transform_bounds(UTM, "EPSG:4326", X0 - 1000, Y0 - 1000, X0 + 1000, Y0 + 1000))


def tile_sample(key: str = "t_00000_00000", crs: str = UTM, transform: Affine | None = None,
                size: int = 100, gsd: tuple[float, float] = (1.0, 1.0)) -> Sample:
    transform = transform or Affine(1.0, 0, X0, 0, -1.0, Y0)
    meta = {"key": key, "geo": {"crs": crs, "transform": list(transform)[:6], "size": [size, size],
                                "gsd_xy_m": list(gsd), "gsd_m": float(np.sqrt(gsd[0] * gsd[1]))}}
    return Sample(key=key, image=b"", meta=meta)


def write_osm(path: Path, rows: list[tuple[Any, dict[str, str]]], crs: str = UTM) -> Path:
    frame = gpd.GeoDataFrame([t for _, t in rows], geometry=[g for g, _ in rows], crs=crs)
    frame.to_crs(4326).to_file(path, driver="GeoJSON")
    return path


def make_stage(tmp_path: Path, osm: Path, bounds: tuple[float, float, float, float] | None = None,
               **cfg: Any) -> tuple[OsmJoin, dict[str, Any]]:
    stage = OsmJoin({"type": "osm_join", "sources": [{"path": str(osm)}], **cfg})
    ctx = RunContext(base_dir=tmp_path, state_dir=tmp_path / "state",
                     footprints_wgs84=[bounds or AREA], footprint_crs=[UTM])
    report = stage.prepare(ctx)
    return stage, report


def by_tag(osm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["tag"]: t for t in osm["tags"]}


def at(x: float, y: float) -> tuple[float, float]:
    """UTM coordinates of tile pixel (x, y)."""
    return X0 + x, Y0 - y


def rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    (ax, ay), (bx, by) = at(x0, y0), at(x1, y1)
    return box(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


@pytest.fixture
def scene(tmp_path: Path) -> tuple[OsmJoin, dict[str, Any]]:
    rows = [
        (rect(5, 5, 15, 15), {"building": "yes"}),                      # 100 m2, top left
        (rect(80, 80, 82, 82), {"building": "yes"}),                    # 4 m2: too small to see
        (rect(50, -50, 150, 50), {"landuse": "farmland"}),              # top right quarter inside
        (LineString([at(-10, 50), at(110, 50)]), {"highway": "residential"}),  # 100 m across
        (LineString([at(90, 95), at(95, 95)]), {"highway": "track"}),   # 5 m: too short
        (Point(at(30, 70)), {"amenity": "restaurant"}),
        (LineString([at(0, 20), at(40, 20)]), {"highway": "foo_bar"}),  # unknown value
        (rect(500, 500, 510, 510), {"building": "yes"}),                # outside the tile
    ]
    osm = write_osm(tmp_path / "osm.geojson", rows)
    return make_stage(tmp_path, osm)


def test_counts_areas_lengths_positions(scene: tuple[OsmJoin, dict[str, Any]]) -> None:
    stage, report = scene
    assert report["features"] == 8
    osm = stage.join(tile_sample())
    tags = by_tag(osm)
    b = tags["building=yes"]
    assert b["count"] == 2 and b["visible_count"] == 1 and b["visible"]
    assert b["area_m2"] == pytest.approx(104, abs=0.5)
    assert b["position"] == "top left"
    farm = tags["landuse=farmland"]
    assert farm["area_share"] == pytest.approx(0.25, abs=1e-3)
    assert farm["area_m2"] == pytest.approx(2500, rel=1e-3)
    assert farm["position"] == "top right" and farm["mass"]
    road = tags["highway=residential"]
    assert road["length_m"] == pytest.approx(100, abs=0.1)
    assert road["position"] == "across"
    assert road["phrase"] == "residential road"
    assert not tags["highway=track"]["visible"]  # 5 px < 8 px
    assert tags["highway=foo_bar"]["phrase"] == "foo bar road"
    assert "amenity=restaurant" not in tags  # not a feature one can see from above
    # visible tags first, largest area first
    assert osm["tags"][0]["tag"] == "landuse=farmland"
    assert osm["n_features"] == 6


def test_visibility_threshold_is_configurable(tmp_path: Path) -> None:
    osm = write_osm(tmp_path / "o.geojson", [(rect(10, 10, 12, 12), {"building": "yes"})])
    strict, _ = make_stage(tmp_path, osm)
    assert not by_tag(strict.join(tile_sample()))["building=yes"]["visible"]
    loose, _ = make_stage(tmp_path, osm, min_pixels={"polygon": 3.5})
    assert by_tag(loose.join(tile_sample()))["building=yes"]["visible"]


def test_drop_without_visible_counts_the_reason(tmp_path: Path) -> None:
    osm = write_osm(tmp_path / "o.geojson", [(rect(10, 10, 12, 12), {"building": "yes"})])
    stage, _ = make_stage(tmp_path, osm, drop_without_visible=True)
    stats = StageStats("osm_join")
    out = list(stage(iter([tile_sample("a_0_0"), tile_sample("a_1_0")]), stats))
    assert out == [] and stats.dropped["no_visible_osm_tags"] == 2 and stats.n_in == 2


def test_invalid_and_empty_geometries_are_repaired_or_dropped(tmp_path: Path) -> None:
    bowtie = Polygon([at(0, 0), at(40, 40), at(40, 0), at(0, 40), at(0, 0)])
    assert not bowtie.is_valid
    path = tmp_path / "bad.geojson"
    feats = [
        {"type": "Feature", "properties": {"building": "yes"}, "geometry": json.loads(gpd.GeoSeries([bowtie], crs=UTM).to_crs(4326).to_json())["features"][0]["geometry"]},
        {"type": "Feature", "properties": {"building": "yes"}, "geometry": None},
        {"type": "Feature", "properties": {"highway": "track"}, "geometry": {"type": "LineString", "coordinates": []}},
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    stage, report = make_stage(tmp_path, path)
    stats = report["sources"][0]["stats"]
    assert stats["repaired:invalid_geometry"] == 1
    assert stats["dropped:empty_geometry"] == 2
    b = by_tag(stage.join(tile_sample()))["building=yes"]
    assert b["area_m2"] == pytest.approx(800, rel=0.01)  # two triangles of 400 m2


def test_geographic_tile_measures_metres(tmp_path: Path) -> None:
    # a tile in EPSG:4326 at -34 deg: 2.5e-5 deg/px; a 0.001 deg east-west line
    lat = -34.0
    transform = Affine(2.5e-5, 0, 20.5, 0, -2.5e-5, lat)
    line = LineString([(20.5005, lat - 0.001), (20.5015, lat - 0.001)])
    osm = write_osm(tmp_path / "g.geojson", [(line, {"highway": "track"})], crs="EPSG:4326")
    stage, _ = make_stage(tmp_path, osm, bounds=(20.49, -34.01, 20.51, -33.99))
    gx, gy = 2.5e-5 * 92_385, 2.5e-5 * 110_922  # metres per pixel at 34 S
    tag = by_tag(stage.join(tile_sample(crs="EPSG:4326", transform=transform, gsd=(gx, gy))))["highway=track"]
    expected = 0.001 * 92_385  # metres of one 0.001 deg of longitude at 34 S
    assert tag["length_m"] == pytest.approx(expected, rel=0.1)


def test_stage_pickles_without_worker_state(scene: tuple[OsmJoin, dict[str, Any]]) -> None:
    import pickle

    stage, _ = scene
    stage.join(tile_sample())
    assert stage._lazy_indexes
    clone = pickle.loads(pickle.dumps(stage))
    assert clone._lazy_indexes == {}
    assert by_tag(clone.join(tile_sample())) == by_tag(stage.join(tile_sample()))


@pytest.mark.parametrize("weights, word", [
    ([[1, 0, 0], [0, 0, 0], [0, 0, 0]], "top left"),
    ([[0, 0, 0], [0, 1, 0], [0, 0, 0]], "center"),
    ([[0, 0, 0], [0, 0, 0], [0, 1, 1]], "bottom right"),
    ([[0, 0, 0], [1, 1, 1], [0, 0, 0]], "across"),
    ([[1, 1, 1], [1, 1, 1], [1, 1, 1]], "across"),
    ([[0, 1, 0], [0, 1, 0], [0, 0, 0]], "top"),
])
def test_position_words(weights: list[list[float]], word: str) -> None:
    assert position_words(np.array(weights, dtype=float))[0] == word


def test_overpass_needs_permission_and_uses_osmnx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = OsmJoin({"type": "osm_join", "sources": [{"overpass": True}]})
    ctx = RunContext(base_dir=tmp_path, state_dir=tmp_path / "s",
                     footprints_wgs84=[(20.5, -34.01, 20.51, -34.0)], footprint_crs=[UTM])
    with pytest.raises(InputError, match="allow_network"):
        stage.prepare(ctx)

    import osmnx

    calls = []

    def fake_features_from_bbox(bbox: tuple[float, ...], tags: dict[str, Any]) -> gpd.GeoDataFrame:
        calls.append((bbox, tags))  # the internet is the external boundary: answer as Overpass would
        frame = gpd.GeoDataFrame({"element": ["way"], "id": [42], "building": ["yes"]},
                                 geometry=[box(20.501, -34.005, 20.5012, -34.0048)], crs=4326)
        return frame.set_index(["element", "id"])

    monkeypatch.setattr(osmnx, "features_from_bbox", fake_features_from_bbox)
    online = OsmJoin({"type": "osm_join", "sources": [{"overpass": True}], "allow_network": True,
                      "keys": ["building"]})
    report = online.prepare(ctx)
    assert report["features"] == 1 and calls[0][1] == {"building": True}
    assert calls[0][0][0] < 20.5 and calls[0][0][2] > 20.51


# -- the feature cache is data, never pickle (issue 16 item 13) -------------------------------------
class _Planted:
    """A pickle that creates a file when loaded: what an attacker would put in OUT/.rsdata."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_a_planted_pickle_is_never_loaded(tmp_path: Path, scene: tuple[OsmJoin, dict[str, Any]],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    stage, report = scene
    cache = Path(stage.cache_path)
    assert cache.exists() and not cache.name.endswith(".pkl")
    assert not cache.read_bytes().startswith(b"\x80")  # not a pickle stream
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Planted(marker))
    cache.write_bytes(payload)  # planted over the cache ...
    for old in (cache.with_suffix(".pkl"), cache.parent / f"{cache.name.split('.')[0]}.pkl"):
        old.write_bytes(payload)  # ... and where the old pickle cache lived

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("pickle must never be loaded from the cache")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    again, report2 = make_stage(tmp_path, Path(stage.config["sources"][0]["path"]))
    assert not marker.exists()
    assert "rebuilt" in report2["cache"] and report2["features"] == report["features"] == 8
    assert by_tag(again.join(tile_sample()))["landuse=farmland"]["area_share"] == pytest.approx(0.25, abs=1e-3)
    fresh = OsmJoin(again.config)  # a worker: reads the cache file written by the rebuild
    fresh.cache_path, fresh.source_ids = again.cache_path, again.source_ids
    assert by_tag(fresh.join(tile_sample())) == by_tag(again.join(tile_sample()))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_a_damaged_cache_is_rebuilt(tmp_path: Path, scene: tuple[OsmJoin, dict[str, Any]], damage: str) -> None:
    from rsdata.osm.cache import read_cache

    stage, report = scene
    cache = Path(stage.cache_path)
    blob = cache.read_bytes()
    assert read_cache(cache) is not None
    if damage == "truncate":
        cache.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        cache.write_bytes(blob[:-5] + bytes([blob[-5] ^ 0xFF]) + blob[-4:])
    else:
        cache.write_bytes(b"")
    assert read_cache(cache) is None
    again, report2 = make_stage(tmp_path, Path(stage.config["sources"][0]["path"]))
    assert again.cache_path == stage.cache_path and "rebuilt" in report2["cache"]
    assert report2["features"] == report["features"]
    assert cache.read_bytes() == blob  # rebuilt whole, byte for byte
    assert by_tag(again.join(tile_sample())) == by_tag(stage.join(tile_sample()))


def test_a_valid_cache_is_reused(tmp_path: Path, scene: tuple[OsmJoin, dict[str, Any]],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from rsdata.osm import join as join_module

    stage, report = scene
    monkeypatch.setattr(join_module, "read_source", lambda *a, **k: pytest.fail("the cache was not used"))
    again, report2 = make_stage(tmp_path, Path(stage.config["sources"][0]["path"]))
    assert "cache" not in report2 and report2["sources"] == report["sources"]


# -- objects, not OSM ways (issue 15) and objects per tile (issue 13) -------------------------------
def test_a_road_split_into_ways_is_one_object(tmp_path: Path) -> None:
    split = [at(-10, 30), at(20, 31), at(50, 29), at(80, 30), at(110, 30)]
    rows = [(LineString(split[i:i + 2]), {"highway": "residential"}) for i in range(4)]
    rows += [(LineString([at(-5, 70), at(105, 70)]), {"highway": "track"}),  # two separate tracks
             (LineString([at(-5, 90), at(105, 90)]), {"highway": "track"}),
             # touching, but their names say they are two roads
             (LineString([at(50, -5), at(50, 50)]), {"highway": "tertiary", "name": "Main Road"}),
             (LineString([at(50, 50), at(50, 105)]), {"highway": "tertiary", "name": "Church Street"}),
             # touching, one named, one not: one road
             (LineString([at(70, -5), at(70, 50)]), {"highway": "service", "ref": "S1"}),
             (LineString([at(70, 50), at(70, 105)]), {"highway": "service"}),
             # buildings stay one per polygon, touching or not
             (rect(5, 40, 15, 50), {"building": "yes"}), (rect(15, 40, 25, 50), {"building": "yes"}),
             # a multipolygon's parts are one area
             (MultiPolygon([rect(60, 60, 66, 66), rect(80, 80, 86, 86)]), {"natural": "water"})]
    stage, _ = make_stage(tmp_path, write_osm(tmp_path / "roads.geojson", rows))
    tags = by_tag(stage.join(tile_sample()))
    road = tags["highway=residential"]
    assert (road["count"], road["count_ways"], road["count_objects"], road["visible_objects"]) == (4, 4, 1, 1)
    assert tags["highway=track"]["count_objects"] == 2 and tags["highway=track"]["count_ways"] == 2
    assert tags["highway=tertiary"]["count_objects"] == 2
    assert tags["highway=service"]["count_objects"] == 1
    assert tags["building=yes"]["count_objects"] == 2
    assert tags["natural=water"]["count_ways"] == 1 and tags["natural=water"]["count_objects"] == 1


def test_objects_only_when_asked(tmp_path: Path) -> None:
    rows = [(rect(5, 5, 15, 15), {"building": "yes", "roof:material": "tin", "name": "Shed"}),
            (rect(80, 80, 82, 82), {"building": "yes"}),  # 4 px: not visible, not an object
            (LineString([at(-10, 50), at(110, 50)]), {"highway": "residential", "surface": "asphalt",
                                                       "tunnel": "yes", "maxspeed": "50"}),
            (rect(50, -50, 150, 50), {"landuse": "farmland", "crop": "wheat"})]
    osm = write_osm(tmp_path / "o.geojson", rows)
    plain, _ = make_stage(tmp_path, osm)
    assert "objects" not in plain.join(tile_sample())
    asked, _ = make_stage(tmp_path, osm, keep_objects=True)
    objects = asked.join(tile_sample())["objects"]
    assert [o["tag"] for o in objects] == ["landuse=farmland", "building=yes", "highway=residential"]
    farm, house, road = objects
    assert farm["area_px"] == pytest.approx(2500, abs=0.1) and farm["cell"] == "top right"
    assert farm["touches_edge"] and {k: v for k, v in farm["attrs"].items() if v} == {"crop": "wheat"} and farm["geom"] == "polygon"
    assert house["box"] == [5.0, 5.0, 15.0, 15.0] and not house["touches_edge"]
    assert house["area_m2"] == pytest.approx(100, abs=0.1) and house["cell"] == "top left"
    assert {k: v for k, v in house["attrs"].items() if v} == {"roof:material": "tin", "name": "Shed"} and house["id"] is None
    from rsdata.osm.tilejoin import OBJECT_ATTRS

    # every key always present: one fixed structure that schema-inferring loaders (HF) can read
    assert set(house["attrs"]) == set(OBJECT_ATTRS) == set(road["attrs"])
    assert house["box_crs"] == pytest.approx([X0 + 5, Y0 - 15, X0 + 15, Y0 - 5], abs=1e-3)
    assert road["geom"] == "line" and road["length_m"] == pytest.approx(100, abs=0.1)
    assert road["pixels"] == [[[0.0, 50.0], [100.0, 50.0]]] and road["area_px"] == 0
    assert {k: v for k, v in road["attrs"].items() if v} == {"surface": "asphalt", "tunnel": "yes"}  # seen, or hidden from above
    # a later stage that reads objects turns them on through the run context
    stage = OsmJoin({"type": "osm_join", "sources": [{"path": str(osm)}]})
    stage.prepare(RunContext(base_dir=tmp_path, state_dir=tmp_path / "state", footprints_wgs84=[AREA],
                             footprint_crs=[UTM], keep_objects=True))
    assert stage.join(tile_sample())["objects"] == objects
    assert stage.cache_path == plain.cache_path  # the feature cache does not depend on it


@pytest.mark.parametrize("batch", [2, 64])
def test_a_partition_is_joined_together_in_order(tmp_path: Path, batch: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from rsdata.osm import join as join_module

    monkeypatch.setattr(join_module, "BATCH", batch)
    rows = [(rect(5, 5, 15, 15), {"building": "yes"}), (rect(205, 5, 215, 15), {"building": "yes"}),
            (rect(305, 5, 315, 15), {"building": "yes"})]
    stage, _ = make_stage(tmp_path, write_osm(tmp_path / "p.geojson", rows), drop_without_visible=True)
    samples = [tile_sample(f"t_{i}_0", transform=Affine(1.0, 0, X0 + 100 * i, 0, -1.0, Y0))
               for i in range(5)]
    stats = StageStats("osm_join")
    out = list(stage(iter(samples), stats))
    assert [s.key for s in out] == ["t_0_0", "t_2_0", "t_3_0"]
    assert stats.n_in == 5 and stats.n_out == 3 and stats.dropped["no_visible_osm_tags"] == 2
    assert [s.meta["osm"] for s in out] == [stage.join(s) for s in out]


def test_position_words_of_many_rows_equal_one_at_a_time() -> None:
    from rsdata.osm.tilejoin import position_words_many

    rng = np.random.default_rng(0)
    rows = [rng.random(9) * (rng.random(9) < 0.5) for _ in range(300)]
    rows += [rng.integers(0, 3, 9).astype(float) for _ in range(300)]  # ties and zeros
    rows += [np.full(9, 7281.777777777777) * (rng.random(9) < 0.7) for _ in range(100)]
    rows += [rng.choice([0.0, 0.5, 1.0, 1 / 3, 2 / 3], 9) for _ in range(300)]
    weights = np.array(rows)
    assert position_words_many(weights) == [position_words(w.reshape(3, 3)) for w in weights]

