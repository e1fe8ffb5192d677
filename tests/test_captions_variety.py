"""Variety with no loss of truth: measured vocabulary, skeletons and constant fragments; metres
only on request."""

from __future__ import annotations

import random
import re

from caption_fixtures import obj, problems, square, stats, tile
from shapely.geometry import LineString, box

from rsdata.captions.metrics import skeleton, variety
from rsdata.captions.templates import FAMILIES, captions_for


def random_tile(i: int) -> dict:
    rng = random.Random(i)
    entries = []
    if rng.random() < 0.5:
        x = rng.uniform(0, 200)
        farm = [obj("landuse=farmland", box(0, 0, 56 + x, 256))]
        entries.append((stats("landuse=farmland", farm), farm))
    n = rng.choice([0, 1, 3, 8, 25])
    if n:
        objs = [obj(rng.choice(["building=yes", "building=yes", "building=house"]) if n < 3 else "building=yes",
                    square(rng.uniform(0, 240), rng.uniform(0, 240), rng.uniform(5, 14))) for _ in range(n)]
        for tag in sorted({o["tag"] for o in objs}):
            mine = [o for o in objs if o["tag"] == tag]
            entries.append((stats(tag, mine, count_objects=len(mine)), mine))
    for tag in rng.sample(["highway=track", "highway=unclassified", "highway=residential", "waterway=stream"],
                          rng.choice([0, 1, 2])):
        a = (rng.choice([0, 256]), rng.uniform(0, 256))
        b = (rng.uniform(0, 256), rng.choice([0, 256, rng.uniform(60, 200)]))
        line = [obj(tag, LineString([a, b]))]
        entries.append((stats(tag, line, count_objects=1), line))
    if not entries:
        road = [obj("highway=track", LineString([(0, 128), (256, 140)]))]
        entries.append((stats("highway=track", road, count_objects=1), road))
    return tile(f"r{i}", entries)


def corpus(n: int = 120, **kw: object) -> list[tuple[str, dict]]:
    out = []
    for i in range(n):
        meta = random_tile(i)
        for cap in captions_for(meta, count=3, seed=0, **kw):  # type: ignore[arg-type]
            out.append((cap.text, meta))
    return out


def test_no_constant_fragment_and_every_caption_is_true() -> None:
    records = corpus()
    for text, meta in records:
        assert not problems(text, meta), (text, problems(text, meta))
    report = variety(records)
    assert report["top_fragment_share"] <= 0.05, report
    assert report["top_skeleton_share"] <= 0.05, report
    assert report["skeletons"] >= 0.5 * report["captions"], report
    assert report["words"] >= 120, report
    assert report["invisible_subject_share"] == 0.0


def test_the_metric_sees_a_constant_fragment() -> None:
    meta = random_tile(1)
    records = [(f"A 640 m wide aerial image with {w}.", meta) for w in ("buildings", "farmland", "a dirt track")]
    records += [(" ".join(f"word{i}{j}" for j in range(5)) + ".", meta) for i in range(7)]
    report = variety(records)
    assert report["top_fragment"] in ("a 640 m wide aerial image", "640 m wide aerial image with")  # 6 words
    assert report["top_fragment_share"] == 0.3
    assert [c["fragment"] for c in report["constant_fragments"] if c["share"] > 0.1] in (
        ["a 640 m wide aerial image", "640 m wide aerial image with"],
        ["640 m wide aerial image with", "a 640 m wide aerial image"])
    assert skeleton("Seven buildings in the top left.") == "N X in the P ."


def test_the_metric_sees_a_constant_share_sentence() -> None:
    """Share words are a slot but their "of" is the template's, and "the roofs" of a roof
    attribute is a template word (not the feature building=roof): a constant "of the roofs are"
    counts."""
    meta = random_tile(1)
    shares = ("most of", "about half of", "about a third of", "more than half of")
    records = [(f"{s.capitalize()} the roofs are tin.", meta) for s in shares]
    records += [(" ".join(f"word{i}{j}" for j in range(5)) + ".", meta) for i in range(6)]
    report = variety(records)
    assert report["top_fragment"] == "of the roofs are" and report["top_fragment_share"] == 0.4, report
    assert skeleton("Most of the roofs are tin and a roof in the top left.") == \
        "S of the roofs are A and a X in the P ."


def test_the_metric_sees_short_constants_and_counts_are_slots() -> None:
    """A three-word constant at a sentence's end counts ("seen from above."); punctuation ends
    a run; "a single" is a count like "one", not a template phrase."""
    meta = random_tile(1)
    records = [(f"{w}, seen from above.", meta) for w in ("Buildings", "Farmland", "A dirt track")]
    records += [(f"Farmland and a single {w}.", meta) for w in ("building", "dirt track", "house")]
    records += [(" ".join(f"word{i}{j}" for j in range(5)) + ".", meta) for i in range(4)]
    report = variety(records)
    assert [c for c in report["constant_fragments"] if c["share"] > 0.1] == \
        [{"fragment": "seen from above", "share": 0.3}], report
    assert skeleton("Farmland and a single building.") == skeleton("Farmland and one building.")


def test_metres_only_when_asked() -> None:
    plain = " ".join(t for t, _ in corpus(40))
    assert not re.search(r"\d+ m\b|metres|meters", plain)
    with_m = [(t, m) for t, m in corpus(40, metres=True)]
    assert any(re.search(r"\d+ m (wide|of)", t) for t, _ in with_m)
    for text, meta in with_m:
        assert not problems(text, meta), text


def test_families_vary_their_sentences() -> None:
    meta = random_tile(3)
    per_family: dict[str, set[str]] = {}
    for s in range(40):
        for cap in captions_for({**meta, "key": f"k{s}"}, count=len(FAMILIES), seed=s):
            per_family.setdefault(cap.provenance["template"].split(".")[0], set()).add(skeleton(cap.text, meta))
    assert len(per_family) >= 4
    assert all(len(v) >= 2 for k, v in per_family.items() if k != "empty"), per_family
