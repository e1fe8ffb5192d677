"""Synthetic scenes, measured: generation speed, the train-synth loss curve, ``rsdata
eval-synth``'s numbers, and a mixed-corpus retrieval check.

    rsdata run pipelines/synth-layouts.yaml
    rsdata train-synth out/synth-layouts --out out/synth-model --steps 1500
    rsdata run pipelines/synth.yaml                       # (for mixed)
    python -m benchmarks.bench_synth                      # everything below
    python -m benchmarks.bench_synth --only speed         # or: loss, fd, sheet, mixed

- **speed**: images/s of the model's pipeline (DDIM, ``--steps`` steps, batch ``--batch``) at 64
  and 128 px on this machine's CPU (and CUDA when present), on real layouts.
- **loss**: the train-synth loss curve (``MODEL/.rsdata-train/log.jsonl``), as a table and a PNG.
- **fd**: :mod:`rsdata.synth.evaluate` (what ``rsdata eval-synth`` runs): Fréchet distances
  (FID-style, on rsdata's own image encoder: *not* comparable with Inception FID) of generated,
  noise and other real crops (the floor) against real crops, with untrained (random) rs-cnn-tiny
  features and, when out/demo exists, rs-cnn-tiny trained 60 steps on it; layout adherence
  (ceiling: real crops, chance: shuffled layouts); ``.bench/synth_eval_sheet.png``.
- **sheet**: layout | real crop | generated, for a few training layouts (``.bench/synth_sheet.png``).
- **mixed**: rs-cnn-tiny trained on the real tiles of ``out/synth`` only vs real + synthetic (same
  steps), R@1/5/10 on the real tiles of one held-out aerial photo, beside the random baseline.

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


def encoder(path: Path | None) -> Path | None:
    """The encoder run for the Fréchet distance: ``--encoder``, else rs-cnn-tiny trained 60 steps
    on out/demo (trained once, kept in .bench/synth-encoder), else None (untrained rs-cnn-tiny)."""
    if path is not None:
        return path
    run = OUT / "synth-encoder"
    if not (run / "checkpoints").exists():
        if not Path("out/demo/manifest.json").is_file():
            print("no out/demo corpus to train an encoder on: random (untrained rs-cnn-tiny) features only",
                  flush=True)
            return None
        print("training the baseline encoder (rs-cnn-tiny, 60 steps on out/demo) ...", flush=True)
        subprocess.run([sys.executable, "-m", "rsdata", "train", "--data", "out/demo", "--model",
                        "rs-cnn-tiny", "--out", str(run), "--steps", "60", "--batch-size", "32",
                        "--lr", "1e-3", "--quiet"], check=True)
    return run


def bench_fd(model: Path, corpus: Path, enc: Path | None, n: int, steps: int, batch: int) -> dict[str, Any]:
    """``rsdata eval-synth`` (:mod:`rsdata.synth.evaluate`) with random and, where out/demo
    exists, trained encoder features; generated once, measured with each encoder."""
    from rsdata.synth import evaluate as E

    sets = E.build_sets(model, corpus, n, steps, batch, seed=0)
    res: dict[str, Any] = {"n": n, "steps": steps, "generation_seconds": sets.info.get("generation_seconds"),
                           "seen_in_training": sets.info.get("seen_in_training")}
    encoders = {"untrained": None}
    trained = encoder(enc)
    if trained is not None:
        encoders["trained"] = str(trained)
    for label, which in encoders.items():
        features, what = E.encoder_features(which, 0)
        sets.info["encoder"] = what
        report, feats = E.evaluate_sets(sets, features, 0)
        res[label] = report
        fd = report["frechet_distance"]
        print(f"fd ({what}, n={n}): generated {fd['generated_vs_reference']}, noise "
              f"{fd['noise_vs_reference']}, real (floor) {fd['real_vs_reference']}", flush=True)
    adh = res["untrained"]["adherence"]
    print("adherence (mean class recall): ceiling {} generated {} chance {}".format(
        adh["ceiling_real"]["mean_class_recall"], adh["generated"]["mean_class_recall"],
        adh["chance_shuffled_layouts"]["mean_class_recall"]), flush=True)
    OUT.mkdir(exist_ok=True)
    E.contact_sheet(sets, feats, OUT / "synth_eval_sheet.png")
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


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "rsdata", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"rsdata {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


def bench_mixed(mixed: Path, steps: int, held: str, threads: int) -> dict[str, Any]:
    """The baseline dual encoder (rs-cnn-tiny) trained on the real tiles only vs real + synthetic
    tiles of ``mixed`` (pipelines/synth.yaml's output), the same steps and batch, evaluated on the
    real tiles of one held-out aerial photo (keys containing ``held``: a whole photo, not strips),
    beside the random baseline on the same set."""
    from rsdata.corpus.reader import Corpus
    from rsdata.corpus.samples import is_synthetic

    work = OUT / "synth-mixed"
    work.mkdir(parents=True, exist_ok=True)
    real, syn = [], []
    for e in Corpus(mixed).entries({"json"}):
        (syn if is_synthetic(e.meta()) else real).append(e.key)
    test = [k for k in real if held in k]
    if not test or len(test) == len(real):
        raise SystemExit(f"bench_synth --only mixed: no real tiles of {held!r} to hold out in {mixed} "
                         f"({len(real)} real tiles)")
    keys = work / "heldout.txt"
    keys.write_text("".join(k + "\n" for k in test))
    res: dict[str, Any] = {"corpus": str(mixed), "held_out": held, "test_tiles": len(test),
                           "train_real_tiles": len(real) - len(test), "synthetic_tiles": len(syn),
                           "steps": steps, "batch": 32, "model": "rs-cnn-tiny"}
    rows: dict[str, dict[str, Any]] = {}
    for label, mode in (("real only", "exclude"), ("real + synthetic", "include")):
        run = work / mode
        if run.exists():
            import shutil

            shutil.rmtree(run)
        t0 = time.perf_counter()
        _cli("train", "--data", str(mixed), "--model", "rs-cnn-tiny", "--out", str(run), "--steps", str(steps),
             "--batch-size", "32", "--lr", "1e-3", "--exclude-keys", str(keys), "--synthetic", mode,
             "--workers", "0", "--threads", str(threads), "--quiet")
        train_s = time.perf_counter() - t0
        done = _cli("eval", "--checkpoint", str(run), "--data", str(mixed), "--keys", str(keys),
                    "--bootstrap", "200", "--out", str(run / "eval"), "--json")
        rows[label] = {**json.loads(done.stdout.splitlines()[-1])["sets"][0], "train_seconds": round(train_s, 1)}
    done = _cli("eval", "--baseline", "random", "--data", str(mixed), "--keys", str(keys), "--bootstrap", "0",
                "--out", str(work / "random"), "--json")
    rows["random baseline"] = json.loads(done.stdout.splitlines()[-1])["sets"][0]
    print(f"mixed-corpus retrieval on {len(test)} held-out real tiles ({held}); rs-cnn-tiny, {steps} steps "
          f"of 32; trained on {len(real) - len(test)} real tiles (+ {len(syn)} synthetic)", flush=True)
    print(f"{'':18s} {'i2t R@1':>8s} {'R@5':>6s} {'R@10':>6s} {'t2i R@1':>8s} {'R@5':>6s} {'R@10':>6s} {'mR':>6s}")
    for label, r in rows.items():
        print(f"{label:18s} {r['i2t']['R@1']:8.1f} {r['i2t']['R@5']:6.1f} {r['i2t']['R@10']:6.1f} "
              f"{r['t2i']['R@1']:8.1f} {r['t2i']['R@5']:6.1f} {r['t2i']['R@10']:6.1f} {r['mR']:6.1f}", flush=True)
    chance = rows["real only"].get("chance", {})
    if chance:
        print(f"{'chance (analytic)':18s} {chance['i2t']['R@1']:8.1f} {chance['i2t']['R@5']:6.1f} "
              f"{chance['i2t']['R@10']:6.1f} {chance['t2i']['R@1']:8.1f} {chance['t2i']['R@5']:6.1f} "
              f"{chance['t2i']['R@10']:6.1f} {chance['mR']:6.1f}", flush=True)
    res["results"] = {label: {"i2t": r["i2t"], "t2i": r["t2i"], "mR": r["mR"], "ci": r.get("ci"),
                              "train_seconds": r.get("train_seconds")} for label, r in rows.items()}
    res["chance"] = chance
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("out/synth-model"))
    p.add_argument("--corpus", type=Path, default=Path("out/synth-layouts"))
    p.add_argument("--encoder", type=Path, default=None, help="an rsdata train run (default: train one)")
    p.add_argument("--n", type=int, default=256, help="tiles per set for the Fréchet distance")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--only", choices=["speed", "loss", "fd", "sheet", "mixed"], action="append")
    p.add_argument("--mixed", type=Path, default=Path("out/synth"),
                   help="mixed: the corpus of pipelines/synth.yaml (real + synthetic, captioned)")
    p.add_argument("--mixed-steps", type=int, default=150, help="mixed: training steps per model")
    p.add_argument("--held-out", default="3320d", help="mixed: hold out the real tiles whose key has this")
    p.add_argument("--threads", type=int, default=2, help="mixed: torch threads for training")
    p.add_argument("--quick", action="store_true", help="loss and speed only, fewer steps")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if not (args.model / "model_index.json").is_file():
        print(f"bench_synth: no model in {args.model}; run `rsdata run pipelines/synth-layouts.yaml` and "
              f"`rsdata train-synth out/synth-layouts --out {args.model}` first (skipped)")
        return 0
    todo = args.only or (["loss", "speed"] if args.quick else ["loss", "speed", "sheet", "fd", "mixed"])
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
    if "mixed" in todo:
        result["mixed"] = bench_mixed(args.mixed, args.mixed_steps, args.held_out, args.threads)
    OUT.mkdir(exist_ok=True)
    import os

    result["loadavg"] = os.getloadavg()
    (OUT / "bench_synth.json").write_text(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
