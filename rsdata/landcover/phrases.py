"""Caption phrases from ``meta["landcover"]``, and an independent checker of such phrases.

:func:`landcover_phrases` (``meta, rng -> list[str]``) gives noun phrases a template can put after
"An aerial image of ..." or "... with ...": first the composition ("mostly tree cover with some
cropland", "a mix of cropland and built-up area"), then, when one class clearly sits in a few
grid cells, where it is ("open water on the left"). It returns ``[]`` when nothing faithful can be
said (no ``landcover``, no class present).

Share words, of the whole tile (see *Coverage* below):

==================  ==============================  =========================================
word                share of the class              example
==================  ==============================  =========================================
mostly / mainly /   >= 0.6                          "mostly tree cover"
predominantly
largely             >= 0.4 and < 0.6                "largely cropland"
a mix / mixture of  each named class >= 0.2 and     "a mix of cropland and built-up area"
                    < 0.6 (two classes or more)
some                >= ``min_share`` and < 0.4      "with some grassland", "some shrubland"
==================  ==============================  =========================================

A class below ``min_share`` (the stage's setting, default 0.05) is not "present" and is never
named; the ``unknown`` bucket is never named either. Position phrases name the 3x3 cells where the
class is the most frequent class ("cropland in the bottom left", "open water at the top and in
the top right"); they are given only for fully covered tiles and classes dominant in 1 to 3 cells.

*Coverage.* Shares are of the covered pixels; where the class raster covers only a fraction
``c`` of the tile, a class's share of the whole tile is only known to lie in
``[share * c, share * c + (1 - c)]``, and a word is used only when that whole interval lies in its
range. A fully covered tile has ``c = 1`` and the interval is the share itself.

:func:`check_landcover_phrase` reads text the way a reviewer would: it re-derives every class's
share and the covered fraction from the pixel counts in the json (and checks them against the
stored ones), finds every share word, mix, and position claim about a land-cover phrase, and
reports each that the numbers do not support. It shares no code with the phrase generator.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from typing import Any

MOSTLY = 0.6
LARGELY = 0.4
MIX_MIN = 0.2
MOSTLY_WORDS = ("mostly", "mainly", "predominantly")
LARGELY_WORDS = ("largely",)
MIX_WORDS = ("a mix of", "a mixture of")
SOME_LINKS = ("with some", "and some")
FULL_COVER = 0.999  # from this covered fraction on, position phrases may be given
MAX_LISTED = 3
PLACES = {"top left": "in the top left", "top": "at the top", "top right": "in the top right",
          "left": "on the left", "center": "in the center", "right": "on the right",
          "bottom left": "in the bottom left", "bottom": "at the bottom",
          "bottom right": "in the bottom right"}


# -- generation ---------------------------------------------------------------------------------
def _pick(options: tuple[str, ...], rng: random.Random | None) -> str:
    return options[0] if rng is None else rng.choice(options)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _noun(entry: dict[str, Any]) -> str:
    if entry.get("countable"):
        return entry.get("plural") or entry["phrase"]
    return entry["phrase"]


def tile_share_range(share: float, covered: float) -> tuple[float, float]:
    """Bounds of a class's share of the whole tile from its share of the covered pixels."""
    lo = share * covered
    return lo, lo + (1.0 - covered)


def share_word(lo: float, hi: float, min_share: float) -> str | None:
    """``mostly`` / ``largely`` / ``some`` for a share known to lie in [lo, hi], or None."""
    if lo >= MOSTLY:
        return "mostly"
    if lo >= LARGELY and hi < MOSTLY:
        return "largely"
    if lo >= min_share and hi < LARGELY:
        return "some"
    return None


def _named(landcover: dict[str, Any]) -> list[tuple[dict[str, Any], float, float, str | None]]:
    """Known classes at or above ``min_share`` (largest first) with their tile-share bounds."""
    covered = float(landcover.get("covered", 0.0))
    min_share = float(landcover.get("min_share", 0.05))
    out = []
    for entry in landcover.get("classes", []):
        if entry.get("code") is None or not entry.get("phrase"):
            continue
        lo, hi = tile_share_range(float(entry["share"]), covered)
        if lo < min_share:
            continue
        out.append((entry, lo, hi, share_word(lo, hi, min_share)))
    return out


def describe_landcover(landcover: dict[str, Any] | None,
                       rng: random.Random | None = None) -> str | None:
    """The composition phrase of a tile ("mostly tree cover with some cropland"), or None."""
    if not landcover:
        return None
    named = _named(landcover)
    if not named:
        return None
    lead, _, _, lead_word = named[0]
    mixable = [e for e, lo, hi, _ in named if lo >= MIX_MIN and hi < MOSTLY][:MAX_LISTED]
    head: list[dict[str, Any]]
    if lead_word == "mostly":
        head, text = [lead], f"{_pick(MOSTLY_WORDS, rng)} {_noun(lead)}"
    elif len(mixable) >= 2 and mixable[0] is lead and (
            lead_word != "largely" or _pick(("mix", "largely"), rng) == "mix"):
        head, text = mixable, f"{_pick(MIX_WORDS, rng)} {_join([_noun(e) for e in mixable])}"
    elif lead_word == "largely":
        head, text = [lead], f"{_pick(LARGELY_WORDS, rng)} {_noun(lead)}"
    else:
        some = [e for e, _, _, w in named if w == "some"][:MAX_LISTED]
        return f"some {_join([_noun(e) for e in some])}" if some else None
    rest = [e for e, _, _, w in named if w == "some" and not any(e is h for h in head)]
    if rest:
        text += f" {_pick(SOME_LINKS, rng)} {_join([_noun(e) for e in rest[:MAX_LISTED]])}"
    return text


def position_phrase(landcover: dict[str, Any] | None,
                    rng: random.Random | None = None) -> str | None:
    """Where one present class sits ("cropland in the bottom left"), or None."""
    if not landcover or float(landcover.get("covered", 0.0)) < FULL_COVER:
        return None
    named = [e for e, _, _, _ in _named(landcover)]
    candidates = [e for e in named[1:] + named[:1] if 1 <= len(e.get("cells", [])) <= 3]
    if not candidates:
        return None
    entry = candidates[0]
    return f"{_noun(entry)} {_join([PLACES[c] for c in entry['cells']])}"


def landcover_phrases(meta: dict[str, Any], rng: random.Random | None = None) -> list[str]:
    """Faithful land-cover noun phrases of a sample (composition first); ``[]`` when none."""
    landcover = meta.get("landcover")
    out = []
    for phrase in (describe_landcover(landcover, rng), position_phrase(landcover, rng)):
        if phrase:
            out.append(phrase)
    return out


# -- checking (independent of the generator above) ----------------------------------------------
EPS = 1e-4  # shares are stored rounded to 4 decimals
_SHARE_RANGES = {  # claim -> (lowest share, share it must stay below), of the whole tile
    "mostly": (0.6, 1.0 + EPS), "mainly": (0.6, 1.0 + EPS), "predominantly": (0.6, 1.0 + EPS),
    "largely": (0.4, 0.6), "mix": (0.2, 0.6),
}
_CELLS = ("top left", "top right", "bottom left", "bottom right", "top", "bottom", "left",
          "right", "center")


def _builtin_phrases() -> set[str]:
    from rsdata.landcover.classes import WORLDCOVER

    return {c.phrase.lower() for c in WORLDCOVER.values()} | {c.noun.lower()
                                                              for c in WORLDCOVER.values()}


def check_landcover_phrase(text: str, meta: dict[str, Any],
                           known_phrases: Iterable[str] = ()) -> list[str]:
    """Every land-cover claim in ``text`` that ``meta["landcover"]`` does not support.

    ``known_phrases``: class phrases of the recipe's table beyond those in the tile's json and
    the built-in WorldCover table (so a claim about a class absent from the tile is caught).
    Mentions of a class phrase without a share word or position are not claims checked here.
    """
    problems: list[str] = []
    lc = meta.get("landcover")
    by_phrase: dict[str, tuple[str, float, float, list[str]]] = {}  # phrase -> name, lo, hi, cells
    min_share = 0.05
    if lc:
        min_share = float(lc.get("min_share", min_share))
        total = int(lc.get("pixels", {}).get("total", 0))
        valid = int(lc.get("pixels", {}).get("valid", 0))
        covered = valid / total if total else 0.0
        if abs(covered - float(lc.get("covered", -1))) > EPS:
            problems.append(f"covered {lc.get('covered')} != {valid}/{total} pixels")
        classes = lc.get("classes", [])
        if sum(int(c.get("pixels", 0)) for c in classes) != valid:
            problems.append("the classes' pixels do not add up to the valid pixels")
        best = max(classes, key=lambda c: int(c.get("pixels", 0)), default=None)
        if best is not None and lc.get("dominant") != best.get("name") and not any(
                c is not best and c.get("pixels") == best.get("pixels") for c in classes):
            problems.append(f"dominant is {lc.get('dominant')!r} but {best.get('name')!r} has "
                            "the most pixels")
        for c in classes:
            share = int(c.get("pixels", 0)) / valid if valid else 0.0
            if abs(share - float(c.get("share", -1))) > EPS:
                problems.append(f"{c.get('name')}: share {c.get('share')} != "
                                f"{c.get('pixels')}/{valid} pixels")
            if c.get("code") is None or not c.get("phrase"):
                continue
            lo = share * covered
            info = (str(c.get("name")), lo, lo + 1.0 - covered, list(c.get("cells", [])))
            by_phrase[str(c["phrase"]).lower()] = info
            if c.get("plural"):
                by_phrase[str(c["plural"]).lower()] = info
    known = _builtin_phrases() | {p.lower() for p in known_phrases} | set(by_phrase)
    alt = "|".join(re.escape(p) for p in sorted(known, key=len, reverse=True))
    listing = rf"(?:{alt})(?:, (?:{alt}))*(?:,? and (?:{alt}))?"
    lowered = " ".join(text.lower().split())

    def claim(phrase: str, kind: str, what: str) -> None:
        if phrase not in by_phrase:
            problems.append(f"{what}: the tile has no {phrase!r} (not in its land cover)")
            return
        _, lo, hi, _ = by_phrase[phrase]
        low, below = (min_share, 0.4) if kind == "some" else _SHARE_RANGES[kind]
        if lo < low - EPS or hi >= below + EPS:
            problems.append(f"{what}: {phrase!r} covers {lo:.3f}..{hi:.3f} of the tile, outside "
                            f"[{low}, {below}) for {kind!r}")

    for m in re.finditer(rf"\b(mostly|mainly|predominantly|largely) ({listing})\b", lowered):
        for phrase in re.findall(alt, m.group(2)):
            claim(phrase, m.group(1), m.group(0))
    for m in re.finditer(rf"\ba mix(?:ture)? of ({listing})\b", lowered):
        members = re.findall(alt, m.group(1))
        if len(members) < 2:
            problems.append(f"{m.group(0)}: a mix names two classes or more")
        for phrase in members:
            claim(phrase, "mix", m.group(0))
    for m in re.finditer(rf"\bsome ({listing})\b", lowered):
        for phrase in re.findall(alt, m.group(1)):
            claim(phrase, "some", m.group(0))
    for m in re.finditer(rf"\b(mostly|mainly|predominantly|largely|a mix(?:ture)? of) "
                         rf"(?!(?:{alt})\b)([\w-]+)", lowered):
        problems.append(f"{m.group(0)!r}: {m.group(2)!r} is not a land-cover class")
    cells = "|".join(re.escape(c) for c in _CELLS)
    place = rf"(?:in|on|at) the (?:{cells})\b"
    for m in re.finditer(rf"\b({alt}) ({place}(?:,? and {place})*)", lowered):
        phrase = m.group(1)
        if phrase not in by_phrase:
            problems.append(f"{m.group(0)}: the tile has no {phrase!r}")
            continue
        for cell in re.findall(rf"(?:in|on|at) the ({cells})\b", m.group(2)):
            if cell not in by_phrase[phrase][3]:
                problems.append(f"{m.group(0)}: {phrase!r} is not the main class in the {cell} "
                                f"cell (it is in {by_phrase[phrase][3]})")
    return problems
