"""A tile's objects as the task stages see them: *referents*, grouped as the join counts objects.

The OSM join keeps, per tile, its visible clipped objects (``meta["osm"]["objects"]``: one per
OSM feature, named by its primary tag, with ``pixels`` parts in the stored image's pixel space,
x right and y down, a pixel ``box`` and a ``box_crs`` in ``meta["geo"]["crs"]``). The task stages
group them into referents with the join's ``count_objects`` rule:

* objects of one tag whose clipped geometries touch, and whose ``name`` / ``ref`` do not
  conflict, are one referent (OSM splits one road into many ways);
* buildings are one referent each, touching or not (terraced houses are houses);
* an object cut by the tile edge is one referent (its clipped, visible part), even when the cut
  leaves it in several pieces;
* objects too small to see at the tile's GSD are not in the list at all (the join's
  ``min_pixels``), so they are neither counted nor referred to.

A referent is a *subject* (something questions and expressions may be about) when its tag may be
a caption's subject (``rsdata/data/caption_rules.yaml``: no reserves, boundaries, places ...)
and no object of it is hidden from above (tunnels, covered, underground). Every referent, subject
or not, takes part in the uniqueness checks of :mod:`rsdata.tasks.grounding`.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyproj
import shapely
from shapely.geometry import MultiLineString, MultiPoint
from shapely.geometry.base import BaseGeometry

from rsdata.captions.rules import CaptionRules
from rsdata.errors import InputError

FULL_COVERAGE = 0.999  # absence is stated only where this share of the tile is covered
SEPARATE_KEYS = frozenset({"building"})  # one referent per feature, touching or not
# tag values that say nothing of the kind: a building=yes may be a house, a temple, a shed
GENERIC_VALUES = frozenset({"yes", "road", "unknown", "other", "unclassified_area"})
# generic nouns a listener may use for any feature of a category (matching is over-inclusive)
HYPERNYMS = {"building": "building", "road": "road", "railway": "railway", "water": "water"}
# regions of the image, as fractions of width / height: (x0, y0, x1, y1)
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "top left": (0, 0, 1 / 3, 1 / 3), "top right": (2 / 3, 0, 1, 1 / 3),
    "bottom left": (0, 2 / 3, 1 / 3, 1), "bottom right": (2 / 3, 2 / 3, 1, 1),
    "centre": (1 / 3, 1 / 3, 2 / 3, 2 / 3),
    "left": (0, 0, 1 / 3, 1), "right": (2 / 3, 0, 1, 1), "top": (0, 0, 1, 1 / 3),
    "bottom": (0, 2 / 3, 1, 1),
    "left half": (0, 0, 0.5, 1), "right half": (0.5, 0, 1, 1), "top half": (0, 0, 1, 0.5),
    "bottom half": (0, 0.5, 1, 1),
}
HALVES = ("left half", "right half", "top half", "bottom half")
OPPOSITE = {"left half": "right half", "right half": "left half", "top half": "bottom half",
            "bottom half": "top half"}


class MissingObjectsError(InputError):
    """A task stage got a sample without the join's per-object geometry."""


def require_objects(meta: Mapping[str, Any], key: str, stage: str) -> list[dict[str, Any]]:
    """The sample's ``osm.objects``, or a clear error saying why they are missing."""
    osm = meta.get("osm")
    if not isinstance(osm, Mapping):
        raise MissingObjectsError(
            f"{stage}: sample {key} has no OSM statistics (meta['osm']): put an osm_join stage "
            f"before {stage} in the recipe (or read a corpus whose samples have them)")
    objects = osm.get("objects")
    if objects is None:
        raise MissingObjectsError(
            f"{stage}: sample {key} has no per-object geometry (meta['osm']['objects']): the "
            f"osm_join stage did not keep its objects. The {stage} stage asks the join for them "
            "(Stage.needs_objects -> RunContext.keep_objects); an osm_join that does not honour "
            "the request is older than this stage: update rsdata. Over a corpus source, the "
            "parent run's join must have kept objects (rerun it with this stage in the recipe).")
    if not isinstance(objects, list):
        raise MissingObjectsError(f"{stage}: sample {key}: meta['osm']['objects'] is not a list")
    return objects


def measure(geom: BaseGeometry | None, kind: str) -> float:
    """Area (polygons), length (lines) or number of points of a geometry, in pixels."""
    if geom is None or geom.is_empty:
        return 0.0
    if kind == "polygon":
        return float(geom.area)
    if kind == "line":
        return float(geom.length)
    return float(len(getattr(geom, "geoms", [geom])))


def measure_in(geom: BaseGeometry | None, kind: str, box: tuple[float, float, float, float]) -> float:
    """How much of a geometry lies inside a pixel box (same unit as :func:`measure`)."""
    if geom is None:
        return 0.0
    if kind == "point":
        pts = getattr(geom, "geoms", [geom])
        return float(sum(1 for p in pts if box[0] <= p.x <= box[2] and box[1] <= p.y <= box[3]))
    return measure(shapely.clip_by_rect(geom, *box), kind)


def region_box(name: str, width: float, height: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = REGIONS[name]
    return (x0 * width, y0 * height, x1 * width, y1 * height)


def could_be(noun: str, own: frozenset[str], loose: frozenset[str]) -> bool:
    """Whether a feature could be meant by ``noun`` (over-inclusive): one of its names or
    generic nouns (``loose``), a generic noun one of its names ends with ("road": "dirt road"),
    or a more specific noun ending with its own one-word name ("residential building" may be
    a feature mapped only as "building")."""
    if noun in loose:
        return True
    if " " not in noun and any(n.endswith(" " + noun) for n in loose):
        return True
    return any(" " not in n and noun.endswith(" " + n) for n in own)


@dataclass
class Referent:
    """One thing in the tile: one or more objects of one tag (see the module docstring)."""

    index: int
    tag: str
    phrase: str
    plural: str
    mass: bool
    category: str
    kind: str  # polygon | line | point
    members: tuple[int, ...]  # indices into meta["osm"]["objects"]
    ids: tuple[str | None, ...]  # OSM ids of the members (None where the source has none)
    geom: BaseGeometry
    box: tuple[float, float, float, float]  # pixels, clipped to the tile
    box_crs: tuple[float, float, float, float] | None
    names: frozenset[str]  # strict: what it surely is (see tag_names)
    loose: frozenset[str]  # what a listener might call it
    subject: bool
    touches_edge: bool = False

    own: frozenset[str] = frozenset()  # its phrase and synonyms (no generic noun)
    generic: bool = False  # its tag's value says nothing of its kind (building=yes): any X of its category
    cells: dict[str, float] = field(default_factory=dict)  # share of it in each 3x3 cell
    halves: dict[str, float] = field(default_factory=dict)  # share of it in each half
    touch: dict[str, bool] = field(default_factory=dict)  # any part within 2 px of a region
    _size: float | None = None

    def is_a(self, noun: str) -> bool:
        return noun in self.names

    def could_be(self, noun: str, category: str | None = None) -> bool:
        """Whether a listener could mean it by ``noun`` (of ``category``, when known): see
        :func:`could_be`; a feature whose tag says nothing of its kind (``building=yes``)
        could be any noun of its category ("house", "temple")."""
        if self.generic and category is not None and category == self.category:
            return True
        return could_be(noun, self.own, self.loose)

    @property
    def size(self) -> float:
        """Area (polygons), length (lines), or number of points, in pixels."""
        if self._size is None:
            self._size = measure(self.geom, self.kind)
        return self._size

    def share(self, region: str) -> float:
        """Share of it in a region: a 3x3 cell, a half, or a row / column third."""
        if region in self.halves:
            return self.halves[region]
        if region in _THIRDS:
            return sum(self.cells[c] for c in _THIRDS[region])
        return self.cells[region]


@dataclass
class Tile:
    """What the task stages need about one tile."""

    key: str
    width: float
    height: float
    crs: str
    geographic: bool
    transform: tuple[float, ...] | None
    coverage: float
    referents: list[Referent]
    tags: dict[str, dict[str, Any]]  # osm.tags by "key=value"
    min_pixels: dict[str, Any] = field(default_factory=dict)
    tag_loose: dict[str, tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)  # (own, loose)
    _could: dict[tuple[str, str | None], list[Referent]] = field(default_factory=dict, repr=False)

    def could(self, noun: str, category: str | None = None) -> list[Referent]:
        """Every referent a listener could mean by ``noun`` (see :meth:`Referent.could_be`),
        or that surely is one."""
        key = (noun, category)
        hit = self._could.get(key)
        if hit is None:
            hit = self._could[key] = [r for r in self.referents
                                      if r.could_be(noun, category) or r.is_a(noun)]
        return hit
    sources: tuple[str, ...] = ()  # the OSM sources covering part of the tile

    def mentions(self, noun: str, category: str | None = None) -> bool:
        """Some feature of the tile, visible or not, could be called ``noun``, or (with
        ``category``) is of the same category: a building of any kind may be a house."""
        if category is not None and any(str(t.get("category")) == category for t in self.tags.values()):
            return True
        return any(could_be(noun, own, loose) for own, loose in self.tag_loose.values()) or any(
            r.could_be(noun, category) for r in self.referents)

    @property
    def full(self) -> bool:
        """The whole tile lies inside the OSM sources' coverage: absence may be stated."""
        return self.coverage >= FULL_COVERAGE

    def subjects(self) -> list[Referent]:
        return [r for r in self.referents if r.subject]

    def of_tag(self, tag: str) -> list[Referent]:
        return [r for r in self.referents if r.tag == tag]

    def region(self, name: str) -> tuple[float, float, float, float]:
        return region_box(name, self.width, self.height)

    def box_crs(self, box: Sequence[float]) -> list[float] | None:
        """A pixel box in the raster CRS (the corners through the tile's affine)."""
        if self.transform is None:
            return None
        a, b, c, d, e, f = self.transform[:6]
        xs, ys = (box[0], box[2], box[2], box[0]), (box[1], box[1], box[3], box[3])
        cx = [a * x + b * y + c for x, y in zip(xs, ys)]
        cy = [d * x + e * y + f for x, y in zip(xs, ys)]
        digits = 8 if self.geographic else 3
        return [round(min(cx), digits), round(min(cy), digits), round(max(cx), digits),
                round(max(cy), digits)]


@functools.lru_cache(maxsize=64)
def is_geographic(crs: str) -> bool:
    """Whether a CRS (EPSG code or WKT) has degrees for units (boxes keep 8 decimals)."""
    if not crs:
        return False
    try:
        return bool(pyproj.CRS.from_user_input(crs).is_geographic)
    except pyproj.exceptions.CRSError:
        return False


NOT_ROADS = frozenset({"path", "footway", "cycleway", "bridleway", "steps", "pedestrian",
                       "corridor", "via_ferrata", "track", "proposed", "construction"})


def own_names(tag: str, phrase: str, rules: CaptionRules) -> set[str]:
    return {phrase.lower()} | {s.lower() for s, _ in rules.synonyms_of(tag)}


def tag_names(tag: str, phrase: str, category: str, rules: CaptionRules) -> tuple[frozenset[str], frozenset[str]]:
    """What a feature of ``tag`` may be called: ``strict`` names (its phrase, the caption rules'
    synonyms, its category's generic noun where that surely applies: "road" for a residential
    road, not for a footpath) and ``loose`` ones (also every generic noun a listener might use).
    A statement that something *is* a noun uses the strict names; a check that nothing else
    *could be* meant by it uses the loose ones."""
    names = own_names(tag, phrase, rules)
    key, _, value = tag.partition("=")
    loose = set(names)
    hyper = HYPERNYMS.get(category)
    if hyper and (category != "road" or key == "highway"):
        loose.add(hyper)
        if category != "road" or value not in NOT_ROADS:
            names.add(hyper)
    if key == "building":
        loose.add("building")
        names.add("building")
    return frozenset(names), frozenset(loose)


def _groups(objs: list[tuple[int, dict[str, Any], BaseGeometry]], separate: bool,
            bounds: list[tuple[float, float, float, float]]) -> list[list[int]]:
    """Union-find over objects of one tag: touching ones with compatible name/ref are one."""
    n = len(objs)
    if separate or n < 2:
        return [[i] for i in range(n)]
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a in range(n):
        ba = bounds[a]
        for b in range(a + 1, n):
            bb = bounds[b]
            if ba[0] > bb[2] or bb[0] > ba[2] or ba[1] > bb[3] or bb[1] > ba[3]:
                continue
            if not objs[a][2].intersects(objs[b][2]):
                continue
            aa, ab = (objs[a][1].get("attrs") or {}), (objs[b][1].get("attrs") or {})
            if any(aa.get(k) and ab.get(k) and aa.get(k) != ab.get(k) for k in ("name", "ref")):
                continue
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    out: dict[int, list[int]] = {}
    for i in range(n):
        out.setdefault(find(i), []).append(i)
    return list(out.values())


def _union_box(boxes: list[Sequence[float]]) -> tuple[float, float, float, float]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
            max(b[3] for b in boxes))


def _geometries(objects: list[Mapping[str, Any]]) -> list[BaseGeometry | None]:
    """Every object's pixel geometry, built in vectorised passes (rings, lines, points)."""
    kinds = {"polygon": [], "line": [], "point": []}  # type: dict[str, list[tuple[int, list[Any]]]]
    for i, obj in enumerate(objects):
        kind = obj.get("geom") if isinstance(obj, Mapping) else None
        if kind in kinds:
            for part in obj.get("pixels") or []:
                kinds[kind].append((i, part))
    parts: dict[int, list[BaseGeometry]] = {}
    for kind, entries in kinds.items():
        if not entries:
            continue
        coords: list[Any] = []
        index: list[int] = []
        owner: list[int] = []
        for i, part in entries:
            try:
                if kind == "point":
                    pts = part if part and isinstance(part[0], (list, tuple)) else [part]
                    for xy in pts:
                        coords.append((float(xy[0]), float(xy[1])))
                        index.append(len(owner))
                        owner.append(i)
                    continue
                need = 4 if kind == "polygon" else 2
                if len(part) < need:
                    continue
                xy = [(float(v[0]), float(v[1])) for v in part]
                if kind == "polygon" and xy[0] != xy[-1]:
                    xy.append(xy[0])
            except (TypeError, ValueError, IndexError):
                continue
            coords.extend(xy)
            index.extend([len(owner)] * len(xy))
            owner.append(i)
        if not owner:
            continue
        arr = np.asarray(coords, dtype=float)
        idx = np.asarray(index)
        if kind == "polygon":
            geoms = shapely.polygons(shapely.linearrings(arr, indices=idx))
            bad = ~shapely.is_valid(geoms)
            if bad.any():
                geoms[bad] = shapely.make_valid(geoms[bad])
        elif kind == "line":
            geoms = shapely.linestrings(arr, indices=idx)
        else:
            geoms = shapely.points(arr)
        for i, g in zip(owner, geoms.tolist()):
            if g is not None and not g.is_empty:
                parts.setdefault(i, []).append(g)
    out: list[BaseGeometry | None] = [None] * len(objects)
    for i, ps in parts.items():
        kind = objects[i]["geom"]
        if len(ps) == 1:
            out[i] = ps[0]
        elif kind == "polygon":
            out[i] = shapely.union_all(ps)
        elif kind == "line":
            out[i] = MultiLineString([g for p in ps for g in getattr(p, "geoms", [p])])
        else:
            out[i] = MultiPoint(ps)
    return out


CELL_NAMES = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom",
              "bottom right")
_THIRDS = {"left": ("top left", "left", "bottom left"), "right": ("top right", "right", "bottom right"),
           "top": ("top left", "top", "top right"), "bottom": ("bottom left", "bottom", "bottom right")}
POSITION_REGIONS = ("top left", "top right", "bottom left", "bottom right", "left", "right", "top",
                    "bottom", "centre")
TOUCH_TOL = 2.0  # px: a referent with any part this close to a region touches it


def cell_box(cell: str, width: float, height: float) -> tuple[float, float, float, float]:
    k = CELL_NAMES.index(cell)
    r, c = divmod(k, 3)
    return (c * width / 3, r * height / 3, (c + 1) * width / 3, (r + 1) * height / 3)


def _region_stats(tiles: list[Tile]) -> None:
    """Fill every referent's ``cells`` (share of it in each 3×3 cell), ``halves`` (share in each
    half) and ``touch`` (any part within TOUCH_TOL px of each position region and half), with
    one vectorised clip per region over all referents of tiles of one size."""
    by_size: dict[tuple[float, float], list[Referent]] = {}
    for t in tiles:
        by_size.setdefault((t.width, t.height), []).extend(t.referents)
    for (w, h), refs in by_size.items():
        if not refs:
            continue
        geoms = np.array([r.geom for r in refs], dtype=object)
        kind = np.array([r.kind for r in refs])
        size = np.array([r.size for r in refs])
        safe = np.where(size > 0, size, 1.0)

        def share(box: tuple[float, float, float, float]) -> np.ndarray:
            part = shapely.clip_by_rect(geoms, *box)
            m = np.where(kind == "polygon", shapely.area(part),
                         np.where(kind == "line", shapely.length(part),
                                  shapely.get_num_geometries(part) * ~shapely.is_empty(part)))
            return np.where(size > 0, m / safe, 0.0)

        cells = {c: share(cell_box(c, w, h)) for c in CELL_NAMES}
        halves = {name: share(region_box(name, w, h)) for name in HALVES}
        touch = {}
        for name in POSITION_REGIONS + HALVES:
            x0, y0, x1, y1 = region_box(name, w, h)
            touch[name] = shapely.intersects(geoms, shapely.box(x0 - TOUCH_TOL, y0 - TOUCH_TOL,
                                                                x1 + TOUCH_TOL, y1 + TOUCH_TOL))
        for i, r in enumerate(refs):
            r.cells = {c: float(v[i]) for c, v in cells.items()}
            r.halves = {n: float(v[i]) for n, v in halves.items()}
            r.touch = {n: bool(v[i]) for n, v in touch.items()}


_CACHE: "OrderedDict[int, tuple[Any, Tile]]" = OrderedDict()
CACHE_SIZE = 2048  # tiles kept for the next task stage of the same partition


def build_tile(meta: Mapping[str, Any], key: str, stage: str,
               rules: CaptionRules | None = None) -> Tile:
    """The tile's referents (raises :class:`MissingObjectsError` without the join's objects)."""
    return build_tiles([(meta, key)], stage, rules)[0]


def build_tiles(items: Sequence[tuple[Mapping[str, Any], str]], stage: str,
                rules: CaptionRules | None = None) -> list[Tile]:
    """:func:`build_tile` for many samples, with the geometry and region passes vectorised.
    A tile built for one task stage is reused by the next (same objects list, same process)."""
    rules = rules or CaptionRules.default()
    out: list[Tile | None] = []
    todo: list[int] = []
    for n, (meta, key) in enumerate(items):
        objects = require_objects(meta, key, stage)
        hit = _CACHE.get(id(objects))
        if hit is not None and hit[0] is objects and hit[1].key == key:
            out.append(hit[1])
        else:
            out.append(None)
            todo.append(n)
    if todo:
        flat: list[Mapping[str, Any]] = []
        spans = []
        for n in todo:
            objs = items[n][0]["osm"]["objects"]
            spans.append((len(flat), len(objs)))
            flat.extend(objs)
        geoms = _geometries(flat)
        built = [_tile(items[n][0], items[n][1], geoms[a:a + k], rules) for n, (a, k) in zip(todo, spans)]
        _region_stats(built)
        for n, tile in zip(todo, built):
            out[n] = tile
            objects = items[n][0]["osm"]["objects"]
            _CACHE[id(objects)] = (objects, tile)
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
    return out  # type: ignore[return-value]


def _tile(meta: Mapping[str, Any], key: str, geoms: list[BaseGeometry | None],
          rules: CaptionRules) -> Tile:
    objects = meta["osm"]["objects"]
    osm = meta["osm"]
    geo = meta.get("geo") or {}
    size = geo.get("size") or [0, 0]
    width, height = float(size[0]), float(size[1])
    crs = str(geo.get("crs", ""))
    transform = tuple(float(v) for v in geo["transform"][:6]) if geo.get("transform") else None
    tags = {str(t.get("tag") or f"{t.get('key')}={t.get('value')}"): t
            for t in osm.get("tags") or [] if isinstance(t, Mapping)}
    coverage = float((osm.get("coverage") or {}).get("fraction", 0.0) or 0.0)
    # objects by (tag, hidden): hidden objects never merge with visible ones
    by_tag: dict[tuple[str, bool], list[tuple[int, Mapping[str, Any], BaseGeometry]]] = {}
    for i, (obj, geom) in enumerate(zip(objects, geoms)):
        if geom is None or not isinstance(obj, Mapping):
            continue
        tag = str(obj.get("tag") or "")
        attrs = obj.get("attrs")
        hidden = bool(attrs) and rules.hides(attrs)
        by_tag.setdefault((tag, hidden), []).append((i, obj, geom))
    referents: list[Referent] = []
    for (tag, hidden), objs in by_tag.items():
        first = objs[0][1]
        stats = tags.get(tag, {})
        phrase = str(first.get("phrase") or stats.get("phrase") or tag)
        category = str(first.get("category") or stats.get("category") or "other")
        names = tag_names(tag, phrase, category, rules)[0]
        own, loose = _tag_name_sets(tag, phrase, category, rules)
        subject = not hidden and rules.tag_is_subject(tag)
        kind = str(first.get("geom"))
        plural = str(first.get("plural") or stats.get("plural") or phrase + "s")
        mass = bool(stats.get("mass", first.get("mass", False)))
        separate = tag.split("=", 1)[0] in SEPARATE_KEYS
        bounds = [tuple(o.get("box") or g.bounds) for _, o, g in objs]
        for group in _groups(objs, separate, bounds):  # type: ignore[arg-type]
            members = [objs[g] for g in group]
            if len(members) == 1:
                geom = members[0][2]
            else:
                geom = shapely.union_all([m[2] for m in members])
                if kind == "line" and geom.geom_type == "MultiLineString":
                    geom = shapely.line_merge(geom)
            if len(members) == 1:
                box = members[0][1].get("box") or geom.bounds
                crs_box = members[0][1].get("box_crs")
            else:
                boxes = [m[1]["box"] for m in members if isinstance(m[1].get("box"), (list, tuple))]
                box = _union_box(boxes) if len(boxes) == len(members) else geom.bounds
                crs_boxes = [m[1]["box_crs"] for m in members
                             if isinstance(m[1].get("box_crs"), (list, tuple))]
                crs_box = _union_box(crs_boxes) if len(crs_boxes) == len(members) else None
            referents.append(Referent(
                index=len(referents), tag=tag, phrase=phrase, plural=plural, mass=mass,
                category=category, kind=kind, members=tuple(m[0] for m in members),
                ids=tuple(m[1].get("id") for m in members), geom=geom,
                box=tuple(round(float(v), 1) for v in box),  # type: ignore[arg-type]
                box_crs=tuple(crs_box) if crs_box else None,
                names=names, loose=loose, own=own, subject=subject,
                touches_edge=any(bool(m[1].get("touches_edge")) for m in members),
                generic=tag.partition("=")[2] in GENERIC_VALUES))
    # largest first, as the join orders objects
    referents.sort(key=lambda r: (-(r.size if r.kind == "polygon" else 0.0),
                                  -(r.size if r.kind == "line" else 0.0), r.members[0]))
    for i, r in enumerate(referents):
        r.index = i
    tag_loose = {t: _tag_name_sets(t, str(st.get("phrase") or t), str(st.get("category") or "other"), rules)
                 for t, st in tags.items()}
    return Tile(key=key, width=width, height=height, crs=crs, geographic=is_geographic(crs),
                transform=transform, coverage=coverage, referents=referents, tags=tags,
                min_pixels=dict(osm.get("min_pixels") or {}), tag_loose=tag_loose,
                sources=tuple(str(x) for x in (osm.get("coverage") or {}).get("sources") or []))


_NAMES: dict[tuple[int, str, str, str], tuple[CaptionRules, frozenset[str], frozenset[str]]] = {}


def _tag_name_sets(tag: str, phrase: str, category: str, rules: CaptionRules) -> tuple[frozenset[str], frozenset[str]]:
    """(own names, loose names) of a tag, memoised per rules object."""
    key = (id(rules), tag, phrase, category)
    hit = _NAMES.get(key)
    if hit is None or hit[0] is not rules:
        if len(_NAMES) > 8192:
            _NAMES.clear()
        hit = _NAMES[key] = (rules, frozenset(own_names(tag, phrase, rules)),
                             tag_names(tag, phrase, category, rules)[1])
    return hit[1], hit[2]


def tag_has_hidden(tile: Tile, tag: str) -> bool:
    return any(r.tag == tag and not r.subject for r in tile.referents)


def same_tag_counts(tile: Tile, tag: str) -> int | None:
    """Visible referents of ``tag``, or None when the join's own object count disagrees (an
    object joined only through a piece too small to see): then no number is stated."""
    n = sum(1 for r in tile.referents if r.tag == tag)
    stats = tile.tags.get(tag)
    if stats is not None and "visible_count_objects" in stats:
        if int(stats["visible_count_objects"]) != n:
            return None
    return n


def crossing(a: Referent, b: Referent) -> bool:
    """``a`` (a line) passes across ``b`` (a line or an area): for a line, their interiors
    cross (not a line ending on the other: a T is no crossing); for an area, ``a`` leaves it
    on more sides than it arrives with (it goes in and comes out again)."""
    if a.kind != "line" or b.kind not in ("line", "polygon"):
        return False
    ab, bb = a.box, b.box
    if ab[0] > bb[2] or bb[0] > ab[2] or ab[1] > bb[3] or bb[1] > ab[3]:
        return False
    if b.kind == "line":
        return bool(shapely.crosses(a.geom, b.geom))
    if not a.geom.intersects(b.geom):
        return False
    rest = a.geom.difference(b.geom)
    if rest.is_empty:
        return False
    return len(getattr(rest, "geoms", [rest])) > len(getattr(a.geom, "geoms", [a.geom]))


def distance(a: Referent, b: Referent) -> float:
    return float(a.geom.distance(b.geom))


def round_share(x: float) -> float:
    return round(x, 4) if math.isfinite(x) else 0.0
