"""How varied a corpus's captions are, and how many name a thing the picture cannot show.

``variety(records)`` takes ``(caption text, sample meta)`` pairs and reports:

- ``words``: distinct words (lower case, letters only);
- ``skeletons``: distinct sentence skeletons, where feature names (vocabulary phrases, synonyms,
  land-cover classes) become ``X``, numbers ``N``, grid positions ``P``, attribute words ``A``
  and share words ``S`` ("about a third of" -> ``S of``: the quantifier is the data's, the "of"
  the template's, so "S of the roofs are A" shows its constant "of the roofs are"; two captions
  differing only in what they name or measure share a skeleton);
- ``top_fragment`` / ``top_fragment_share``: the run of 3 to 6 template words (no slot in it;
  numbers kept, so "a 640 m wide" counts; punctuation ends a run, so "seen from above." counts)
  found in the most captions (the longest of equally common ones), and the share of captions
  holding it (the issue's bar: no constant fragment in more than 5%);
- ``constant_fragments``: every such run in more than 5% of captions, longest form only;
- ``top_skeleton_share``: the share of the most common skeleton;
- ``invisible_subject_share``: captions naming a tag the caption rules never allow as a subject
  (a nature reserve, a boundary, a place ...).

``benchmarks/bench_caption_variety.py`` runs it over corpora (``rsdata run`` outputs).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from rsdata.captions.rules import CaptionRules
from rsdata.captions.words import SHARES

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+")
NUMBERS = frozenset({"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"})
CELLS = ("top left", "top right", "bottom left", "bottom right", "top-left", "top-right",
         "bottom-left", "bottom-right", "top", "bottom", "left", "right", "center", "centre", "middle")
FRAGMENT_N = (3, 6)  # fragment lengths in words, both ends included
CONSTANT_SHARE = 0.05
SLOTS = frozenset({"X", "N", "P", "A", "S"})
SHARE_WORDS = tuple(sorted({w for w, *_ in SHARES} | {"mostly"}, key=len, reverse=True))


@functools.cache
def _feature_phrases() -> tuple[str, ...]:
    from rsdata.osm.vocabulary import Vocabulary

    rules = CaptionRules.default()
    out = {p for _k, _v, ph in Vocabulary.default().entries() for p in (ph.singular, ph.plural)}
    out |= {w for pairs in rules.synonyms.values() for pair in pairs for w in pair}
    return tuple(sorted(out, key=len, reverse=True))


@functools.cache
def _attribute_words() -> frozenset[str]:
    rules = CaptionRules.default()
    return frozenset(w for a in rules.attributes.values() for w in a.values.values())


@functools.cache
def _attribute_noun_re() -> re.Pattern[str] | None:
    """An attribute's noun where it is one ("the roofs", "tin and concrete roofs"), not the
    feature of the same name (building=roof): a template word, not a slot."""
    rules = CaptionRules.default()
    nouns = sorted({a.noun for a in rules.attributes.values() if a.noun}, key=len, reverse=True)
    if not nouns:
        return None
    lead = sorted(_attribute_words() | {"the", "and", "all", "mostly"}, key=len, reverse=True)
    return re.compile(rf"(?<![\w-])((?:{'|'.join(map(re.escape, lead))}) )"
                      rf"({'|'.join(re.escape(n.rstrip('s')) for n in nouns)})(s?)(?![\w-])")


NOUN_MARK = "qqnounqq"  # letters only: survives the slot replacements, restored per token


def skeleton(text: str, meta: Mapping[str, Any] | None = None, numbers: bool = True) -> str:
    """The caption with feature names, numbers (unless ``numbers`` is false), positions, share
    and attribute words abstracted."""
    low = re.sub(r"(?<![\w-])a single(?![\w-])", "one", text.lower())  # a count, like "one"
    nouns: list[str] = []
    noun_re = _attribute_noun_re()
    if noun_re is not None:
        def mark(m: re.Match[str]) -> str:
            nouns.append(m.group(2) + m.group(3))
            return m.group(1) + NOUN_MARK
        low = noun_re.sub(mark, low)
    extra = []
    for t in ((meta or {}).get("osm") or {}).get("tags") or []:
        extra += [t.get("phrase", ""), t.get("plural", "")]
    for c in ((meta or {}).get("landcover") or {}).get("classes") or []:
        extra += [c.get("phrase") or "", c.get("plural") or ""]
    phrases = {p.lower() for p in extra if p} | set(_feature_phrases())
    for phrase in sorted((p for p in phrases if p in low), key=len, reverse=True):
        low = re.sub(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", " X ", low)
    for share in (w for w in SHARE_WORDS if w in low):
        slot = " S of " if share.endswith(" of") else " S "
        low = re.sub(rf"(?<![\w-]){re.escape(share)}(?![\w-])", slot, low)
    for cell in (c for c in CELLS if c in low):
        low = re.sub(rf"(?<![\w-]){re.escape(cell)}(?![\w-])", " P ", low)
    tokens = []
    marks = iter(nouns)
    for tok in re.findall(r"[a-z]+(?:'[a-z]+)?|\d+|[XPNS]|[.,;:]", low):
        if tok == NOUN_MARK:
            tokens.append(next(marks))
            continue
        if numbers and (tok.isdigit() or tok in NUMBERS):
            tok = "N"
        elif tok in _attribute_words() or tok.endswith("storey"):
            tok = "A"
        tokens.append(tok)
    out = " ".join(tokens)
    return re.sub(r"\b(X)( X)+\b", "X", out)


def _invisible_phrases(meta: Mapping[str, Any]) -> list[str]:
    rules = CaptionRules.default()
    out = []
    for t in ((meta.get("osm") or {}).get("tags")) or []:
        name = t.get("tag") or f"{t.get('key')}={t.get('value')}"
        if not rules.tag_is_subject(name):
            out += [t["phrase"].lower(), t["plural"].lower()]
    return out


def variety(records: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    words: set[str] = set()
    skeletons: Counter[str] = Counter()
    fragments: Counter[tuple[str, ...]] = Counter()
    invisible = 0
    n = 0
    for text, meta in records:
        n += 1
        low = text.lower()
        words |= {w for w in WORD.findall(low) if not w.isdigit()}
        sk = skeleton(text, meta)
        skeletons[sk] += 1
        # fragments keep numbers: "a 640 m wide" on every tile is a constant fragment
        fragments.update(template_fragments(skeleton(text, meta, numbers=False)))
        if any(p in low and re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", low)
               for p in _invisible_phrases(meta)):
            invisible += 1
    top_frag, top_count = (max(fragments.items(), key=lambda fk: (fk[1], len(fk[0]), fk[0]))
                           if fragments else ((), 0))
    frequent = {f: k for f, k in fragments.items() if n and k / n > CONSTANT_SHARE}
    # the longest form of a constant fragment: drop one inside a longer one in as many captions
    constant = sorted((f for f, k in frequent.items()
                       if not any(len(g) > len(f) and k2 == k and _inside(f, g)
                                  for g, k2 in frequent.items())),
                      key=lambda f: (-frequent[f], -len(f), f))
    top_sk_count = skeletons.most_common(1)[0][1] if skeletons else 0
    return {
        "captions": n,
        "words": len(words),
        "skeletons": len(skeletons),
        "top_skeleton_share": round(top_sk_count / n, 4) if n else 0.0,
        "top_fragment": " ".join(top_frag),
        "top_fragment_share": round(top_count / n, 4) if n else 0.0,
        "invisible_subject_share": round(invisible / n, 4) if n else 0.0,
        "constant_fragments": [{"fragment": " ".join(f), "share": round(frequent[f] / n, 4)}
                               for f in constant],
    }


def template_fragments(skel: str) -> set[tuple[str, ...]]:
    """Runs of 3 to 6 template words of a skeleton (no slot; punctuation splits runs)."""
    out: set[tuple[str, ...]] = set()
    lo, hi = FRAGMENT_N
    for run in re.split(r" [.,;:](?: |$)|^[.,;:] ", f"{skel} "):
        toks = run.split()
        for k in range(lo, hi + 1):
            out |= {g for i in range(len(toks) - k + 1)
                    if not SLOTS & set(g := tuple(toks[i:i + k]))}
    return out


def _inside(short: tuple[str, ...], long: tuple[str, ...]) -> bool:
    k = len(short)
    return any(long[i:i + k] == short for i in range(len(long) - k + 1))
