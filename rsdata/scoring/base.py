"""The scorer interface: embed images and texts into one space, score pairs by cosine.

Every implementation (the rsdata baseline checkpoint, a Hugging Face ``CLIPModel`` directory)
says how to *prepare* one batch (CPU work: resize, normalise, tokenise) and how to *forward*
a prepared batch through its model; this base class does the rest the same way for all:

* the model is loaded lazily, once, on first use (so a scorer pickles to a worker as plain
  settings and loads its model there);
* inputs are cut into batches of ``batch_size``; inference runs under ``torch.inference_mode``
  on CUDA with float16 autocast when a GPU is there (``device="auto"``), else on the CPU in
  float32;
* embeddings come back as L2-normalised float32 numpy arrays; :meth:`Scorer.score` is the
  cosine similarity of each (image, text) pair;
* preparing and forwarding are separate steps (:meth:`Scorer.prepare_pairs`,
  :meth:`Scorer.score_prepared`) so a background loader (:mod:`rsdata.scoring.loader`) can
  prepare the next batches while the model runs on this one. Both steps together compute
  exactly what :meth:`Scorer.score` computes on the same batch.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from rsdata.errors import MissingDependencyError, RsdataError

if TYPE_CHECKING:  # pragma: no cover
    import torch

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
DEVICES = ("auto", "cpu", "cuda")
# benchmarks/bench_scoring.py prints the model's forward throughput on prepared tensors at batch
# sizes 1..64. On the 2-vCPU reference machine the best CPU batch depends on the model (224 px
# CNN: 4-8, 128 px CNN: 32-64, CLIP ViT-B/32 layout: 8-32) and 16 is within 25% of each best.
# 16 stays the default: a different batch size changes scores in the last float bits, and
# stored scores of existing recipes stay byte-identical. Set batch_size per model for speed.
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


def amp_dtype(device: "torch.device") -> "torch.dtype | None":
    """The autocast dtype on ``device``: float16 on CUDA (11 significant bits against bfloat16's
    8, and CLIP-style models run in float16 without overflow: OpenAI CLIP ships float16
    weights), ``None`` (float32, no autocast) on the CPU."""
    torch = import_torch("scoring")
    return torch.float16 if device.type == "cuda" else None


def autocast(device: "torch.device") -> contextlib.AbstractContextManager[Any]:
    """Mixed precision (float16) on CUDA; nothing on the CPU."""
    torch = import_torch("scoring")
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def to_device(value: Any, device: "torch.device") -> Any:
    """Tensors (alone, or the values of a dict) moved to ``device``; anything else unchanged.
    Copies from pinned memory to CUDA do not block the host."""
    if hasattr(value, "to") and hasattr(value, "dim"):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def pin(value: Any) -> Any:
    """Tensors (alone or in a dict) in page-locked memory, for asynchronous copies to CUDA."""
    if hasattr(value, "pin_memory") and hasattr(value, "dim"):
        return value.pin_memory()
    if isinstance(value, dict):
        return {k: pin(v) for k, v in value.items()}
    return value


@dataclass
class PreparedBatch:
    """Pairs ready for the model: what :meth:`Scorer.prepare_pairs` makes on the CPU (in a
    background loader) and :meth:`Scorer.score_prepared` runs through the model.

    ``images`` and ``texts`` are whatever the scorer's model takes (tensors, a dict of token
    tensors), in host memory (pinned when the scorer runs on CUDA)."""

    keys: list[str]
    images: Any
    texts: Any

    def __len__(self) -> int:
        return len(self.keys)


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

    Subclasses set ``kind`` and implement :meth:`_load`, the CPU-side
    :meth:`_prepare_image_batch` / :meth:`_prepare_text_batch` and the model-side
    :meth:`_forward_images` / :meth:`_forward_texts`; they never need to batch, normalise
    embeddings, move tensors or pick a device.
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
    def _prepare_image_batch(self, images: Sequence[Image.Image]) -> Any:
        """CPU work on at most ``batch_size`` RGB images: what :meth:`_forward_images` takes
        (resized, maybe normalised pixels). Runs in a loader thread: no model state changes."""

    @abstractmethod
    def _prepare_text_batch(self, texts: Sequence[str]) -> Any:
        """CPU work on at most ``batch_size`` captions: what :meth:`_forward_texts` takes
        (token tensors). Runs in a loader thread: no model state changes."""

    @abstractmethod
    def _forward_images(self, prepared: Any) -> "torch.Tensor":
        """(B, D) image embeddings (any norm) of a prepared batch already on the device."""

    @abstractmethod
    def _forward_texts(self, prepared: Any) -> "torch.Tensor":
        """(B, D) text embeddings (any norm) of a prepared batch already on the device."""

    def describe(self) -> dict[str, Any]:
        """Facts for manifests and reports: kind, name, model path, device."""
        return {"kind": self.kind, "name": self.name, "model": self.model_path,
                "batch_size": self.batch_size, "device": str(self.device)}

    # -- the interface -----------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """The batch size given, else 64 on CUDA and 16 on the CPU (see ``DEFAULT_BATCH_CPU``)."""
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
        return self._embed(list(images), self._prepare_image_batch, self._forward_images, "images")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of captions."""
        texts = _check_texts(list(texts))
        return self._embed(texts, self._prepare_text_batch, self._forward_texts, "texts")

    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """(N,) cosine similarity of image i with text i, in [-1, 1]."""
        if len(images) != len(texts):
            raise ScorerError(f"score needs as many images as texts, got {len(images)} and {len(texts)}")
        if not len(images):
            return np.zeros(0, dtype=np.float32)
        images, texts = list(images), _check_texts(list(texts))
        self.load()
        keys = [f"item {i}" for i in range(len(images))]
        return np.concatenate([
            self.score_prepared(self.prepare_pairs(keys[s:s + self.batch_size], images[s:s + self.batch_size],
                                                   texts[s:s + self.batch_size]))
            for s in range(0, len(images), self.batch_size)])

    # -- the two halves of score(), for a background loader -----------------------------------
    def prepare_pairs(self, keys: Sequence[str], images: Sequence[Image.Image],
                      texts: Sequence[str]) -> PreparedBatch:
        """CPU work for one batch of (image, caption) pairs (resize, normalise, tokenise), safe
        to run in a loader thread once the scorer is loaded (call :meth:`load` first). An
        error names the sample (``keys[i]``) it came from."""
        if not (len(keys) == len(images) == len(texts)):
            raise ScorerError(f"prepare_pairs needs as many keys, images and texts, got {len(keys)}, "
                              f"{len(images)} and {len(texts)}")
        if not self._lazy_loaded:
            raise ScorerError("prepare_pairs runs after the model is loaded: call scorer.load() first "
                              "(in the thread that owns the scorer)")
        texts = _check_texts(list(texts))
        batch = PreparedBatch(list(keys), _per_item(self._prepare_image_batch, list(images), keys, "image"),
                              _per_item(self._prepare_text_batch, texts, keys, "caption"))
        if self.device.type == "cuda":
            batch.images, batch.texts = pin(batch.images), pin(batch.texts)
        return batch

    def score_prepared(self, batch: PreparedBatch) -> np.ndarray:
        """(B,) cosine of each prepared pair: the model's forward pass (both towers) only."""
        torch = import_torch("scoring")
        self.load()
        if not len(batch):
            return np.zeros(0, dtype=np.float32)
        normalize = torch.nn.functional.normalize
        with torch.inference_mode(), autocast(self.device):
            img = normalize(self._forward_images(to_device(batch.images, self.device)).float(), dim=-1)
            txt = normalize(self._forward_texts(to_device(batch.texts, self.device)).float(), dim=-1)
            img, txt = img.cpu().numpy(), txt.cpu().numpy()
        return np.clip(np.einsum("nd,nd->n", img, txt), -1.0, 1.0).astype(np.float32)

    def _embed(self, items: list[Any], prepare: Callable[[Any], Any], forward: Callable[[Any], Any],
               what: str) -> np.ndarray:
        torch = import_torch("scoring")
        self.load()
        if not items:
            raise ScorerError(f"nothing to embed: got no {what}")
        out = []
        with torch.inference_mode(), autocast(self.device):
            for chunk in batches(items, self.batch_size):
                emb = forward(to_device(prepare(chunk), self.device)).float()
                out.append(torch.nn.functional.normalize(emb, dim=-1).cpu())
        return torch.cat(out).numpy().astype(np.float32, copy=False)


def _check_texts(texts: list[Any]) -> list[str]:
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ScorerError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    return texts


def _per_item(fn: Callable[[list[Any]], Any], items: list[Any], keys: Sequence[str], what: str) -> Any:
    """``fn(items)``; when it fails, find the first item that fails alone and name its key."""
    try:
        return fn(items)
    except Exception as exc:  # noqa: BLE001 - processors and tokenizers raise many types
        if isinstance(exc, RsdataError) and any(k in str(exc) for k in keys):
            raise
        for key, item in zip(keys, items):
            try:
                fn([item])
            except Exception as single:  # noqa: BLE001
                raise ScorerError(f"sample {key}: its {what} cannot be prepared for the model "
                                  f"({type(single).__name__}: {single})") from single
        raise ScorerError(f"samples {keys[0]}..{keys[-1]}: the batch's {what}s cannot be prepared "
                          f"for the model ({type(exc).__name__}: {exc})") from exc
