"""Check an LLM caption against a tile's OSM statistics: accept it only when the tags support
everything it says.

The caption is read as a sequence of *spans* (class mentions, numbers, vague amounts, position
phrases, share and size words, relations, punctuation) found by longest match against the
:mod:`rsdata.llm.lexicon`. Each modifier is tied to the mention it describes: a number or a
vague amount to the mention right after it, a position to the nearest mention in the same
clause (before it, else after it), a share word to the mention it names ("dominated by X",
"X covers most of the image"), a relation to the mentions on both sides. Then:

- every mention must name a visible tag of the tile (a synonym may be less specific than the
  tag, never more: "buildings" for houses, not "houses" for ``building=yes``);
- numbers must equal the visible count (never a count of road segments), and a singular noun
  needs one object, a plural noun several;
- positions must match the tag's position and covered cells; share words its area share (and
  "dominated by" the largest area); size adjectives its mean object size;
- relations between two features (along, next to, near, crossing, between, surrounded by ...)
  must hold in the tile's object geometry (:mod:`rsdata.llm.geometry`, the relations of the
  template captions); without ``objects`` they are unsupported (a shared grid cell is no
  evidence: two features in one cell may be far apart);
- numbers with units must match lengths, shares or the tile's width;
- no statement the tags cannot support (issue 15): no self-reference (a map, page or screen, an
  image inside the image), no filler clause ("which is a scene in itself"), no part-of-whole
  claim ("a small part of a nature reserve"), and no word outside the closed vocabulary (class
  terms, numbers, positions, share, size, density and relation words, neutral words):
  "a unique architectural style", "scenic", "with no trees" are statements no tag makes;
- the caption must be English prose of bounded length, and mention at least ``min_coverage``
  of the facts it was asked to state.

Every problem has a reason code (counted in the manifest) and a sentence (fed back to the model
on a retry).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rsdata.llm.geometry import CONTAINMENT_PREPOSITIONS, NEEDS_THIRD, RELATION_KINDS, LazyIndex
from rsdata.llm.lexicon import (
    ACROSS,
    COMMON_WORDS,
    COMPOUND_HEADS,
    COVER,
    COVER_VERBS,
    DENSITY,
    DENSITY_NOUNS,
    DETERMINERS,
    FUNCTION_WORDS,
    IMAGE_NOUNS,
    MEDIA_WORDS,
    NEUTRAL_WORDS,
    NUMBER_WORDS,
    PART_NOUNS,
    PREPOSITIONS,
    PROXIMITY,
    REGION_NOUNS,
    REGION_WORDS,
    SCENE_WORDS,
    SHARE_WORDS,
    SIZE_WORDS,
    UNIT_ADJECTIVES,
    UNITS,
    UNVERIFIABLE,
    VAGUE,
    VIEW_ADJECTIVES,
    Lexicon,
    ShareWord,
    Term,
    default_lexicon,
)

Tag = dict[str, Any]

REASONS = (
    "empty",
    "too_long",
    "truncated",
    "not_english",
    "prompt_echo",
    "unsupported_class",
    "invented_scene_word",
    "invented_name",
    "invisible_feature",
    "wrong_count",
    "number_agreement",
    "wrong_position",
    "wrong_share",
    "wrong_size",
    "unsupported_relation",
    "unsupported_number",
    "self_reference",
    "filler",
    "part_of_whole",
    "unsupported_detail",
    "low_coverage",
)
VIEWPOINT = frozenset(
    {("from", "above"), ("from", "overhead"), ("from", "the", "air"), ("from", "orbit"),
     ("top", "down"), ("at", "least"), ("from", "directly", "above"), ("looking", "straight", "down"),
     ("looking", "down"), ("straight", "down")}
)
DEFINITE = frozenset({"the", "this", "its"})
# "farmland crossed by a road": true of an area that a line spanning the tile runs over
CROSSED = {("crossed", "by"): "crossed", ("dotted", "with"): "near"}
SHOW_VERBS = frozenset({"shows", "show", "showing", "depicts", "displays", "captures", "features"})
RELATIVE = frozenset({"which", "that", "who"})
BE_VERBS = frozenset({"is", "are", "was", "were", "being", "be"})
IMAGE_WORDS = frozenset(
    {
        "image",
        "images",
        "scene",
        "photo",
        "photograph",
        "picture",
        "view",
        "frame",
        "tile",
        "area",
        "map",
        "it",
    }
)
ADJECTIVE_TERMS = frozenset({"common", "rough", "green", "open"})
CLAUSE_WORDS = frozenset({"and", "while", "whereas", "but", "with", "which", "where", "whose"})
ECHO = re.compile(
    r"\b(facts?|write one|one sentence|instructions?|assistant|user|system|leaves out|"
    r"leaving out|left out|which is not in|mentions?|does not show|doesn't show|not shown)\b"
    r"|<\||\|>"
)
BAD_CHARS = re.compile(r"[{}\[\]<>|\\#*_~^`=@$]|https?:")
TOKEN = re.compile(r"\d+(?:\.\d+)?|[a-z]+(?:'[a-z]+)?|[.,;:!?%]")


@dataclass(frozen=True)
class Problem:
    reason: str
    detail: str


@dataclass
class Verdict:
    """What the validator found: ``ok`` when there is no problem."""

    problems: list[Problem] = field(default_factory=list)
    coverage: float = 0.0
    mentioned: list[str] = field(default_factory=list)  # tags the caption names

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def reasons(self) -> list[str]:
        return sorted({p.reason for p in self.problems})

    def complaints(self) -> list[str]:
        return [p.detail for p in self.problems]


@dataclass
class Span:
    start: int
    end: int
    kind: str  # mention number vague region share size relation punct word
    text: str
    term: Term | None = None
    value: Any = None
    tags: list[Tag] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    max_words: int = 45
    max_sentences: int = 1
    min_coverage: float = 0.75


def tokenize(text: str) -> list[str]:
    t = text.lower().replace("’", "'").replace("-", " ").replace("centre", "center")
    return TOKEN.findall(t)


class Validator:
    """Checks captions of tiles; one per worker (the lexicon is built once per process)."""

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        self.lexicon = lexicon or default_lexicon()
        self._known: frozenset[str] | None = None

    # -- reading --------------------------------------------------------------------------
    def spans(self, tokens: list[str], extra: dict[tuple[str, ...], Term]) -> list[Span]:
        out: list[Span] = []
        i, n = 0, len(tokens)
        longest = max(self.lexicon.max_len, 5)
        while i < n:
            found: Span | None = None
            for size in range(min(longest, n - i), 0, -1):
                words = tuple(tokens[i : i + size])
                span = self._match(words, tokens, i)
                if span is not None:
                    found = span
                    break
            if found is None:
                tok = tokens[i]
                kind = "punct" if tok in ".,;:!?" else "word"
                if tok.isdigit() or re.fullmatch(r"\d+\.\d+", tok):
                    found = Span(i, i + 1, "number", tok, value=float(tok))
                elif tok in NUMBER_WORDS:
                    found = Span(i, i + 1, "number", tok, value=float(NUMBER_WORDS[tok]))
                else:
                    found = Span(i, i + 1, kind, tok)
                if found.kind == "word" and (tok,) in extra:
                    found = Span(i, i + 1, "mention", tok, term=extra[(tok,)])
            out.append(found)
            i = found.end
        return out

    def _match(self, words: tuple[str, ...], tokens: list[str], i: int) -> Span | None:
        end = i + len(words)
        text = " ".join(words)
        if words in VIEWPOINT:
            return Span(i, end, "word", text)  # "seen from above": how, not where
        if words in DENSITY:
            return Span(i, end, "density", text, value=DENSITY[words])
        nxt = _object_word(tokens, end)
        if words[0] in ("part", "portion") and i > 0 and (tokens[i - 1],) in REGION_WORDS:
            return Span(i, end, "word", text)  # "the top part of the image": a position
        if words in PROXIMITY or words in UNVERIFIABLE:
            if nxt in IMAGE_WORDS:
                region = next((REGION_WORDS[(w,)] for w in words if (w,) in REGION_WORDS), None)
                if region is not None:
                    return Span(i, end, "region", text, value=region)
                if words in SHARE_WORDS:
                    return Span(i, end, "share", text, value=SHARE_WORDS[words])
                return Span(i, end, "word", text)
            value = "other" if words not in PROXIMITY else CROSSED.get(words, "near")
            return Span(i, end, "relation", text, value=value)
        if words in COVER and nxt not in IMAGE_WORDS:
            return Span(i, end, "relation", text, value="cover")
        if words in SHARE_WORDS:
            return Span(i, end, "share", text, value=SHARE_WORDS[words])
        if words in VAGUE:
            return Span(i, end, "vague", text, value=VAGUE[words])
        term = self.lexicon.terms.get(words)
        if (
            term is not None
            and text in ADJECTIVE_TERMS
            and end < len(tokens)
            and tokens[end].isalpha()
            and tokens[end] not in FUNCTION_WORDS
        ):
            term = None  # "a common scene", "rough terrain": adjectives, not features
        if term is not None:
            return Span(i, end, "mention", text, term=term)
        if words in REGION_WORDS:
            return Span(i, end, "region", text, value=REGION_WORDS[words])
        if len(words) == 1 and words[0] in SIZE_WORDS:
            return Span(i, end, "size", text, value=SIZE_WORDS[words[0]])
        return None

    # -- checking -------------------------------------------------------------------------
    def validate(
        self,
        text: str,
        tags: list[Tag],
        facts: Iterable[str] = (),
        limits: Limits = Limits(),
        prefill: str = "",
        geo: dict[str, Any] | None = None,
        objects: list[dict[str, Any]] | None = None,
    ) -> Verdict:
        """Check ``text`` against the tile's ``tags``; ``facts`` are the tags it should name.
        ``objects`` (the sample's ``osm.objects``, with ``geo``) let relation claims ("X along
        Y", "between") be checked against the geometry; without them every relation between
        two features is rejected as unsupported."""
        verdict = Verdict()
        problems = verdict.problems
        body = text.strip()
        if prefill and body.lower().startswith(prefill.lower()):
            rest = body[len(prefill) :].strip()
        else:
            rest = body
        if not re.search(r"[A-Za-z]{2,}", rest):
            problems.append(Problem("empty", "it says nothing"))
            return verdict
        self._check_prose(body, limits, problems)
        if any(p.reason in ("not_english", "prompt_echo") for p in problems):
            return verdict
        self._check_names(body, problems)
        tokens = tokenize(body)
        visible = [t for t in tags if t.get("visible")]
        extra = self.lexicon.with_tags(tags)
        spans = self._merge_extra(self.spans(tokens, extra), tokens, extra)
        mentions = [s for s in spans if s.kind == "mention"]
        for m in mentions:
            self._resolve(m, visible, tags, problems)
        self._check_numbers(spans, tokens, problems, geo)
        self._check_agreement(spans, problems)
        index = LazyIndex(tags, geo, objects)
        try:
            self._check_positions(spans, problems, index)
            self._check_shares(spans, visible, problems)
            self._check_sizes(spans, problems)
            self._check_relations(spans, problems, index)
        finally:
            index.close()
        self._check_statements(spans, tokens, problems)
        self._check_density(spans, visible, problems)
        named = {t["tag"] for m in mentions for t in m.tags}
        verdict.mentioned = sorted(named)
        wanted = list(dict.fromkeys(facts))
        verdict.coverage = (sum(1 for f in wanted if f in named) / len(wanted)) if wanted else 1.0
        if wanted and verdict.coverage + 1e-9 < limits.min_coverage:
            missing = [f for f in wanted if f not in named]
            names = [next((t["phrase"] for t in tags if t["tag"] == f), f) for f in missing]
            problems.append(Problem("low_coverage", "it leaves out " + ", ".join(names)))
        return verdict

    def _merge_extra(
        self, spans: list[Span], tokens: list[str], extra: dict[tuple[str, ...], Term]
    ) -> list[Span]:
        """Re-read runs of plain words as the tile's own (unlisted) phrases, longest first."""
        if not any(len(k) > 1 for k in extra):
            return spans
        out: list[Span] = []
        i = 0
        while i < len(spans):
            hit = None
            for k, term in sorted(extra.items(), key=lambda kv: -len(kv[0])):
                j = i + len(k)
                if (
                    j <= len(spans)
                    and all(
                        s.kind in ("word", "mention") and s.end - s.start == 1 for s in spans[i:j]
                    )
                    and tuple(s.text for s in spans[i:j]) == k
                ):
                    hit = Span(spans[i].start, spans[j - 1].end, "mention", " ".join(k), term=term)
                    break
            out.append(hit or spans[i])
            i += len(hit.text.split()) if hit else 1
        return out

    def _check_prose(self, body: str, limits: Limits, problems: list[Problem]) -> None:
        low = body.lower()
        if ECHO.search(low):
            problems.append(
                Problem(
                    "prompt_echo", "it repeats the instructions instead of describing the image"
                )
            )
            return
        letters = sum(c.isalpha() for c in body)
        ascii_letters = sum(c.isascii() and c.isalpha() for c in body)
        words = re.findall(r"[A-Za-z']+", body)
        if BAD_CHARS.search(body) or ascii_letters < 0.97 * max(letters, 1):
            problems.append(Problem("not_english", "it is not plain English prose"))
            return
        lw = [w.lower() for w in words]
        toks = tokenize(body)
        repeats = sum(1 for a, b in zip(toks, toks[1:]) if a == b and a.isalpha() and a != "very")
        grams = [tuple(toks[i : i + 8]) for i in range(len(toks) - 7)]  # a loop repeats itself
        bad_pairs = sum(
            1
            for i, (a, b) in enumerate(zip(lw, lw[1:]))
            if (a in DETERMINERS and (b in DETERMINERS or b in PREPOSITIONS or b == "and"))
            or (
                a in PREPOSITIONS
                and b in PREPOSITIONS
                and (a, b) not in (("out", "of"), ("to", "the"))
                and not (b == "at" and lw[i + 2 : i + 3] == ["least"])  # "with at least one"
            )
        )
        function_share = sum(w in FUNCTION_WORDS for w in lw) / max(len(lw), 1)
        if (
            repeats
            or bad_pairs
            or len(set(grams)) < len(grams)
            or (len(lw) >= 8 and function_share < 0.12)
            or any(len(w) > 22 for w in lw)
        ):
            problems.append(Problem("not_english", "it is not fluent English"))
            return
        known = self._known_words()
        if len(lw) >= 4 and sum(w in known for w in lw) < 0.5 * len(lw):
            problems.append(Problem("not_english", "it is not plain English prose"))
            return
        if len(words) > limits.max_words:
            problems.append(Problem("too_long", f"it is longer than {limits.max_words} words"))
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", body.strip()) if s]
        if len(sentences) > limits.max_sentences:
            problems.append(
                Problem(
                    "too_long",
                    f"it has more than {limits.max_sentences} "
                    f"sentence{'s' if limits.max_sentences > 1 else ''}",
                )
            )
        if not body.rstrip().endswith((".", "!", "?")):
            problems.append(Problem("truncated", "it stops in the middle of a sentence"))

    def _check_names(self, body: str, problems: list[Problem]) -> None:
        """Capitalised words inside a sentence are names (places, brands): none is in the tags."""
        known = self._known_words()
        for sentence in re.split(r"(?<=[.!?])\s+", body):
            words = re.findall(r"[A-Za-z][A-Za-z']*", sentence)
            for word in words[1:]:
                if word[0].isupper() and word != "I" and word.lower() not in known:
                    problems.append(
                        Problem("invented_name", f"it names {word}, which is not in the facts")
                    )
                    return

    def _known_words(self) -> frozenset[str]:
        if self._known is None:
            words = set(COMMON_WORDS) | FUNCTION_WORDS | set(NUMBER_WORDS) | set(SIZE_WORDS)
            for group in (
                self.lexicon.terms,
                REGION_WORDS,
                SHARE_WORDS,
                VAGUE,
                PROXIMITY,
                UNVERIFIABLE,
            ):
                for key in group:
                    words.update(key)
            self._known = frozenset(words)
        return self._known

    def _resolve(
        self, m: Span, visible: list[Tag], tags: list[Tag], problems: list[Problem]
    ) -> None:
        assert m.term is not None
        m.tags = [t for t in visible if m.term.refers(t)]
        if m.tags:
            return
        if any(m.term.refers(t) for t in tags):
            problems.append(
                Problem(
                    "invisible_feature",
                    f"it mentions {m.text}, which is too small to see in the image",
                )
            )
        elif m.term.scene or m.text in SCENE_WORDS:
            problems.append(
                Problem("invented_scene_word", f"it mentions {m.text}, which is not in the facts")
            )
        else:
            problems.append(
                Problem("unsupported_class", f"it mentions {m.text}, which is not in the facts")
            )

    def _check_numbers(
        self,
        spans: list[Span],
        tokens: list[str],
        problems: list[Problem],
        geo: dict[str, Any] | None,
    ) -> None:
        for i, s in enumerate(spans):
            if s.kind not in ("number", "vague"):
                continue
            nxt = spans[i + 1] if i + 1 < len(spans) else None
            if s.kind == "number" and nxt is not None and nxt.text in UNITS:
                self._check_measure(s, spans, i, problems, geo)
                continue
            target = _next_mention(spans, i)
            if target is None:
                if s.kind == "number" and s.text not in ("one", "single", "both"):
                    problems.append(
                        Problem("unsupported_number", f"it says {s.text}, which no fact supports")
                    )
                continue
            if not target.tags:
                continue
            s.tags = target.tags
            count = sum(t["visible_count"] for t in target.tags)
            lines = all(_is_line(t) for t in target.tags)
            mass = all(t.get("mass") for t in target.tags)
            if s.kind == "number":
                n = int(s.value)
                # "146 buildings" may count the plain buildings only, not the schools among them
                own = {t["visible_count"] for t in _own_tags(target)}
                at_least = i > 0 and spans[i - 1].text == "at least"
                if at_least and not mass and not (lines and n > 1) and count >= n:
                    continue
                if n == 1 and _mapped_twice(target.tags):
                    continue
                if mass or (lines and n > 1) or (n != count and n not in own):
                    what = (
                        "road or line segments cannot be counted"
                        if lines and n > 1
                        else f"there {'is' if count == 1 else 'are'} {count}"
                    )
                    problems.append(
                        Problem("wrong_count", f"it says {s.text} {target.text} but {what}")
                    )
            else:
                low, high = s.value
                if mass:
                    continue
                if not low <= count <= high and not (lines and count >= 2):
                    problems.append(
                        Problem(
                            "wrong_count",
                            f"it says {s.text} {target.text} but there "
                            f"{'is' if count == 1 else 'are'} {count}",
                        )
                    )

    def _check_measure(
        self,
        s: Span,
        spans: list[Span],
        i: int,
        problems: list[Problem],
        geo: dict[str, Any] | None,
    ) -> None:
        unit = UNITS[spans[i + 1].text]
        value = float(s.value)
        target = _next_mention(spans, i + 1, window=4)
        ok = False
        if unit in ("m", "km"):
            metres = value * (1000 if unit == "km" else 1)
            if target is not None and target.tags:
                ok = any(
                    abs(t["length_m"] - metres) <= max(10.0, 0.15 * t["length_m"])
                    for t in target.tags
                    if t["length_m"] > 0
                )
            elif geo:
                width = geo["size"][0] * geo["gsd_m"]
                ok = abs(width - metres) <= 0.1 * width or abs(geo["gsd_m"] - metres) < 0.05
        elif unit == "%":
            prev = _prev_mention(spans, i)
            cands = (target.tags if target and target.tags else []) + (prev.tags if prev else [])
            ok = any(abs(100 * t["area_share"] - value) <= 5 for t in cands)
        if not ok:
            problems.append(
                Problem(
                    "unsupported_number",
                    f"it says {s.text} {spans[i + 1].text}, which no fact supports",
                )
            )

    def _check_agreement(self, spans: list[Span], problems: list[Problem]) -> None:
        for i, m in enumerate(spans):
            if m.kind != "mention" or not m.tags or m.term is None or m.term.plural is None:
                continue
            if any(t.get("mass") for t in m.tags):
                continue
            count = sum(t["visible_count"] for t in m.tags)
            lines = all(_is_line(t) for t in m.tags)
            nxt = spans[i + 1].text if i + 1 < len(spans) else ""
            prev = spans[i - 1].text if i > 0 else ""
            if i > 1 and spans[i - 2].text == "at least":
                continue  # "at least one building": a lower bound
            if i > 2 and [s.text for s in spans[i - 3 : i]] == ["one", "or", "more"]:
                continue  # "one or more buildings": a lower bound
            if (
                not m.term.plural
                and count > 1
                and not _mapped_twice(m.tags)
                and not lines
                and nxt not in COMPOUND_HEADS
                and prev not in ("of", "each", "every")
            ):
                problems.append(
                    Problem(
                        "number_agreement", f"it says {_with_article(m.text)} but there are {count}"
                    )
                )
            elif m.term.plural and count == 1:
                problems.append(
                    Problem("number_agreement", f"it says {m.text} but there is only one")
                )

    def _check_positions(
        self, spans: list[Span], problems: list[Problem], geometry: LazyIndex
    ) -> None:
        for i, s in enumerate(spans):
            if s.kind != "region":
                continue
            j = i + 1
            while j < len(spans) and spans[j].text in REGION_NOUNS:
                j += 1
            if j + 1 < len(spans) and spans[j].text == "of":
                k = j + 1
                while k < len(spans) and spans[k].text in DETERMINERS:
                    k += 1
                if k < len(spans) and spans[k].kind == "mention":
                    problems.append(
                        Problem(
                            "unsupported_relation",
                            f"it places something in the "
                            f"{s.text} of {spans[k].text}, which the map does not show",
                        )
                    )
                    continue
            if s.value == ACROSS and any(x.kind == "region" for x in spans[i + 1 : i + 3]):
                continue  # "across the top": the next region word says where
            obj = _object_mention(spans, i)
            if s.text in ("scattered", "dotted") and i + 1 < len(spans) and spans[i + 1] is obj:
                # "scattered buildings": several objects spread apart, not a relation
                assert obj is not None
                if obj.tags and sum(t["visible_count"] for t in obj.tags) < 2:
                    problems.append(
                        Problem("wrong_count", f"it says {s.text} {obj.text} but there is one")
                    )
                continue
            if s.value == ACROSS and obj is not None:
                # "a road running across farmland": a relation between two features, which only
                # the geometry can show (a line crossing the other feature)
                subject = _prev_mention(spans, i, window=len(spans))
                index = geometry.get()
                if subject is None or (
                    subject.tags
                    and obj.tags
                    and not (
                        index.holds("across", subject.tags, obj.tags)
                        if index is not None
                        # no geometry: the templates' stats-level claim (a tile-spanning line
                        # over a large area), as for "crossed by"
                        else _crosses(subject, obj)
                    )
                ):
                    problems.append(
                        Problem(
                            "unsupported_relation",
                            f"it says something runs {s.text} "
                            f"the {obj.text}, which the map does not show",
                        )
                    )
                continue
            target = _clause_target(spans, i)
            if target is None or not target.tags:
                continue
            if not any(_position_ok(s.value, t) for t in target.tags):
                where = target.tags[0]["position"]
                problems.append(
                    Problem(
                        "wrong_position",
                        f"it puts {target.text} {_region_text(s.text)}, "
                        f"but {'it is' if target.term and not target.term.plural else 'they are'} "
                        f"{_region_text(where)}",
                    )
                )

    def _check_shares(self, spans: list[Span], visible: list[Tag], problems: list[Problem]) -> None:
        areas = [t for t in visible if t["area_share"] > 0]
        largest = max((t["area_share"] for t in areas), default=0.0)
        for i, s in enumerate(spans):
            if s.kind != "share":
                continue
            word: ShareWord = s.value
            target = (_next_mention(spans, i, window=4) if word.after else None) or _clause_target(
                spans, i, prefer_before=not word.after
            )
            if target is None or not target.tags:
                continue
            total = sum(t["area_share"] for t in target.tags)
            # "buildings" may mean all building tags or the plain ones (building=yes)
            shares = {total} | {t["area_share"] for t in _own_tags(target)}
            ok = any(
                word.low <= share + 1e-9
                and share <= word.high + 1e-9
                and (not word.largest or share + 1e-9 >= largest)
                for share in shares
            )
            share = total
            if not ok:
                problems.append(
                    Problem(
                        "wrong_share",
                        f"it says '{s.text}' {target.text}, but "
                        f"{target.text} covers {round(100 * share)}% of the image",
                    )
                )

    def _check_sizes(self, spans: list[Span], problems: list[Problem]) -> None:
        for i, s in enumerate(spans):
            if s.kind != "size":
                continue
            target = _next_mention(spans, i, window=2)
            if target is None or not target.tags:
                continue
            low, high = s.value
            tags = target.tags
            if all(_is_line(t) for t in tags):
                problems.append(
                    Problem(
                        "wrong_size", f"it calls {target.text} {s.text}, which the map does not say"
                    )
                )
                continue
            if any(t.get("mass") for t in tags) or all(
                t["visible_count"] == 1 and t["area_share"] >= 0.02 for t in tags
            ):
                share = sum(t["area_share"] for t in tags)
                ok = share >= 0.3 if low > 0 else share < 0.2
            else:
                n = sum(t["visible_count"] for t in tags)
                mean = sum(t["area_m2"] for t in tags) / max(n, 1)
                ok = low <= mean <= high
            if not ok:
                problems.append(
                    Problem(
                        "wrong_size",
                        f"it calls {target.text} {s.text}, which the map does not support",
                    )
                )

    def _check_appositions(self, spans: list[Span], problems: list[Problem]) -> None:
        for a, b in _appositions(spans):
            if a.tags and b.tags and not {t["tag"] for t in a.tags} & {t["tag"] for t in b.tags}:
                problems.append(
                    Problem(
                        "unsupported_relation",
                        f"it says the {a.text} is a {b.text}; they are different features",
                    )
                )

    def _check_relations(self, spans: list[Span], problems: list[Problem], geometry: LazyIndex) -> None:
        self._check_appositions(spans, problems)
        if True:  # noqa: SIM108 (one block with the geometry checks)
            for i, s in enumerate(spans):
                if s.kind == "relation":
                    kind = RELATION_KINDS.get(tuple(s.text.split()))
                    after = _next_mention(spans, i, window=5, through_numbers=True)
                elif s.kind == "word" and s.text in CONTAINMENT_PREPOSITIONS:
                    kind, after = "within", _object_mention(spans, i)  # "in farmland": right after
                    if after is None:
                        continue
                else:
                    continue
                if kind is None:
                    continue
                before = _prev_mention(spans, i, window=len(spans))
                if after is None or not after.tags:
                    continue  # "a road running through": no second feature named
                if before is None or not before.tags:
                    problems.append(Problem("unsupported_relation", f"it says '{s.text} "
                                            f"{after.text}' of nothing the map shows there"))
                    continue
                third = _third_mention(spans, after) if kind in NEEDS_THIRD else None
                if kind in NEEDS_THIRD and (third is None or not third.tags):
                    problems.append(Problem("unsupported_relation", f"it says {before.text} "
                                            f"{s.text} {after.text} and nothing else"))
                    continue
                index = geometry.get()
                said = f"{before.text} {s.text} {after.text}" + (f" and {third.text}" if third else "")
                if index is None and kind == "crossed_by" and _crosses(after, before):
                    continue  # the templates' stats-level claim: a tile-spanning line over a large area
                if index is None:
                    problems.append(Problem("unsupported_relation", f"it says {said}, which the "
                                            "statistics cannot show"))
                elif not index.holds(kind, before.tags, after.tags, third.tags if third else ()):
                    problems.append(Problem("unsupported_relation", f"it says {said}, which the "
                                            "map's geometry does not show"))
        for i, s in enumerate(spans):
            if s.kind != "relation" or tuple(s.text.split()) in RELATION_KINDS:
                continue
            after = _next_mention(spans, i, window=5, through_numbers=True)
            before = _prev_mention(spans, i, window=len(spans))
            if after is None and before is None:
                continue
            if s.value == "cover" and after is None and before is not None and before.tags:
                problems.append(Problem("unsupported_relation", f"it says {before.text} is "
                                        f"{s.text} something, which the map does not show"))
                continue
            if s.value == "cover" and (after is None or before is None):
                continue
            if after is None or before is None:
                if s.value == "other" and (after or before) and (after or before).tags:  # type: ignore[union-attr]
                    # "surrounded by fields" with nothing before: still a claim about the scene
                    problems.append(
                        Problem(
                            "unsupported_relation",
                            f"it says '{s.text}', which the map does not show",
                        )
                    )
                continue
            if not before.tags or not after.tags:
                continue
            problems.append(
                Problem(
                    "unsupported_relation",
                    f"it says {before.text} {s.text} {after.text}, which the map does not show",
                )
            )

    def _check_density(
        self, spans: list[Span], visible: list[Tag], problems: list[Problem]
    ) -> None:
        """ "densely built-up", "closely packed buildings": the buildings' share of the tile."""
        share = sum(t["area_share"] for t in visible if t.get("category") == "building")
        for s in spans:
            if s.kind == "density" and share + 1e-9 < s.value:
                problems.append(
                    Problem(
                        "wrong_share",
                        f"it says '{s.text}', but buildings cover {round(100 * share)}% "
                        "of the image",
                    )
                )
                return

    def _check_statements(
        self, spans: list[Span], tokens: list[str], problems: list[Problem]
    ) -> None:
        """Statements no tag supports even when every class, count and position is right:
        self-references (another image or medium), filler clauses, part-of-whole claims and any
        word outside the closed vocabulary (an invented attribute, a judgement, a story)."""
        selfref = _self_references(tokens)
        if selfref:
            problems.append(
                Problem(
                    "self_reference",
                    f"it says '{selfref[0]}'; describe the image itself, not a "
                    "map, page, screen or an image inside it",
                )
            )
        filler = _filler_clause(spans)
        if filler:
            problems.append(
                Problem("filler", f"it adds '{filler}', which says nothing about the image")
            )
        part = _part_of_whole(tokens)
        if part:
            problems.append(
                Problem(
                    "part_of_whole",
                    f"it says '{part}', but the facts only say what the image shows, "
                    "not what it is part of",
                )
            )
        unknown: list[str] = []
        read = _read_words()
        for i, s in enumerate(spans):
            if s.kind != "word" or " " in s.text:
                continue
            w = s.text
            prev = spans[i - 1] if i > 0 else None
            nxt = spans[i + 1].text if i + 1 < len(spans) else ""
            if (
                w in read
                or w in MEDIA_WORDS
                or w in IMAGE_NOUNS
                or (w.endswith("'s") and w[:-2] in IMAGE_NOUNS)
                or (w in UNIT_ADJECTIVES and prev is not None and prev.text in UNITS)
                or (w in COMPOUND_HEADS and prev is not None and prev.kind == "mention")
                or (w in DENSITY_NOUNS and prev is not None and prev.kind == "density")
                or (w in VIEW_ADJECTIVES and nxt in IMAGE_NOUNS)
                or (w == "bird's" and nxt == "eye")
                or (w == "eye" and nxt in IMAGE_NOUNS)
            ):
                continue
            if w not in unknown:
                unknown.append(w)
        if unknown:
            said = ", ".join(f"'{w}'" for w in unknown[:5])
            problems.append(
                Problem("unsupported_detail", f"it says {said}, which the facts do not say")
            )


# -- helpers ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _read_words() -> frozenset[str]:
    """Words that state nothing by themselves or that another check reads (positions, shares,
    amounts, sizes, relations, units): the closed vocabulary besides the class terms."""
    words = set(NEUTRAL_WORDS) | set(NUMBER_WORDS) | set(SIZE_WORDS) | set(UNITS)
    for group in (REGION_WORDS, SHARE_WORDS, VAGUE, PROXIMITY, UNVERIFIABLE, COVER):
        for key in group:
            words.update(key)
    return frozenset(words)


def _sentence_starts(tokens: list[str]) -> set[int]:
    starts = {0}
    for i, t in enumerate(tokens):
        if t in (".", "!", "?"):
            starts.add(i + 1)
    return starts


def _self_references(tokens: list[str]) -> list[str]:
    """Words for the image that name something other than this image: a map, page or screen,
    an image inside it ("the image of a beach", "a scene of a scene"), its possessions."""
    found: list[str] = []
    starts = _sentence_starts(tokens)
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        base = tok[:-2] if tok.endswith("'s") else tok
        if base in MEDIA_WORDS:
            if base in VIEW_ADJECTIVES and nxt in IMAGE_NOUNS:
                continue  # "a satellite view": the kind of image
            found.append(" ".join(tokens[max(0, i - 2) : i + 1]))
            continue
        if base not in IMAGE_NOUNS:
            continue
        if tok.endswith("'s"):
            found.append(tok)  # "the image's dirt tracks"
            continue
        j = i - 1
        while j >= 0 and (
            tokens[j] in VIEW_ADJECTIVES
            or tokens[j] in ("whole", "entire", "eye", "bird's", "top", "down")
        ):
            j -= 1
        det = tokens[j] if j >= 0 else ""
        subject = (j + 1 in starts) or (det in DETERMINERS and j in starts)
        if subject:
            continue  # "An aerial image of farmland", "This image shows"
        if j >= 1 and tokens[j - 1] in SHOW_VERBS and det in ("a", "an") and i == j + 1:
            if nxt in ("of", "with", "showing", "featuring"):
                continue  # "It shows a scene of dirt tracks": the image as a whole
        if det in DEFINITE and nxt != "of":
            continue  # "across the image", "in the top left of this image"
        found.append(" ".join(t for t in tokens[max(0, j) : i + 2] if t.isalnum() or "'" in t))
    return found


def _filler_clause(spans: list[Span]) -> str | None:
    """A relative clause ("which is a scene in itself", "that is a breathtaking sight") that
    names no feature, position, share or number: it states nothing the stats could support."""
    for i, s in enumerate(spans[:-1]):
        if s.text not in RELATIVE or spans[i + 1].text not in BE_VERBS:
            continue
        j = i + 2
        while j < len(spans) and spans[j].kind != "punct" and spans[j].text not in RELATIVE:
            j += 1
        clause = spans[i:j]
        if not any(x.kind in ("mention", "region", "share", "number", "vague") for x in clause):
            return " ".join(x.text for x in clause)
    return None


def _part_of_whole(tokens: list[str]) -> str | None:
    """ "a small part of a nature reserve", "a piece of a large country": the tile as a part of
    something larger, which no tag says ("most of the image", "covering part of it" are shares)."""
    skip = DETERMINERS | VIEW_ADJECTIVES | {"whole", "entire", "larger", "bigger", "wider", "vast",
                                            "large", "big", "small", "huge"}
    for i, tok in enumerate(tokens[:-2]):
        if tok not in PART_NOUNS or tokens[i + 1] != "of":
            continue
        j = i + 2
        while j < len(tokens) and tokens[j] in skip:
            j += 1
        head = tokens[j] if j < len(tokens) else ""
        dets = set(tokens[i + 2 : j])
        if head in IMAGE_NOUNS and dets & {"the", "this"}:
            continue
        if head in ("it", "them") and set(tokens[max(0, i - 4) : i]) & COVER_VERBS:
            continue
        if head in ("it", "them") and i > 0 and tokens[i - 1] in ("the", "top", "bottom", "left",
                                                                    "right", "upper", "lower"):
            continue  # "the top part of it"
        return " ".join(tokens[max(0, i - 1) : j + 1])
    return None
def _appositions(spans: list[Span]) -> list[tuple[Span, Span]]:
    """Pairs (A, B) in "A, which is (a) B" / "A is a B": the caption says A is B."""
    pairs = []
    for i, s in enumerate(spans):
        if s.text not in ("is", "are"):
            continue
        j = i + 1
        while (
            j < min(len(spans), i + 4)
            and spans[j].kind in ("word", "size")
            and spans[j].text not in CLAUSE_WORDS | PREPOSITIONS
        ):
            j += 1
        if j >= len(spans) or spans[j].kind != "mention":
            continue
        k = i - 1
        while k >= 0 and spans[k].text in ("which", "that", ",", "it"):
            k -= 1
        stop = k - 5  # over a position phrase: "a road on the right, which is ..."
        while (
            k > stop
            and k >= 0
            and spans[k].kind in ("word", "region")
            and spans[k].text not in CLAUSE_WORDS
        ):
            k -= 1
        if k >= 0 and spans[k].kind == "mention":
            pairs.append((spans[k], spans[j]))
    return pairs


def _object_mention(spans: list[Span], i: int) -> Span | None:
    """The mention right after a preposition-like span (skipping determiners), if any."""
    j = i + 1
    while j < len(spans) and spans[j].text in DETERMINERS:
        j += 1
    return spans[j] if j < len(spans) and spans[j].kind == "mention" else None


def _share_cells(a: Span, b: Span) -> bool:
    return any(
        set(_main_cells(x)) & set(_main_cells(y))
        or set(x.get("cells") or []) & set(y.get("cells") or [])
        for x in a.tags
        for y in b.tags
    )


def _own_tags(m: Span) -> list[Tag]:
    """The tags a mention names most directly: its own phrase, or the generic ``=yes`` tag."""
    return [
        t for t in m.tags if m.text in (t["phrase"], t.get("plural")) or t.get("value") == "yes"
    ]


def _mapped_twice(tags: list[Tag]) -> bool:
    """One object mapped under two keys (amenity=school and building=school): "a school"."""
    return len({t.get("key") for t in tags}) > 1 and min(t["visible_count"] for t in tags) == 1


def _crosses(line: Span, area: Span) -> bool:
    """A line that runs across the tile crosses an area covering a large part of it."""
    return all(_is_line(t) and _position_ok(ACROSS, t) for t in line.tags) and (
        sum(t["area_share"] for t in area.tags) >= 0.2
    )


def _object_word(tokens: list[str], j: int) -> str:
    while j < len(tokens) and tokens[j] in DETERMINERS | {"whole", "entire", "aerial", "overall"}:
        j += 1
    return tokens[j] if j < len(tokens) else ""


def _is_line(tag: Tag) -> bool:
    gt = tag.get("geom_types") or {}
    return bool(gt.get("line")) and not gt.get("polygon")


def _next_mention(
    spans: list[Span], i: int, window: int = 3, through_numbers: bool = False
) -> Span | None:
    stops = ("punct", "relation") if through_numbers else ("punct", "relation", "number", "vague")
    for s in spans[i + 1 : i + 1 + window]:
        if s.kind == "mention":
            return s
        if s.kind in stops or s.text in CLAUSE_WORDS:
            return None
    return None


def _third_mention(spans: list[Span], second: Span) -> Span | None:
    """The feature after "between <second> and": "between a road and a river"."""
    j = spans.index(second)
    for s in spans[j + 1 : j + 4]:
        if s.kind == "mention":
            return s
        if s.kind == "punct" or s.text not in ("and", "the", "a", "an"):
            return None
    return None


def _prev_mention(spans: list[Span], i: int, window: int = 4) -> Span | None:
    for s in reversed(spans[max(0, i - window) : i]):
        if s.kind == "mention":
            return s
        if s.kind == "punct" and s.text != ",":
            return None
    return None


def _clause_bounds(spans: list[Span], i: int) -> tuple[int, int]:
    lo = i
    while lo > 0 and not (spans[lo - 1].kind == "punct" or spans[lo - 1].text in CLAUSE_WORDS):
        lo -= 1
    hi = i
    while hi + 1 < len(spans) and not (
        spans[hi + 1].kind == "punct" or spans[hi + 1].text in CLAUSE_WORDS
    ):
        hi += 1
    return lo, hi


def _clause_target(spans: list[Span], i: int, prefer_before: bool = True) -> Span | None:
    """The mention a modifier at ``i`` describes: nearest in its clause (before, else after);
    with none in the clause, the nearest mention in the sentence."""
    lo, hi = _clause_bounds(spans, i)
    before = [s for s in spans[lo:i] if s.kind == "mention"]
    after = [s for s in spans[i + 1 : hi + 1] if s.kind == "mention"]
    order = [before[-1] if before else None, after[0] if after else None]
    if not prefer_before:
        order.reverse()
    for s in order:
        if s is not None:
            return s
    for j in range(i - 1, -1, -1):
        if spans[j].kind == "punct" and spans[j].text in ".!?;":
            break
        if spans[j].kind == "mention":
            return spans[j]
    for j in range(i + 1, len(spans)):
        if spans[j].kind == "punct" and spans[j].text in ".!?;":
            break
        if spans[j].kind == "mention":
            return spans[j]
    return None


def _main_cells(tag: Tag) -> list[str]:
    cells = list(tag.get("cells") or [])
    pos = tag["position"]
    return ([pos] if pos != "across" else []) + cells[:2]


def _position_ok(region: frozenset[str], tag: Tag) -> bool:
    if region == ACROSS:
        return tag["position"] == "across" or len(tag.get("cells") or []) >= 5
    if tag["position"] == "across":
        return bool(region & set(tag.get("cells") or []))
    return bool(region & set(_main_cells(tag)))


def _region_text(word: str) -> str:
    if word == "across":
        return "across the image"
    return f"in the {word}"


def _with_article(text: str) -> str:
    return ("an " if text[:1] in "aeiou" else "a ") + text
