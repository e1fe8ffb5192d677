"""The agreement check of benchmarks/bench_peers.py (rsdata's OSM join vs a plain geopandas
join), on hand-made figures and on a small hand-made scene. No timings: the benchmark itself
is not part of the test suite."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import bench_peers as bp  # noqa: E402
from benchmarks import bench_spine as bs  # noqa: E402

TILE_AREA = 640.0 * 640.0  # a 256 px tile at 2.5 m


def stats(count: float, area: float = 0.0, length: float = 0.0) -> dict[str, float]:
    return {"count": count, "area_m2": area, "length_m": length}


def test_compare_joins_accepts_rounding_and_flags_real_differences() -> None:
    ours = [{"building=yes": stats(3, 120.0), "highway=track": stats(1, 0.0, 80.4)},
            {"landuse=farmland": stats(2, 900.0)},
            {"natural=water": stats(1, 50.0)}]
    peer = [{"building=yes": stats(3, 120.04), "highway=track": stats(1, 0.0, 80.36)},
            {"landuse=farmland": stats(2, 950.0)},
            {"natural=water": stats(2, 50.0), "highway=service": stats(1, 0.0, 12.0)}]
    ag = bp.compare_joins(ours, peer, [TILE_AREA] * 3)
    assert ag.pairs == 4
    assert ag.only_peer == [(2, "highway=service")] and ag.only_ours == []
    assert ag.count_mismatches == [(2, "natural=water", 1.0, 2.0)]
    assert ag.area_mismatches == [(1, "landuse=farmland", 900.0, 950.0)]
    assert ag.length_mismatches == []
    assert ag.max_share_diff == pytest.approx(50.0 / TILE_AREA)
    assert ag.max_share_diff_within_tol == pytest.approx(0.04 / TILE_AREA)
    assert ag.max_area_rel_diff == pytest.approx(50.0 / 950.0)
    assert ag.max_length_rel_diff == pytest.approx(0.04 / 80.4)
    with pytest.raises(ValueError, match="tile counts differ"):
        bp.compare_joins(ours, peer[:2], [TILE_AREA] * 3)


def test_overlap_explanation_needs_the_union_to_match() -> None:
    ag = bp.compare_joins([{"landuse=farmland": stats(2, 900.0)}, {"building=yes": stats(1, 80.0)}],
                          [{"landuse=farmland": stats(2, 950.0)}, {"building=yes": stats(1, 60.0)}],
                          [TILE_AREA] * 2)
    unions = {(0, "landuse=farmland"): 900.02, (1, "building=yes"): 60.0}
    ex = bp.explain_area_mismatches(ag, lambda t, tag: unions[(t, tag)], [TILE_AREA] * 2)
    assert ex["overlap_counted_twice_by_peer"] == 1
    # a peer area below ours is no double-counted overlap, whatever its union says
    assert [u["tag"] for u in ex["unexplained"]] == ["building=yes"]
    assert ex["max_area_share_diff_with_union"] == pytest.approx(20.0 / TILE_AREA)


def scene() -> bs.Features:
    """Features in pixel coordinates of a 512 px raster (2 x 2 tiles of 256 px): two farmland
    fields overlapping inside tile (0, 0), a building across the tiles' vertical border, a
    building inside tile (1, 1), a road through all four tiles, a pond across two."""
    import shapely

    geoms = [shapely.box(20, 20, 140, 120), shapely.box(100, 60, 200, 200),  # overlap 40 x 60 px
             shapely.box(250, 40, 262, 52),  # building across x = 256
             shapely.Polygon([(300, 300), (320, 296), (324, 318), (302, 322)]),
             shapely.LineString([(10, 500), (200, 300), (300, 200), (400, 400), (500, 480)]),
             shapely.box(230.5, 330.25, 281.75, 371.5)]
    tags = [{"landuse": "farmland"}, {"landuse": "farmland"}, {"building": "house"},
            {"building": "yes"}, {"highway": "track"}, {"natural": "water"}]
    return bs.Features(geoms, tags)


def test_rsdata_join_and_geopandas_join_agree_on_a_scene(tmp_path: Path) -> None:
    feats = scene()
    sz = replace(bs.QUICK, raster_px=512)
    tif, geojson = tmp_path / "scene.tif", tmp_path / "osm.geojson"
    bs.write_geojson(geojson, feats)
    bs.write_raster(tif, feats, sz, seed=3)

    from rsdata.osm.join import KEY_PRIORITY, OsmJoin
    from rsdata.stage import RunContext

    samples, info = bp.join_samples(tif, tmp_path)
    assert len(samples) == 4
    stage = OsmJoin({"sources": [{"path": str(geojson)}]})
    stage.prepare(RunContext(base_dir=tmp_path, state_dir=tmp_path / "state",
                             footprints_wgs84=[tuple(info.extra["bounds_wgs84"])],
                             footprint_crs=[info.crs_wkt]))
    ours = [bp.rsdata_tag_stats(o) for o in stage.join_many(samples)]
    peer = bp.GeopandasJoin(geojson, f"EPSG:{bs.EPSG}", KEY_PRIORITY)
    bounds = [tuple(s.meta["geo"]["bounds"]) for s in samples]
    theirs = [peer.join(b) for b in bounds]
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in bounds]
    ag = bp.compare_joins(ours, theirs, areas)

    assert ag.pairs >= 9 and not ag.only_ours and not ag.only_peer
    assert ag.count_mismatches == [] and ag.length_mismatches == []
    # the one real difference: the fields' 40 x 60 px overlap, summed twice by the plain join
    (t, tag, mine, plain), = ag.area_mismatches
    assert tag == "landuse=farmland" and samples[t].meta["source"]["tile"] == {"col": 0, "row": 0}
    assert plain - mine == pytest.approx(40 * 60 * bs.GSD ** 2, abs=0.1)
    ex = bp.explain_area_mismatches(ag, lambda t, tag: peer.union_area(bounds[t], tag), areas)
    assert ex["overlap_counted_twice_by_peer"] == 1 and ex["unexplained"] == []
    assert ex["max_area_share_diff_with_union"] < 1e-6
    # the road crosses every tile: one feature (count) in each, with its clipped length
    for mine_t, theirs_t in zip(ours, theirs):
        assert mine_t["highway=track"]["count"] == theirs_t["highway=track"]["count"] == 1
