"""A scorer for Hugging Face ``CLIPModel`` checkpoints in a local directory.

RemoteCLIP / GeoRSCLIP-style weights converted to the Hugging Face layout load here: the
directory holds ``config.json`` (``model_type: clip``), the weights (``model.safetensors`` or
``pytorch_model.bin``), the tokenizer files and, normally, ``preprocessor_config.json``.
Nothing is downloaded: only that directory is read. Without torchvision, transformers uses its
PIL-based image processor. For the standard CLIP preprocessing (shortest-edge resize, centre
crop, rescale, normalise) :class:`ClipPixels` computes the same numbers split in two: uint8
crops in the background loader, the arithmetic vectorised on the model's device. It is used
only when it reproduces the processor bit for bit on probe images at load time, otherwise the
processor runs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
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


@dataclass(frozen=True)
class ClipPixels:
    """CLIP's eval preprocessing split in two, with transformers' PIL-backend arithmetic:

    * :meth:`crop` (CPU, in the loader): resize the shortest edge with PIL (the processor's
      resample, its rounding of the long edge), centre-crop -> ``(B, 3, H, W)`` uint8;
    * :meth:`normalize` (on the model's device): ``float64 * rescale_factor -> float32``, then
      ``(x - mean) / std`` in float32, elementwise, as ``image_transforms.rescale / normalize``.

    uint8 batches are a quarter of the bytes to move, and the arithmetic runs vectorised in
    torch instead of per image in numpy.
    """

    shortest_edge: int
    crop_size: tuple[int, int]  # (height, width)
    resample: int
    rescale_factor: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_processor(cls, processor: Any) -> "ClipPixels | None":
        """The split preprocessing for ``processor``, or None when it is configured otherwise
        (padding, a longest edge, no crop, ...) and only the processor itself may run."""
        get = lambda name: getattr(processor, name, None)  # noqa: E731
        size, crop = get("size"), get("crop_size")
        edge = _size_field(size, "shortest_edge")
        crop_hw = (_size_field(crop, "height"), _size_field(crop, "width"))
        mean, std = get("image_mean"), get("image_std")
        standard = (get("do_resize") is True and get("do_center_crop") is True and get("do_rescale") is True
                    and get("do_normalize") is True and not get("do_pad") and edge is not None
                    and _size_field(size, "longest_edge") is None and None not in crop_hw
                    and isinstance(get("resample"), int) and isinstance(get("rescale_factor"), float)
                    and isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple))
                    and len(mean) == 3 and len(std) == 3)
        if not standard:
            return None
        return cls(int(edge), (int(crop_hw[0]), int(crop_hw[1])),  # type: ignore[arg-type]
                   int(get("resample")), float(get("rescale_factor")),
                   tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the shortest-edge resize, rounded as transformers rounds."""
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)
        return (self.shortest_edge, new_long) if width <= height else (new_long, self.shortest_edge)

    def crop(self, images: Sequence[Image.Image]) -> "torch.Tensor | None":
        """(B, 3, H, W) uint8 of RGB images; None when an image is smaller than the crop after
        resizing (the processor pads those: let it)."""
        import torch

        ch, cw = self.crop_size
        crops = []
        for im in images:
            w, h = self.resized_size(*im.size)
            top, left = (h - ch) // 2, (w - cw) // 2
            if top < 0 or left < 0:
                return None
            crops.append(np.asarray(im.resize((w, h), resample=self.resample))[top:top + ch, left:left + cw])
        return torch.from_numpy(np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2)))

    def normalize(self, pixels: "torch.Tensor") -> "torch.Tensor":
        """uint8 (B, 3, H, W) -> the processor's float32 pixel values, on ``pixels``' device."""
        import torch

        x = (pixels.to(torch.float64) * self.rescale_factor).to(torch.float32)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(3, 1, 1)
        return x.sub_(mean).div_(std)


def _size_field(size: Any, name: str) -> Any:
    if size is None:
        return None
    value = size.get(name) if isinstance(size, dict) else getattr(size, name, None)
    return value if value else None


def probe_images() -> list[Image.Image]:
    """Small seeded RGB images of several shapes (square, wide, tall, odd sizes)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            for h, w in ((256, 256), (201, 317), (333, 250), (97, 97))]


def fast_pixels(processor: Any) -> ClipPixels | None:
    """:class:`ClipPixels` for ``processor`` when crop + normalize give exactly the processor's
    output on the probe images, else None (then the processor prepares every batch)."""
    fast = ClipPixels.from_processor(processor)
    if fast is None:
        return None
    try:
        for im in probe_images():
            crop = fast.crop([im])
            theirs = processor(images=[im], return_tensors="pt")["pixel_values"]
            if crop is None:
                return None
            mine = fast.normalize(crop)
            if mine.shape != theirs.shape or mine.dtype != theirs.dtype or not bool((mine == theirs).all()):
                return None
    except Exception:  # noqa: BLE001 - any surprise: use the processor
        return None
    return fast


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
        self._lazy_fast_pixels = fast_pixels(processor)
        self._lazy_max_len = int(model.config.text_config.max_position_embeddings)
        # a fast (Rust) tokenizer called from two threads at once fails ("Already borrowed"):
        # loader threads take turns
        self._lazy_tokenizer_lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self._lazy_loaded:
            info["preprocess"] = "rsdata ClipPixels" if self._lazy_fast_pixels is not None \
                else type(self._lazy_processor).__name__
        return info

    def _prepare_image_batch(self, images: Sequence[Image.Image]) -> "torch.Tensor":
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        if self._lazy_fast_pixels is not None:
            pixels = self._lazy_fast_pixels.crop(rgb)  # uint8: normalised on the device
            if pixels is not None:
                return pixels
        return self._lazy_processor(images=rgb, return_tensors="pt")["pixel_values"]

    def _prepare_text_batch(self, texts: Sequence[str]) -> dict[str, "torch.Tensor"]:
        with self._lazy_tokenizer_lock:
            tokens = self._lazy_tokenizer(list(texts), padding=True, truncation=True,
                                          max_length=self._lazy_max_len, return_tensors="pt")
        return {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")}

    def _forward_images(self, prepared: "torch.Tensor") -> "torch.Tensor":
        import torch

        if prepared.dtype == torch.uint8:  # from ClipPixels.crop
            prepared = self._lazy_fast_pixels.normalize(prepared)
        return _features(self._lazy_model.get_image_features(pixel_values=prepared))

    def _forward_texts(self, prepared: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        return _features(self._lazy_model.get_text_features(**prepared))
