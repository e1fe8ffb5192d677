"""A scorer for the rsdata baseline dual encoder (a checkpoint file or a ``rsdata train`` run)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from rsdata.scoring.base import Scorer, ScorerError

if TYPE_CHECKING:  # pragma: no cover
    import torch


class BaselineScorer(Scorer):
    """Scores with a trained rsdata dual encoder (``--scorer baseline --model RUN``).

    ``model`` is a checkpoint file or a run directory (its newest checkpoint is used). A model
    object that follows the dual-encoder API (``image_transform``, ``encode_image``,
    ``encode_text``) can be given as ``module`` instead, e.g. one already in memory.
    """

    kind = "baseline"

    def __init__(self, model: str, name: str | None = None, batch_size: int | None = None,
                 device: str = "auto", module: Any = None) -> None:
        super().__init__(model, name=name, batch_size=batch_size, device=device)
        self.in_memory = module is not None  # given a model object: no checkpoint file to read
        self._lazy_module = module

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._lazy_module = None

    def _checkpoint_file(self) -> Path:
        from rsdata.models import find_checkpoint

        return find_checkpoint(self.model_path)

    def check(self) -> None:
        if self.in_memory:
            return
        from rsdata.models import CheckpointError

        try:
            self._checkpoint_file()
        except CheckpointError as exc:
            raise ScorerError(f"baseline scorer: {exc}") from None

    def input_files(self) -> list[Path]:
        return [] if self.in_memory else [self._checkpoint_file()]

    def _load(self, device: "torch.device") -> None:
        import torch

        if self.in_memory:
            if self._lazy_module is None:
                raise ScorerError("a baseline scorer made from a model object cannot be unpickled "
                                  "without it; give the checkpoint path instead")
            module = self._lazy_module
        else:
            from rsdata.models import load_checkpoint

            module = load_checkpoint(self.model_path, device=device)
        # NHWC convolutions run faster on CPU (oneDNN) and on GPU tensor cores; same results
        self._lazy_module = module.to(device).eval().to(memory_format=torch.channels_last)
        # a Hugging Face text tower's fast tokenizer fails when two loader threads call it at
        # once ("Already borrowed"): they take turns
        self._lazy_tokenize_lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        config = getattr(self._lazy_module, "config", None)
        if isinstance(config, dict) and "name" in config:
            info["architecture"] = config["name"]
        return info

    def _uint8_transform(self) -> Any:
        """The model's split preprocessing (``to_uint8`` + ``normalize``), or None for a model
        object that only has ``image_transform``."""
        transform = getattr(self._lazy_module, "preprocess", None)
        if hasattr(transform, "to_uint8") and hasattr(transform, "normalize"):
            return transform
        return None

    def _prepare_image_batch(self, images: Sequence[Image.Image]) -> "torch.Tensor":
        """(B, 3, S, S) uint8 pixels, resized as ``ImageTransform.to_uint8`` resizes (4x less to
        move than floats; normalised on the device with ``image_transform``'s arithmetic). The
        layout change is done in numpy: a torch op in a loader thread would start a second
        OpenMP team competing with the model's."""
        import numpy as np
        import torch

        transform = self._uint8_transform()
        if transform is None:
            return torch.stack([self._lazy_module.image_transform(im) for im in images])
        size = (transform.size, transform.size)
        arrays = []
        for im in images:
            im = im if im.mode == "RGB" else im.convert("RGB")
            arrays.append(np.asarray(im if im.size == size else im.resize(size, Image.Resampling.BILINEAR)))
        return torch.from_numpy(np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2)))

    def _prepare_text_batch(self, texts: Sequence[str]) -> Any:
        tokenize = getattr(self._lazy_module, "tokenize", None)
        if tokenize is None or not hasattr(self._lazy_module, "encode_tokens"):
            return list(texts)  # a model object that only has encode_text: it tokenises itself
        with self._lazy_tokenize_lock:
            return tokenize(list(texts))

    def _forward_images(self, prepared: "torch.Tensor") -> "torch.Tensor":
        import torch

        transform = self._uint8_transform()
        pixels = transform.normalize(prepared) if transform is not None and prepared.dtype == torch.uint8 \
            else prepared
        return self._lazy_module.encode_image(pixels.contiguous(memory_format=torch.channels_last))

    def _forward_texts(self, prepared: Any) -> "torch.Tensor":
        if isinstance(prepared, list):  # a model object without tokenize / encode_tokens
            return self._lazy_module.encode_text(prepared)
        return self._lazy_module.encode_tokens(prepared)
