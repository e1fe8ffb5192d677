"""The ``grounding`` stage: referring expressions with boxes, unambiguous by construction.

    stages:
      - type: grounding
        kinds: [class, superlative, position, relation]
        max_expressions: 8       # per tile
        max_per_object: 2        # expressions per referent
        polygons: false          # also store each referent's pixel geometry
        superlative_margin: 1.25 # "the largest X": at least this many times the next X
        near_px: 12              # "next to": at most this many pixels apart (ambiguous up to 2x)
        position_share: 0.6      # "in the top-left corner": this share of it lies there
        seed: 0

An expression names a referent (:mod:`rsdata.tasks.objects`: one object, or touching ways of one
road) with a noun it surely is (its phrase, or "building" / "road" / "water"), and at most one
distinguishing part:

* ``class``: "the river" (the only thing on the tile that could be called a river);
* ``superlative``: "the largest building", "the smallest pond", "the longest dirt track";
* ``position``: "the building in the top-left corner", "the pond on the left side", "the road
  at the top of the image", "the house in the centre of the image";
* ``relation``: "the road crossing the river", "the pond next to the minor road" (the anchor is
  itself unambiguous: "the minor road" means one referent).

**Only inside the coverage.** "The building" says there is no other building; a tile not
wholly inside the OSM sources' coverage (``osm.coverage.fraction`` < 0.999) gets no expressions.

**Unambiguous by construction.** :func:`matches` evaluates an expression over *every* referent
of the tile, over-inclusively (every referent a listener could call the noun, hidden ones too;
a superlative keeps every candidate within ``superlative_margin`` of the extreme; a position
keeps every candidate with any part in the region, 2 px wider; a relation every candidate within
1 px of the anchor, or within ``2 × near_px`` for "next to"). An expression is kept only when
that set is exactly its referent, and its anchor's own expression passes the same test.

Each item has the expression, its kind and template id, the referent's tag, phrase, category,
object indices and OSM ids, its box in the stored image's pixels (``[x0, y0, x1, y1]``, x right,
y down, clipped to the tile) and in the raster CRS (``box_crs``), its pixel geometry when
``polygons`` is on (in ``boxes.json`` only: in the json the referent's ``objects`` point to
``osm.objects``, which hold it), and the anchor of a relation. Items go into the json
(``grounding``) and the ``boxes.json`` member.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import shapely

from rsdata.captions.rules import CaptionRules
from rsdata.errors import RecipeError
from rsdata.sample import Sample
from rsdata.settings import from_config
from rsdata.stage import BatchStage
from rsdata.stats import StageStats
from rsdata.tasks.objects import POSITION_REGIONS, Referent, Tile, build_tiles, crossing

VERSION = "v1"
KINDS = ("class", "superlative", "position", "relation")
GENERIC = ("building", "road", "water")
BATCH = 256  # samples whose geometry is prepared together
TOUCH_TOL = 1.0  # px: a candidate this close to an anchor may be "crossing" it
POSITIONS = POSITION_REGIONS
TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "class": (("ground.v1.class", "the {n}"),),
    "largest": (("ground.v1.largest", "the largest {n}"), ("ground.v1.biggest", "the biggest {n}")),
    "smallest": (("ground.v1.smallest", "the smallest {n}"),),
    "longest": (("ground.v1.longest", "the longest {n}"),),
    "corner": (("ground.v1.corner", "the {n} in the {c} corner"), ("ground.v1.corner_at", "the {n} at the {r}")),
    "side": (("ground.v1.side", "the {n} on the {r} side"), ("ground.v1.side_of", "the {n} on the {r} side of the image")),
    "edge": (("ground.v1.edge", "the {n} at the {r} of the image"), ("ground.v1.edge_along", "the {n} along the {r}")),
    "centre": (("ground.v1.centre", "the {n} in the centre of the image"), ("ground.v1.middle", "the {n} in the middle")),
    "crossing": (("ground.v1.crossing", "the {n} crossing the {a}"), ("ground.v1.across", "the {n} that crosses the {a}")),
    "near": (("ground.v1.next_to", "the {n} next to the {a}"), ("ground.v1.beside", "the {n} beside the {a}")),
}


@dataclass(frozen=True)
class Expr:
    """A referring expression's meaning: what :func:`matches` evaluates."""

    kind: str  # class | superlative | position | relation
    noun: str
    word: str = ""  # superlative: largest|smallest|longest; position: region; relation: crossing|near
    anchor: int | None = None  # relation: the anchor referent's index
    anchor_noun: str = ""
    category: str | None = None  # the noun's category: a generic feature of it could be meant
    anchor_category: str | None = None


@dataclass(frozen=True)
class Params:
    superlative_margin: float
    near_px: float


def _value(r: Referent, word: str) -> float | None:
    if word in ("largest", "smallest"):
        return r.size if r.kind == "polygon" else None
    return r.size if r.kind == "line" else None


def matches(expr: Expr, tile: Tile, params: Params) -> list[int]:
    """Indices of every referent of the tile the expression could mean (over-inclusive)."""
    cands = tile.could(expr.noun, expr.category)
    if expr.kind == "class":
        return [r.index for r in cands]
    if expr.kind == "superlative":
        vals = [_value(r, expr.word) for r in cands]
        if any(v is None for v in vals) or not vals:
            return [r.index for r in cands]  # something that cannot be compared: all of them
        m = params.superlative_margin
        if expr.word == "smallest":
            low = min(vals)  # type: ignore[type-var]
            return [r.index for r, v in zip(cands, vals) if v <= low * m]  # type: ignore[operator]
        top = max(vals)  # type: ignore[type-var]
        return [r.index for r, v in zip(cands, vals) if v * m >= top]  # type: ignore[operator]
    if expr.kind == "position":
        return [r.index for r in cands if r.touch[expr.word]]  # any part within 2 px of it
    if expr.kind == "relation" and expr.anchor is not None:
        anchor = tile.referents[expr.anchor]
        reach = TOUCH_TOL if expr.word == "crossing" else 2 * params.near_px
        others = [r for r in cands if r.index != anchor.index]
        if not others:
            return []
        dist = shapely.distance(np.array([r.geom for r in others], dtype=object), anchor.geom)
        return [r.index for r, d in zip(others, dist.tolist()) if d <= reach]
    raise ValueError(f"unknown expression kind {expr.kind!r}")


def unambiguous(expr: Expr, target: Referent, tile: Tile, params: Params) -> bool:
    """The expression means exactly ``target``, and a relation's anchor is itself unambiguous."""
    if not target.subject or not target.is_a(expr.noun):
        return False
    if matches(expr, tile, params) != [target.index]:
        return False
    if expr.kind == "relation":
        anchor = tile.referents[expr.anchor]  # type: ignore[index]
        if not anchor.subject or not anchor.is_a(expr.anchor_noun):
            return False
        return matches(Expr("class", expr.anchor_noun, category=expr.anchor_category), tile,
                       params) == [anchor.index]
    return True


def _nouns(r: Referent) -> list[tuple[str, str]]:
    """(noun, its category): the referent's phrase, and the generic nouns it surely is."""
    return [(r.phrase, r.category)] + [(g, g) for g in GENERIC if g != r.phrase and r.is_a(g)]


def _text(expr: Expr, tile: Tile, rng: random.Random) -> tuple[str, str]:
    n = expr.noun
    if expr.kind == "class":
        key, slots = "class", {"n": n}
    elif expr.kind == "superlative":
        key, slots = expr.word, {"n": n}
    elif expr.kind == "position":
        w = expr.word
        if w in ("top left", "top right", "bottom left", "bottom right"):
            key, slots = "corner", {"n": n, "c": w.replace(" ", "-"), "r": w}
        elif w in ("left", "right"):
            key, slots = "side", {"n": n, "r": w}
        elif w in ("top", "bottom"):
            key, slots = "edge", {"n": n, "r": w}
        else:
            key, slots = "centre", {"n": n}
    else:
        key = "crossing" if expr.word == "crossing" else "near"
        slots = {"n": n, "a": expr.anchor_noun}
    tid, text = rng.choice(TEMPLATES[key])
    return tid, text.format(**slots)


def proposals(target: Referent, tile: Tile, settings: "GroundingSettings",
              anchors: list[tuple[Referent, str, str]]) -> list[Expr]:
    """Expressions that might single out ``target`` (checked by :func:`unambiguous` after)."""
    out: list[Expr] = []
    for noun, cat in _nouns(target):
        if "class" in settings.kinds:
            out.append(Expr("class", noun, category=cat))
        rivals = sum(1 for r in tile.could(noun, cat) if r.kind == target.kind)
        if "superlative" in settings.kinds and not target.mass and rivals >= 2:
            if target.kind == "polygon":
                out += [Expr("superlative", noun, "largest", category=cat),
                        Expr("superlative", noun, "smallest", category=cat)]
            elif target.kind == "line":
                out.append(Expr("superlative", noun, "longest", category=cat))
        if "position" in settings.kinds:
            for region in POSITIONS:
                if target.share(region) >= settings.position_share:
                    out.append(Expr("position", noun, region, category=cat))
        if "relation" in settings.kinds:
            for anchor, anchor_noun, anchor_cat in anchors:
                if anchor.index == target.index or anchor.tag == target.tag or anchor_noun == noun:
                    continue
                if crossing(target, anchor):
                    out.append(Expr("relation", noun, "crossing", anchor.index, anchor_noun, cat, anchor_cat))
                elif target.geom.distance(anchor.geom) <= settings.near_px:
                    out.append(Expr("relation", noun, "near", anchor.index, anchor_noun, cat, anchor_cat))
    return out


def _anchors(tile: Tile, params: Params) -> list[tuple[Referent, str, str]]:
    """Referents an unambiguous class expression names: what relations may point to."""
    out = []
    for r in tile.subjects():
        for noun, cat in _nouns(r):
            if matches(Expr("class", noun, category=cat), tile, params) == [r.index]:
                out.append((r, noun, cat))
                break
    return out


def _pixels(tile: Tile, r: Referent, objects: list[dict[str, Any]]) -> list[Any]:
    return [part for m in r.members for part in (objects[m].get("pixels") or [])]


def item_json(i: int, expr: Expr, tid: str, text: str, r: Referent, tile: Tile,
              objects: list[dict[str, Any]], polygons: bool) -> dict[str, Any]:
    box = [round(float(v), 1) for v in r.box]
    box_crs = list(r.box_crs) if r.box_crs is not None else tile.box_crs(box)
    ref: dict[str, Any] = {"tag": r.tag, "phrase": r.phrase, "category": r.category, "geom": r.kind,
                           "objects": list(r.members), "object_ids": list(r.ids), "box": box,
                           "box_crs": box_crs, "touches_edge": r.touches_edge}
    if polygons:
        ref["pixels"] = _pixels(tile, r, objects)
    item: dict[str, Any] = {"id": i, "expression": text, "kind": expr.kind, "template": tid,
                            "noun": expr.noun, "noun_category": expr.category, "referent": ref}
    if expr.word:
        item["modifier"] = expr.word  # largest | smallest | longest | a region | crossing | near
    if expr.kind == "relation" and expr.anchor is not None:
        a = tile.referents[expr.anchor]
        item["anchor"] = {"tag": a.tag, "noun": expr.anchor_noun, "category": expr.anchor_category,
                          "relation": expr.word,
                          "objects": list(a.members), "object_ids": list(a.ids),
                          "box": [round(float(v), 1) for v in a.box]}
    return item


@dataclass(frozen=True)
class GroundingSettings:
    """The ``grounding`` stage's options (``$defs.grounding``)."""

    kinds: list[str]
    max_expressions: int
    max_per_object: int
    polygons: bool
    superlative_margin: float
    near_px: float
    position_share: float
    seed: int


def expressions(tile: Tile, settings: GroundingSettings, rng: random.Random
                ) -> list[tuple[Expr, Referent]]:
    """Unambiguous expressions for the tile's subjects, selected for variety: kinds in turn
    (relation, superlative, position, class), at most ``max_per_object`` per referent."""
    if not tile.full:
        return []  # "the X" says there is no other X: only where the sources cover the tile
    params = Params(settings.superlative_margin, settings.near_px)
    anchors = _anchors(tile, params) if "relation" in settings.kinds else []
    by_kind: dict[str, list[tuple[Expr, Referent]]] = {k: [] for k in KINDS}
    for target in tile.subjects():
        for expr in proposals(target, tile, settings, anchors):
            if unambiguous(expr, target, tile, params):
                by_kind[expr.kind].append((expr, target))
    for lst in by_kind.values():
        rng.shuffle(lst)
    per_ref: Counter[int] = Counter()
    out: list[tuple[Expr, Referent]] = []
    order = [k for k in ("relation", "superlative", "position", "class") if k in settings.kinds]
    while len(out) < settings.max_expressions and any(by_kind[k] for k in order):
        for k in order:
            while by_kind[k]:
                expr, target = by_kind[k].pop()
                if per_ref[target.index] >= settings.max_per_object:
                    continue
                per_ref[target.index] += 1
                out.append((expr, target))
                break
            if len(out) >= settings.max_expressions:
                break
    return out


class GroundingStage(BatchStage):
    """Adds ``meta["grounding"]`` and the ``boxes.json`` member (never drops a sample)."""

    name = "grounding"
    batch_size: ClassVar[int] = BATCH
    settings_class: ClassVar[type | None] = GroundingSettings
    needs_objects: ClassVar[bool] = True

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.settings = from_config(GroundingSettings, self.config, "grounding")
        bad = sorted(set(self.settings.kinds) - set(KINDS))
        if bad:
            raise RecipeError(f"grounding.kinds: unknown {bad}; known: {list(KINDS)}")
        self.init_lazy()

    def init_lazy(self) -> None:
        self._lazy_rules: CaptionRules | None = None

    def rules(self) -> CaptionRules:
        if self._lazy_rules is None:
            self._lazy_rules = CaptionRules.default()
        return self._lazy_rules

    def ground(self, sample: Sample, tile: Tile | None = None) -> dict[str, Any]:
        """The ``grounding`` member of one sample's json."""
        if tile is None:
            tile = build_tiles([(sample.meta, sample.key)], "grounding", self.rules())[0]
        rng = random.Random(f"grounding:{self.settings.seed}:{sample.key}")
        objects = sample.meta["osm"]["objects"]
        items = []
        for i, (expr, target) in enumerate(expressions(tile, self.settings, rng)):
            tid, text = _text(expr, tile, rng)
            items.append(item_json(i, expr, tid, text, target, tile, objects, self.settings.polygons))
        doc: dict[str, Any] = {"version": VERSION, "size": [int(tile.width), int(tile.height)],
                               "crs": tile.crs, "items": items}
        if not tile.full:
            doc["note"] = "tile not wholly inside the OSM coverage: no expressions"
        return doc

    def process_batch(self, batch: list[Sample], stats: StageStats) -> Iterator[Sample]:
        tiles = build_tiles([(s.meta, s.key) for s in batch], "grounding", self.rules())
        for sample, tile in zip(batch, tiles):
            doc = self.ground(sample, tile)
            # the pixel geometry (polygons: true) goes into boxes.json only: in the json the
            # referent's objects (osm.objects) hold it already
            sample.extra["boxes.json"] = json.dumps({"key": sample.key, **doc}, ensure_ascii=False,
                                                    sort_keys=True).encode("utf-8")
            if self.settings.polygons:
                doc = {**doc, "items": [{**it, "referent": {k: v for k, v in it["referent"].items()
                                                             if k != "pixels"}} for it in doc["items"]]}
            sample.meta["grounding"] = doc
            for item in doc["items"]:
                stats.extra[f"kind:{item['kind']}"] += 1
            stats.extra["tiles_with_expression" if doc["items"] else "tiles_without_expression"] += 1
            stats.n_out += 1
            yield sample
