"""Training input pipeline vs training step: is the data loader the bottleneck?

    python -m benchmarks.bench_train [--quick] [--json PATH] [--models rs-cnn-small rs-cnn-tiny]
                                     [--workers 2] [--retrieval | --retrieval-only]
                                     [--data CORPUS] [--checkpoint RUN]

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
the held-out-region experiment of the README (``--retrieval-only``: only that): a 128 px corpus
of both bundled Swellendam photos (``rsdata run``, or ``--data``); two regions held out whole
(the photo swellendam-3320d, and the southern 20% of swellendam-3420b by footprint, tiles on the
block edge used by neither side); rs-cnn-tiny trained for a few minutes on the rest
(``--checkpoint`` skips that); then on each region the trained model, the untrained one, the
no-learning histogram caption-transfer baseline and random similarities, every R@k with a 95%
bootstrap interval, the share of test captions found verbatim in training, and the verdict
whether the trained model beats each reference outside the interval.
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


# -- the held-out-region retrieval experiment ----------------------------------------------------
TEST_PHOTO = "swellendam-3320d"
BLOCK_PHOTO, BLOCK_SIDE, BLOCK_FRACTION = "swellendam-3420b", "south", 0.2
SYSTEMS = ("trained", "untrained", "histogram", "random")


def region_split(corpus: Path) -> tuple[Any, dict[str, list[str]], dict[str, list[str]]]:
    """Two held-out regions, never strips of a training photo: the whole photo ``TEST_PHOTO``
    and the southern 20% of ``BLOCK_PHOTO`` (by ``geo.bounds_wgs84``; tiles straddling the block
    edge are used by neither side). Returns the merged split, the retrieval test sets (tiles
    thinned to <= 50% mutual overlap, per region and both together) and every tile of each region."""
    from rsdata.evaluate import splits

    tiles = splits.read_tiles([corpus])
    photo = splits.source_holdout(tiles, [TEST_PHOTO])
    block = splits.block_holdout(tiles, splits.edge_block(tiles, BLOCK_PHOTO, BLOCK_SIDE, BLOCK_FRACTION),
                                 sources=[BLOCK_PHOTO])
    split = splits.merge([photo, block])
    tests = {f"{TEST_PHOTO} (whole photo)": splits.thin(tiles, photo.test),
             f"{BLOCK_PHOTO} {BLOCK_SIDE} {int(BLOCK_FRACTION * 100)}% block": splits.thin(tiles, block.test)}
    tests["both regions (one gallery)"] = sorted(set().union(*tests.values()))
    return split, tests, {"held-out photo": photo.test, "held-out block": block.test}


def retrieval_experiment(work: Path, steps: int, data: Path | None = None, checkpoint: Path | None = None,
                         n_boot: int = 1000) -> dict[str, Any]:
    """Train rs-cnn-tiny outside two held-out regions (:func:`region_split`); evaluate the trained
    model, the untrained one, the histogram caption-transfer baseline and random similarities on
    each region with bootstrap intervals, the verbatim share, and the verdicts."""
    import torch

    from rsdata.evaluate import (EvalSpec, HistogramBaseline, RandomBaseline, evaluate, learning_verdict,
                                 shard_retrieval_set)
    from rsdata.models import create_model, load_checkpoint
    from rsdata.train import TrainConfig, train

    from benchmarks.bench_filter_quality import build_corpus

    if data is None:
        log("building the 128 px corpus of both photos with rsdata run")
        data = build_corpus(work, quiet=True)
    split, tests, _ = region_split(data)
    (work / "exclude.txt").write_text("\n".join(split.not_for_training()) + "\n")
    log(f"{split.summary()}; test tiles after thinning: {({k: len(v) for k, v in tests.items()})}")
    result: dict[str, Any] = {"split": split.summary(), "steps": steps}
    if checkpoint is None:
        with Meter() as m:
            out = train(TrainConfig(data=[str(data)], out=str(work / "run"), model="rs-cnn-tiny", steps=steps,
                                    batch_size=64, lr=1e-3, workers=1, exclude_keys=str(work / "exclude.txt"),
                                    log_every=20, checkpoint_every=steps, progress=False))
        checkpoint = work / "run"
        result.update({"train_seconds": m.seconds, "first_loss": out["first_loss"], "last_loss": out["last_loss"],
                       "others_cores": m.others_cores})
    train_keys = set(split.train)
    train_side = shard_retrieval_set([str(data)], keep=train_keys.__contains__)
    result["corpus"] = {"tiles": len(split.train) + len(split.test) + len(split.excluded),
                        "train_captions": len(train_side.captions),
                        "distinct_train_captions": len(set(train_side.captions))}
    systems: dict[str, Any] = {"trained": load_checkpoint(checkpoint, device="cpu")}
    torch.manual_seed(0)
    systems["untrained"] = create_model("rs-cnn-tiny").eval()
    systems["histogram"] = HistogramBaseline(k=10).fit(train_side)
    systems["random"] = RandomBaseline(seed=0)
    result["sets"] = {}
    for name, keys in tests.items():
        wanted = set(keys)
        ev = shard_retrieval_set([str(data)], keep=wanted.__contains__)
        ev.name = name
        spec = EvalSpec(retrieval=[ev], n_boot=n_boot, train_captions=train_side.captions,
                        train_side=f"the {len(train_side.images)} training tiles")
        runs = {label: evaluate(sys_, spec, None, label)["sets"][0] for label, sys_ in systems.items()}
        pick = ("i2t", "t2i", "mR", "ci", "n_images", "n_texts", "chance")
        entry: dict[str, Any] = {label: {k: r[k] for k in pick} for label, r in runs.items()}
        entry["verbatim"] = runs["trained"]["verbatim"]
        entry["distinct_test_captions"] = len(set(ev.captions))
        entry["verdicts"] = {f"trained vs {b}": learning_verdict(runs["trained"], runs[b], n_boot)
                             for b in ("histogram", "random", "untrained")}
        entry["verdicts"]["histogram vs random"] = learning_verdict(runs["histogram"], runs["random"], n_boot)
        result["sets"][name] = entry
    return result


def print_retrieval(r: dict[str, Any]) -> None:
    from rsdata.evaluate import verdict_line

    sp = r["split"]
    head = (f"\nheld-out regions: {sp['description']}; {sp['train']} training tiles, {sp['excluded']} used by "
            f"neither side")
    if "train_seconds" in r:
        head += (f"; rs-cnn-tiny {r['steps']} steps ({r['train_seconds']:.0f} s, loss {r['first_loss']:.3f} -> "
                 f"{r['last_loss']:.3f}, other load {r['others_cores']:.1f} cores)")
    print(head)
    c = r["corpus"]
    print(f"corpus: {c['tiles']} tiles; training side {c['train_captions']} captions, {c['distinct_train_captions']} "
          "distinct")
    for name, e in r["sets"].items():
        v = e["verbatim"]
        print(f"\n{name}: {e['trained']['n_images']} tiles, {e['trained']['n_texts']} captions "
              f"({e['distinct_test_captions']} distinct); "
              f"{100 * v['share']:.1f}% of test captions occur verbatim in training "
              f"({100 * v['images_any']:.0f}% of tiles have one); 95% bootstrap intervals "
              f"({e['trained']['ci']['n_boot']} resamples of tiles)")
        print("| system | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 | mR |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for label in SYSTEMS:
            m = e[label]
            cells = [f"{m[d][k]:.1f} [{m['ci'][d][k][0]:.1f}, {m['ci'][d][k][1]:.1f}]"
                     for d in ("i2t", "t2i") for k in ("R@1", "R@5", "R@10")]
            print(f"| {label} | " + " | ".join(cells)
                  + f" | {m['mR']:.2f} [{m['ci']['mR'][0]:.2f}, {m['ci']['mR'][1]:.2f}] |")
        print(f"| chance (analytic) | | | | | | | {e['trained']['chance']['mR']:.2f} |")
        for key, v in e["verdicts"].items():
            a, b = key.split(" vs ")
            claim = "the baseline learns" if key == "trained vs histogram" else None
            print("  " + verdict_line(a, v, b, claim))


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
    ap.add_argument("--retrieval", action="store_true", help="also run the held-out-region experiment (minutes)")
    ap.add_argument("--retrieval-only", action="store_true", help="only the held-out-region experiment")
    ap.add_argument("--retrieval-steps", type=int, default=600)
    ap.add_argument("--data", type=Path, help="--retrieval: an existing 128 px corpus of both Swellendam photos")
    ap.add_argument("--checkpoint", type=Path, help="--retrieval: a run trained with the same split (skip training)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="--retrieval: bootstrap resamples (default 1000)")
    args = ap.parse_args(argv)

    import torch

    from rsdata.models import create_model
    from rsdata.train.distributed import DistInfo
    from rsdata.train.trainer import TrainConfig, cpu_threads

    models = [] if args.retrieval_only else (
        args.models or (["rs-cnn-tiny"] if args.quick else ["rs-cnn-small", "rs-cnn-tiny"]))
    n_samples, n_batches, n_steps = (256, 6, 4) if args.quick else (512, 16, 8)
    results: dict[str, Any] = {"machine": machine(), "workers": args.workers, "batch_size": args.batch_size,
                               "models": {}}
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        if models:
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
        if args.retrieval or args.retrieval_only:
            results["retrieval"] = retrieval_experiment(work, args.retrieval_steps, args.data, args.checkpoint,
                                                        args.bootstrap)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nbench_train: {results['machine']['cpu_count']} CPUs, torch {results['machine']['torch']}, "
          f"batch {args.batch_size}, {args.workers} loader workers, step on {threads} thread(s)\n")
    if results["models"]:
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
        print_retrieval(results["retrieval"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
