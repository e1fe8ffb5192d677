"""Retrieval and zero-shot metrics, from similarity scores (numpy in, plain floats out).

Retrieval follows the protocol of the remote-sensing captioning benchmarks (RSICD,
UCM-captions, Sydney-captions, RSITMD): an image may have several captions. Image -> text
counts a hit at K when *any* of the image's captions is among the K most similar texts; text ->
image counts a hit when the caption's own image is among the K most similar images. ``mR`` is
the mean of the six recalls R@1/5/10 in both directions (in percent, as papers report).
Ties are broken pessimistically (a tied wrong item ranks ahead), so a constant model scores no
better than chance.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

KS = (1, 5, 10)


def _rank_of_best(scores: np.ndarray, positives: np.ndarray) -> int:
    """0-based rank of the best positive: how many negatives score >= it."""
    best = scores[positives].max()
    negatives = np.ones(scores.shape[0], dtype=bool)
    negatives[positives] = False
    return int((scores[negatives] >= best).sum())


def retrieval_ranks(sim: np.ndarray, text_image: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Ranks (0 = first) of the correct match: per image (i2t) and per text (t2i).

    ``sim``: (n_images, n_texts) similarities; ``text_image[t]`` is the image of caption ``t``.
    """
    sim = np.asarray(sim, dtype=np.float64)
    owner = np.asarray(text_image, dtype=np.int64)
    n_images, n_texts = sim.shape
    if n_images == 0 or n_texts == 0:
        raise ValueError("retrieval needs at least one image and one caption")
    if owner.shape != (n_texts,):
        raise ValueError(f"text_image has {owner.shape[0]} entries for {n_texts} captions")
    if owner.min() < 0 or owner.max() >= n_images:
        raise ValueError("text_image holds an image index outside the similarity matrix")
    captions_of = [np.flatnonzero(owner == i) for i in range(n_images)]
    if any(len(c) == 0 for c in captions_of):
        missing = [i for i, c in enumerate(captions_of) if len(c) == 0][:5]
        raise ValueError(f"images without any caption: {missing}")
    i2t = np.array([_rank_of_best(sim[i], captions_of[i]) for i in range(n_images)])
    t2i = np.array([_rank_of_best(sim[:, t], np.array([owner[t]])) for t in range(n_texts)])
    return i2t, t2i


def recall_curve(ranks: np.ndarray, max_k: int) -> list[float]:
    """Recall@K in percent for K = 1..max_k."""
    ranks = np.asarray(ranks)
    return [float((ranks < k).mean() * 100) for k in range(1, max_k + 1)]


def retrieval_metrics(sim: np.ndarray, text_image: Sequence[int], curve_k: int = 50) -> dict[str, Any]:
    """R@1/5/10 both ways, mR, median ranks, chance levels and recall curves up to ``curve_k``."""
    i2t, t2i = retrieval_ranks(sim, text_image)
    n_images, n_texts = np.asarray(sim).shape
    per_image = n_texts / n_images
    out: dict[str, Any] = {
        "n_images": int(n_images), "n_texts": int(n_texts),
        "i2t": {f"R@{k}": float((i2t < k).mean() * 100) for k in KS},
        "t2i": {f"R@{k}": float((t2i < k).mean() * 100) for k in KS},
        "i2t_median_rank": float(np.median(i2t) + 1), "t2i_median_rank": float(np.median(t2i) + 1),
        # expected recall of a random ranking (an image with c captions among n_texts texts)
        "chance": {
            "i2t": {f"R@{k}": float(100 * (1 - _none_in_top(n_texts, per_image, k))) for k in KS},
            "t2i": {f"R@{k}": float(100 * min(k, n_images) / n_images) for k in KS},
        },
        "curves": {"k": list(range(1, curve_k + 1)), "i2t": recall_curve(i2t, curve_k),
                   "t2i": recall_curve(t2i, curve_k)},
    }
    out["mR"] = float(np.mean(list(out["i2t"].values()) + list(out["t2i"].values())))
    chance = out["chance"]
    chance["mR"] = float(np.mean(list(chance["i2t"].values()) + list(chance["t2i"].values())))
    return out


def _none_in_top(n: int, positives: float, k: int) -> float:
    """P(no positive among the first k of a random order of n items, ``positives`` of them
    positive); ``positives`` is rounded (the average caption count per image)."""
    c = int(round(positives))
    p = 1.0
    for i in range(min(k, n)):
        p *= max(n - c - i, 0) / (n - i)
    return p


def zero_shot_metrics(logits: np.ndarray, labels: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """Top-1/top-5 accuracy, mean per-class accuracy and the confusion matrix (rows: true class)."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n, c = logits.shape
    if n == 0:
        raise ValueError("zero-shot evaluation needs at least one image")
    if c != len(classes):
        raise ValueError(f"{c} logit columns for {len(classes)} classes")
    # pessimistic ties: the true class ranks after every class that scores the same
    true_score = logits[np.arange(n), y]
    rank = (logits >= true_score[:, None]).sum(axis=1) - 1
    pred = logits.argmax(axis=1)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    support = confusion.sum(axis=1)
    per_class = {classes[i]: float(confusion[i, i] / support[i] * 100) for i in range(c) if support[i]}
    return {
        "n_images": int(n), "n_classes": int(c),
        "top1": float((rank < 1).mean() * 100), "top5": float((rank < min(5, c)).mean() * 100),
        "mean_per_class": float(np.mean(list(per_class.values()))) if per_class else 0.0,
        "chance_top1": float(100 / c),
        "per_class": per_class, "classes": list(classes), "confusion": confusion.tolist(),
    }
