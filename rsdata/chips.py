"""Read the full-band chip a sample carries (the ``geotiff`` member) back into an array.

    >>> array, profile = rsdata.read_chip(sample["geotiff"])   # (bands, H, W), original dtype

The chip keeps the source's data type (e.g. uint16 reflectances), CRS, transform, nodata, colour
interpretation and band descriptions; ``profile`` holds them (``crs`` as a rasterio CRS,
``transform`` as an Affine, ``colorinterp`` and ``descriptions`` as lists).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def read_chip(data: bytes, masked: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """``(array, profile)`` of a chip's bytes; ``masked`` returns a masked array (nodata/mask)."""
    from rasterio.io import MemoryFile

    with MemoryFile(data) as mem, mem.open() as src:
        array = src.read(masked=masked)
        profile = dict(src.profile)
        profile["colorinterp"] = [c.name for c in src.colorinterp]
        profile["descriptions"] = list(src.descriptions)
    return array, profile
