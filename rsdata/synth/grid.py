"""A layout grid: square cells laid over an OSM extract's extent in a local UTM CRS.

Each cell becomes one tile geometry (``meta["geo"]``: CRS, transform, bounds, GSD, size) that
the OSM join measures and the layout rasterizer paints, exactly as for a raster tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pyproj import Transformer
from rasterio.crs import CRS

from rsdata.geo import TileGeo


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS84 UTM zone CRS of a point (EPSG:326zz north, 327zz south)."""
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


@dataclass(frozen=True)
class Cell:
    col: int
    row: int
    x0: float  # left, in the grid CRS
    y1: float  # top


@dataclass(frozen=True)
class Grid:
    crs_wkt: str
    crs_name: str
    size: int
    gsd: float
    cells: tuple[Cell, ...]
    bounds: tuple[float, float, float, float]  # the extent in the grid CRS
    bounds_wgs84: tuple[float, float, float, float]

    def geo(self, cell: Cell, geo: TileGeo | None = None) -> dict[str, Any]:
        """The ``geo`` member of a cell's sample."""
        geo = geo or TileGeo(CRS.from_wkt(self.crs_wkt))
        span = self.size * self.gsd
        bounds = (cell.x0, cell.y1 - span, cell.x0 + span, cell.y1)
        from affine import Affine

        transform = Affine(self.gsd, 0.0, cell.x0, 0.0, -self.gsd, cell.y1)
        cx, cy = cell.x0 + span / 2, cell.y1 - span / 2
        gx, gy = geo.pixel_size_m(transform, cx, cy)
        wgs = geo.bounds_wgs84(bounds)
        return {
            "crs": geo.name, "bounds": [round(float(b), 9) for b in bounds],
            "bounds_wgs84": [round(b, 7) for b in wgs],
            "center_wgs84": [round((wgs[0] + wgs[2]) / 2, 7), round((wgs[1] + wgs[3]) / 2, 7)],
            "transform": [float(v) for v in list(transform)[:6]],
            "gsd_m": round(math.sqrt(gx * gy), 4), "gsd_xy_m": [round(gx, 4), round(gy, 4)],
            "size": [self.size, self.size], "bands": [1, 2, 3], "band_count": 3, "dtype": "uint8",
            "nodata_fraction": 0.0,
        }


def lay_grid(extent_wgs84: tuple[float, float, float, float], size: int, gsd: float,
             overlap: int = 0, max_cells: int | None = None, where: str = "the extent") -> Grid:
    """Cells of ``size`` px at ``gsd`` m/px (stride ``size - overlap``) covering a WGS84 bbox,
    laid row by row from its top-left corner in the UTM zone of its centre."""
    from rsdata.errors import InputError

    west, south, east, north = extent_wgs84
    if not (east > west and north > south):
        raise InputError(f"{where}: the extent {list(extent_wgs84)} is empty")
    if overlap >= size:
        raise InputError(f"overlap ({overlap}) must be smaller than the cell size ({size})")
    crs = utm_crs((west + east) / 2, (south + north) / 2)
    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    n = 21
    xs = [west + (east - west) * i / (n - 1) for i in range(n)]
    ys = [south + (north - south) * i / (n - 1) for i in range(n)]
    lon = xs + [east] * n + xs[::-1] + [west] * n
    lat = [south] * n + ys + [north] * n + ys[::-1]
    px, py = tr.transform(lon, lat)
    minx, miny, maxx, maxy = min(px), min(py), max(px), max(py)
    span, stride = size * gsd, (size - overlap) * gsd
    cols = max(1, math.ceil(max(0.0, (maxx - minx) - span) / stride - 1e-9) + 1)
    rows = max(1, math.ceil(max(0.0, (maxy - miny) - span) / stride - 1e-9) + 1)
    if max_cells is not None and cols * rows > max_cells:
        raise InputError(f"{where}: {cols} x {rows} = {cols * rows:,} cells of {size} px at {gsd:g} m "
                         f"is more than max_cells = {max_cells:,}; use a coarser gsd, larger cells, a "
                         "smaller bbox, or raise max_cells")
    cells = tuple(Cell(c, r, minx + c * stride, maxy - r * stride) for r in range(rows) for c in range(cols))
    epsg = crs.to_epsg()
    return Grid(crs_wkt=crs.to_wkt(), crs_name=f"EPSG:{epsg}" if epsg else crs.to_wkt(), size=size,
                gsd=gsd, cells=cells, bounds=(minx, miny, maxx, maxy),
                bounds_wgs84=(west, south, east, north))
