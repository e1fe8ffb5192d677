"""No absence claims outside coverage (issue 10 item 2).

A caption may say that nothing is mapped only where a vector source has data: each source's
coverage (its data extent, the extract bounds of an .osm header, or a declared polygon/bbox) is
recorded per tile, and the template captions make absence claims only inside it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from affine import Affine
from pyproj import Transformer
from shapely.geometry import LineString, Point, Polygon, box

from rsdata.captions.templates import TemplateCaptions
from rsdata.errors import InputError
from rsdata.osm.join import OsmJoin
from rsdata.sample import Sample
from rsdata.stage import RunContext
from rsdata.stats import StageStats

UTM = "EPSG:32734"
X0, Y0 = 453_800.0, 6_237_800.0  # Swellendam
SIZE = 100  # tiles of 100 x 100 px at 1 m/px
TO_WGS = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
ABSENCE = ("no features", "no mapped", "nothing", " no ")


def wgs_bounds(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    return tuple(TO_WGS.transform_bounds(x0, y0, x1, y1, densify_pts=21))


# the run's footprint: a 400 m x 100 m strip of four tiles (columns 0..3)
FOOTPRINT = wgs_bounds(X0, Y0 - SIZE, X0 + 4 * SIZE, Y0)


def tile(col: int, crs: str = UTM) -> Sample:
    key = f"r_{col:05d}_00000"
    meta = {"key": key, "geo": {"crs": crs, "transform": list(Affine(1, 0, X0 + col * SIZE, 0, -1, Y0))[:6],
                                "size": [SIZE, SIZE], "gsd_xy_m": [1.0, 1.0], "gsd_m": 1.0}}
    return Sample(key=key, image=b"", meta=meta)


def utm_rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    """A rectangle in the strip's pixel coordinates (x right, y down from the top-left corner)."""
    return box(X0 + x0, Y0 - y1, X0 + x1, Y0 - y0)


def write(path: Path, rows: list[tuple[Any, dict[str, Any]]], crs: str = UTM, driver: str = "GeoJSON",
          out_crs: str | None = None) -> Path:
    frame = gpd.GeoDataFrame([t for _, t in rows], geometry=[g for g, _ in rows], crs=crs)
    if out_crs:
        frame = frame.to_crs(out_crs)
    frame.to_file(path, driver=driver)
    return path


def stage_for(tmp_path: Path, sources: list[dict[str, Any]], footprints: list[tuple[float, ...]] | None = None,
              **cfg: Any) -> tuple[OsmJoin, dict[str, Any]]:
    stage = OsmJoin({"type": "osm_join", "sources": sources, **cfg})
    ctx = RunContext(base_dir=tmp_path, state_dir=tmp_path / "state",
                     footprints_wgs84=[FOOTPRINT] if footprints is None else footprints,
                     footprint_crs=[UTM])
    return stage, stage.prepare(ctx)


@pytest.fixture
def west_half(tmp_path: Path) -> Path:
    """Buildings only in the western 200 m of the strip: their hull ends in the middle of tile 1."""
    rows = [(utm_rect(5, 5, 15, 15), {"building": "yes"}),       # tile 0, top left
            (utm_rect(10, 80, 20, 95), {"building": "yes"}),     # tile 0, bottom left
            (utm_rect(140, 5, 150, 15), {"building": "yes"}),    # tile 1
            (utm_rect(140, 85, 150, 95), {"building": "yes"})]   # tile 1
    return write(tmp_path / "west.geojson", rows)


def test_tile_coverage_follows_the_data_extent(tmp_path: Path, west_half: Path) -> None:
    stage, report = stage_for(tmp_path, [{"path": str(west_half)}])
    assert report["sources"][0]["coverage"]["kind"] == "data_extent"
    cov = [stage.join(tile(c))["coverage"] for c in range(4)]
    assert cov[0]["fraction"] < 1.0  # the hull starts 5 m into tile 0
    assert cov[1]["fraction"] == pytest.approx(0.5, abs=0.05)  # hull x = 5..150 m
    assert cov[2] == {"fraction": 0.0, "sources": []}
    assert cov[3] == {"fraction": 0.0, "sources": []}
    assert cov[1]["sources"] == ["west.geojson"]


def test_declared_bbox_and_polygon_file(tmp_path: Path, west_half: Path) -> None:
    bbox = list(wgs_bounds(X0 - 50, Y0 - 200, X0 + 300, Y0 + 50))  # tiles 0..2 fully
    poly = write(tmp_path / "cover.gpkg", [(utm_rect(0, -10, 100, 110).union(utm_rect(100, -10, 400, 50)),
                                            {"name": "surveyed"})], driver="GPKG")
    stage, report = stage_for(tmp_path, [{"path": str(west_half), "coverage": bbox, "id": "a"},
                                         {"path": str(west_half), "coverage": "cover.gpkg", "id": "b"}])
    assert [s["coverage"]["kind"] for s in report["sources"]] == ["declared", "declared"]
    cov = [stage.join(tile(c))["coverage"] for c in range(4)]
    assert cov[0] == {"fraction": 1.0, "sources": ["a", "b"]}
    assert cov[2] == {"fraction": 1.0, "sources": ["a", "b"]}
    # the polygon's strip covers the top half of tile 3 (a's bbox, in lon/lat, only grazes it)
    assert cov[3]["fraction"] == pytest.approx(0.5, abs=0.01) and "b" in cov[3]["sources"]


def test_osm_file_coverage_is_its_header_bounds(tmp_path: Path) -> None:
    pytest.importorskip("osmium")
    # the extract's header declares the western 200 m; one building node inside
    w, s, e, n = wgs_bounds(X0, Y0 - SIZE - 20, X0 + 2 * SIZE, Y0 + 20)
    lon, lat = TO_WGS.transform(X0 + 50, Y0 - 50)
    xml = (f'<?xml version="1.0"?>\n<osm version="0.6" generator="t">\n'
           f'<bounds minlat="{s}" minlon="{w}" maxlat="{n}" maxlon="{e}"/>\n'
           f'<node id="1" version="1" lat="{lat}" lon="{lon}"><tag k="building" v="yes"/></node>\n</osm>\n')
    path = tmp_path / "extract.osm"
    path.write_text(xml)
    stage, report = stage_for(tmp_path, [{"path": str(path)}])
    assert report["sources"][0]["coverage"]["bounds_wgs84"] == pytest.approx([w, s, e, n], abs=1e-6)
    cov = [stage.join(tile(c))["coverage"]["fraction"] for c in range(4)]
    assert cov[0] == 1.0 and cov[1] >= 0.999 and cov[2] < 0.01 and cov[3] == 0.0


@pytest.mark.parametrize("geoms, found", [
    ([Point(X0, Y0)], "Point"),
    ([LineString([(X0, Y0), (X0 + 10, Y0)])], "LineString"),
])
def test_a_coverage_file_without_polygon_is_a_clear_error(tmp_path: Path, west_half: Path,
                                                          geoms: list[Any], found: str) -> None:
    cover = write(tmp_path / "cover.geojson", [(g, {"a": 1}) for g in geoms])
    with pytest.raises(InputError, match=rf"cover.geojson holds no polygon \({found}\)"):
        stage_for(tmp_path, [{"path": str(west_half), "coverage": str(cover)}])


@pytest.mark.parametrize("bbox", [[1, 2, 3], [20.6, -34, 20.5, -33.9], [500, 0, 600, 1], ["a", 1, 2, 3]])
def test_a_bad_coverage_bbox_is_a_clear_error(tmp_path: Path, west_half: Path, bbox: list[Any]) -> None:
    with pytest.raises(InputError, match="coverage bbox"):
        stage_for(tmp_path, [{"path": str(west_half), "coverage": bbox}])


def test_coverage_none_is_complete_nowhere(tmp_path: Path, west_half: Path) -> None:
    """``coverage: none``: no tile is covered (so counts are lower bounds and nothing is claimed
    absent), no file named "none" is looked for, and the report says so."""
    stage, report = stage_for(tmp_path, [{"path": str(west_half), "coverage": "none"}])
    assert report["sources"][0]["coverage"]["kind"] == "none"
    assert [stage.join(tile(c))["coverage"] for c in range(4)] == [{"fraction": 0.0, "sources": []}] * 4
    ctx = RunContext(base_dir=tmp_path, state_dir=tmp_path / "state", footprints_wgs84=[FOOTPRINT],
                     footprint_crs=[UTM])
    assert [p.name for p in stage.input_files(ctx)] == ["west.geojson"]
    captions = TemplateCaptions({"type": "template_captions", "count": 6})
    out = list(captions(stage(iter([tile(c) for c in range(4)]), StageStats("osm_join")),
                        StageStats("template_captions")))
    texts = [c["text"].lower() for s in out for c in s.meta["captions"]]
    assert texts and not any(w in f" {t} " for t in texts for w in ABSENCE)
    assert not any(re.search(r"\b(?:two|2|a single|one) (?:building|structure)", t)
                   and "at least one" not in t for t in texts), texts


def test_captions_claim_absence_only_inside_coverage(tmp_path: Path, west_half: Path) -> None:
    # an empty tile inside a declared coverage may be called empty; outside, no claim at all
    bbox = list(wgs_bounds(X0 - 50, Y0 - 200, X0 + 300, Y0 + 50))  # tiles 0..2, not tile 3
    join, _ = stage_for(tmp_path, [{"path": str(west_half), "coverage": bbox}])
    captions = TemplateCaptions({"type": "template_captions", "count": 3})
    join_stats, cap_stats = StageStats("osm_join"), StageStats("template_captions")
    out = {s.key: s for s in captions(join(iter([tile(c) for c in range(4)]), join_stats), cap_stats)}
    assert set(out) == {"r_00000_00000", "r_00001_00000", "r_00002_00000"}
    empty = out["r_00002_00000"]  # inside coverage, nothing mapped: honest absence
    assert all(c["template"].startswith("empty.") for c in empty.meta["captions"])
    assert cap_stats.dropped["uncaptioned"] == 1  # tile 3: outside, nothing known
    for key in ("r_00000_00000", "r_00001_00000"):
        assert all(not any(w in f" {c['text'].lower()} " for w in ABSENCE) for c in out[key].meta["captions"])


def test_an_osm_source_that_misses_the_imagery_gives_no_absence_claims(tmp_path: Path, capsys: Any) -> None:
    far = write(tmp_path / "far.geojson", [(utm_rect(50_000, 0, 50_010, 10), {"building": "yes"})],
                out_crs="EPSG:4326")
    join, report = stage_for(tmp_path, [{"path": str(far)}])
    err = capsys.readouterr().err
    assert "far.geojson" in err and "0 features inside" in err
    assert "CRS EPSG:4326" in err  # the source's CRS (a GeoJSON), its extent, the footprints' extent
    assert str(round(FOOTPRINT[0], 6)) in err
    assert report["warnings"]
    captions = TemplateCaptions({"type": "template_captions", "count": 3})
    stats = StageStats("template_captions")
    out = list(captions(join(iter([tile(c) for c in range(4)]), StageStats("osm_join")), stats))
    assert out == [] and stats.dropped["uncaptioned"] == 4


def test_warning_names_a_projected_source_crs(tmp_path: Path, capsys: Any) -> None:
    far = write(tmp_path / "far.gpkg", [(utm_rect(50_000, 0, 50_010, 10), {"building": "yes"})], driver="GPKG")
    stage_for(tmp_path, [{"path": str(far)}])
    err = capsys.readouterr().err
    assert "far.gpkg" in err and "EPSG:32734" in err and "0 features inside" in err


def test_drop_without_visible_and_no_features_anywhere_is_an_error(tmp_path: Path) -> None:
    far = write(tmp_path / "far.geojson", [(utm_rect(50_000, 0, 50_010, 10), {"building": "yes"})])
    with pytest.raises(InputError, match="no source has any feature inside the run's footprints"
                                         ".*drop_without_visible: true"):
        stage_for(tmp_path, [{"path": str(far)}], drop_without_visible=True)


def test_a_run_without_osm_join_makes_no_absence_claims(tmp_path: Path) -> None:
    captions = TemplateCaptions({"type": "template_captions", "count": 3})
    stats = StageStats("template_captions")
    out = list(captions(iter([tile(c) for c in range(4)]), stats))
    assert out == [] and stats.dropped["uncaptioned"] == 4


def test_sample_json_records_coverage(tmp_path: Path, west_half: Path) -> None:
    join, _ = stage_for(tmp_path, [{"path": str(west_half)}])
    sample = next(join(iter([tile(1)]), StageStats("osm_join")))
    osm = json.loads(json.dumps(sample.meta["osm"]))
    assert set(osm["coverage"]) == {"fraction", "sources"}
    assert 0 < osm["coverage"]["fraction"] < 1


def test_recipe_schema_accepts_coverage() -> None:
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "recipe.schema.json").read_text())
    validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/osm_source"})
    assert not list(validator.iter_errors({"path": "a.gpkg", "coverage": [20.4, -34.1, 20.6, -33.9]}))
    assert not list(validator.iter_errors({"path": "a.gpkg", "coverage": "area.geojson"}))
    assert not list(validator.iter_errors({"path": "a.gpkg", "coverage": "none"}))
    assert list(validator.iter_errors({"path": "a.gpkg", "coverage": [1, 2]}))
