"""Synthetic scenes, measured: generation speed, the train-synth loss curve, and a Fréchet
distance on the included image encoder's features.

    rsdata run pipelines/synth-layouts.yaml
    rsdata train-synth out/synth-layouts --out out/synth-model --steps 1500
    python -m benchmarks.bench_synth                      # everything below
    python -m benchmarks.bench_synth --only speed         # or: loss, fd, sheet

- **speed**: images/s of the model's pipeline (DDIM, ``--steps`` steps, batch ``--batch``) at 64
  and 128 px on this machine's CPU (and CUDA when present), on real layouts.
- **loss**: the train-synth loss curve (``MODEL/.rsdata-train/log.jsonl``), as a table and a PNG.
- **fd**: a Fréchet distance (FID-style, but on the features of rsdata's own baseline image
  encoder, ``rs-cnn-tiny`` trained briefly on the demo corpus: *not* comparable to Inception FID)
  between sets of ``--n`` 64 px tiles: generated (from real layouts, new seeds) vs real, iid noise
  (with the real pixels' mean and spread) vs real, and real vs other real crops (the floor).
- **sheet**: layout | real crop | generated, for a few training layouts (``.bench/synth_sheet.png``).

Writes ``.bench/bench_synth.json``. Numbers depend on the machine and on the other jobs on it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(".bench")


def load_pipe(model: Path, device: str) -> Any:
    from rsdata.synth.pipeline import LayoutDiffusionPipeline

    pipe = LayoutDiffusionPipeline.from_pretrained(model, local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def real_crops(corpus: Path, size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n random crops (images, layouts) of the corpus's real tiles, as train-synth sees them."""
    from rsdata.synth.training import TrainConfig, batch_arrays, load_pool

    pool = load_pool(corpus, size, None)
    cfg = TrainConfig(size=size, batch_size=n, seed=seed)
    x0, lays = batch_arrays(pool, cfg, 0)
    imgs = ((x0.transpose(0, 2, 3, 1) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    return imgs, lays


def generate(pipe: Any, layouts: np.ndarray, steps: int, batch: int, seed: int = 1000) -> np.ndarray:
    import torch

    out = []
    for i in range(0, len(layouts), batch):
        gens = [torch.Generator().manual_seed(seed + j) for j in range(i, min(i + batch, len(layouts)))]
        out.extend(pipe(layouts[i:i + batch], num_inference_steps=steps, generator=gens).images)
    return np.stack(out)


def bench_speed(model: Path, corpus: Path, steps: int, batch: int) -> dict[str, Any]:
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    res: dict[str, Any] = {"steps": steps, "batch": batch, "threads": torch.get_num_threads()}
    for device in devices:
        pipe = load_pipe(model, device)
        for size in (64, 128):
            _, lays = real_crops(corpus, size, batch * 3, seed=11)
            generate(pipe, lays[:batch], steps, batch)  # warm up
            t0 = time.perf_counter()
            generate(pipe, lays, steps, batch)
            if device == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            res[f"{device}_{size}px_images_per_s"] = round(len(lays) / dt, 3)
            print(f"speed {device} {size} px: {len(lays) / dt:.2f} images/s "
                  f"({steps} DDIM steps, batch {batch})", flush=True)
    return res


def bench_loss(model: Path) -> dict[str, Any]:
    log = [json.loads(line) for line in (model / ".rsdata-train" / "log.jsonl").read_text().splitlines()]
    every = max(1, len(log) // 10)
    rows = log[::every] + ([log[-1]] if (len(log) - 1) % every else [])
    for r in rows:
        print(f"loss step {r['step']:5d}: {r['loss']:.4f}  lr {r['lr']:.2e}  {r['seconds']:.0f} s", flush=True)
    try:
        from PIL import Image, ImageDraw

        w, h, m = 640, 320, 40
        img = Image.new("RGB", (w, h), "white")
        d = ImageDraw.Draw(img)
        steps = [r["step"] for r in log]
        losses = [r["loss"] for r in log]
        hi, lo = max(losses), 0.0
        pts = [(m + (s / steps[-1]) * (w - 2 * m), h - m - (v - lo) / (hi - lo) * (h - 2 * m))
               for s, v in zip(steps, losses)]
        d.line([(m, m), (m, h - m), (w - m, h - m)], fill="black")
        d.line(pts, fill=(40, 90, 170), width=2)
        d.text((m, 10), f"train-synth loss (10-step means), max {hi:.3f}, last {losses[-1]:.4f}", fill="black")
        d.text((w - m - 60, h - m + 8), f"step {steps[-1]}", fill="black")
        OUT.mkdir(exist_ok=True)
        img.save(OUT / "synth_loss.png")
    except (OSError, ZeroDivisionError):
        pass
    return {"log": [{"step": r["step"], "loss": r["loss"]} for r in rows]}


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(Sa + Sb - 2 (Sa^1/2 Sb Sa^1/2)^1/2), with symmetric square roots."""
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    mid = np.linalg.eigvalsh(root @ sb @ root)
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.sqrt(np.clip(mid, 0, None)).sum())


def encoder(path: Path | None) -> Path:
    if path is not None:
        return path
    run = OUT / "synth-encoder"
    if not (run / "checkpoints").exists():
        print("training the baseline encoder (rs-cnn-tiny, 60 steps on out/demo) ...", flush=True)
        subprocess.run([sys.executable, "-m", "rsdata", "train", "--data", "out/demo", "--model",
                        "rs-cnn-tiny", "--out", str(run), "--steps", "60", "--batch-size", "32",
                        "--lr", "1e-3", "--quiet"], check=True)
    return run


def bench_fd(model: Path, corpus: Path, enc: Path | None, n: int, steps: int, batch: int) -> dict[str, Any]:
    from PIL import Image

    from rsdata.scoring.baseline import BaselineScorer

    scorer = BaselineScorer(str(encoder(enc))).load()

    def feats(images: np.ndarray) -> np.ndarray:
        return scorer.embed_images([Image.fromarray(im) for im in images])

    real_a, _ = real_crops(corpus, 64, n, seed=101)
    real_b, _ = real_crops(corpus, 64, n, seed=202)
    _, lays_c = real_crops(corpus, 64, n, seed=303)
    t0 = time.perf_counter()
    gen = generate(load_pipe(model, "cpu"), lays_c, steps, batch)
    gen_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    mean, std = real_a.reshape(-1, 3).mean(0), real_a.reshape(-1, 3).std(0)
    noise = np.clip(rng.normal(mean, std, real_a.shape), 0, 255).astype(np.uint8)
    fa = feats(real_a)
    res = {"n": n, "encoder": str(enc or OUT / "synth-encoder"), "feature_dim": int(fa.shape[1]),
           "generated_vs_real": round(frechet(feats(gen), fa), 4),
           "noise_vs_real": round(frechet(feats(noise), fa), 4),
           "real_vs_real": round(frechet(feats(real_b), fa), 4),
           "generation_seconds": round(gen_s, 1)}
    print(f"fd (rs-cnn-tiny features, n={n}): generated vs real {res['generated_vs_real']}, noise vs "
          f"real {res['noise_vs_real']}, real vs real {res['real_vs_real']}", flush=True)
    return res


def bench_sheet(model: Path, corpus: Path, steps: int, k: int = 8) -> dict[str, Any]:
    from PIL import Image

    from rsdata.synth.layouts import colorize

    imgs, lays = real_crops(corpus, 64, 64, seed=404)
    order = np.argsort([-(lay > 0).mean() for lay in lays])[:k]  # the most mapped layouts
    imgs, lays = imgs[order], lays[order]
    gen = generate(load_pipe(model, "cpu"), lays, steps, k)
    rows = [np.concatenate(list(colorize(lays)), 1), np.concatenate(list(imgs), 1), np.concatenate(list(gen), 1)]
    sheet = np.concatenate(rows, 0)
    OUT.mkdir(exist_ok=True)
    Image.fromarray(sheet).resize((sheet.shape[1] * 3, sheet.shape[0] * 3), Image.Resampling.NEAREST).save(
        OUT / "synth_sheet.png")
    return {"sheet": str(OUT / "synth_sheet.png")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("out/synth-model"))
    p.add_argument("--corpus", type=Path, default=Path("out/synth-layouts"))
    p.add_argument("--encoder", type=Path, default=None, help="an rsdata train run (default: train one)")
    p.add_argument("--n", type=int, default=256, help="tiles per set for the Fréchet distance")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--only", choices=["speed", "loss", "fd", "sheet"], action="append")
    p.add_argument("--quick", action="store_true", help="loss and speed only, fewer steps")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if not (args.model / "model_index.json").is_file():
        print(f"bench_synth: no model in {args.model}; run `rsdata run pipelines/synth-layouts.yaml` and "
              f"`rsdata train-synth out/synth-layouts --out {args.model}` first (skipped)")
        return 0
    todo = args.only or (["loss", "speed"] if args.quick else ["loss", "speed", "sheet", "fd"])
    if args.quick:
        args.steps = min(args.steps, 10)
    result: dict[str, Any] = {}
    if "loss" in todo:
        result["loss"] = bench_loss(args.model)
    if "speed" in todo:
        result["speed"] = bench_speed(args.model, args.corpus, args.steps, args.batch)
    if "sheet" in todo:
        result["sheet"] = bench_sheet(args.model, args.corpus, args.steps)
    if "fd" in todo:
        result["fd"] = bench_fd(args.model, args.corpus, args.encoder, args.n, args.steps, args.batch)
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_synth.json").write_text(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
