"""A tiny, seeded image-text corpus in rsdata's shard format, for training and eval tests.

Each sample is a small RGB tile of one land-cover colour with a white square in one of four
corners; its captions name both ("A tile of water with a white square in the top left."), so
a model can learn the pairing in a few steps and the direction words follow flips/rotations.
Shards are real WebDataset tars and the manifest is schema-valid, as ``rsdata run`` writes them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from PIL import Image

from rsdata import __version__, schemas

COVERS = {"water": (40, 70, 160), "forest": (30, 110, 40), "farmland": (190, 170, 90), "bare soil": (140, 90, 60)}
CORNERS = {"top left": (0, 0), "top right": (0, 1), "bottom left": (1, 0), "bottom right": (1, 1)}


def tiny_model_config(name: str = "tiny-test", size: int = 32) -> dict[str, Any]:
    """A model small enough to train a few steps on a CPU in about a second."""
    return {"name": name, "embed_dim": 32, "init_logit_scale": 2.0,
            "image": {"type": "cnn", "size": size, "widths": [8, 16], "depths": [1, 1], "multiscale": [1, 2]},
            "text": {"type": "transformer", "vocab_size": 512, "context_length": 24, "width": 32,
                     "layers": 1, "heads": 2}}


def tile(cover: str, corner: str, size: int, rng: np.random.Generator) -> bytes:
    arr = np.empty((size, size, 3), dtype=np.float64)
    arr[:] = COVERS[cover]
    arr += rng.normal(0, 12, arr.shape)
    r, c = CORNERS[corner]
    q = size // 3
    arr[r * (size - q): r * (size - q) + q, c * (size - q): c * (size - q) + q] = 245
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def samples(n: int, size: int = 32, seed: int = 0, prefix: str = "tiny") -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    covers, corners = list(COVERS), list(CORNERS)
    out = []
    for i in range(n):
        cover, corner = covers[i % len(covers)], corners[(i // len(covers)) % len(corners)]
        captions = [f"A tile of {cover} with a white square in the {corner}.",
                    f"{cover.capitalize()} seen from above, a bright square in the {corner}."]
        meta = {"key": f"{prefix}_{i:05d}", "captions": [{"text": t, "kind": "template", "template": f"t{j}"}
                                                         for j, t in enumerate(captions)],
                "scores": {}, "cover": cover, "corner": corner}
        out.append({"__key__": f"{prefix}_{i:05d}", "jpg": tile(cover, corner, size, rng),
                    "txt": captions[0].encode(), "json": json.dumps(meta).encode()})
    return out


def write_corpus(out_dir: Path, n: int = 48, per_shard: int = 8, size: int = 32, seed: int = 0,
                 drop: tuple[str, ...] = (), prefix: str = "tiny") -> Path:
    """Write ``n`` samples into ``out_dir/shards/*.tar`` + ``out_dir/manifest.json``.

    ``drop`` removes members from every sample (e.g. ``("txt",)`` for a corpus without captions).
    """
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    entries = samples(n, size, seed, prefix)
    shards = []
    for s in range(0, n, per_shard):
        path = shard_dir / f"{prefix}-{s // per_shard:05d}.tar"
        with wds.TarWriter(str(path), encoder=False, mtime=946684800.0) as tw:
            for e in entries[s:s + per_shard]:
                tw.write({k: v for k, v in e.items() if k not in drop})
        data = path.read_bytes()
        shards.append({"path": f"shards/{path.name}", "nsamples": len(entries[s:s + per_shard]),
                       "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"format": "rsdata-manifest/1", "name": prefix,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "rsdata_version": __version__, "recipe": {"generator": "tests/tiny_corpus.py", "seed": seed},
                "recipe_hash": hashlib.sha256(f"{prefix}{n}{seed}".encode()).hexdigest(), "parent": None,
                "nsamples": n, "shards": shards, "stages": [], "sources": []}
    schemas.validate("manifest", manifest, "the tiny corpus manifest")
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out_dir
