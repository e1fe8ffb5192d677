"""The ``template_captions`` stage: captions written from a tile's OSM statistics.

Several template families describe different aspects of a tile (what and how many, where,
how much area, how long, or that nothing is mapped). Which families and variants a sample gets
is decided by its key and the recipe's seed, so a rerun writes the same captions. Captions use
only *visible* tags (large enough to see at the tile's GSD) and state nothing the stats do not
support: exact numbers only for separately mapped objects (polygons), never for road segments.
Every caption records its template id.

A caption says that nothing is mapped (the ``empty`` family) only where a source has looked:
when the tile lies fully inside the coverage ``osm_join`` records (``osm.coverage.fraction``).
Elsewhere a tile gets captions only from what is mapped; a tile with nothing known (no
``osm`` at all, or no visible tag outside full coverage) gets none and is dropped as
``uncaptioned``. The subject ("An aerial image", "A satellite image", "An overhead image")
follows ``platform``: never "aerial" for tiles of 5 m per pixel or coarser.
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
# three subjects per platform, so that the choice draws the same random numbers for each
SUBJECTS_BY_PLATFORM = {
    "aerial": ("An aerial image", "An overhead view", "An aerial photo"),
    "satellite": ("A satellite image", "A satellite view", "A satellite scene"),
    "overhead": ("An overhead image", "An overhead view", "An overhead picture"),
}
SUBJECTS = SUBJECTS_BY_PLATFORM["aerial"]
PLATFORMS = ("auto", "aerial", "satellite", "overhead")
_PLATFORM_ALIASES = {"drone": "aerial", "uav": "aerial", "airborne": "aerial", "airplane": "aerial",
                     "aircraft": "aerial", "spaceborne": "satellite"}
AERIAL_MAX_GSD_M = 5.0  # from this GSD on, a tile is never called an aerial image/photo
FULL_COVERAGE = 0.999  # osm.coverage.fraction from which a tile counts as fully covered
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
    """Whether verbs about ``tag`` agree in the plural ("buildings cover", "trees cover")."""
    if tag["mass"]:
        return bool(tag.get("plural_verb"))
    return tag["visible_count"] > 1


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
    countable = [t for t in tags if not t["mass"]]
    variants = [
        ("a", f"{ctx['subject']} with {listing}."),
        ("b", f"{capitalize(listing)} {'are' if len(items) > 1 or is_plural(countable[0]) else 'is'} "
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
                           ("b", f"{capitalize(name)} {'fill' if is_plural(top) else 'fills'} most of "
                                 f"this {ctx['subject_noun']}{tail}.")])
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


def platform_for(meta: dict[str, Any], platform: str = "auto") -> str:
    """The platform word of a sample: the recipe's, else (``auto``) the one its source set,
    else the neutral ``overhead``; never ``aerial`` at 5 m per pixel or coarser."""
    chosen = platform
    if chosen == "auto":
        chosen = str((meta.get("source") or {}).get("platform") or "overhead").lower()
    chosen = _PLATFORM_ALIASES.get(chosen, chosen)
    if chosen not in SUBJECTS_BY_PLATFORM:
        chosen = "overhead"
    gsd = (meta.get("geo") or {}).get("gsd_m")
    if chosen == "aerial" and gsd is not None and gsd >= AERIAL_MAX_GSD_M:
        chosen = "overhead"
    return chosen


def fully_covered(osm: dict[str, Any] | None) -> bool:
    """Whether the tile lies fully inside its vector sources' coverage (absence may be said)."""
    if not osm:
        return False
    return float((osm.get("coverage") or {}).get("fraction", 0.0)) >= FULL_COVERAGE


def visible_tags(osm: dict[str, Any] | None, max_features: int = 4) -> list[Tag]:
    # one phrase per feature: a tag that only ever names a feature another tag already names
    # (landuse=conservation on a nature reserve) stays in the stats but not in the captions
    if not osm:
        return []
    return [t for t in osm["tags"] if t["visible"] and t.get("primary", True)][:max_features]


def captions_for(meta: dict[str, Any], count: int = 3, seed: int = 0,
                 families: tuple[str, ...] = FAMILIES, max_features: int = 4,
                 platform: str = "auto") -> list[Caption]:
    """Deterministic template captions of one sample's metadata.

    Without ``osm`` in ``meta`` nothing is known: no captions. The ``empty`` family (absence)
    applies only when the tile is fully inside the sources' coverage.
    """
    key = meta["key"]
    rng = sample_rng(seed, key)
    osm = meta.get("osm")
    if osm is None:
        return []
    visible = visible_tags(osm, max_features)
    absence_ok = fully_covered(osm)
    subject = rng.choice(SUBJECTS_BY_PLATFORM[platform_for(meta, platform)])
    geo = meta["geo"]
    ctx = {"subject": subject, "subject_noun": subject.split(" ", 1)[1],
           "width_m": round_m(geo["size"][0] * geo["gsd_m"]), "gsd_m": round(geo["gsd_m"], 2),
           "n_features": osm.get("n_features", 0)}
    order = list(families)
    rng.shuffle(order)
    out: list[Caption] = []
    for fam in order:
        if fam == "empty" and not absence_ok:
            continue  # nobody checked that nothing is there
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
        platform = self.config.get("platform", "auto")
        for sample in samples:
            stats.n_in += 1
            caps = captions_for(sample.meta, count, seed, families, max_features, platform)
            if not caps:
                osm = sample.meta.get("osm")
                known = bool(visible_tags(osm, max_features)) or fully_covered(osm)
                # nothing known (no OSM stage, or outside coverage with nothing visible): the
                # tile cannot be captioned truthfully; else the chosen families do not apply
                stats.drop("no_template_applies" if known else "uncaptioned")
                continue
            for cap in caps:
                sample.add_caption(cap)
            stats.extra["captions"] += len(caps)
            stats.n_out += 1
            yield sample
