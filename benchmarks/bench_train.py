"""Training input pipeline vs training step: is the data loader the bottleneck?

    python -m benchmarks.bench_train [--quick] [--json PATH] [--models rs-cnn-small rs-cnn-tiny]
                                     [--workers 2] [--retrieval]

Everything runs in ONE process on the SAME inputs, generated (seeded) into a temp dir that is
deleted at the end: 512 synthetic 256 px aerial-like JPEG tiles (q90, smooth land-cover
patches + texture + a few bright "buildings" and "roads"; ``--quick``: 256) with captions,
written as rsdata shards with a manifest.

For each model config (default: the baseline ``rs-cnn-small`` at 224 px and ``rs-cnn-tiny`` at
128 px; ``--quick``: tiny only), with the trainer's default of 2 data-loader workers:

* **loader**: ``DataLoader(ShardStream)`` alone (read tar, decode JPEG, resize, flip/rotate,
  rewrite caption directions, tokenise, collate) - samples/s;
* **step**: the training step alone on a batch already in memory (normalise, forward both
  towers, InfoNCE, backward, grad clipping, AdamW, cosine schedule), with the thread count the
  trainer picks - samples/s;
* **train**: ``rsdata.train.train`` end to end (loader and step together, as a user runs it):
  samples/s and the share of wall time the step waited for data.

The target is loader >= 3x step (the loader must not be the bottleneck). ``--retrieval`` adds
the held-out-area experiment of the README (builds a 128 px corpus from the bundled Swellendam
raster with ``rsdata run``, holds out a block of rows, trains rs-cnn-tiny for a few minutes,
evaluates trained vs untrained on the held-out tiles).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._load import busy_s as _busy_s

TARGET_RATIO = 3.0
REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Meter:
    """Wall time and the cores other processes kept busy meanwhile (how noisy it was).
    Data-loader workers are children: their CPU counts as ours once they are reaped."""

    def __enter__(self) -> "Meter":
        self._t, self._busy, self._own = time.perf_counter(), _busy_s(), _own_cpu_s()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t
        busy = _busy_s() - self._busy
        self.others_cores = max(0.0, busy - (_own_cpu_s() - self._own)) / self.seconds


# -- synthetic corpus --------------------------------------------------------------------------
def aerial_tile(rng: np.random.Generator, size: int = 256) -> tuple[bytes, str]:
    """A JPEG that costs what an aerial photo costs to decode, and a caption that fits it."""
    from PIL import Image

    coarse = rng.uniform(40, 200, (4, 4, 3))
    img = np.kron(coarse, np.ones((size // 4, size // 4, 1)))
    img += rng.normal(0, 18, (size, size, 3))  # texture
    n_build = int(rng.integers(0, 8))
    for _ in range(n_build):
        y, x = rng.integers(0, size - 12, 2)
        img[y:y + 10, x:x + 12] = 235
    road = bool(rng.integers(2))
    if road:
        r = int(rng.integers(20, size - 20))
        img[r:r + 4, :] = 110
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven"]
    caption = f"An aerial image with {words[n_build]} buildings" + (" and a road running across the image." if road else ".")
    return buf.getvalue(), caption


def write_corpus(out: Path, n: int, per_shard: int = 128, seed: int = 0) -> Path:
    import webdataset as wds

    from rsdata import __version__, schemas

    rng = np.random.default_rng(seed)
    (out / "shards").mkdir(parents=True)
    shards = []
    for s in range(0, n, per_shard):
        path = out / "shards" / f"bench-{s // per_shard:05d}.tar"
        with wds.TarWriter(str(path), encoder=False) as tw:
            for i in range(s, min(n, s + per_shard)):
                jpg, caption = aerial_tile(rng)
                meta = {"captions": [{"text": caption, "kind": "template", "template": "bench"}], "scores": {}}
                tw.write({"__key__": f"bench_{i:06d}", "jpg": jpg, "txt": caption.encode(),
                          "json": json.dumps(meta).encode()})
        data = path.read_bytes()
        shards.append({"path": f"shards/{path.name}", "nsamples": min(n, s + per_shard) - s,
                       "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"format": "rsdata-manifest/1", "name": "bench-train",
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "rsdata_version": __version__, "recipe": {"generator": "benchmarks/bench_train.py"},
                "recipe_hash": hashlib.sha256(b"bench-train").hexdigest(), "parent": None, "nsamples": n,
                "shards": shards, "stages": [], "sources": []}
    schemas.validate("manifest", manifest, "the benchmark corpus manifest")
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


# -- measurements ------------------------------------------------------------------------------
def measure_loader(corpus: Path, model: Any, workers: int, batch: int, n_batches: int) -> dict[str, Any]:
    import torch

    from rsdata.corpus.samples import list_shards
    from rsdata.train.stream import ShardStream, StreamConfig

    stream = ShardStream(StreamConfig(shards=list_shards([str(corpus)]), batch_size=batch,
                                      transform=model.preprocess, tokenizer=model.tokenizer,
                                      num_workers=workers))
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    it = iter(loader)
    for _ in range(max(workers, 1)):  # worker start-up is not throughput
        next(it)
    with Meter() as m:
        for _ in range(n_batches):
            next(it)
    del it
    return {"samples_per_s": n_batches * batch / m.seconds, "seconds": m.seconds, "others_cores": m.others_cores}


def measure_step(corpus: Path, model: Any, batch: int, n_steps: int, threads: int) -> dict[str, Any]:
    import torch

    from rsdata.models import clip_loss
    from rsdata.corpus.samples import list_shards
    from rsdata.train.optim import build_optimizer, build_scheduler
    from rsdata.train.stream import ShardStream, StreamConfig

    stream = ShardStream(StreamConfig(shards=list_shards([str(corpus)]), batch_size=batch,
                                      transform=model.preprocess, tokenizer=model.tokenizer))
    data = next(stream.slot_batches(0))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    opt = build_optimizer(model, 5e-4, 0.1)
    sched = build_scheduler(opt, 10, 1000)

    def step() -> None:
        images = model.preprocess.normalize(data["images"])
        img, txt, scale = model(images, data["tokens"])
        loss = clip_loss(img, txt, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()

    model.train()
    for _ in range(2):
        step()
    with Meter() as m:
        for _ in range(n_steps):
            step()
    torch.set_num_threads(before)
    return {"samples_per_s": n_steps * batch / m.seconds, "seconds": m.seconds, "threads": threads,
            "others_cores": m.others_cores}


def measure_train(corpus: Path, work: Path, name: str, workers: int, batch: int, n_steps: int) -> dict[str, Any]:
    import torch

    from rsdata.train import TrainConfig, train

    before = torch.get_num_threads()
    run = work / f"run-{name}-{workers}"
    with Meter() as m:
        train(TrainConfig(data=[str(corpus)], out=str(run), model=name, steps=n_steps, batch_size=batch,
                          workers=workers, log_every=n_steps, checkpoint_every=10 * n_steps, progress=False))
    torch.set_num_threads(before)
    line = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines() if "loss" in ln][-1]
    wait = line["data_s"] / max(line["data_s"] + line["compute_s"], 1e-9)
    return {"samples_per_s": line["samples_per_s"], "data_wait_share": wait, "wall_s_incl_startup": m.seconds,
            "others_cores": m.others_cores}


# -- the held-out-area retrieval experiment ---------------------------------------------------------
RECIPE = """version: 1
name: swellendam-128
inputs: [{repo}/manifests/swellendam.yaml]
source:
  type: raster
  rasters: [{{id: swellendam-3420b, path: {repo}/data/swellendam/image/3420B_2010_328_RGB_LATLNG.tif}}]
  tile: {{size: 128, gsd: 2.5, overlap: 96}}
  bands: [1, 2, 3]
  max_nodata_fraction: 0.05
  keep_geotiff: false
  partition_size: 256
stages:
  - type: osm_join
    sources:
      - path: {repo}/data/swellendam/osm/training_data.gpkg
      - path: {repo}/data/swellendam/osm/rivers.shp
      - path: {repo}/data/swellendam/osm/protected_areas.shp
    min_pixels: {{polygon: 16, line: 8, point: null}}
    drop_without_visible: true
  - type: template_captions
    count: 3
    seed: 0
output: {{dir: {out}, max_samples_per_shard: 256}}
"""


def split_bands(keys: list[str], band: int = 8, period: int = 4, buffer: int = 4
                ) -> tuple[list[str], set[str]]:
    """A spatial hold-out for overlapping tiles keyed ``{raster}_{col}_{row}``.

    Tile rows are cut into bands of ``band`` rows; every ``period``-th band (starting with the
    second) is held out, so held-out areas lie all over the raster and look like the training
    areas. 128 px tiles at a 32 px stride share pixels with the 4 rows next to them, so a
    ``buffer`` of rows around each held-out band is used by neither side. Returns the keys to
    exclude from training and the evaluation keys (held-out tiles on every 2nd row and column,
    so evaluation tiles overlap each other by at most half).
    """
    def col_row(key: str) -> tuple[int, int]:
        _, c, r = key.rsplit("_", 2)
        return int(c), int(r)

    def held(row: int) -> bool:
        return (row // band) % period == 1

    excluded = [k for k in keys if any(held(col_row(k)[1] + d) for d in range(-buffer, buffer + 1))]
    test = {k for k in keys if held(col_row(k)[1]) and col_row(k)[0] % 2 == 0 and col_row(k)[1] % 2 == 0}
    return excluded, test


def retrieval_experiment(work: Path, steps: int) -> dict[str, Any]:
    """Train rs-cnn-tiny on the raster minus held-out bands (:func:`split_bands`), evaluate the
    trained and an untrained model on the held-out tiles."""
    import subprocess

    import torch

    from rsdata.evaluate import EvalSpec, evaluate, shard_retrieval_set
    from rsdata.models import create_model, load_checkpoint
    from rsdata.train import TrainConfig, train
    from rsdata.corpus.samples import list_shards, read_shard

    corpus, recipe = work / "sw128", work / "sw128.yaml"
    recipe.write_text(RECIPE.format(repo=REPO, out=corpus))
    log("building the 128 px corpus with rsdata run")
    subprocess.run([sys.executable, "-m", "rsdata", "run", str(recipe), "--workers", "2", "--quiet"], check=True,
                   cwd=REPO)
    keys = [s["__key__"] for sh in list_shards([str(corpus)]) for s in read_shard(sh.path, read_data=False)]
    excluded, test = split_bands(keys)
    (work / "exclude.txt").write_text("\n".join(excluded) + "\n")
    log(f"{len(keys)} tiles: training on {len(keys) - len(excluded)}, evaluating on {len(test)} held-out tiles")
    with Meter() as m:
        result = train(TrainConfig(data=[str(corpus)], out=str(work / "run"), model="rs-cnn-tiny", steps=steps,
                                   batch_size=64, lr=1e-3, workers=1, exclude_keys=str(work / "exclude.txt"),
                                   log_every=20, checkpoint_every=steps, progress=False))
    data = shard_retrieval_set([str(corpus)], keep=test.__contains__)
    trained = evaluate(load_checkpoint(work / "run", device="cpu"), EvalSpec(retrieval=[data]), work / "eval-trained",
                       "trained")["sets"][0]
    torch.manual_seed(0)
    untrained = evaluate(create_model("rs-cnn-tiny").eval(), EvalSpec(retrieval=[data]), work / "eval-untrained",
                         "untrained")["sets"][0]
    pick = ("i2t", "t2i", "mR", "n_images", "n_texts")
    return {"tiles": len(keys), "train_tiles": len(keys) - len(excluded), "test_tiles": len(test), "steps": steps,
            "train_seconds": m.seconds, "first_loss": result["first_loss"], "last_loss": result["last_loss"],
            "trained": {k: trained[k] for k in pick}, "untrained": {k: untrained[k] for k in pick},
            "chance": trained["chance"]}


# -- report ------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "cuda": torch.cuda.is_available()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="rs-cnn-tiny only, fewer batches")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--models", nargs="+", help="model configs (default rs-cnn-small rs-cnn-tiny)")
    ap.add_argument("--workers", type=int, default=2, help="data-loader workers (the trainer's default: 2)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--retrieval", action="store_true", help="also run the held-out-area experiment (minutes)")
    ap.add_argument("--retrieval-steps", type=int, default=200)
    args = ap.parse_args(argv)

    import torch

    from rsdata.models import create_model
    from rsdata.train.distributed import DistInfo
    from rsdata.train.trainer import TrainConfig, cpu_threads

    models = args.models or (["rs-cnn-tiny"] if args.quick else ["rs-cnn-small", "rs-cnn-tiny"])
    n_samples, n_batches, n_steps = (256, 6, 4) if args.quick else (512, 16, 8)
    results: dict[str, Any] = {"machine": machine(), "workers": args.workers, "batch_size": args.batch_size,
                               "models": {}}
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        log(f"writing {n_samples} synthetic 256 px tiles")
        corpus = write_corpus(work / "corpus", n_samples)
        threads = cpu_threads(TrainConfig(data=[], out="", workers=args.workers), DistInfo())
        for name in models:
            torch.manual_seed(0)
            model = create_model(name)
            log(f"{name}: loader with {args.workers} workers")
            loader = measure_loader(corpus, model, args.workers, args.batch_size, n_batches)
            log(f"{name}: training step ({threads} threads)")
            step = measure_step(corpus, model, args.batch_size, n_steps, threads)
            log(f"{name}: rsdata.train end to end")
            end = measure_train(corpus, work, name, args.workers, args.batch_size, n_steps)
            results["models"][name] = {"image_size": model.config["image"]["size"], "loader": loader, "step": step,
                                       "train": end, "ratio": loader["samples_per_s"] / step["samples_per_s"]}
        if args.retrieval:
            results["retrieval"] = retrieval_experiment(work, args.retrieval_steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nbench_train: {results['machine']['cpu_count']} CPUs, torch {results['machine']['torch']}, "
          f"batch {args.batch_size}, {args.workers} loader workers, step on {threads} thread(s)\n")
    print("| model | loader samples/s | step samples/s | loader / step | target | pass | train samples/s "
          "| step waits for data | other load (cores) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results["models"].items():
        ok = r["ratio"] >= TARGET_RATIO
        noise = max(r["loader"]["others_cores"], r["step"]["others_cores"])
        print(f"| {name} ({r['image_size']} px) | {r['loader']['samples_per_s']:.0f} | {r['step']['samples_per_s']:.1f} "
              f"| {r['ratio']:.1f}x | >= {TARGET_RATIO:.0f}x | {'pass' if ok else 'FAIL'} "
              f"| {r['train']['samples_per_s']:.1f} | {100 * r['train']['data_wait_share']:.1f}% | {noise:.1f} |")
    if "retrieval" in results:
        r = results["retrieval"]
        print(f"\nheld-out area: trained on {r['train_tiles']} tiles for {r['steps']} steps "
              f"({r['train_seconds']:.0f} s, loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}); "
              f"{r['test_tiles']} held-out tiles, {r['trained']['n_texts']} captions")
        print("| model | i2t R@1/5/10 | t2i R@1/5/10 | mR |")
        print("| --- | --- | --- | --- |")
        for label in ("untrained", "trained"):
            m = r[label]
            print(f"| {label} | {m['i2t']['R@1']:.1f} / {m['i2t']['R@5']:.1f} / {m['i2t']['R@10']:.1f} "
                  f"| {m['t2i']['R@1']:.1f} / {m['t2i']['R@5']:.1f} / {m['t2i']['R@10']:.1f} | {m['mR']:.2f} |")
        print(f"| chance | | | {r['chance']['mR']:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
