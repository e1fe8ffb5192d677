"""Pass 1 of ``rsdata filter``: read a corpus once and decide which samples stay (a subset list).

The steps run in this order, each on what the previous one kept:

1. **eval leakage** -- drop samples that match any evaluation image (``eval_leakage``);
2. **dedup** -- byte-identical copies (``exact_duplicate``) go first, each to the best of its
   twins; then perceptual-hash near duplicates (``near_duplicate``) and, with a scorer and a
   cosine threshold, semantic ones (``semantic_duplicate``). Which one of a group stays is
   deterministic: the highest score (when the corpus has the score), then the smallest key;
3. **score** -- keep ``score >= threshold`` (``below_threshold``) or the best ``top_fraction``
   of the samples left (``below_top_fraction``; ties broken by key). A global fraction needs
   every score first, which is why this is a pass of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from rsdata.errors import InputError
from rsdata.corpus import Corpus, CorpusError
from rsdata.filtering.dedup import EXACT, NEAR, SEMANTIC, HashIndex, choose_kept, cosine_matches, priority_order
from rsdata.filtering.fingerprints import FingerprintBuilder, Fingerprints
from rsdata.filtering.leakage import EvalIndex, EvalSpec, build_eval_index, find_leaks, leakage_report
from rsdata.filtering.subset import Subset

DEFAULT_MAX_PHASH = 6
DEFAULT_MAX_DHASH = 10
LEAKAGE = "eval_leakage"
BELOW_THRESHOLD = "below_threshold"
BELOW_TOP_FRACTION = "below_top_fraction"


@dataclass
class FilterSettings:
    """What ``rsdata filter`` does (every field maps to a command-line option)."""

    score: str | None = None
    threshold: float | None = None
    top_fraction: float | None = None
    dedup: bool = False
    max_phash_distance: int = DEFAULT_MAX_PHASH
    max_dhash_distance: int = DEFAULT_MAX_DHASH
    semantic_threshold: float | None = None
    leakage: list[EvalSpec] = field(default_factory=list)

    def check(self, has_scorer: bool) -> None:
        if self.threshold is not None and self.top_fraction is not None:
            raise InputError("give either a score threshold or a top fraction, not both")
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            raise InputError(f"top fraction must be in (0, 1], not {self.top_fraction}")
        if not 0 <= self.max_phash_distance < 64 or not 0 <= self.max_dhash_distance <= 64:
            raise InputError("hash distances are numbers of bits out of 64: use 0..63")
        if self.semantic_threshold is not None:
            if not -1 <= self.semantic_threshold <= 1:
                raise InputError(f"a cosine threshold lies in [-1, 1], not {self.semantic_threshold}")
            if not has_scorer:
                raise InputError("semantic near-duplicates need image embeddings: give a scorer "
                                 "(--scorer KIND --model PATH) with --semantic-threshold")
            if not (self.dedup or self.leakage):
                raise InputError("--semantic-threshold applies to --dedup and --leakage; add one")
        if (self.threshold is None and self.top_fraction is None and not self.dedup
                and not self.leakage):
            raise InputError("nothing to filter: give --threshold, --top-fraction, --dedup and/or "
                             "--leakage EVAL")

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "threshold": self.threshold, "top_fraction": self.top_fraction,
                "dedup": self.dedup, "max_phash_distance": self.max_phash_distance,
                "max_dhash_distance": self.max_dhash_distance,
                "semantic_threshold": self.semantic_threshold,
                "leakage": [s.to_json() for s in self.leakage]}


@dataclass
class Scan:
    """What pass 1 read: keys, per-sample scores, and (when needed) fingerprints and embeddings."""

    keys: list[str]
    scores: list[dict[str, float]]
    fingerprints: Fingerprints | None = None
    embeddings: np.ndarray | None = None


def scan_corpus(corpus: Corpus, images: bool, scorer: Any = None, progress: bool = False,
                batch: int = 64) -> Scan:
    """Read every sample's json (and image, when ``images``) once."""
    from rsdata.imaging import decode_rgb

    want = {"json", "jpg", "png"} if images else {"json"}
    keys: list[str] = []
    scores: list[dict[str, float]] = []
    builder = FingerprintBuilder() if images else None
    emb: list[np.ndarray] = []
    pending: list[Any] = []
    bar = tqdm(total=corpus.nsamples, unit="sample", desc="filter: reading", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    with bar:
        for entry in corpus.entries(want):
            meta = entry.meta()
            keys.append(entry.key)
            raw = meta.get("scores") or {}
            scores.append({k: float(v) for k, v in raw.items() if isinstance(v, (int, float))})
            if builder is not None:
                data = entry.image()
                try:
                    builder.add(entry.key, data)
                except (OSError, ValueError, InputError) as exc:
                    raise CorpusError(f"sample {entry.key} in {entry.shard}: its image cannot be "
                                      f"decoded ({exc})") from None
                if scorer is not None:
                    pending.append(decode_rgb(data, f"sample {entry.key}"))
                    if len(pending) >= batch:
                        emb.append(scorer.embed_images(pending))
                        pending.clear()
            bar.update(1)
    if pending:
        emb.append(scorer.embed_images(pending))
    return Scan(keys, scores, builder.build() if builder is not None else None,
                np.concatenate(emb) if emb else None)


def resolve_score_name(wanted: str | None, scores: list[dict[str, float]], required: bool) -> str | None:
    """The score to filter on: the one asked for, else the only one every sample has."""
    if wanted is not None:
        missing = sum(1 for s in scores if wanted not in s)
        if missing:
            names = sorted(set().union(*scores)) if scores else []
            raise InputError(f"{missing} of {len(scores)} samples have no score {wanted!r} "
                             f"(scores found: {', '.join(names) or 'none'}); score the corpus first "
                             f"with `rsdata score OUT --out OUT2 --scorer ... --name {wanted}`")
        return wanted
    common = set(scores[0]).intersection(*scores[1:]) if scores else set()
    if len(common) == 1:
        return next(iter(common))
    if required:
        if not common:
            raise InputError("the corpus has no score that every sample carries; score it first "
                             "(`rsdata score OUT --out OUT2 --scorer ...`), then filter the scored copy")
        raise InputError(f"the corpus has several scores ({', '.join(sorted(common))}); choose one "
                         "with --score NAME")
    return None


def top_fraction_count(n: int, fraction: float) -> int:
    """How many of ``n`` samples a top fraction keeps (rounded half up)."""
    return min(n, int(fraction * n + 0.5))


class Decider:
    """Runs the steps of pass 1 over a :class:`Scan`, recording each drop with its reason."""

    def __init__(self, scan: Scan, settings: FilterSettings, score_name: str | None) -> None:
        self.scan = scan
        self.settings = settings
        self.score_name = score_name
        self.n = len(scan.keys)
        self.alive = np.ones(self.n, dtype=bool)
        self.dropped: dict[str, dict[str, Any]] = {}
        values = [s.get(score_name, np.nan) for s in scan.scores] if score_name else None
        self.score = np.array(values, dtype=np.float64) if values is not None else None
        self.order = priority_order(scan.keys, self.score)

    def drop(self, i: int, reason: str, **detail: Any) -> None:
        self.alive[i] = False
        entry: dict[str, Any] = {"reason": reason, **{k: v for k, v in detail.items() if v is not None}}
        if self.score is not None and not np.isnan(self.score[i]):
            entry.setdefault("score", round(float(self.score[i]), 6))
        self.dropped[self.scan.keys[i]] = entry

    def leakage(self, index: EvalIndex, semantic: bool) -> dict[str, Any]:
        fp = self.scan.fingerprints
        assert fp is not None
        s = self.settings
        leaks = find_leaks(fp, index, s.max_phash_distance, s.max_dhash_distance,
                           self.scan.embeddings if semantic else None, s.semantic_threshold if semantic else None)
        for i, leak in leaks.items():
            eval_set = index.sets[index.set_of[leak.eval_index]]["path"]
            self.drop(i, LEAKAGE, match=leak.kind, eval_set=eval_set,
                      eval_image=index.fingerprints.ids[leak.eval_index],
                      phash_distance=leak.phash_distance, cosine=leak.cosine)
        return leakage_report("", self.scan.keys, leaks, index,
                              {"max_phash_distance": s.max_phash_distance,
                               "max_dhash_distance": s.max_dhash_distance,
                               "semantic_threshold": s.semantic_threshold if semantic else None})

    def dedup(self, semantic: bool) -> None:
        fp = self.scan.fingerprints
        assert fp is not None
        keys = self.scan.keys
        rank = np.empty(self.n, dtype=np.int64)
        rank[self.order] = np.arange(self.n)
        # 1. byte-identical copies: all but the best-ranked twin go
        best_by_sha: dict[str, int] = {}
        for i in self.order.tolist():
            if not self.alive[i]:
                continue
            twin = best_by_sha.setdefault(fp.sha256[i], i)
            if twin != i:
                self.drop(i, EXACT, duplicate_of=keys[twin])
        # 2. near and semantic duplicates among the rest
        idx = np.nonzero(self.alive)[0]
        if idx.size < 2:
            return
        s = self.settings
        hits = HashIndex(fp.phash[idx], fp.dhash[idx], s.max_phash_distance, s.max_dhash_distance).query(
            fp.phash[idx, 0], fp.dhash[idx, 0], exclude_self=True)
        pairs = [(hits.query, hits.target, NEAR)]
        distance = symmetric(hits.query, hits.target, hits.phash_distance)
        cosine: dict[tuple[int, int], float] = {}
        if semantic and self.scan.embeddings is not None and s.semantic_threshold is not None:
            qi, ti, cos = cosine_matches(self.scan.embeddings[idx], self.scan.embeddings[idx],
                                         s.semantic_threshold, exclude_self=True)
            pairs.append((qi, ti, SEMANTIC))
            cosine = symmetric(qi, ti, cos)
        choice = choose_kept(idx.size, np.argsort(rank[idx], kind="stable"), pairs)
        for local in np.nonzero(~choice.kept)[0].tolist():
            other = int(choice.duplicate_of[local])
            reason = str(choice.reason[local])
            pair = (local, other)
            self.drop(int(idx[local]), reason, duplicate_of=keys[int(idx[other])],
                      phash_distance=int(distance[pair]) if reason == NEAR else None,
                      cosine=round(float(cosine[pair]), 6) if reason == SEMANTIC else None)

    def by_score(self) -> None:
        assert self.score is not None
        idx = np.nonzero(self.alive)[0]
        if self.settings.threshold is not None:
            for i in idx[self.score[idx] < self.settings.threshold].tolist():
                self.drop(i, BELOW_THRESHOLD)
            return
        assert self.settings.top_fraction is not None
        k = top_fraction_count(idx.size, self.settings.top_fraction)
        ranked = [i for i in self.order.tolist() if self.alive[i]]
        for i in ranked[k:]:
            self.drop(i, BELOW_TOP_FRACTION)


def decide(corpus: Corpus, settings: FilterSettings, scorer: Any = None,
           progress: bool = False) -> tuple[Subset, dict[str, Any] | None]:
    """Pass 1: the subset list (and the leakage report, when a leakage guard was asked for)."""
    settings.check(has_scorer=scorer is not None)
    semantic = settings.semantic_threshold is not None
    needs_score = settings.threshold is not None or settings.top_fraction is not None
    index = None
    if settings.leakage:  # read the evaluation sets first: a wrong path fails fast
        index = build_eval_index(settings.leakage, scorer if semantic else None)
    scan = scan_corpus(corpus, images=settings.dedup or bool(settings.leakage),
                       scorer=scorer if semantic else None, progress=progress)
    if not scan.keys:
        raise InputError(f"{corpus.dir} holds no samples: nothing to filter")
    score_name = resolve_score_name(settings.score, scan.scores, required=needs_score)
    if needs_score and score_name is None:  # pragma: no cover - resolve_score_name raised
        raise InputError("no score to filter on")
    decider = Decider(scan, settings, score_name)
    report = None
    if index is not None:
        report = decider.leakage(index, semantic)
        report["corpus"] = str(corpus.dir)
    if settings.dedup:
        decider.dedup(semantic)
    if needs_score:
        decider.by_score()
    resolved = {**settings.to_json(), "score": score_name}
    if scorer is not None:
        resolved["scorer"] = scorer.describe()
    subset = Subset(parent=str(corpus.dir.resolve()), parent_manifest_sha256=corpus.manifest_sha256(),
                    settings=resolved, keys=scan.keys, dropped=decider.dropped)
    return subset, report


def sweep(corpus: Corpus, score: str | None, thresholds: Iterable[float]) -> tuple[str, list[dict[str, Any]]]:
    """Kept counts at several thresholds from the stored scores (one read of the json members)."""
    scan = scan_corpus(corpus, images=False)
    name = resolve_score_name(score, scan.scores, required=True)
    assert name is not None
    values = np.array([s[name] for s in scan.scores], dtype=np.float64)
    rows = []
    for t in thresholds:
        kept = int((values >= t).sum())
        rows.append({"threshold": t, "kept": kept, "fraction": round(kept / values.size, 4)})
    return name, rows


def symmetric(a: np.ndarray, b: np.ndarray, values: np.ndarray) -> dict[tuple[int, int], Any]:
    """{(a, b): v, (b, a): v} for matched pairs."""
    out: dict[tuple[int, int], Any] = {}
    for x, y, v in zip(a.tolist(), b.tolist(), values.tolist()):
        out[(x, y)] = out[(y, x)] = v
    return out
