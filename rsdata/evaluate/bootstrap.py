"""Bootstrap confidence intervals for evaluation figures (numpy only).

Every interval is a percentile interval over ``n_boot`` resamples (default 1000, 95%). The unit
that is resampled is the **query image**: an image together with all of its captions, so the
image -> text recalls (one query per image) and the text -> image recalls (one query per
caption, the captions of one image resampled together) come from the same draw, and ``mR`` gets
an interval of its own. Two systems evaluated on the same set are compared **paired**: the same
resampled images for both (:func:`paired_difference`).

What an interval does not cover: neighbouring tiles of one photo are correlated (overlapping
footprints, the same road in both), so resampling tiles as if independent makes the interval
narrower than a resample of places would; pass ``groups`` (e.g. a spatial cell per tile) to
resample whole groups instead. It also says nothing about other photos, other regions or
other training seeds.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

KS = (1, 5, 10)
DEFAULT_BOOT = 1000
DEFAULT_LEVEL = 0.95


def resample_counts(n: int, n_boot: int = DEFAULT_BOOT, seed: int = 0,
                    groups: Sequence[Any] | None = None) -> np.ndarray:
    """(n_boot, n) how often each of ``n`` units is drawn in each resample.

    Units are drawn with replacement, ``n`` per resample; with ``groups`` (one label per unit)
    whole groups are drawn instead (as many draws as there are groups), so correlated units
    travel together. The same ``n``, ``n_boot``, ``seed`` and ``groups`` give the same draws,
    which is what makes two systems' intervals on one set paired.
    """
    if n <= 0:
        raise ValueError("bootstrap needs at least one unit")
    if n_boot <= 0:
        raise ValueError("bootstrap needs at least one resample")
    rng = np.random.default_rng(seed)
    if groups is None:
        draws = rng.integers(0, n, size=(n_boot, n))
        return np.stack([np.bincount(d, minlength=n) for d in draws])
    labels = np.asarray(list(groups))
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} group labels for {n} units")
    _, group_of = np.unique(labels, return_inverse=True)
    n_groups = int(group_of.max()) + 1
    picked = np.stack([np.bincount(d, minlength=n_groups)
                       for d in rng.integers(0, n_groups, size=(n_boot, n_groups))])
    return picked[:, group_of]


def percentile_ci(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap replicates (NaNs ignored)."""
    if not 0 < level < 1:
        raise ValueError("level must lie in (0, 1)")
    a = np.asarray(samples, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return (float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(a, [tail, 100 - tail])
    return (float(lo), float(hi))


def bootstrap_ci(values: Sequence[float], n_boot: int = DEFAULT_BOOT, level: float = DEFAULT_LEVEL,
                 seed: int = 0, groups: Sequence[Any] | None = None) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` (one value per unit)."""
    v = np.asarray(values, dtype=np.float64)
    counts = resample_counts(v.size, n_boot, seed, groups)
    return percentile_ci(counts @ v / counts.sum(axis=1), level)


def _recall_replicates(i2t: np.ndarray, t2i: np.ndarray, owner: np.ndarray,
                       counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per resample: R@k both ways (percent) and mR, from per-query ranks and image counts."""
    n_images = counts.shape[1]
    caps_per_image = np.bincount(owner, minlength=n_images).astype(np.float64)
    denom_t = counts @ caps_per_image
    denom_i = counts.sum(axis=1)
    out: dict[str, np.ndarray] = {}
    for k in KS:
        hit_i = (i2t < k).astype(np.float64)
        hit_t_per_image = np.bincount(owner, weights=(t2i < k).astype(np.float64), minlength=n_images)
        out[f"i2t/R@{k}"] = 100 * (counts @ hit_i) / denom_i
        out[f"t2i/R@{k}"] = 100 * (counts @ hit_t_per_image) / denom_t
    out["mR"] = np.mean([out[f"{d}/R@{k}"] for d in ("i2t", "t2i") for k in KS], axis=0)
    return out


def _check(i2t: Sequence[int], t2i: Sequence[int], text_image: Sequence[int]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, owner = (np.asarray(x, dtype=np.int64) for x in (i2t, t2i, text_image))
    if b.shape != owner.shape:
        raise ValueError(f"{b.shape[0]} text ranks for {owner.shape[0]} captions")
    if owner.size and (owner.min() < 0 or owner.max() >= a.size):
        raise ValueError("text_image holds an image index outside the image ranks")
    return a, b, owner


def retrieval_replicates(i2t: Sequence[int], t2i: Sequence[int], text_image: Sequence[int],
                         n_boot: int = DEFAULT_BOOT, seed: int = 0,
                         groups: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
    """Bootstrap replicates (one array of ``n_boot`` values per figure) of R@1/5/10 both ways and mR."""
    a, b, owner = _check(i2t, t2i, text_image)
    return _recall_replicates(a, b, owner, resample_counts(a.size, n_boot, seed, groups))


def retrieval_ci(i2t: Sequence[int], t2i: Sequence[int], text_image: Sequence[int],
                 n_boot: int = DEFAULT_BOOT, level: float = DEFAULT_LEVEL, seed: int = 0,
                 groups: Sequence[Any] | None = None) -> dict[str, Any]:
    """95% (``level``) bootstrap intervals of every R@k and mR, resampling query images.

    ``i2t``/``t2i``: 0-based ranks per image / per caption (:func:`retrieval_ranks`);
    ``text_image[t]``: the image of caption ``t``. Returns ``{"i2t": {"R@1": [lo, hi], ...},
    "t2i": {...}, "mR": [lo, hi], "n_boot", "level", "unit"}``.
    """
    reps = retrieval_replicates(i2t, t2i, text_image, n_boot, seed, groups)
    out: dict[str, Any] = {"i2t": {}, "t2i": {}}
    for name, values in reps.items():
        lo, hi = percentile_ci(values, level)
        if name == "mR":
            out["mR"] = [lo, hi]
        else:
            d, k = name.split("/")
            out[d][k] = [lo, hi]
    out.update({"n_boot": int(n_boot), "level": float(level), "seed": int(seed),
                "unit": "image (with all its captions)" if groups is None else "group of images"})
    return out


def paired_difference(a: dict[str, Sequence[int]], b: dict[str, Sequence[int]], text_image: Sequence[int],
                      n_boot: int = DEFAULT_BOOT, level: float = DEFAULT_LEVEL, seed: int = 0,
                      groups: Sequence[Any] | None = None) -> dict[str, Any]:
    """mR(a) - mR(b) on the same evaluation set, with a paired bootstrap interval.

    ``a`` and ``b``: ``{"i2t": ranks per image, "t2i": ranks per caption}`` of two systems on the
    same images and captions; both are resampled with the same draws.
    """
    ai, at, owner = _check(a["i2t"], a["t2i"], text_image)
    bi, bt, _ = _check(b["i2t"], b["t2i"], text_image)
    if ai.shape != bi.shape or at.shape != bt.shape:
        raise ValueError("the two systems were ranked on different sets")
    counts = resample_counts(ai.size, n_boot, seed, groups)
    diff = _recall_replicates(ai, at, owner, counts)["mR"] - _recall_replicates(bi, bt, owner, counts)["mR"]
    full = np.ones((1, ai.size), dtype=np.int64)
    point = float(_recall_replicates(ai, at, owner, full)["mR"][0] - _recall_replicates(bi, bt, owner, full)["mR"][0])
    lo, hi = percentile_ci(diff, level)
    return {"mR_difference": point, "ci": [lo, hi], "share_of_resamples_above_0": float((diff > 0).mean()),
            "n_boot": int(n_boot), "level": float(level)}


# -- ROC AUC ---------------------------------------------------------------------------------------
def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        raise ValueError("ROC AUC needs both classes")
    # average ranks over ties (1-based)
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_ci(scores: Sequence[float], positive: Sequence[bool], n_boot: int = DEFAULT_BOOT,
           level: float = DEFAULT_LEVEL, seed: int = 0, groups: Sequence[Any] | None = None
           ) -> tuple[float, float]:
    """Bootstrap interval of :func:`roc_auc`, resampling samples (resamples lacking a class skipped)."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    counts = resample_counts(s.size, n_boot, seed, groups)
    reps = []
    for c in counts:
        idx = np.repeat(np.arange(s.size), c)
        if pos[idx].all() or not pos[idx].any():
            continue
        reps.append(roc_auc(s[idx], pos[idx]))
    return percentile_ci(np.array(reps), level)


def paired_auc_difference(a: Sequence[float], b: Sequence[float], positive: Sequence[bool],
                          n_boot: int = DEFAULT_BOOT, level: float = DEFAULT_LEVEL, seed: int = 0,
                          groups: Sequence[Any] | None = None) -> dict[str, Any]:
    """AUC(a) - AUC(b) for two scores of the same samples, with a paired bootstrap interval."""
    sa, sb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    if not (sa.shape == sb.shape == pos.shape):
        raise ValueError("the two scores and the labels must cover the same samples")
    counts = resample_counts(sa.size, n_boot, seed, groups)
    reps = []
    for c in counts:
        idx = np.repeat(np.arange(sa.size), c)
        if pos[idx].all() or not pos[idx].any():
            continue
        reps.append(roc_auc(sa[idx], pos[idx]) - roc_auc(sb[idx], pos[idx]))
    lo, hi = percentile_ci(np.array(reps), level)
    return {"difference": roc_auc(sa, pos) - roc_auc(sb, pos), "ci": [lo, hi], "n_boot": int(n_boot),
            "level": float(level)}
