"""The ``human_merge`` stage: a round's answers merged into a corpus, as an ordinary run.

    source: {type: corpus, path: PARENT}
    stages:
      - type: human_merge
        answers: annotation/answers-captions-r1-0123456789ab.json   # written by rsdata annotate pull
        max_caption_chars: 1000
        min_answers: 1
        ties: keep

``rsdata annotate pull`` builds and runs exactly this recipe; the answers file's checksum goes
into the recipe hash (``input_files``), so the same answers resume and new answers make a new
version. Samples the round did not include pass unchanged. For the others, the rule is the
**majority of valid answers; ties are kept out** (nothing is applied for a tied question):

* caption_verification — an edit that is empty or longer than ``max_caption_chars`` (after
  collapsing white space) is invalid and not counted (``invalid_answer:empty_caption`` /
  ``caption_too_long``); an edit equal to the caption counts as accept. Then *keep* (accept +
  edit) against *reject*: more rejects drop the sample (``human_rejected``); a tie keeps it
  unchanged (``ties: drop`` drops it as ``human_tie``). If kept and edits outnumber accepts, every
  distinct edited text becomes a ``kind: human`` caption (most votes first, then the earliest),
  the first one primary (the ``txt`` member); the superseded caption moves into the review
  record. Accepts outnumbering edits verify the caption; an accept/edit tie changes nothing.
* match_rating — the valid ratings (1-5), their median (also ``scores.human_match``) and mean.
* tag_check — per offered tag, visible vs not visible; the majority is stored on the tag
  (``osm.tags[].human_visible``), a tie stores nothing.

Fewer valid answers than ``min_answers``: nothing is applied (``too_few_answers``). A sample of
the round nobody answered passes unchanged (``no_answers``); every other one gets a review record
in ``annotation.rounds`` of its json (round, project, kind, hashed annotator ids, time of the
latest answer, votes, resolution), so later rounds can leave it out. Human captions carry
``round``, ``project``, ``annotators`` (hashed) and ``time``.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rsdata.annotation.answers import load_answers
from rsdata.errors import InputError
from rsdata.sample import Sample
from rsdata.settings import from_config
from rsdata.stage import RunContext, Stage
from rsdata.stats import StageStats

STAGE_NAME = "human_merge"
SCORE_NAME = "human_match"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class HumanMergeSettings:
    """The ``human_merge`` stage's options (``$defs.human_merge`` of the recipe schema)."""

    answers: str
    max_caption_chars: int
    min_answers: int
    ties: str


@dataclass
class Decision:
    """What the answers of one sample say."""

    drop: str | None = None  # drop reason
    record: dict[str, Any] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)


def normalize(text: str | None) -> str:
    return " ".join(_CONTROL.sub(" ", text or "").split())


def _meta_time(answers: list[dict[str, Any]]) -> str:
    return max((a.get("time") or "" for a in answers), default="")


def _base_record(answers_file: dict[str, Any], valid: list[dict[str, Any]],
                 all_answers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"round": answers_file["round"], "project": answers_file["project"],
            "kind": answers_file["kind"],
            "annotators": sorted({a["annotator"] for a in all_answers}),
            "answers": len(valid), "time": _meta_time(all_answers)}


def resolve_captions(meta: dict[str, Any], entry: dict[str, Any], answers_file: dict[str, Any],
                     settings: HumanMergeSettings) -> Decision:
    d = Decision()
    original = normalize((meta.get("captions") or [{}])[0].get("text", ""))
    valid: list[tuple[str, str, dict[str, Any]]] = []  # (verdict, text, answer)
    invalid: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for a in entry["answers"]:
        verdict = a.get("verdict")
        if verdict not in ("accept", "edit", "reject"):
            invalid["no_verdict"] += 1
            continue
        text = ""
        if verdict == "edit":
            text = normalize(a.get("caption"))
            if not text:
                invalid["empty_caption"] += 1
                continue
            if len(text) > settings.max_caption_chars:
                invalid["caption_too_long"] += 1
                continue
            if text == original:
                verdict = "accept"
        if verdict == "reject" and a.get("reason"):
            reasons[str(a["reason"])] += 1
        valid.append((verdict, text, a))
    votes = Counter(v for v, _, _ in valid)
    record = _base_record(answers_file, [a for _, _, a in valid], entry["answers"])
    record["votes"] = {v: votes[v] for v in ("accept", "edit", "reject") if votes[v]}
    if invalid:
        record["invalid"] = dict(sorted(invalid.items()))
    if reasons:
        record["reject_reasons"] = dict(sorted(reasons.items()))
    for r, n in invalid.items():
        d.counters[f"invalid_answer:{r}"] += n
    keep, reject = votes["accept"] + votes["edit"], votes["reject"]
    if len(valid) < settings.min_answers:
        resolution = "too_few_answers"
    elif reject > keep:
        resolution = "rejected"
        d.drop = "human_rejected"
        for r, n in reasons.items():
            d.counters[f"reject_reason:{r}"] += n
    elif reject == keep:
        resolution = "tie"
        if settings.ties == "drop":
            d.drop = "human_tie"
    elif votes["edit"] > votes["accept"]:
        resolution = "edited"
        edits: dict[str, list[dict[str, Any]]] = {}
        for verdict, text, a in valid:
            if verdict == "edit":
                edits.setdefault(text, []).append(a)
        ranked = sorted(edits.items(), key=lambda kv: (-len(kv[1]), min(a["time"] for a in kv[1]), kv[0]))
        captions = meta.setdefault("captions", [])
        if captions:
            record["superseded_caption"] = captions.pop(0)
        new = [{"text": text, "kind": "human", "round": answers_file["round"],
                "project": answers_file["project"],
                "annotators": sorted({a["annotator"] for a in voters}),
                "time": _meta_time(voters), "votes": len(voters)} for text, voters in ranked]
        meta["captions"] = new + captions
        d.counters["human_captions"] += len(new)
    elif votes["accept"] > votes["edit"]:
        resolution = "accepted"
    else:
        resolution = "tie_accept_edit"
    record["resolution"] = resolution
    d.record = record
    d.counters[f"resolution:{resolution}"] += 1
    return d


def resolve_rating(meta: dict[str, Any], entry: dict[str, Any], answers_file: dict[str, Any],
                   settings: HumanMergeSettings) -> Decision:
    d = Decision()
    ratings = [a["rating"] for a in entry["answers"]
               if isinstance(a.get("rating"), int) and 1 <= a["rating"] <= 5]
    invalid = len(entry["answers"]) - len(ratings)
    valid = [a for a in entry["answers"] if isinstance(a.get("rating"), int) and 1 <= a["rating"] <= 5]
    record = _base_record(answers_file, valid, entry["answers"])
    record["ratings"] = ratings
    if invalid:
        record["invalid"] = {"no_rating": invalid}
        d.counters["invalid_answer:no_rating"] += invalid
    if len(ratings) < settings.min_answers or not ratings:
        record["resolution"] = "too_few_answers"
    else:
        median = float(statistics.median(ratings))
        record["rating_median"] = median
        record["rating_mean"] = round(statistics.fmean(ratings), 4)
        meta.setdefault("scores", {})[SCORE_NAME] = median
        record["resolution"] = "rated"
        d.counters["rated"] += 1
    d.counters[f"resolution:{record['resolution']}"] += 1
    d.record = record
    return d


def resolve_tags(meta: dict[str, Any], entry: dict[str, Any], answers_file: dict[str, Any],
                 settings: HumanMergeSettings) -> Decision:
    d = Decision()
    valid = [a for a in entry["answers"] if isinstance(a.get("tags"), list)]
    record = _base_record(answers_file, valid, entry["answers"])
    checks: dict[str, dict[str, Any]] = {}
    enough = len(valid) >= settings.min_answers and valid
    for tag in entry.get("options", []):
        yes = sum(1 for a in valid if tag in a["tags"])
        no = len(valid) - yes
        decision = None if not enough or yes == no else yes > no
        checks[tag] = {"visible": yes, "not_visible": no, "decision": decision}
        d.counters["tag_checks"] += 1
        d.counters["tag_ties" if enough and yes == no else ("tags_visible" if decision else
                                                              "tags_not_visible" if decision is False
                                                              else "tags_undecided")] += 1
    for tag in (meta.get("osm") or {}).get("tags", []):
        check = checks.get(tag.get("tag"))
        if check is not None and check["decision"] is not None:
            tag["human_visible"] = check["decision"]
    record["tags"] = checks
    record["resolution"] = "checked" if enough else "too_few_answers"
    d.counters[f"resolution:{record['resolution']}"] += 1
    d.record = record
    return d


RESOLVERS = {"caption_verification": resolve_captions, "match_rating": resolve_rating,
             "tag_check": resolve_tags}


class HumanMerge(Stage):
    name = STAGE_NAME
    settings_class: ClassVar[type | None] = HumanMergeSettings

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.settings = from_config(HumanMergeSettings, self.config, STAGE_NAME)
        self.answers_path: str = self.settings.answers  # resolved against the recipe by prepare
        self.init_lazy()

    def init_lazy(self) -> None:
        self._lazy_answers: dict[str, Any] | None = None

    def input_files(self, ctx: RunContext) -> list[Path]:
        return [ctx.resolve(self.settings.answers)]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        path = ctx.resolve(self.settings.answers)
        answers = load_answers(path)
        if answers.get("kind") not in RESOLVERS:
            raise InputError(f"{path}: unknown round kind {answers.get('kind')!r}")
        self.answers_path = str(path)
        return {"round": answers["round"], "project": answers["project"], "kind": answers["kind"],
                "tasks": len(answers["tasks"]), "agreement": answers.get("agreement")}

    def answers(self) -> dict[str, Any]:
        if self._lazy_answers is None:
            self._lazy_answers = load_answers(self.answers_path)
        return self._lazy_answers

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        answers = self.answers()
        resolver = RESOLVERS[answers["kind"]]
        want_sha = answers["corpus"]["manifest_sha256"]
        for sample in samples:
            stats.n_in += 1
            origin = sample.meta.get("origin") or {}
            if origin.get("parent_manifest_sha256") != want_sha:
                raise InputError(
                    f"human_merge: sample {sample.key} comes from corpus version "
                    f"{str(origin.get('parent_manifest_sha256'))[:12]}, but the answers of round "
                    f"{answers['round']} were given on version {want_sha[:12]} ({answers['corpus']['name']}); "
                    "merge them into the corpus the round was pushed from")
            entry = answers["tasks"].get(origin.get("parent_key") or sample.key)
            if entry is None or not entry["answers"]:
                stats.extra["not_in_round" if entry is None else "no_answers"] += 1
                stats.n_out += 1
                yield sample
                continue
            decision = resolver(sample.meta, entry, answers, self.settings)
            stats.extra.update(decision.counters)
            stats.extra["reviewed"] += 1
            sample.meta.setdefault("annotation", {}).setdefault("rounds", []).append(decision.record)
            if decision.drop:
                stats.drop(decision.drop)
                continue
            stats.n_out += 1
            yield sample
