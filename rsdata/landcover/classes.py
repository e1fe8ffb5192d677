"""Class tables of the ``landcover_join`` stage: raster code -> name, phrase and grammar.

A recipe gives ``classes: worldcover`` (the built-in table below) or its own table::

    classes:
      "10": {name: tree cover, phrase: tree cover}
      "40": {name: cropland, phrase: cropland, category: landuse}
      "61": {name: orchard, phrase: orchard, countable: true}   # "mostly orchards"

Keys are the integer codes as text (YAML keys must be text in a recipe). ``phrase`` is what a
caption says: a mass noun ("cropland", "tree cover", "mangroves") unless ``countable: true``,
in which case captions use its plural (``plural``, else English rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rsdata.errors import RecipeError

CATEGORIES = ("building", "road", "railway", "water", "landcover", "landuse", "leisure",
              "amenity", "infrastructure", "other")
ENTRY_FIELDS = ("name", "phrase", "countable", "category", "plural")


@dataclass(frozen=True)
class LandcoverClass:
    """One row of a class table."""

    code: int
    name: str
    phrase: str
    countable: bool = False
    category: str | None = None
    plural: str | None = None

    @property
    def noun(self) -> str:
        """The form share phrases use: the mass noun, or the plural of a countable phrase."""
        if not self.countable:
            return self.phrase
        return self.plural or pluralize(self.phrase)


def pluralize(phrase: str) -> str:
    """English plural of the last word: orchard -> orchards, marsh -> marshes, dairy -> dairies."""
    head, _, last = phrase.rpartition(" ")
    if last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def _wc(code: int, name: str, phrase: str, category: str) -> LandcoverClass:
    return LandcoverClass(code, name, phrase, False, category)


# ESA WorldCover 10 m (v100 2020 / v200 2021) legend; 0 is its nodata value.
WORLDCOVER: dict[int, LandcoverClass] = {c.code: c for c in (
    _wc(10, "tree cover", "tree cover", "landcover"),
    _wc(20, "shrubland", "shrubland", "landcover"),
    _wc(30, "grassland", "grassland", "landcover"),
    _wc(40, "cropland", "cropland", "landuse"),
    _wc(50, "built-up", "built-up area", "landuse"),
    _wc(60, "bare / sparse vegetation", "bare or sparsely vegetated land", "landcover"),
    _wc(70, "snow and ice", "snow and ice", "landcover"),
    _wc(80, "permanent water bodies", "open water", "water"),
    _wc(90, "herbaceous wetland", "herbaceous wetland", "landcover"),
    _wc(95, "mangroves", "mangroves", "landcover"),
    _wc(100, "moss and lichen", "moss and lichen", "landcover"),
)}
BUILTIN_TABLES: dict[str, dict[int, LandcoverClass]] = {"worldcover": WORLDCOVER}


def _code(key: Any, where: str) -> int:
    if isinstance(key, bool):
        raise RecipeError(f"{where}: class code {key!r} is not an integer")
    if isinstance(key, int):
        return key
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key.strip())
    raise RecipeError(f"{where}: class code {key!r} is not an integer code of the class raster "
                      "(write it as text, e.g. '10':)")


def parse_class_table(raw: Any, where: str = "landcover_join.classes") -> dict[int, LandcoverClass]:
    """``classes`` of a recipe (a built-in table's name or code -> mapping) as a class table."""
    if isinstance(raw, str):
        table = BUILTIN_TABLES.get(raw)
        if table is None:
            raise RecipeError(f"{where}: {raw!r} is not a built-in class table; built-in: "
                              f"{sorted(BUILTIN_TABLES)}, or give a table code -> "
                              "{name: ..., phrase: ...}")
        return dict(table)
    if not isinstance(raw, Mapping) or not raw:
        raise RecipeError(f"{where}: give 'worldcover' or a table of class codes, e.g. "
                          "{'10': {name: tree cover, phrase: tree cover}}; got "
                          f"{type(raw).__name__} {raw!r}")
    table: dict[int, LandcoverClass] = {}
    for key, entry in raw.items():
        here = f"{where}[{key!r}]"
        code = _code(key, here)
        if not isinstance(entry, Mapping):
            raise RecipeError(f"{here}: a class is a mapping {{name: ..., phrase: ..., countable: "
                              f"true|false, category: ...}}, not {type(entry).__name__} {entry!r}")
        unknown = sorted(set(entry) - set(ENTRY_FIELDS))
        if unknown:
            raise RecipeError(f"{here}: unknown field(s) {unknown}; allowed: {list(ENTRY_FIELDS)}")
        for name in ("name", "phrase"):
            if not isinstance(entry.get(name), str) or not entry[name].strip():
                raise RecipeError(f"{here}: '{name}' (text) is required")
        countable = entry.get("countable", False)
        if not isinstance(countable, bool):
            raise RecipeError(f"{here}.countable: true or false, not {countable!r}")
        category = entry.get("category")
        if category is not None and category not in CATEGORIES:
            raise RecipeError(f"{here}.category: {category!r} is not one of {list(CATEGORIES)}")
        plural = entry.get("plural")
        if plural is not None and (not isinstance(plural, str) or not plural.strip()):
            raise RecipeError(f"{here}.plural: text, not {plural!r}")
        if code in table:
            raise RecipeError(f"{here}: code {code} is given twice")
        table[code] = LandcoverClass(code, entry["name"].strip(), entry["phrase"].strip(),
                                     countable, category, plural.strip() if plural else None)
    nouns: dict[str, int] = {}
    for cls in table.values():
        other = nouns.setdefault(cls.noun.lower(), cls.code)
        if other != cls.code:
            raise RecipeError(f"{where}: codes {other} and {cls.code} have the same phrase "
                              f"{cls.noun!r}; captions could not tell them apart")
    return table
