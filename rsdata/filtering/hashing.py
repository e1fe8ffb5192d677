"""Perceptual image hashes (pHash, dHash) with numpy and PIL, invariant to flips and 90° turns.

Overhead imagery has no "up": the same tile turns up flipped or rotated (augmented copies,
re-tiled mosaics, benchmark images rotated by their authors). So each image gets the hashes of
all 8 of its flips and right-angle rotations (the dihedral group D4, in :data:`TRANSFORMS`
order); two images are compared as ``min over k of distance(a[0], b[k])``.

* pHash: greyscale 32x32, 2-D DCT-II, the 8x8 lowest frequencies, bit = coefficient > median
  (as in Zauner's thesis and the ``imagehash`` package).
* dHash: greyscale 9x9, bit = pixel brighter than its left neighbour (first 8 rows: 64 bits).

Hashes are ``uint64``; :func:`hamming` counts differing bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from collections.abc import Callable

import numpy as np
from PIL import Image

PHASH_SIDE = 32
LOW_FREQ = 8
DHASH_SIDE = 9

# the 8 flips / right-angle rotations of a 2-D array; index 0 is the identity
TRANSFORMS: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    lambda a: a,
    lambda a: a[:, ::-1],
    lambda a: a[::-1, :],
    lambda a: a[::-1, ::-1],
    lambda a: a.T,
    lambda a: a[:, ::-1].T,
    lambda a: a[::-1, :].T,
    lambda a: a[::-1, ::-1].T,
)
N_VARIANTS = len(TRANSFORMS)

_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Number of differing bits between uint64 hashes (broadcasting)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x).astype(np.int64)
    return _POP8[np.ascontiguousarray(x)[..., None].view(np.uint8)].sum(axis=-1, dtype=np.int64)


@lru_cache(maxsize=4)
def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``dct_matrix(n) @ x`` transforms a length-n vector."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


def pack_bits(bits: np.ndarray) -> np.uint64:
    """64 booleans (row-major) -> one uint64."""
    return np.packbits(bits.reshape(-1).astype(np.uint8)).view(">u8")[0].astype(np.uint64)


def phash_of(gray32: np.ndarray) -> np.uint64:
    d = dct_matrix(PHASH_SIDE)
    low = (d @ gray32 @ d.T)[:LOW_FREQ, :LOW_FREQ]
    return pack_bits(low > np.median(low))


def dhash_of(gray9: np.ndarray) -> np.uint64:
    return pack_bits(gray9[:LOW_FREQ, 1:] > gray9[:LOW_FREQ, :-1])


def _gray(img: Image.Image, side: int) -> np.ndarray:
    return np.asarray(img.resize((side, side), Image.Resampling.BOX), dtype=np.float64)


def open_image(data: bytes | Image.Image) -> Image.Image:
    """Greyscale PIL image from encoded bytes or an image (JPEGs decoded at reduced scale)."""
    if isinstance(data, Image.Image):
        img = data
    else:
        from rsdata.imaging import open_image

        img = open_image(data, "image")
        if img.format == "JPEG":
            img.draft("L", (2 * PHASH_SIDE, 2 * PHASH_SIDE))
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return img.convert("L")


@dataclass(frozen=True)
class ImageHashes:
    """pHash and dHash of the 8 dihedral variants of one image (``uint64[8]`` each)."""

    phash: np.ndarray
    dhash: np.ndarray


def image_hashes(data: bytes | Image.Image) -> ImageHashes:
    """Hashes of one image (encoded bytes or PIL image) and of its flips and rotations."""
    gray = open_image(data)
    g32 = _gray(gray, PHASH_SIDE)
    g9 = _gray(gray, DHASH_SIDE)
    return ImageHashes(phash=np.array([phash_of(t(g32)) for t in TRANSFORMS], dtype=np.uint64),
                       dhash=np.array([dhash_of(t(g9)) for t in TRANSFORMS], dtype=np.uint64))


def dihedral_distance(a: ImageHashes, b: ImageHashes) -> tuple[int, int, int]:
    """(pHash distance, dHash distance, variant k) of ``a`` against the best variant of ``b``
    (smallest pHash distance, then dHash distance)."""
    dp = hamming(a.phash[0], b.phash)
    dd = hamming(a.dhash[0], b.dhash)
    k = int(np.lexsort((dd, dp))[0])
    return int(dp[k]), int(dd[k]), k
