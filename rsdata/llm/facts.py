"""Fact phrases: what a tile's OSM statistics say, written by code as short English phrases.

A small LLM copies and joins phrases like "seven buildings in the top left" and "farmland
covering most of the image" far more faithfully than it reads raw statistics, so prompts are
built from these. Each :class:`Fact` keeps the tag it comes from, which is what the validator
measures coverage against. The wording reuses the template captions' helpers, so LLM prompts,
template captions and the validator share one way of saying counts, positions and shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rsdata.captions.templates import round_m, tag_kind
from rsdata.captions.templates import amount, share_words, where

Tag = dict[str, Any]
AREA_SHARE_MIN = 0.02  # below this an area's share is not worth a phrase


@dataclass(frozen=True)
class Fact:
    """One statement about a tile and the tag it describes."""

    tag: str
    text: str


def fact_tags(meta: dict[str, Any], max_facts: int = 5) -> list[Tag]:
    """The tags a caption should describe: visible, naming their features, largest first."""
    tags = (meta.get("osm") or {}).get("tags", [])
    return [t for t in tags if t.get("visible") and t.get("primary", True)][:max_facts]


def fact_text(tag: Tag, lengths: bool = False) -> str:
    """One tag as a phrase: what, how many, how much of the image and where."""
    kind = tag_kind(tag)
    what = amount(tag)
    if (
        kind == "polygon"
        and tag["area_share"] >= AREA_SHARE_MIN
        and (tag["mass"] or tag["visible_count"] == 1)
    ):
        text = f"{what} covering {share_words(tag['area_share'])}"
        if tag["position"] != "across":
            text += f", {where(tag, kind)}"
        return text
    if kind == "line" and lengths and tag["length_m"] >= 10:
        return f"about {round_m(tag['length_m'])} m of {tag['phrase']} {where(tag, kind)}"
    return f"{what} {where(tag, kind)}"


def build_facts(meta: dict[str, Any], max_facts: int = 5, lengths: bool = False) -> list[Fact]:
    """The fact phrases of one sample (empty when nothing is visible)."""
    return [Fact(tag=t["tag"], text=fact_text(t, lengths)) for t in fact_tags(meta, max_facts)]
