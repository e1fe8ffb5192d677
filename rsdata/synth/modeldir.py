"""What a model directory holds, read without loading any weights (so a recipe's mistakes are
reported in the driver, before anything is written), and its one digest.

A model directory is a diffusers pipeline saved with ``save_pretrained`` (``model_index.json``
names the pipeline class and its components). rsdata's own ``LayoutDiffusionPipeline``
(``rsdata train-synth``) adds ``rsdata_synth.json``: the layout class map, image size, GSD and
what it was trained on.

Kinds: ``layout`` (rsdata's pipeline: layout channels concatenated to the noisy image),
``controlnet`` (a ControlNet pipeline: the layout rendered in palette colours is its control
image, plus a text prompt), ``text`` (a text-to-image pipeline: tokenizer + text encoder, e.g.
Stable Diffusion) and ``unconditional``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsdata.errors import InputError
from rsdata.synth.layouts import CLASSES, LAYOUT_VERSION, N_CLASSES, check_layout_classes

LAYOUT_PIPELINE = "LayoutDiffusionPipeline"
META_FILE = "rsdata_synth.json"
IMAGE_CHANNELS = 3


@dataclass(frozen=True)
class ModelDir:
    path: Path
    class_name: str
    components: dict[str, Any]
    kind: str
    layout_channels: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def takes_text(self) -> bool:
        return self.kind in ("text", "controlnet")

    @property
    def takes_layout(self) -> bool:
        return self.kind in ("layout", "controlnet")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{what} {path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {path} is not a JSON object")
    return data


def read_model_dir(path: Path) -> ModelDir:
    """Describe a diffusers pipeline directory; a directory that is not one is an error that says
    what to point ``model:`` at."""
    if not path.exists():
        raise InputError(f"model directory {path} does not exist (source.model, relative to the recipe "
                         "file); train one with `rsdata train-synth CORPUS --out DIR` or point model: at "
                         "a diffusers pipeline saved with save_pretrained")
    if not path.is_dir():
        raise InputError(f"model {path} is a file; point model: at a diffusers pipeline directory "
                         "(the one holding model_index.json)")
    index = path / "model_index.json"
    if not index.is_file():
        inner = sorted(p.parent.name for p in path.glob("*/model_index.json"))
        hint = f" (it has one in {', '.join(inner)}/: point model: there)" if inner else ""
        raise InputError(f"{path} is not a diffusers pipeline directory: it has no model_index.json"
                         f"{hint}. Point model: at a directory written by a pipeline's save_pretrained "
                         "or by `rsdata train-synth CORPUS --out DIR` (single checkpoint files such as "
                         ".safetensors/.ckpt need converting with diffusers' conversion scripts first)")
    data = _read_json(index, "model index")
    class_name = data.get("_class_name")
    if not isinstance(class_name, str):
        raise InputError(f"{index} has no _class_name: not a diffusers model_index.json")
    components = {k: v for k, v in data.items() if not k.startswith("_") and isinstance(v, list)}
    meta = _read_json(path / META_FILE, "rsdata model metadata") if (path / META_FILE).is_file() else {}
    if class_name == LAYOUT_PIPELINE:
        unet_cfg = path / "unet" / "config.json"
        if not unet_cfg.is_file():
            raise InputError(f"{path}: a {LAYOUT_PIPELINE} needs unet/config.json; the directory is "
                             "incomplete (train it again with rsdata train-synth)")
        cfg = _read_json(unet_cfg, "UNet config")
        patch = int(data.get("patch_size", 1) or 1)
        channels = (int(cfg.get("in_channels", 0)) - int(cfg.get("out_channels", IMAGE_CHANNELS))) // patch ** 2
        return ModelDir(path, class_name, components, "layout", channels, meta)
    if "controlnet" in components:
        return ModelDir(path, class_name, components, "controlnet", None, meta)
    if "text_encoder" in components or "tokenizer" in components:
        return ModelDir(path, class_name, components, "text", None, meta)
    return ModelDir(path, class_name, components, "unconditional", None, meta)


def check_conditioning(model: ModelDir, conditioning: str, where: str) -> None:
    """Refuse a pipeline that cannot take what the recipe gives it, naming the fix."""
    if conditioning == "layout":
        if model.kind == "text":
            raise InputError(
                f"{where}: the pipeline {model.class_name} in {model.path} takes text prompts, not "
                "layouts. Set conditioning: text (prompts from prompt:, e.g. '{subjects}' or "
                "'{caption}'), or point model: at a layout-conditioned pipeline (rsdata train-synth "
                "CORPUS --out DIR, or a ControlNet pipeline)")
        if model.kind == "unconditional":
            raise InputError(
                f"{where}: the pipeline {model.class_name} in {model.path} takes no conditioning at "
                "all, so it cannot follow layouts; point model: at a layout-conditioned pipeline "
                "(rsdata train-synth CORPUS --out DIR)")
        if model.kind == "layout":
            if model.layout_channels != N_CLASSES:
                raise InputError(
                    f"{where}: the model in {model.path} conditions on {model.layout_channels} layout "
                    f"channel(s) ((unet in_channels - out_channels) / patch_size^2), but the layout class map "
                    f"{LAYOUT_VERSION} has {N_CLASSES} ({', '.join(CLASSES)}). Retrain it on this "
                    "version's layouts: rsdata train-synth CORPUS --out DIR")
            classes = model.meta.get("layout", {}).get("classes")
            if classes is not None:
                check_layout_classes(classes, f"{where}: the model in {model.path}")
    elif conditioning == "text":
        if model.kind == "layout":
            raise InputError(
                f"{where}: the pipeline {model.class_name} in {model.path} takes layouts, not text "
                "prompts; set conditioning: layout (or point model: at a text-to-image pipeline)")
        if model.kind == "unconditional":
            raise InputError(f"{where}: the pipeline {model.class_name} in {model.path} takes no text "
                             "prompts; point model: at a text-to-image pipeline")
    else:
        raise InputError(f"{where}: conditioning must be layout or text, not {conditioning!r}")


def model_files(path: Path) -> list[Path]:
    """The files that make the model: every regular file under ``path`` except hidden ones (and
    those in hidden folders: ``rsdata train-synth`` keeps checkpoints in ``.rsdata-train/``)."""
    out = []
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if f.is_file():
            out.append(f)
    return out


def dir_digest(path: Path) -> tuple[str, int, int]:
    """One sha256 for a model directory: over ``"{relative path} {file sha256}\\n"`` of every
    model file (see :func:`model_files`) in sorted order. Returns (digest, bytes, files)."""
    from rsdata.inputs import sha256_file

    digest = hashlib.sha256()
    total = 0
    files = model_files(path)
    for f in files:
        digest.update(f"{f.relative_to(path).as_posix()} {sha256_file(f)}\n".encode())
        total += f.stat().st_size
    return digest.hexdigest(), total, len(files)
