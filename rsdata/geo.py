"""Small geodesy helpers: metres per pixel in any CRS, bounds in WGS84."""

from __future__ import annotations

import math

import numpy as np
from functools import lru_cache

from affine import Affine
from pyproj import Geod, Transformer
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


@lru_cache(maxsize=64)
def _to_wgs84(crs_wkt: str) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(crs_wkt), "EPSG:4326", always_xy=True)


MAX_PROJECTION_DISTORTION = 0.01


def pixel_size_m(crs: CRS, transform: Affine, x: float, y: float) -> tuple[float, float]:
    """Ground size in metres of one pixel (x, y) of ``transform`` at CRS coordinate (x, y).

    Geographic CRSs are measured on the WGS84 ellipsoid at that latitude, so the x size
    shrinks with cos(latitude). Projected CRSs use their linear unit (metres, feet, ...) when
    that is ground metres to within 1% there (UTM and other local projections: tiles then stay
    on the native pixel grid); where the projection distorts more (Web Mercator: 1/cos(lat)),
    the pixel is measured on the ellipsoid instead.
    """
    px = math.hypot(transform.a, transform.d)
    py = math.hypot(transform.b, transform.e)
    if crs.is_geographic:
        lat = max(min(y, 89.9), -89.9)
        _, _, dx = _GEOD.inv(x, lat, x + px, lat)
        _, _, dy = _GEOD.inv(x, lat - py / 2, x, lat + py / 2)
        return abs(dx), abs(dy)
    factor = _linear_factor(crs.to_wkt())
    nominal = (px * factor, py * factor)
    try:
        tr = _to_wgs84(crs.to_wkt())
        lon0, lat0 = tr.transform(x, y)
        lon1, lat1 = tr.transform(x + transform.a, y + transform.d)
        lon2, lat2 = tr.transform(x + transform.b, y + transform.e)
        ground = (abs(_GEOD.inv(lon0, lat0, lon1, lat1)[2]), abs(_GEOD.inv(lon0, lat0, lon2, lat2)[2]))
    except Exception:  # noqa: BLE001 - a CRS pyproj cannot invert: trust its unit
        return nominal
    if not all(math.isfinite(g) and g > 0 for g in ground):
        return nominal
    if all(abs(g / n - 1) <= MAX_PROJECTION_DISTORTION for g, n in zip(ground, nominal)):
        return nominal
    return ground


def bounds_wgs84(crs: CRS, bounds: tuple[float, float, float, float]) -> list[float]:
    """``[west, south, east, north]`` in EPSG:4326, densified so curved edges are covered."""
    if crs.to_epsg() == 4326:
        return [float(b) for b in bounds]
    return [float(b) for b in transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)]


def crs_name(crs: CRS) -> str:
    """``EPSG:32734`` where the CRS has an EPSG code, else its WKT."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


class TileGeo:
    """Per-raster geodesy for the tiler, set up once: CRS name, WGS84 bounds, pixel sizes.

    Looking up a CRS's EPSG code or building a transformer costs far more than tiling needs,
    so a partition makes one of these and asks it for every tile.
    """

    def __init__(self, crs: CRS) -> None:
        self.crs = crs
        self.name = crs_name(crs)
        self.is_wgs84 = self.name == "EPSG:4326"
        self._to_wgs84 = None if self.is_wgs84 else _to_wgs84(crs.to_wkt())
        self._constant: tuple[float, float] | None = None  # pixel size when it does not vary
        self._decided = False

    def pixel_size_m(self, transform: Affine, x: float, y: float) -> tuple[float, float]:
        if self.crs.is_geographic:
            return pixel_size_m(self.crs, transform, x, y)
        if not self._decided:
            size = pixel_size_m(self.crs, transform, x, y)
            factor = _linear_factor(self.crs.to_wkt())
            nominal = (math.hypot(transform.a, transform.d) * factor,
                       math.hypot(transform.b, transform.e) * factor)
            self._constant = size if size == nominal else None
            self._decided = True
            return size
        if self._constant is not None:
            return self._constant
        return pixel_size_m(self.crs, transform, x, y)

    def bounds_wgs84(self, bounds: tuple[float, float, float, float], densify: int = 21) -> list[float]:
        """Like :func:`bounds_wgs84`, with the transformer built once."""
        if self._to_wgs84 is None:
            return [float(b) for b in bounds]
        x0, y0, x1, y1 = bounds
        t = np.linspace(0.0, 1.0, densify)
        xs = np.concatenate([x0 + (x1 - x0) * t, np.full(densify, x1), x1 - (x1 - x0) * t, np.full(densify, x0)])
        ys = np.concatenate([np.full(densify, y0), y0 + (y1 - y0) * t, np.full(densify, y1), y1 - (y1 - y0) * t])
        lon, lat = self._to_wgs84.transform(xs, ys)
        return [float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat))]
