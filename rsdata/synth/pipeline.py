"""``LayoutDiffusionPipeline``: rsdata's own layout-conditioned diffusers pipeline.

A ``UNet2DModel`` whose input is the noisy RGB image with the layout's one-hot class channels
concatenated, and a DDIM scheduler
(trained as DDPM: any diffusers scheduler with the same config can sample). It saves and loads
like any diffusers pipeline (``save_pretrained`` / ``LayoutDiffusionPipeline.from_pretrained``);
``rsdata_synth.json`` next to ``model_index.json`` records the layout class map, image size and
GSD, and what it was trained on.

``patch_size`` p (a pipeline config value, in ``model_index.json``): the image and the layout
are folded p x p pixels into channels (``pixel_unshuffle``) before the UNet and unfolded after,
so the UNet sees ``(3 + N_CLASSES) * p * p`` channels at 1/p of the resolution and predicts
``3 * p * p``; with p = 2 a step costs about a quarter as much, which is what makes a CPU run of
minutes useful (a fixed, lossless "autoencoder"). p = 1 is the plain concatenation.

Noise is drawn per image from its own ``torch.Generator`` on the CPU (then moved to the
device), and DDIM with ``eta = 0`` adds no noise while sampling, so an image depends on its seed
and layout only (not on the batch it was generated in, up to floating-point kernels).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel

from rsdata.synth.layouts import N_CLASSES, one_hot


class LayoutDiffusionPipeline(DiffusionPipeline):
    """Layout (class map) -> RGB image."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: Any, patch_size: int = 1) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(patch_size=int(patch_size))

    @property
    def patch(self) -> int:
        return int(getattr(self.config, "patch_size", 1) or 1)

    @property
    def layout_channels(self) -> int:
        cfg = self.unet.config
        return (cfg.in_channels - cfg.out_channels) // (self.patch ** 2)

    @property
    def downscale(self) -> int:
        return self.patch * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def conditioning(self, layouts: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, H, W) class maps or (B, C, H, W) one-hot channels -> the model's conditioning tensor."""
        if isinstance(layouts, torch.Tensor):
            cond = layouts
        else:
            arr = np.asarray(layouts)
            cond = torch.from_numpy(one_hot(arr.astype(np.uint8)) if arr.ndim == 3 else arr.astype(np.float32))
        if cond.ndim != 4 or cond.shape[1] != self.layout_channels:
            raise ValueError(f"layout conditioning of shape {tuple(cond.shape)} does not fit a model "
                             f"with {self.layout_channels} layout channels")
        return cond

    @torch.no_grad()
    def __call__(self, layout: np.ndarray | torch.Tensor, num_inference_steps: int = 25,
                 generator: torch.Generator | list[torch.Generator] | None = None, eta: float = 1.0,
                 output_type: str = "np", return_dict: bool = True) -> Any:
        device = self.unet.device
        dtype = self.unet.dtype
        cond = self.conditioning(layout).to(device=device, dtype=dtype)
        b, _, h, w = cond.shape
        if h % self.downscale or w % self.downscale:
            raise ValueError(f"image size {w} x {h} must be a multiple of {self.downscale} for this UNet")
        gens = generator if isinstance(generator, list) else [generator] * b
        if len(gens) != b:
            raise ValueError(f"{len(gens)} generators for {b} layouts")
        p = self.patch
        noise = torch.stack([torch.randn((3, h, w), generator=g, dtype=torch.float32) for g in gens])
        x = fold(noise, p).to(device=device, dtype=dtype) * float(getattr(self.scheduler, "init_noise_sigma", 1.0))
        cond = fold(cond, p)
        self.scheduler.set_timesteps(num_inference_steps)
        params = inspect.signature(self.scheduler.step).parameters
        extra: dict[str, Any] = {}
        if "eta" in params:
            extra["eta"] = eta
        # stochastic steps draw their noise per sample from that sample's own generator, so an
        # image depends on its seed only, never on the batch it was generated in
        per_sample = "variance_noise" in params and eta > 0
        if not per_sample and "generator" in params and gens[0] is not None:
            extra["generator"] = gens[0]
        for t in self.progress_bar(self.scheduler.timesteps):
            scaled = self.scheduler.scale_model_input(x, t) if hasattr(self.scheduler, "scale_model_input") else x
            model_in = torch.cat([scaled, cond], dim=1)
            out = self.unet(model_in, t).sample
            if per_sample:
                step_noise = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=torch.float32)
                                          for g in gens]).to(device=device, dtype=dtype)
                extra["variance_noise"] = step_noise
            x = self.scheduler.step(out, t, x, **extra).prev_sample
        images = ((unfold(x.float(), p).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        images = images.cpu().numpy()
        if output_type == "pil":
            from PIL import Image

            images = [Image.fromarray(im) for im in images]
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def fold(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C*p*p, H/p, W/p) (``pixel_unshuffle``; identity for p = 1)."""
    return x if p == 1 else torch.nn.functional.pixel_unshuffle(x, p)


def unfold(x: torch.Tensor, p: int) -> torch.Tensor:
    return x if p == 1 else torch.nn.functional.pixel_shuffle(x, p)


def new_unet(size: int, channels: tuple[int, ...] = (64, 128, 128), layers_per_block: int = 1,
             attention: tuple[bool, ...] = (False, False, True), patch: int = 2) -> UNet2DModel:
    """The default small UNet: (RGB + layout channels) * patch^2 in, RGB * patch^2 out."""
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    return UNet2DModel(sample_size=size // patch, in_channels=(3 + N_CLASSES) * patch * patch,
                       out_channels=3 * patch * patch,
                       layers_per_block=layers_per_block, block_out_channels=channels,
                       down_block_types=down, up_block_types=up, norm_num_groups=8,
                       attention_head_dim=32)
