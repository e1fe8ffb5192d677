"""Relation claims of LLM captions ("houses along a road", "a track crossing a stream", "X next
to Y", "buildings between a road and a river") checked against the tile's object geometry.

The statistics of a tag (count, share, cells) cannot show how two features lie to each other:
two features in the same grid cell may be 100 m apart. A relation is supported only when the
geometric relations of the template captions (:mod:`rsdata.captions.relations`, computed from
``osm.objects`` in image pixels) show it between a subject of each side:

- ``along`` (along, alongside): :func:`~rsdata.captions.relations.along` either way round, or one
  object next to a line ("a house along the road");
- ``next_to`` (next to, beside, adjacent to): :func:`~rsdata.captions.relations.next_to`, for a
  group at least half its objects;
- ``near`` (near, nearby, close to, by, among, amid, dotted with): at least half of the first
  side's objects within :data:`~rsdata.captions.relations.NEAR_M` of the second;
- ``crossing`` (crossing, crosses, crossed by, through, intersecting ...):
  :func:`~rsdata.captions.relations.crossing` of a line and a line or area ("crossed by":
  the other way round; "intersects" also accepts two lines that meet);
- ``between``: :func:`~rsdata.captions.relations.between` with the two features after it;
- ``surrounded_by``: :func:`~rsdata.captions.relations.surrounded_by`;
- ``within`` (within, inside, and "in"/"on" right before a feature): at least half of the first
  side's objects at least half inside the second's area (a line cannot hold anything);
- ``across`` ("a road running across farmland", "buildings spread across a road"): a line
  crossing the other feature, either way round.

Without objects nothing is supported: the claim is rejected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rsdata.captions import relations as R
from rsdata.captions.subjects import Limits, Scene, Subject, object_geometry, scene_of, strip_cache

Tag = dict[str, Any]

# relation words (token tuples, as the lexicon reads them) -> the kind of relation they claim
RELATION_KINDS: dict[tuple[str, ...], str] = {
    ("along",): "along",
    ("alongside",): "along",
    ("next", "to"): "next_to",
    ("beside",): "next_to",
    ("adjacent", "to"): "next_to",
    ("near",): "near",
    ("nearby",): "near",
    ("close", "to"): "near",
    ("by",): "near",
    ("among",): "near",
    ("amid",): "near",
    ("dotted", "with"): "dotted",
    ("crossing",): "crossing",
    ("crosses",): "crossing",
    ("cross",): "crossing",
    ("crossed", "by"): "crossed_by",
    ("through",): "crossing",
    ("running", "through"): "crossing",
    ("runs", "through"): "crossing",
    ("passing", "through"): "crossing",
    ("intersecting",): "intersects",
    ("intersects",): "intersects",
    ("between",): "between",
    ("surrounded", "by"): "surrounded_by",
    ("within",): "within",
    ("inside",): "within",
}
# prepositions that claim a relation only when a feature follows them ("a road on a
# residential road", "houses in farmland"; not "in the top left", "on the left")
CONTAINMENT_PREPOSITIONS = frozenset({"in", "on", "onto", "into"})
# every relation kind computed from geometry needs this many subjects named
NEEDS_THIRD = frozenset({"between"})


class LazyIndex:
    """A :class:`GeometryIndex` built on first use (most captions claim no relation)."""

    def __init__(self, tags: Sequence[Tag], geo: Mapping[str, Any] | None,
                 objects: Sequence[Mapping[str, Any]] | None) -> None:
        self._args = (tags, geo, objects)
        self._index: GeometryIndex | None = None

    def get(self) -> GeometryIndex | None:
        """None without objects (or without the tile's size): nothing can be checked."""
        tags, geo, objects = self._args
        if not objects or not geo:
            return None
        if self._index is None:
            self._index = GeometryIndex(tags, objects, geo)
        return self._index

    def close(self) -> None:
        if self._index is not None:
            self._index.close()


class GeometryIndex:
    """The tile's subjects with their objects, for relation checks (built once per caption)."""

    def __init__(self, tags: Sequence[Tag], objects: Sequence[Mapping[str, Any]], geo: Mapping[str, Any]):
        meta = {"key": "", "geo": dict(geo), "osm": {"tags": list(tags), "objects": list(objects)}}
        # every visible subject, however small: a claim about a stub is checked, not dropped
        self.scene: Scene = scene_of(meta, Limits(min_line_fraction=0.0, min_area_share=0.0,
                                                  max_features=10**6))
        self.by_tag: dict[str, Subject] = {s.tag: s for s in self.scene.subjects if s.objects}
        self._objects = [o for o in objects if isinstance(o, dict)]

    def close(self) -> None:
        strip_cache(self._objects)  # type: ignore[arg-type]

    def subjects(self, tags: Iterable[Tag]) -> list[Subject]:
        return [self.by_tag[t["tag"]] for t in tags if t.get("tag") in self.by_tag]

    def holds(self, kind: str, a_tags: Sequence[Tag], b_tags: Sequence[Tag],
              c_tags: Sequence[Tag] = ()) -> bool:
        """Whether ``a <kind> b`` (``between b and c``) holds for some subject of each side."""
        A, B, C = self.subjects(a_tags), self.subjects(b_tags), self.subjects(c_tags)
        sc = self.scene
        for a in A:
            for b in B:
                if a is b:
                    continue
                if kind == "between":
                    if any(c is not a and c is not b and R.between(a, b, c, sc) for c in C):
                        return True
                elif _holds(kind, a, b, sc):
                    return True
        return False


def _holds(kind: str, a: Subject, b: Subject, sc: Scene) -> bool:
    if kind == "along":
        return _along(a, b, sc) or _along(b, a, sc)
    if kind == "next_to":
        return _mostly(a, b, sc, touching_ok=False) or _along(a, b, sc) or _along(b, a, sc)
    if kind == "near":
        return _mostly(a, b, sc, touching_ok=True)
    if kind == "dotted":  # "farmland dotted with buildings": the buildings on or by the area
        return R.surrounded_by(b, a, sc) or _mostly(b, a, sc, touching_ok=True)
    if kind == "crossing":
        return _cross(a, b, sc) in ("crossing",)
    if kind == "crossed_by":
        return _cross(b, a, sc) in ("crossing",)
    if kind == "intersects":
        return _cross(a, b, sc) in ("crossing", "meets") or _cross(b, a, sc) in ("crossing", "meets")
    if kind == "surrounded_by":
        return R.surrounded_by(a, b, sc)
    if kind == "within":
        return _mostly_inside(a, b)
    if kind == "across":
        return _cross(a, b, sc) == "crossing" or _cross(b, a, sc) == "crossing"
    return False


def _mostly_inside(a: Subject, b: Subject) -> bool:
    if b.kind not in ("polygon", "landcover"):
        return False
    gb = b.geometry()
    geoms = [g for g in (object_geometry(o) for o in a.objects) if g is not None]
    if gb is None or gb.area <= 0 or not geoms:
        return False
    inside = 0
    for g in geoms:
        size = g.area if g.area > 0 else g.length
        part = g.intersection(gb)
        got = part.area if g.area > 0 else part.length
        if size > 0 and got >= 0.5 * size:
            inside += 1
    return inside >= 0.5 * len(geoms)


def _along(group: Subject, line: Subject, sc: Scene) -> bool:
    if line.kind != "line":
        return False
    if len(group.objects) == 1:  # "a house along the road": one object next to the line
        return _mostly(group, line, sc, touching_ok=True)
    return R.along(group, line, sc)


def _cross(a: Subject, b: Subject, sc: Scene) -> str | None:
    if a.kind != "line" or b.kind not in ("line", "polygon", "landcover"):
        return None
    return R.crossing(a, b, sc)


def _mostly(a: Subject, b: Subject, sc: Scene, touching_ok: bool) -> bool:
    """At least half of ``a``'s objects (at least one) lie within NEAR_M of ``b`` (and, unless
    ``touching_ok``, do not overlap it: "next to" is beside, not on)."""
    gb = b.geometry()
    geoms = [g for g in (object_geometry(o) for o in a.objects) if g is not None]
    if gb is None or not geoms:
        return False
    d = R.near_px(sc)
    near = 0
    for g in geoms:
        if g.distance(gb) > d:
            continue
        if not touching_ok and g.area > 0 and g.intersection(gb).area > 0.1 * g.area:
            continue
        near += 1
    return near >= 1 and near >= 0.5 * len(geoms)
