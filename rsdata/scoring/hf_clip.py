"""A scorer for Hugging Face ``CLIPModel`` checkpoints in a local directory.

RemoteCLIP / GeoRSCLIP-style weights converted to the Hugging Face layout load here: the
directory holds ``config.json`` (``model_type: clip``), the weights (``model.safetensors`` or
``pytorch_model.bin``), the tokenizer files and, normally, ``preprocessor_config.json``.
Nothing is downloaded: only that directory is read. Without torchvision, transformers uses its
PIL-based image processor, which is what runs here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from rsdata.errors import MissingDependencyError
from rsdata.scoring.base import Scorer, ScorerError

if TYPE_CHECKING:  # pragma: no cover
    import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
PREPROCESSOR_FILE = "preprocessor_config.json"


def check_clip_dir(path: Path) -> dict[str, Any]:
    """Check that ``path`` holds a Hugging Face CLIP model; return its ``config.json``."""
    if not path.exists():
        raise ScorerError(f"hf_clip scorer: {path} does not exist; pass the directory a CLIPModel "
                          "was saved to (model.save_pretrained(DIR) plus the processor)")
    if not path.is_dir():
        raise ScorerError(f"hf_clip scorer: {path} is a file; pass the directory a CLIPModel was "
                          "saved to (it holds config.json and model.safetensors)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ScorerError(f"hf_clip scorer: {path} has no config.json, so it is not a Hugging Face "
                          "model directory; save the model with CLIPModel.save_pretrained(DIR)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScorerError(f"hf_clip scorer: cannot read {config_file} ({exc})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "clip":
        raise ScorerError(
            f"hf_clip scorer: {path} is not a CLIP model: its config.json says model_type "
            f"{model_type!r}, the hf_clip scorer needs 'clip' (a CLIPModel with both towers). "
            "For an rsdata checkpoint use the 'baseline' scorer instead")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ScorerError(f"hf_clip scorer: {path} has a CLIP config.json but no weights "
                          f"(expected one of {', '.join(WEIGHT_FILES)})")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ScorerError(f"hf_clip scorer: {path} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); "
                          "save the tokenizer next to the model (tokenizer.save_pretrained(DIR))")
    return config


def _image_processor_class(transformers: Any) -> Any:
    # transformers 5 names its PIL backend explicitly (using it avoids a torchvision warning)
    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def _features(out: Any) -> "torch.Tensor":
    """``get_*_features`` returns a tensor (transformers 4) or an output whose pooler_output
    holds the projected features (transformers 5)."""
    return out if hasattr(out, "dim") else out.pooler_output


class HFClipScorer(Scorer):
    """Scores with a local Hugging Face ``CLIPModel`` directory (``--scorer hf_clip --model DIR``)."""

    kind = "hf_clip"

    def check(self) -> None:
        check_clip_dir(Path(self.model_path))

    def input_files(self) -> list[Path]:
        """The files that define this model (config, weights, tokenizer, preprocessor)."""
        root = Path(self.model_path)
        names = ("config.json",) + WEIGHT_FILES + TOKENIZER_FILES + ("merges.txt", PREPROCESSOR_FILE)
        return [root / n for n in names if (root / n).is_file()]

    def _load(self, device: "torch.device") -> None:
        try:
            import transformers
        except ImportError:  # pragma: no cover - depends on the environment
            raise MissingDependencyError("transformers", "train", "the hf_clip scorer") from None
        root = Path(self.model_path)
        try:
            model = transformers.CLIPModel.from_pretrained(str(root))
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(root))
        except Exception as exc:  # noqa: BLE001 - loaders raise many types (safetensors, json, torch)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ScorerError(f"hf_clip scorer: cannot load the CLIP model in {root} ({first}); check "
                              "that the directory holds a complete CLIPModel save") from None
        processor_cls = _image_processor_class(transformers)
        if (root / PREPROCESSOR_FILE).is_file():
            processor = processor_cls.from_pretrained(str(root))
        else:  # the CLIP defaults at the model's input size
            size = int(model.config.vision_config.image_size)
            processor = processor_cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        self._lazy_model = model.to(device).eval()
        self._lazy_tokenizer = tokenizer
        self._lazy_processor = processor
        self._lazy_max_len = int(model.config.text_config.max_position_embeddings)

    def _embed_image_batch(self, images: Sequence[Image.Image]) -> "torch.Tensor":
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        pixels = self._lazy_processor(images=rgb, return_tensors="pt")["pixel_values"]
        return _features(self._lazy_model.get_image_features(pixel_values=pixels.to(self.device)))

    def _embed_text_batch(self, texts: Sequence[str]) -> "torch.Tensor":
        tokens = self._lazy_tokenizer(list(texts), padding=True, truncation=True,
                                      max_length=self._lazy_max_len, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()
                  if k in ("input_ids", "attention_mask")}
        return _features(self._lazy_model.get_text_features(**tokens))
