"""Scorer throughput: batched scoring vs a per-sample loop, on the CPU, for each scorer kind.

    python -m benchmarks.bench_scoring [--quick] [--json PATH] [--threads N] [--samples N]

One process, the same inputs for every measurement: N seeded synthetic 256 px scenes
(JPEG-encoded, then decoded once, as the score stage sees them) with template-like captions.
For each model (random weights; speed does not depend on them):

* ``baseline rs-cnn-small``: the rsdata baseline dual encoder (224 px CNN + 4-layer text
  transformer) through a real checkpoint file and ``create_scorer("baseline", ...)``;
* ``baseline rs-cnn-tiny``: the smallest baseline (128 px);
* ``hf_clip small``: a Hugging Face ``CLIPModel`` (ViT-B/32 layout at width 256, 4+4 layers,
  224 px) saved to a temp dir and loaded through ``create_scorer("hf_clip", ...)``.

per-sample = ``scorer.score([img], [txt])`` for each pair (the naive loop); batched =
``scorer.score(imgs, txts)`` at the scorer's CPU batch size. Both include preprocessing and
tokenisation; models are loaded and warmed up before timing; each is timed twice, best kept.
Everything runs with 1 thread (pure compute: what batching saves in arithmetic efficiency) and
with one thread per CPU (per-sample calls also pay thread start-up on every op).
Target: batched >= 5x the per-sample loop on the CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TARGET = 5.0
WORDS = ["buildings", "a dirt track", "farmland", "a river", "a nature reserve", "minor roads",
         "an orchard", "a service road", "a reservoir", "scrub"]


def scenes(n: int, size: int = 256) -> list[Any]:
    """Seeded synthetic aerial-like scenes, JPEG round-tripped."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        arr = np.clip(rng.integers(40, 200, 3) + rng.normal(0, 14, (size, size, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = rng.integers(0, size - 40, 2)
            w, h = rng.integers(10, 80, 2)
            draw.rectangle([int(x), int(y), int(x + w), int(y + h)], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out


def captions(n: int) -> list[str]:
    rng = np.random.default_rng(1)
    return [f"An aerial image with {WORDS[int(rng.integers(10))]} and {WORDS[int(rng.integers(10))]} "
            f"on the {['left', 'right', 'top', 'bottom'][int(rng.integers(4))]}." for _ in range(n)]


def baseline_checkpoint(directory: Path, name: str) -> Path:
    import torch

    from rsdata.models import create_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(directory / f"{name}.pt", create_model(name, pretrained=False))


def small_clip(directory: Path) -> Path:
    """A random CLIPModel of ViT-B/32 layout at width 256 with a small BPE tokenizer."""
    import string

    import torch
    import transformers
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits + ".,-'":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                           image_size=224, patch_size=32),
        projection_dim=256)
    torch.manual_seed(0)
    path = directory / "clip-small"
    CLIPModel(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    proc = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    proc().save_pretrained(str(path))
    return path


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(scorer: Any, imgs: list[Any], texts: list[str], loop_n: int, repeats: int) -> dict[str, Any]:
    scorer.load()
    scorer.score(imgs[:4], texts[:4])  # warm up
    loop_imgs, loop_texts = imgs[:loop_n], texts[:loop_n]

    def per_sample() -> None:
        for im, t in zip(loop_imgs, loop_texts):
            scorer.score([im], [t])

    t_loop = best_of(per_sample, repeats)
    t_batch = best_of(lambda: scorer.score(imgs, texts), repeats)
    loop_rate = loop_n / t_loop
    batch_rate = len(imgs) / t_batch
    # the two paths must agree (batching changes speed, not scores)
    diff = float(np.abs(scorer.score(imgs[:8], texts[:8])
                        - np.array([scorer.score([i], [t])[0] for i, t in zip(imgs[:8], texts[:8])])).max())
    return {"per_sample_per_s": round(loop_rate, 2), "batched_per_s": round(batch_rate, 2),
            "speedup": round(batch_rate / loop_rate, 2), "max_score_difference": diff,
            "per_sample_n": loop_n, "batched_n": len(imgs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_scoring", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--samples", type=int, help="pairs scored in the batched run (default 256; quick 64)")
    ap.add_argument("--threads", type=int, action="append",
                    help="torch CPU threads; repeat to compare (default: 1 and one per CPU)")
    ap.add_argument("--batch-size", type=int, help="scorer batch size (default: the scorer's CPU default, 16)")
    args = ap.parse_args(argv)

    import torch

    from rsdata.scoring import create_scorer

    default_threads = torch.get_num_threads()
    thread_settings = args.threads or sorted({1, os.cpu_count() or 1})
    n = args.samples or (64 if args.quick else 256)
    loop_n = max(8, n // 4)
    repeats = 1 if args.quick else 2
    imgs, texts = scenes(n), captions(n)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rsdata-bench-scoring-") as tmp:
        d = Path(tmp)
        models: list[tuple[str, str, str]] = [
            ("baseline rs-cnn-small", "baseline", str(baseline_checkpoint(d, "rs-cnn-small"))),
            ("baseline rs-cnn-tiny", "baseline", str(baseline_checkpoint(d, "rs-cnn-tiny"))),
            ("hf_clip small (ViT-B/32 layout, width 256)", "hf_clip", str(small_clip(d))),
        ]
        for threads in thread_settings:
            torch.set_num_threads(threads)
            for label, kind, path in models:
                scorer = create_scorer(kind, path, batch_size=args.batch_size, device="cpu")
                r = {"scorer": label, "threads": threads, "batch_size": scorer.batch_size,
                     **measure(scorer, imgs, texts, loop_n, repeats)}
                results.append(r)
                print(f"  {r}", file=sys.stderr, flush=True)
        torch.set_num_threads(default_threads)
    print("\n| scorer (CPU) | threads | per-sample loop | batched | speedup | target | |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        passed = r["speedup"] >= TARGET
        print(f"| {r['scorer']} | {r['threads']} | {r['per_sample_per_s']:.1f} pairs/s | "
              f"{r['batched_per_s']:.1f} pairs/s (batch {r['batch_size']}) | {r['speedup']:.2f}x | "
              f">= {TARGET:.0f}x | {'pass' if passed else 'FAIL'} |")
    machine = {"python": platform.python_version(), "torch": torch.__version__,
               "default_threads": default_threads, "cpu_count": os.cpu_count(),
               "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
               "cpu": platform.processor() or platform.machine(), "samples": n, "per_sample_n": loop_n}
    print(f"\nmachine: {machine}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "machine": machine, "target": TARGET}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
