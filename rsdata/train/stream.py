"""A deterministic, resumable stream of training batches from tar shards.

The stream is split into *slots*, one per (rank, data-loader worker). Each slot's stream is an
endless sequence of epochs; epoch ``e`` permutes the shards with seed ``(seed, e)``. When there
are at least as many shards as slots, slot ``g`` reads shards ``order[g::slots]`` (every shard
is read by one slot only); with fewer shards every slot reads them all and keeps every
``slots``-th sample. Samples inside a shard are shuffled with seed ``(seed, e, shard)``, and
each sample's augmentation and caption choice come from ``(seed, e, key)``: nothing depends on
timing or on the number of batches already drawn.

Every batch carries the slot's *position* after it (epoch, shard cursor, offset). The trainer
keeps the last position of each slot in its checkpoints; on resume each slot restarts there,
and the data-loader workers are rotated so the batch after step ``s`` comes from the same slot
as in an uninterrupted run: the resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from rsdata.models.preprocess import ImageTransform
from rsdata.train.augment import dihedral, transform_caption
from rsdata.corpus.samples import (
    ShardInfo,
    SampleDataError,
    captions_of,
    check_count,
    image_bytes,
    is_holdout,
    read_shard,
)

Position = tuple[int, int, int]  # (epoch, shard cursor in the slot's list, offset in that shard)
START: Position = (0, 0, 0)


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


def _key_int(key: str) -> int:
    return zlib.crc32(key.encode("utf-8"))


@dataclass
class StreamConfig:
    """Everything that decides the batch sequence (plain values: pickles to workers)."""

    shards: list[ShardInfo]
    batch_size: int
    transform: ImageTransform
    tokenizer: Callable[[list[str]], dict[str, torch.Tensor]]
    seed: int = 0
    augment: bool = True
    caption: str = "random"  # "txt": the primary caption; "random": any caption of the sample
    holdout: float = 0.0  # leave out keys with is_holdout(key, holdout, holdout_seed)
    holdout_seed: int = 0
    exclude: frozenset[str] = frozenset()  # keys never trained on (e.g. a spatially held-out block)
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    rotation: int = 0  # data-loader worker w plays logical worker (w + rotation) % num_workers
    positions: dict[int, Position] = field(default_factory=dict)  # slot -> where it resumes

    @property
    def workers_per_rank(self) -> int:
        return max(self.num_workers, 1)

    @property
    def slots(self) -> int:
        return self.world_size * self.workers_per_rank


class ShardStream(IterableDataset):
    """Yields ready batches: ``{"images": uint8 (B,3,S,S), "tokens": {...}, "keys": [...],
    "slot": int, "position": (epoch, cursor, offset)}``. Use with ``DataLoader(batch_size=None)``."""

    def __init__(self, config: StreamConfig) -> None:
        super().__init__()
        self.cfg = config

    # -- which samples a slot reads ---------------------------------------------------------
    def shard_order(self, slot: int, epoch: int) -> list[int]:
        """Indices of the shards slot ``slot`` reads in ``epoch``, in reading order."""
        order = _rng(self.cfg.seed, epoch).permutation(len(self.cfg.shards)).tolist()
        if len(self.cfg.shards) >= self.cfg.slots:
            return order[slot :: self.cfg.slots]
        return order

    def shard_samples(self, slot: int, epoch: int, shard_index: int) -> list[dict[str, Any]]:
        """The samples of one shard that belong to ``slot`` in ``epoch``, shuffled, held-out removed."""
        info = self.cfg.shards[shard_index]
        samples = read_shard(info)
        check_count(info, samples)
        perm = _rng(self.cfg.seed, epoch, shard_index).permutation(len(samples))
        picked = [samples[i] for i in perm]
        if len(self.cfg.shards) < self.cfg.slots:
            picked = picked[slot :: self.cfg.slots]
        if self.cfg.holdout > 0:
            picked = [s for s in picked
                      if not is_holdout(s["__key__"], self.cfg.holdout, self.cfg.holdout_seed)]
        if self.cfg.exclude:
            picked = [s for s in picked if s["__key__"] not in self.cfg.exclude]
        return picked

    def samples(self, slot: int, start: Position = START
                ) -> Iterator[tuple[dict[str, Any], int, str, Position]]:
        """Endless ``(sample, epoch, shard path, position after it)`` for one slot, from ``start``."""
        epoch, cursor, offset = start
        while True:
            order = self.shard_order(slot, epoch)
            produced = False
            for c in range(cursor, len(order)):
                picked = self.shard_samples(slot, epoch, order[c])
                path = self.cfg.shards[order[c]].path
                for i in range(offset if c == cursor else 0, len(picked)):
                    produced = True
                    nxt: Position = (epoch, c, i + 1) if i + 1 < len(picked) else (epoch, c + 1, 0)
                    yield picked[i], epoch, path, nxt
            if not produced and cursor == 0 and offset == 0:
                raise SampleDataError(
                    f"data slot {slot} (of {self.cfg.slots}: ranks x workers) gets no training samples "
                    f"from {len(self.cfg.shards)} shard(s); use fewer --workers or more data"
                    + (", or hold out fewer keys" if self.cfg.holdout or self.cfg.exclude else ""))
            epoch, cursor, offset = epoch + 1, 0, 0

    # -- turning samples into tensors -------------------------------------------------------
    def prepare(self, sample: dict[str, Any], epoch: int, shard: str) -> tuple[torch.Tensor, str]:
        key = sample["__key__"]
        captions = captions_of(sample, shard, all_captions=self.cfg.caption == "random")
        rng = _rng(self.cfg.seed, epoch, _key_int(key))
        text = captions[int(rng.integers(len(captions)))] if len(captions) > 1 else captions[0]
        try:
            image = self.cfg.transform.decode(image_bytes(sample, shard))
        except (OSError, ValueError) as exc:
            raise SampleDataError(f"cannot decode the image of sample {key!r} in {shard}: {exc}") from None
        if self.cfg.augment:
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            image = dihedral(image, k, flip)
            text = transform_caption(text, k, flip)
        return image, text

    def slot_batches(self, slot: int) -> Iterator[dict[str, Any]]:
        start = self.cfg.positions.get(slot, START)
        images: list[torch.Tensor] = []
        texts: list[str] = []
        keys: list[str] = []
        for sample, epoch, path, pos in self.samples(slot, start):
            image, text = self.prepare(sample, epoch, path)
            images.append(image)
            texts.append(text)
            keys.append(sample["__key__"])
            if len(images) == self.cfg.batch_size:
                yield {"images": torch.stack(images), "tokens": self.cfg.tokenizer(texts), "texts": texts,
                       "keys": keys, "slot": slot, "position": pos, "epoch": epoch}
                images, texts, keys = [], [], []

    def current_slot(self) -> int:
        info = get_worker_info()
        w = 0 if info is None else info.id
        logical = (w + self.cfg.rotation) % self.cfg.workers_per_rank
        return self.cfg.rank * self.cfg.workers_per_rank + logical

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if get_worker_info() is not None:
            torch.set_num_threads(1)  # workers decode; the main process computes
        return self.slot_batches(self.current_slot())


def slot_of_step(step: int, rank: int, workers_per_rank: int) -> int:
    """The slot whose batch a rank trains on at (0-based) step ``step``."""
    return rank * workers_per_rank + step % workers_per_rank
