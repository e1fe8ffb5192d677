"""Test helpers for scoring and filtering: a tiny random CLIP model saved to disk, seeded
synthetic scenes, and small corpora written through the real shard writer and manifest code."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import string
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from rsdata import __version__
from rsdata.corpus.manifest import write_manifest
from rsdata.sample import Sample
from rsdata.corpus.writer import ShardWriter

TINY_CLIP_IMAGE = 32


def build_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """A random ``CLIPModel`` with tiny towers, a CLIP BPE tokenizer over a small vocabulary and
    a CLIP image processor, saved with ``save_pretrained`` (the layout converted checkpoints have)."""
    import torch
    import transformers
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits + ".,-'":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("r", "o"), ("ro", "a")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=40, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=TINY_CLIP_IMAGE, patch_size=8),
        projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    processor_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor_cls(size={"shortest_edge": TINY_CLIP_IMAGE},
                  crop_size={"height": TINY_CLIP_IMAGE, "width": TINY_CLIP_IMAGE}).save_pretrained(str(directory))
    return directory


def scene(seed: int, size: int = 96) -> Image.Image:
    """A seeded synthetic 'aerial' scene: textured ground, fields, roads and buildings."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=3)
    noise = rng.normal(0, 12, size=(size, size, 3))
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):  # fields
        x0, y0 = rng.integers(0, size - 20, size=2)
        w, h = rng.integers(15, size // 2, size=2)
        draw.rectangle([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    for _ in range(int(rng.integers(1, 4))):  # roads
        pts = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(3)]
        draw.line(pts, fill=(int(rng.integers(150, 255)),) * 3, width=int(rng.integers(2, 5)))
    for _ in range(int(rng.integers(2, 8))):  # buildings
        x, y = rng.integers(0, size - 8, size=2)
        s = int(rng.integers(3, 8))
        draw.rectangle([int(x), int(y), int(x + s), int(y + s)], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def encode(img: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def sample_meta(key: str, caption: str | None, scores: dict[str, float] | None = None) -> dict[str, Any]:
    """Metadata that is valid against schemas/sample.schema.json."""
    captions = [{"text": caption, "kind": "template", "template": "test.v1"}] if caption else []
    return {"schema_version": 1, "key": key, "synthetic": False, "origin": {"type": "raster"},
            "source": {"type": "raster", "id": "t", "license": "CC0-1.0", "attribution": "test scenes"},
            "geo": {"crs": "EPSG:32734", "bounds": [0, 0, 96, 96], "bounds_wgs84": [20.0, -34.1, 20.01, -34.0],
                    "gsd_m": 1.0, "size": [96, 96], "bands": [1, 2, 3]},
            "captions": captions, "scores": dict(scores or {})}


def write_corpus(directory: Path, items: list[tuple[str, bytes, str | None, dict[str, float] | None]],
                 max_samples_per_shard: int = 4, name: str = "test") -> Path:
    """A corpus (shards + manifest.json) of (key, jpg bytes, caption, scores) items."""
    writer = ShardWriter(directory, "part", max_samples_per_shard, 10**9)
    for key, data, caption, scores in items:
        writer.write(Sample(key=key, image=data, image_format="jpg", meta=sample_meta(key, caption, scores)))
    shards = writer.close()
    recipe = {"name": name, "output": {"max_samples_per_shard": max_samples_per_shard, "max_bytes_per_shard": "64MB"}}
    manifest = {"format": "rsdata-manifest/1", "name": name,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "rsdata_version": __version__, "recipe": recipe, "recipe_path": None,
                "recipe_hash": hashlib.sha256(json.dumps(recipe).encode()).hexdigest(), "parent": None,
                "nsamples": sum(s["nsamples"] for s in shards), "shards": shards,
                "stages": [{"name": "tile", "in": len(items), "out": len(items), "dropped": {}}], "sources": []}
    write_manifest(directory, manifest)
    return directory
