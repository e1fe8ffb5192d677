"""Hand-built tiles for the task stages (vqa, grounding, scene_label), in the OSM join's format.

Geometries are given in the tile's pixel space (x right, y down) and may reach past the tile:
:func:`obj` clips them to the tile as the join does, so an object cut by the edge is one object
with its visible part. :func:`tile_meta` adds the per-tag statistics (``osm.tags``) the join
would compute, and the coverage.
"""

from __future__ import annotations

import io
from typing import Any

import shapely
from PIL import Image
from shapely.geometry.base import BaseGeometry

from rsdata.sample import Sample

X0, Y0 = 330000.0, 6230000.0  # top-left corner, EPSG:32734, 1 m per pixel
CRS = "EPSG:32734"
CELLS = [["top left", "top", "top right"], ["left", "center", "right"],
         ["bottom left", "bottom", "bottom right"]]


def obj(tag: str, geom: BaseGeometry, phrase: str, category: str, *, plural: str | None = None,
        oid: str | None = None, attrs: dict[str, str] | None = None, size: tuple[int, int] = (256, 256),
        mass: bool = False) -> dict[str, Any]:
    """One object of ``meta["osm"]["objects"]`` (clipped to the tile)."""
    w, h = size
    clipped = shapely.clip_by_rect(geom, 0, 0, w, h)
    assert not clipped.is_empty, f"{tag} lies outside the tile"
    kind = {"Polygon": "polygon", "MultiPolygon": "polygon", "LineString": "line",
            "MultiLineString": "line", "Point": "point", "MultiPoint": "point"}[clipped.geom_type]
    parts = []
    for part in getattr(clipped, "geoms", [clipped]):
        coords = part.exterior.coords if kind == "polygon" else part.coords
        parts.append([[round(x, 1), round(y, 1)] for x, y in coords])
    x0, y0, x1, y1 = clipped.bounds
    c = clipped.centroid
    return {"id": oid, "tag": tag, "phrase": phrase, "plural": plural or phrase + "s", "mass": mass,
            "category": category, "geom": kind, "pixels": parts,
            "box": [round(x0, 1), round(y0, 1), round(x1, 1), round(y1, 1)],
            "box_crs": [round(X0 + x0, 3), round(Y0 - y1, 3), round(X0 + x1, 3), round(Y0 - y0, 3)],
            "area_px": round(clipped.area, 1) if kind == "polygon" else 0.0,
            "length_px": round(clipped.length, 1) if kind == "line" else 0.0,
            "area_m2": round(clipped.area, 1) if kind == "polygon" else 0.0,
            "length_m": round(clipped.length, 1) if kind == "line" else 0.0,
            "cell": CELLS[min(2, int(3 * c.y / h))][min(2, int(3 * c.x / w))],
            "touches_edge": x0 <= 0 or y0 <= 0 or x1 >= w or y1 >= h, "attrs": dict(attrs or {}),
            "_geom": clipped}


def _objects_of_tag(objs: list[dict[str, Any]]) -> int:
    """Objects of one tag by the join's rule: touching ones are one (buildings: each one)."""
    if objs[0]["tag"].startswith("building="):
        return len(objs)
    union = shapely.union_all([o["_geom"] for o in objs])
    if union.geom_type.startswith("Multi") and objs[0]["geom"] == "line":
        union = shapely.line_merge(union)
    return len(getattr(union, "geoms", [union]))


def tile_meta(objects: list[dict[str, Any]], *, size: tuple[int, int] = (256, 256),
              coverage: float = 1.0, sources: tuple[str, ...] = ("osm.gpkg",),
              invisible: list[dict[str, Any]] = (), with_objects: bool = True) -> dict[str, Any]:
    """A sample json with ``geo`` and ``osm`` as the join (keeping objects) writes them."""
    w, h = size
    by_tag: dict[str, list[dict[str, Any]]] = {}
    for o in objects:
        by_tag.setdefault(o["tag"], []).append(o)
    tags = []
    for tag, objs in by_tag.items():
        key, value = tag.split("=", 1)
        kinds: dict[str, int] = {}
        for o in objs:
            kinds[o["geom"]] = kinds.get(o["geom"], 0) + 1
        area = shapely.union_all([o["_geom"] for o in objs if o["geom"] == "polygon"]).area \
            if "polygon" in kinds else 0.0
        n_obj = _objects_of_tag(objs)
        tags.append({"key": key, "value": value, "tag": tag, "phrase": objs[0]["phrase"],
                     "plural": objs[0]["plural"], "mass": objs[0]["mass"], "category": objs[0]["category"],
                     "count": len(objs), "count_ways": len(objs), "count_objects": n_obj,
                     "visible_count": len(objs), "visible_count_objects": n_obj, "geom_types": kinds,
                     "visible": True, "primary": True, "area_share": round(area / (w * h), 4),
                     "area_m2": round(area, 1), "length_m": round(sum(o["length_px"] for o in objs), 1),
                     "position": "center", "cells": []})
    for t in invisible:  # tags with features too small to see
        tags.append({"count": 1, "count_ways": 1, "count_objects": 1, "visible_count": 0,
                     "visible_count_objects": 0, "geom_types": {"polygon": 1}, "visible": False,
                     "primary": True, "area_share": 0.0, "area_m2": 2.0, "length_m": 0.0,
                     "position": "center", "cells": [], "mass": False, **t})
    ordered = sorted(objects, key=lambda o: (-o["area_px"], -o["length_px"]))
    osm: dict[str, Any] = {"sources": list(sources), "n_features": len(objects), "tags": tags,
                           "coverage": {"fraction": coverage, "sources": list(sources)},
                           "min_pixels": {"polygon": 16, "line": 8, "point": None}}
    if with_objects:
        osm["objects"] = [{k: v for k, v in o.items() if k != "_geom"} for o in ordered]
    return {"geo": {"crs": CRS, "transform": [1.0, 0.0, X0, 0.0, -1.0, Y0], "size": [w, h],
                    "gsd_m": 1.0, "gsd_xy_m": [1.0, 1.0], "bounds": [X0, Y0 - h, X0 + w, Y0]},
            "osm": osm}


def jpeg(size: tuple[int, int] = (256, 256)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 80)).save(buf, format="JPEG")
    return buf.getvalue()


def sample(key: str, meta: dict[str, Any], image: bool = False) -> Sample:
    return Sample(key=key, image=jpeg(tuple(meta["geo"]["size"])) if image else b"", meta=meta)


def village(coverage: float = 1.0) -> dict[str, Any]:
    """256 x 256 px: four buildings (one cut by the left edge), a river across the bottom, a
    residential road (two ways) from top to bottom crossing it, a pond next to the road, and a
    dirt track in the top left."""
    from shapely.geometry import LineString, box

    objs = [
        obj("building=yes", box(20, 20, 60, 50), "building", "building", oid="way/1"),      # 1200
        obj("building=yes", box(200, 30, 230, 50), "building", "building", oid="way/2"),    # 600
        obj("building=yes", box(190, 200, 210, 215), "building", "building", oid="way/3"),  # 300
        obj("building=yes", box(-10, 120, 15, 140), "building", "building", oid="way/4"),   # 300 seen
        obj("waterway=river", LineString([(0, 185), (256, 175)]), "river", "water", oid="way/10"),
        obj("highway=residential", LineString([(128, 0), (128, 100)]), "residential road", "road",
            oid="way/20"),
        obj("highway=residential", LineString([(128, 100), (128, 256)]), "residential road", "road",
            oid="way/21"),
        obj("natural=water", box(135, 110, 155, 130), "pond", "water", oid="way/30"),
        obj("highway=track", LineString([(0, 80), (90, 80)]), "dirt track", "road", oid="way/40"),
    ]
    return tile_meta(objs, coverage=coverage)
