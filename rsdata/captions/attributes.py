"""Visible attributes of a tile's subjects (roof material, storeys, road surface, leaf type, crop)
with the share of objects each value covers.

Shares come from the join's statistics when it keeps them (``tag["attributes"]``:
``{key: {raw value: share of the tag's objects}}``), else from the objects' ``attrs``
(``osm.objects[i].attrs``); without either an attribute is not stated. A share is of the objects
that carry the attribute, and an attribute is used only when at least ``min_known`` of the
subject's objects carry it. Roofs and storeys are of all the tile's buildings together
(``applies_to``), surfaces, leaf types and crops of one tag.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rsdata.captions.rules import Attribute, CaptionRules
from rsdata.captions.subjects import Subject


@dataclass(frozen=True)
class AttributeShares:
    key: str
    form: str
    known: float  # share of the subjects' objects that carry the attribute
    shares: tuple[tuple[str, float], ...]  # (caption word, share of the known), largest first
    subjects: tuple[Subject, ...]

    @property
    def top(self) -> tuple[str, float]:
        return self.shares[0]


def _from_objects(subjects: Sequence[Subject], attr: Attribute) -> tuple[int, Counter[str]] | None:
    objs = [o for s in subjects for o in s.objects]
    if not objs:
        return None
    words: Counter[str] = Counter()
    for o in objs:
        raw = (o.get("attrs") or {}).get(attr.key)
        word = attr.word(raw) if raw is not None else None
        if word is not None:
            words[word] += 1
    return len(objs), words


def _from_stats(subjects: Sequence[Subject], attr: Attribute) -> tuple[float, Counter[str]] | None:
    total, words = 0.0, Counter[str]()
    found = False
    for s in subjects:
        table = (s.stats.get("attributes") or {}).get(attr.key)
        n = float(s.n or s.stats.get("visible_count") or 0)
        total += n
        if not isinstance(table, Mapping):
            continue
        found = True
        for raw, share in table.items():
            word = attr.word(raw)
            if word is not None:
                words[word] += float(share) * n  # type: ignore[assignment]
    return (total, words) if found and total else None


def attribute_shares(subjects: Sequence[Subject], attr: Attribute, min_known: float
                     ) -> AttributeShares | None:
    got = _from_stats(subjects, attr) or _from_objects(subjects, attr)
    if got is None:
        return None
    total, words = got
    known = sum(words.values())
    if not total or known / total < min_known or not known:
        return None
    shares = tuple(sorted(((w, round(c / known, 4)) for w, c in words.items()), key=lambda x: (-x[1], x[0])))
    return AttributeShares(attr.key, attr.form, round(known / total, 4), shares, tuple(subjects))


def tile_attributes(subjects: Sequence[Subject], rules: CaptionRules | None = None
                    ) -> list[AttributeShares]:
    """Every stated-able attribute of the tile's subjects."""
    rules = rules or CaptionRules.default()
    out = []
    for attr in rules.attributes.values():
        if attr.form in ("noun", "levels"):  # of a whole class (all buildings)
            group = [s for s in subjects if s.category in attr.applies_to and not s.mass]
            got = attribute_shares(group, attr, rules.min_known) if group else None
            if got is not None:
                out.append(got)
        else:
            for s in subjects:
                if s.category in attr.applies_to:
                    got = attribute_shares([s], attr, rules.min_known)
                    if got is not None:
                        out.append(got)
    return out


def adjective_for(s: Subject, attrs: Sequence[AttributeShares]) -> tuple[str, str] | None:
    """("paved", "") or ("paved", "mostly ") for a subject whose objects are (mostly) so."""
    for a in attrs:
        if a.form == "adjective" and a.key != "crop" and len(a.subjects) == 1 and a.subjects[0] is s:
            word, share = a.top
            if share >= 0.9:
                return word, ""
            if share >= 0.6:
                return word, "mostly "
    return None


def crop_for(s: Subject, attrs: Sequence[AttributeShares]) -> str | None:
    for a in attrs:
        if a.key == "crop" and len(a.subjects) == 1 and a.subjects[0] is s and a.top[1] >= 0.9:
            return a.top[0]
    return None


def by_key(attrs: Sequence[AttributeShares], key: str) -> AttributeShares | None:
    return next((a for a in attrs if a.key == key), None)

