"""What a caption may be about: a tile's *subjects*, most salient first.

A subject is one visible, caption-worthy thing: a tag of ``osm.tags`` (or a land-cover class of
``meta.landcover``) with what captions may say about it (names, exact count, area share, line
extent, position, its objects). The rules, in order:

1. **Visible things only.** A tag the caption rules list under ``not_subjects`` (reserves,
   boundaries, places, routes, addresses ...) is never a subject; neither is a tag whose objects
   are all hidden from above (tunnels, underground, covered: ``not_subjects.hidden``), nor a
   secondary tag (``primary: false``: another tag names the same feature), nor one too small to
   see at the tile's GSD (``visible: false``).
2. **Objects, not OSM ways.** Counts are of objects: the tile's ``osm.objects`` when present,
   else the join's ``count_objects`` (touching ways of one class merged), else today's rule:
   exact numbers for polygons, none for lines (OSM splits a road into many ways).
3. **Salience.** A line is caption-worthy when its visible length is at least
   ``min_line_fraction`` of the tile's width; an area when it covers ``min_area_share`` of the
   tile (buildings: when visible at all); a line "runs across" only when one object of it
   spans the tile from one edge to the opposite one. Subjects are ordered largest area /
   longest line first (a line as long as the tile is wide weighs like ``LINE_WEIGHT`` of area,
   each of up to ten separate objects like ``OBJECT_WEIGHT`` on top of their area).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

from rsdata.captions.rules import CaptionRules
from rsdata.osm.objects import object_geometry as read_object_geometry

LINE_WEIGHT = 0.1  # salience of a line as long as the tile is wide, in units of area share
OBJECT_WEIGHT = 0.01  # ... of each separate object (a building), up to ten, on top of its area
EDGE_TOL_PX = 1.5  # a vertex this close to a tile edge touches it
SPAN_FALLBACK_LENGTH = 0.9  # without objects: a spanning line is at least this long (x width)
FULL_COVERAGE = 0.999
SPREAD_CELLS = 6  # an area or group is "spread across" the tile when it reaches this many cells
CELL_RC = {"top left": (0, 0), "top": (0, 1), "top right": (0, 2), "left": (1, 0), "center": (1, 1),
           "right": (1, 2), "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2)}
RC_CELL = {rc: word for word, rc in CELL_RC.items()}

Tag = dict[str, Any]


@dataclass(frozen=True)
class Limits:
    """The salience thresholds (from the stage settings)."""

    min_line_fraction: float = 0.15
    min_area_share: float = 0.01
    max_features: int = 4


@dataclass
class Subject:
    tag: str  # "key=value", or "landcover:<name>" for a class of meta.landcover
    phrase: str
    plural: str
    mass: bool
    plural_verb: bool
    category: str
    kind: str  # polygon | line | point | landcover
    n: int | None  # exact number of visible objects (None: unknown, or a mass noun)
    many: bool  # verbs agree in the plural
    share: float  # share of the tile's area
    length_m: float
    length_frac: float  # visible length / tile width
    salience: float
    spans: bool  # a line that runs from one edge of the tile to the opposite one
    axes: frozenset[str]  # how it spans: "h" (left to right), "v" (top to bottom)
    spread: bool  # an area or group spread across the tile
    position: str
    cells: tuple[str, ...]
    objects: tuple[dict[str, Any], ...] = ()
    names: tuple[tuple[str, str], ...] = ()  # (singular, plural): the phrase, then synonyms
    stats: Tag = field(default_factory=dict, repr=False)

    @property
    def countable(self) -> bool:
        return not self.mass

    def geometry(self) -> BaseGeometry | None:
        geoms = [g for g in (object_geometry(o) for o in self.objects) if g is not None]
        return shapely.union_all(geoms) if geoms else None


@dataclass
class Scene:
    """Everything the families need about one tile."""

    subjects: list[Subject]
    width_px: float
    height_px: float
    gsd_m: float
    width_m: float
    full_coverage: bool
    has_objects: bool
    visible_tags: int  # visible tags of any kind (subjects or not)
    hidden_subjects: list[str] = field(default_factory=list)  # tags left out by rule 1

    def by_tag(self, tag: str) -> Subject | None:
        return next((s for s in self.subjects if s.tag == tag), None)


# -- objects (meta["osm"]["objects"]) ---------------------------------------------------------------
def object_tags(obj: Mapping[str, Any]) -> set[str]:
    """The ``key=value`` tags an object belongs to."""
    out: set[str] = set()
    if obj.get("tag"):
        out.add(str(obj["tag"]))
    tags = obj.get("tags")
    if isinstance(tags, Mapping):
        out |= {f"{k}={v}" for k, v in tags.items()}
    elif isinstance(tags, (list, tuple)):
        out |= {str(t) for t in tags}
    if obj.get("key") and obj.get("value") is not None:
        out.add(f"{obj['key']}={obj['value']}")
    return out


def object_geometry(obj: Mapping[str, Any]) -> BaseGeometry | None:
    """An object's geometry in image pixels (see :func:`rsdata.osm.objects.object_geometry`),
    cached on the object for this call (the cache is stripped before anything is written)."""
    if "_geom" in obj:
        return obj["_geom"]  # type: ignore[no-any-return]
    geom = read_object_geometry(obj)
    if isinstance(obj, dict):
        obj["_geom"] = geom
    return geom


def strip_cache(objects: Sequence[dict[str, Any]]) -> None:
    for obj in objects:
        obj.pop("_geom", None)


def edges_touched(geom: BaseGeometry, width: float, height: float, tol: float = EDGE_TOL_PX) -> set[str]:
    x0, y0, x1, y1 = geom.bounds
    out = set()
    if x0 <= tol:
        out.add("left")
    if x1 >= width - tol:
        out.add("right")
    if y0 <= tol:
        out.add("top")
    if y1 >= height - tol:
        out.add("bottom")
    return out


def connected_pieces(geoms: Sequence[BaseGeometry], tol: float = 0.5) -> list[BaseGeometry]:
    """The connected pieces of some geometries (the join keeps one object per OSM way: a road
    split into ways is one piece again here)."""
    parts = [p for g in geoms for p in getattr(g, "geoms", [g]) if not p.is_empty]
    parent = list(range(len(parts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(parts) > 1:
        tree = shapely.STRtree(parts)
        left, right = tree.query(parts, predicate="dwithin", distance=tol)
        for a, b in zip(left.tolist(), right.tolist()):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[ra] = rb
    groups: dict[int, list[BaseGeometry]] = {}
    for i, p in enumerate(parts):
        groups.setdefault(find(i), []).append(p)
    return [shapely.union_all(g) if len(g) > 1 else g[0] for g in groups.values()]


def span_axes(geoms: Sequence[BaseGeometry], width: float, height: float) -> set[str]:
    """"h" when one connected piece touches the left and right edges, "v" for top and bottom."""
    out = set()
    for piece in connected_pieces(geoms):
        e = edges_touched(piece, width, height)
        if {"left", "right"} <= e:
            out.add("h")
        if {"top", "bottom"} <= e:
            out.add("v")
    return out


# -- counting ----------------------------------------------------------------------------------------
def kind_of(tag: Tag, limits: Limits) -> str:
    gt = tag.get("geom_types") or {}
    if gt.get("polygon") and (not gt.get("line") or tag.get("area_share", 0.0) >= limits.min_area_share):
        return "polygon"
    if gt.get("line"):
        return "line"
    return "polygon" if gt.get("polygon") else "point"


def stats_count(tag: Tag, kind: str) -> int | None:
    """Visible objects of a tag by its statistics (None: not known exactly)."""
    if tag.get("mass"):
        return None
    for key in ("visible_objects", "visible_count_objects"):
        if key in tag:
            return int(tag[key])
    if "count_objects" in tag:
        objects, ways = int(tag["count_objects"]), int(tag.get("count_ways", tag.get("count", 0)))
        if objects == ways:
            return int(tag["visible_count"])  # every object is one way
        if int(tag["visible_count"]) == ways:
            return objects  # every way visible: every object too
        return None
    if kind == "line":
        return None  # OSM splits one road into many ways: counting ways would be a lie
    return int(tag["visible_count"])


def _cells_rc(cells: Sequence[str]) -> set[tuple[int, int]]:
    return {CELL_RC[c] for c in cells if c in CELL_RC}


def fallback_axes(tag: Tag, width_m: float, height_m: float) -> set[str]:
    """Without objects: a line spans the tile ("h" left to right, "v" top to bottom) when it
    covers cells on two opposite sides and is long enough to reach across."""
    rc = _cells_rc(tag.get("cells") or [])
    cols, rows = {c for _, c in rc}, {r for r, _ in rc}
    length = float(tag.get("length_m", 0.0))
    out = set()
    if 0 in cols and 2 in cols and length >= SPAN_FALLBACK_LENGTH * width_m:
        out.add("h")
    if 0 in rows and 2 in rows and length >= SPAN_FALLBACK_LENGTH * height_m:
        out.add("v")
    return out


# -- the scene ----------------------------------------------------------------------------------------
def scene_of(meta: Mapping[str, Any], limits: Limits, rules: CaptionRules | None = None,
             visible_only: bool = True) -> Scene:
    """The tile's subjects, most salient first, and the facts the families need."""
    rules = rules or CaptionRules.default()
    geo = meta["geo"]
    width_px, height_px = (float(v) for v in geo["size"])
    gsd = float(geo["gsd_m"])
    gx, gy = (geo.get("gsd_xy_m") or [gsd, gsd])[:2]
    width_m, height_m = width_px * float(gx), height_px * float(gy)
    osm = meta.get("osm") or {}
    full = float((osm.get("coverage") or {}).get("fraction", 0.0)) >= FULL_COVERAGE
    objects = [o for o in (osm.get("objects") or []) if isinstance(o, dict)]
    by_tag: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        for t in object_tags(obj):
            by_tag.setdefault(t, []).append(obj)
    subjects: list[Subject] = []
    hidden: list[str] = []
    visible_tags = 0
    for order, tag in enumerate(osm.get("tags") or []):
        if not tag.get("visible"):
            continue
        visible_tags += 1
        if not tag.get("primary", True):
            continue
        name = tag.get("tag") or f"{tag['key']}={tag['value']}"
        if visible_only and not rules.tag_is_subject(name):
            hidden.append(name)
            continue
        subj = _osm_subject(name, tag, by_tag.get(name), limits, rules, visible_only,
                            (width_px, height_px, width_m, height_m, full))
        if subj is None:
            hidden.append(name)
            continue
        if _salient(subj, limits):
            subj.stats["_order"] = order
            subjects.append(subj)
    known = {s.phrase for s in subjects}
    for subj in _landcover_subjects(meta, limits):
        if subj.phrase not in known:
            subjects.append(subj)
    subjects.sort(key=lambda s: (-s.salience, s.stats.get("_order", 99)))
    return Scene(subjects=subjects[:limits.max_features], width_px=width_px, height_px=height_px,
                 gsd_m=gsd, width_m=width_m, full_coverage=full, has_objects=bool(objects),
                 visible_tags=visible_tags, hidden_subjects=hidden)


def _osm_subject(name: str, tag: Tag, objs: list[dict[str, Any]] | None, limits: Limits,
                 rules: CaptionRules, visible_only: bool,
                 dims: tuple[float, float, float, float, bool]) -> Subject | None:
    width_px, height_px, width_m, height_m, full = dims
    kind = kind_of(tag, limits)
    share = float(tag.get("area_share", 0.0))
    length = float(tag.get("length_m", 0.0))
    mine: list[dict[str, Any]] = []
    if objs is not None:
        seen = [o for o in objs if o.get("visible", True)]
        mine = [o for o in seen if not (visible_only and rules.hides(o.get("attrs")))]
        if not mine:
            return None  # every object hidden from above (or too small to see)
        if len(mine) < len(seen):  # some hidden: measure what is left
            share, length = _scaled(tag, seen, mine, width_px, height_px)
    n = stats_count(tag, kind)
    ways = int(tag["visible_count"])
    if objs is not None and len(mine) < len([o for o in objs if o.get("visible", True)]):
        n, ways = None, len(mine)  # some ways hidden: the merged count is no longer known
    plural_verb = bool(tag.get("plural_verb"))
    many = plural_verb if tag.get("mass") else (n > 1 if n is not None else ways > 1)
    axes: set[str] = set()
    if kind == "line":
        if mine:
            axes = span_axes([g for g in (object_geometry(o) for o in mine) if g is not None],
                             width_px, height_px)
        else:
            axes = fallback_axes(tag, width_m, height_m)
    frac = length / width_m if width_m else 0.0
    salience = share if kind != "line" else LINE_WEIGHT * min(frac, 3.0)
    if kind != "line" and not tag.get("mass"):  # separate objects catch the eye beyond their area
        salience += OBJECT_WEIGHT * min(n if n is not None else ways, 10)
    cells = tuple(tag.get("cells") or [])
    names = ((tag["phrase"], tag["plural"]),) + tuple(
        p for p in rules.synonyms_of(name) if p[0] != tag["phrase"])
    return Subject(tag=name, phrase=tag["phrase"], plural=tag["plural"], mass=bool(tag.get("mass")),
                   plural_verb=plural_verb, category=str(tag.get("category", "other")), kind=kind,
                   n=n, many=many, share=share, length_m=length, length_frac=frac, salience=salience,
                   spans=bool(axes), axes=frozenset(axes),
                   spread=kind != "line" and len(tag.get("cells") or []) >= SPREAD_CELLS,
                   position=str(tag.get("position", "center")), cells=cells, objects=tuple(mine),
                   names=names, stats=dict(tag))


def _scaled(tag: Tag, seen: list[dict[str, Any]], mine: list[dict[str, Any]], w: float,
            h: float) -> tuple[float, float]:
    def measure(objs: list[dict[str, Any]]) -> tuple[float, float]:
        geoms = [object_geometry(o) for o in objs]
        return (sum(g.area for g in geoms if g is not None), sum(g.length for g in geoms if g is not None
                                                                  and g.geom_type.endswith("LineString")))
    a_all, l_all = measure(seen)
    a_mine, l_mine = measure(mine)
    share = float(tag.get("area_share", 0.0)) * (a_mine / a_all if a_all else 1.0)
    length = float(tag.get("length_m", 0.0)) * (l_mine / l_all if l_all else 1.0)
    return round(share, 4), round(length, 1)


def _salient(s: Subject, limits: Limits) -> bool:
    if s.kind == "line":
        return s.length_frac >= limits.min_line_fraction
    if s.kind == "polygon":
        return s.category == "building" or s.share >= limits.min_area_share
    return True  # points: the join's min_pixels already decided


def _landcover_subjects(meta: Mapping[str, Any], limits: Limits) -> list[Subject]:
    lc = meta.get("landcover")
    if not isinstance(lc, Mapping):
        return []
    covered = float(lc.get("covered", 1.0) or 0.0)
    min_share = float(lc.get("min_share", 0.05) or 0.0)
    out = []
    for i, cls in enumerate(lc.get("classes") or []):
        if cls.get("code") is None or cls.get("name") == "unknown" or not cls.get("phrase"):
            continue
        share = float(cls.get("share", 0.0))
        tile_share = round(share * covered, 4)
        if share < min_share or tile_share < limits.min_area_share:
            continue
        countable = bool(cls.get("countable"))
        phrase = str(cls["phrase"])
        plural = str(cls.get("plural") or (phrase + "s" if countable else phrase))
        cells = tuple(cls.get("cells") or [])
        out.append(Subject(
            tag=f"landcover:{cls.get('name', phrase)}", phrase=phrase, plural=plural, mass=not countable,
            plural_verb=countable or (phrase.endswith("s") and not phrase.endswith("ss")),
            category=str(cls.get("category") or "landcover"), kind="landcover", n=None,
            many=countable, share=tile_share, length_m=0.0, length_frac=0.0, salience=tile_share,
            spans=False, axes=frozenset(), spread=len(cells) >= SPREAD_CELLS,
            position="across" if len(cells) >= SPREAD_CELLS else
            (cells[0] if cells else "center"), cells=cells, names=((phrase, plural),),
            stats={"_order": 100 + i, "landcover": True, "share_of_covered": share,
                   "lower_bound": covered < FULL_COVERAGE}))
    return out


def cell_of_point(x: float, y: float, width: float, height: float) -> str:
    c = min(2, max(0, int(3 * x / width))) if width else 1
    r = min(2, max(0, int(3 * y / height))) if height else 1
    return RC_CELL[(r, c)]


def far_cells(cells: Sequence[str]) -> tuple[str, str] | None:
    """The two covered cells farthest apart (a line's extent without its geometry)."""
    rc = [(c, CELL_RC[c]) for c in cells if c in CELL_RC]
    best, pair = 0.0, None
    for i, (a, ra) in enumerate(rc):
        for b, rb in rc[i + 1:]:
            d = math.dist(ra, rb)
            if d > best + 1e-9:
                best, pair = d, (a, b)
    return pair if best >= 2 - 1e-9 else None
