"""Geometric relations between a tile's subjects, computed from ``osm.objects`` (image pixels).

Only what the geometry shows is claimed:

- **along** — most (≥ half, at least two) of a group's objects lie within ``NEAR_M`` of a line
  and they are strung out along it (their projections on the line span a good part of it):
  "houses along a minor road";
- **crossing** — two lines of different classes cross away from their ends, or a line passes
  through an area and out the other side: "a dirt track crossing a stream";
- **meets** — two lines of different classes touch at the end of one: "a track meeting a road";
- **next to** — one object (or area) lies within ``NEAR_M`` of another class without overlapping
  it: "a pond next to farm buildings";
- **between** — most of a group lies between two lines (the nearest points of the two lines on
  opposite sides): "buildings between a road and a river";
- **surrounded by** — every object of a group lies inside an area, with the area all round it:
  "buildings surrounded by farmland".
"""

from __future__ import annotations

from dataclasses import dataclass

import shapely
from shapely.geometry import box
from shapely.ops import nearest_points
from shapely.geometry.base import BaseGeometry

from rsdata.captions.subjects import Scene, Subject, object_geometry

NEAR_M = 15.0  # "along" / "next to": at most this far apart on the ground
MIN_NEAR_PX = 2.0
SURROUND_MARGIN_M = 10.0


@dataclass(frozen=True)
class Relation:
    kind: str  # along | crossing | meets | next_to | between | surrounded_by
    subject: Subject
    others: tuple[Subject, ...]


def near_px(scene: Scene) -> float:
    return max(MIN_NEAR_PX, NEAR_M / scene.gsd_m) if scene.gsd_m else MIN_NEAR_PX


def _geoms(s: Subject) -> list[BaseGeometry]:
    return [g for g in (object_geometry(o) for o in s.objects) if g is not None]


def _is_line(s: Subject) -> bool:
    return s.kind == "line" and bool(s.objects)


def _is_group(s: Subject) -> bool:
    return s.kind in ("polygon", "point") and not s.mass and len(s.objects) >= 2


def along(group: Subject, line: Subject, scene: Scene) -> bool:
    geoms, lg = _geoms(group), line.geometry()
    if lg is None or len(geoms) < 2:
        return False
    d = near_px(scene)
    near = [g for g in geoms if g.distance(lg) <= d]
    if len(near) < 2 or len(near) < 0.5 * len(geoms):
        return False
    merged = shapely.line_merge(lg) if lg.geom_type == "MultiLineString" else lg
    pieces = list(getattr(merged, "geoms", [merged]))
    best = 0.0
    for piece in pieces:  # strung out along one connected piece of the line
        pos = [piece.project(g.centroid) for g in near if g.distance(piece) <= d]
        if len(pos) >= 2:
            best = max(best, max(pos) - min(pos))
    return best >= max(3 * d, 0.2 * min(lg.length, scene.width_px))


def crossing(a: Subject, b: Subject, scene: Scene) -> str | None:
    """``crossing`` / ``meets`` / None for a line ``a`` and a line or area ``b``."""
    ga, gb = _merged(a.geometry()), _merged(b.geometry())
    if ga is None or gb is None or not ga.intersects(gb):
        return None
    d = near_px(scene)
    if b.kind == "line":
        inter = ga.intersection(gb)
        ends = _ends(ga) + _ends(gb)
        pts = list(getattr(inter, "geoms", [inter]))
        if any(all(p.distance(e) > d for e in ends) for p in pts if not p.is_empty):
            return "crossing"
        return "meets"
    if b.kind in ("polygon", "landcover"):
        outside = ga.difference(gb)
        parts = [p for p in getattr(outside, "geoms", [outside]) if p.length >= d]
        return "crossing" if len(parts) >= 2 else None
    return None


def _merged(g: BaseGeometry | None) -> BaseGeometry | None:
    """Lines joined where one way ends and the next begins (the join keeps one object per way)."""
    if g is not None and g.geom_type == "MultiLineString":
        return shapely.line_merge(g)
    return g


def _ends(g: BaseGeometry) -> list[BaseGeometry]:
    out = []
    for piece in getattr(g, "geoms", [g]):
        coords = list(piece.coords)
        out += [shapely.Point(coords[0]), shapely.Point(coords[-1])]
    return out


def next_to(a: Subject, b: Subject, scene: Scene) -> bool:
    ga, gb = a.geometry(), b.geometry()
    if ga is None or gb is None:
        return False
    if ga.intersects(gb) and ga.intersection(gb).area > 0.1 * max(ga.area, 1e-9):
        return False
    return ga.distance(gb) <= near_px(scene)


def between(group: Subject, l1: Subject, l2: Subject, scene: Scene) -> bool:
    g1, g2 = l1.geometry(), l2.geometry()
    geoms = _geoms(group)
    if g1 is None or g2 is None or len(geoms) < 2:
        return False
    reach = max(scene.width_px, scene.height_px) / 3
    hits = 0
    for g in geoms:
        c = g.centroid
        # nearest_points, not project/interpolate: a clipped line can come back as a collection
        # holding points too, which GEOS cannot project onto
        p1 = nearest_points(g1, c)[0]
        p2 = nearest_points(g2, c)[0]
        v1 = (p1.x - c.x, p1.y - c.y)
        v2 = (p2.x - c.x, p2.y - c.y)
        if (v1[0] * v2[0] + v1[1] * v2[1] < 0 and c.distance(p1) <= reach and c.distance(p2) <= reach):
            hits += 1
    return hits >= 2 and hits >= 0.6 * len(geoms)


def surrounded_by(group: Subject, area: Subject, scene: Scene) -> bool:
    ga = area.geometry()
    geoms = _geoms(group)
    if ga is None or not geoms:
        return False
    tile = box(0, 0, scene.width_px, scene.height_px)
    margin = max(MIN_NEAR_PX, SURROUND_MARGIN_M / scene.gsd_m) if scene.gsd_m else MIN_NEAR_PX
    for g in geoms:
        ring = g.buffer(margin).intersection(tile)
        if ring.is_empty or ring.difference(ga).area > 0.1 * ring.area:
            return False
    return True


def relations(scene: Scene) -> list[Relation]:
    """Every relation the objects show between the tile's subjects (most salient first)."""
    subs = [s for s in scene.subjects if s.objects]
    out: list[Relation] = []
    lines = [s for s in subs if _is_line(s)]
    groups = [s for s in subs if _is_group(s)]
    areas = [s for s in subs if s.kind == "polygon" and (s.mass or s.n == 1) and s.share >= 0.2]
    for g in groups:
        for line in lines:
            if along(g, line, scene):
                out.append(Relation("along", g, (line,)))
        for i, l1 in enumerate(lines):
            for l2 in lines[i + 1:]:
                if l1.tag != l2.tag and between(g, l1, l2, scene):
                    out.append(Relation("between", g, (l1, l2)))
        for area in areas:
            if area.tag != g.tag and area.category != g.category and surrounded_by(g, area, scene):
                out.append(Relation("surrounded_by", g, (area,)))
    for i, a in enumerate(lines):
        for b in lines[i + 1:] + [s for s in subs if s.kind == "polygon" and s.category == "water"]:
            if a.tag == b.tag:
                continue
            kind = crossing(a, b, scene)
            if kind:
                out.append(Relation(kind, a, (b,)))
    singles = [s for s in subs if s.kind in ("polygon", "point") and s.n == 1]
    for a in singles:
        for b in subs:
            if b.tag != a.tag and b.category != a.category and b.kind != "line" and next_to(a, b, scene):
                out.append(Relation("next_to", a, (b,)))
                break
    return out
