"""Shared fixtures: the generated GeoTIFFs of tests/fixtures/rasters.py and recipe helpers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from fixtures import rasters as fx  # noqa: E402


@pytest.fixture(scope="session")
def raster_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every fixture raster (name -> path), written once per session; do not modify them."""
    return fx.generate_all(tmp_path_factory.mktemp("rasters"))


@pytest.fixture(scope="session")
def osm_geojson(raster_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OSM-like features (farmland, a building, a road, a stream) over utm_rgb."""
    path = tmp_path_factory.mktemp("osm") / "osm_utm_rgb.geojson"
    return fx.write_osm_geojson(path, fx.raster_bounds_wgs84(raster_files["utm_rgb"]))


@pytest.fixture
def make_recipe(tmp_path: Path) -> Callable[..., Path]:
    """``make_recipe(raster, **kw)`` writes ``fx.recipe_dict(raster, **kw)`` into tmp_path and
    returns the YAML's path; ``filename=`` picks another file name."""

    def make(raster: Path | str, filename: str = "recipe.yaml", **kw: Any) -> Path:
        return fx.write_recipe(tmp_path, fx.recipe_dict(raster, **kw), filename)

    return make
