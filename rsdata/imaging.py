"""Decoding encoded images (shared by scoring, filtering and anything else that reads pixels).

Lives below :mod:`rsdata.scoring` and :mod:`rsdata.filtering` so neither imports the other.
"""

from __future__ import annotations

import io
import os
import warnings

from PIL import Image

from rsdata.errors import InputError

DEFAULT_MAX_PIXELS = 50_000_000  # a 7000 x 7000 image; sample images are far smaller


class ImageLimitError(InputError):
    """An image declares more pixels than rsdata decodes (a decompression bomb, or a mistake)."""


def max_pixels() -> int:
    """Largest image (width x height) decoded (``RSDATA_MAX_IMAGE_PIXELS``, default 50 M)."""
    try:
        return int(os.environ.get("RSDATA_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS))
    except ValueError:
        return DEFAULT_MAX_PIXELS


def open_image(data: bytes, what: str) -> Image.Image:
    """Open encoded image bytes lazily, refusing (before decoding) an image whose header
    declares more than :func:`max_pixels` pixels; every decode in rsdata goes through here."""
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLimitError(f"{what}: the image declares more pixels than the limit of {limit:,} "
                              "(a decompression bomb?); set RSDATA_MAX_IMAGE_PIXELS to raise it") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: the image cannot be decoded ({exc})") from None
    w, h = img.size
    if w * h > limit:
        raise ImageLimitError(f"{what}: the image declares {w} x {h} pixels, more than the limit of "
                              f"{limit:,} (set RSDATA_MAX_IMAGE_PIXELS to raise it)")
    return img


def decode_rgb(data: bytes, what: str) -> Image.Image:
    """Encoded image bytes -> RGB PIL image; an error naming ``what`` when unreadable or too large."""
    img = open_image(data, what)
    try:
        img.load()
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: the image cannot be decoded ({exc})") from None
    return img if img.mode == "RGB" else img.convert("RGB")
