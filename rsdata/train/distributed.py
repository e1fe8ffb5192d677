"""Multi-process training under ``torchrun``: process group set-up and feature gathering."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment (NCCL on CUDA, gloo on
    CPU); a plain ``python``/``rsdata`` process is a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(rank=rank, local_rank=local, world_size=world)


def gather_features(image: torch.Tensor, text: torch.Tensor,
                    info: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' embeddings, so every rank's loss sees the global batch as negatives.

    Gradients flow back to each rank's own slice (``torch.distributed.nn.all_gather``).
    """
    if not info.enabled:
        return image, text
    from torch.distributed.nn import all_gather

    return torch.cat(all_gather(image), dim=0), torch.cat(all_gather(text), dim=0)


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
