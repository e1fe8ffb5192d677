"""Turn layouts and prompts into images with a diffusers pipeline loaded from a local directory.

A :class:`SceneGenerator` pickles as settings only; the pipeline is loaded lazily, once per
worker process, on the device the settings resolve to (CUDA + float16 when ``auto`` finds a GPU,
else the CPU in float32). Every image has its own ``torch.Generator`` seeded with its seed, so
an image depends on its seed and inputs, not on the other images of its batch.
"""

from __future__ import annotations

import inspect
import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from rsdata.errors import InputError, MissingDependencyError
from rsdata.synth.layouts import colorize
from rsdata.synth.modeldir import LAYOUT_PIPELINE


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "synth", "the synthetic source") from None
    return bool(torch.cuda.is_available())


def resolve_device(device: str, where: str) -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu; ``cuda`` without one is an error."""
    if device == "cuda" and not cuda_available():
        raise InputError(
            f"{where}: device: cuda, but torch sees no CUDA device (torch.cuda.is_available() is "
            "False: a CPU build of torch, no GPU, or CUDA_VISIBLE_DEVICES hides it). Set device: auto "
            "(CUDA when present, else the CPU) or device: cpu, or install a CUDA build of torch")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return device


def resolve_dtype(precision: str, device: str, where: str) -> str:
    if precision == "auto":
        return "float16" if device == "cuda" else "float32"
    if precision == "float16" and device == "cpu":
        raise InputError(f"{where}: precision: float16 on the CPU is unsupported by many kernels and "
                         "slow; use precision: auto or float32 on the CPU")
    return precision


def check_scheduler(name: str | None, where: str) -> None:
    if name is None:
        return
    try:
        import diffusers
    except ImportError:
        raise MissingDependencyError("diffusers", "synth", "the synthetic source") from None
    cls = getattr(diffusers, name, None)
    if cls is None or not name.endswith("Scheduler") or not hasattr(cls, "from_config"):
        raise InputError(f"{where}: scheduler {name!r} is not a diffusers scheduler class (e.g. "
                         "DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, "
                         "EulerDiscreteScheduler); null keeps the pipeline's own")


@dataclass
class Request:
    """One image to make."""

    key: str
    seed: int
    width: int
    height: int
    layout: np.ndarray | None = None  # (H, W) uint8 class map
    prompt: str | None = None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


class SceneGenerator:
    """A diffusers pipeline directory, loaded on first use."""

    def __init__(self, model_dir: str, kind: str, class_name: str, conditioning: str, device: str,
                 dtype: str, steps: int, guidance_scale: float | None, negative_prompt: str | None,
                 scheduler: str | None) -> None:
        self.model_dir = model_dir
        self.kind = kind
        self.class_name = class_name
        self.conditioning = conditioning
        self.device = device
        self.dtype = dtype
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.negative_prompt = negative_prompt
        self.scheduler = scheduler
        self._lazy_pipe: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_lazy")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lazy_pipe = None

    # -- loading ----------------------------------------------------------------------------------
    def pipe(self) -> Any:
        if self._lazy_pipe is None:
            self._lazy_pipe = self._load()
        return self._lazy_pipe

    def _load(self) -> Any:
        try:
            import diffusers
            import torch
        except ImportError as exc:
            raise MissingDependencyError(exc.name or "diffusers", "synth", "the synthetic source") from None
        dtype = getattr(torch, self.dtype)
        diffusers.utils.logging.disable_progress_bar()  # "Loading pipeline components" bars
        try:
            # float32 is what from_pretrained makes; other dtypes are loaded as such (modules a
            # pipeline keeps in float32 stay so), not cast afterwards
            kwargs: dict[str, Any] = {"local_files_only": True}
            if dtype != torch.float32:
                kwargs["torch_dtype"] = dtype
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
                if self.class_name == LAYOUT_PIPELINE:
                    from rsdata.synth.pipeline import LayoutDiffusionPipeline

                    pipe = LayoutDiffusionPipeline.from_pretrained(self.model_dir, **kwargs)
                else:
                    pipe = diffusers.DiffusionPipeline.from_pretrained(self.model_dir, **kwargs)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
            raise InputError(f"cannot load the diffusers pipeline in {self.model_dir}: "
                             f"{type(exc).__name__}: {str(exc)[:400]}. Check that it was saved with "
                             "save_pretrained (or rsdata train-synth) by a compatible diffusers "
                             f"(installed: {diffusers.__version__})") from None
        if self.scheduler:
            pipe.scheduler = getattr(diffusers, self.scheduler).from_config(pipe.scheduler.config)
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # -- what the json records --------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """The pipeline's part of the generation record (loads the pipeline)."""
        import diffusers

        pipe = self.pipe()
        guidance = self.guidance_scale
        if guidance is None and self.kind != "layout":
            param = inspect.signature(pipe.__call__).parameters.get("guidance_scale")
            guidance = param.default if param is not None and param.default is not inspect._empty else None
        sched = pipe.scheduler
        eta = inspect.signature(pipe.__call__).parameters.get("eta")
        return {
            "pipeline": type(pipe).__name__, "steps": self.steps,
            "eta": eta.default if eta is not None and eta.default is not inspect._empty else None,
            "guidance_scale": guidance, "negative_prompt": self.negative_prompt,
            "scheduler": {"class": type(sched).__name__, "config": _jsonable(dict(sched.config))},
            "device": self.device, "dtype": self.dtype, "diffusers": diffusers.__version__,
        }

    # -- generation -------------------------------------------------------------------------------
    def generate(self, requests: list[Request]) -> list[np.ndarray]:
        """(H, W, 3) uint8 images, one per request (all of one size)."""
        import torch

        if not requests:
            return []
        sizes = {(r.width, r.height) for r in requests}
        if len(sizes) != 1:
            raise ValueError(f"one batch, one size: got {sorted(sizes)}")
        width, height = sizes.pop()
        pipe = self.pipe()
        gens = [torch.Generator().manual_seed(int(r.seed)) for r in requests]
        if self.kind == "layout":
            layouts = np.stack([r.layout for r in requests])
            out = pipe(layouts, num_inference_steps=self.steps, generator=gens).images
            return [np.asarray(im, np.uint8) for im in out]
        kwargs: dict[str, Any] = {"prompt": [r.prompt or "" for r in requests],
                                  "num_inference_steps": self.steps, "generator": gens,
                                  "height": height, "width": width, "output_type": "np"}
        if self.guidance_scale is not None:
            kwargs["guidance_scale"] = self.guidance_scale
        if self.negative_prompt:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(requests)
        if self.kind == "controlnet":
            from PIL import Image

            kwargs["image"] = [Image.fromarray(colorize(r.layout)) for r in requests]
        with torch.inference_mode():
            out = pipe(**kwargs).images
        arr = np.asarray(out, dtype=np.float32)
        return [np.clip(np.round(im * 255.0), 0, 255).astype(np.uint8) for im in arr]
