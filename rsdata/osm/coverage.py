"""Where a vector source has looked: its coverage, in WGS84.

A caption may say "nothing is mapped here" only where a source has data to say so. Each
``osm_join`` source has a coverage polygon: a declared ``coverage`` (a polygon file or a WGS84
bbox), else the extract bounds a ``.osm``/``.pbf`` header declares, else the convex hull of all
its features (its data extent), else, for Overpass, the box that was asked for. Per tile the
stage records which share of the tile the union of the coverages holds.

Also here: CRS helpers for vector layers in any CRS (a WGS84 bbox as a box in the layer's CRS,
with densified edges; geometries to WGS84 with densified edges).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from rsdata.errors import InputError

BBox = tuple[float, float, float, float]

# a tile counts as fully covered from this share on (numerical slack at coverage edges)
FULL_COVERAGE = 0.999
_DENSIFY = 64  # points per edge when boxes and hulls change CRS


def crs_label(crs: Any) -> str:
    """A short name of a CRS for messages: ``EPSG:32734``, else its name."""
    if crs is None:
        return "no CRS"
    try:
        c = CRS.from_user_input(crs)
    except Exception:  # noqa: BLE001
        return str(crs)
    epsg = c.to_epsg()
    return f"EPSG:{epsg} ({c.name})" if epsg else c.name


def is_wgs84(crs: Any) -> bool:
    c = CRS.from_user_input(crs)
    return c.to_epsg() == 4326 or (c.is_geographic and c.equals("OGC:CRS84"))


def bbox_in_crs(bbox: BBox, crs: Any) -> BBox:
    """The WGS84 ``bbox`` as a bbox in ``crs`` that contains all of it (edges densified)."""
    if is_wgs84(crs):
        return bbox
    tr = Transformer.from_crs("EPSG:4326", CRS.from_user_input(crs), always_xy=True)
    out = tr.transform_bounds(*bbox, densify_pts=_DENSIFY)
    if not all(math.isfinite(v) for v in out):
        raise InputError(f"the run's area {bbox} cannot be expressed in {crs_label(crs)}")
    return (min(out[0], out[2]), min(out[1], out[3]), max(out[0], out[2]), max(out[1], out[3]))


def geometry_to_wgs84(geom: BaseGeometry, crs: Any) -> BaseGeometry:
    """``geom`` from ``crs`` to WGS84 lon/lat, edges densified so that they stay true."""
    if geom is None or geom.is_empty or is_wgs84(crs):
        return geom
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny) / _DENSIFY
    if step > 0:
        geom = shapely.segmentize(geom, step)
    tr = Transformer.from_crs(CRS.from_user_input(crs), "EPSG:4326", always_xy=True)
    out = shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return out if out.is_valid else shapely.make_valid(out)


def data_extent(geoms: Sequence[BaseGeometry] | np.ndarray, crs: Any) -> BaseGeometry | None:
    """The convex hull of ``geoms`` (in ``crs``) as a WGS84 geometry; None when there are none."""
    arr = np.asarray(geoms, dtype=object)
    if not arr.size:
        return None
    arr = arr[~(shapely.is_missing(arr) | shapely.is_empty(arr))]
    if not arr.size:
        return None
    coords = shapely.get_coordinates(arr)
    coords = coords[np.isfinite(coords).all(axis=1)]
    if not len(coords):
        return None
    hull = shapely.convex_hull(shapely.multipoints(coords))
    return geometry_to_wgs84(hull, crs)


def bbox_polygon(value: Any, where: str) -> BaseGeometry:
    """A WGS84 ``[minx, miny, maxx, maxy]`` as a polygon, checked."""
    try:
        minx, miny, maxx, maxy = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: a coverage bbox is [minx, miny, maxx, maxy] in WGS84 "
                         f"lon/lat, got {value!r}") from None
    if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
        raise InputError(f"{where}: coverage bbox {value!r} must be [minx, miny, maxx, maxy] in "
                         "WGS84 lon/lat with min < max (e.g. [20.4, -34.1, 20.6, -33.9])")
    return shapely.box(minx, miny, maxx, maxy)


def polygonal_part(geom: BaseGeometry | None) -> BaseGeometry | None:
    """The (Multi)Polygon part of a geometry (collections included), or None."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom if geom.is_valid else shapely.make_valid(geom)
    if geom.geom_type == "GeometryCollection":
        parts = [p for p in (polygonal_part(g) for g in geom.geoms) if p is not None]
        return shapely.union_all(parts) if parts else None
    return None


def read_coverage_file(path: Path, where: str) -> BaseGeometry:
    """The union of the polygons of a GeoJSON/GeoPackage/Shapefile (every layer), in WGS84."""
    import geopandas as gpd
    import pyogrio

    if not path.exists():
        raise InputError(f"{where}: coverage file not found: {path} (relative paths are relative "
                         "to the recipe file)")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{where}: cannot read coverage file {path} as a vector file: {exc}") from None
    polys: list[BaseGeometry] = []
    kinds: set[str] = set()
    for layer in layers:
        frame = gpd.read_file(path, layer=layer)
        if not len(frame):
            continue
        if frame.crs is None:
            raise InputError(f"{where}: layer {layer!r} of coverage file {path} has no CRS; "
                             "give it one (ogr2ogr -a_srs EPSG:4326 out.gpkg in.gpkg)")
        for geom in frame.geometry.values:
            if geom is None or geom.is_empty:
                continue
            kinds.add(geom.geom_type)
            part = polygonal_part(geom)
            if part is not None and part.area > 0:
                polys.append(geometry_to_wgs84(part, frame.crs))
    if not polys:
        found = ", ".join(sorted(kinds)) or "no geometry at all"
        raise InputError(f"{where}: coverage file {path} holds no polygon ({found}); a coverage "
                         "is a polygon (GeoJSON/GeoPackage) of where the source is complete, or a "
                         "bbox [minx, miny, maxx, maxy] in WGS84")
    union = shapely.union_all(polys)
    return union if union.is_valid else shapely.make_valid(union)


NO_COVERAGE = "none"  # a source complete nowhere: its counts are lower bounds on every tile


def declared_coverage(value: Any, resolve: Any, where: str) -> BaseGeometry | None:
    """A source's ``coverage`` option: a bbox list, a polygon file path (resolved), or
    ``"none"`` (the source is complete nowhere: None)."""
    if isinstance(value, (list, tuple)):
        return bbox_polygon(value, where)
    if value == NO_COVERAGE:
        return None
    if isinstance(value, str):
        return read_coverage_file(Path(resolve(value)), where)
    raise InputError(f"{where}: coverage is a polygon file path, a bbox [minx, miny, maxx, "
                     f"maxy] in WGS84 or \"none\", got {value!r}")


def tile_polygon_wgs84(transformer: Transformer | None, corners: np.ndarray) -> BaseGeometry:
    """A tile (its corner coordinates in its CRS, densified) as a WGS84 polygon."""
    ring = np.vstack([corners, corners[:1]])
    t = np.linspace(0, 1, 9)[:-1]
    pts = np.vstack([a + (b - a) * t[:, None] for a, b in zip(ring[:-1], ring[1:])])
    if transformer is not None:
        x, y = transformer.transform(pts[:, 0], pts[:, 1])
        pts = np.column_stack([x, y])
    return shapely.Polygon(pts)


def coverage_of(tile: BaseGeometry, coverages: Sequence[tuple[str, BaseGeometry]],
                union: BaseGeometry | None) -> dict[str, Any]:
    """Which share of ``tile`` (WGS84) the union of the coverages holds, and which sources
    cover part of it."""
    if union is None or union.is_empty or tile.area <= 0:
        return {"fraction": 0.0, "sources": []}
    if union.contains(tile):
        fraction = 1.0
    elif not union.intersects(tile):
        return {"fraction": 0.0, "sources": []}
    else:
        fraction = min(1.0, shapely.intersection(union, tile).area / tile.area)
    ids = [sid for sid, geom in coverages
           if geom.intersects(tile) and (geom.contains(tile)
                                         or shapely.intersection(geom, tile).area > 0)]
    return {"fraction": round(fraction, 4) if fraction < 1.0 else 1.0, "sources": ids}
