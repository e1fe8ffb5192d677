"""An independent checker: does a template caption state only what the OSM stats support?

Used by the end-to-end tests. It reads captions the way a reviewer would: every feature phrase
must belong to a visible tag, every number must equal that tag's visible count, every length
must match the stored length, every area word must match the stored area share.
"""

from __future__ import annotations

import re
from typing import Any

NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10}
SHARE_RANGES = {"most of": (0.6, 1.0), "a large part of": (0.35, 0.6), "part of": (0.15, 0.35),
                "a small part of": (0.0, 0.15)}


def caption_problems(text: str, osm: dict[str, Any], all_phrases: set[str]) -> list[str]:
    """Everything in ``text`` that the tile's stats do not support (empty list: faithful)."""
    problems: list[str] = []
    tags = osm["tags"]
    visible = [t for t in tags if t["visible"]]
    by_phrase: dict[str, dict[str, Any]] = {}
    for t in visible:
        by_phrase[t["phrase"]] = t
        by_phrase[t["plural"]] = t
    lowered = text.lower()
    # 1. feature phrases: longest first, so "minor road" is not also read as "road"
    remaining = lowered
    for phrase in sorted(all_phrases | set(by_phrase), key=len, reverse=True):
        pattern = rf"\b{re.escape(phrase.lower())}\b"
        if re.search(pattern, remaining):
            if phrase not in by_phrase:
                problems.append(f"mentions {phrase!r}, which is not a visible tag")
            remaining = re.sub(pattern, " ", remaining)
    # 2. numbers: "<n> <phrase>" must be the visible count of that phrase
    for phrase, tag in by_phrase.items():
        for m in re.finditer(rf"\b(\w+) {re.escape(phrase.lower())}\b", lowered):
            word = m.group(1)
            n = NUMBER_WORDS.get(word) or (int(word) if word.isdigit() else None)
            if n is not None and n != tag["visible_count"]:
                problems.append(f"says {n} {phrase} but {tag['visible_count']} are visible")
    # 3. lengths: "about N m of <phrase>"
    for m in re.finditer(r"about (\d+) m of ([a-z ]+?)(?= cross|,| and|$)", lowered):
        length, phrase = int(m.group(1)), m.group(2).strip()
        tag = by_phrase.get(phrase)
        if tag is None:
            problems.append(f"length of {phrase!r}, which is not a visible tag")
        elif abs(tag["length_m"] - length) > max(5.0, 0.05 * tag["length_m"]):
            problems.append(f"says {length} m of {phrase}, stats say {tag['length_m']}")
    # 4. area words: "<phrase> cover(s) <share words> the image"
    for m in re.finditer(r"([a-z ]+?) (?:covers|cover|covering|fills) (most of|a large part of|"
                         r"a small part of|part of) ", lowered):
        subject = re.sub(r"^(an? |the |with |\w+ )?", "", m.group(1).strip().split(",")[-1].strip())
        tag = next((t for p, t in by_phrase.items() if m.group(1).strip().endswith(p.lower())), None)
        if tag is None:
            problems.append(f"area statement about {subject!r}, not a visible area")
            continue
        lo, hi = SHARE_RANGES[m.group(2)]
        if not lo <= tag["area_share"] <= hi + 1e-9:
            problems.append(f"says {m.group(2)} for {tag['phrase']} but area share is {tag['area_share']}")
    if not visible and "no " not in lowered:
        problems.append("a tile without visible tags needs a 'no mapped features' caption")
    return problems
