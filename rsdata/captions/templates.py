"""The ``template_captions`` stage: captions written from a tile's statistics, true of the picture.

A tile's *subjects* (:mod:`rsdata.captions.subjects`) are the visible, caption-worthy things it
holds, most salient first: no administrative or hidden tag (reserves, boundaries, places,
routes, addresses, tunnels: ``rsdata/data/caption_rules.yaml``), counts of objects rather than
OSM ways, lines only when long enough to matter, "across" only for lines that span the tile.
Template *families* then describe different aspects of them — what and how many
(``counts``), where (``positions``), how much area (``sizes``), the dominant cover
(``landcover``, also from ``meta.landcover`` when a ``landcover_join`` ran), where lines run
(``lengths``), the kind of place (``scene``), geometric relations computed from
``osm.objects`` (``relations``), visible attributes such as roof material (``attributes``), or
that nothing is mapped (``empty``). Each family varies its sentence structure and words
(synonyms from the caption rules, share and quantity words) among choices that are all true
for the tile; metre figures only with ``metres: true``.

Which families and variants a sample gets is decided by its key and the recipe's seed, so a
rerun writes the same captions; the first caption always names the most salient subject.
Every caption records its template id (``<family>.v2.<variant>``).

A caption says that nothing is mapped (the ``empty`` family) only where a source has looked:
when the tile lies fully inside the coverage ``osm_join`` records (``osm.coverage.fraction``).
Outside full coverage counts are lower bounds: no exact numbers, no share words with an upper
bound ("a small part"), no "scattered". A tile with nothing known (no ``osm`` at all, or no
visible tag outside full coverage) gets no caption and is dropped as ``uncaptioned``; one whose
visible tags are all left out (a nature reserve, a stub in a corner) as ``no_salient_feature``.
The subject ("An aerial image", "A satellite view", "An overhead image") follows
``platform``: never "aerial" for tiles of 5 m per pixel or coarser.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rsdata.captions import words as W
from rsdata.captions.attributes import AttributeShares, adjective_for, by_key, crop_for, tile_attributes
from rsdata.captions.relations import Relation, relations
from rsdata.captions.subjects import (
    CELL_RC,
    Limits,
    Scene,
    Subject,
    far_cells,
    scene_of,
    strip_cache,
)
from rsdata.captions.words import article, capitalize, join_words
from rsdata.sample import Caption, Sample
from rsdata.settings import from_config
from rsdata.stage import Stage
from rsdata.stats import StageStats

FAMILIES = ("counts", "positions", "sizes", "landcover", "lengths", "scene", "relations",
            "attributes", "empty")
TEMPLATE_VERSION = "v2"
# thirty subjects per platform (the same count everywhere, so the choice draws the same random
# numbers whatever the platform): (the subject, the noun "this ..." refers to)
SUBJECTS_BY_PLATFORM: dict[str, tuple[tuple[str, str], ...]] = {
    "aerial": (("An aerial image", "aerial image"), ("An aerial photo", "aerial photo"),
               ("An aerial photograph", "photograph"), ("An aerial view", "aerial view"),
               ("An overhead view", "overhead view"), ("A view from above", "view"),
               ("An aerial shot", "image"), ("An image from the air", "image"),
               ("An aerial picture", "picture"), ("An aerial snapshot", "snapshot"),
               ("An overhead photograph", "photograph"), ("An overhead image", "image"),
               ("An air photo", "photo"), ("A top-down aerial view", "view"),
               ("A vertical aerial photo", "photo"), ("An aerial frame", "frame"),
               ("An airborne image", "image"), ("A photo taken from above", "photo"),
               ("A nadir aerial photo", "photo"), ("An aerial capture", "image"),
               ("An aerial scene", "scene"), ("A bird's-eye view", "view"),
               ("An overhead aerial photo", "photo"), ("A vertical photograph", "photograph"),
               ("An overhead shot", "image"), ("A picture from above", "picture"),
               ("An airborne photo", "photo"), ("An overhead snapshot", "snapshot"),
               ("A vertical view", "view"), ("A nadir view", "view")),
    "satellite": (("A satellite image", "satellite image"), ("A satellite view", "satellite view"),
                  ("A satellite photo", "satellite photo"), ("A satellite scene", "satellite scene"),
                  ("A satellite picture", "picture"), ("A satellite shot", "image"),
                  ("A satellite snapshot", "snapshot"), ("A satellite photograph", "photograph"),
                  ("A satellite view from above", "view"), ("A satellite picture from above", "picture"),
                  ("A satellite photo from above", "photo"), ("A view from above", "view"),
                  ("A top-down satellite view", "view"), ("A satellite frame", "frame"),
                  ("An image from orbit", "image"), ("A satellite capture", "image"),
                  ("A spaceborne image", "image"), ("An orbital image", "image"),
                  ("An orbital photo", "photo"), ("An orbital view", "view"),
                  ("A spaceborne view", "view"), ("A spaceborne photo", "photo"),
                  ("An orbital snapshot", "snapshot"), ("An orbital picture", "picture"),
                  ("An orbital scene", "scene"), ("A picture from orbit", "picture"),
                  ("A spaceborne frame", "frame"), ("A spaceborne scene", "scene"),
                  ("An orbital shot", "image"), ("A spaceborne picture", "picture")),
    "overhead": (("An overhead image", "overhead image"), ("An overhead view", "overhead view"),
                 ("An overhead picture", "overhead picture"), ("A view from above", "view"),
                 ("An image taken from above", "image"), ("A bird's-eye view", "view"),
                 ("An overhead shot", "image"), ("An overhead photograph", "photograph"),
                 ("A picture taken from above", "picture"), ("A photo taken from above", "photo"),
                 ("An overhead snapshot", "snapshot"), ("A picture from above", "picture"),
                 ("A top-down view", "view"), ("A top-down image", "image"),
                 ("An overhead frame", "frame"), ("A vertical view", "view"),
                 ("A nadir view", "view"), ("An image looking down", "image"),
                 ("An overhead capture", "image"), ("A view looking down", "view"),
                 ("An overhead scene", "scene"), ("A vertical image", "image"),
                 ("A vertical picture", "picture"), ("A nadir image", "image"),
                 ("A nadir picture", "picture"), ("A bird's-eye picture", "picture"),
                 ("An image from above", "image"), ("A photo from above", "photo"),
                 ("A vertical photo", "photo"), ("A snapshot from above", "snapshot")),
}
SUBJECTS = tuple(s for s, _ in SUBJECTS_BY_PLATFORM["aerial"])
PLATFORMS = ("auto", "aerial", "satellite", "overhead")
_PLATFORM_ALIASES = {"drone": "aerial", "uav": "aerial", "airborne": "aerial", "airplane": "aerial",
                     "aircraft": "aerial", "spaceborne": "satellite"}
AERIAL_MAX_GSD_M = 5.0  # from this GSD on, a tile is never called an aerial image/photo
FULL_COVERAGE = 0.999  # osm.coverage.fraction from which a tile counts as fully covered
NUMBER_WORDS = W.NUMBER_WORDS
DENSE_BUILT = 0.35  # building share of the tile for "densely built-up"
BUILT_UP = 0.15  # ... for "built-up"
SCATTERED = (2, 12, 0.03)  # "scattered": this many buildings, covering less than this share
# how the picture was taken, not where anything is: varied so no one phrase is a constant fragment
FROM_ABOVE = ("seen from above", "viewed from above", "from overhead", "seen from overhead",
              "seen from directly above", "looking straight down")
POSITION_RE = r"\b(?:in|on|at|along|near) the (?:top|bottom|left|right|center|centre|middle)\b"

Tag = dict[str, Any]


@dataclass(frozen=True)
class TemplateCaptionsSettings:
    """The ``template_captions`` stage's options (``$defs.template_captions`` of the recipe schema)."""

    count: int
    seed: int
    max_features: int
    platform: str
    metres: bool
    min_line_fraction: float
    min_area_share: float
    visible_only: bool
    families: list[str] | None = None  # None: every family


# -- helpers the LLM facts share (stats-level wording of one tag) ---------------------------------
def share_words(share: float) -> str:
    if share >= 0.6:
        return "most of the image"
    if share >= 0.35:
        return "a large part of the image"
    if share >= 0.15:
        return "part of the image"
    return "a small part of the image"


def amount(tag: Tag) -> str:
    """How many of a tag a caption may state: exact for objects, vague for lines and areas."""
    if tag["mass"]:
        return str(tag["phrase"])
    n = tag.get("visible_objects", tag["visible_count"])
    if "count_objects" in tag and "visible_objects" not in tag:
        objects, ways = int(tag["count_objects"]), int(tag.get("count_ways", tag["count"]))
        n = tag["visible_count"] if objects == ways else objects if tag["visible_count"] == ways else None
    elif tag["geom_types"].get("line") and not tag["geom_types"].get("polygon"):
        # OSM splits one road into many ways: counting ways would be a lie
        return article(tag["phrase"]) if tag["visible_count"] == 1 else str(tag["plural"])
    if n is None:
        return str(tag["plural"])
    if n == 1:
        return article(tag["phrase"]) if tag["phrase"][:1] != tag["phrase"][:1].upper() else tag["phrase"]
    return f"{W.number_word(n)} {tag['plural']}"


def is_plural(tag: Tag) -> bool:
    """Whether verbs about ``tag`` agree in the plural ("buildings cover", "trees cover")."""
    if tag["mass"]:
        return bool(tag.get("plural_verb"))
    return int(tag.get("visible_objects", tag["visible_count"])) > 1


def where(tag: Tag, kind: str) -> str:
    pos = tag["position"]
    if pos == "across":
        return "running across the image" if kind == "line" else "spread across the image"
    return "in the center" if pos == "center" else f"on the {pos}" if pos in ("left", "right") else f"in the {pos}"


def tag_kind(tag: Tag) -> str:
    gt = tag["geom_types"]
    return "polygon" if gt.get("polygon") else "line" if gt.get("line") else "point"


def round_m(value: float) -> int:
    return int(round(value, -1)) if value >= 100 else int(round(value))


# -- the caption context --------------------------------------------------------------------------
@dataclass
class Ctx:
    scene: Scene
    rng: random.Random
    subject: str
    noun: str
    metres: bool
    n_features: int
    attrs: list[AttributeShares] = field(default_factory=list)
    rels: list[Relation] = field(default_factory=list)
    landcover: tuple[str, str] | None = None  # (text, "composition" | "where")

    @property
    def subjects(self) -> list[Subject]:
        return self.scene.subjects

    def img(self) -> str:
        return W.image_noun(self.rng)


Out = tuple[str, str, list[Subject]]  # (variant, text, subjects it names)
Family = Callable[[Ctx], "Out | None"]


def _looks_plural(name: str) -> bool:
    last = name.split(" ")[-1]
    return last.endswith("s") and not last.endswith(("ss", "us", "is"))


def name_of(s: Subject, ctx: Ctx, plural: bool | None = None) -> tuple[str, bool]:
    """A name for ``s`` (its phrase or a synonym) and whether its verbs agree in the plural."""
    sing, plur = ctx.rng.choice(s.names)
    if s.mass:
        many = s.plural_verb if sing == s.phrase else _looks_plural(sing)
        return sing, many
    want_plural = s.many if plural is None else plural
    return (plur, True) if want_plural else (sing, False)


def _art(name: str) -> str:
    return name if name[:1].isupper() else article(name)


# the buildings (and, below, the tracks and paths) a partly mapped tile often holds many more of
# than its map shows: one of them mapped is "at least one" (a school or a temple mapped once is
# "a school")
COMMON_BUILDINGS = frozenset(f"building={v}" for v in (
    "yes", "house", "residential", "detached", "semidetached_house", "terrace", "apartments",
    "bungalow", "cabin", "hut", "farm", "shed", "garage", "garages", "commercial", "retail"))
# the ways rural maps miss most (tracks, firebreaks, paths); a highway mapped once is "a highway"
MINOR_WAYS = frozenset(f"highway={v}" for v in (
    "track", "path", "footway", "bridleway", "cycleway", "service", "steps"))


def quantity(s: Subject, ctx: Ctx, adjective: str = "") -> tuple[str, bool]:
    """"seven buildings", "a dirt track", "many buildings", "farmland" (and plural agreement)."""
    rng = ctx.rng
    sing, plur = rng.choice(s.names)
    if adjective and adjective.split(" ")[-1] in sing.split(" "):
        adjective = ""  # "unpaved unpaved track"
    if s.mass:
        many = s.plural_verb if sing == s.phrase else _looks_plural(sing)
        return (f"{adjective} {sing}" if adjective else sing), many
    if adjective:
        sing, plur = f"{adjective} {sing}", f"{adjective} {plur}"
    if s.kind == "landcover":
        return plur, True
    n = s.n
    if n is None:
        return (plur, True) if s.many else (_art(sing), False)
    if not ctx.scene.full_coverage:  # a lower bound: the tile is only partly mapped
        if n == 1:  # "a building" reads as the only one; the unmapped part may hold many more
            lower = [(f"at least one {sing}", False), (f"one or more {plur}", True)]
            if s.tag in COMMON_BUILDINGS:  # "a building" on a photo of twenty reads as false
                return rng.choice(lower)
            if s.tag in MINOR_WAYS:  # "a dirt track at the bottom" is true beside unmapped ones
                return rng.choice(lower + [(_art(sing), False)] * 2)
            return _art(sing), False
        return (rng.choice([plur, f"many {plur}"]) if n >= 10 else plur), True
    if n == 1:
        return rng.choice([_art(sing), f"one {sing}", f"a single {sing}"]), False
    vague = [f"{v} {plur}" for v in W.vague_choices(n)]
    exact = f"{W.number_word(n)} {plur}" if (s.kind != "line" or n <= 4) else None
    if exact and (not vague or rng.random() < 0.5):
        return exact, True
    return (rng.choice(vague) if vague else plur), True


# -- where things are -------------------------------------------------------------------------------
SPAN_PART = ("running across the {n}", "crossing the {n}", "running through the {n}",
             "cutting across the {n}", "passing through the {n}", "going across the {n}")
SPAN_FIN = (("runs across the {n}", "run across the {n}"), ("crosses the {n}", "cross the {n}"),
            ("runs through the {n}", "run through the {n}"), ("cuts across the {n}", "cut across the {n}"),
            ("passes through the {n}", "pass through the {n}"), ("goes across the {n}", "go across the {n}"))
EXTENT_VERBS = (("runs", "run"), ("stretches", "stretch"), ("leads", "lead"), ("extends", "extend"),
                ("reaches", "reach"), ("goes", "go"), ("passes", "pass"))
EXTENT_PARTICIPLES = ("running", "stretching", "leading", "extending", "reaching", "going", "passing")
PLACE_VERBS = (("lies", "lie"), ("is", "are"), ("appears", "appear"))  # of a line: not "sits"
# no "across the whole image": read as a claim that it covers the whole image
SPREAD = ("spread across the {n}", "all over the {n}", "throughout the {n}", "spread over the {n}",
          "spread throughout the {n}", "found all over the {n}", "found throughout the {n}",
          "found across the {n}")
SEEN = ("visible", "shown", "seen")  # "<listing> are visible / shown / seen in this image"


def span_direction(s: Subject, ctx: Ctx) -> str | None:
    """"from left to right" / "from top to bottom" for a line that spans the tile one way."""
    if len(s.axes) != 1:
        return None
    return ctx.rng.choice(["from left to right", "from right to left"] if "h" in s.axes
                          else ["from top to bottom", "from bottom to top"])


def line_place(s: Subject, ctx: Ctx, finite: bool, plural: bool) -> str:
    rng = ctx.rng
    if s.spans:
        if finite:
            sing, plur = rng.choice(SPAN_FIN)
            text = (plur if plural else sing).format(n=ctx.img())
        else:
            text = rng.choice(SPAN_PART).format(n=ctx.img())
        d = span_direction(s, ctx) if rng.random() < 0.5 else None
        return f"{text} {d}" if d else text
    pair = far_cells(s.cells)
    if pair:
        a, b = pair if rng.random() < 0.5 else pair[::-1]
        if finite:
            verb = rng.choice(EXTENT_VERBS)
            return f"{verb[1] if plural else verb[0]} from the {a} to the {b}"
        return rng.choice(EXTENT_PARTICIPLES) + f" from the {a} to the {b}"
    pos = cell_of(s)
    if pos is None:
        return ("is visible" if not plural else "are visible") if finite else ""
    place = W.where(pos, rng)
    if finite:
        verb = rng.choice(PLACE_VERBS)
        return f"{verb[1] if plural else verb[0]} {place}"
    return place


def cell_of(s: Subject) -> str | None:
    """The one cell a subject is in (its position word, else its largest cell), if known."""
    if s.position in W.POSITION_FORMS:
        return s.position
    return s.cells[0] if s.cells and s.cells[0] in W.POSITION_FORMS else None


ROW_PLACES = {0: ("along the top", "near the top"), 2: ("along the bottom", "near the bottom")}
COL_PLACES = {0: ("on the left side", "on the left"), 2: ("on the right side", "on the right")}


def area_place(s: Subject, ctx: Ctx) -> str:
    if s.spread:
        return ctx.rng.choice(SPREAD).format(n=ctx.img())
    if s.position == "across":  # a band: along one edge, or no single place
        rc = [CELL_RC[c] for c in s.cells if c in CELL_RC]
        rows, cols = {r for r, _ in rc}, {c for _, c in rc}
        if len(rows) == 1 and min(rows) in ROW_PLACES:
            return ctx.rng.choice(ROW_PLACES[min(rows)])
        if len(cols) == 1 and min(cols) in COL_PLACES:
            return ctx.rng.choice(COL_PLACES[min(cols)])
        return ""
    pos = cell_of(s)
    return W.where(pos, ctx.rng) if pos else ""


def place_of(s: Subject, ctx: Ctx) -> str:
    if s.kind == "line":
        return line_place(s, ctx, False, False)
    if not ctx.scene.full_coverage and s.category == "building" and not s.spread:
        return ""  # partly mapped: where the mapped buildings are is not where the buildings are
    return area_place(s, ctx)


# -- families ---------------------------------------------------------------------------------------
def fam_counts(ctx: Ctx) -> Out | None:
    subs = ctx.subjects
    if not subs:
        return None
    items = [quantity(s, ctx) for s in subs]
    listing = join_words([t for t, _ in items])
    plural = len(items) > 1 or items[0][1]
    first_plural = items[0][1]
    rng = ctx.rng
    # "... in this image": the subject's noun or any image word (most subjects' noun is "image")
    noun = rng.choice((ctx.noun,) + W.IMAGE_NOUNS)
    this = rng.choice(("this", "the"))
    variants = [
        ("a", f"{ctx.subject} with {listing}."),
        ("b", f"{capitalize(listing)} {'are' if plural else 'is'} {rng.choice(SEEN)} in {this} {noun}."),
        ("d", f"{ctx.subject} showing {listing}."),
        ("e", f"{ctx.subject} featuring {listing}."),
        ("f", f"There {'are' if first_plural else 'is'} {listing} in {this} {noun}."),
        ("g", f"{capitalize(listing)}, {rng.choice(FROM_ABOVE)}."),
        ("h", f"{capitalize(listing)} can be seen in {this} {noun}."),
        ("i", f"{ctx.subject} that shows {listing}."),
        ("j", f"{capitalize(listing)} {'appear' if plural else 'appears'} in {this} {noun}."),
        ("k", f"{ctx.subject} containing {listing}."),
    ]
    if ctx.metres:
        variants.append(("c", f"A {round_m(ctx.scene.width_m)} m wide {noun} with {listing}."))
    v, text = rng.choice(variants)
    return v, text, list(subs)


def fam_positions(ctx: Ctx) -> Out | None:
    subs = ctx.subjects
    if not subs:
        return None
    items, named = [], []
    for s in subs:
        place = place_of(s, ctx)
        if place:
            items.append(f"{quantity(s, ctx)[0]} {place}")
            named.append(s)
    if not items:
        return None
    listing = join_words(items)
    v, text = ctx.rng.choice([("a", f"{ctx.subject} showing {listing}."),
                              ("b", f"{capitalize(listing)}."),
                              ("c", f"{ctx.subject} with {listing}."),
                              ("d", f"{capitalize(ctx.rng.choice(FROM_ABOVE))}: {listing}.")])
    return v, text, named


def _areas(ctx: Ctx) -> list[Subject]:
    return [s for s in ctx.subjects if s.kind in ("polygon", "landcover") and s.share >= 0.02]


COVER_VERBS = (("covers", "cover"), ("takes up", "take up"), ("fills", "fill"), ("occupies", "occupy"))


def _share_clause(s: Subject, ctx: Ctx, form: int) -> str | None:
    share = W.share_phrase(s.share, ctx.rng, lower_bound_only=lower_bound(s, ctx))
    if share is None:
        return None
    if s.mass or s.kind == "landcover":
        name, many = quantity(s, ctx)
    else:
        name, many = name_of(s, ctx)
        name = name if many else _art(name)
    noun = ctx.img()
    if form == 0:
        verb = ctx.rng.choice(COVER_VERBS)
        det = ctx.rng.choice(("the", "this"))
        return f"{name} {verb[1] if many else verb[0]} {share} {det} {noun}"
    if s.mass or s.kind == "landcover":
        return f"{share} the {noun} is {name}"
    return f"{share} the {noun} is covered by {name}"


def lower_bound(s: Subject, ctx: Ctx) -> bool:
    """Whether a subject's share is only a lower bound (its source covers part of the tile)."""
    if s.kind == "landcover":
        return bool(s.stats.get("lower_bound"))
    return not ctx.scene.full_coverage


def fam_sizes(ctx: Ctx) -> Out | None:
    areas = _areas(ctx)
    form = ctx.rng.choice([0, 0, 1])
    parts, named = [], []
    for s in areas:
        clause = _share_clause(s, ctx, form if not parts else 0)
        if clause:
            parts.append(clause)
            named.append(s)
    if not parts:
        return None
    text = capitalize(join_words(parts)) + "."
    return ("a" if form == 0 else "b"), text, named


def landcover_text(meta: Mapping[str, Any], scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    """The land-cover phrase of a tile: one of ``landcover_phrases(meta, rng)`` of the land-cover
    package (``rsdata.landcover``), else (package absent) "mostly tree cover with some cropland"
    from the classes."""
    if not isinstance(meta.get("landcover"), Mapping):
        return None
    fn = _landcover_function("landcover_phrases")
    if fn is not None:
        got = fn(meta, rng)
        texts = [got] if isinstance(got, str) else [g for g in (got or []) if isinstance(g, str)]
        texts = [t.strip() for t in texts if t.strip()]
        if not texts:
            return None
        text = rng.choice(texts)
        return text, ("where" if re.search(POSITION_RE, text) else "composition")
    classes = sorted((s for s in scene.subjects if s.kind == "landcover"), key=lambda s: -s.share)
    if not classes or classes[0].stats.get("lower_bound"):
        return None
    top, second = classes[0], (classes[1] if len(classes) > 1 else None)
    noun = (lambda s: s.plural if s.countable else s.phrase)  # noqa: E731
    if top.share >= 0.6:
        tail = f" with some {noun(second)}" if second is not None and second.share < 0.4 else ""
        return f"mostly {noun(top)}{tail}", "composition"
    return None


@functools.cache
def _landcover_function(name: str) -> Callable[..., Any] | None:
    """A function of the land-cover package, imported on first use (None without it)."""
    try:
        import rsdata.landcover as landcover
    except ImportError:
        return None
    fn = getattr(landcover, name, None)
    return fn if callable(fn) else None


def fam_landcover(ctx: Ctx) -> Out | None:
    rng = ctx.rng
    areas = [s for s in _areas(ctx) if s.mass or s.kind == "landcover"
             or s.category in ("landuse", "landcover", "leisure", "water")]
    if ctx.landcover is not None:
        lc, kind = ctx.landcover
        others = [s for s in ctx.subjects if s.kind != "landcover"]
        tail = (", with " + join_words([quantity(s, ctx)[0] for s in others])) if others else ""
        named = [s for s in ctx.subjects if s.kind == "landcover"
                 and re.search(rf"\b{re.escape(s.phrase)}", lc)] + others
        if kind == "where":  # "open water on the left": a detail, not what the image is of
            v, text = rng.choice([("o", f"{ctx.subject} with {lc}{tail}."),
                                  ("p", f"{capitalize(lc)}{tail}.")])
        else:
            v, text = rng.choice([("l", f"{ctx.subject} of {lc}{tail}."),
                                  ("m", f"{capitalize(lc)}{tail}."),
                                  ("n", f"Land cover here is {lc}{tail}.")])
        return v, text, named
    if not areas:
        return None
    top = areas[0]
    others = [s for s in ctx.subjects if s is not top]
    tail = (", with " + join_words([quantity(s, ctx)[0] for s in others])) if others else ""
    if top.mass:
        name, many = quantity(top, ctx)
    else:
        name, many = name_of(top, ctx)
        name = name if many else _art(name)
    if top.share >= 0.6:
        v, text = rng.choice([
            ("a", f"{ctx.subject} of {name}{tail}."),
            ("b", f"{capitalize(name)} {'fill' if many else 'fills'} most of this {ctx.noun}{tail}."),
            ("d", f"{ctx.subject} of mostly {name}{tail}." if top.mass else f"{ctx.subject} of {name}{tail}.")])
        return v, text, [top] + others
    share = W.share_phrase(top.share, rng, lower_bound_only=lower_bound(top, ctx))
    if share is None:
        return None
    return "c", f"{ctx.subject} with {name} covering {share} the {ctx.img()}{tail}.", [top] + others


def fam_lengths(ctx: Ctx) -> Out | None:
    lines = [s for s in ctx.subjects if s.kind == "line"]
    if not lines:
        return None
    rng = ctx.rng
    if ctx.metres:
        parts = [f"about {round_m(s.length_m)} m of {name_of(s, ctx, plural=False)[0]}" for s in lines]
        v, text = rng.choice([
            ("a", f"{capitalize(join_words(parts))} {'are' if len(parts) > 1 else 'is'} {rng.choice(SEEN)} in this "
                  f"{round_m(ctx.scene.width_m)} m wide {ctx.noun}."),
            ("b", f"{ctx.subject} showing {join_words(parts)}.")])
        return v, text, lines
    sentences = []
    for s in lines:
        q, many = quantity(s, ctx)
        sentences.append(f"{capitalize(q)} {line_place(s, ctx, True, many)}.")
    text = " ".join(sentences[:2])
    return ("x" if len(sentences) == 1 else "y"), text, lines[:2]


def _building_group(ctx: Ctx) -> tuple[list[Subject], float, int | None]:
    group = [s for s in ctx.subjects if s.category == "building" and not s.mass]
    share = sum(s.share for s in group)
    ns = [s.n for s in group]
    n = sum(ns) if group and all(v is not None for v in ns) else None  # type: ignore[misc]
    return group, share, n


def roof_phrase(ctx: Ctx, single: bool = False) -> str | None:
    """"with tin and concrete roofs" / "with mostly concrete roofs" / "with concrete roofs"
    ("with a concrete roof" for a single building)."""
    roofs = by_key(ctx.attrs, "roof:material")
    if roofs is None:
        return None
    (w1, s1), rest = roofs.shares[0], roofs.shares[1:]
    prep = ctx.rng.choice(["with", "with", "under", "topped with"])
    if single:
        return f"with {article(w1)} roof" if s1 >= 0.9 else None
    if s1 >= 0.9:
        return f"{prep} {w1} roofs"
    if rest and s1 >= 0.2 and rest[0][1] >= 0.2 and s1 + rest[0][1] >= 0.8:
        a, b = (w1, rest[0][0]) if ctx.rng.random() < 0.5 else (rest[0][0], w1)
        return f"{prep} {a} and {b} roofs"
    if s1 >= 0.6:
        return f"{prep} mostly {w1} roofs"
    return None


# "<share> of the roofs are <word>" in every roof sentence was a constant fragment (17.5% of the
# Banepa captions), then "of them are" (12.7%): the sentence takes one of several leads and
# clauses, each of which the caption checker reads ("<share> the roofs are <word>",
# "<share> them are <word>", "<share> are <word>", "<word> roofs account for <share> them",
# "<word> roofing covers <share> them").
ROOF_LEADS = ("", "As for the roofs, ", "Looking at the roofs, ", "Counting the roofs, ",
              "Taking the roofs together, ")
ROOF_MIXED_LEADS = ("The roofs vary: ", "The roofs differ: ", "The roofs are mixed: ",
                    "Not all roofs are alike: ")
ROOF_FIRST = ("{p} the roofs are {w}", "Of the roofs, {q} are {w}")  # the clauses after the empty lead
ROOF_CLAUSES = ("{p} them are {w}", "{q} are {w}", "{w} roofs account for {p} them",
                "{w} roofing covers {p} them")  # {q}: the share without its "of" ("most are tin")
ROOF_SECOND = (" and {c}", ", while {c}", "; {c}")
MIXED_MIN = 0.2  # the second material's share from which the roofs "vary"


def _no_of(share: str) -> str:
    """"about a third of" -> "about a third" (every fraction word ends in "of")."""
    return share[:-3] if share.endswith(" of") else share


def roof_share_sentence(shares: AttributeShares, ctx: Ctx) -> str | None:
    """"About two thirds of the roofs are tin and about a third of them are concrete." in one
    of several structures; None when no share word is true of the top material."""
    rng = ctx.rng
    (w1, s1), rest = shares.shares[0], shares.shares[1:]
    p1 = W.share_phrase(s1, rng, fractions_only=True)
    if not p1:
        return None
    second = ""
    clause = rng.choice(ROOF_CLAUSES)  # one form for both clauses: parallel, and less repeated
    if rest:
        w2, s2 = rest[0]
        p2 = W.share_phrase(s2, rng, fractions_only=True)
        if p2:
            # "most of the roofs are tin and concrete roofs account for ..." reads as "tin and
            # concrete": a clause that starts with a material never follows "and"
            joins = ROOF_SECOND[1:] if clause.startswith("{w}") else ROOF_SECOND
            second = rng.choice(joins).format(c=clause.format(p=p2, q=_no_of(p2), w=w2))
    mixed = bool(second) and rest[0][1] >= MIXED_MIN
    lead = rng.choice(ROOF_LEADS + (ROOF_MIXED_LEADS if mixed else ()))
    first = (clause if lead else rng.choice(ROOF_FIRST)).format(p=p1, q=_no_of(p1), w=w1)
    return capitalize(lead + first + second) + "."


def levels_word(ctx: Ctx) -> str | None:
    levels = by_key(ctx.attrs, "building:levels")
    if levels is None:
        return None
    word, share = levels.top
    n = int(word)
    adj = f"{W.number_word(n) if n <= 10 else n}-storey"
    if share >= 0.9:
        return adj
    if share >= 0.6:
        return f"mostly {adj}"
    return None


# every head keeps a word the caption checker measures ("densely built", "dense cluster",
# "closely/tightly packed": a building share >= DENSE_BUILT; "built-up": >= BUILT_UP)
DENSE_HEADS = ("a densely built-up area", "a dense cluster of buildings", "closely packed buildings",
               "tightly packed buildings", "a tightly packed cluster of buildings",
               "a closely packed block of buildings")
BUILT_UP_HEADS = ("a built-up area", "a built-up block", "built-up blocks", "built-up land",
                  "built-up ground", "built-up terrain", "a patch of built-up land",
                  "a stretch of built-up ground")  # no "district":
# an administrative word (benchmarks/bench_caption_truth.py NOT_VISIBLE)


def fam_scene(ctx: Ctx) -> Out | None:
    rng, sc = ctx.rng, ctx.scene
    group, bshare, bn = _building_group(ctx)
    top_b = group[0] if group else None
    big = [s for s in _areas(ctx) if s.category != "building" and s.share >= 0.35]
    head, named = None, []
    if bshare >= BUILT_UP and top_b is not None and (bn is None or bn >= 3):
        kind = rng.choice(DENSE_HEADS if bshare >= DENSE_BUILT else BUILT_UP_HEADS)
        head, named = kind, list(group)
        extra = [d for d in (roof_phrase(ctx),) if d]
        notable = [s for s in ctx.subjects if s not in group and s.kind != "line"][:1]
        if notable:
            extra.append("with " + quantity(notable[0], ctx)[0])
            named += notable
        if extra:
            head += " " + rng.choice(extra)
    elif big:
        area = big[0]
        name = quantity(area, ctx)[0] if area.mass else _art(name_of(area, ctx, plural=False)[0])
        named = [area]
        tail = ""
        lo, hi, max_share = SCATTERED
        if top_b is not None and sc.full_coverage and top_b.n is not None:
            if lo <= top_b.n <= hi and top_b.share < max_share:
                tail = rng.choice([" with scattered ", " dotted with "]) + name_of(top_b, ctx, plural=True)[0]
                named.append(top_b)
            elif top_b.n == 1:
                tail = rng.choice([" with a single ", " with a lone ", " with an isolated "]) + \
                    name_of(top_b, ctx, plural=False)[0]
                named.append(top_b)
        if not tail:
            spanning = [s for s in ctx.subjects if s.kind == "line" and s.spans]
            others = [s for s in ctx.subjects if s is not area and s not in spanning]
            if spanning:
                tail = " crossed by " + quantity(spanning[0], ctx)[0]
                named.append(spanning[0])
            elif others:
                tail = " with " + quantity(others[0], ctx)[0]
                named.append(others[0])
        head = name + tail
    elif top_b is not None and sc.full_coverage and top_b.n is not None and \
            SCATTERED[0] <= top_b.n <= SCATTERED[1] and top_b.share < SCATTERED[2]:
        head = "scattered " + name_of(top_b, ctx, plural=True)[0]
        named = [top_b]
        lines = [s for s in ctx.subjects if s.kind == "line"][:1]
        if lines:
            head += " and " + quantity(lines[0], ctx)[0]
            named += lines
    if head is None:
        return None
    v, text = rng.choice([("a", f"{ctx.subject} of {head}."), ("b", f"{capitalize(head)}."),
                          ("c", f"{capitalize(head)}, {rng.choice(FROM_ABOVE)}."),
                          ("d", f"This {ctx.noun} shows {head}."),
                          ("e", f"{ctx.subject} showing {head}.")])
    return v, text, named


REL_FORMS: dict[str, tuple[str, ...]] = {
    "along": ("{a} along {b}", "{a} lining {b}", "{a} alongside {b}"),
    "crossing": ("{a} crossing {b}", "{a} that crosses {b}"),
    "meets": ("{a} meeting {b}", "{a} that joins {b}"),
    "next_to": ("{a} next to {b}", "{a} beside {b}"),
    "between": ("{a} between {b} and {c}",),
    "surrounded_by": ("{a} surrounded by {b}",),
}


def _ref(s: Subject, ctx: Ctx) -> str:
    """How the second party of a relation is named: "a minor road", "dirt tracks", "farmland"."""
    if s.mass:
        return quantity(s, ctx)[0]
    name, many = name_of(s, ctx)
    return name if many else _art(name)


def relation_text(r: Relation, ctx: Ctx) -> str:
    a = quantity(r.subject, ctx)[0]
    refs = [_ref(o, ctx) for o in r.others]
    form = ctx.rng.choice(REL_FORMS[r.kind])
    return form.format(a=a, b=refs[0], c=refs[1] if len(refs) > 1 else "")


def fam_relations(ctx: Ctx) -> Out | None:
    if not ctx.rels:
        return None
    rng = ctx.rng
    chosen = [ctx.rels[0]]
    rest = [r for r in ctx.rels[1:] if r.subject is not chosen[0].subject]
    if rest and rng.random() < 0.5:
        chosen.append(rng.choice(rest))
    sentences = [capitalize(relation_text(r, ctx)) + "." for r in chosen]
    if rng.random() < 0.3:
        sentences[0] = f"{ctx.subject} of {sentences[0][0].lower()}{sentences[0][1:]}"
    named = [s for r in chosen for s in (r.subject, *r.others)]
    return ("r" if len(chosen) == 1 else "s"), " ".join(sentences), named


ATTRIBUTE_FORMS = ("{h}", "{h}", "{s} of {h}", "{s} showing {h}")


def fam_attributes(ctx: Ctx) -> Out | None:
    rng = ctx.rng
    group, _, _ = _building_group(ctx)
    roofs, levels = roof_phrase(ctx), levels_word(ctx)
    sentences, named = [], []
    single = bool(group) and sum(s.n or 2 for s in group) == 1
    if group and single:
        roofs = roof_phrase(ctx, single=True)
    if group and (roofs or levels):
        top = group[0]
        q, _ = quantity(top, ctx, adjective=levels or "")
        head = f"{q} {roofs}" if roofs else q
        form = rng.choice(ATTRIBUTE_FORMS)  # "{h}": "Many buildings with tin roofs."
        sentences.append(capitalize(form.format(h=head, s=ctx.subject)) + ".")
        named.append(top)
        shares = by_key(ctx.attrs, "roof:material")
        if shares is not None and not single and rng.random() < 0.5:
            text = roof_share_sentence(shares, ctx)
            if text:
                sentences = [text] if rng.random() < 0.5 else sentences + [text]
    for s in ctx.subjects:
        adj = adjective_for(s, ctx.attrs)
        crop = crop_for(s, ctx.attrs)
        if adj:
            word, mostly = adj
            q, many = quantity(s, ctx, adjective=word)
            if mostly:
                q = f"mostly {word} {name_of(s, ctx, plural=True)[0]}" if not s.mass else f"mostly {q}"
            sentences.append(capitalize(" ".join(filter(None, [q, place_of(s, ctx)]))) + ".")
            named.append(s)
        elif crop:
            sentences.append(capitalize(f"{quantity(s, ctx)[0]} planted with {crop}") + ".")
            named.append(s)
    if not sentences:
        return None
    return "t", " ".join(sentences[:2]), named


def fam_empty(ctx: Ctx) -> Out | None:
    if ctx.subjects or ctx.scene.visible_tags:
        return None
    rng = ctx.rng
    if ctx.n_features == 0:
        variants = [("a", f"{ctx.subject} with no features mapped in OpenStreetMap."),
                    ("d", f"{ctx.subject} of an area where OpenStreetMap maps no features.")]
        if ctx.metres:
            variants.append(("b", f"A {round_m(ctx.scene.width_m)} m wide {ctx.noun} of an area with "
                                  "no mapped features."))
        v, text = rng.choice(variants)
        return v, text, []
    return ("c", f"{ctx.subject} with no mapped features large enough to see at "
                 f"{ctx.scene.gsd_m:g} m per pixel.", [])


FAMILY_FUNCS: dict[str, Family] = {
    "counts": fam_counts, "positions": fam_positions, "sizes": fam_sizes,
    "landcover": fam_landcover, "lengths": fam_lengths, "scene": fam_scene,
    "relations": fam_relations, "attributes": fam_attributes, "empty": fam_empty,
}


# -- the entry points ------------------------------------------------------------------------------
def sample_rng(seed: int, key: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def platform_for(meta: Mapping[str, Any], platform: str = "auto") -> str:
    """The platform word of a sample: the recipe's, else (``auto``) the one its source set,
    else the neutral ``overhead``; never ``aerial`` at 5 m per pixel or coarser."""
    chosen = platform
    if chosen == "auto":
        chosen = str((meta.get("source") or {}).get("platform") or "overhead").lower()
    chosen = _PLATFORM_ALIASES.get(chosen, chosen)
    if chosen not in SUBJECTS_BY_PLATFORM:
        chosen = "overhead"
    gsd = (meta.get("geo") or {}).get("gsd_m")
    if chosen == "aerial" and gsd is not None and gsd >= AERIAL_MAX_GSD_M:
        chosen = "overhead"
    return chosen


def fully_covered(osm: Mapping[str, Any] | None) -> bool:
    """Whether the tile lies fully inside its vector sources' coverage (absence may be said)."""
    if not osm:
        return False
    return float((osm.get("coverage") or {}).get("fraction", 0.0)) >= FULL_COVERAGE


def visible_tags(osm: Mapping[str, Any] | None, max_features: int = 4) -> list[Tag]:
    """Visible primary tags (legacy helper; captions use :func:`rsdata.captions.subjects.scene_of`)."""
    if not osm:
        return []
    return [t for t in osm["tags"] if t["visible"] and t.get("primary", True)][:max_features]


def captions_for(meta: dict[str, Any], count: int = 3, seed: int = 0,
                 families: Sequence[str] | None = FAMILIES, max_features: int = 4,
                 platform: str = "auto", *, metres: bool = False, min_line_fraction: float = 0.15,
                 min_area_share: float = 0.01, visible_only: bool = True) -> list[Caption]:
    """Deterministic template captions of one sample's metadata.

    Without ``osm`` (and without ``landcover``) in ``meta`` nothing is known: no captions. The
    ``empty`` family (absence) applies only when the tile is fully inside the sources' coverage.
    """
    key = meta["key"]
    rng = sample_rng(seed, key)
    osm = meta.get("osm")
    if osm is None and not isinstance(meta.get("landcover"), Mapping):
        return []
    limits = Limits(min_line_fraction=min_line_fraction, min_area_share=min_area_share,
                    max_features=max_features)
    scene = scene_of(meta, limits, visible_only=visible_only)
    try:
        return _captions(meta, scene, rng, count, tuple(families or FAMILIES), platform, metres)
    finally:
        strip_cache((meta.get("osm") or {}).get("objects") or [])


def _captions(meta: dict[str, Any], scene: Scene, rng: random.Random, count: int,
              families: tuple[str, ...], platform: str, metres: bool) -> list[Caption]:
    # one subject per family, never the same twice in a sample ("An aerial shot ..." in every
    # caption of a tile was a constant fragment of small corpora)
    choices = SUBJECTS_BY_PLATFORM[platform_for(meta, platform)]
    views = rng.sample(choices, k=min(max(len(families), 1), len(choices)))
    subject, noun = views[0]
    osm = meta.get("osm") or {}
    ctx = Ctx(scene=scene, rng=rng, subject=subject, noun=noun, metres=metres,
              n_features=int(osm.get("n_features", 0)))
    if scene.subjects:
        if "attributes" in families or "scene" in families:
            ctx.attrs = tile_attributes(scene.subjects)
        if "relations" in families and scene.has_objects:
            ctx.rels = relations(scene)
        if "landcover" in families:
            ctx.landcover = landcover_text(meta, scene, rng)
    absence_ok = fully_covered(osm)
    order = list(families)
    rng.shuffle(order)
    made: list[tuple[str, Out]] = []
    for i, fam in enumerate(order):
        if fam == "empty" and not absence_ok:
            continue  # nobody checked that nothing is there
        ctx.subject, ctx.noun = views[i % len(views)]
        got = FAMILY_FUNCS[fam](ctx)
        if got is not None:
            made.append((fam, got))
    if scene.subjects:  # the first caption names what dominates the picture
        top = scene.subjects[0]
        lead = next((i for i, (_, out) in enumerate(made) if out[2] and out[2][0] is top), None)
        if lead is None:
            lead = next((i for i, (_, out) in enumerate(made) if top in out[2]), 0)
        if made:
            made.insert(0, made.pop(lead))
    out: list[Caption] = []
    for fam, (variant, text, _named) in made[:count]:
        prov: dict[str, Any] = {"template": f"{fam}.{TEMPLATE_VERSION}.{variant}"}
        if fam == "landcover" and ctx.landcover is not None and ctx.landcover[0] in text:
            prov["landcover"] = ctx.landcover[0]
        out.append(Caption(text=text, kind="template", provenance=prov))
    return out


@functools.cache
def _schema_section() -> tuple[dict[str, Any], dict[str, Any]]:
    from rsdata import schemas

    root = schemas.validator("recipe").schema
    return root["$defs"]["template_captions"], root


def resolved_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stage entry with the schema's defaults filled in (a recipe run already has them)."""
    from rsdata.recipe import apply_defaults

    section, root = _schema_section()
    return apply_defaults(copy.deepcopy({"type": "template_captions", **config}), section, root)  # type: ignore[no-any-return]


class TemplateCaptions(Stage):
    name = "template_captions"
    settings_class: ClassVar[type | None] = TemplateCaptionsSettings
    needs_objects: ClassVar[bool] = True  # relations and attributes read osm.objects

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.settings = from_config(TemplateCaptionsSettings, resolved_config(self.config),
                                    "template_captions")

    def captions(self, meta: dict[str, Any]) -> list[Caption]:
        s = self.settings
        return captions_for(meta, s.count, s.seed, tuple(s.families or FAMILIES), s.max_features,
                            s.platform, metres=s.metres, min_line_fraction=s.min_line_fraction,
                            min_area_share=s.min_area_share, visible_only=s.visible_only)

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        s = self.settings
        for sample in samples:
            stats.n_in += 1
            caps = self.captions(sample.meta)
            if not caps:
                osm = sample.meta.get("osm")
                visible = bool(visible_tags(osm))
                if not visible and not fully_covered(osm) and not sample.meta.get("landcover"):
                    # nothing known (no OSM stage, or outside coverage with nothing visible):
                    # the tile cannot be captioned truthfully
                    stats.drop("uncaptioned")
                elif visible and not scene_of(sample.meta, Limits(s.min_line_fraction, s.min_area_share,
                                                                  s.max_features),
                                              visible_only=s.visible_only).subjects:
                    stats.drop("no_salient_feature")  # only reserves, stubs, hidden things
                else:
                    stats.drop("no_template_applies")
                continue
            for cap in caps:
                sample.add_caption(cap)
            stats.extra["captions"] += len(caps)
            stats.n_out += 1
            yield sample
