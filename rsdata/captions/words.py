"""The English of template captions: articles, lists, numbers, quantities, shares, positions.

Every word choice that states a fact has a range it is true in; the generator draws among the
choices that are true for the tile (so the wording varies, never the truth), and the caption
checker re-reads them against the same ranges.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

# share of the tile (or of a group of objects): words, and the range each is true in.
# lower_bound: still true when the stat is only a lower bound (the tile is partly mapped)
SHARES: tuple[tuple[str, float, float, bool], ...] = (
    ("nearly all of", 0.85, 1.0, True),
    ("almost all of", 0.85, 1.0, True),
    ("most of", 0.6, 1.0, True),
    ("more than half of", 0.5, 1.0, True),
    ("about three quarters of", 0.68, 0.82, False),
    ("about two thirds of", 0.6, 0.72, False),
    ("about half of", 0.42, 0.58, False),
    ("a large part of", 0.35, 0.6, False),
    ("about a third of", 0.28, 0.4, False),
    ("about a quarter of", 0.2, 0.3, False),
    ("part of", 0.15, 0.35, False),
    ("about a tenth of", 0.07, 0.13, False),
    ("a small part of", 0.0, 0.15, False),
    ("a small share of", 0.0, 0.15, False),
)
IMAGE_NOUNS = ("image", "scene", "frame", "picture", "view", "photo", "photograph")

# vague quantities of countable objects: (words, lowest, highest count they are true for)
VAGUE: tuple[tuple[str, int, int], ...] = (
    ("a few", 2, 4),
    ("several", 3, 9),
    ("many", 10, 10**9),
    ("dozens of", 24, 199),
    ("over a hundred", 101, 999),
    ("hundreds of", 200, 9999),
)

POSITION_FORMS = {
    # cell word -> ways to say "there"
    "top left": ("in the top left", "in the top-left corner", "at the top left"),
    "top right": ("in the top right", "in the top-right corner", "at the top right"),
    "bottom left": ("in the bottom left", "in the bottom-left corner", "at the bottom left"),
    "bottom right": ("in the bottom right", "in the bottom-right corner", "at the bottom right"),
    "top": ("at the top", "near the top", "along the top"),
    "bottom": ("at the bottom", "near the bottom", "along the bottom"),
    "left": ("on the left", "on the left side", "to the left"),
    "right": ("on the right", "on the right side", "to the right"),
    "center": ("in the center", "in the middle", "in the centre"),
}


def article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def join_words(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def share_choices(share: float, lower_bound_only: bool = False) -> list[str]:
    out = [w for w, lo, hi, lb in SHARES if lo <= share <= hi + 1e-9 and (lb or not lower_bound_only)]
    return out


FRACTIONS = frozenset({"nearly all of", "almost all of", "most of", "more than half of",
                       "about three quarters of", "about two thirds of", "about half of",
                       "about a third of", "about a quarter of", "about a tenth of"})


def share_phrase(share: float, rng: random.Random, lower_bound_only: bool = False,
                 fractions_only: bool = False) -> str | None:
    """E.g. "about a third of" (None when no word is true: a partly mapped small share).
    ``fractions_only``: no "part of" words (for a share of objects: "about half of the roofs")."""
    choices = [c for c in share_choices(share, lower_bound_only) if not fractions_only or c in FRACTIONS]
    return rng.choice(choices) if choices else None


def image_noun(rng: random.Random) -> str:
    return rng.choice(IMAGE_NOUNS)


def vague_choices(n: int) -> list[str]:
    return [w for w, lo, hi in VAGUE if lo <= n <= hi]


def where(position: str, rng: random.Random) -> str:
    return rng.choice(POSITION_FORMS.get(position, ("in the " + position,)))
