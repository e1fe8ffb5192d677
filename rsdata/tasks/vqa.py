"""The ``vqa`` stage: RSVQA-style question-answer pairs from the tile's OSM objects.

    stages:
      - type: vqa
        families: [presence, counting, comparison, area, position]
        max_pairs: 12            # per tile
        max_per_family: 4        # per tile
        yes_no_tolerance: 2      # per family and partition: |#yes - #no| never exceeds this
        max_count_share: 0.3     # per partition: one count answer is at most this share (+2)
        max_count: 20            # larger counts are not asked
        count_lines: false       # count line objects (roads) too
        absence: true            # ask questions whose answer is "no" / 0 (inside coverage only)
        absence_tags: []         # tags the sources surely map, asked about even if unseen
        seed: 0

**Families** (RSVQA's question types in brackets, as the export writes them):

* ``presence`` [presence]: "Is there a residential road in the image?" (yes / no);
* ``counting`` [count]: "How many buildings are there?" (a number);
* ``comparison`` [comp]: "Are there more buildings than ponds?", "Is the area covered by
  farmland larger than the area covered by forest?" (yes / no);
* ``area`` [area]: "How much of the image is covered by farmland?" (share buckets: less than
  10%, 10% to 25%, 25% to 50%, 50% to 75%, more than 75%), "What is the main land use?" (the
  scene label's prompt, :mod:`rsdata.tasks.scene`, when it is a land class);
* ``position`` [position]: "Is the river in the left half of the image?", "Is there a
  building in the top half of the image?" (yes / no), "Where is the pond in the image?" (a 3×3
  cell word: top left, top, top right, left, centre, right, bottom left, bottom, bottom right).

**Nouns and answers.** A question names a noun: a tag's phrase ("residential road") or a
generic noun ("building", "road", "water"). What a referent *is* uses strict names, what it
*could be* loose ones (:func:`rsdata.tasks.objects.tag_names`); an answer is given only when
the two agree on the tile (no borderline referent), so "How many roads?" is not asked where a
dirt track could be counted as one or not.

**Generic tags.** A feature whose tag says nothing of its kind (``building=yes``,
``highway=road``) could be any noun of its category: "How many houses?" is not asked where a
``building=yes`` stands, and "the house" is no expression there.

**Counting rules.** Counts are of referents (:mod:`rsdata.tasks.objects`), the join's
``count_objects`` semantics on visible objects: an object cut by the tile edge counts once;
touching ways of one tag (a road split into ways) are one object; buildings are one each; an
object too small to see at the tile's GSD (the join's ``min_pixels``) does not count. A count is
stated only when every referent the noun could mean is one it surely means, all are visible from
above (no tunnels), none is a mass noun, the join's ``visible_count_objects`` agrees, and (unless
``count_lines``) none is a line.

**Absence.** A "no" / 0 / "not in that half" answer is a claim that something is *not* there.
It is made only on tiles inside the OSM coverage (``osm.coverage.fraction`` >= 0.999), only
for nouns no tag of the tile (visible or not) could be called and of whose vocabulary category
the tile has no tag at all (a ``building=yes`` may be the house asked about; a dirt track may be
taken for a minor road), and only for nouns the sources are known to map: seen visible on another tile of the same partition whose covering sources are
a subset of this tile's (or listed in ``absence_tags``). Every count, comparison, share bucket
and question about "the X" bounds what else is there too ("3 buildings": no fourth; "the
river": no other river), so those are asked only inside the coverage as well; elsewhere a tile
gets only "yes" presence and position pairs. (Coverage says the *sources* are complete there;
where the map itself misses features the image shows, every such answer inherits the gap.)

**Position.** Shares of a referent's area (polygons), length (lines) or points in a half or
cell of the image, from its pixel geometry: "in the left half" needs >= 75% there (the answer
"no": >= 75% in the right half), "where" >= 60% in one cell; "is there a X in the left half" is "yes" when some X
lies mostly (>= 50%) there and "no" only when no X comes within 2 px of it (inside coverage).

**Balance.** Per partition (a stage call: deterministic whatever the number of workers), a
yes / no answer is kept only while its family's |#yes - #no| stays within ``yes_no_tolerance``,
and a count answer only while it stays within ``max_count_share`` of the count answers (+2).

Each pair records its family, RSVQA type, answer type, template id, the tags and the objects
(indices into ``meta["osm"]["objects"]`` and their OSM ids) it is about, and whether it states
an absence. The pairs go into the json (``vqa``) and into the ``vqa.json`` member.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import shapely

from rsdata.captions.rules import CaptionRules
from rsdata.errors import RecipeError
from rsdata.sample import Sample
from rsdata.settings import from_config
from rsdata.stage import Stage
from rsdata.stats import StageStats
from rsdata.tasks.objects import (
    CELL_NAMES,
    HALVES,
    OPPOSITE,
    Referent,
    Tile,
    build_tiles,
    could_be,
    same_tag_counts,
)
from rsdata.tasks.scene import classify

VERSION = "v1"
FAMILIES = ("presence", "counting", "comparison", "area", "position")
RSVQA_TYPES = {"presence": "presence", "counting": "count", "comparison": "comp", "area": "area",
               "position": "position"}
BATCH = 256
ABSENT_NOUNS = 3  # nouns not on the tile that a tile's questions may be about
COUNT_SLACK = 2
GENERIC = {"building": ("building", "buildings", False, "building"), "road": ("road", "roads", False, "road"),
           "water": ("water", "water", True, "water")}
SHARE_BUCKETS = ((0.10, "less than 10%"), (0.25, "10% to 25%"), (0.50, "25% to 50%"),
                 (0.75, "50% to 75%"), (float("inf"), "more than 75%"))
BUCKET_MARGIN = 0.01  # a share this close to a bucket edge gets no question
AREA_MARGIN = (1.5, 0.02)  # area comparisons: larger >= 1.5x smaller and 2% of the tile apart
HALF_IN = 0.75  # "the X is in the left half": 75% of it there; "no": 75% in the right half
ANY_IN = 0.5
CELL_IN = 0.6
HALF_WORDS = {"left half": ("left half", "left part"), "right half": ("right half", "right part"),
              "top half": ("top half", "upper half"), "bottom half": ("bottom half", "lower half")}

TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "presence": (("presence.v1.a", "Is there {a} in the image?"),
                 ("presence.v1.b", "Are there any {p} in the image?"),
                 ("presence.v1.c", "Can you see {a} in this image?"),
                 ("presence.v1.d", "Does the image show any {p}?"),
                 ("presence.v1.e", "Is {a} visible in this image?")),
    "presence_mass": (("presence.v1.m1", "Is there any {s} in the image?"),
                      ("presence.v1.m2", "Does the image show any {s}?"),
                      ("presence.v1.m3", "Can you see any {s} in this image?")),
    "counting": (("count.v1.a", "How many {p} are there?"),
                 ("count.v1.b", "How many {p} are in the image?"),
                 ("count.v1.c", "What is the number of {p} in the image?"),
                 ("count.v1.d", "How many {p} can be seen?")),
    "comp_more": (("comp.v1.more", "Are there more {pa} than {pb}?"),),
    "comp_fewer": (("comp.v1.fewer", "Are there fewer {pa} than {pb}?"),),
    "comp_equal": (("comp.v1.equal", "Is the number of {pa} equal to the number of {pb}?"),
                   ("comp.v1.same", "Are there as many {pa} as {pb}?")),
    "comp_area_more": (("comp.v1.area_more", "Is the area covered by {xa} larger than the area "
                                             "covered by {xb}?"),),
    "comp_area_less": (("comp.v1.area_less", "Is the area covered by {xa} smaller than the area "
                                             "covered by {xb}?"),),
    "area_share": (("area.v1.share_a", "How much of the image is covered by {x}?"),
                   ("area.v1.share_b", "What share of the image is covered by {x}?")),
    "area_main": (("area.v1.main_a", "What is the main land use in the image?"),
                  ("area.v1.main_b", "What kind of area does the image show?"),
                  ("area.v1.main_c", "What covers most of this image?")),
    "pos_half": (("position.v1.half_a", "Is the {s} in the {half} of the image?"),
                 ("position.v1.half_b", "Is the {s} located in the {half} of the image?")),
    "pos_any": (("position.v1.any_a", "Is there {a} in the {half} of the image?"),
                ("position.v1.any_b", "Are there any {p} in the {half} of the image?")),
    "pos_any_mass": (("position.v1.any_m", "Is there any {s} in the {half} of the image?"),),
    "pos_where": (("position.v1.where_a", "Where is the {s} in the image?"),
                  ("position.v1.where_b", "In which part of the image is the {s}?")),
}


def article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" and not noun.lower().startswith(("uni", "eu", "one"))
            else "a ") + noun


def share_bucket(share: float) -> str | None:
    """The share bucket word, or None when ``share`` is within BUCKET_MARGIN of an edge."""
    for edge, word in SHARE_BUCKETS:
        if abs(share - edge) < BUCKET_MARGIN:
            return None
        if share < edge:
            return word
    return None


@dataclass(frozen=True)
class Noun:
    text: str  # singular (mass nouns: the only form)
    plural: str
    mass: bool
    category: str | None = None  # the vocabulary category of the tags it names

    def slots(self) -> dict[str, str]:
        return {"s": self.text, "p": self.plural, "a": self.text if self.mass else article(self.text),
                "x": self.text if self.mass else self.plural}


@dataclass
class Facts:
    """What a tile says about one noun."""

    noun: Noun
    refs: list[Referent]  # referents it surely names (subjects only)
    could: list[Referent]  # referents it might name (any)
    present: bool | None  # True: yes; False: absent (stated only inside coverage); None: unsure
    count: int | None
    area: float | None  # share of the tile
    unique: Referent | None
    tile: Tile

    @property
    def all_visible(self) -> bool:
        """Every feature of the tile it could name is visible (none too small to see)."""
        return _all_visible(self.tile, self.noun, self.could)


@dataclass
class Pair:
    question: str
    answer: str
    family: str
    template: str
    answer_type: str  # yes/no | number | other
    tags: list[str] = field(default_factory=list)
    refs: list[Referent] = field(default_factory=list)
    absence: bool = False

    def identity(self) -> tuple[Any, ...]:
        """What the question asks, whatever its wording."""
        slots = self.question if isinstance(self.question, dict) else {"q": self.question}
        return (self.template.split(".")[0] if not isinstance(self.question, dict) else self.template,
                tuple(sorted(slots.items())))

    def word(self, rng: random.Random) -> "Pair":
        """Choose the template (and half words) and write the question."""
        if isinstance(self.question, dict):
            slots = dict(self.question)
            if "half" in slots:
                slots["half"] = rng.choice(HALF_WORDS[slots["half"]])
            self.template, text = rng.choice(TEMPLATES[self.template])
            self.question = text.format(**slots)
        return self

    def to_json(self) -> dict[str, Any]:
        members = sorted({m for r in self.refs for m in r.members})
        ids = [i for r in self.refs for i in r.ids]
        return {"question": self.question, "answer": self.answer, "family": self.family,
                "type": RSVQA_TYPES[self.family], "answer_type": self.answer_type,
                "template": self.template, "tags": sorted(set(self.tags)), "objects": members,
                "object_ids": ids, "absence": self.absence}


class Balancer:
    """Answer balance over one partition (see the module docstring)."""

    def __init__(self, tolerance: int | None, max_count_share: float | None) -> None:
        self.tolerance = tolerance
        self.max_count_share = max_count_share
        self.yes_no: dict[str, Counter[str]] = defaultdict(Counter)
        self.counts: Counter[str] = Counter()
        self.n_counts = 0

    def accept(self, pair: Pair) -> bool:
        if pair.answer_type == "yes/no" and self.tolerance is not None:
            c = self.yes_no[pair.family]
            other = "no" if pair.answer == "yes" else "yes"
            if c[pair.answer] - c[other] >= self.tolerance:
                return False
        if pair.family == "counting" and self.max_count_share is not None:
            if self.counts[pair.answer] + 1 > self.max_count_share * (self.n_counts + 1) + COUNT_SLACK:
                return False
        if pair.answer_type == "yes/no":
            self.yes_no[pair.family][pair.answer] += 1
        if pair.family == "counting":
            self.counts[pair.answer] += 1
            self.n_counts += 1
        return True


@dataclass(frozen=True)
class VqaSettings:
    """The ``vqa`` stage's options (``$defs.vqa``)."""

    families: list[str]
    max_pairs: int
    max_per_family: int
    max_count: int
    count_lines: bool
    absence: bool
    absence_tags: list[str]
    seed: int
    yes_no_tolerance: int | None  # None: no yes/no balancing
    max_count_share: float | None  # None: no cap on count answers


class Known:
    """Nouns the sources are known to map: seen visible on tiles of this partition, with the
    sources that covered those tiles."""

    def __init__(self, fixed: Sequence[Noun] = ()) -> None:
        self.nouns: dict[str, Noun] = {n.text: n for n in fixed}
        self.where: dict[str, set[frozenset[str]]] = {n.text: {frozenset()} for n in fixed}

    def add_tile(self, tile: Tile) -> None:
        sources = frozenset(tile.sources)
        for noun in tile_nouns(tile):
            self.nouns.setdefault(noun.text, noun)
            self.where.setdefault(noun.text, set()).add(sources)

    def mapped_for(self, tile: Tile) -> list[Noun]:
        have = set(tile.sources)
        return [n for t, n in self.nouns.items() if any(s <= have for s in self.where[t])]


def tile_nouns(tile: Tile) -> list[Noun]:
    """The nouns of the tile's subjects: their phrases and the generic nouns they surely are."""
    out: dict[str, Noun] = {}
    for r in tile.subjects():
        out.setdefault(r.phrase, Noun(r.phrase, r.plural, r.mass, r.category))
        for g, (s, p, mass, cat) in GENERIC.items():
            if r.is_a(g):
                out.setdefault(s, Noun(s, p, mass, cat))
    return list(out.values())


def facts(tile: Tile, noun: Noun, known: set[str], settings: VqaSettings) -> Facts:
    could = tile.could(noun.text, noun.category)
    refs = [r for r in could if r.subject and r.is_a(noun.text)]
    exact = len(refs) == len(could)
    present: bool | None
    if refs:
        present = True
    elif (settings.absence and tile.full and noun.text in known and not could
          and not tile.mentions(noun.text, noun.category)):
        present = False
    else:
        present = None
    count: int | None = None
    area: float | None = None
    if present is False:
        count = None if noun.mass else 0
        area = 0.0
    elif present and tile.full:  # a number or a share bounds what else is there: coverage
        countable = ("polygon", "point", "line") if settings.count_lines else ("polygon", "point")
        if (exact and not noun.mass and all(not r.mass and r.kind in countable for r in refs)
                and all(same_tag_counts(tile, t) is not None for t in {r.tag for r in refs})
                and len(refs) <= settings.max_count):
            count = len(refs)
        if exact and all(r.kind == "polygon" for r in refs):
            union = shapely.union_all([r.geom for r in refs])
            area = float(union.area) / (tile.width * tile.height) if tile.width and tile.height else None
    unique = refs[0] if len(refs) == 1 and exact and tile.full else None
    return Facts(noun, refs, could, present, count, area, unique, tile)


def _all_visible(tile: Tile, noun: Noun, could: list[Referent]) -> bool:
    """Every feature of the tile the noun could name is visible (none too small to see)."""
    tags = {t for t, (own, loose) in tile.tag_loose.items()
            if could_be(noun.text, own, loose)} | {r.tag for r in could}
    return all(int(tile.tags.get(t, {}).get("count", 0)) ==
               int(tile.tags.get(t, {}).get("visible_count", 0)) for t in tags)


def _fill(rng: random.Random, key: str, **slots: str) -> tuple[str, Any]:
    """A question to be worded later (only pairs that are kept are worded: see Pair.word)."""
    return key, slots


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def presence_pairs(fs: list[Facts], rng: random.Random) -> list[Pair]:
    out = []
    for f in fs:
        if f.present is None:
            continue
        tid, q = _fill(rng, "presence_mass" if f.noun.mass else "presence", **f.noun.slots())
        out.append(Pair(q, _yes_no(f.present), "presence", tid, "yes/no",
                        [r.tag for r in f.refs], list(f.refs), absence=not f.present))
    return out


def counting_pairs(fs: list[Facts], rng: random.Random) -> list[Pair]:
    out = []
    for f in fs:
        if f.count is None:
            continue
        tid, q = _fill(rng, "counting", **f.noun.slots())
        out.append(Pair(q, str(f.count), "counting", tid, "number", [r.tag for r in f.refs],
                        list(f.refs), absence=f.count == 0))
    return out


def _disjoint(a: Facts, b: Facts) -> bool:
    if any(r in b.could for r in a.could):
        return False
    return (a.noun.text != b.noun.text and not b.noun.text.endswith(" " + a.noun.text)
            and not a.noun.text.endswith(" " + b.noun.text))


def comparison_pairs(fs: list[Facts], rng: random.Random) -> list[Pair]:
    out = []
    fs = [f for f in fs if f.count is not None or f.area is not None]
    for i, first in enumerate(fs):
        for second in fs[i + 1:]:
            if not (first.present or second.present) or not _disjoint(first, second):
                continue
            a, b = (second, first) if rng.random() < 0.5 else (first, second)
            tags = [r.tag for r in a.refs + b.refs]
            refs = list(a.refs + b.refs)
            absence = a.present is False or b.present is False
            if a.count is not None and b.count is not None and (a.count or b.count):
                kind = rng.choice(("comp_more", "comp_fewer", "comp_equal"))
                answer = {"comp_more": a.count > b.count, "comp_fewer": a.count < b.count,
                          "comp_equal": a.count == b.count}[kind]
                tid, q = _fill(rng, kind, pa=a.noun.plural, pb=b.noun.plural)
                out.append(Pair(q, _yes_no(answer), "comparison", tid, "yes/no", tags, refs, absence))
            if a.area is not None and b.area is not None:
                hi, lo = max(a.area, b.area), min(a.area, b.area)
                if hi >= AREA_MARGIN[0] * lo and hi - lo >= AREA_MARGIN[1]:
                    kind = rng.choice(("comp_area_more", "comp_area_less"))
                    answer = a.area > b.area if kind == "comp_area_more" else a.area < b.area
                    tid, q = _fill(rng, kind, xa=a.noun.slots()["x"], xb=b.noun.slots()["x"])
                    out.append(Pair(q, _yes_no(answer), "comparison", tid, "yes/no", tags, refs,
                                    absence))
    return out


def area_pairs(fs: list[Facts], scene: dict[str, Any] | None, land_labels: set[str],
               rng: random.Random) -> list[Pair]:
    out = []
    for f in fs:
        if not f.present or f.area is None or not f.all_visible:
            continue
        word = share_bucket(f.area)
        if word is None:
            continue
        tid, q = _fill(rng, "area_share", **f.noun.slots())
        out.append(Pair(q, word, "area", tid, "other", [r.tag for r in f.refs], list(f.refs)))
    if scene and scene.get("label") in land_labels and scene.get("prompt"):
        tid, q = _fill(rng, "area_main")
        out.append(Pair(q, str(scene["prompt"]), "area", tid, "other", [f"scene:{scene['label']}"]))
    return out


def position_pairs(tile: Tile, fs: list[Facts], rng: random.Random) -> list[Pair]:
    out = []
    for f in fs:
        u = f.unique
        if u is not None:
            for half in HALVES:
                share = u.share(half)
                other = u.share(OPPOSITE[half])
                if share >= HALF_IN or other >= HALF_IN:
                    tid, q = _fill(rng, "pos_half", s=f.noun.text, half=half)
                    out.append(Pair(q, _yes_no(share >= HALF_IN), "position", tid, "yes/no",
                                    [u.tag], [u]))
            best = max(CELL_NAMES, key=lambda c: u.cells[c])
            if u.cells[best] >= CELL_IN:
                tid, q = _fill(rng, "pos_where", s=f.noun.text)
                out.append(Pair(q, best, "position", tid, "other", [u.tag], [u]))
        if f.present and f.unique is None:
            for half in HALVES:
                inside = [r for r in f.refs if r.share(half) >= ANY_IN]
                nothing = not any(r.touch[half] for r in f.could)  # none within 2 px of it
                if inside or (nothing and tile.full and f.all_visible):
                    key = "pos_any_mass" if f.noun.mass else "pos_any"
                    slots = {**f.noun.slots(), "half": half}
                    tid, q = _fill(rng, key, **slots)
                    refs = inside or list(f.refs)
                    out.append(Pair(q, _yes_no(bool(inside)), "position", tid, "yes/no",
                                    [r.tag for r in refs], refs, absence=not inside))
    return out


def candidates(tile: Tile, meta: dict[str, Any], known: Known, settings: VqaSettings,
               rng: random.Random, land_labels: set[str]) -> dict[str, list[Pair]]:
    """Every pair the tile supports, by family (before balancing and caps)."""
    nouns = {n.text: n for n in tile_nouns(tile)}
    mapped = known.mapped_for(tile) if settings.absence and tile.full else []
    absent = [n for n in mapped if n.text not in nouns]
    rng.shuffle(absent)
    for n in absent[:ABSENT_NOUNS]:
        nouns[n.text] = n
    known_texts = {n.text for n in mapped}
    fs = [facts(tile, n, known_texts, settings) for n in sorted(nouns.values(), key=lambda n: n.text)]
    scene = meta.get("scene") if isinstance(meta.get("scene"), dict) else classify(meta)
    out: dict[str, list[Pair]] = {}
    for family in settings.families:
        if family == "presence":
            out[family] = presence_pairs(fs, rng)
        elif family == "counting":
            out[family] = counting_pairs(fs, rng)
        elif family == "comparison":
            out[family] = comparison_pairs(fs, rng)
        elif family == "area":
            out[family] = area_pairs(fs, scene, land_labels, rng)
        elif family == "position":
            out[family] = position_pairs(tile, fs, rng)
    return out


def select(cands: dict[str, list[Pair]], balancer: Balancer, settings: VqaSettings,
           rng: random.Random) -> list[Pair]:
    """Round robin over the families (in a shuffled order), each family's candidates shuffled;
    a pair is kept when the balancer accepts it, up to the per-family and per-tile caps."""
    queues = {f: list(p) for f, p in cands.items()}
    for q in queues.values():
        rng.shuffle(q)
    order = list(queues)
    rng.shuffle(order)
    taken: Counter[str] = Counter()
    seen: set[str] = set()
    out: list[Pair] = []
    while len(out) < settings.max_pairs and any(queues[f] for f in order):
        for f in order:
            while queues[f] and taken[f] < settings.max_per_family:
                pair = queues[f].pop()
                ident = pair.identity()
                if ident in seen or not balancer.accept(pair):
                    continue
                seen.add(ident)
                taken[f] += 1
                out.append(pair.word(rng))
                break
            else:
                queues[f] = []
            if len(out) >= settings.max_pairs:
                break
    return out


def _fixed_nouns(tags: Sequence[str]) -> list[Noun]:
    if not tags:
        return []
    from rsdata.osm.vocabulary import Vocabulary

    vocab = Vocabulary.default()
    out = []
    for tag in tags:
        key, _, value = tag.partition("=")
        phrase = vocab.phrase(key, value) if value else None
        if phrase is None:
            raise RecipeError(f"vqa.absence_tags: {tag!r} is not a key=value tag the OSM "
                              "vocabulary knows")
        out.append(Noun(phrase.singular, phrase.plural, phrase.mass, phrase.category))
    return out


class VqaStage(Stage):
    """Adds ``meta["vqa"]`` and the ``vqa.json`` member (never drops a sample)."""

    name = "vqa"
    settings_class: ClassVar[type | None] = VqaSettings
    needs_objects: ClassVar[bool] = True

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.settings = from_config(VqaSettings, self.config, "vqa")
        bad = sorted(set(self.settings.families) - set(FAMILIES))
        if bad:
            raise RecipeError(f"vqa.families: unknown {bad}; known: {list(FAMILIES)}")
        self.fixed = _fixed_nouns(self.settings.absence_tags)
        self.init_lazy()

    def init_lazy(self) -> None:
        self._lazy_rules: CaptionRules | None = None

    def rules(self) -> CaptionRules:
        if self._lazy_rules is None:
            self._lazy_rules = CaptionRules.default()
        return self._lazy_rules

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        from rsdata.tasks.scene import default_classes

        land = {c.name for c in default_classes().classes if c.level == "land"}
        balancer = Balancer(self.settings.yes_no_tolerance, self.settings.max_count_share)
        known = Known(self.fixed)
        batch: list[Sample] = []
        for sample in samples:
            stats.n_in += 1
            batch.append(sample)
            if len(batch) >= BATCH:
                yield from self._emit(batch, balancer, known, land, stats)
                batch = []
        if batch:
            yield from self._emit(batch, balancer, known, land, stats)

    def _emit(self, batch: list[Sample], balancer: Balancer, known: Known, land: set[str],
              stats: StageStats) -> Iterator[Sample]:
        tiles = build_tiles([(s.meta, s.key) for s in batch], "vqa", self.rules())
        for tile in tiles:
            known.add_tile(tile)
        for sample, tile in zip(batch, tiles):
            pairs = self.pairs(sample, tile, balancer, known, land)
            doc = {"version": VERSION, "pairs": [p.to_json() for p in pairs]}
            sample.meta["vqa"] = doc
            sample.extra["vqa.json"] = json.dumps({"key": sample.key, **doc}, ensure_ascii=False,
                                                  sort_keys=True).encode("utf-8")
            for p in pairs:
                stats.extra[f"family:{p.family}"] += 1
                if p.answer_type == "yes/no":
                    stats.extra[f"answer:{p.answer}"] += 1
            if not pairs:
                stats.extra["no_pairs"] += 1
            stats.n_out += 1
            yield sample

    def pairs(self, sample: Sample, tile: Tile, balancer: Balancer, known: Known,
              land: set[str]) -> list[Pair]:
        rng = random.Random(f"vqa:{self.settings.seed}:{sample.key}")
        cands = candidates(tile, sample.meta, known, self.settings, rng, land)
        return select(cands, balancer, self.settings, rng)
