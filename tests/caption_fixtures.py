"""Tiles for caption tests, built from geometry in image pixels: objects and the tag statistics
the OSM join would write for them (area share, length, 3x3 cells, position, counts)."""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from caption_check import caption_problems
from rsdata.osm.vocabulary import Vocabulary

SIZE = 256
GSD = 2.5
CELL_WORDS = [["top left", "top", "top right"], ["left", "center", "right"],
              ["bottom left", "bottom", "bottom right"]]


def obj(tag: str, geom: BaseGeometry, **attrs: Any) -> dict[str, Any]:
    """One object of the join's ``osm.objects`` (one OSM way or polygon)."""
    kind = {"Polygon": "polygon", "MultiPolygon": "polygon", "LineString": "line",
            "MultiLineString": "line", "Point": "point"}[geom.geom_type]
    parts = list(getattr(geom, "geoms", [geom]))
    if kind == "polygon":
        pixels = [[list(c) for c in p.exterior.coords] for p in parts]
    elif kind == "line":
        pixels = [[list(c) for c in p.coords] for p in parts]
    else:
        pixels = [[p.x, p.y] for p in parts]
    x0, y0, x1, y1 = geom.bounds
    return {"tag": tag, "geom": kind, "pixels": pixels, "box": [x0, y0, x1, y1],
            "touches_edge": x0 <= 0 or y0 <= 0 or x1 >= SIZE or y1 >= SIZE,
            "attrs": {k.replace("__", ":"): v for k, v in attrs.items()}}


def _cells(geoms: list[BaseGeometry]) -> tuple[str, list[str]]:
    w = np.zeros((3, 3))
    for g in geoms:
        for r in range(3):
            for c in range(3):
                cell = box(c * SIZE / 3, r * SIZE / 3, (c + 1) * SIZE / 3, (r + 1) * SIZE / 3)
                part = g.intersection(cell)
                w[r, c] += part.area if g.area else part.length if g.length else float(not part.is_empty)
    share = w / w.sum()
    covered = share >= 0.05
    cells = [CELL_WORDS[r][c] for r, c in sorted(zip(*np.nonzero(covered)), key=lambda rc: -share[rc])]
    spans = (covered[:, 0].any() and covered[:, 2].any()) or (covered[0].any() and covered[2].any())
    if covered.sum() >= 6 or (spans and covered.sum() >= 3):
        return "across", cells
    ys, xs = np.mgrid[0:3, 0:3]
    return CELL_WORDS[int(round(float((share * ys).sum())))][int(round(float((share * xs).sum())))], cells


def stats(tag: str, objects: list[dict[str, Any]], *, count_objects: int | None = None,
          visible: bool = True, primary: bool = True) -> dict[str, Any]:
    """The tag entry the join writes for these objects (phrase and grammar from the vocabulary)."""
    key, value = tag.split("=", 1)
    phrase = Vocabulary.default().phrase(key, value)
    assert phrase is not None, tag
    geoms = [shapely.union_all([shapely.Polygon(p) for p in o["pixels"]]) if o["geom"] == "polygon"
             else shapely.MultiLineString(o["pixels"]) if o["geom"] == "line"
             else shapely.MultiPoint(o["pixels"]) for o in objects]
    area = shapely.union_all([g for g in geoms if g.area]).area if any(g.area for g in geoms) else 0.0
    length = sum(g.length for g in geoms if not g.area)
    position, cells = _cells(geoms)
    kinds: dict[str, int] = {}
    for o in objects:
        kinds[o["geom"]] = kinds.get(o["geom"], 0) + 1
    n = len(objects)
    out = {"key": key, "value": value, "tag": tag, "phrase": phrase.singular, "plural": phrase.plural,
           "mass": phrase.mass, "category": phrase.category, "count": n, "count_ways": n,
           "visible_count": n if visible else 0, "visible": visible, "primary": primary,
           "area_share": round(area / SIZE**2, 4), "area_m2": round(area * GSD**2, 1),
           "length_m": round(length * GSD, 1), "position": position, "cells": cells, "geom_types": kinds}
    if phrase.plural_verb:
        out["plural_verb"] = True
    if count_objects is not None:
        out["count_objects"] = count_objects
        out["visible_objects"] = count_objects if visible else 0
    return out


def tile(key: str, entries: list[tuple[dict[str, Any], list[dict[str, Any]]]], *, coverage: float = 1.0,
         with_objects: bool = True, **extra: Any) -> dict[str, Any]:
    """A sample's meta: its tag entries (sorted as the join sorts them) and, optionally, objects."""
    tags = sorted((e for e, _ in entries), key=lambda t: (not t["visible"], -t["area_share"], -t["length_m"]))
    osm: dict[str, Any] = {"tags": tags, "n_features": sum(t["count"] for t in tags),
                           "coverage": {"fraction": coverage, "sources": ["osm"]}}
    if with_objects:
        osm["objects"] = [o for _, objs in entries for o in objs]
    return {"key": key, "geo": {"size": [SIZE, SIZE], "gsd_m": GSD, "gsd_xy_m": [GSD, GSD]}, "osm": osm,
            "source": {"type": "raster", "platform": "aerial"}, **extra}


def phrases() -> set[str]:
    return {p for _k, _v, ph in Vocabulary.default().entries() for p in (ph.singular, ph.plural)}


def problems(text: str, meta: dict[str, Any], provenance: dict[str, Any] | None = None,
             **limits: float) -> list[str]:
    return caption_problems(text, meta["osm"], phrases(), meta=meta, provenance=provenance, **limits)


def all_texts(meta: dict[str, Any], seeds: int = 12, **kw: Any) -> list[str]:
    """Every caption of the tile over several keys and seeds, each checked by the checker."""
    from rsdata.captions.templates import captions_for

    out = []
    for s in range(seeds):
        for cap in captions_for({**meta, "key": f"{meta['key']}-{s}"}, count=9, seed=s, **kw):
            limits = {k: v for k, v in kw.items() if k in ("min_line_fraction", "min_area_share")}
            found = problems(cap.text, meta, cap.provenance, **limits)
            assert not found, (cap.text, found)
            out.append(cap.text)
    return out


def hline(y: float, x0: float = 0, x1: float = SIZE) -> shapely.LineString:
    return shapely.LineString([(x0, y), (x1, y)])


def vline(x: float, y0: float = 0, y1: float = SIZE) -> shapely.LineString:
    return shapely.LineString([(x, y0), (x, y1)])


def square(x: float, y: float, side: float = 8) -> shapely.Polygon:
    return box(x, y, x + side, y + side)
