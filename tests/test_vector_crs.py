"""Vector sources in any CRS (issue 10 item 1): a layer in UTM or a national grid keeps its
features, and they land in the same tiles, with the same statistics, as a WGS84 copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from affine import Affine
from rasterio.warp import transform_bounds
from shapely.geometry import Polygon, box

from rsdata.errors import InputError
from rsdata.osm import readers
from rsdata.osm.join import OsmJoin
from rsdata.sample import Sample
from rsdata.stage import RunContext

SIZE = 200  # a 200 x 200 px tile at 1 m/px

# (tile CRS, tile top-left corner, national CRS of the area)
AREAS = {
    # Swellendam, South Africa: UTM 34S; Hartebeesthoek94 / Lo21 is south-orientated
    # (axes westing, southing), a good test of axis handling
    "swellendam": ("EPSG:32734", (453_800.0, 6_237_800.0), "EPSG:2049"),
    # Bern, Switzerland: UTM 32N; CH1903+ / LV95
    "bern": ("EPSG:32632", (381_000.0, 5_201_000.0), "EPSG:2056"),
}
DRIVERS = {"GPKG": "gpkg", "GeoJSON": "geojson", "ESRI Shapefile": "shp"}


def features(x0: float, y0: float) -> list[tuple[Polygon, dict[str, str]]]:
    def rect(a: float, b: float, c: float, d: float) -> Polygon:  # tile pixels -> tile CRS
        return box(x0 + a, y0 - d, x0 + c, y0 - b)

    return [
        (rect(10, 10, 30, 25), {"building": "yes"}),            # 300 m2, top left
        (rect(150, 160, 170, 190), {"building": "house"}),      # 600 m2, bottom right
        (rect(90, 90, 110, 105), {"building": "yes"}),          # 300 m2, center
        (rect(100, -50, 260, 100), {"landuse": "farmland"}),    # right half of the top half
        (rect(20_000, 20_000, 20_020, 20_020), {"building": "yes"}),  # 20 km away: filtered out
    ]


def area_of(name: str) -> tuple[str, float, float, str, tuple[float, float, float, float]]:
    tile_crs, (x0, y0), national = AREAS[name]
    bounds = tuple(transform_bounds(tile_crs, "EPSG:4326", x0 - 100, y0 - SIZE - 100,
                                    x0 + SIZE + 100, y0 + 100))
    return tile_crs, x0, y0, national, bounds


def write_layer(directory: Path, name: str, rows: list[tuple[Any, dict[str, str]]], tile_crs: str,
                crs: str | None, driver: str) -> Path:
    frame = gpd.GeoDataFrame([t for _, t in rows], geometry=[g for g, _ in rows], crs=tile_crs)
    if crs is not None:
        frame = frame.to_crs(crs)
    else:
        frame = frame.set_crs(None, allow_override=True)
    path = directory / f"{name}.{DRIVERS[driver]}"
    frame.to_file(path, driver=driver)
    return path


def tile(tile_crs: str, x0: float, y0: float) -> Sample:
    meta = {"key": "t_0_0", "geo": {"crs": tile_crs, "transform": list(Affine(1, 0, x0, 0, -1, y0))[:6],
                                     "size": [SIZE, SIZE], "gsd_xy_m": [1.0, 1.0], "gsd_m": 1.0}}
    return Sample(key="t_0_0", image=b"", meta=meta)


def joined(tmp_path: Path, path: Path, bounds: tuple[float, ...], tile_crs: str, x0: float, y0: float,
           **source: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    stage = OsmJoin({"type": "osm_join", "sources": [{"path": str(path), **source}]})
    ctx = RunContext(base_dir=tmp_path, state_dir=tmp_path / f"state-{path.name}",
                     footprints_wgs84=[bounds], footprint_crs=[tile_crs])
    report = stage.prepare(ctx)
    return report, stage.join(tile(tile_crs, x0, y0))


def comparable(osm: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {t["tag"]: (t["count"], t["visible_count"], t["position"], tuple(sorted(t["cells"])),
                       round(t["area_m2"] / 10), round(t["area_share"], 2)) for t in osm["tags"]}


@pytest.mark.parametrize("driver", list(DRIVERS))
@pytest.mark.parametrize("which", ["utm", "national"])
@pytest.mark.parametrize("area", list(AREAS))
def test_projected_layers_keep_their_features(tmp_path: Path, area: str, which: str, driver: str) -> None:
    tile_crs, x0, y0, national, bounds = area_of(area)
    rows = features(x0, y0)
    reference = write_layer(tmp_path, "wgs84", rows, tile_crs, "EPSG:4326", "GeoJSON")
    crs = tile_crs if which == "utm" else national
    projected = write_layer(tmp_path, f"projected-{driver[:4]}", rows, tile_crs, crs, driver)
    ref_report, ref = joined(tmp_path, reference, bounds, tile_crs, x0, y0)
    report, got = joined(tmp_path, projected, bounds, tile_crs, x0, y0)
    src = report["sources"][0]
    assert src["features"] == 4, src  # every feature near the tile survives the prefilter
    assert src["stats"]["skipped:outside_bbox"] == 1  # the one 20 km away does not
    assert src["features_in_footprints"] == 4
    assert str(crs.split(":")[1]) in src["crs"]
    assert comparable(got) == comparable(ref)
    assert got["n_features"] == ref["n_features"] == 4
    farm = {t["tag"]: t for t in got["tags"]}["landuse=farmland"]
    assert farm["area_share"] == pytest.approx(0.25, abs=0.002)
    assert farm["position"] == "top right"


def test_large_files_push_the_bbox_down_in_the_layer_crs(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "BBOX_PUSHDOWN_BYTES", 0)  # every file counts as large
    tile_crs, x0, y0, national, bounds = area_of("swellendam")
    rows = features(x0, y0)
    reference = write_layer(tmp_path, "wgs84", rows, tile_crs, "EPSG:4326", "GeoJSON")
    projected = write_layer(tmp_path, "lo21", rows, tile_crs, national, "GPKG")
    _, ref = joined(tmp_path, reference, bounds, tile_crs, x0, y0)
    report, got = joined(tmp_path, projected, bounds, tile_crs, x0, y0)
    assert report["sources"][0]["features"] == 4
    assert comparable(got) == comparable(ref)


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_a_layer_without_crs_is_a_clear_error_or_takes_the_source_crs(tmp_path: Path) -> None:
    tile_crs, x0, y0, _, bounds = area_of("swellendam")
    rows = features(x0, y0)
    bare = write_layer(tmp_path, "bare", rows, tile_crs, None, "ESRI Shapefile")
    assert not bare.with_suffix(".prj").exists()
    with pytest.raises(InputError) as err:
        joined(tmp_path, bare, bounds, tile_crs, x0, y0)
    text = str(err.value)
    assert "bare.shp" in text and "no CRS" in text and "crs:" in text and "ogr2ogr -a_srs" in text
    reference = write_layer(tmp_path, "wgs84", rows, tile_crs, "EPSG:4326", "GeoJSON")
    _, ref = joined(tmp_path, reference, bounds, tile_crs, x0, y0)
    report, got = joined(tmp_path, bare, bounds, tile_crs, x0, y0, crs=tile_crs)
    assert report["sources"][0]["features"] == 4
    assert comparable(got) == comparable(ref)


def test_the_source_crs_does_not_override_a_declared_one(tmp_path: Path) -> None:
    tile_crs, x0, y0, national, bounds = area_of("swellendam")
    path = write_layer(tmp_path, "lo21", features(x0, y0), tile_crs, national, "GPKG")
    report, got = joined(tmp_path, path, bounds, tile_crs, x0, y0, crs="EPSG:4326")
    assert report["sources"][0]["features"] == 4 and got["n_features"] == 4


def test_recipe_schema_accepts_the_source_crs() -> None:
    import json

    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "recipe.schema.json").read_text())
    validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/osm_source"})
    assert not list(validator.iter_errors({"path": "a.shp", "crs": "EPSG:32734"}))
    assert list(validator.iter_errors({"path": "a.shp", "crs": 5}))
