"""Image towers for 128-256 px aerial tiles: a residual CNN with multi-scale pooling, a small ViT.

Both map ``(B, 3, S, S)`` normalised images to ``(B, embed_dim)`` (not yet L2-normalised).
The CNN uses GroupNorm rather than BatchNorm: batch statistics let a contrastive model cheat
by looking at the other pairs in the batch, and they break with tiny per-GPU batches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    g = groups
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class ResidualBlock(nn.Module):
    """conv3x3 - norm - GELU - conv3x3 - norm, plus the input (projected when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(cout, groups)
        nn.init.zeros_(self.norm2.weight)  # each block starts as the identity
        self.act = nn.GELU()
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                      _norm(cout, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(y + self.skip(x))


class CnnTower(nn.Module):
    """Stem (stride 4) then one stage per width (each after the first halves the resolution).

    The globally average- and max-pooled features of the stages named in ``multiscale`` are
    concatenated: small objects (buildings) live in the earlier, finer stages, land cover in
    the later ones.
    """

    def __init__(self, cfg: dict[str, Any], embed_dim: int) -> None:
        super().__init__()
        widths: list[int] = cfg["widths"]
        depths: list[int] = cfg["depths"]
        groups = int(cfg.get("groups", 8))
        stem = int(cfg.get("stem_width", widths[0]))
        self.multiscale = [int(s) for s in cfg.get("multiscale", [len(widths)])]
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False), _norm(stem, groups), nn.GELU(),
            nn.Conv2d(stem, stem, 3, stride=2, padding=1, bias=False), _norm(stem, groups), nn.GELU(),
        )
        self.stages = nn.ModuleList()
        cin = stem
        for i, (width, depth) in enumerate(zip(widths, depths)):
            blocks: list[nn.Module] = [ResidualBlock(cin, width, 1 if i == 0 else 2, groups)]
            blocks += [ResidualBlock(width, width, 1, groups) for _ in range(max(depth - 1, 0))]
            self.stages.append(nn.Sequential(*blocks))
            cin = width
        pooled = 2 * sum(widths[s - 1] for s in self.multiscale)
        self.head = nn.Sequential(nn.LayerNorm(pooled), nn.Linear(pooled, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if i in self.multiscale:
                feats += [x.mean(dim=(2, 3)), x.amax(dim=(2, 3))]
        return self.head(torch.cat(feats, dim=1))


class VitTower(nn.Module):
    """Patch embedding + learned positions + CLS token + pre-norm transformer encoder."""

    def __init__(self, cfg: dict[str, Any], embed_dim: int) -> None:
        super().__init__()
        width, patch = int(cfg["width"]), int(cfg["patch_size"])
        n_patches = (int(cfg["size"]) // patch) ** 2
        self.patch = nn.Conv2d(3, width, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, n_patches + 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, int(cfg["heads"]), int(width * cfg.get("mlp_ratio", 4)),
                                           dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, int(cfg["layers"]), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.encoder(x)
        return self.proj(self.norm(x[:, 0]))


def build_image_tower(cfg: dict[str, Any], embed_dim: int) -> nn.Module:
    if cfg["type"] == "cnn":
        return CnnTower(cfg, embed_dim)
    if cfg["type"] == "vit":
        return VitTower(cfg, embed_dim)
    raise ValueError(f"unknown image tower type {cfg['type']!r}")
