"""Image preprocessing without torchvision: PIL resize, uint8 tensors, normalisation.

Preprocessing is split in two so data loaders can ship compact ``uint8`` batches between
processes and normalise on the training device: :meth:`ImageTransform.to_uint8` (PIL ->
``(3, S, S)`` uint8) and :meth:`ImageTransform.normalize` (uint8 or float batch -> normalised
float). Calling the transform does both for one image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# ImageNet statistics: a sensible default for 8-bit RGB renderings of aerial photographs
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageTransform:
    """Eval preprocessing of one model: square resize to ``size`` and normalisation."""

    size: int
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD

    def to_uint8(self, img: Image.Image) -> torch.Tensor:
        """RGB, resized to ``size`` x ``size`` (bilinear, antialiased), as a (3, S, S) uint8 tensor."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def decode(self, data: bytes) -> torch.Tensor:
        """Encoded image bytes (JPEG/PNG/...) -> (3, S, S) uint8; JPEGs are decoded at reduced
        scale when that is still at least ``size`` (much faster for large tiles)."""
        from rsdata.imaging import open_image

        img = open_image(data, "image")
        if img.format == "JPEG":
            img.draft("RGB", (self.size, self.size))
        return self.to_uint8(img)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) images (..., 3, H, W) -> float, normalised with mean/std."""
        x = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float() / 255.0
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x - mean) / std

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.normalize(self.to_uint8(img))

    @classmethod
    def from_config(cls, image_config: dict) -> "ImageTransform":
        return cls(size=int(image_config["size"]),
                   mean=tuple(image_config.get("mean", DEFAULT_MEAN)),  # type: ignore[arg-type]
                   std=tuple(image_config.get("std", DEFAULT_STD)))  # type: ignore[arg-type]
