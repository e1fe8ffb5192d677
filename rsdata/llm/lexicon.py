"""The words the caption validator reads: feature classes, synonyms, scene words, numbers,
positions, share and size words, relations.

Feature classes come from the OSM vocabulary (every listed phrase, singular and plural) plus a
table of synonyms an LLM uses for them ("houses", "fields", "trees", "streets"). Each term maps
to a *concept*: a predicate on a tile's tag statistics saying which tags the word may refer to.
"roads" may refer to any road tag but not to a footpath; "houses" to houses, bungalows and
farmhouses but not to a plain ``building=yes`` (a caption may be less specific than the tags,
never more). Scene words are what small models commonly invent (village, mountain, beach);
they are rejected unless the tile has a tag that the word names.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rsdata.osm.vocabulary import Vocabulary, pluralize
from rsdata.captions.words import SHARES as _TEMPLATE_SHARES
from rsdata.osm.join import CELL_WORDS

Tag = dict[str, Any]

PATH_PHRASES = frozenset(
    {"path", "footpath", "trail", "cycle path", "bridleway", "flight of steps"}
)
HOUSE_PHRASES = frozenset(
    {
        "house",
        "bungalow",
        "row of terraced houses",
        "residential building",
        "farmhouse",
        "apartment building",
        "mobile home",
    }
)
FIELD_PHRASES = frozenset(
    {
        "farmland",
        "meadow",
        "paddock",
        "pasture",
        "grassland",
        "sports field",
        "greenfield site",
        "recreation ground",
        "wet meadow",
    }
)
TREE_PHRASES = frozenset(
    {"forest", "woodland", "tree", "row of trees", "orchard", "mangrove forest"}
)
GRASS_PHRASES = frozenset(
    {
        "grass",
        "grassland",
        "meadow",
        "village green",
        "recreation ground",
        "wet meadow",
        "common",
        "pasture",
    }
)
GREEN_CATEGORIES = frozenset({"landcover"})


def _phrases(names: Iterable[str]) -> Callable[[Tag], bool]:
    wanted = frozenset(names)
    return lambda t: t["phrase"] in wanted


def _category(cat: str, but: frozenset[str] = frozenset()) -> Callable[[Tag], bool]:
    return lambda t: t.get("category") == cat and t["phrase"] not in but


def _suffix(word: str) -> Callable[[Tag], bool]:
    return lambda t: t["phrase"] == word or t["phrase"].endswith(" " + word)


def _green(t: Tag) -> bool:
    return t.get("category") in GREEN_CATEGORIES or t["phrase"] in TREE_PHRASES | GRASS_PHRASES | {
        "park",
        "garden",
        "scrub",
        "bush",
        "hedge",
        "heathland",
        "nature reserve",
        "farmland",
    }


# synonym term -> what it may refer to. Singular and plural forms are listed as written.
SYNONYMS: dict[str, Callable[[Tag], bool]] = {
    **{w: _category("building") for w in ("building", "buildings", "structure", "structures")},
    **{
        w: _category("road", PATH_PHRASES)
        for w in ("road", "roads", "street", "streets", "lane", "lanes", "roadway", "roadways")
    },
    **{w: _suffix("track") for w in ("track", "tracks")},
    **{
        w: _phrases({"dirt track"})
        for w in (
            "dirt road",
            "dirt roads",
            "gravel road",
            "gravel roads",
            "unpaved road",
            "unpaved roads",
            "farm track",
            "farm tracks",
            "farm road",
            "farm roads",
            "dirt path",
            "dirt paths",
        )
    },
    **{
        w: _phrases(PATH_PHRASES)
        for w in (
            "path",
            "paths",
            "trail",
            "trails",
            "footpath",
            "footpaths",
            "walkway",
            "walkways",
        )
    },
    **{
        w: _phrases(HOUSE_PHRASES)
        for w in (
            "house",
            "houses",
            "home",
            "homes",
            "dwelling",
            "dwellings",
            "residence",
            "residences",
        )
    },
    **{w: _phrases(FIELD_PHRASES) for w in ("field", "fields", "open field", "open fields")},
    **{
        w: _phrases({"farmland"})
        for w in (
            "farmland",
            "farmlands",
            "farm land",
            "agricultural land",
            "cropland",
            "croplands",
            "farm field",
            "farm fields",
            "agricultural field",
            "agricultural fields",
            "crop field",
            "crop fields",
            "arable land",
        )
    },
    **{
        w: _phrases({"farmyard", "farmhouse", "farm building", "farmland"})
        for w in ("farm", "farms", "farmstead", "farmsteads")
    },
    **{w: _phrases(TREE_PHRASES) for w in ("tree", "trees")},
    **{
        w: _phrases({"forest", "woodland", "mangrove forest"})
        for w in (
            "forest",
            "forests",
            "wood",
            "woods",
            "woodland",
            "woodlands",
            "forested area",
            "wooded area",
        )
    },
    **{
        w: _green
        for w in (
            "vegetation",
            "greenery",
            "green space",
            "green spaces",
            "green area",
            "green areas",
            "plants",
        )
    },
    **{
        w: _phrases({"scrub", "bush", "hedge"})
        for w in ("bushes", "shrubs", "shrub", "shrubland", "bush", "scrub", "scrubland")
    },
    **{
        w: _phrases(GRASS_PHRASES)
        for w in (
            "grass",
            "lawn",
            "lawns",
            "grassy area",
            "grassy areas",
            "grassland",
            "grasslands",
        )
    },
    **{
        w: _category("water")
        for w in (
            "water",
            "body of water",
            "bodies of water",
            "water body",
            "water bodies",
            "open water",
            "waterbody",
            "waterbodies",
        )
    },
    **{
        w: _category("railway")
        for w in (
            "railway",
            "railways",
            "railroad",
            "railroads",
            "rail line",
            "rail lines",
            "railway line",
            "railway lines",
            "train track",
            "train tracks",
            "rail track",
            "rail tracks",
        )
    },
    **{
        w: _phrases({"parking lot", "parking space", "parking garage"})
        for w in ("parking", "car park", "car parks", "parking area", "parking areas")
    },
    **{
        w: _phrases({"nature reserve", "conservation area"})
        for w in (
            "reserve",
            "reserves",
            "protected area",
            "protected areas",
            "nature area",
            "conservation land",
            "nature preserve",
        )
    },
    **{
        w: _phrases({"residential area"})
        for w in (
            "neighborhood",
            "neighbourhood",
            "neighborhoods",
            "neighbourhoods",
            "residential neighborhood",
            "residential neighbourhood",
            "housing area",
            "residential zone",
        )
    },
    **{
        w: _phrases({"industrial area"})
        for w in ("industrial site", "industrial zone", "industrial estate", "industrial park")
    },
    **{
        w: _phrases({"residential road"})
        for w in (
            "residential street",
            "residential streets",
            "residential lane",
            "residential lanes",
        )
    },
    **{w: _phrases({"swimming pool"}) for w in ("pool", "pools")},
    **{
        w: _phrases({"sports field", "recreation ground"})
        for w in (
            "pitch",
            "pitches",
            "sports ground",
            "sports pitch",
            "playing field",
            "playing fields",
        )
    },
    **{
        w: _phrases({"school grounds", "school building", "school campus"})
        for w in ("school", "schools")
    },
    **{w: _phrases({"highway", "motorway", "main road"}) for w in ("highway", "highways")},
    **{w: _category("road") for w in ("route", "routes", "roadway network")},
}

# Words small models invent for aerial scenes; rejected unless a tile tag is named by them.
SCENE_WORDS = frozenset(
    """
mountain mountains valley valleys village villages town towns city cities ocean oceans sea seas
coast coasts shore shores seaside island islands desert deserts canyon canyons harbor harbors
harbour harbours port ports airport airports car cars vehicle vehicles truck trucks bus buses
boat boats ship ships people person crowd crowds animal animals cow cows cattle horse horses
sheep crops crop wheat corn rice sunflower sunflowers castle castles palace palaces ruins
skyscraper skyscrapers sky skies cloud clouds sun sunset sunrise shadow shadows snow urban rural
suburban suburb suburbs countryside downtown hamlet hamlets settlement settlements resort resorts
market markets shop shops store stores mall malls restaurant restaurants rocks rock stone stones
dunes hillside hillsides slope slopes ridge ridges peak peaks plateau plateaus plain plains yard
yards backyard backyards airplane airplanes plane planes aircraft tractor tractors hills hill
continent continents country countries nation cliffside cliffsides soil jungle jungles
dirt construction constructions ecosystem ecosystems wonder wonders wildlife habitat
habitats flora fauna cityscape cityscapes skyline seascape
flat hilly mountainous rocky sandy rectangular circular triangular arid barren snowy muddy dusty
paved
rainforest rainforests savanna savannah prairie prairies tundra wilderness oasis deforestation
mansion mansions cottage cottages villa villas estate estates ranch ranches barnyard
""".split()
)

NUMBER_WORDS: dict[str, int] = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
NUMBER_WORDS.update(
    {
        "single": 1,
        "lone": 1,
        "isolated": 1,
        "couple": 2,
        "pair": 2,
        "both": 2,
        "dozen": 12,
        "thirty": 30,
        "forty": 40,
        "fifty": 50,
    }
)

# vague amounts: (smallest count, largest count) they may stand for
VAGUE: dict[tuple[str, ...], tuple[int, int]] = {
    ("a", "few"): (2, 5),
    ("few",): (2, 5),
    ("several",): (3, 12),
    ("many",): (8, 10**6),
    ("numerous",): (8, 10**6),
    ("multiple",): (2, 10**6),
    ("some",): (2, 10**6),
    ("various",): (2, 10**6),
    ("a", "number", "of"): (3, 10**6),
    ("lots", "of"): (8, 10**6),
    ("a", "lot", "of"): (8, 10**6),
    ("a", "group", "of"): (2, 10**6),
    ("a", "cluster", "of"): (2, 10**6),
    ("a", "handful", "of"): (2, 6),
    ("a", "row", "of"): (2, 10**6),
    ("dozens", "of"): (24, 10**6),
    ("hundreds", "of"): (100, 10**6),
    ("over", "a", "hundred"): (101, 10**6),
    ("more", "than", "a", "hundred"): (101, 10**6),
}

# 3x3 grid cells (the words rsdata.osm.join writes) and the region each position phrase names
CELLS = tuple(word for row in CELL_WORDS for word in row)
_TOP = frozenset({"top left", "top", "top right"})
_BOTTOM = frozenset({"bottom left", "bottom", "bottom right"})
_LEFT = frozenset({"top left", "left", "bottom left"})
_RIGHT = frozenset({"top right", "right", "bottom right"})
ACROSS = frozenset({"across"})


def _region_words() -> dict[tuple[str, ...], frozenset[str]]:
    out: dict[tuple[str, ...], frozenset[str]] = {}
    vert = {
        "top": _TOP,
        "upper": _TOP,
        "north": _TOP,
        "northern": _TOP,
        "bottom": _BOTTOM,
        "lower": _BOTTOM,
        "south": _BOTTOM,
        "southern": _BOTTOM,
    }
    horiz = {
        "left": _LEFT,
        "west": _LEFT,
        "western": _LEFT,
        "right": _RIGHT,
        "east": _RIGHT,
        "eastern": _RIGHT,
    }
    for v, vr in vert.items():
        out[(v,)] = vr
        for h, hr in horiz.items():
            out[(v, h)] = vr & hr
            out[(v + h,)] = vr & hr  # northwest
    for h, hr in horiz.items():
        out[(h,)] = hr
        for c in ("center", "middle", "central"):
            out[(c, h)] = hr & frozenset({"left", "right"})
            out[(h, c)] = hr & frozenset({"left", "right"})
    for c in ("center", "middle", "central", "centre"):
        out[(c,)] = frozenset({"center"})
    for w in ("corner", "corners"):
        out[(w,)] = frozenset({"top left", "top right", "bottom left", "bottom right"})
    for w in ("edge", "edges", "side", "sides", "border", "borders", "periphery"):
        out[(w,)] = frozenset(CELLS) - {"center"}
    for w in (
        ("across",),
        ("throughout",),
        ("everywhere",),
        ("all", "over"),
        ("spread", "across"),
        ("spread", "over"),
        ("spread", "out"),
        ("scattered",),
    ):
        out[w] = ACROSS
    return out


REGION_WORDS = _region_words()


# Share words: (lowest, highest) area share, and whether the phrase names the thing after it
# ("dominated by farmland") or before it ("farmland covers most of the image").
@dataclass(frozen=True)
class ShareWord:
    low: float
    high: float
    after: bool
    largest: bool = False  # also claims the largest area of the tile


SHARE_WORDS: dict[tuple[str, ...], ShareWord] = {
    ("dominated", "by"): ShareWord(0.45, 1.0, True, True),
    ("dominates",): ShareWord(0.45, 1.0, False, True),
    ("dominate",): ShareWord(0.45, 1.0, False, True),
    ("dominating",): ShareWord(0.45, 1.0, False, True),
    ("dominant",): ShareWord(0.45, 1.0, True, True),
    ("predominantly",): ShareWord(0.45, 1.0, True, True),
    ("mostly",): ShareWord(0.45, 1.0, True, True),
    ("mainly",): ShareWord(0.45, 1.0, True, True),
    ("largely",): ShareWord(0.45, 1.0, True, True),
    ("primarily",): ShareWord(0.45, 1.0, True, True),
    ("majority",): ShareWord(0.5, 1.0, True, True),
    ("most", "of"): ShareWord(0.5, 1.0, False, True),
    ("the", "most"): ShareWord(0.0, 1.0, False, True),
    ("fills",): ShareWord(0.5, 1.0, False, True),
    ("filled", "with"): ShareWord(0.5, 1.0, True, True),
    ("entire",): ShareWord(0.9, 1.0, False),
    ("whole",): ShareWord(0.9, 1.0, False),
    ("completely",): ShareWord(0.9, 1.0, False),
    ("fully",): ShareWord(0.9, 1.0, False),
    ("a", "large", "part", "of"): ShareWord(0.3, 1.0, False),
    ("a", "large", "portion", "of"): ShareWord(0.3, 1.0, False),
    ("a", "large", "area", "of"): ShareWord(0.3, 1.0, True),
    ("a", "big", "part", "of"): ShareWord(0.3, 1.0, False),
    ("much", "of"): ShareWord(0.3, 1.0, False),
    ("vast",): ShareWord(0.4, 1.0, True),
    ("extensive",): ShareWord(0.3, 1.0, True),
    ("expanse", "of"): ShareWord(0.3, 1.0, True),
    ("a", "small", "part", "of"): ShareWord(0.0, 0.2, False),
    ("a", "small", "portion", "of"): ShareWord(0.0, 0.2, False),
    ("a", "small", "area", "of"): ShareWord(0.0, 0.2, True),
    ("a", "small", "patch", "of"): ShareWord(0.0, 0.2, True),
    ("a", "patch", "of"): ShareWord(0.0, 0.3, True),
    ("a", "strip", "of"): ShareWord(0.0, 0.3, True),
    ("part", "of"): ShareWord(0.05, 0.45, False),
    ("half", "of"): ShareWord(0.35, 0.65, False),
}
# the template captions' share words (rsdata.captions.words.SHARES) with the ranges they are
# written for, so that what the templates say always reads as true here
for _text, _low, _high, _lb in _TEMPLATE_SHARES:
    _key = tuple(_text.split())
    if _key not in SHARE_WORDS:
        SHARE_WORDS[_key] = ShareWord(_low, 1.0 if _lb else _high, False)

# Size adjectives directly before an object: what mean area per object (m2) they claim.
SIZE_WORDS: dict[str, tuple[float, float]] = {
    "large": (400.0, 1e12),
    "big": (400.0, 1e12),
    "huge": (2000.0, 1e12),
    "massive": (2000.0, 1e12),
    "giant": (2000.0, 1e12),
    "enormous": (2000.0, 1e12),
    "small": (0.0, 200.0),
    "tiny": (0.0, 80.0),
    "little": (0.0, 200.0),
}

# Relations between two objects. Proximity ones hold when the two share a grid cell; the
# others (containment, direction, connection) cannot be read from the statistics.
PROXIMITY = frozenset(
    {
        ("near",),
        ("next", "to"),
        ("beside",),
        ("close", "to"),
        ("adjacent", "to"),
        ("alongside",),
        ("along",),
        ("through",),
        ("crossing",),
        ("crosses",),
        ("crossed", "by"),
        ("dotted", "with"),
        ("cross",),
        ("nearby",),
        ("by",),
        ("running", "through"),
        ("runs", "through"),
        ("passing", "through"),
        ("intersecting",),
        ("intersects",),
        ("among",),
        ("amid",),
        ("between",),
    }
)
UNVERIFIABLE = frozenset(
    {
        ("surrounded", "by"),
        ("surrounding",),
        ("surrounds",),
        ("within",),
        ("inside",),
        ("in", "the", "middle", "of"),
        ("at", "its", "center"),
        ("at", "the", "center", "of"),
        ("at", "its", "centre"),
        ("on", "top", "of"),
        ("above",),
        ("below",),
        ("under",),
        ("beneath",),
        ("leading", "to"),
        ("leads", "to"),
        ("connected", "to"),
        ("connecting",),
        ("connects",),
        ("bordered", "by"),
        ("bordering",),
        ("borders",),
        ("overlooking",),
        ("overlooks",),
        ("facing",),
        ("behind",),
        ("in", "front", "of"),
        ("to", "the", "left", "of"),
        ("to", "the", "right", "of"),
        ("north", "of"),
        ("south", "of"),
        ("east", "of"),
        ("west", "of"),
        ("around",),
        ("encircled", "by"),
        ("enclosed", "by"),
        ("part", "of"),
        ("belonging", "to"),
        ("lined", "with"),
        ("lined", "by"),
        ("on", "the", "edge", "of"),
        ("at", "the", "edge", "of"),
        ("in", "the", "center", "of"),
        ("in", "the", "centre", "of"),
    }
)

# "X covered by Y" relates two objects; "an image covered by Y" only says Y is there
COVER = frozenset({("covered", "by"), ("covered", "with"), ("covered", "in")})
# "in the top left corner of the farmland": a position relative to another object
REGION_NOUNS = frozenset(
    {
        "corner",
        "corners",
        "side",
        "sides",
        "part",
        "portion",
        "edge",
        "edges",
        "area",
        "section",
        "half",
        "end",
    }
)

UNITS: dict[str, str] = {
    "m": "m",
    "meter": "m",
    "meters": "m",
    "metre": "m",
    "metres": "m",
    "km": "km",
    "kilometer": "km",
    "kilometers": "km",
    "kilometre": "km",
    "kilometres": "km",
    "percent": "%",
    "%": "%",
    "hectares": "ha",
    "hectare": "ha",
    "ha": "ha",
    "acres": "acre",
    "acre": "acre",
    "square": "sq",
    "sq": "sq",
}

# words after a singular noun that make it a modifier ("road network", "building cluster")
COMPOUND_HEADS = frozenset(
    {
        "network",
        "networks",
        "system",
        "systems",
        "complex",
        "complexes",
        "cluster",
        "clusters",
        "density",
        "block",
        "blocks",
        "site",
        "sites",
        "plot",
        "plots",
        "pattern",
        "patterns",
        "layout",
        "grid",
        "footprint",
        "footprints",
        "roof",
        "roofs",
        "rooftop",
        "rooftops",
        "edge",
        "edges",
        "surface",
        "junction",
        "junctions",
        "intersection",
        "type",
        "types",
        "area",
        "areas",
        "land",
        "lands",
        "zone",
        "zones",
        "cover",
        "coverage",
        "use",
        "parcel",
        "parcels",
        "lot",
        "lots",
        "owner",
        "owners",
    }
)

FUNCTION_WORDS = frozenset(
    """a an the of in on at to with and or by for from as is are was were be
this that these those it its there which while whereas but also some each other another""".split()
)
# Common English words of captions: with the class terms and the words above, an English
# caption is mostly made of these (a caption in another language or word salad is not).
COMMON_WORDS = frozenset(
    """
image images aerial photo photograph picture view scene shows show showing shown see seen visible
appear appears there here has have had having contains containing include includes including
features feature objects object land ground terrain landscape surface earth region part parts
portion side sides corner corners edge edges top bottom left right upper lower center middle north
south east west across through along over near running runs run crossing crosses cross stretching
stretches spread scattered located lies lying situated sits cover covers covered covering fill
fills filled dominated dominating mostly mainly largely partly small large big little tiny huge
wide narrow long short straight curved winding green brown grey gray white dark light open dense
sparse several many few some most much more less all one two three four five six seven eight nine
ten single both each every other another also only just about around roughly approximately nearly least
almost what which who where how it its they them their this that these those what does do is are
was were be been being can could may might will would should area areas mapped mix mixture variety
number group cluster row rows line lines network patch patches strip strips section sections
meters metres kilometers kilometres percent square width length size image's it's scenic diverse
rural quiet busy lush natural man made human built urban typical common clear shape shapes pattern
""".split()
)
DETERMINERS = frozenset({"a", "an", "the", "this", "that", "these", "those", "its"})
PREPOSITIONS = frozenset({"of", "in", "on", "at", "to", "with", "by", "for", "from"})


@dataclass(frozen=True)
class Term:
    """A class word: which tags it may name, and its grammatical number."""

    words: tuple[str, ...]
    refers: Callable[[Tag], bool]
    plural: bool | None  # None: same form in both numbers (mass nouns, "sheep")
    scene: bool = False  # a commonly invented scene word


def words_of(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[a-z]+|\d+", text.lower().replace("-", " ")))


class Lexicon:
    """Class terms by their word tuples (built once per process from the vocabulary)."""

    def __init__(
        self,
        vocabulary: Vocabulary,
        rule_synonyms: Mapping[str, Iterable[tuple[str, str]]] | None = None,
    ) -> None:
        terms: dict[tuple[str, ...], Term] = {}
        for _key, _value, phrase in vocabulary.entries():
            self._add_phrase(terms, phrase.singular, phrase.plural, phrase.mass)
        for word in SCENE_WORDS:
            w = words_of(word)
            if w and w not in terms:
                terms[w] = Term(w, _phrases({word}), None, scene=True)
        for text, pred in SYNONYMS.items():
            w = words_of(text)
            old = terms.get(w)
            plural = _guess_plural(text)
            refers = pred if old is None or old.scene else _either(old.refers, pred)
            terms[w] = Term(w, refers, plural)
        # the template captions' synonyms (rsdata/data/caption_rules.yaml): what a template may
        # call a tag, an LLM caption may too
        for tag, pairs in (rule_synonyms or {}).items():
            for singular, plural_form in pairs:
                same = singular == plural_form
                for text, number in ((singular, None if same else False),
                                     (plural_form, None if same else True)):
                    w = words_of(text)
                    if not w:
                        continue
                    old = terms.get(w)
                    pred = _tag_is(tag)
                    if old is None or old.scene:
                        terms[w] = Term(w, pred, number)
                    else:
                        terms[w] = Term(w, _either(old.refers, pred), old.plural)
        self.terms = terms
        self.max_len = max(len(k) for k in terms)

    @staticmethod
    def _add_phrase(
        terms: dict[tuple[str, ...], Term], singular: str, plural: str, mass: bool
    ) -> None:
        same = mass or singular == plural
        for text, number in ((singular, None if same else False), (plural, None if same else True)):
            w = words_of(text)
            if not w:
                continue
            old = terms.get(w)
            pred = _phrases({singular})
            terms[w] = Term(w, pred if old is None else _either(old.refers, pred), number)

    def with_tags(self, tags: list[Tag]) -> dict[tuple[str, ...], Term]:
        """Terms for a tile's own phrases that the vocabulary does not list (fallbacks)."""
        extra: dict[tuple[str, ...], Term] = {}
        for t in tags:
            for text, number in (
                (t["phrase"], False),
                (t.get("plural") or pluralize(t["phrase"]), True),
            ):
                w = words_of(text)
                if w and w not in self.terms:
                    same = t.get("mass") or t["phrase"] == t.get("plural")
                    extra[w] = Term(w, _phrases({t["phrase"]}), None if same else number)
        return extra


def _tag_is(tag: str) -> Callable[[Tag], bool]:
    return lambda t: t.get("tag") == tag


def _either(a: Callable[[Tag], bool], b: Callable[[Tag], bool]) -> Callable[[Tag], bool]:
    return lambda t: a(t) or b(t)


_MASS_SYNONYMS = frozenset(
    {
        "farmland",
        "farm land",
        "agricultural land",
        "cropland",
        "water",
        "vegetation",
        "greenery",
        "grass",
        "scrub",
        "scrubland",
        "shrubland",
        "parking",
        "woodland",
        "arable land",
        "grassland",
        "conservation land",
    }
)


def _guess_plural(text: str) -> bool | None:
    if text in _MASS_SYNONYMS:
        return None
    last = text.split()[0] if " of " in text else text.split()[-1]
    if last in ("bodies",):
        return True
    return last.endswith("s") and not last.endswith(("ss", "us", "is"))


@functools.lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The lexicon of the packaged vocabulary and caption rules (built once per process)."""
    from rsdata.captions.rules import CaptionRules

    return Lexicon(Vocabulary.default(), CaptionRules.default().synonyms)


# -- statements the stats cannot support (issue 15) ------------------------------------------------
# The validator reads a caption against a closed vocabulary: a word that is neither a class term,
# a number, a position, a share, size or relation word, nor one of these neutral words carries a
# statement the tags cannot support ("unique architectural style", "a breathtaking sight",
# "deserted", "scenic") and the caption is rejected (``unsupported_detail``).
NEUTRAL_WORDS = frozenset(
    """
a an the of in on at to with and or by for from as is are was were be been being this that these
those it its it's they them their there here which who where what does do did also both each every
all other others another only just together while whereas but than more less fewer some any

image images imagery aerial overhead photo photograph picture view scene frame tile
airborne spaceborne orbital vertical nadir air viewed looking straight directly
show shows showing shown depict depicts depicting display displays displaying capture captures
capturing contain contains containing include includes including feature features featuring
has have having see seen visible can could appear appears appearing mapped
located lies lie lying situated sit sits stand stands found
run runs running ran stretch stretches stretching extend extends extending lead leads leading
pass passes passing go goes going cut cuts cutting spread spreading cover covers covered covering
fill fills filled account accounts reach reaches reaching roofing
filling occupy occupies occupying span spans spanning take takes taking taken up down
number series group groups set collection mix mixture variety range couple pair row rows line
lines
about roughly approximately nearly almost around over exactly
half halves quarter quarters third thirds tenth share
corner corners side sides edge edges part parts portion portions section sections area areas
top bottom left right center middle centre upper lower
land ground terrain landscape surface
""".split()
)
# a unit-led adjective ("a 640 m wide image", "a 930 m long path"): neutral after a unit only
UNIT_ADJECTIVES = frozenset({"wide", "long"})
# What the image is: a word for it is a self-reference when it names an image inside the image
# ("the image of a beach", "a scene of a scene", "which is a scene in itself") or another medium
# ("the corner of a map", "of the page", "on a screen").
IMAGE_NOUNS = frozenset(
    {"image", "images", "scene", "scenes", "picture", "pictures", "view", "views", "photo",
     "photos", "photograph", "photographs", "frame", "tile", "shot", "snapshot", "capture"}
)
MEDIA_WORDS = frozenset(
    """map maps page pages webpage website canvas figure figures screen screens depiction
depictions drawing drawings painting paintings illustration illustrations diagram diagrams chart
charts poster posters document documents film films movie movies documentary video videos
satellite drone camera sketch sketches graphic graphics artwork postcard""".split()
)
# adjectives that say how the image was taken ("an aerial image", "a satellite view"): only
# before an image word at the start of a sentence
VIEW_ADJECTIVES = frozenset({"aerial", "overhead", "satellite", "drone", "airborne", "spaceborne",
                             "orbital", "vertical", "nadir"})
# "a small part of a nature reserve": the tile shows part of something larger
PART_NOUNS = frozenset(
    {"part", "parts", "portion", "portions", "piece", "pieces", "section", "sections", "half",
     "most", "much", "majority", "rest", "fraction", "bit", "slice", "segment"}
)
# verbs after which "most of it" / "part of it" is a share of the image
COVER_VERBS = frozenset(
    {"covering", "covers", "cover", "covered", "fills", "fill", "filling", "filled", "occupying",
     "occupies", "occupy", "spanning", "spans", "span", "takes", "taking", "take", "up", "over",
     "across", "throughout", "in", "on", "spread", "scattered"}
)

# Density words for buildings, with the building share of the tile they need (the template
# captions' thresholds: rsdata.captions.templates.DENSE_BUILT / BUILT_UP)
DENSE_BUILT = 0.35
BUILT_UP = 0.15
# nouns a density phrase may head ("a built-up district", "a closely packed block of
# buildings"): the density check reads the claim, the noun adds none
DENSITY_NOUNS = frozenset({"area", "areas", "block", "blocks", "patch", "cluster"})
DENSITY: dict[tuple[str, ...], float] = {
    ("densely", "built", "up"): DENSE_BUILT,
    ("dense",): DENSE_BUILT,
    ("densely",): DENSE_BUILT,
    ("closely", "packed"): DENSE_BUILT,
    ("tightly", "packed"): DENSE_BUILT,
    ("built", "up"): BUILT_UP,
}
