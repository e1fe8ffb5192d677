"""Checkpoints of the dual encoder: one ``torch.save`` dict per file, loaded safely.

A checkpoint file holds ``format``, the model ``config``, the model ``state_dict`` and,
when written by the trainer, everything needed to resume (optimizer, scheduler, step, RNG
states, data position). A run directory (``rsdata train --out RUN``) keeps them under
``RUN/checkpoints/`` with ``latest.pt`` always the newest; Hugging Face text towers also keep
their config and tokenizer in ``RUN/text_tower/`` so the run loads without the original dir.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from rsdata.errors import RsdataError
from rsdata.models.dual_encoder import DualEncoder
from rsdata.models.registry import ModelConfigError, get_config, validate_config
from rsdata.atomic import atomic_write_bytes

FORMAT = "rsdata-dual-encoder/1"
LATEST = "latest.pt"
CHECKPOINT_DIR = "checkpoints"
TEXT_ASSETS_DIR = "text_tower"


class CheckpointError(RsdataError):
    """A path is not an rsdata checkpoint (or run directory), or it cannot be read."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint holds another model config than the one asked for."""


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the newest checkpoint of a run directory."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for candidate in (p / CHECKPOINT_DIR / LATEST, p / LATEST):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{p} holds no checkpoint: expected {p / CHECKPOINT_DIR / LATEST} "
                              "(written by `rsdata train --out DIR`) or pass a checkpoint file")
    raise CheckpointError(f"checkpoint {p} not found")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict (tensors on CPU) after checking it is an rsdata checkpoint."""
    file = find_checkpoint(path)
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors have many types
        raise CheckpointError(f"{file} is not a readable rsdata checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{file} is not an rsdata dual-encoder checkpoint (format {found!r}, "
                              f"expected {FORMAT!r}); use a file written by `rsdata train`")
    try:
        validate_config(ckpt["config"], f"the model config stored in {file}")
    except (KeyError, ModelConfigError) as exc:
        raise CheckpointError(f"{file} has no usable model config: {exc}") from None
    ckpt["path"] = str(file)
    return ckpt


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths where two configs differ (``description`` ignored)."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key == "description" and not prefix:
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} != {vb!r}")
    return out


def check_config(ckpt: dict[str, Any], expected: str | dict[str, Any]) -> None:
    """Raise :class:`CheckpointMismatchError` when the checkpoint's config is not ``expected``
    (a model name or a config dict)."""
    want = get_config(expected) if isinstance(expected, str) else expected
    diff = config_differences(ckpt["config"], want)
    if diff:
        raise CheckpointMismatchError(
            f"{ckpt.get('path', 'the checkpoint')} holds model {ckpt['config'].get('name')!r}, not "
            f"{want.get('name')!r}: {'; '.join(diff[:5])}{' ...' if len(diff) > 5 else ''}. Use the "
            "model the checkpoint was trained with, or another output directory")


def model_from_checkpoint(ckpt: dict[str, Any]) -> DualEncoder:
    """Build the checkpoint's model (no pretrained download/load) and load its weights."""
    path = Path(ckpt.get("path", "."))
    run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
    fallback = run_dir / TEXT_ASSETS_DIR
    model = DualEncoder(ckpt["config"], pretrained=False, text_fallback_dir=fallback)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:4]
        raise CheckpointMismatchError(f"the weights in {path} do not fit model {model.name!r} "
                                      f"({' '.join(lines)}); was its config edited?") from None
    return model


def load_checkpoint(path: str | Path, device: str | torch.device | None = None,
                    model: str | dict[str, Any] | None = None) -> DualEncoder:
    """Load a trained dual encoder (eval mode) from a checkpoint file or a run directory.

    ``model``: the model name or config the caller expects; a checkpoint of another config
    raises :class:`CheckpointMismatchError`. ``device`` defaults to CUDA when available.
    """
    ckpt = read_checkpoint(path)
    if model is not None:
        check_config(ckpt, model)
    net = model_from_checkpoint(ckpt)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    return net.to(dev).eval()


def checkpoint_bytes(model: DualEncoder, **extra: Any) -> bytes:
    """The serialised checkpoint of ``model`` plus trainer state in ``extra``."""
    state = {"format": FORMAT, "config": model.config,
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save_checkpoint(path: str | Path, model: DualEncoder, **extra: Any) -> Path:
    """Write ``model`` (and trainer state in ``extra``) to ``path`` atomically."""
    atomic_write_bytes(Path(path), checkpoint_bytes(model, **extra))
    return Path(path)


def save_model_files(run_dir: Path, model: DualEncoder) -> None:
    """Write ``RUN/model_config.json`` (and a text tower's config/tokenizer) once per run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "model_config.json", json.dumps(model.config, indent=2).encode("utf-8"))
    save_assets = getattr(model.text, "save_assets", None)
    if save_assets is not None and not (run_dir / TEXT_ASSETS_DIR / "config.json").exists():
        save_assets(run_dir / TEXT_ASSETS_DIR)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Step checkpoints of a run, oldest first."""
    return sorted((run_dir / CHECKPOINT_DIR).glob("step-*.pt"), key=lambda p: (len(p.name), p.name))


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` step checkpoints (``latest.pt`` is never removed)."""
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        try:
            os.remove(old)
        except FileNotFoundError:
            pass
