"""Small geodesy helpers: metres per pixel in any CRS, bounds in WGS84."""

from __future__ import annotations

import math
from functools import lru_cache

from affine import Affine
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

_GEOD = Geod(ellps="WGS84")


@lru_cache(maxsize=64)
def _linear_factor(crs_wkt: str) -> float:
    crs = CRS.from_wkt(crs_wkt)
    try:
        return float(crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - CRSs without a linear unit
        return 1.0


def pixel_size_m(crs: CRS, transform: Affine, x: float, y: float) -> tuple[float, float]:
    """Ground size in metres of one pixel (x, y) of ``transform`` at CRS coordinate (x, y).

    Geographic CRSs are measured on the WGS84 ellipsoid at that latitude, so the x size
    shrinks with cos(latitude); projected CRSs use their linear unit (metres, feet, ...).
    """
    px = math.hypot(transform.a, transform.d)
    py = math.hypot(transform.b, transform.e)
    if crs.is_geographic:
        lat = max(min(y, 89.9), -89.9)
        _, _, dx = _GEOD.inv(x, lat, x + px, lat)
        _, _, dy = _GEOD.inv(x, lat - py / 2, x, lat + py / 2)
        return abs(dx), abs(dy)
    factor = _linear_factor(crs.to_wkt())
    return px * factor, py * factor


def bounds_wgs84(crs: CRS, bounds: tuple[float, float, float, float]) -> list[float]:
    """``[west, south, east, north]`` in EPSG:4326, densified so curved edges are covered."""
    if crs.to_epsg() == 4326:
        return [float(b) for b in bounds]
    return [float(b) for b in transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)]


def crs_name(crs: CRS) -> str:
    """``EPSG:32734`` where the CRS has an EPSG code, else its WKT."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()
