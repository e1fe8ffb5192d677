"""Decoding encoded images (shared by scoring, filtering and anything else that reads pixels).

Lives below :mod:`rsdata.scoring` and :mod:`rsdata.filtering` so neither imports the other.
"""

from __future__ import annotations

import io

from PIL import Image

from rsdata.errors import InputError


def decode_rgb(data: bytes, what: str) -> Image.Image:
    """Encoded image bytes -> RGB PIL image; an error naming ``what`` when unreadable."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: the image cannot be decoded ({exc})") from None
    return img if img.mode == "RGB" else img.convert("RGB")
