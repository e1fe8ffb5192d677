"""Are the captions true of the picture? Score captions against labels made by eye from the images.

    python -m benchmarks.bench_caption_truth [--recipe RECIPE ...] [--corpus DIR ...]
        [--labels tests/data/picture_truth.jsonl] [--json PATH] [--details] [--keep]

The labels (``tests/data/picture_truth.jsonl``, one tile a line; README "Picture truth") were
made by looking at each tile's JPEG alone, never at its caption or OSM statistics: which
:data:`CLASSES` are ``visible``, which are ``uncertain`` (perhaps there, too small or too
ambiguous to say) and the ``dominant`` class (covering most of the picture).

For each recipe (default: ``pipelines/demo.yaml`` and ``pipelines/banepa.yaml``, each run with
``rsdata run`` into a temp dir) or each ready corpus (``--corpus``), the labelled tiles are joined
by key (keys are ``{raster id}_{col}_{row}``); a tile whose bounds moved (by more than 1% of its
width) is not scored but listed. Reported:

* ``only_visible``: share of labelled tiles whose captions (all of them) name only things that
  are visible. Each phrase a caption names is looked up in :data:`PHRASE_CLASSES` (phrase ->
  the classes it may stand for); it passes when one of those classes is ``visible`` or
  ``uncertain``. A phrase for something no picture shows (:data:`NOT_VISIBLE`: "nature reserve",
  "conservation area" ...) always fails. Phrases the table does not classify
  (:data:`UNVERIFIABLE`: fences, power lines ...) and vocabulary phrases the table lacks
  (``unmapped``) never fail and are counted separately, so a hole in the table shows. Target
  >= 95%.
* ``dominant_mentioned``: of the tiles where some source maps the dominant class (one of the
  sample's OSM/land-cover tags maps to it through the same table), the share where a caption
  names it (any caption; also given for the primary caption alone, and together with
  only_visible). :data:`DOMINANT_ACCEPTS` lets "buildings" answer a dense residential tile.
  Target >= 80%.
* over every caption of the corpus: vocabulary size (distinct words), distinct sentence
  skeletons (numbers and vocabulary phrases replaced by slots), the most common phrase and the
  most common fragment (word 3- to 6-gram) with the share of captions holding it, and every
  fragment in more than 5% of captions. Two readings of the issue's "no constant fragment in
  > 5%": *template fragments* (the target) are runs of 3-6 words with what the data fills in
  masked (feature phrases, numbers, grid positions, share words, attribute words such as roof
  materials; punctuation ends a run), so "seen from above" counts and "the top right" does not;
  *raw fragments* keep every word, so they also show content repeated because the data repeat
  it ("tin and concrete roofs" on most Banepa tiles), reported beside them, not a target.

The phrases found in captions are those of :data:`PHRASE_CLASSES`, the OSM vocabulary (singular
and plural), the synonyms of ``rsdata/data/caption_rules.yaml`` when that file exists, and the
tag phrases of the sample itself. Misses are reported, not an error.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LABELS = REPO / "tests" / "data" / "picture_truth.jsonl"
DEFAULT_RECIPES = ("pipelines/demo.yaml", "pipelines/banepa.yaml")
TARGET_ONLY_VISIBLE = 0.95
TARGET_DOMINANT = 0.80
CONSTANT_SHARE = 0.05
FRAGMENT_N = (3, 6)
BOUNDS_TOLERANCE = 0.01  # of the tile's width

#: The fixed label classes (README "Picture truth" says how each was judged by eye).
CLASSES: tuple[str, ...] = (
    "building",               # any roofed structure
    "residential_area",       # an area of dwellings (village, township, town blocks)
    "industrial_commercial",  # sheds, depots, treatment works, big commercial roofs
    "road_paved",             # tarred/concrete roads and streets
    "road_unpaved",           # dirt and gravel roads, farm tracks, firebreaks, paths
    "railway",
    "river",                  # rivers, streams, drainage lines with a channel
    "water_body",             # ponds, farm dams, reservoirs, lakes
    "wetland",
    "forest",                 # closed canopy, including pine plantations
    "trees_scattered",        # single trees, tree lines, riparian trees and bush strips
    "orchard",                # orchards and vineyards
    "farmland",               # fields and fenced pasture
    "grassland",              # unfenced grass, lawns, vacant grassy lots, felled compartments
    "shrubland",              # natural bush, fynbos, renosterveld
    "bare_soil",              # bare yards, vacant dirt lots, erosion gullies
    "rock",
    "sports_field",
)

_PAVED_OR_NOT = ("road_paved", "road_unpaved")
_BUILDING = ("building",)
_WORKS = ("building", "industrial_commercial")
_SETTLEMENT = ("residential_area", "building")
_WATER = ("water_body", "river", "wetland")

#: Caption phrase (lower case, singular; plurals are added) -> the classes it may stand for. A
#: phrase passes the only-visible check when one of them is visible (or uncertain) in the tile.
PHRASE_CLASSES: dict[str, tuple[str, ...]] = {
    # buildings
    **{p: _BUILDING for p in (
        "building", "house", "home", "dwelling", "residential building", "apartment building",
        "bungalow", "hut", "farmhouse", "farm building", "farmstead", "homestead", "outbuilding",
        "barn", "greenhouse", "shed", "garage", "garage block", "structure", "roof",
        "ruined building", "service building", "utility building", "public building",
        "school building", "university building", "hospital", "hotel", "temple", "church",
        "chapel", "cathedral", "mosque", "place of worship", "church grounds", "storage tank",
        "silo", "tower",
        "water tower", "mobile home", "row of terraced houses", "kindergarten", "fire station",
        "pavilion", "grandstand", "supermarket", "airport terminal", "hangar", "parking garage")},
    **{p: _WORKS for p in (
        "industrial building", "warehouse", "factory", "commercial building", "office building",
        "retail building", "industrial area", "commercial area", "retail area", "industrial estate",
        "sewage treatment plant", "waterworks", "power station", "electrical substation",
        "petrol station", "bus station", "car wash", "marketplace", "depot",
        "waste transfer station", "recycling point", "prison")},
    "parking lot": ("industrial_commercial", "road_paved", "bare_soil"),
    "car park": ("industrial_commercial", "road_paved", "bare_soil"),
    **{p: ("building", "sports_field") for p in (
        "school", "school grounds", "schoolyard", "school campus", "college campus",
        "university campus")},
    **{p: _SETTLEMENT for p in (
        "residential area", "neighbourhood", "neighborhood", "housing area", "settlement",
        "village", "town", "township", "suburb", "built-up area", "urban area")},
    # roads and railways
    **{p: _PAVED_OR_NOT for p in (
        "road", "minor road", "small road", "residential road", "residential street", "street",
        "service road", "access road", "local road", "secondary road", "link road",
        "unclassified road", "cycle path", "walkway", "flight of steps", "lane", "bridge")},
    **{p: ("road_paved",) for p in (
        "main road", "major road", "highway", "motorway", "trunk road", "primary road",
        "paved road", "tarred road", "asphalt road", "highway ramp", "motorway ramp",
        "pedestrian street")},
    **{p: ("road_unpaved",) for p in (
        "dirt track", "dirt road", "farm track", "unpaved track", "unpaved road", "gravel road",
        "track", "path", "footpath", "trail", "bridleway", "firebreak", "jeep track")},
    **{p: ("railway",) for p in (
        "railway", "railway track", "railway line", "railway land", "rail line", "light rail track",
        "narrow-gauge railway", "heritage railway", "railway station", "railway platform",
        "train station", "tram track", "metro line")},
    # water
    **{p: ("river",) for p in (
        "river", "stream", "creek", "brook", "canal", "ditch", "drainage ditch", "drain",
        "tidal channel", "waterfall", "rapids", "riverbed", "river bed", "watercourse", "weir",
        "drainage line", "canal lock")},
    **{p: ("water_body",) for p in (
        "pond", "dam", "farm dam", "reservoir", "lake", "fish pond", "fish farm", "basin",
        "retention basin", "lagoon", "oxbow lake", "swimming pool", "water hazard",
        "shallow water")},
    "water": _WATER,
    "open water": _WATER,
    **{p: ("wetland",) for p in (
        "wetland", "marsh", "swamp", "reed bed", "bog", "fen", "wet meadow", "salt marsh",
        "tidal flat", "mud", "mangrove forest")},
    # trees, crops, grass, bush, bare ground
    **{p: ("forest",) for p in (
        "forest", "woodland", "woods", "wood", "pine plantation", "plantation",
        "tree plantation", "timber plantation")},
    "trees": ("forest", "trees_scattered"),
    "tree cover": ("forest", "trees_scattered"),
    "mangroves": ("wetland", "forest"),
    "herbaceous wetland": ("wetland",),
    "bare or sparsely vegetated land": ("bare_soil", "rock", "grassland", "shrubland"),
    "tree": ("trees_scattered", "forest"),
    **{p: ("trees_scattered",) for p in (
        "row of trees", "tree row", "tree line", "hedge", "scattered trees")},
    **{p: ("orchard",) for p in ("orchard", "vineyard", "plant nursery")},
    **{p: ("farmland",) for p in (
        "farmland", "farm field", "cropland", "crops", "crop field", "arable land", "paddock",
        "pasture", "cultivated field", "ploughed field", "centre-pivot field")},
    "field": ("farmland", "grassland", "sports_field"),
    "farmyard": ("farmland", "building", "bare_soil"),
    "greenhouse complex": ("building", "farmland"),
    "allotment garden": ("farmland", "residential_area"),
    **{p: ("grassland",) for p in (
        "grass", "grassland", "meadow", "lawn", "village green", "greenfield site",
        "golf course", "fairway", "putting green")},
    "park": ("grassland", "trees_scattered"),
    "garden": ("grassland", "trees_scattered", "residential_area"),
    "recreation ground": ("grassland", "sports_field"),
    **{p: ("shrubland",) for p in (
        "scrub", "scrubland", "shrubland", "heathland", "heath", "fynbos", "bushland")},
    "bush": ("shrubland", "trees_scattered"),
    **{p: ("bare_soil",) for p in (
        "bare soil", "bare ground", "brownfield site", "sand", "sand dune", "beach",
        "construction site", "landfill", "erosion gully")},
    "quarry": ("bare_soil", "rock", "industrial_commercial"),
    **{p: ("rock",) for p in (
        "bare rock", "rock outcrop", "rock", "cliff", "scree", "boulder")},
    **{p: ("sports_field",) for p in (
        "sports field", "playing field", "pitch", "football pitch", "football field", "stadium",
        "running track", "sports centre", "playground", "tennis court", "riding arena")},
}

#: Phrases for what no picture shows (designations, boundaries, places): naming one fails.
NOT_VISIBLE: frozenset[str] = frozenset({
    "nature reserve", "conservation area", "protected area", "national park", "reserve",
    "boundary", "administrative area", "municipality", "district", "military area",
    "power generator"})  # a generator (Banepa) cannot be told from a shed at 0.5 m

#: Phrases outside the label classes (not judged by eye): never fail, counted separately.
UNVERIFIABLE: frozenset[str] = frozenset({
    "fence", "wall", "retaining wall", "city wall", "power line", "transmission line",
    "electricity pylon", "power pole", "mast", "pipeline", "chimney", "crane", "embankment",
    "dyke", "breakwater", "pier", "quay", "lighthouse", "windmill", "cemetery", "graveyard",
    "spectator stand", "helipad", "runway", "taxiway", "apron", "airfield", "airstrip",
    "campsite", "caravan park", "picnic site", "rest area", "canopy", "fountain", "hill",
    # rare here, or words too common in free text to count as a class ("common", "rough")
    "bay", "coastline", "dock", "glacier", "heliport", "lock gate", "marina", "reef", "shingle",
    "slipway", "motorway service area", "parking space", "ferry terminal", "tee box", "bunker",
    "driving range", "dog park", "mini golf course", "theme park", "water park", "zoo",
    "flowerbed", "rough", "common", "snow and ice", "moss and lichen"})

#: What a caption may name to answer a dominant class (besides the class itself).
DOMINANT_ACCEPTS: dict[str, frozenset[str]] = {
    "building": frozenset({"building", "residential_area"}),
    "residential_area": frozenset({"building", "residential_area"}),
    "industrial_commercial": frozenset({"industrial_commercial", "building"}),
}

NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty hundred dozen".split())
WORD_RE = re.compile(r"[a-z]+(?:[-'][a-z]+)*")
TOKEN_RE = re.compile(r"[a-z]+(?:[-'][a-z]+)*|\d+(?:[.,]\d+)*")
NUMBER_RE = re.compile(r"\b\d+(?:[.,]\d+)*\b")


# --- the phrase table -------------------------------------------------------------------------


def plural(phrase: str) -> str:
    """A simple English plural of the last word (enough for matching captions)."""
    head, _, last = phrase.rpartition(" ")
    if re.search(r"(s|x|z|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    elif last.endswith("f") and last not in ("roof", "cliff", "reef"):
        last = last[:-1] + "ves"
    else:
        last += "s"
    return f"{head} {last}".strip()


def _irregular(phrase: str) -> list[str]:
    out = []
    if phrase.startswith("row of "):
        out.append("rows of " + phrase[7:])
    if phrase.startswith("place of "):
        out.append("places of " + phrase[9:])
    if phrase.startswith("flight of "):
        out.append("flights of " + phrase[10:])
    if phrase.endswith("house"):
        out.append(phrase + "s")
    return out


def phrase_table() -> dict[str, tuple[str, ...] | None]:
    """Every form a caption may use -> classes; ``()`` = not visible; ``None`` = unverifiable."""
    table: dict[str, tuple[str, ...] | None] = {}
    for p in sorted(UNVERIFIABLE):
        for form in (p, plural(p)):
            table.setdefault(form, None)
    for p in sorted(NOT_VISIBLE):
        for form in (p, plural(p)):
            table[form] = ()
    for p, classes in PHRASE_CLASSES.items():
        assert all(c in CLASSES for c in classes), (p, classes)
        for form in (p, plural(p), *_irregular(p)):
            table.setdefault(form, classes)
    table["trees"] = PHRASE_CLASSES["trees"]
    return table


def lexicon_phrases() -> set[str]:
    """Phrases the pipeline can write: the OSM vocabulary and the caption-rule synonyms."""
    phrases: set[str] = set()
    try:
        from rsdata.osm.vocabulary import Vocabulary

        for _, _, ph in Vocabulary.default().entries():
            phrases.update({ph.singular.lower(), ph.plural.lower()})
    except Exception:  # noqa: BLE001 - the benchmark still runs on its own table
        pass
    rules = REPO / "rsdata" / "data" / "caption_rules.yaml"
    if rules.is_file():
        try:
            import yaml

            data = yaml.safe_load(rules.read_text(encoding="utf-8")) or {}
            for forms in (data.get("synonyms") or {}).values():
                for pair in forms or []:
                    words = pair if isinstance(pair, list) else [pair]
                    phrases.update(str(w).lower() for w in words)
        except Exception:  # noqa: BLE001
            pass
    return phrases


@dataclass
class Matcher:
    """Finds phrases in captions, longest first, and says what each names."""

    table: dict[str, tuple[str, ...] | None] = field(default_factory=phrase_table)
    extra: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._cache: dict[frozenset[str], re.Pattern[str]] = {}

    def pattern(self, more: Iterable[str] = ()) -> re.Pattern[str]:
        more = frozenset(p.lower() for p in more if p and p.lower() not in self.table)
        if more not in self._cache:
            phrases = sorted(set(self.table) | self.extra | more, key=lambda p: (-len(p), p))
            alt = "|".join(re.escape(p) for p in phrases)
            self._cache[more] = re.compile(rf"(?<![a-z-])(?:{alt})(?![a-z-])")
        return self._cache[more]

    def phrases(self, text: str, more: Iterable[str] = ()) -> list[str]:
        return [m.group(0) for m in self.pattern(more).finditer(text.lower())]

    def classes(self, phrase: str) -> tuple[str, ...] | None | str:
        """Classes of a phrase; ``()`` not visible, ``None`` unverifiable, ``"unmapped"``."""
        phrase = phrase.lower()
        if phrase in self.table:
            return self.table[phrase]
        return "unmapped"


# --- scoring one tile -------------------------------------------------------------------------


@dataclass
class CaptionCheck:
    text: str
    ok: bool
    named: list[tuple[str, list[str]]]  # phrase, its classes
    wrong: list[str]                    # phrases naming something not visible
    unverifiable: list[str]
    unmapped: list[str]


def check_caption(text: str, label: dict[str, Any], matcher: Matcher,
                  more: Iterable[str] = ()) -> CaptionCheck:
    """Does the caption name only classes visible (or uncertain) in the labelled tile?"""
    seen = set(label["visible"]) | set(label.get("uncertain", []))
    named, wrong, unverifiable, unmapped = [], [], [], []
    for phrase in matcher.phrases(text, more):
        classes = matcher.classes(phrase)
        if classes is None:
            unverifiable.append(phrase)
        elif classes == "unmapped":
            unmapped.append(phrase)
        else:
            named.append((phrase, list(classes)))
            if not seen & set(classes):
                wrong.append(phrase)
    return CaptionCheck(text, not wrong, named, wrong, unverifiable, unmapped)


def names_class(check: CaptionCheck, accepted: Iterable[str]) -> bool:
    accepted = set(accepted)
    return any(accepted & set(classes) for _, classes in check.named)


def dominant_accepts(dominant: str) -> frozenset[str]:
    return DOMINANT_ACCEPTS.get(dominant, frozenset({dominant}))


def source_phrases(meta: dict[str, Any]) -> list[str]:
    """The phrases the tile's sources give: OSM tags (``osm.tags``) and land-cover classes
    (``landcover.classes`` of the landcover_join stage)."""
    out = []
    for tag in (meta.get("osm") or {}).get("tags", []):
        out += [str(tag.get(k)) for k in ("phrase", "plural") if tag.get(k)]
    for cls in (meta.get("landcover") or {}).get("classes", []) or []:
        if isinstance(cls, dict) and cls.get("code") is not None:
            out += [str(cls.get(k)) for k in ("phrase", "plural") if cls.get(k)]
    return out


def mapped_classes(meta: dict[str, Any], matcher: Matcher) -> set[str]:
    """Classes some source maps in the tile: its OSM / land-cover phrases through the table."""
    out: set[str] = set()
    for phrase in source_phrases(meta):
        classes = matcher.classes(phrase)
        if isinstance(classes, tuple):
            out.update(classes)
    return out


def bounds_moved(label: dict[str, Any], meta: dict[str, Any]) -> bool:
    geo = meta.get("geo") or {}
    got, want = geo.get("bounds"), label.get("bounds")
    if not got or not want:
        return False
    width = abs(want[2] - want[0]) or 1.0
    return geo.get("crs") != label.get("crs") or max(
        abs(a - b) for a, b in zip(got, want)) > BOUNDS_TOLERANCE * width


@dataclass
class TileScore:
    key: str
    scene: str
    only_visible: bool
    dominant: str
    dominant_mapped: bool
    dominant_any: bool
    dominant_primary: bool
    wrong: list[dict[str, Any]]
    osm_not_seen: list[str]  # visible OSM tag phrases whose classes the labeller did not see
    unverifiable: list[str]
    unmapped: list[str]


def score_tile(label: dict[str, Any], captions: list[str], meta: dict[str, Any],
               matcher: Matcher, primary: str | None = None) -> TileScore:
    """Score one labelled tile's captions (``primary`` defaults to the first caption)."""
    tag_phrases = source_phrases(meta)
    checks = [check_caption(c, label, matcher, tag_phrases) for c in captions]
    primary_check = (check_caption(primary, label, matcher, tag_phrases) if primary
                     else (checks[0] if checks else None))
    accepted = dominant_accepts(label["dominant"])
    seen = set(label["visible"]) | set(label.get("uncertain", []))
    osm_not_seen = []
    for tag in (meta.get("osm") or {}).get("tags", []):
        classes = matcher.classes(str(tag.get("phrase") or ""))
        if tag.get("visible") and isinstance(classes, tuple) and not seen & set(classes):
            osm_not_seen.append(str(tag.get("phrase")))
    return TileScore(
        key=label["key"], scene=label.get("scene", "?"),
        only_visible=all(c.ok for c in checks),
        dominant=label["dominant"],
        dominant_mapped=bool(accepted & mapped_classes(meta, matcher)),
        dominant_any=any(names_class(c, accepted) for c in checks),
        dominant_primary=bool(primary_check and names_class(primary_check, accepted)),
        wrong=[{"caption": c.text, "phrases": c.wrong} for c in checks if c.wrong],
        osm_not_seen=osm_not_seen,
        unverifiable=sorted({p for c in checks for p in c.unverifiable}),
        unmapped=sorted({p for c in checks for p in c.unmapped}))


def share(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def summarize_tiles(tiles: list[TileScore]) -> dict[str, Any]:
    mapped = [t for t in tiles if t.dominant_mapped]
    return {
        "tiles": len(tiles),
        "only_visible": share(sum(t.only_visible for t in tiles), len(tiles)),
        "dominant_mapped_tiles": len(mapped),
        "dominant_mentioned": share(sum(t.dominant_any for t in mapped), len(mapped)),
        "dominant_mentioned_primary": share(sum(t.dominant_primary for t in mapped), len(mapped)),
        "visible_and_dominant": share(sum(t.dominant_any and t.only_visible for t in mapped),
                                      len(mapped)),
        "dominant_mentioned_all_tiles": share(sum(t.dominant_any for t in tiles), len(tiles)),
        "unverifiable_phrases": sorted({p for t in tiles for p in t.unverifiable}),
        "unmapped_phrases": sorted({p for t in tiles for p in t.unmapped}),
    }


# --- language statistics ----------------------------------------------------------------------


def skeleton(text: str, matcher: Matcher, more: Iterable[str] = ()) -> str:
    """The sentence with vocabulary phrases as <P> and numbers as <N>."""
    low = matcher.pattern(more).sub("<P>", text.lower())
    low = NUMBER_RE.sub("<N>", low)
    tokens = re.findall(r"<[PN]>|[a-z]+(?:[-'][a-z]+)*|[.,;:]", low)
    words = [("<N>" if w in NUMBER_WORDS else w) for w in tokens]
    return " ".join(words)


CELL_WORDS_RE = re.compile(r"(?<![\w-])(?:(?:top|bottom)[ -](?:left|right)|top|bottom|left|right|center|"
                           r"centre|middle)(?![\w-])")
SHARE_WORDS_RE = re.compile(r"(?<![\w-])(?:nearly all|almost all|most|more than half|about three quarters|"
                            r"about two thirds|about half|a large part|about a third|about a quarter|"
                            r"about a tenth|a small part|a small share|part)(?= of\b)")
STOREY_RE = re.compile(r"(?<![\w-])[a-z0-9]+-storey(?![\w-])")


@functools.cache
def attribute_words() -> tuple[str, ...]:
    """The words captions use for attribute values (roof materials, surfaces ...)."""
    rules = REPO / "rsdata" / "data" / "caption_rules.yaml"
    if not rules.is_file():
        return ()
    import yaml

    data = yaml.safe_load(rules.read_text(encoding="utf-8")) or {}
    words = {str(w).lower() for spec in (data.get("attributes") or {}).values()
             if isinstance(spec, dict) for w in (spec.get("values") or {}).values()}
    return tuple(sorted(words, key=len, reverse=True))


def template_fragments(text: str, matcher: Matcher, more: Iterable[str] = (),
                       attrs: tuple[str, ...] = ()) -> set[str]:
    """Runs of 3-6 template words: data-filled words masked, punctuation ends a run."""
    low = text.lower()
    # "roofs" of a roof attribute ("the roofs", "tin roofs") is the template's noun, not the
    # feature building=roof
    lead = "|".join(map(re.escape, ("the", "and", "all", "mostly") + attrs))
    low = re.sub(rf"(?<![\w-])((?:{lead}) )roofs(?![\w-])", r"\1qroofsq", low)
    low = matcher.pattern(more).sub(" <P> ", low).replace("qroofsq", "roofs")
    low = NUMBER_RE.sub(" <N> ", low)
    low = CELL_WORDS_RE.sub(" <C> ", low)
    low = SHARE_WORDS_RE.sub(" <S> ", low)
    low = STOREY_RE.sub(" <A> ", low)
    if attrs:
        low = re.sub(rf"(?<![\w-])(?:{'|'.join(map(re.escape, attrs))})(?![\w-])", " <A> ", low)
    out: set[str] = set()
    for run in re.split(r"[.,;:!?]", low):
        toks = re.findall(r"<[PNCSA]>|[a-z]+(?:[-'][a-z]+)*", run)
        toks = ["<N>" if t in NUMBER_WORDS or t == "single" and i and toks[i - 1] == "a" else t
                for i, t in enumerate(toks)]
        for n in range(FRAGMENT_N[0], FRAGMENT_N[1] + 1):
            grams = (toks[i:i + n] for i in range(len(toks) - n + 1))
            out |= {" ".join(g) for g in grams if not any(t.startswith("<") for t in g)}
    return out


def longest_forms(frequent: dict[str, int]) -> list[str]:
    """Frequent fragments, dropping one inside a longer one held by as many captions."""
    return sorted((f for f, k in frequent.items()
                   if not any(g != f and f" {f} " in f" {g} " and k2 == k for g, k2 in frequent.items())),
                  key=lambda f: (-frequent[f], -len(f), f))


def fragments(text: str, lo: int = FRAGMENT_N[0], hi: int = FRAGMENT_N[1]) -> set[str]:
    tokens = TOKEN_RE.findall(text.lower())
    return {" ".join(tokens[i:i + n])
            for n in range(lo, hi + 1) for i in range(len(tokens) - n + 1)}


def text_stats(captions: list[str], matcher: Matcher, more: Iterable[str] = (),
               constant_share: float = CONSTANT_SHARE) -> dict[str, Any]:
    """Vocabulary size, skeletons, the most common phrase/fragment and constant fragments."""
    n = len(captions)
    words = Counter(w for c in captions for w in WORD_RE.findall(c.lower()))
    skeletons = Counter(skeleton(c, matcher, more) for c in captions)
    phrase_caps = Counter(p for c in captions for p in set(matcher.phrases(c, more)))
    frag_caps = Counter(f for c in captions for f in fragments(c))
    frequent = {f: k for f, k in frag_caps.items() if n and k / n > constant_share}
    constant = longest_forms(frequent)
    attrs = attribute_words()
    tmpl_caps = Counter(f for c in captions for f in template_fragments(c, matcher, more, attrs))
    tmpl_frequent = {f: k for f, k in tmpl_caps.items() if n and k / n > constant_share}
    top_tmpl = (max(tmpl_caps.items(), key=lambda fk: (fk[1], len(fk[0].split()), fk[0]))
                if tmpl_caps else ("", 0))
    top_phrase = phrase_caps.most_common(1)[0] if phrase_caps else ("", 0)
    top_frag = (max(frag_caps.items(), key=lambda fk: (fk[1], len(fk[0].split()), fk[0]))
                if frag_caps else ("", 0))
    return {
        "captions": n,
        "vocabulary_size": len(words),
        "skeletons": len(skeletons),
        "top_skeleton": {"skeleton": skeletons.most_common(1)[0][0] if skeletons else "",
                         "share": share(skeletons.most_common(1)[0][1], n) if skeletons else None},
        "top_phrase": {"phrase": top_phrase[0], "share": share(top_phrase[1], n)},
        "top_fragment": {"fragment": top_frag[0], "share": share(top_frag[1], n)},
        "constant_fragments": [{"fragment": f, "share": share(frequent[f], n)} for f in constant],
        "top_template_fragment": {"fragment": top_tmpl[0], "share": share(top_tmpl[1], n)},
        "constant_template_fragments": [{"fragment": f, "share": share(tmpl_frequent[f], n)}
                                        for f in longest_forms(tmpl_frequent)],
    }


# --- corpora ----------------------------------------------------------------------------------


def load_labels(path: Path = LABELS) -> dict[str, dict[str, Any]]:
    labels = {}
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        bad = [c for c in (*row["visible"], *row.get("uncertain", []), row["dominant"])
               if c not in CLASSES]
        if bad:
            raise ValueError(f"{path}:{i}: unknown classes {bad}")
        labels[row["key"]] = row
    return labels


def read_corpus(out_dir: Path) -> list[dict[str, Any]]:
    """Every sample: key, captions, primary caption, meta."""
    sys.path.insert(0, str(REPO))
    from rsdata.corpus import Corpus

    samples = []
    for entry in Corpus(out_dir).entries(members=("json", "txt")):
        meta = json.loads(entry.members["json"])
        caps = [str(c.get("text", "")) for c in meta.get("captions") or []]
        primary = entry.members["txt"].decode("utf-8").strip() if "txt" in entry.members else None
        samples.append({"key": entry.key, "captions": caps, "primary": primary or None,
                        "meta": meta})
    return samples


def run_recipe(recipe: Path, out: Path) -> None:
    cmd = [sys.executable, "-m", "rsdata", "run", str(recipe), "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def score_corpus(name: str, samples: list[dict[str, Any]], labels: dict[str, dict[str, Any]],
                 matcher: Matcher) -> dict[str, Any]:
    tiles, moved = [], []
    for s in samples:
        label = labels.get(s["key"])
        if label is None:
            continue
        if bounds_moved(label, s["meta"]):
            moved.append(s["key"])
            continue
        tiles.append(score_tile(label, s["captions"], s["meta"], matcher, s["primary"]))
    all_caps = [c for s in samples for c in s["captions"]]
    tag_phrases = {p for s in samples for p in source_phrases(s["meta"])}
    return {
        "corpus": name, "samples": len(samples),
        "labelled_in_corpus": len(tiles), "bounds_moved": moved,
        "labelled_not_in_corpus": sorted(
            k for k, lab in labels.items()
            if k not in {s["key"] for s in samples} and _same_scene(lab, samples)),
        **summarize_tiles(tiles),
        "text": text_stats(all_caps, matcher, tag_phrases),
        "per_tile": [t.__dict__ for t in tiles],
    }


def _same_scene(label: dict[str, Any], samples: list[dict[str, Any]]) -> bool:
    prefixes = {s["key"].rsplit("_", 2)[0] for s in samples}
    return label["key"].rsplit("_", 2)[0] in prefixes


# --- report -----------------------------------------------------------------------------------


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def report(results: list[dict[str, Any]], details: bool = False) -> str:
    lines = []
    head = (f"{'corpus':<10} {'labelled':>8} {'only visible':>13} {'dominant':>9} "
            f"{'dom.prim':>9} {'both':>7} {'words':>6} {'skel.':>6} {'top template fragment':<34}")
    lines += [head, "-" * len(head)]
    for r in results:
        t = r["text"]
        frag = f"{t['top_template_fragment']['fragment']!r} {pct(t['top_template_fragment']['share'])}"
        lines.append(f"{r['corpus']:<10} {r['labelled_in_corpus']:>8} {pct(r['only_visible']):>13} "
                     f"{pct(r['dominant_mentioned']):>9} {pct(r['dominant_mentioned_primary']):>9} "
                     f"{pct(r['visible_and_dominant']):>7} {t['vocabulary_size']:>6} "
                     f"{t['skeletons']:>6} {frag:<34}")
    lines.append(f"targets: only visible >= {TARGET_ONLY_VISIBLE:.0%}, dominant mentioned >= "
                 f"{TARGET_DOMINANT:.0%} (of tiles whose dominant class some source maps)")
    for r in results:
        t = r["text"]
        ok_v = "PASS" if (r["only_visible"] or 0) >= TARGET_ONLY_VISIBLE else "FAIL"
        ok_d = ("n/a: no source maps a labelled tile's dominant class"
                if r["dominant_mentioned"] is None
                else "PASS" if r["dominant_mentioned"] >= TARGET_DOMINANT else "FAIL")
        lines += ["", f"{r['corpus']}: {r['samples']} samples, {r['labelled_in_corpus']} labelled "
                      f"({r['dominant_mapped_tiles']} with a mapped dominant class); only visible "
                      f"{ok_v}, dominant {ok_d}; dominant named in "
                      f"{pct(r['dominant_mentioned_all_tiles'])} of all labelled tiles",
                  f"  most common phrase {t['top_phrase']['phrase']!r} in "
                  f"{pct(t['top_phrase']['share'])} of {t['captions']} captions; top skeleton "
                  f"{t['top_skeleton']['skeleton']!r} {pct(t['top_skeleton']['share'])}"]
        tmpl = t["constant_template_fragments"]
        lines.append(f"  template fragments in > {CONSTANT_SHARE:.0%} of captions (target: none): "
                     f"{len(tmpl)}" + (": " + "; ".join(f"{c['fragment']!r} {pct(c['share'])}"
                                                        for c in tmpl[:12]) if tmpl else ""))
        const = t["constant_fragments"]
        lines.append(f"  raw fragments (content words kept) in > {CONSTANT_SHARE:.0%} of captions: "
                     f"{len(const)}" + (": " + "; ".join(f"{c['fragment']!r} {pct(c['share'])}"
                                                         for c in const[:8]) if const else ""))
        if r["bounds_moved"]:
            lines.append(f"  bounds moved (not scored): {', '.join(r['bounds_moved'])}")
        if r["labelled_not_in_corpus"]:
            lines.append(f"  labelled tiles not in this corpus: {len(r['labelled_not_in_corpus'])}")
        if r["unmapped_phrases"]:
            lines.append(f"  phrases the table lacks: {', '.join(r['unmapped_phrases'])}")
        if r["unverifiable_phrases"]:
            lines.append("  unverifiable phrases (not scored): "
                         + ", ".join(r["unverifiable_phrases"]))
        wrong = Counter(p for tile in r["per_tile"] for w in tile["wrong"]
                        for p in set(w["phrases"]))
        if wrong:
            lines.append("  phrases naming what the picture does not show (captions): "
                         + ", ".join(f"{p} {n}" for p, n in wrong.most_common()))
        if details:
            for tile in r["per_tile"]:
                if tile["wrong"] or (tile["dominant_mapped"] and not tile["dominant_any"]):
                    lines.append(f"    {tile['key']}: dominant {tile['dominant']}"
                                 f"{'' if tile['dominant_any'] else ' (not named)'}; "
                                 + "; ".join(f"{w['caption']!r} -> {w['phrases']}"
                                             for w in tile["wrong"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_caption_truth",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", action="append", default=[],
                    help="recipe to run and score (repeatable; default "
                         f"{', '.join(DEFAULT_RECIPES)})")
    ap.add_argument("--corpus", action="append", default=[], type=Path,
                    help="score this ready corpus (output of rsdata run) instead of running "
                         "recipes")
    ap.add_argument("--labels", type=Path, default=LABELS)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--details", action="store_true", help="list every failing tile")
    ap.add_argument("--keep", action="store_true", help="keep the temp corpora")
    ap.add_argument("--quick", action="store_true", help="(no effect: the benchmark is small)")
    args = ap.parse_args(argv)
    labels = load_labels(args.labels)
    matcher = Matcher(extra=lexicon_phrases())
    results = []
    tmp = tempfile.mkdtemp(prefix="rsdata-caption-truth-")
    corpora: list[tuple[str, Path]] = [(p.name, p) for p in args.corpus]
    if not corpora:
        for recipe in args.recipe or list(DEFAULT_RECIPES):
            path = Path(recipe) if Path(recipe).is_absolute() else REPO / recipe
            out = Path(tmp) / path.stem
            print(f"rsdata run {recipe} -> {out}", flush=True)
            run_recipe(path, out)
            corpora.append((path.stem, out))
    for name, out in corpora:
        results.append(score_corpus(name, read_corpus(out), labels, matcher))
    commit = subprocess.run(["git", "log", "-1", "--format=%h"], cwd=REPO, capture_output=True,
                    text=True).stdout.strip()
    doc = {"benchmark": "caption_truth", "commit": commit, "labels": str(args.labels),
           "labels_total": len(labels), "results": results}
    print(report(results, args.details))
    summary = [{k: v for k, v in r.items() if k != "per_tile"} for r in results]
    print(json.dumps({"summary": summary}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"corpora kept in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
