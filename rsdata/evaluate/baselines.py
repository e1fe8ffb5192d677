"""References that learn nothing, to stand beside every learned figure (numpy + Pillow only).

* :class:`HistogramBaseline` (``rsdata eval --baseline histogram``): retrieval by **caption
  transfer** from the nearest training images under a fixed colour + texture histogram. A test
  image's score for a caption is the mean, over its ``k`` nearest training images, of the best
  TF-IDF cosine between the caption and that training image's captions. Nothing is trained:
  the features are fixed histograms and the text side is word counts of the training captions.
  A dual encoder that does not beat it has not learned more than "this colour/texture goes with
  these words".
* :class:`RandomBaseline` (``--baseline random``): uniformly random similarities (seeded);
  its recalls scatter around the analytic chance level.
* :func:`verbatim_share`: the share of test captions that occur word for word in training; with
  template captions a high share means retrieval is largely template matching.
* :func:`neighbour_caption_scores`: an **image-free** caption checker for filtering benchmarks:
  how well a tile's caption agrees (TF-IDF cosine) with the captions of its spatial neighbours.
  Whatever AUC it reaches on swapped captions is reachable without looking at a pixel.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from rsdata.evaluate.datasets import ImageRef, RetrievalSet
from rsdata.imaging import decode_rgb

_WORD = re.compile(r"[a-z0-9]+")


# -- text ------------------------------------------------------------------------------------------
def normalise_caption(text: str) -> str:
    """Lower case, single spaces, no trailing punctuation: what 'verbatim' compares."""
    return " ".join(text.lower().split()).rstrip(" .!?;,")


def verbatim_share(test: Sequence[str], train: Iterable[str],
                   test_image: Sequence[int] | None = None) -> dict[str, float | int]:
    """How many test captions occur verbatim (after :func:`normalise_caption`) among ``train``.

    Returns ``share`` (of test captions), ``matched``, ``n_test``, ``n_train_distinct`` and, with
    ``test_image`` (the image of each test caption), ``images_any``: the share of test images
    with at least one caption seen verbatim in training.
    """
    seen = {normalise_caption(t) for t in train}
    hits = np.array([normalise_caption(t) in seen for t in test], dtype=bool)
    out: dict[str, float | int] = {"share": float(hits.mean()) if hits.size else float("nan"),
                                   "matched": int(hits.sum()), "n_test": int(hits.size),
                                   "n_train_distinct": len(seen)}
    if test_image is not None:
        owner = np.asarray(test_image, dtype=np.int64)
        if owner.shape != hits.shape:
            raise ValueError(f"{owner.shape[0]} image indices for {hits.size} captions")
        if owner.size:
            per_image = np.bincount(owner, weights=hits.astype(np.float64), minlength=int(owner.max()) + 1)
            has = np.bincount(owner, minlength=int(owner.max()) + 1) > 0
            out["images_any"] = float((per_image[has] > 0).mean())
    return out


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Tfidf:
    """TF-IDF over word unigrams and bigrams, fitted on a list of texts; rows L2-normalised.

    Terms that never occur in the fitted texts are ignored (a text made only of them is a zero
    vector, which ranks tied, and ties count against the system)."""

    def __init__(self, ngrams: int = 2) -> None:
        self.ngrams = ngrams
        self.vocab: dict[str, int] = {}
        self.idf = np.zeros(0, dtype=np.float32)

    def terms(self, text: str) -> list[str]:
        w = words(text)
        return [" ".join(w[i:i + n]) for n in range(1, self.ngrams + 1) for i in range(len(w) - n + 1)]

    def fit(self, texts: Iterable[str]) -> "Tfidf":
        df: Counter[str] = Counter()
        n = 0
        for t in texts:
            df.update(set(self.terms(t)))
            n += 1
        self.vocab = {term: i for i, term in enumerate(sorted(df))}
        self.idf = np.array([math.log((1 + n) / (1 + df[t])) + 1 for t in sorted(df)], dtype=np.float32)
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.vocab)), dtype=np.float32)
        for row, t in enumerate(texts):
            for term, c in Counter(self.terms(t)).items():
                j = self.vocab.get(term)
                if j is not None:
                    out[row, j] = c * self.idf[j]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


# -- images ----------------------------------------------------------------------------------------
HUE_BINS, SAT_BINS, VAL_BINS = 8, 4, 4
GRAD_EDGES = np.array([0, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, np.inf])
_RING = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def lbp_riu2(gray: np.ndarray) -> np.ndarray:
    """Rotation-invariant uniform local binary patterns (8 neighbours, radius 1): a code 0-9
    per interior pixel (0-8: uniform patterns by their count of brighter neighbours; 9: the rest)."""
    g = np.asarray(gray, dtype=np.float32)
    h, w = g.shape
    c = g[1:-1, 1:-1]
    bits = np.stack([g[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx] >= c for dy, dx in _RING]).astype(np.int8)
    transitions = np.abs(bits - np.roll(bits, 1, axis=0)).sum(axis=0)
    return np.where(transitions <= 2, bits.sum(axis=0), 9)


def _hist(values: np.ndarray, bins: int) -> np.ndarray:
    h = np.bincount(values.ravel(), minlength=bins).astype(np.float64)
    return h / max(h.sum(), 1.0)


def histogram_features(data: bytes, size: int = 128, what: str = "image") -> np.ndarray:
    """A fixed colour + texture descriptor of an encoded image (no learning, rotation-invariant).

    Three blocks, each a normalised histogram under a square root (so a dot product of two
    descriptors is the mean Bhattacharyya coefficient of the blocks, 1 for identical ones):
    joint HSV colour (8 x 4 x 4 bins), gradient magnitude (16 log-spaced bins) and LBP riu2
    (10 codes), all on the image resized to ``size`` px.
    """
    img = decode_rgb(data, what)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    hsv = np.asarray(img.convert("HSV"), dtype=np.int32)
    colour = ((hsv[..., 0] * HUE_BINS // 256) * SAT_BINS + hsv[..., 1] * SAT_BINS // 256) * VAL_BINS \
        + hsv[..., 2] * VAL_BINS // 256
    gray = np.asarray(img.convert("L"), dtype=np.float32)
    gy, gx = np.gradient(gray)
    magnitude = np.hypot(gx, gy) * 4  # Sobel-like scale: a step of 1 grey level ~ 2-4
    grad = np.searchsorted(GRAD_EDGES, magnitude, side="right") - 1
    blocks = [_hist(colour, HUE_BINS * SAT_BINS * VAL_BINS), _hist(grad, len(GRAD_EDGES) - 1),
              _hist(lbp_riu2(gray), 10)]
    return (np.concatenate([np.sqrt(b) for b in blocks]) / math.sqrt(len(blocks))).astype(np.float32)


def image_features(refs: Sequence[ImageRef], size: int = 128) -> np.ndarray:
    if not refs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([histogram_features(r.read(), size, f"image {r.id}") for r in refs])


# -- retrieval baselines ---------------------------------------------------------------------------
class HistogramBaseline:
    """Caption transfer from the ``k`` nearest training images under :func:`histogram_features`."""

    kind = "histogram"

    def __init__(self, k: int = 10, size: int = 128, text_chunk: int = 512) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k, self.size, self.text_chunk = k, size, text_chunk
        self.features = np.zeros((0, 0), dtype=np.float32)
        self.caption_owner = np.zeros(0, dtype=np.int64)
        self.train_captions: list[str] = []
        self.tfidf = Tfidf()
        self._caption_vectors = np.zeros((0, 0), dtype=np.float32)

    @property
    def name(self) -> str:
        return f"histogram-nn (k={self.k}, no learning)"

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "k": self.k, "image_size": self.size, "train_images": int(self.features.shape[0]),
                "train_captions": len(self.train_captions),
                "features": "sqrt-normalised HSV 8x4x4 + gradient magnitude 16 + LBP riu2 10 histograms",
                "text": "TF-IDF (word 1-2 grams) of the training captions"}

    def fit(self, train: RetrievalSet) -> "HistogramBaseline":
        """Remember the training images' features and captions (the whole 'training')."""
        if not train.images:
            raise ValueError("the histogram baseline needs training images")
        self.features = image_features(train.images, self.size)
        self.train_captions = list(train.captions)
        self.caption_owner = np.asarray(train.caption_image, dtype=np.int64)
        self.tfidf = Tfidf().fit(self.train_captions)
        self._caption_vectors = self.tfidf.transform(self.train_captions)
        return self

    def neighbours(self, query: np.ndarray) -> np.ndarray:
        """Indices (n_query, k) of the k most similar training images, most similar first."""
        sim = query @ self.features.T
        k = min(self.k, self.features.shape[0])
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1)

    def similarity(self, data: RetrievalSet) -> np.ndarray:
        """(n_images, n_texts) scores of every test caption for every test image."""
        if not self.train_captions:
            raise ValueError("fit the histogram baseline on training data first")
        nn = self.neighbours(image_features(data.images, self.size))
        n_train = self.features.shape[0]
        out = np.zeros((len(data.images), len(data.captions)), dtype=np.float64)
        for start in range(0, len(data.captions), self.text_chunk):
            texts = self.tfidf.transform(data.captions[start:start + self.text_chunk])
            cos = self._caption_vectors @ texts.T  # (train captions, chunk)
            best = np.full((n_train, texts.shape[0]), -1.0, dtype=np.float32)
            np.maximum.at(best, self.caption_owner, cos)  # best caption of each training image
            best = np.maximum(best, 0.0)
            out[:, start:start + texts.shape[0]] = best[nn].mean(axis=1)
        return out


class RandomBaseline:
    """Uniformly random similarities: recall at the chance level (with a seed, reproducible)."""

    kind = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @property
    def name(self) -> str:
        return f"random (seed {self.seed})"

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "seed": self.seed}

    def similarity(self, data: RetrievalSet) -> np.ndarray:
        return np.random.default_rng(self.seed).random((len(data.images), len(data.captions)))


BASELINES = ("histogram", "random")


# -- an image-free caption checker -----------------------------------------------------------------
def local_metres(lonlat: np.ndarray) -> np.ndarray:
    """(n, 2) lon/lat degrees -> (n, 2) metres on a local equirectangular plane."""
    a = np.asarray(lonlat, dtype=np.float64)
    lat0 = math.radians(float(np.mean(a[:, 1]))) if a.size else 0.0
    return np.stack([a[:, 0] * 111_320.0 * math.cos(lat0), a[:, 1] * 110_540.0], axis=1)


def neighbour_caption_scores(captions: Sequence[str], bounds: np.ndarray, context: Sequence[str] | None = None,
                             k: int = 8, disjoint: bool = False) -> np.ndarray:
    """Per tile, the mean TF-IDF cosine of its caption with the captions of its ``k`` nearest tiles.

    ``bounds``: (n, 4) WGS84 ``minx, miny, maxx, maxy`` of each tile; ``context[i]``: the text
    neighbours contribute (default: their ``captions``; e.g. all of a tile's captions joined).
    With ``disjoint``, only tiles whose footprints do not overlap the tile count as neighbours
    (what a corpus without overlapping tiles would offer). No image is read and no label is
    used: a low score says the caption disagrees with what the map says around the tile.
    """
    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    n = len(captions)
    if b.shape[0] != n:
        raise ValueError(f"{b.shape[0]} bounds for {n} captions")
    ctx = list(context) if context is not None else list(captions)
    if len(ctx) != n:
        raise ValueError(f"{len(ctx)} context texts for {n} captions")
    if n < 2:
        return np.zeros(n)
    tfidf = Tfidf().fit(list(captions) + ctx)
    q, c = tfidf.transform(list(captions)), tfidf.transform(ctx)
    centres = local_metres(np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1))
    out = np.zeros(n)
    for i in range(n):
        d = np.hypot(*(centres - centres[i]).T)
        d[i] = np.inf
        if disjoint:
            overlap = (b[:, 0] < b[i, 2]) & (b[:, 2] > b[i, 0]) & (b[:, 1] < b[i, 3]) & (b[:, 3] > b[i, 1])
            d[overlap] = np.inf
        valid = np.flatnonzero(np.isfinite(d))
        if valid.size == 0:
            continue
        near = valid[np.argsort(d[valid], kind="stable")[:k]]
        out[i] = float((c[near] @ q[i]).mean())
    return out
