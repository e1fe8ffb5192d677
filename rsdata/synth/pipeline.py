"""``LayoutDiffusionPipeline``: rsdata's own layout-conditioned diffusers pipeline.

A ``UNet2DModel`` whose input is the noisy RGB image with the layout's one-hot class channels
concatenated (``in_channels = 3 + N_CLASSES``, ``out_channels = 3``), and a DDIM scheduler
(trained as DDPM: any diffusers scheduler with the same config can sample). It saves and loads
like any diffusers pipeline (``save_pretrained`` / ``LayoutDiffusionPipeline.from_pretrained``);
``rsdata_synth.json`` next to ``model_index.json`` records the layout class map, image size and
GSD, and what it was trained on.

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

    def __init__(self, unet: UNet2DModel, scheduler: Any) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def conditioning(self, layouts: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, H, W) class maps or (B, C, H, W) one-hot channels -> the model's conditioning tensor."""
        if isinstance(layouts, torch.Tensor):
            cond = layouts
        else:
            arr = np.asarray(layouts)
            cond = torch.from_numpy(one_hot(arr.astype(np.uint8)) if arr.ndim == 3 else arr.astype(np.float32))
        if cond.ndim != 4 or cond.shape[1] != self.unet.config.in_channels - self.unet.config.out_channels:
            raise ValueError(f"layout conditioning of shape {tuple(cond.shape)} does not fit a model "
                             f"with {self.unet.config.in_channels - self.unet.config.out_channels} "
                             "layout channels")
        return cond

    @torch.no_grad()
    def __call__(self, layout: np.ndarray | torch.Tensor, num_inference_steps: int = 25,
                 generator: torch.Generator | list[torch.Generator] | None = None, eta: float = 0.0,
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
        channels = self.unet.config.out_channels
        noise = torch.stack([torch.randn((channels, h, w), generator=g, dtype=torch.float32)
                             for g in gens])
        x = noise.to(device=device, dtype=dtype) * float(getattr(self.scheduler, "init_noise_sigma", 1.0))
        self.scheduler.set_timesteps(num_inference_steps)
        params = inspect.signature(self.scheduler.step).parameters
        extra: dict[str, Any] = {}
        if "eta" in params:
            extra["eta"] = eta
        if "generator" in params and gens[0] is not None:
            extra["generator"] = gens[0]
        for t in self.progress_bar(self.scheduler.timesteps):
            scaled = self.scheduler.scale_model_input(x, t) if hasattr(self.scheduler, "scale_model_input") else x
            model_in = torch.cat([scaled, cond], dim=1)
            out = self.unet(model_in, t).sample
            x = self.scheduler.step(out, t, x, **extra).prev_sample
        images = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        images = images.cpu().numpy()
        if output_type == "pil":
            from PIL import Image

            images = [Image.fromarray(im) for im in images]
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def new_unet(size: int, channels: tuple[int, ...] = (32, 64, 128, 128), layers_per_block: int = 1,
             attention: tuple[bool, ...] = (False, False, False, True)) -> UNet2DModel:
    """The default small UNet: RGB + layout channels in, RGB out."""
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    return UNet2DModel(sample_size=size, in_channels=3 + N_CLASSES, out_channels=3,
                       layers_per_block=layers_per_block, block_out_channels=channels,
                       down_block_types=down, up_block_types=up, norm_num_groups=8,
                       attention_head_dim=32)
