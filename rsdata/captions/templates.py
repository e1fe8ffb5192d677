"""The ``template_captions`` stage: captions written from a tile's OSM statistics.

Several template families describe different aspects of a tile (what and how many, where,
how much area, how long, or that nothing is mapped). Which families and variants a sample gets
is decided by its key and the recipe's seed, so a rerun writes the same captions. Captions use
only *visible* tags (large enough to see at the tile's GSD) and state nothing the stats do not
support: exact numbers only for separately mapped objects (polygons), never for road segments.
Every caption records its template id.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import Any

from rsdata.sample import Caption, Sample
from rsdata.stage import Stage
from rsdata.stats import StageStats

FAMILIES = ("counts", "positions", "sizes", "landcover", "lengths", "empty")
SUBJECTS = ("An aerial image", "An overhead view", "An aerial photo")
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

Tag = dict[str, Any]


def article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def join_words(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def share_words(share: float) -> str:
    if share >= 0.6:
        return "most of the image"
    if share >= 0.35:
        return "a large part of the image"
    if share >= 0.15:
        return "part of the image"
    return "a small part of the image"


def amount(tag: Tag) -> str:
    """How many of a tag a caption may state: exact for objects, vague for lines and areas."""
    n = tag["visible_count"]
    if tag["mass"]:
        return tag["phrase"]
    if tag["geom_types"].get("line") and not tag["geom_types"].get("polygon"):
        # OSM splits one road into many ways: counting ways would be a lie
        return article(tag["phrase"]) if n == 1 else tag["plural"]
    if n == 1:
        return article(tag["phrase"]) if tag["phrase"][:1] != tag["phrase"][:1].upper() else tag["phrase"]
    return f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} {tag['plural']}"


def is_plural(tag: Tag) -> bool:
    return not tag["mass"] and tag["visible_count"] > 1


def where(tag: Tag, kind: str) -> str:
    pos = tag["position"]
    if pos == "across":
        return "running across the image" if kind == "line" else "spread across the image"
    return "in the center" if pos == "center" else f"on the {pos}" if pos in ("left", "right") else f"in the {pos}"


def tag_kind(tag: Tag) -> str:
    gt = tag["geom_types"]
    return "polygon" if gt.get("polygon") else "line" if gt.get("line") else "point"


# -- families: each returns (variant id, text) or None when the stats do not support it --------
def fam_counts(tags: list[Tag], ctx: dict[str, Any], rng: random.Random) -> tuple[str, str] | None:
    items = [amount(t) for t in tags if not t["mass"]]
    if not items:
        return None
    listing = join_words(items)
    variants = [
        ("a", f"{ctx['subject']} with {listing}."),
        ("b", f"{capitalize(listing)} {'are' if len(items) > 1 or is_plural(tags[0]) else 'is'} "
              f"visible in this {ctx['subject_noun']}."),
        ("c", f"A {ctx['width_m']} m wide {ctx['subject_noun']} with {listing}."),
    ]
    return rng.choice(variants)


def fam_positions(tags: list[Tag], ctx: dict[str, Any], rng: random.Random) -> tuple[str, str] | None:
    items = [f"{amount(t)} {where(t, tag_kind(t))}" for t in tags]
    if not items:
        return None
    listing = join_words(items)
    return rng.choice([("a", f"{ctx['subject']} showing {listing}."),
                       ("b", f"{capitalize(listing)}.")])


def _area_tags(tags: list[Tag]) -> list[Tag]:
    return [t for t in tags if tag_kind(t) == "polygon" and t["area_share"] >= 0.02]


def fam_sizes(tags: list[Tag], ctx: dict[str, Any], rng: random.Random) -> tuple[str, str] | None:
    areas = _area_tags(tags)
    if not areas:
        return None
    parts = []
    for t in areas:
        subject = t["phrase"] if t["mass"] else (t["plural"] if is_plural(t) else article(t["phrase"]))
        verb = "cover" if is_plural(t) else "covers"
        parts.append(f"{subject} {verb} {share_words(t['area_share'])}")
    text = capitalize(join_words(parts)) + "."
    return ("a", text)


def fam_landcover(tags: list[Tag], ctx: dict[str, Any], rng: random.Random) -> tuple[str, str] | None:
    areas = [t for t in _area_tags(tags) if t["mass"] or t["category"] in ("landuse", "landcover", "leisure", "water")]
    if not areas:
        return None
    top = areas[0]
    name = top["phrase"] if top["mass"] else article(top["phrase"])
    others = [t for t in tags if t is not top]
    tail = f", with {join_words([amount(t) for t in others])}" if others else ""
    if top["area_share"] >= 0.6:
        return rng.choice([("a", f"{ctx['subject']} of {name}{tail}."),
                           ("b", f"{capitalize(name)} fills most of this {ctx['subject_noun']}{tail}.")])
    return ("c", f"{ctx['subject']} with {name} covering {share_words(top['area_share'])}{tail}.")


def fam_lengths(tags: list[Tag], ctx: dict[str, Any], rng: random.Random) -> tuple[str, str] | None:
    lines = [t for t in tags if tag_kind(t) == "line" and t["length_m"] >= 10]
    if not lines:
        return None
    parts = [f"about {round_m(t['length_m'])} m of {t['phrase']}" for t in lines]
    verb = "cross" if len(parts) > 1 else "crosses"
    return rng.choice([("a", f"{capitalize(join_words(parts))} {verb} this {ctx['width_m']} m wide "
                             f"{ctx['subject_noun']}."),
                       ("b", f"{ctx['subject']} in which {join_words(parts)} {verb} the scene.")])


def fam_empty(tags: list[Tag], ctx: dict[str, Any], rng: random.Random) -> tuple[str, str] | None:
    if tags:
        return None
    if ctx["n_features"] == 0:
        return rng.choice([("a", f"{ctx['subject']} with no features mapped in OpenStreetMap."),
                           ("b", f"A {ctx['width_m']} m wide {ctx['subject_noun']} of an area with no "
                                 "mapped features.")])
    return ("c", f"{ctx['subject']} with no mapped features large enough to see at "
                 f"{ctx['gsd_m']:g} m per pixel.")


def round_m(value: float) -> int:
    return int(round(value, -1)) if value >= 100 else int(round(value))


FAMILY_FUNCS: dict[str, Callable[[list[Tag], dict[str, Any], random.Random], tuple[str, str] | None]] = {
    "counts": fam_counts, "positions": fam_positions, "sizes": fam_sizes,
    "landcover": fam_landcover, "lengths": fam_lengths, "empty": fam_empty,
}
TEMPLATE_VERSION = "v1"


def sample_rng(seed: int, key: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def captions_for(meta: dict[str, Any], count: int = 3, seed: int = 0,
                 families: tuple[str, ...] = FAMILIES, max_features: int = 4) -> list[Caption]:
    """Deterministic template captions of one sample's metadata."""
    key = meta["key"]
    rng = sample_rng(seed, key)
    osm = meta.get("osm", {"tags": [], "n_features": 0})
    # one phrase per feature: a tag that only ever names a feature another tag already names
    # (landuse=conservation on a nature reserve) stays in the stats but not in the captions
    visible = [t for t in osm["tags"] if t["visible"] and t.get("primary", True)][:max_features]
    subject = rng.choice(SUBJECTS)
    geo = meta["geo"]
    ctx = {"subject": subject, "subject_noun": subject.split(" ", 1)[1],
           "width_m": round_m(geo["size"][0] * geo["gsd_m"]), "gsd_m": round(geo["gsd_m"], 2),
           "n_features": osm.get("n_features", 0)}
    order = list(families)
    rng.shuffle(order)
    out: list[Caption] = []
    for fam in order:
        got = FAMILY_FUNCS[fam](visible, ctx, rng)
        if got is None:
            continue
        variant, text = got
        out.append(Caption(text=text, kind="template",
                           provenance={"template": f"{fam}.{TEMPLATE_VERSION}.{variant}"}))
        if len(out) >= count:
            break
    return out


class TemplateCaptions(Stage):
    name = "template_captions"

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        count = self.config.get("count", 3)
        seed = self.config.get("seed", 0)
        families = tuple(self.config.get("families") or FAMILIES)
        max_features = self.config.get("max_features", 4)
        for sample in samples:
            stats.n_in += 1
            caps = captions_for(sample.meta, count, seed, families, max_features)
            if not caps:
                stats.drop("no_template_applies")
                continue
            for cap in caps:
                sample.add_caption(cap)
            stats.extra["captions"] += len(caps)
            stats.n_out += 1
            yield sample
