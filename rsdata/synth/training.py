"""``rsdata train-synth``: train the small layout-conditioned diffusion model on a corpus.

Data: every real sample of the corpus (synthetic ones are skipped) with its layout
(``layout.png``, else rasterized from ``osm.objects``), read once through the corpus reader
(sha256-checked while streaming), resampled to the training GSD and kept in memory as uint8.
Each step takes random ``size``-pixel crops with a random flip / right-angle rotation (overhead
imagery has no "up"), the same for the image and its layout.

Model: :func:`rsdata.synth.pipeline.new_unet` (a diffusers ``UNet2DModel``; its input is the
noisy image with the layout's one-hot channels concatenated), DDPM training with a cosine noise
schedule (epsilon or v prediction), AdamW with warmup and cosine decay, gradient clipping, an
EMA of the weights (the EMA is what is saved). On CUDA it runs in bf16 autocast.

Exact resume: every batch (tiles, crops, flips, noise, timesteps) is a pure function of the
seed and the step, and the checkpoint (``OUT/.rsdata-train/checkpoint.pt``: model, EMA,
optimizer, step, config, data fingerprint) holds everything else, so a run stopped
(``--stop-after``, Ctrl-C, or killed after a checkpoint) and resumed reaches the same weights as
an uninterrupted one. Resuming with another model config or other data is refused; ``--steps``
may be raised to extend a run. ``OUT/.rsdata-train/log.jsonl`` gets the loss curve.

Output: ``OUT`` is a diffusers pipeline directory (``model_index.json``, ``unet/``,
``scheduler/``) plus ``rsdata_synth.json``; it is rewritten at every checkpoint, so a killed run
still leaves a usable model. The ``synthetic`` source loads it (``model: OUT``).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsdata.errors import InputError, UsageError
from rsdata.synth.layouts import CLASSES, LAYOUT_MEMBER, LAYOUT_VERSION, decode_png, one_hot, resize_nearest
from rsdata.synth.modeldir import LAYOUT_PIPELINE, META_FILE

TRAIN_DIR = ".rsdata-train"
CHECKPOINT = "checkpoint.pt"
FORMAT = "rsdata-train-synth-v1"


@dataclass(frozen=True)
class TrainConfig:
    """What decides the model and its training (a resume must match it, except ``steps``)."""

    size: int = 64
    gsd: float | None = None  # training GSD; None: the corpus tiles' own
    batch_size: int = 16
    lr: float = 3e-4
    warmup: int = 50
    seed: int = 0
    channels: tuple[int, ...] = (64, 128, 128)
    layers_per_block: int = 1
    attention: tuple[bool, ...] = (False, False, True)
    patch: int = 2
    timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction: str = "v_prediction"
    ema_decay: float = 0.995

    def model_part(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@dataclass
class Pool:
    """The training tiles in memory: images (N, H, W, 3) uint8 and layouts (N, H, W) uint8."""

    images: list[np.ndarray]
    layouts: list[np.ndarray]
    gsd: float
    fingerprint: dict[str, Any]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


def _decode_rgb(data: bytes, what: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise InputError(f"{what}: cannot decode the image ({exc})") from None


def _resample(image: np.ndarray, layout: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    if abs(scale - 1.0) < 1e-6:
        return image, layout
    h, w = layout.shape
    nw, nh = max(1, round(w / scale)), max(1, round(h / scale))
    img = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BOX if scale > 1
                                                   else Image.Resampling.BICUBIC))
    return img, resize_nearest(layout, nw, nh)


def tile_with_layout(entry: Any, meta: dict[str, Any], corpus_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """A corpus entry's RGB image and its layout (``layout.png``, else rasterized from
    ``osm.objects``) at the image's size; a clear error when the sample has neither."""
    from rsdata.synth.layout_stage import layout_of

    key = entry.key
    if LAYOUT_MEMBER in entry.members:
        layout = decode_png(entry.members[LAYOUT_MEMBER], f"{key}.{LAYOUT_MEMBER} in {entry.shard}")
    elif isinstance(meta.get("osm"), dict) and "objects" in meta["osm"]:
        layout = layout_of(meta, key)
    else:
        raise InputError(
            f"sample {key} of {corpus_dir} has no {LAYOUT_MEMBER} and no osm.objects, so there is "
            "no layout for it. Make a corpus with layouts first: a recipe with an osm_join "
            "stage followed by `- type: layout` (see pipelines/synth-layouts.yaml), or an "
            "existing corpus run through a recipe with source: {type: corpus, path: ...} and "
            "those two stages")
    image = _decode_rgb(entry.image(), f"sample {key}")
    if image.shape[:2] != layout.shape:
        layout = resize_nearest(layout, image.shape[1], image.shape[0])
    return image, layout


def load_pool(corpus_dir: Path, size: int, gsd: float | None, max_tiles: int | None = None,
              verify: bool = True, exclude: frozenset[str] = frozenset()) -> Pool:
    """Read a corpus's real tiles and layouts (see the module docstring); keys in ``exclude``
    are left out (held-out tiles, e.g. a region kept for ``rsdata eval-synth``)."""
    from rsdata.corpus.reader import Corpus
    from rsdata.corpus.samples import is_synthetic

    corpus = Corpus(corpus_dir, verify=verify)
    images, layouts = [], []
    skipped: dict[str, int] = {}
    gsds: list[float] = []
    target = gsd
    for entry in corpus.entries():
        meta = entry.meta()
        key = entry.key
        if is_synthetic(meta):
            skipped["synthetic"] = skipped.get("synthetic", 0) + 1
            continue
        if key in exclude:
            skipped["excluded"] = skipped.get("excluded", 0) + 1
            continue
        image, layout = tile_with_layout(entry, meta, corpus_dir)
        tile_gsd = float((meta.get("geo") or {}).get("gsd_m") or 0) or None
        if target is None:
            target = tile_gsd or 1.0
        scale = (target / tile_gsd) if tile_gsd else 1.0
        image, layout = _resample(image, layout, scale)
        if min(layout.shape) < size:
            skipped["smaller_than_size"] = skipped.get("smaller_than_size", 0) + 1
            continue
        images.append(np.ascontiguousarray(image))
        layouts.append(np.ascontiguousarray(layout))
        if tile_gsd:
            gsds.append(tile_gsd)
        if max_tiles is not None and len(images) >= max_tiles:
            break
    if not images:
        why = ", ".join(f"{k} {v}" for k, v in skipped.items()) or "the corpus is empty"
        raise InputError(f"{corpus_dir}: no real tile of at least {size} px at the training GSD to "
                         f"train on ({why}); use a smaller --size or a finer --gsd")
    fingerprint = {"corpus": corpus.name, "manifest_sha256": corpus.manifest_sha256(),
                   "tiles": len(images), "gsd_m": round(float(target or 1.0), 6),
                   "layout": LAYOUT_VERSION, "max_tiles": max_tiles}
    if exclude:  # only when given, so runs without it keep their fingerprint
        import hashlib

        fingerprint["excluded_keys_sha256"] = hashlib.sha256("\n".join(sorted(exclude)).encode()).hexdigest()
    return Pool(images, layouts, float(target or 1.0), fingerprint, skipped)


def batch_arrays(pool: Pool, cfg: TrainConfig, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch of ``step``: (B, 3, S, S) float32 in [-1, 1] and (B, S, S) uint8 class maps, a
    pure function of the seed and the step."""
    rng = np.random.default_rng([cfg.seed, step, 1])
    s = cfg.size
    imgs = np.empty((cfg.batch_size, s, s, 3), np.uint8)
    lays = np.empty((cfg.batch_size, s, s), np.uint8)
    for b in range(cfg.batch_size):
        i = int(rng.integers(len(pool)))
        img, lay = pool.images[i], pool.layouts[i]
        y = int(rng.integers(lay.shape[0] - s + 1))
        x = int(rng.integers(lay.shape[1] - s + 1))
        ci, cl = img[y:y + s, x:x + s], lay[y:y + s, x:x + s]
        k = int(rng.integers(8))
        if k >= 4:
            ci, cl = ci[:, ::-1], cl[:, ::-1]
        ci, cl = np.rot90(ci, k % 4), np.rot90(cl, k % 4)
        imgs[b], lays[b] = ci, cl
    x0 = imgs.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
    return x0, lays


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    progress = min(1.0, step / max(1, total))
    return cfg.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _device(name: str) -> str:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but torch sees no CUDA device (torch.cuda.is_available() is "
                         "False: a CPU build of torch, no GPU, or CUDA_VISIBLE_DEVICES empty); use "
                         "--device auto or cpu, or install a CUDA build of torch")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


class Trainer:
    def __init__(self, pool: Pool, cfg: TrainConfig, out: Path, device: str = "auto") -> None:
        import torch
        from diffusers import DDPMScheduler

        from rsdata.synth.pipeline import new_unet

        self.pool, self.cfg, self.out = pool, cfg, Path(out)
        self.device = _device(device)
        torch.manual_seed(cfg.seed)  # the initial weights
        self.unet = new_unet(cfg.size, tuple(cfg.channels), cfg.layers_per_block,
                             tuple(cfg.attention), cfg.patch).to(self.device)
        self.ema = new_unet(cfg.size, tuple(cfg.channels), cfg.layers_per_block, tuple(cfg.attention),
                            cfg.patch)
        self.ema.load_state_dict(self.unet.state_dict())
        self.ema.to(self.device).requires_grad_(False)
        self.noise = DDPMScheduler(num_train_timesteps=cfg.timesteps, beta_schedule=cfg.beta_schedule,
                                   prediction_type=cfg.prediction, clip_sample=False)
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.step = 0
        self.total = 0
        self.log: list[dict[str, Any]] = []

    # -- state ------------------------------------------------------------------------------
    @property
    def train_dir(self) -> Path:
        return self.out / TRAIN_DIR

    def identity(self) -> dict[str, Any]:
        return {"format": FORMAT, "config": self.cfg.model_part(), "data": self.pool.fingerprint}

    def save_checkpoint(self) -> None:
        import torch

        self.train_dir.mkdir(parents=True, exist_ok=True)
        state = {**self.identity(), "step": self.step, "total": self.total,
                 "unet": self.unet.state_dict(), "ema": self.ema.state_dict(),
                 "optimizer": self.opt.state_dict()}
        path = self.train_dir / CHECKPOINT
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, path)
        self._write_log()

    def load_checkpoint(self) -> bool:
        """Resume from ``OUT/.rsdata-train/checkpoint.pt`` if there is one; refuse another config
        or other data."""
        import torch

        path = self.train_dir / CHECKPOINT
        if not path.is_file():
            return False
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file
            raise InputError(f"{path} is not a readable train-synth checkpoint ({type(exc).__name__}: "
                             f"{exc}); delete it to start over") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise InputError(f"{path} is not an rsdata train-synth checkpoint; delete it to start over")
        mine = self.identity()
        if state["config"] != mine["config"]:
            diff = sorted(k for k in mine["config"] if state["config"].get(k) != mine["config"][k])
            raise UsageError(f"{self.out} holds a run with another model config (differs in "
                             f"{', '.join(diff)}); resume with the same options, or choose another --out")
        if state["data"] != mine["data"]:
            diff = sorted(k for k in mine["data"] if state["data"].get(k) != mine["data"][k])
            raise UsageError(f"{self.out} was trained on other data (differs in {', '.join(diff)}); "
                             "resume on the same corpus and options, or choose another --out")
        self.unet.load_state_dict(state["unet"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.log = [r for r in self._read_log() if r["step"] <= self.step]
        return True

    def _read_log(self) -> list[dict[str, Any]]:
        path = self.train_dir / "log.jsonl"
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows

    def _write_log(self) -> None:
        from rsdata.atomic import atomic_write_bytes

        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.log)
        atomic_write_bytes(self.train_dir / "log.jsonl", text.encode())

    # -- one step ---------------------------------------------------------------------------
    def train_step(self) -> float:
        import torch

        from rsdata.synth.pipeline import fold

        cfg = self.cfg
        x0_np, lay_np = batch_arrays(self.pool, cfg, self.step)
        gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + self.step)
        x0 = torch.from_numpy(x0_np)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, cfg.timesteps, (x0.shape[0],), generator=gen)
        x0, noise = fold(x0, cfg.patch), fold(noise, cfg.patch)
        xt = self.noise.add_noise(x0, noise, t)
        target = self.noise.get_velocity(x0, noise, t) if cfg.prediction == "v_prediction" else noise
        cond = fold(torch.from_numpy(one_hot(lay_np)), cfg.patch)
        dev = self.device
        inp = torch.cat([xt, cond], 1).to(dev)
        lr = learning_rate(cfg, self.step, self.total)
        for group in self.opt.param_groups:
            group["lr"] = lr
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev == "cuda"):
            pred = self.unet(inp, t.to(dev)).sample
        loss = torch.nn.functional.mse_loss(pred.float(), target.to(dev))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.opt.step()
        decay = min(cfg.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.unet.parameters()):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        self.step += 1
        return float(loss.item())

    # -- the pipeline -------------------------------------------------------------------------
    def pipeline(self) -> Any:
        from diffusers import DDIMScheduler

        from rsdata.synth.pipeline import LayoutDiffusionPipeline

        # trailing spacing: the first sampling step starts from (near) pure noise (Lin et al. 2024,
        # "Common diffusion noise schedules and sample steps are flawed")
        scheduler = DDIMScheduler.from_config(self.noise.config, timestep_spacing="trailing")
        return LayoutDiffusionPipeline(unet=self.ema, scheduler=scheduler, patch_size=self.cfg.patch)

    def save_pipeline(self, licenses: list[str]) -> None:
        """Write the EMA model as a pipeline directory into OUT (each part replaced atomically)."""
        tmp = self.out / f".pipeline.tmp{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        pipe = self.pipeline()
        pipe.save_pretrained(tmp, safe_serialization=True)
        meta = {
            "format": "rsdata-synth-model-v1", "pipeline": LAYOUT_PIPELINE,
            "layout": {"version": LAYOUT_VERSION, "classes": list(CLASSES)},
            "image_size": self.cfg.size, "gsd_m": round(self.pool.gsd, 6),
            "steps": self.step, "config": self.cfg.model_part(), "trained_on": self.pool.fingerprint,
            "license": "; ".join(licenses) if licenses else "unknown",
            "note": "generated images are synthetic; the model learned them from the corpus named "
                    "in trained_on, whose licenses apply",
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        self.out.mkdir(parents=True, exist_ok=True)
        for item in sorted(tmp.iterdir()):
            dest = self.out / item.name
            if dest.is_dir() and item.is_dir():
                old = self.out / f".{item.name}.old{os.getpid()}"
                os.replace(dest, old)
                os.replace(item, dest)
                shutil.rmtree(old)
            else:
                os.replace(item, dest)
        shutil.rmtree(tmp, ignore_errors=True)

    def preview(self, n: int = 8, steps: int = 25) -> Path:
        """A sheet of n training layouts, their real crops and generated scenes."""
        import torch
        from PIL import Image

        from rsdata.synth.layouts import colorize

        x0, lays = batch_arrays(self.pool, TrainConfig(**{**asdict(self.cfg), "batch_size": n,
                                                           "seed": self.cfg.seed + 7919}), 0)
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        gens = [torch.Generator().manual_seed(i) for i in range(n)]
        out = pipe(lays, num_inference_steps=steps, generator=gens).images
        real = ((x0.transpose(0, 2, 3, 1) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        rows = [np.concatenate(list(colorize(lays)), 1), np.concatenate(list(real), 1),
                np.concatenate(list(out), 1)]
        sheet = np.concatenate(rows, 0)
        path = self.train_dir / "preview.png"
        self.train_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2),
                                      Image.Resampling.NEAREST).save(path)
        return path


def corpus_licenses(corpus_dir: Path) -> list[str]:
    from rsdata.corpus.manifest import load_manifest

    manifest = load_manifest(corpus_dir)
    seen: list[str] = []
    for entry in manifest.get("sources", []):
        if entry.get("role") in ("imagery", None) or entry.get("role") == "corpus":
            text = f"{entry.get('license', 'unknown')} ({entry.get('attribution', '')})".strip()
            if text not in seen:
                seen.append(text)
    return seen


def train(corpus_dir: Path, out: Path, cfg: TrainConfig, steps: int, stop_after: int | None = None,
          checkpoint_every: int = 200, device: str = "auto", max_tiles: int | None = None,
          progress: bool = True, preview: bool = True,
          exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Train (or resume) and save the pipeline; returns a summary."""
    import torch
    from tqdm import tqdm

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / TRAIN_DIR / CHECKPOINT).is_file():
        raise UsageError(f"--out {out} is not empty and holds no train-synth checkpoint; choose an empty "
                         "or new directory (or the --out of the run to resume)")
    pool = load_pool(corpus_dir, cfg.size, cfg.gsd, max_tiles, exclude=exclude)
    trainer = Trainer(pool, cfg, out, device)
    trainer.total = steps
    resumed = trainer.load_checkpoint()
    start = trainer.step
    if start > steps:
        raise UsageError(f"{out} is already at step {start}, past --steps {steps}; raise --steps to "
                         "extend it")
    end = steps if stop_after is None else min(steps, stop_after)
    licenses = corpus_licenses(corpus_dir)
    interrupted = {"flag": False}

    def on_sigint(signum: int, frame: Any) -> None:
        if interrupted["flag"]:
            raise KeyboardInterrupt
        interrupted["flag"] = True

    previous = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    started = time.perf_counter()
    bar = tqdm(total=end, initial=start, desc="train-synth", unit="step", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    window: list[float] = []
    try:
        while trainer.step < end and not interrupted["flag"]:
            loss = trainer.train_step()
            window.append(loss)
            if trainer.step % 10 == 0 or trainer.step == end:
                trainer.log.append({"step": trainer.step, "loss": round(sum(window) / len(window), 6),
                                    "lr": round(learning_rate(cfg, trainer.step - 1, steps), 8),
                                    "seconds": round(time.perf_counter() - started, 2)})
                window = []
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if checkpoint_every and trainer.step % checkpoint_every == 0 and trainer.step < end:
                trainer.save_checkpoint()
                trainer.save_pipeline(licenses)
    finally:
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    trainer.save_checkpoint()
    trainer.save_pipeline(licenses)
    sheet = trainer.preview() if preview and trainer.step >= steps else None
    return {"out": str(out), "step": trainer.step, "steps": steps, "resumed_from": start if resumed else None,
            "tiles": len(pool), "skipped": pool.skipped, "gsd_m": pool.gsd, "device": trainer.device,
            "seconds": round(time.perf_counter() - started, 1), "interrupted": interrupted["flag"],
            "last_loss": trainer.log[-1]["loss"] if trainer.log else None,
            "preview": str(sheet) if sheet else None,
            "threads": torch.get_num_threads()}


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
