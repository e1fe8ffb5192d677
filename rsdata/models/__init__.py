"""The baseline dual encoder: model configs, towers, checkpoints (library, no training loop).

    from rsdata.models import list_models, create_model, load_checkpoint
    model = create_model("rs-cnn-small")            # random init (pretrained text tower if any)
    model = load_checkpoint("runs/baseline")         # a run directory or a checkpoint file
    img = model.image_transform(pil_image)[None]     # (1, 3, S, S)
    sim = model.encode_image(img) @ model.encode_text(["an aerial image of a farm"]).T

Configs are JSON files (``rsdata/models/configs``; add your own through the
``RSDATA_MODEL_CONFIGS`` environment variable or :func:`register_config`). Needs torch
(``pip install 'rsdata[train]'``).
"""

from __future__ import annotations

from typing import Any

from rsdata.errors import MissingDependencyError

try:
    import torch  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("torch", "train", "the dual encoder (rsdata.models)") from None

from rsdata.models.checkpoint import (  # noqa: E402
    CheckpointError,
    CheckpointMismatchError,
    find_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from rsdata.models.dual_encoder import DualEncoder, clip_loss  # noqa: E402
from rsdata.models.preprocess import ImageTransform  # noqa: E402
from rsdata.models.registry import (  # noqa: E402
    ModelConfigError,
    get_config,
    list_models,
    register_config,
)
from rsdata.models.text_tower import TextTowerError  # noqa: E402


def create_model(name: str, pretrained: bool = True, **overrides: Any) -> DualEncoder:
    """A new dual encoder from config ``name`` (or a ``.json`` path) with ``overrides``.

    Overrides are top-level config keys; dict values merge into sections, e.g.
    ``create_model("rs-cnn-tiny", image={"size": 64})``. ``pretrained=False`` skips loading
    pretrained text-tower weights (the architecture is still read from its directory).
    """
    return DualEncoder(get_config(name, **overrides), pretrained=pretrained)


__all__ = [
    "CheckpointError", "CheckpointMismatchError", "DualEncoder", "ImageTransform", "ModelConfigError",
    "TextTowerError", "clip_loss", "create_model", "find_checkpoint", "get_config", "list_models",
    "load_checkpoint", "read_checkpoint", "register_config", "save_checkpoint",
]
