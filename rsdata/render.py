"""Turn any raster chip into an 8-bit RGB picture, and encode pictures and GeoTIFF chips."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

Stretch = tuple[list[float], list[float]]  # per-band (low, high) cut values


def percentile_limits(data: np.ndarray, valid: np.ndarray, low: float, high: float) -> Stretch:
    """Per-band ``low``/``high`` percentiles over valid pixels. ``data``: (bands, H, W)."""
    lows: list[float] = []
    highs: list[float] = []
    for band in data:
        values = band[valid] if valid.any() else band.ravel()
        if values.size == 0:
            lows.append(0.0)
            highs.append(1.0)
            continue
        lo, hi = np.percentile(values, [low, high])
        if hi <= lo:  # flat band: avoid dividing by zero
            hi = lo + 1.0
        lows.append(float(lo))
        highs.append(float(hi))
    return lows, highs


def to_rgb8(data: np.ndarray, valid: np.ndarray, limits: Stretch | None) -> np.ndarray:
    """(bands, H, W) of any dtype -> (H, W, 3) uint8; invalid pixels are black.

    ``limits`` None means the data is already 0..255 (clipped, no stretch). One band is grey.
    """
    if limits is None:
        scaled = np.clip(data, 0, 255).astype(np.uint8) if data.dtype != np.uint8 else data
    else:
        lo = np.asarray(limits[0], dtype=np.float32)[:, None, None]
        hi = np.asarray(limits[1], dtype=np.float32)[:, None, None]
        scaled = np.clip((data.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255)
        scaled = (scaled + 0.5).astype(np.uint8)
    if scaled.shape[0] == 1:
        scaled = np.repeat(scaled, 3, axis=0)
    elif scaled.shape[0] == 2:
        scaled = np.concatenate([scaled, scaled[1:2]], axis=0)
    rgb = np.empty(scaled.shape[1:] + (3,), dtype=np.uint8)
    for band in range(3):  # per-band copies: much faster than a transposing copy
        rgb[..., band] = scaled[band]
    if not valid.all():
        rgb[~valid] = 0
    return rgb


def encode_image(rgb: np.ndarray, fmt: str, jpeg_quality: int = 90) -> bytes:
    """Encode (H, W, 3) uint8 as JPEG or PNG bytes."""
    buf = io.BytesIO()
    image = Image.fromarray(rgb)
    if fmt == "jpg":
        image.save(buf, format="JPEG", quality=jpeg_quality)
    elif fmt == "png":
        image.save(buf, format="PNG")
    else:
        raise ValueError(f"unknown image format {fmt!r}: use jpg or png")
    return buf.getvalue()
