"""The per-object records of the OSM join (``meta["osm"]["objects"]``) as geometries.

The join writes each visible object's clipped geometry as ``pixels`` parts in the stored image's
pixel space (x right, y down); captions (relations), VQA, grounding and layouts read them back
through :func:`object_geometry`, the one reader of that format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import shapely
from shapely.geometry import LineString, MultiLineString, MultiPoint, Point, Polygon
from shapely.geometry.base import BaseGeometry


def object_geometry(obj: Mapping[str, Any]) -> BaseGeometry | None:
    """An object's clipped geometry in image pixels, or None when it has none (or a broken one)."""
    parts = obj.get("pixels") or []
    kind = obj.get("geom") or obj.get("kind")
    geom: BaseGeometry | None
    try:
        if kind == "polygon":
            polys = [Polygon(p) for p in parts if len(p) >= 3]
            polys = [p if p.is_valid else shapely.make_valid(p) for p in polys]
            geom = shapely.union_all(polys) if polys else None
        elif kind == "line":
            lines = [LineString(p) for p in parts if len(p) >= 2]
            geom = MultiLineString(lines) if len(lines) > 1 else (lines[0] if lines else None)
        elif kind == "point":
            pts = [Point(xy) for part in parts for xy in
                   (part if part and isinstance(part[0], (list, tuple)) else [part])]
            geom = MultiPoint(pts) if len(pts) > 1 else (pts[0] if pts else None)
        else:
            geom = None
    except (ValueError, TypeError, IndexError, shapely.errors.GEOSException):
        geom = None
    if geom is not None and geom.is_empty:
        return None
    return geom
