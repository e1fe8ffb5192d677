"""OpenStreetMap ``key=value`` tags as readable English phrases for captions.

``Vocabulary.default()`` loads the packaged ``rsdata/data/osm_vocabulary.yaml``; its header
documents the file format. A vocabulary answers ``phrase(key, value)`` with a :class:`Phrase`
(singular, plural, mass noun or not, coarse category) or ``None`` when the tag does not make a
visible feature (``building=no``, ``highway=proposed``, ``highway=crossing``, ``area=yes``).
Values the file does not list go through the key's ``default`` template
(``highway=foo_bar`` -> "foo bar road", ``known=False``).

Everything here is immutable, pure and picklable, so a vocabulary can be sent to worker
processes. :func:`pluralize` and :func:`number_phrase` are the small English helpers captions
need ("three residential roads", "one area of farmland").
"""

from __future__ import annotations

import functools
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from rsdata.errors import RsdataError

__all__ = [
    "CATEGORIES",
    "GENERIC_VALUES",
    "LIFECYCLE_VALUES",
    "Phrase",
    "Vocabulary",
    "VocabularyError",
    "normalize_value",
    "number_phrase",
    "pluralize",
]

#: The coarse classes a phrase can belong to.
CATEGORIES: frozenset[str] = frozenset(
    {
        "building",
        "road",
        "railway",
        "water",
        "landcover",
        "landuse",
        "leisure",
        "amenity",
        "infrastructure",
        "other",
    }
)

#: Values that say "not (any more / yet) a feature". Ignored for every key unless the
#: vocabulary lists the value explicitly (``landuse=construction`` is a construction site).
LIFECYCLE_VALUES: frozenset[str] = frozenset(
    {
        "no",
        "false",
        "0",
        "none",
        "disused",
        "abandoned",
        "proposed",
        "planned",
        "construction",
        "razed",
        "demolished",
        "destroyed",
        "removed",
        "dismantled",
        "was",
        "former",
    }
)

#: Values that only say "there is a <key>"; they never fill a ``{value}`` template
#: (``amenity=yes`` and ``highway=yes`` give ``None``; ``building=yes`` is listed).
GENERIC_VALUES: frozenset[str] = frozenset({"yes", "true", "1", "unknown", "other", "undefined"})

# An unlisted value is put into a {value} template only if it looks like a few English words.
_WORDLIKE = re.compile(r"^[a-z][a-z'\-]*(?: [a-z][a-z'\-]*){0,3}$")
_DEFAULT_RESOURCE = ("data", "osm_vocabulary.yaml")

Override = str | Mapping[str, Any] | None


class VocabularyError(RsdataError, ValueError):
    """A vocabulary file or override is malformed; the message names the bad entry."""


# --------------------------------------------------------------------------------------------
# Phrase


@dataclass(frozen=True)
class Phrase:
    """How one OSM tag reads in a caption."""

    singular: str
    """"residential road"."""
    plural: str
    """"residential roads"; equal to ``singular`` for mass nouns."""
    mass: bool
    """True for land cover and other uncountable things ("farmland", "forest", "water")."""
    category: str
    """Coarse class, one of :data:`CATEGORIES`."""
    known: bool = True
    """False when the phrase was made by a fallback rule rather than listed."""
    plural_verb: bool = False
    """A mass noun whose form is plural ("trees", "rapids"): its verbs agree in the plural
    ("trees cover", not "trees covers")."""


# --------------------------------------------------------------------------------------------
# English helpers

# fmt: off
# fmt: off
_NUMBER_WORDS = (
    "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"
)
# fmt: on

_IRREGULAR_PLURALS: dict[str, str] = {
    "man": "men",
    "woman": "women",
    "fisherman": "fishermen",
    "fireman": "firemen",
    "policeman": "policemen",
    "workman": "workmen",
    "snowman": "snowmen",
    "child": "children",
    "person": "people",
    "foot": "feet",
    "tooth": "teeth",
    "goose": "geese",
    "mouse": "mice",
    "louse": "lice",
    "ox": "oxen",
    "cactus": "cacti",
    "fungus": "fungi",
    "nucleus": "nuclei",
    "radius": "radii",
    "stimulus": "stimuli",
    "alumnus": "alumni",
    "criterion": "criteria",
    "phenomenon": "phenomena",
    "datum": "data",
    "axis": "axes",
    "quiz": "quizzes",
    # -f / -fe words that take -ves (everything else ending in f just adds s: roofs, cliffs)
    "leaf": "leaves",
    "loaf": "loaves",
    "thief": "thieves",
    "sheaf": "sheaves",
    "shelf": "shelves",
    "self": "selves",
    "elf": "elves",
    "wolf": "wolves",
    "half": "halves",
    "calf": "calves",
    "wharf": "wharves",
    "scarf": "scarves",
    "dwarf": "dwarves",
    "hoof": "hooves",
    "knife": "knives",
    "wife": "wives",
    "midwife": "midwives",
    "life": "lives",
    # -o words that take -es (everything else ending in o just adds s: silos, patios)
    "potato": "potatoes",
    "tomato": "tomatoes",
    "hero": "heroes",
    "echo": "echoes",
    "veto": "vetoes",
    "torpedo": "torpedoes",
    "volcano": "volcanoes",
    "mosquito": "mosquitoes",
    "tornado": "tornadoes",
    "buffalo": "buffaloes",
    "embargo": "embargoes",
    "cargo": "cargoes",
    # -ch pronounced /k/
    "stomach": "stomachs",
    "monarch": "monarchs",
    "epoch": "epochs",
    "patriarch": "patriarchs",
    "matriarch": "matriarchs",
    "loch": "lochs",
}

# Words left as they are: uncountable, same in both numbers, or already plural.
# fmt: off
_UNCHANGED: frozenset[str] = frozenset(
    {
        # same singular and plural
        "sheep", "deer", "fish", "series", "species", "aircraft", "spacecraft", "hovercraft",
        "watercraft", "moose", "swine", "bison", "salmon", "trout", "offspring", "chassis",
        "barracks", "headquarters", "crossroads", "premises", "means",
        "waterworks", "gasworks", "ironworks", "works",
        # mass nouns
        "water", "farmland", "grass", "scrub", "scrubland", "heath", "heathland", "moorland",
        "sand", "gravel", "shingle", "scree", "mud", "rubble", "debris", "soil", "snow", "ice",
        "vegetation", "foliage", "traffic", "parking", "housing", "infrastructure", "machinery",
        "equipment", "information", "furniture", "news", "livestock", "cattle", "poultry",
        # already plural
        "people", "police", "rapids", "shallows", "stairs", "steps", "ruins", "grounds",
        "allotments", "outskirts", "remains", "bleachers", "media",
    }
) | frozenset(_IRREGULAR_PLURALS.values())
# fmt: on


def _match_case(written: str, plural: str) -> str:
    """``plural`` (lower case) with the letter case of ``written``: "Church" -> "Churches"."""
    if len(written) > 1 and written.isupper():
        return plural.upper()
    common = 0
    for a, b in zip(written.lower(), plural, strict=False):
        if a != b:
            break
        common += 1
    return written[:common] + plural[common:]


def _pluralize_word(word: str) -> str:
    lower = word.lower()
    if not any(c.isalpha() for c in lower) or lower in _UNCHANGED:
        return word
    if lower in _IRREGULAR_PLURALS:
        plural = _IRREGULAR_PLURALS[lower]
    elif lower.endswith("sis"):  # analysis -> analyses, oasis -> oases
        plural = lower[:-2] + "es"
    elif lower.endswith(("s", "x", "z", "ch", "sh")):  # bus, box, waltz, church, marsh
        plural = lower + "es"
    elif (
        lower.endswith("y")
        and len(lower) > 1
        and (lower[-2] not in "aeiou" or lower.endswith("quy"))
    ):  # category -> categories (but highway -> highways)
        plural = lower[:-1] + "ies"
    else:
        plural = lower + "s"
    return _match_case(word, plural)


def pluralize(noun_phrase: str) -> str:
    """The plural of an English noun phrase: the last word inflects ("residential roads").

    Follows the regular rules (box -> boxes, bus -> buses, category -> categories,
    highway -> highways), a table of irregular words (man -> men, leaf -> leaves, but
    roof -> roofs) and a table of words left as they are (sheep, water, farmland, steps).
    In "X of Y" phrases the head inflects: "row of trees" -> "rows of trees".
    """
    if not noun_phrase or not noun_phrase.strip():
        return noun_phrase
    head, sep, tail = noun_phrase.partition(" of ")
    if sep and head.strip():
        return pluralize(head) + sep + tail
    stripped = noun_phrase.rstrip()
    trailing = noun_phrase[len(stripped) :]
    before, space, last = stripped.rpartition(" ")
    return before + space + _pluralize_word(last) + trailing


def number_phrase(n: int, phrase: Phrase) -> str:
    """``n`` things of ``phrase``: "one building", "three buildings", "12 buildings".

    Numbers up to ten are words; zero is "no" ("no buildings"). Mass nouns are counted as
    areas: "one area of farmland", "three areas of forest", "no farmland".
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"number_phrase needs an int count, got {n!r}")
    if n < 0:
        raise ValueError(f"number_phrase needs a count >= 0, got {n}")
    count = _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)
    if phrase.mass:
        if n == 0:
            return f"no {phrase.singular}"
        return f"{count} {'area' if n == 1 else 'areas'} of {phrase.singular}"
    return f"{count} {phrase.singular if n == 1 else phrase.plural}"


# --------------------------------------------------------------------------------------------
# Vocabulary


@dataclass(frozen=True)
class _KeySpec:
    """What the vocabulary knows about one OSM key."""

    category: str
    mass: bool
    default: str | None
    values: dict[str, Phrase] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()


def normalize_value(value: str) -> str:
    """An OSM value as the vocabulary looks it up: trimmed, lower case, first of a ``;`` list,
    spaces as underscores ("Residential; track" -> "residential")."""
    text = str(value).strip().lower()
    if ";" in text:
        text = next((part.strip() for part in text.split(";") if part.strip()), "")
    return re.sub(r"\s+", "_", text)


def _value_words(normalized: str) -> str:
    return re.sub(r"\s+", " ", normalized.replace("_", " ")).strip()


def _dedupe_words(text: str) -> str:
    """Collapse a word repeated by a template: "military area area" -> "military area"."""
    words = text.split(" ")
    out = [w for i, w in enumerate(words) if i == 0 or w != words[i - 1]]
    return " ".join(out)


class Vocabulary:
    """Maps OSM tags to :class:`Phrase` objects. Immutable: :meth:`merged` returns a new one."""

    __slots__ = ("_specs", "source")

    def __init__(self, specs: Mapping[str, _KeySpec], source: str = "<mapping>") -> None:
        self._specs: dict[str, _KeySpec] = dict(specs)
        self.source = source

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def default(cls) -> Vocabulary:
        """The packaged vocabulary (``rsdata/data/osm_vocabulary.yaml``), loaded once."""
        return _load_default()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """A vocabulary from a YAML file in the packaged format (see the packaged file's header).

        Raises ``FileNotFoundError`` for a missing file and :class:`VocabularyError` (a
        ``ValueError``) naming the file and the bad entry for anything malformed.
        """
        source = os.fspath(path)
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
        return cls.from_yaml(text, source=source)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> Vocabulary:
        """A vocabulary from YAML text (``yes``/``no``/``on``/``off`` read as strings)."""
        try:
            data = yaml.load(text, Loader=_VocabularyLoader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as exc:
            raise VocabularyError(f"{source}: not valid YAML: {exc}") from exc
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_mapping(cls, data: Any, source: str = "<mapping>") -> Vocabulary:
        """A vocabulary from an already-parsed mapping in the file format."""
        if not isinstance(data, Mapping):
            raise VocabularyError(
                f"{source}: a vocabulary is a mapping of OSM key -> entry, "
                f"got {type(data).__name__}"
            )
        specs: dict[str, _KeySpec] = {}
        for raw_key, entry in data.items():
            key = _check_key(raw_key, source)
            specs[key] = _parse_key_spec(entry, f"{source}: entry '{key}'")
        return cls(specs, source=source)

    def merged(self, overrides: Mapping[str, Override]) -> Vocabulary:
        """A copy with recipe-level overrides applied.

        - ``{"highway=track": "farm track"}``: the phrase for one tag (plural by English rules);
          a mapping ``{singular, plural, mass, category}`` works too, and ``None`` makes the tag
          not a feature. Fields left out keep those of the phrase replaced (else the key's).
          A tag of a key the vocabulary lacks adds that key (only that value, category
          "other" unless given).
        - ``{"landuse": {...}}``: a key entry in the file format; its fields replace the
          existing ones, its ``values`` are added to the existing values, its ``ignore`` list
          is added to the existing one.
        """
        if not isinstance(overrides, Mapping):
            raise VocabularyError(
                f"vocabulary overrides are a mapping like {{'highway=track': 'farm track'}}, "
                f"got {type(overrides).__name__}"
            )
        specs = dict(self._specs)
        for raw, spec in overrides.items():
            if not isinstance(raw, str) or not raw.strip():
                raise VocabularyError(
                    f"vocabulary override {raw!r}: the name must be 'key=value' or 'key'"
                )
            where = f"vocabulary override '{raw}'"
            if "=" in raw:
                key, _, value = raw.partition("=")
                key = _check_key(key.strip(), where)
                value = normalize_value(value)
                if not value:
                    raise VocabularyError(f"{where}: the value after '=' is empty")
                base = specs.get(key) or _KeySpec(category="other", mass=False, default=None)
                values = dict(base.values)
                ignore = set(base.ignore)
                if spec is None:
                    values.pop(value, None)
                    ignore.add(value)
                else:
                    # an override inherits mass and category from what it replaces
                    current = values.get(value)
                    category = current.category if current else base.category
                    mass = current.mass if current else base.mass
                    values[value] = _parse_phrase(spec, where, category, mass)
                    ignore.discard(value)
                specs[key] = _KeySpec(
                    category=base.category,
                    mass=base.mass,
                    default=base.default,
                    values=values,
                    ignore=frozenset(ignore),
                )
            else:
                key = _check_key(raw.strip(), where)
                specs[key] = _parse_key_spec(spec, where, base=specs.get(key))
        return Vocabulary(specs, source=f"{self.source} + overrides")

    # --- queries ----------------------------------------------------------------------------

    def keys(self) -> frozenset[str]:
        """The OSM keys whose tags can make features."""
        return frozenset(self._specs)

    def phrase(self, key: str, value: str) -> Phrase | None:
        """The phrase for ``key=value``, or ``None`` when the tag is not a visible feature.

        Lookup order: the key's ``ignore`` list -> its listed values -> ``None`` for
        lifecycle values (:data:`LIFECYCLE_VALUES`) -> the key's ``default`` template
        (``known=False``). Generic values (``yes``) and values that do not look like words
        never fill a ``{value}`` template. ``"a;b"`` is looked up as ``"a"``.
        """
        if not isinstance(key, str) or value is None:
            return None
        spec = self._specs.get(key.strip())
        if spec is None:
            return None
        norm = normalize_value(value)
        if not norm or norm in spec.ignore:
            return None
        listed = spec.values.get(norm)
        if listed is not None:
            return listed
        if norm in LIFECYCLE_VALUES or spec.default is None:
            return None
        template = spec.default
        if "{value}" in template:
            words = _value_words(norm)
            if norm in GENERIC_VALUES or not _WORDLIKE.match(words):
                return None
            text = _dedupe_words(template.replace("{value}", words))
        else:
            text = template
        plural = text if spec.mass else pluralize(text)
        return Phrase(text, plural, spec.mass, spec.category, known=False)

    def entries(self) -> list[tuple[str, str, Phrase]]:
        """Every listed ``(key, value, phrase)``, sorted: for docs, tests and statistics."""
        return [
            (key, value, phrase)
            for key in sorted(self._specs)
            for value, phrase in sorted(self._specs[key].values.items())
        ]

    def __len__(self) -> int:
        return sum(len(spec.values) for spec in self._specs.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._specs == other._specs

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Vocabulary({self.source!r}, keys={len(self._specs)}, entries={len(self)})"

    # __slots__ classes pickle via __getstate__/__setstate__ on 3.10 as well
    def __getstate__(self) -> dict[str, Any]:
        return {"specs": self._specs, "source": self.source}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._specs = state["specs"]
        self.source = state["source"]


@functools.lru_cache(maxsize=1)
def _load_default() -> Vocabulary:
    resource = resources.files("rsdata")
    for part in _DEFAULT_RESOURCE:
        resource = resource.joinpath(part)
    text = resource.read_text(encoding="utf-8")
    return Vocabulary.from_yaml(text, source="rsdata/" + "/".join(_DEFAULT_RESOURCE))


# --------------------------------------------------------------------------------------------
# Parsing


class _VocabularyLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false are booleans, so ``yes:``, ``no``,
    ``on`` and ``off`` (real OSM values) stay strings."""


_VocabularyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_VocabularyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)

_KEY_FIELDS = frozenset({"category", "mass", "default", "values", "ignore"})
_PHRASE_FIELDS = frozenset({"singular", "plural", "mass", "category", "plural_verb"})


def _check_key(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip() or "=" in raw:
        raise VocabularyError(f"{where}: OSM key {raw!r} must be a non-empty string without '='")
    return raw.strip()


def _check_category(value: Any, where: str) -> str:
    if value not in CATEGORIES:
        raise VocabularyError(
            f"{where}: category {value!r} is not one of {', '.join(sorted(CATEGORIES))}"
        )
    return str(value)


def _check_bool(value: Any, where: str, name: str) -> bool:
    if not isinstance(value, bool):
        raise VocabularyError(f"{where}: '{name}' must be true or false, got {value!r}")
    return value


def _check_text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise VocabularyError(f"{where}: '{name}' must be a non-empty string, got {value!r}")
    return " ".join(value.split())


def _check_template(value: Any, where: str) -> str | None:
    if value is None:
        return None
    text = _check_text(value, where, "default")
    try:
        fields = [
            (name, spec, conv)
            for _, name, spec, conv in string.Formatter().parse(text)
            if name is not None
        ]
    except ValueError as exc:
        raise VocabularyError(f"{where}: default template {text!r} is malformed: {exc}") from exc
    for name, spec, conv in fields:
        if name != "value" or spec or conv:
            raise VocabularyError(
                f"{where}: default template {text!r} may only use the placeholder {{value}}"
            )
    return text


def _check_value_name(raw: Any, where: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise VocabularyError(f"{where}: value {raw!r} must be a string (quote it in YAML)")
    value = normalize_value(str(raw))
    if not value:
        raise VocabularyError(f"{where}: empty value name")
    return value


def _parse_phrase(spec: Any, where: str, category: str, mass: bool) -> Phrase:
    if isinstance(spec, str):
        singular = _check_text(spec, where, "phrase")
        return Phrase(singular, singular if mass else pluralize(singular), mass, category)
    if not isinstance(spec, Mapping):
        raise VocabularyError(
            f"{where}: a value is a phrase string or a mapping with singular/plural/mass/plural_verb/"
            f"category, got {type(spec).__name__}"
        )
    unknown = set(spec) - _PHRASE_FIELDS
    if unknown:
        raise VocabularyError(
            f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
            f"allowed: {', '.join(sorted(_PHRASE_FIELDS))}"
        )
    if "singular" not in spec:
        raise VocabularyError(f"{where}: 'singular' is missing")
    singular = _check_text(spec["singular"], where, "singular")
    is_mass = _check_bool(spec["mass"], where, "mass") if "mass" in spec else mass
    cat = _check_category(spec["category"], where) if "category" in spec else category
    if "plural" in spec:
        plural = _check_text(spec["plural"], where, "plural")
        if is_mass and plural != singular:
            raise VocabularyError(
                f"{where}: a mass noun has no plural (plural must equal singular {singular!r})"
            )
    else:
        plural = singular if is_mass else pluralize(singular)
    plural_verb = (_check_bool(spec["plural_verb"], where, "plural_verb")
                   if "plural_verb" in spec else False)
    return Phrase(singular, plural, is_mass, cat, plural_verb=plural_verb)


def _parse_key_spec(entry: Any, where: str, base: _KeySpec | None = None) -> _KeySpec:
    if not isinstance(entry, Mapping):
        raise VocabularyError(
            f"{where}: a key entry is a mapping with {', '.join(sorted(_KEY_FIELDS))}, "
            f"got {type(entry).__name__}"
        )
    unknown = set(entry) - _KEY_FIELDS
    if unknown:
        raise VocabularyError(
            f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
            f"allowed: {', '.join(sorted(_KEY_FIELDS))}"
        )
    if base is None and "category" not in entry:
        raise VocabularyError(f"{where}: 'category' is missing")
    category = base.category if base else "other"
    mass = base.mass if base else False
    default = base.default if base else None
    if "category" in entry:
        category = _check_category(entry["category"], where)
    if "mass" in entry:
        mass = _check_bool(entry["mass"], where, "mass")
    if "default" in entry:
        default = _check_template(entry["default"], where)

    raw_ignore = entry.get("ignore") or []
    if not isinstance(raw_ignore, (list, tuple)):
        raise VocabularyError(f"{where}: 'ignore' must be a list of values")
    ignore = set(base.ignore) if base else set()
    ignore.update(_check_value_name(v, f"{where}, ignore") for v in raw_ignore)

    raw_values = entry.get("values") or {}
    if not isinstance(raw_values, Mapping):
        raise VocabularyError(f"{where}: 'values' must be a mapping of value -> phrase")
    values = dict(base.values) if base else {}
    for raw_value, spec in raw_values.items():
        value = _check_value_name(raw_value, f"{where}, values")
        values[value] = _parse_phrase(spec, f"{where}, value '{value}'", category, mass)
    return _KeySpec(
        category=category, mass=mass, default=default, values=values, ignore=frozenset(ignore)
    )
