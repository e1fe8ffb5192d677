"""An independent checker: does a template caption state only what the tile's data supports?

Used by the end-to-end and template tests. It reads captions the way a reviewer would, with its
own code (it imports nothing from ``rsdata.captions``; it reads the same data files):

- every feature phrase (vocabulary phrase, synonym, land-cover class) must name a visible,
  caption-worthy tag: not an administrative or hidden one (``not_subjects`` of the caption
  rules), not a line shorter than ``min_line_fraction`` of the tile's width, not an area below
  ``min_area_share``;
- every number must equal the count of visible *objects* (and is stated only inside full
  coverage); vague quantities ("several", "dozens of") must hold; singular/plural must agree;
- share words ("about a third of the image", "mostly X") must match the area share; outside
  full coverage only lower-bound words;
- positions must be among the tag's cells; "spread across" needs a spread tag; "runs across"
  / "crossing the image" / "from left to right" need a line that spans the tile edge to edge;
  "from the top left to the bottom" needs both cells;
- relations (along, crossing, meeting, next to, between, surrounded by) are recomputed from
  ``osm.objects``; scene words ("densely built-up", "scattered") from the building share and
  count; attributes ("tin and concrete roofs", "three-storey", "paved") from the objects' attrs;
- lengths in metres must match the stored length, widths the tile's width.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import shapely
import yaml
from shapely.geometry import LineString, MultiLineString, MultiPoint, Point, Polygon

RULES_PATH = Path(__file__).resolve().parent.parent / "rsdata" / "data" / "caption_rules.yaml"
FULL = 0.999
NUMBER_WORDS = {w: i + 1 for i, w in enumerate(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
SHARES = {"nearly all of": (0.85, 1.0, True), "almost all of": (0.85, 1.0, True),
          "most of": (0.6, 1.0, True), "more than half of": (0.5, 1.0, True),
          "about three quarters of": (0.68, 0.82, False), "about two thirds of": (0.6, 0.72, False),
          "about half of": (0.42, 0.58, False), "a large part of": (0.35, 0.6, False),
          "about a third of": (0.28, 0.4, False), "about a quarter of": (0.2, 0.3, False),
          "about a tenth of": (0.07, 0.13, False), "a small part of": (0.0, 0.15, False),
          "a small share of": (0.0, 0.15, False), "part of": (0.15, 0.35, False)}
VAGUE = {"a few": (2, 4), "several": (3, 9), "many": (10, 10**9), "dozens of": (24, 199),
         "over a hundred": (101, 999), "hundreds of": (200, 9999)}
IMAGE = r"(?:image|scene|frame|picture|view|photo|photograph|shot)"
CELLS = {"top left": (0, 0), "top right": (0, 2), "bottom left": (2, 0), "bottom right": (2, 2),
         "top": (0, 1), "bottom": (2, 1), "left": (1, 0), "right": (1, 2), "center": (1, 1)}
POSITIONS = {  # words -> cell
    **{f"in the {c}": c for c in ("top left", "top right", "bottom left", "bottom right", "center")},
    **{f"in the {c.replace(' ', '-')} corner": c for c in ("top left", "top right", "bottom left",
                                                            "bottom right")},
    **{f"at the {c}": c for c in ("top left", "top right", "bottom left", "bottom right", "top",
                                  "bottom")},
    "near the top": "top", "along the top": "top", "near the bottom": "bottom",
    "along the bottom": "bottom", "on the left side": "left", "on the right side": "right",
    "on the left": "left", "on the right": "right", "to the left": "left", "to the right": "right",
    "in the middle": "center", "in the centre": "center", "in the top": "top", "in the bottom": "bottom",
}
SPAN_WORDS = (r"\b(?:running across|crossing|cutting across|running through|runs across|run across|"
              r"crosses|cross|cuts across|cut across|runs through|run through|passing through|passes through|"
              r"pass through|going across|goes across|go across) the " + IMAGE)
SPREAD_WORDS = r"(?:spread across the|spread over the|found across the|all over the|throughout the) " + IMAGE
COVER_VERBS = r"(?:covers|cover|covering|takes up|take up|taking up|fills|fill|filling|occupies|occupy|occupying)"
NEAR_M = 15.0
HYPERNYMS = {"building": ("building", "buildings"), "road": ("road", "roads")}


@cache
def rules() -> dict[str, Any]:
    return yaml.safe_load(RULES_PATH.read_text(encoding="utf-8"))


def _not_subject(tag: str) -> bool:
    ns = rules()["not_subjects"]
    key = tag.split("=", 1)[0]
    if tag in ns["tags"] or key in ns["keys"]:
        return True
    return any(key.startswith(k[:-1]) for k in ns["keys"] if k.endswith("*"))


def _hidden(attrs: dict[str, Any] | None) -> bool:
    for key, rule in rules()["not_subjects"]["hidden"].items():
        if not attrs or attrs.get(key) is None:
            continue
        v = str(attrs[key]).strip().lower()
        if rule == "any" and v not in ("no", "false", "0", ""):
            return True
        if rule == "negative":
            try:
                if float(v.split(";")[0]) < 0:
                    return True
            except ValueError:
                pass
        if isinstance(rule, list) and v in [str(r).lower() for r in rule]:
            return True
    return False


# -- geometry ------------------------------------------------------------------------------------
def _geom(obj: dict[str, Any]) -> Any:
    parts = obj.get("pixels") or []
    kind = obj.get("geom") or obj.get("kind")
    if kind == "polygon":
        polys = [Polygon(p).buffer(0) for p in parts if len(p) >= 3]
        return shapely.union_all(polys) if polys else None
    if kind == "line":
        lines = [LineString(p) for p in parts if len(p) >= 2]
        return MultiLineString(lines) if len(lines) > 1 else (lines[0] if lines else None)
    pts = [Point(p) for part in parts for p in (part if part and isinstance(part[0], (list, tuple)) else [part])]
    return MultiPoint(pts) if len(pts) > 1 else (pts[0] if pts else None)


def _obj_tags(obj: dict[str, Any]) -> set[str]:
    out = {str(obj["tag"])} if obj.get("tag") else set()
    tags = obj.get("tags")
    if isinstance(tags, dict):
        out |= {f"{k}={v}" for k, v in tags.items()}
    elif isinstance(tags, list):
        out |= set(map(str, tags))
    return out


def _spans(geoms: list[Any], w: float, h: float, tol: float = 1.5) -> set[str]:
    """'h' when a connected piece (ways that touch) reaches left and right, 'v' top and bottom."""
    pieces = [p for g in geoms for p in getattr(g, "geoms", [g])]
    groups: list[list[Any]] = []
    for p in pieces:  # grow groups of touching pieces
        touching = [grp for grp in groups if any(p.distance(q) <= 0.5 for q in grp)]
        merged = [p] + [q for grp in touching for q in grp]
        groups = [grp for grp in groups if grp not in touching] + [merged]
    out = set()
    for grp in groups:
        x0 = min(q.bounds[0] for q in grp)
        y0 = min(q.bounds[1] for q in grp)
        x1 = max(q.bounds[2] for q in grp)
        y1 = max(q.bounds[3] for q in grp)
        if x0 <= tol and x1 >= w - tol:
            out.add("h")
        if y0 <= tol and y1 >= h - tol:
            out.add("v")
    return out


class Entry:
    """One tag (or land-cover class) as the checker sees it."""

    def __init__(self, tag: dict[str, Any], objs: list[dict[str, Any]] | None, geo: dict[str, Any] | None,
                 full: bool, partly_hidden: bool = False) -> None:
        self.tag = tag
        self.partly_hidden = partly_hidden
        self.name = tag.get("tag") or f"{tag.get('key')}={tag.get('value')}"
        self.mass = bool(tag.get("mass"))
        self.category = tag.get("category")
        self.landcover = bool(tag.get("_landcover"))
        self.objs = objs or []
        self.geoms = [g for g in (_geom(o) for o in self.objs) if g is not None and not g.is_empty]
        gt = tag.get("geom_types") or {}
        self.is_line = bool(gt.get("line")) and not (gt.get("polygon") and tag.get("area_share", 0) >= 0.01)
        self.share = float(tag.get("area_share", 0.0))
        self.length = float(tag.get("length_m", 0.0))
        self.cells = set(tag.get("cells") or [])
        self.position = tag.get("position")
        self.full = full
        self.n = self._count()
        self.subject = True
        self.geo = geo

    def _count(self) -> int | None:
        t = self.tag
        if self.mass or self.landcover or self.partly_hidden:
            return None
        for key in ("visible_objects", "visible_count_objects"):
            if key in t:
                return int(t[key])
        if "count_objects" in t:
            ways = int(t.get("count_ways", t["count"]))
            if int(t["count_objects"]) == ways:
                return int(t["visible_count"])
            return int(t["count_objects"]) if int(t["visible_count"]) == ways else None
        if self.is_line:
            return None
        return int(t["visible_count"])

    def spans(self) -> set[str]:
        if self.geo is None:
            return {"h", "v"}  # no tile size: cannot tell
        w, h = self.geo["size"]
        if self.geoms:
            return _spans(self.geoms, w, h)
        rc = [CELLS[c] for c in self.cells if c in CELLS]
        gx, gy = (self.geo.get("gsd_xy_m") or [self.geo["gsd_m"]] * 2)[:2]
        out = set()
        if {0, 2} <= {c for _, c in rc} and self.length >= 0.9 * w * gx:
            out.add("h")
        if {0, 2} <= {r for r, _ in rc} and self.length >= 0.9 * h * gy:
            out.add("v")
        return out

    def union(self) -> Any:
        return shapely.union_all(self.geoms) if self.geoms else None


def _entries(osm: dict[str, Any], meta: dict[str, Any] | None, min_line_fraction: float,
             min_area_share: float) -> tuple[dict[str, Entry], dict[str, Entry]]:
    """(phrase -> caption-worthy entry, phrase -> visible tag that is no subject)."""
    geo = (meta or {}).get("geo")
    full = float((osm.get("coverage") or {}).get("fraction", 0.0)) >= FULL
    objects = osm.get("objects") or []
    ok: dict[str, Entry] = {}
    bad: dict[str, Entry] = {}
    syn = rules().get("synonyms") or {}
    for t in osm["tags"]:
        if not t["visible"]:
            continue
        name = t.get("tag") or f"{t['key']}={t['value']}"
        mine = [o for o in objects if name in _obj_tags(o) and o.get("visible", True)]
        shown = [o for o in mine if not _hidden(o.get("attrs"))]
        e = Entry(t, shown if mine else None, geo, full, partly_hidden=0 < len(shown) < len(mine))
        worthy = t.get("primary", True) and not _not_subject(name) and not (mine and not shown)
        if worthy and geo is not None:
            width_m = geo["size"][0] * (geo.get("gsd_xy_m") or [geo["gsd_m"]])[0]
            if e.is_line:
                worthy = e.length >= min_line_fraction * width_m - 1e-6
            elif (t.get("geom_types") or {}).get("polygon") and t.get("category") != "building":
                worthy = e.share >= min_area_share - 1e-9
        e.subject = bool(worthy)
        names = [t["phrase"], t["plural"]] + [w for pair in syn.get(name, []) for w in pair]
        for p in names:
            (ok if worthy else bad).setdefault(p.lower(), e)
    lc = (meta or {}).get("landcover")
    if isinstance(lc, dict):
        covered = float(lc.get("covered", 1.0) or 0.0)
        for c in lc.get("classes") or []:
            if c.get("code") is None or not c.get("phrase"):
                continue
            fake = {"tag": f"landcover:{c.get('name')}", "phrase": c["phrase"], "plural": c.get("plural") or
                    c["phrase"], "mass": not c.get("countable"), "category": c.get("category") or "landcover",
                    "area_share": float(c.get("share", 0.0)) * covered, "cells": c.get("cells") or [],
                    "position": "across" if len(c.get("cells") or []) >= 6 else None, "_landcover": True,
                    "visible_count": 0, "geom_types": {"polygon": 1}}
            e = Entry(fake, None, geo, covered >= FULL)
            ok.setdefault(c["phrase"].lower(), e)
            if c.get("countable"):
                ok.setdefault((c.get("plural") or c["phrase"] + "s").lower(), e)
    for cat, words in HYPERNYMS.items():
        group = [e for e in ok.values() if e.category == cat and e.subject]
        if group:
            for w in words:
                ok.setdefault(w, group[0])
    return ok, bad


def _attr_shares(entries: list[Entry], key: str) -> tuple[float, dict[str, float]] | None:
    spec = (rules().get("attributes") or {}).get(key) or {}
    values = {str(k): str(v) for k, v in (spec.get("values") or {}).items()}
    total, words = 0, {}  # type: ignore[var-annotated]
    for e in entries:
        table = (e.tag.get("attributes") or {}).get(key)
        if isinstance(table, dict):
            n = e.n or e.tag.get("visible_count") or 0
            total += n
            for raw, share in table.items():
                w = _attr_word(spec, values, raw)
                if w:
                    words[w] = words.get(w, 0) + float(share) * n
            continue
        for o in e.objs:
            total += 1
            raw = (o.get("attrs") or {}).get(key)
            w = _attr_word(spec, values, raw) if raw is not None else None
            if w:
                words[w] = words.get(w, 0) + 1
    known = sum(words.values())
    if not total or not known:
        return None
    return known / total, {w: c / known for w, c in words.items()}


def _attr_word(spec: dict[str, Any], values: dict[str, str], raw: Any) -> str | None:
    text = str(raw).strip().lower().split(";")[0].strip()
    if spec.get("form") == "levels":
        try:
            v = float(text)
        except ValueError:
            return None
        return str(int(v)) if v >= 1 and v == int(v) else None
    return values.get(text)


def _mentions(lowered: str, phrases: set[str]) -> tuple[list[tuple[int, int, str]], str]:
    """(start, end, phrase) of every phrase, longest first; the text with them masked."""
    found = []
    masked = lowered
    for phrase in sorted((p for p in phrases if p in lowered), key=len, reverse=True):
        for m in re.finditer(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", masked):
            found.append((m.start(), m.end(), phrase))
        masked = re.sub(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", lambda m: "#" * len(m.group()), masked)
    return sorted(found), masked


def caption_problems(text: str, osm: dict[str, Any], all_phrases: set[str],
                     meta: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None,
                     min_line_fraction: float = 0.15, min_area_share: float = 0.01) -> list[str]:
    """Everything in ``text`` that the tile's data does not support (empty list: faithful).

    ``meta`` (the sample's json) adds the checks that need the tile's size and land cover."""
    problems: list[str] = []
    ok, bad = _entries(osm, meta, min_line_fraction, min_area_share)
    full = float((osm.get("coverage") or {}).get("fraction", 0.0)) >= FULL
    geo = (meta or {}).get("geo")
    lowered = text.lower()
    # "roofs" of a roof attribute ("tin roofs", "the roofs") is no building=roof feature
    scan = re.sub(r"(?<=\bthe )roofs\b|(?<=[a-z-] )roofs?\b(?=[ .,;]|$)",
                  lambda m: "#" * len(m.group()) if _roof_context(lowered, m.start()) else m.group(),
                  lowered)
    syn_words = {w.lower() for pairs in (rules().get("synonyms") or {}).values() for pair in pairs for w in pair}
    phrases = {p.lower() for p in all_phrases} | set(ok) | set(bad) | syn_words
    mentions, _ = _mentions(scan, phrases)
    known: list[tuple[int, int, str, Entry]] = []
    for start, end, phrase in mentions:
        if phrase in ok:
            known.append((start, end, phrase, ok[phrase]))
        elif phrase in bad:
            problems.append(f"mentions {phrase!r}, which is not caption-worthy (invisible from above, "
                            "administrative or too small)")
        else:
            problems.append(f"mentions {phrase!r}, which is not a visible tag")

    def before(pos: int) -> tuple[int, int, str, Entry] | None:
        """The nearest mention ending before ``pos`` in the same clause."""
        clause = max(lowered.rfind(c, 0, pos) for c in ",.;:")
        cands = [m for m in known if clause < m[1] <= pos]
        return cands[-1] if cands else None

    def before_in_sentence(pos: int) -> tuple[int, int, str, Entry] | None:
        """The nearest mention before ``pos`` in the same sentence ("cropland in the top right,
        on the right and in the bottom right": every position is cropland's)."""
        start = lowered.rfind(".", 0, pos)
        cands = [m for m in known if start < m[1] <= pos]
        return cands[-1] if cands else None

    def after(pos: int) -> tuple[int, int, str, Entry] | None:
        nxt = [i for i in (lowered.find(c, pos) for c in ",.;:") if i >= 0]
        stop = min(nxt) if nxt else len(lowered)
        cands = [m for m in known if pos <= m[0] < stop]
        return cands[0] if cands else None

    def near_px() -> float:
        return max(2.0, NEAR_M / float(geo["gsd_m"])) if geo else 2.0

    # 1. quantities right before a mention
    attr_words = {str(v).lower() for a in (rules().get("attributes") or {}).values()
                  if isinstance(a, dict) for v in (a.get("values") or {}).values()}
    for start, end, phrase, e in known:
        head = lowered[:start].rstrip()
        words = head.split()
        while words and (words[-1] in attr_words or words[-1].endswith("-storey") or words[-1] == "mostly"):
            words.pop()
        prev = " ".join(words[-3:])
        plural_name = phrase == e.tag["plural"].lower() and e.tag["plural"] != e.tag["phrase"]
        stated: int | None = None
        m = re.search(rf"(?:^|\s)(\d+|{'|'.join(NUMBER_WORDS)})$", prev)
        if m:
            w = m.group(1)
            stated = int(w) if w.isdigit() else NUMBER_WORDS[w]
        if re.search(r"(?:a single|a lone|an isolated)$", prev):
            stated = 1
        if stated is not None and not e.mass and not e.landcover:
            if e.n is None:
                problems.append(f"says {stated} {phrase}, but the count of objects is not known")
            elif stated != e.n:
                problems.append(f"says {stated} {phrase} but {e.n} objects are visible")
            elif not full and stated > 1:
                problems.append(f"exact count of {phrase} outside full OSM coverage")
        for vague, (lo, hi) in VAGUE.items():
            if prev.endswith(vague) and not prev.endswith("a " + vague):
                if e.n is None or not (lo <= e.n <= hi) and not (vague == "many" and not full and e.n >= 10):
                    problems.append(f"says {vague!r} {phrase}, count is {e.n}")
        if full and e.n is not None and not e.mass and not e.landcover:
            if plural_name and e.n == 1 and stated is None:
                problems.append(f"plural {phrase!r} for one object")
            if re.search(r"(?:^|\s)(?:a|an)$", prev) and not plural_name and e.n != 1:
                problems.append(f"'a {phrase}' but {e.n} objects are visible")
        if re.search(r"(?:^|\s)scattered$|dotted with$", prev):
            if not (full and e.n is not None and 2 <= e.n <= 12 and e.share < 0.03):
                problems.append(f"'scattered {phrase}' with {e.n} objects covering {e.share}")
        if re.search(r"planted with$", head):
            pass
    # 2. share words: "<x> covers <share> the image" and "<share> the image is (covered by) <x>"
    for m in re.finditer(rf"{COVER_VERBS} ({'|'.join(map(re.escape, sorted(SHARES, key=len, reverse=True)))}) "
                         rf"(?:the|this)\b", lowered):
        subj = before(m.start())
        _check_share(problems, m.group(1), subj, full, lowered[subj[1]:m.start()] if subj else "")
    for m in re.finditer(rf"({'|'.join(map(re.escape, sorted(SHARES, key=len, reverse=True)))}) the {IMAGE} is "
                         r"(?:covered by )?", lowered):
        _check_share(problems, m.group(1), after(m.end()), full, "")
    for m in re.finditer(r"\bmostly ", lowered):
        nxt = after(m.end())
        if nxt is not None and nxt[0] == m.end():
            if nxt[3].share < 0.5 - 1e-9:
                problems.append(f"'mostly {nxt[2]}' but its share is {nxt[3].share}")
    # 3. positions, spreads, spans, extents
    for m in re.finditer(r"from the (top left|top right|bottom left|bottom right|top|bottom|left|right|center)"
                         r" to the (top left|top right|bottom left|bottom right|top|bottom|left|right|center)",
                         lowered):
        subj = before(m.start())
        if subj is None:
            problems.append(f"extent {m.group()!r} of nothing")
        elif not {m.group(1), m.group(2)} <= subj[3].cells:
            problems.append(f"{subj[2]} {m.group()!r}, but its cells are {sorted(subj[3].cells)}")
    masked = re.sub(r"from the [a-z ]+? to the (?:top left|top right|bottom left|bottom right|top|bottom|left"
                    r"|right|center)", lambda x: "#" * len(x.group()), lowered)
    for words, cell in sorted(POSITIONS.items(), key=lambda kv: -len(kv[0])):
        for m in re.finditer(rf"(?<![\w-]){re.escape(words)}(?![\w-])", masked):
            subj = before(m.start()) or after(m.end()) or before_in_sentence(m.start())
            if subj is None:
                problems.append(f"position {words!r} of nothing")
            elif cell not in subj[3].cells and cell != subj[3].position:
                problems.append(f"{subj[2]} {words!r}, but its cells are {sorted(subj[3].cells)}")
            masked = masked[:m.start()] + "#" * (m.end() - m.start()) + masked[m.end():]
    for m in re.finditer(SPREAD_WORDS, lowered):
        subj = before(m.start())
        if subj is None or len(subj[3].cells) < 6:
            problems.append(f"{subj[2] if subj else 'nothing'} {m.group()!r}, but it is not spread across")
    for m in re.finditer(SPAN_WORDS + r"(?: from (left|right|top|bottom) to (left|right|top|bottom))?", lowered):
        subj = before(m.start())
        if subj is None:
            problems.append(f"{m.group()!r}: nothing spans")
            continue
        spans = subj[3].spans()
        if not spans:
            problems.append(f"{subj[2]} {m.group()!r}, but it does not span the tile edge to edge")
        elif m.group(1):
            want = "h" if {m.group(1), m.group(2)} == {"left", "right"} else \
                "v" if {m.group(1), m.group(2)} == {"top", "bottom"} else None
            if want not in spans:
                problems.append(f"{subj[2]} {m.group()!r}, but it spans {sorted(spans)}")
    for m in re.finditer(r"crossed by ", lowered):
        obj = after(m.end())
        if obj is None or not obj[3].spans():
            problems.append(f"crossed by {obj[2] if obj else 'nothing'}, which does not span the tile")
    # 4. relations from the objects
    lowered_rel = masked
    rel = re.compile(r" (along|lining|alongside|crossing|that crosses|meeting|that joins|next to|beside|"
                     r"between|surrounded by) (?!the " + IMAGE + ")")
    for m in rel.finditer(lowered_rel):
        a, b = before(m.start() + 1), after(m.end())
        word = m.group(1)
        if a is None or b is None:
            if word not in ("crossing",):
                problems.append(f"relation {word!r} without two features")
            continue
        ea, eb = a[3], b[3]
        if not ea.geoms or not eb.geoms:
            problems.append(f"{a[2]} {word} {b[2]}: no object geometry to support it")
            continue
        ua, ub = ea.union(), eb.union()
        d = near_px()
        if word in ("along", "lining", "alongside"):
            close = sum(1 for g in ea.geoms if g.distance(ub) <= 1.25 * d)
            if close < 2 or close < 0.5 * len(ea.geoms):
                problems.append(f"{a[2]} {word} {b[2]}: only {close}/{len(ea.geoms)} objects near it")
        elif word in ("crossing", "that crosses", "meeting", "that joins"):
            if ua.distance(ub) > 2.0:
                problems.append(f"{a[2]} {word} {b[2]}: they do not touch")
        elif word in ("next to", "beside"):
            if ua.distance(ub) > 1.25 * d:
                problems.append(f"{a[2]} {word} {b[2]}: {ua.distance(ub):.1f} px apart")
        elif word == "between":
            c2 = after(b[1] + 1)
            if c2 is None or not re.fullmatch(r"\s*and(?: an?| the)?\s*", lowered[b[1]:c2[0]]) or not c2[3].geoms:
                problems.append(f"{a[2]} between {b[2]} and ?: no second line")
                continue
            u2 = c2[3].union()
            hits = 0
            for g in ea.geoms:
                c = g.centroid
                p1, p2 = ub.interpolate(ub.project(c)), u2.interpolate(u2.project(c))
                if (p1.x - c.x) * (p2.x - c.x) + (p1.y - c.y) * (p2.y - c.y) < 0:
                    hits += 1
            if hits < 2 or hits < 0.5 * len(ea.geoms):
                problems.append(f"{a[2]} between {b[2]} and {c2[2]}: {hits}/{len(ea.geoms)} between")
        elif word == "surrounded by":
            for g in ea.geoms:
                inside = g.intersection(ub).area / g.area if g.area else (g.intersection(ub).length /
                                                                          max(g.length, 1e-9))
                if inside < 0.9:
                    problems.append(f"{a[2]} surrounded by {b[2]}: an object is {inside:.0%} inside")
                    break
    # 5. scene words
    buildings = [e for e in {id(e): e for e in ok.values()}.values() if e.category == "building" and e.subject]
    bshare = sum(e.share for e in buildings)
    if re.search(r"densely built|dense cluster|closely packed|tightly packed", lowered) and bshare < 0.35:
        problems.append(f"'dense' buildings but they cover {bshare:.3f}")
    if re.search(r"(?<!densely )built-up", lowered) and bshare < 0.15:
        problems.append(f"'built-up' but buildings cover {bshare:.3f}")
    # 6. attributes
    roofs = _attr_shares(buildings, "roof:material")
    levels = _attr_shares(buildings, "building:levels")
    min_known = float((rules().get("attributes") or {}).get("min_known", 0.5))
    for label, got, said in (("roofs", roofs, re.search(r"\broofs?\b", scan) is None and "roof" in lowered),
                             ("levels", levels, "-storey" in lowered)):
        if said and got is not None and got[0] < min_known:
            problems.append(f"{label} stated but only {got[0]:.0%} of the buildings say")
    for m in re.finditer(r"(?:with|under) (mostly )?(?:an? )?([\w-]+)(?: and ([\w-]+))? roofs?\b", lowered):
        if roofs is None:
            problems.append("roof materials without data")
            continue
        s1 = roofs[1].get(m.group(2), 0.0)
        if m.group(3):
            s2 = roofs[1].get(m.group(3), 0.0)
            if s1 < 0.2 or s2 < 0.2 or s1 + s2 < 0.8:
                problems.append(f"{m.group()!r}: shares {s1:.2f} and {s2:.2f}")
        elif s1 < (0.6 if m.group(1) else 0.9):
            problems.append(f"{m.group()!r}: share {s1:.2f}")
    for m in re.finditer(rf"({'|'.join(map(re.escape, SHARES))}) (?:the roofs|them) are ([\w-]+)", lowered):
        lo, hi, _ = SHARES[m.group(1)]
        s = roofs[1].get(m.group(2), 0.0) if roofs else -1.0
        if not lo <= s <= hi + 1e-9:
            problems.append(f"{m.group()!r}: share {s:.2f}")
    for m in re.finditer(rf"([\w-]+) (?:roofs account for|roofing covers) ({'|'.join(map(re.escape, SHARES))}) (?:the roofs|them)\b",
                         lowered):
        lo, hi, _ = SHARES[m.group(2)]
        s = roofs[1].get(m.group(1), 0.0) if roofs else -1.0
        if not lo <= s <= hi + 1e-9:
            problems.append(f"{m.group()!r}: share {s:.2f}")
    stems = {k[:-3]: k for k in SHARES if k.endswith(" of")}
    for m in re.finditer(rf"(?<![\w-])({'|'.join(map(re.escape, sorted(stems, key=len, reverse=True)))}) are "
                         r"([\w-]+)", lowered):
        if m.group(2) not in _roof_materials():
            continue  # "most are ..." of something else: not a roof claim
        if roofs is None:
            problems.append(f"{m.group()!r}: roof materials without data")
            continue
        lo, hi, _ = SHARES[stems[m.group(1)]]
        s = roofs[1].get(m.group(2), 0.0)
        if not lo <= s <= hi + 1e-9:
            problems.append(f"{m.group()!r}: share {s:.2f}")
    for m in re.finditer(r"(mostly )?([a-z]+)-storey", lowered):
        n = NUMBER_WORDS.get(m.group(2)) or (int(m.group(2)) if m.group(2).isdigit() else None)
        s = levels[1].get(str(n), 0.0) if levels else 0.0
        if s < (0.6 if m.group(1) else 0.9):
            problems.append(f"{m.group()!r}: share {s:.2f}")
    for key in ("surface", "leaf_type"):
        spec = (rules().get("attributes") or {}).get(key) or {}
        vocab = sorted({str(v) for v in (spec.get("values") or {}).values()}, key=len, reverse=True)
        for start, end, phrase, e in known:
            head = lowered[:start].rstrip()
            for w in vocab:
                if head.endswith(" " + w) or head == w:
                    got = _attr_shares([e], key)
                    mostly = head[: -len(w)].rstrip().endswith("mostly")
                    if got is None or got[0] < min_known or got[1].get(w, 0) < (0.6 if mostly else 0.9):
                        problems.append(f"'{w} {phrase}' not supported by the {key} of its objects")
                    break
    for m in re.finditer(r"planted with ([\w-]+)", lowered):
        subj = before(m.start())
        got = _attr_shares([subj[3]], "crop") if subj else None
        if got is None or got[1].get(m.group(1), 0) < 0.9:
            problems.append(f"{m.group()!r} not supported by the crop of its objects")
    # 7. metres
    for m in re.finditer(r"about (\d+) m of ([a-z ]+?)(?= cross| is| are|,| and|\.|$)", lowered):
        length, phrase = int(m.group(1)), m.group(2).strip()
        e = ok.get(phrase)
        if e is None:
            problems.append(f"length of {phrase!r}, which is not a visible tag")
        elif abs(e.length - length) > max(5.0, 0.05 * e.length):
            problems.append(f"says {length} m of {phrase}, stats say {e.length}")
    for m in re.finditer(r"(\d+) m wide", lowered):
        if geo is not None:
            width = geo["size"][0] * (geo.get("gsd_xy_m") or [geo["gsd_m"]])[0]
            if abs(width - int(m.group(1))) > max(5.0, 0.05 * width):
                problems.append(f"says {m.group()} but the tile is {width:.0f} m wide")
    # 8. land cover
    if provenance and provenance.get("landcover"):
        clause = str(provenance["landcover"])
        if clause.lower() not in lowered:
            problems.append("the land-cover clause is not in the caption")
        fn = _landcover_checker()
        if fn is not None and meta is not None:
            got = fn(clause, meta)
            if isinstance(got, (list, tuple)):
                problems += [f"land cover: {p}" for p in got]
            elif got is False:
                problems.append(f"land cover: {clause!r} rejected")
    if not [t for t in osm["tags"] if t["visible"]] and "no " not in lowered and not known:
        problems.append("a tile without visible tags needs a 'no mapped features' caption")
    return problems


@cache
def _roof_materials() -> frozenset[str]:
    return frozenset(str(v).lower() for v in ((rules().get("attributes") or {}).get("roof:material") or {})
                     .get("values", {}).values())


def _roof_context(text: str, start: int) -> bool:
    """Whether "roofs" at ``start`` is the noun of a roof attribute (after a material, "the",
    "and", "all" or "mostly"), not the feature building=roof."""
    head = text[:start].split()
    if not head:
        return False
    return head[-1] in _roof_materials() or head[-1] in ("the", "and", "all")


def _check_share(problems: list[str], words: str, subj: tuple[int, int, str, Entry] | None, full: bool,
                 between: str) -> None:
    if subj is None:
        problems.append(f"area statement {words!r} about nothing")
        return
    lo, hi, lower_bound = SHARES[words]
    e = subj[3]
    if not lo - 1e-9 <= e.share <= hi + 1e-9:
        problems.append(f"says {words} for {subj[2]} but its area share is {e.share}")
    if not (e.full if e.landcover else full) and not lower_bound:
        problems.append(f"{words!r} for {subj[2]} outside full coverage (the share is a lower bound)")


@cache
def _landcover_checker() -> Any:
    """The land-cover package's own checker of its phrases (None without the package)."""
    try:
        from rsdata.landcover import check_landcover_phrase
    except ImportError:
        return None
    return check_landcover_phrase
