"""The OSM feature cache in ``OUT/.rsdata``: plain data (JSON + WKB), never pickle.

A cache file is written once by the driver and read by every worker, so it must be safe to
read even when someone else put it there: it holds no code, only a JSON header (tags, ids,
stats, per-source facts, coverage polygons as WKB hex) and the features' geometries as
concatenated WKB. A SHA-256 of both parts is stored after the magic line, so a half-written,
truncated or altered file is recognised (:func:`read_cache` returns None) and rebuilt.

Layout::

    MAGIC (16 bytes) | len(header) u64 LE | len(blob) u64 LE | sha256(header + blob) (32 bytes)
    | header (UTF-8 JSON) | blob (WKB of every geometry, back to back)
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from rsdata.atomic import atomic_write_bytes
from rsdata.osm.features import FeatureSet

MAGIC = b"RSDATA-OSMCACHE1"
SUFFIX = ".osmcache"
_HEAD = struct.Struct("<QQ32s")


def write_cache(path: Path, features: FeatureSet, extra: dict[str, Any]) -> None:
    """Write ``features`` (and the JSON-able ``extra`` facts) to ``path`` atomically."""
    wkbs = [shapely.to_wkb(g) for g in features.geometries]
    header = json.dumps({
        "version": 1,
        "source": features.source,
        "ids": features.ids,
        "tags": features.tags,
        "stats": dict(features.stats),
        "wkb_lengths": [len(w) for w in wkbs],
        "extra": extra,
    }, sort_keys=True, separators=(",", ":")).encode("utf-8")
    blob = b"".join(wkbs)
    digest = hashlib.sha256(header + blob).digest()
    atomic_write_bytes(path, MAGIC + _HEAD.pack(len(header), len(blob), digest) + header + blob)


def read_cache(path: Path) -> tuple[FeatureSet, dict[str, Any]] | None:
    """The features and extra facts of a cache file, or None when it is missing, not a cache
    file, truncated or corrupt (the caller rebuilds it). Never executes anything it reads."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    start = len(MAGIC) + _HEAD.size
    if len(data) < start or not data.startswith(MAGIC):
        return None
    n_header, n_blob, digest = _HEAD.unpack_from(data, len(MAGIC))
    if len(data) != start + n_header + n_blob:
        return None
    body = memoryview(data)[start:]
    if hashlib.sha256(body).digest() != digest:
        return None
    try:
        header = json.loads(bytes(body[:n_header]).decode("utf-8"))
        lengths = header["wkb_lengths"]
        ids, tags = header["ids"], header["tags"]
        if not (len(lengths) == len(ids) == len(tags)) or sum(lengths) != n_blob:
            return None
        blob = bytes(body[n_header:])
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        parts = np.array([blob[offsets[i]:offsets[i + 1]] for i in range(len(lengths))], dtype=object)
        geoms = shapely.from_wkb(parts) if len(parts) else np.array([], dtype=object)
        features = FeatureSet(source=str(header["source"]), geometries=list(geoms),
                              tags=[{str(k): str(v) for k, v in t.items()} for t in tags],
                              ids=[str(i) for i in ids], stats=Counter(header["stats"]))
        return features, dict(header["extra"])
    except (ValueError, KeyError, TypeError, AttributeError, shapely.errors.GEOSException):
        return None
