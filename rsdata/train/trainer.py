"""The training loop of the baseline dual encoder (kept apart from the model library).

``train(TrainConfig(...))`` streams batches from shards (:mod:`rsdata.train.stream`), optimises
the symmetric InfoNCE loss with AdamW and a cosine schedule with warmup, logs to
``RUN/log.jsonl`` and a progress bar, and checkpoints to ``RUN/checkpoints/`` every N steps.
``resume=True`` continues a run from ``latest.pt`` exactly: model, optimizer, scheduler, AMP
scaler, step, RNG states and every data slot's position are restored, so the resumed run trains
on the very batches an uninterrupted one would have. Mixed precision and ``torch.compile`` are
used on CUDA only; under ``torchrun`` it trains with DDP (shards split by rank and worker,
embeddings gathered across ranks so each loss sees the global batch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from rsdata.errors import RsdataError
from rsdata.models import DualEncoder, clip_loss
from rsdata.models.checkpoint import (
    CHECKPOINT_DIR,
    LATEST,
    TEXT_ASSETS_DIR,
    check_config,
    checkpoint_bytes,
    prune_checkpoints,
    read_checkpoint,
    save_model_files,
)
from rsdata.models.registry import get_config
from rsdata.corpus.samples import (
    ShardInfo,
    SampleDataError,
    is_holdout,
    list_shards,
    read_key_file,
    read_shard,
)
from rsdata.train.distributed import (
    DistInfo,
    barrier,
    cleanup,
    gather_features,
    gather_objects,
    init_distributed,
)
from rsdata.train.optim import build_optimizer, build_scheduler
from rsdata.train.stream import Position, ShardStream, StreamConfig, slot_of_step
from rsdata.atomic import atomic_write_bytes

LOG_FILE = "log.jsonl"
ARGS_FILE = "train_args.json"


class TrainError(RsdataError):
    """Training cannot start or continue as asked (existing run, mismatched resume, ...)."""


@dataclass
class TrainConfig:
    """Every setting of a training run (``rsdata train`` maps its options onto these)."""

    data: list[str]
    out: str
    model: str = "rs-cnn-small"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None  # total optimizer steps of the schedule
    epochs: float | None = None  # ... or passes over the training samples (converted to steps)
    batch_size: int = 64  # per rank
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup: int | None = None  # default: 5% of the steps
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    workers: int = 2
    seed: int = 0
    augment: bool = True
    caption: str = "random"
    holdout: float = 0.0
    holdout_seed: int = 0
    exclude_keys: str | None = None  # a file of keys to leave out of training (one per line)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: bool = False
    stop_after: int | None = None  # end this invocation after this many steps (resume later)
    device: str | None = None
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (mixed precision on CUDA only)
    compile: str = "auto"  # auto | on | off (torch.compile on CUDA only)
    threads: int | None = None  # CPU threads of each training process (default: cores left by workers)
    progress: bool = True

    def stream_signature(self, shards: list[ShardInfo], world_size: int,
                         exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        """What fixes the batch sequence: a resume must match it to be exact."""
        excluded = (hashlib.sha256("\n".join(sorted(exclude)).encode("utf-8")).hexdigest()
                    if exclude else None)
        return {"shards": [[s.path, s.nsamples] for s in shards], "batch_size": self.batch_size,
                "workers": self.workers, "world_size": world_size, "seed": self.seed,
                "augment": self.augment, "caption": self.caption, "holdout": self.holdout,
                "holdout_seed": self.holdout_seed, "excluded_keys": excluded}


# -- small helpers ------------------------------------------------------------------------------
def count_training_samples(shards: list[ShardInfo], holdout: float, seed: int,
                           exclude: frozenset[str] = frozenset()) -> int:
    """Samples left for training (reads only tar headers when keys are held out)."""
    if holdout <= 0 and not exclude:
        return sum(s.nsamples for s in shards)
    return sum(1 for s in shards for x in read_shard(s, read_data=False)
               if not is_holdout(x["__key__"], holdout, seed) and x["__key__"] not in exclude)


def rng_state() -> dict[str, Any]:
    """Global RNG states as plain lists and tensors (a ``weights_only`` checkpoint can hold them)."""
    np_state = np.random.get_state(legacy=False)
    numpy_state = {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"]),
                   "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])}
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                             "python_version": random.getstate()[0], "numpy": numpy_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    saved = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np.asarray(saved["key"], dtype=np.uint32), "pos": saved["pos"]},
                         "has_gauss": saved["has_gauss"], "gauss": saved["gauss"]})
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all(state["cuda"])


def pick_device(cfg: TrainConfig, info: DistInfo) -> torch.device:
    if cfg.device:
        return torch.device(cfg.device)
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def cpu_threads(cfg: TrainConfig, info: DistInfo) -> int:
    """Threads for the training step on a CPU: the cores the data workers and the other local
    ranks leave free. Oversubscribing cores makes OpenMP threads spin against each other (on a
    busy 2-core machine, 2 threads next to 1 worker made a step 4x slower than 1 thread)."""
    if cfg.threads:
        return cfg.threads
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 1
    return max(1, cores // local_world - cfg.workers)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.precision == "fp32":
        return None
    if cfg.precision == "fp16":
        return torch.float16
    if cfg.precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _unwrap_worker_error(exc: RsdataError) -> RsdataError:
    """DataLoader re-raises worker errors with the worker traceback in the message: keep the
    original one-line message."""
    text = str(exc)
    marker = f"{type(exc).__name__}: "
    if "Original Traceback" in text and marker in text:
        return type(exc)(text.rsplit(marker, 1)[1].strip())
    return exc


class _StopOnInterrupt:
    """Turns the first Ctrl-C (SIGINT) into a request to stop after the current step, so the
    run can checkpoint a consistent state; a second Ctrl-C interrupts at once. Only in the main
    thread of a single-process run (DDP ranks must stop together; torchrun handles signals)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopOnInterrupt":
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)


class _Window:
    """Loss, time and throughput accumulated between two log lines."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.samples, self.steps = 0, 0
        self.data_s = self.compute_s = self.loss = self.lr = 0.0

    def add(self, samples: int, data_s: float, compute_s: float, loss: float, lr: float) -> None:
        self.samples += samples
        self.steps += 1
        self.data_s += data_s
        self.compute_s += compute_s
        self.loss += loss
        self.lr = lr

    def entry(self, step: int, total: int, epoch: float, logit_scale: float) -> dict[str, Any]:
        elapsed = max(time.perf_counter() - self.t, 1e-9)
        return {"step": step, "total_steps": total, "epoch": round(epoch, 4),
                "loss": self.loss / max(self.steps, 1), "lr": self.lr, "logit_scale": logit_scale,
                "samples_per_s": self.samples / elapsed, "data_s": self.data_s,
                "compute_s": self.compute_s, "steps": self.steps}


# -- the run ------------------------------------------------------------------------------------
class Trainer:
    """One training run; ``run()`` returns a summary dict."""

    def __init__(self, cfg: TrainConfig) -> None:
        if cfg.steps is None and cfg.epochs is None:
            raise TrainError("say how long to train: --steps N or --epochs E")
        if cfg.caption not in ("txt", "random"):
            raise TrainError(f"caption must be 'txt' or 'random', not {cfg.caption!r}")
        if not 0 <= cfg.holdout < 1:
            raise TrainError(f"--holdout must be in [0, 1), got {cfg.holdout}")
        self.cfg = cfg
        self.run_dir = Path(cfg.out)
        self.device = torch.device("cpu")
        self.info = DistInfo()
        self.exclude = read_key_file(cfg.exclude_keys) if cfg.exclude_keys else frozenset()

    # set-up ------------------------------------------------------------------------------
    def _check_run_dir(self) -> dict[str, Any] | None:
        latest = self.run_dir / CHECKPOINT_DIR / LATEST
        if self.cfg.resume:
            if not latest.is_file():
                raise TrainError(f"--resume: {latest} does not exist; start the run without --resume")
            return read_checkpoint(latest)
        if latest.exists():
            raise TrainError(f"{self.run_dir} already holds a training run; pass --resume to continue it "
                             "or choose another --out")
        return None

    def _total_steps(self, shards: list[ShardInfo]) -> tuple[int, int]:
        n_train = count_training_samples(shards, self.cfg.holdout, self.cfg.holdout_seed, self.exclude)
        if n_train == 0:
            raise SampleDataError("no training samples are left (all held out?)")
        if self.cfg.steps is not None:
            return int(self.cfg.steps), n_train
        global_batch = self.cfg.batch_size * self.info.world_size
        return max(1, math.ceil(float(self.cfg.epochs or 0) * n_train / global_batch)), n_train

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        wanted = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.info = info = init_distributed("cuda" if wanted.startswith("cuda") else "cpu")
        threads = torch.get_num_threads()
        try:
            return self._run(info)
        finally:
            torch.set_num_threads(threads)  # an in-process run must not change the caller's setting
            cleanup(info)

    def _run(self, info: DistInfo) -> dict[str, Any]:
        cfg = self.cfg
        self.device = device = pick_device(cfg, info)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(cpu_threads(cfg, info))
        ckpt = self._check_run_dir()
        shards = list_shards(cfg.data)
        total, n_train = self._total_steps(shards)
        signature = cfg.stream_signature(shards, info.world_size, self.exclude)

        torch.manual_seed(cfg.seed)
        model_config = get_config(cfg.model, **cfg.model_overrides)
        if ckpt is not None:
            check_config(ckpt, model_config)
            if ckpt["data"]["signature"] != signature:
                diff = [k for k in signature if ckpt["data"]["signature"].get(k) != signature[k]]
                raise TrainError(f"cannot resume {self.run_dir} exactly: these settings differ from the "
                                 f"checkpoint's: {', '.join(diff)}. Use the same data and settings, or "
                                 "start a new run in another --out")
        model = DualEncoder(model_config, pretrained=ckpt is None,
                            text_fallback_dir=self.run_dir / TEXT_ASSETS_DIR)
        if ckpt is not None:
            model.load_state_dict(ckpt["state_dict"])
        model.to(device)
        if info.is_main:
            save_model_files(self.run_dir, model)
            if ckpt is None:
                args = dataclasses.asdict(cfg) | {"total_steps": total, "train_samples": n_train,
                                                  "world_size": info.world_size}
                atomic_write_bytes(self.run_dir / ARGS_FILE, json.dumps(args, indent=2).encode("utf-8"))

        warmup = cfg.warmup if cfg.warmup is not None else max(1, int(0.05 * total))
        optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
        scheduler = build_scheduler(optimizer, min(warmup, total), total, cfg.min_lr_ratio)
        dtype = amp_dtype(cfg, device)
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        start_step, positions, samples_seen = 0, {}, 0
        if ckpt is not None:
            start_step, positions, samples_seen = self._restore(ckpt, optimizer, scheduler, scaler)
        else:
            torch.manual_seed(cfg.seed + info.rank)

        net: torch.nn.Module = model
        use_compile = device.type == "cuda" and cfg.compile != "off"
        if use_compile:
            net = torch.compile(net)  # type: ignore[assignment]
        if info.enabled:
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)

        end_step = total if cfg.stop_after is None else min(total, start_step + cfg.stop_after)
        stream = ShardStream(StreamConfig(
            shards=shards, batch_size=cfg.batch_size, transform=model.preprocess, tokenizer=model.tokenizer,
            seed=cfg.seed, augment=cfg.augment, caption=cfg.caption, holdout=cfg.holdout,
            holdout_seed=cfg.holdout_seed, exclude=self.exclude, rank=info.rank, world_size=info.world_size,
            num_workers=cfg.workers, rotation=start_step % max(cfg.workers, 1), positions=positions))
        loader = torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=cfg.workers, pin_memory=device.type == "cuda",
            prefetch_factor=4 if cfg.workers > 0 else None, persistent_workers=False)

        state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler,
                 "signature": signature, "positions": positions}
        log = (self.run_dir / LOG_FILE).open("a", encoding="utf-8") if info.is_main else None
        bar = None
        if info.is_main and cfg.progress:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                       file=sys.stderr)
        if log is not None:
            log.write(json.dumps({"event": "start", "step": start_step, "total_steps": total,
                                  "train_samples": n_train, "model": model.name, "device": str(device),
                                  "world_size": info.world_size, "amp": str(dtype) if dtype else None,
                                  "threads": torch.get_num_threads(), "workers": cfg.workers,
                                  "compile": use_compile, "resumed": ckpt is not None}) + "\n")
            log.flush()
        step = start_step
        losses: list[float] = []
        window = _Window()
        batches: Iterator[dict[str, Any]] = iter(loader)
        stop = _StopOnInterrupt(enabled=not info.enabled)
        try:
            with stop:
                while step < end_step:
                    t0 = time.perf_counter()
                    try:
                        batch = next(batches)
                    except RsdataError as exc:
                        raise _unwrap_worker_error(exc) from None
                    t1 = time.perf_counter()
                    expected = slot_of_step(step, info.rank, max(cfg.workers, 1))
                    if batch["slot"] != expected:  # the worker rotation is what makes resume exact
                        raise RuntimeError(f"batch from data slot {batch['slot']} at step {step}, "
                                           f"expected slot {expected}")
                    lr = float(optimizer.param_groups[0]["lr"])  # the rate this step uses
                    loss = self._step(net, model, batch, optimizer, scheduler, scaler, dtype)
                    positions[int(batch["slot"])] = tuple(batch["position"])
                    step += 1
                    n = len(batch["keys"]) * info.world_size
                    samples_seen += n
                    losses.append(loss)
                    window.add(n, t1 - t0, time.perf_counter() - t1, loss, lr)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                    last = step == end_step or stop.requested
                    if log is not None and (step % cfg.log_every == 0 or last):
                        scale = float(model.scale().detach())
                        entry = window.entry(step, total, samples_seen / n_train, scale)
                        log.write(json.dumps(entry) + "\n")
                        log.flush()
                        window = _Window()
                    if step % cfg.checkpoint_every == 0 or last:
                        self._checkpoint(step, samples_seen, state)
                    if stop.requested:  # Ctrl-C: stopped cleanly after a checkpointed step
                        raise KeyboardInterrupt
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
            del batches
        return {"run_dir": str(self.run_dir), "step": step, "total_steps": total, "train_samples": n_train,
                "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                "losses": losses, "device": str(device), "finished": step >= total}

    def _restore(self, ckpt: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any,
                 scaler: torch.amp.GradScaler) -> tuple[int, dict[int, Position], int]:
        """Load trainer state from a checkpoint; returns (step, slot positions, samples seen)."""
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"][self.info.rank])
        positions = {int(k): tuple(v) for k, v in ckpt["data"]["positions"].items()}
        return int(ckpt["step"]), positions, int(ckpt.get("samples_seen", 0))  # type: ignore[misc]

    # one optimisation step -------------------------------------------------------------------
    def _step(self, net: torch.nn.Module, model: DualEncoder, batch: dict[str, Any],
              optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
              dtype: torch.dtype | None) -> float:
        device = self.device
        images = model.preprocess.normalize(batch["images"].to(device, non_blocking=True))
        tokens = {k: v.to(device, non_blocking=True) for k, v in batch["tokens"].items()}
        autocast = (torch.autocast(device_type="cuda", dtype=dtype) if dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            image_emb, text_emb, scale = net(images, tokens)
        image_emb, text_emb = gather_features(image_emb.float(), text_emb.float(), self.info)
        loss = clip_loss(image_emb, text_emb, scale.float())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        return float(loss.detach())

    def _checkpoint(self, step: int, samples_seen: int, state: dict[str, Any]) -> None:
        info = self.info
        rngs = gather_objects(rng_state(), info)
        all_positions = gather_objects(dict(state["positions"]), info)
        positions: dict[int, Position] = {}
        for p in all_positions:
            positions.update(p)
        if info.is_main:
            ckpt_dir = self.run_dir / CHECKPOINT_DIR
            extra = {"step": step, "samples_seen": samples_seen,
                     "optimizer": state["optimizer"].state_dict(),
                     "scheduler": state["scheduler"].state_dict(), "scaler": state["scaler"].state_dict(),
                     "rng": rngs, "data": {"signature": state["signature"],
                                          "positions": {str(k): list(v) for k, v in positions.items()}},
                     "train_args": dataclasses.asdict(self.cfg)}
            data = checkpoint_bytes(state["model"], **extra)
            atomic_write_bytes(ckpt_dir / f"step-{step:08d}.pt", data)
            atomic_write_bytes(ckpt_dir / LATEST, data)
            prune_checkpoints(self.run_dir, self.cfg.keep_checkpoints)
        barrier(info)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training; returns a summary with the per-step losses of this invocation."""
    return Trainer(cfg).run()
