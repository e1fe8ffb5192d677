"""The scorer interface: embed images and texts into one space, score pairs by cosine.

Every implementation (the rsdata baseline checkpoint, a Hugging Face ``CLIPModel`` directory)
only says how to embed one *batch*; this base class does the rest the same way for all:

* the model is loaded lazily, once, on first use (so a scorer pickles to a worker as plain
  settings and loads its model there);
* inputs are cut into batches of ``batch_size``; inference runs under ``torch.inference_mode``
  on CUDA with autocast when a GPU is there (``device="auto"``), else on the CPU in float32;
* embeddings come back as L2-normalised float32 numpy arrays; :meth:`Scorer.score` is the
  cosine similarity of each (image, text) pair.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from rsdata.errors import MissingDependencyError, RsdataError

if TYPE_CHECKING:  # pragma: no cover
    import torch

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_BATCH_CPU = 16
DEFAULT_BATCH_CUDA = 64


class ScorerError(RsdataError):
    """A scorer cannot be built or used: wrong model directory, bad settings, bad inputs."""


def import_torch(what: str) -> Any:
    """``torch``, or a :class:`MissingDependencyError` naming ``what`` needs it."""
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("torch", "train", what) from None
    return torch


def resolve_device(device: str) -> "torch.device":
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    torch = import_torch("scoring")
    if device not in DEVICES:
        raise ScorerError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ScorerError("device 'cuda' was asked for but torch sees no GPU; use device 'auto' "
                          "(falls back to the CPU) or 'cpu'")
    return torch.device(device)


def autocast(device: "torch.device") -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on CUDA (bfloat16 where supported, else float16); nothing on the CPU."""
    torch = import_torch("scoring")
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def check_name(name: str) -> str:
    """A scorer name is the key under ``scores`` in each sample's json: no dots, no spaces."""
    if not NAME_PATTERN.match(name):
        raise ScorerError(f"scorer name {name!r} may only hold letters, digits, '_' and '-' "
                          "(it becomes the key scores.<name> in each sample's json)")
    return name


class Scorer(ABC):
    """Embeds images and captions into one space; ``score`` is the cosine of each pair.

    Subclasses set ``kind`` and implement :meth:`_load`, :meth:`_embed_image_batch` and
    :meth:`_embed_text_batch`; they never need to batch, normalise or pick a device.
    """

    kind: ClassVar[str] = "scorer"

    def __init__(self, model: str, name: str | None = None, batch_size: int | None = None,
                 device: str = "auto") -> None:
        if batch_size is not None and batch_size < 1:
            raise ScorerError(f"batch_size must be 1 or more, not {batch_size}")
        if device not in DEVICES:
            raise ScorerError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
        self.model_path = str(model)
        self.name = check_name(name or self.kind)
        self.batch_size_setting = batch_size
        self.device_setting = device
        self._lazy_loaded = False
        self._lazy_device: "torch.device | None" = None

    # -- pickling: settings only; the model is loaded again where it is used ---------------
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_lazy")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lazy_loaded = False
        self._lazy_device = None

    # -- what implementations provide ------------------------------------------------------
    def check(self) -> None:
        """Cheap checks of the model path (no weights loaded); raise :class:`ScorerError`."""

    def input_files(self) -> list[Path]:
        """The files that define the model (their checksums go into manifests)."""
        return []

    @abstractmethod
    def _load(self, device: "torch.device") -> None:
        """Load the model onto ``device`` (called once)."""

    @abstractmethod
    def _embed_image_batch(self, images: Sequence[Image.Image]) -> "torch.Tensor":
        """(B, D) image embeddings (any norm) of at most ``batch_size`` images."""

    @abstractmethod
    def _embed_text_batch(self, texts: Sequence[str]) -> "torch.Tensor":
        """(B, D) text embeddings (any norm) of at most ``batch_size`` captions."""

    def describe(self) -> dict[str, Any]:
        """Facts for manifests and reports: kind, name, model path, device."""
        return {"kind": self.kind, "name": self.name, "model": self.model_path,
                "batch_size": self.batch_size, "device": str(self.device)}

    # -- the interface -----------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """The batch size given, else 64 on CUDA and 16 on the CPU (where larger batches of
        224 px images fall out of the caches and get slower per image)."""
        if self.batch_size_setting is not None:
            return int(self.batch_size_setting)
        return DEFAULT_BATCH_CUDA if self.device.type == "cuda" else DEFAULT_BATCH_CPU

    @property
    def device(self) -> "torch.device":
        if self._lazy_device is None:
            self._lazy_device = resolve_device(self.device_setting)
        return self._lazy_device

    def load(self) -> "Scorer":
        """Load the model now (otherwise the first embedding call does); returns self."""
        if not self._lazy_loaded:
            self.check()
            self._load(self.device)
            self._lazy_loaded = True
        return self

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of PIL images."""
        return self._embed(list(images), self._embed_image_batch, "images")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of captions."""
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ScorerError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        return self._embed(texts, self._embed_text_batch, "texts")

    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """(N,) cosine similarity of image i with text i, in [-1, 1]."""
        if len(images) != len(texts):
            raise ScorerError(f"score needs as many images as texts, got {len(images)} and {len(texts)}")
        if not len(images):
            return np.zeros(0, dtype=np.float32)
        img = self.embed_images(images)
        txt = self.embed_texts(texts)
        return np.clip(np.einsum("nd,nd->n", img, txt), -1.0, 1.0).astype(np.float32)

    def _embed(self, items: list[Any], fn: Any, what: str) -> np.ndarray:
        torch = import_torch("scoring")
        self.load()
        if not items:
            raise ScorerError(f"nothing to embed: got no {what}")
        out = []
        with torch.inference_mode(), autocast(self.device):
            for chunk in batches(items, self.batch_size):
                emb = fn(chunk).float()
                out.append(torch.nn.functional.normalize(emb, dim=-1).cpu())
        return torch.cat(out).numpy().astype(np.float32, copy=False)
