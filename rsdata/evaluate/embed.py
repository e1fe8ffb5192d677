"""Batched embedding of evaluation images and texts with a :class:`DualEncoder`."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from rsdata.evaluate.datasets import EvalDataError, ImageRef
from rsdata.models import DualEncoder


def _load(model: DualEncoder, ref: ImageRef) -> torch.Tensor:
    try:
        from rsdata.imaging import open_image

        with open_image(ref.read(), f"evaluation image {ref.id}") as img:
            img.load()
            if img.mode not in ("RGB", "L", "RGBA", "P"):
                # 16-bit/float TIFFs: scale to 8 bit so the tile looks like the training renderings
                arr = np.asarray(img, dtype=np.float64)
                lo, hi = np.percentile(arr, [2, 98])
                arr = np.clip((arr - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
                img = Image.fromarray(arr)
            return model.preprocess.to_uint8(img)
    except (OSError, ValueError) as exc:
        raise EvalDataError(f"cannot read image {ref.id}: {exc}") from None


@torch.no_grad()
def embed_images(model: DualEncoder, refs: Sequence[ImageRef], batch_size: int = 64,
                 threads: int = 4) -> np.ndarray:
    """(N, D) float32 L2-normalised image embeddings; decoding runs on a thread pool."""
    out: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(refs), batch_size):
            chunk = list(pool.map(lambda r: _load(model, r), refs[start:start + batch_size]))
            x = model.preprocess.normalize(torch.stack(chunk).to(model.device))
            out.append(model.encode_image(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config["embed_dim"]), np.float32)


@torch.no_grad()
def embed_texts(model: DualEncoder, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """(N, D) float32 L2-normalised text embeddings."""
    out = [model.encode_text(list(texts[i:i + batch_size])).float().cpu().numpy()
           for i in range(0, len(texts), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.config["embed_dim"]), np.float32)


@torch.no_grad()
def class_embeddings(model: DualEncoder, classes: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """One embedding per class: the normalised mean over the prompt templates (CLIP's ensembling)."""
    prompts = [t.format(c) for c in classes for t in templates]
    emb = embed_texts(model, prompts).reshape(len(classes), len(templates), -1).mean(axis=1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)
