"""The CLIP-style dual encoder and its symmetric InfoNCE loss."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from rsdata.models.image_tower import build_image_tower
from rsdata.models.preprocess import ImageTransform
from rsdata.models.text_tower import Tokenizer, build_text_tower

DEFAULT_LOGIT_SCALE = math.log(1 / 0.07)
DEFAULT_MAX_LOGIT_SCALE = math.log(100.0)


class DualEncoder(nn.Module):
    """Image tower + text tower into one L2-normalised embedding space, with a learnable
    temperature (``logit_scale`` holds its log; the similarity logits are ``exp(s) * cos``).

    ``config`` is the model config (a JSON-able dict, see ``rsdata/models/configs``).
    """

    def __init__(self, config: dict[str, Any], pretrained: bool = True,
                 text_fallback_dir: Path | None = None) -> None:
        super().__init__()
        self.config: dict[str, Any] = config
        dim = int(config["embed_dim"])
        self.visual = build_image_tower(config["image"], dim)
        self.text = build_text_tower(config["text"], dim, pretrained=pretrained,
                                     fallback_dir=text_fallback_dir)
        init_scale = float(config.get("init_logit_scale", DEFAULT_LOGIT_SCALE))
        self.logit_scale = nn.Parameter(torch.tensor(init_scale))
        self.max_logit_scale = float(config.get("max_logit_scale", DEFAULT_MAX_LOGIT_SCALE))
        self.preprocess = ImageTransform.from_config(config["image"])

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def tokenizer(self) -> Tokenizer:
        """``tokenizer(texts) -> dict of (B, L) tensors``; picklable, for data-loader workers."""
        return self.text.tokenizer  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    # -- the public embedding API ---------------------------------------------------------
    def image_transform(self, img: Image.Image) -> torch.Tensor:
        """Eval preprocessing of one PIL image -> (3, S, S) float tensor (resize + normalise)."""
        return self.preprocess(img)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> (B, D) L2-normalised embeddings."""
        return F.normalize(self.visual(images.to(self.device)), dim=-1)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(texts))

    def encode_tokens(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenised texts -> (B, D) L2-normalised embeddings."""
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        return F.normalize(self.text(tokens), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Captions -> (B, D) L2-normalised embeddings (tokenised internally)."""
        return self.encode_tokens(self.tokenize(texts))

    def scale(self) -> torch.Tensor:
        """The logit multiplier exp(logit_scale), clamped at exp(max_logit_scale)."""
        return self.logit_scale.clamp(max=self.max_logit_scale).exp()

    def forward(self, images: torch.Tensor, tokens: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (image embeddings, text embeddings, logit multiplier)."""
        return self.encode_image(images), self.encode_tokens(tokens), self.scale()


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: pair i is the positive of row i and column i, every other pair a negative."""
    logits = scale * image_emb @ text_emb.t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
