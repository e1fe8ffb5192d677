"""A scorer for the rsdata baseline dual encoder (a checkpoint file or a ``rsdata train`` run)."""

from __future__ import annotations

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

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        config = getattr(self._lazy_module, "config", None)
        if isinstance(config, dict) and "name" in config:
            info["architecture"] = config["name"]
        return info

    def _embed_image_batch(self, images: Sequence[Image.Image]) -> "torch.Tensor":
        import torch

        model = self._lazy_module
        pixels = torch.stack([model.image_transform(im) for im in images])
        return model.encode_image(pixels.to(self.device).contiguous(memory_format=torch.channels_last))

    def _embed_text_batch(self, texts: Sequence[str]) -> "torch.Tensor":
        return self._lazy_module.encode_text(list(texts))
