"""Does contrastive filtering work on tiles the scorer never saw, and what does the image add?

    python -m benchmarks.bench_filter_quality [--quick] [--json PATH]
        [--data OUT --checkpoint RUN] [--steps N] [--fraction F] [--bootstrap N]

1. Corpus: unless ``--data`` is given, the demo recipe's inputs (two Swellendam aerial photos
   + OSM) are tiled at 128 px / 2.5 m with 96 px overlap into a temp dir (``rsdata run``).
2. Regions (as ``bench_train --retrieval``): the whole photo ``swellendam-3320d`` and the southern
   20% of ``swellendam-3420b`` (by ``geo.bounds_wgs84``) are held out; the rest is the training
   region; tiles straddling the block edge belong to none.
3. Corrupt: within each region separately, a seeded ``--fraction`` (default 0.25) of the tiles
   get all the captions of another tile of the same region (a cyclic swap, so every caption
   still occurs as often), and only between tiles whose visible classes (OSM tags marked visible,
   land-cover classes) are **disjoint**: a swap to a caption that may still be true is not a
   corruption. Which tiles were corrupted is known only to the benchmark.
4. Train the baseline on the corrupted *training region* only (``rsdata train --model
   rs-cnn-tiny --exclude-keys``), as a user would on their own noisy corpus; ``--checkpoint``
   skips training (it must have been trained with the same split).
5. Score everything through the ``rsdata score`` code path with the trained model and the same
   architecture untrained; beside them an **image-free detector**: the TF-IDF cosine of a tile's
   caption with the captions of its 8 nearest tiles (any, or only tiles not overlapping it),
   and the mean of its ranks with the trained scorer's.
6. Report per region ROC AUC of corrupted vs intact (corrupted should score lower) with a 95%
   bootstrap interval, the paired AUC difference scorer - image-free detector, and precision
   at the corrupted fraction; then run the real filter (``--top-fraction``) and count what it removes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rsdata.evaluate.bootstrap import auc_ci, paired_auc_difference, roc_auc  # noqa: F401 (roc_auc re-exported)

REPO = Path(__file__).resolve().parent.parent
MODEL = "rs-cnn-tiny"
REGIONS = ("training region", "held-out photo", "held-out block")


def precision_at_k(scores: np.ndarray, corrupted: np.ndarray, k: int) -> float:
    """Of the k lowest-scored pairs, the fraction that is corrupted."""
    lowest = np.argsort(scores, kind="mergesort")[:k]
    return float(np.asarray(corrupted)[lowest].mean())


def build_corpus(tmp: Path, quiet: bool) -> Path:
    """The demo inputs tiled at 128 px with 96 px overlap (absolute paths in a temp recipe)."""
    from rsdata.cli import main as cli

    recipe = yaml.safe_load((REPO / "pipelines" / "demo.yaml").read_text())
    base = REPO / "pipelines"
    recipe["inputs"] = [str((base / p).resolve()) for p in recipe.get("inputs", [])]
    for r in recipe["source"]["rasters"]:
        r["path"] = str((base / r["path"]).resolve())
    for stage in recipe["stages"]:
        for src in stage.get("sources", []):
            if "path" in src:
                src["path"] = str((base / src["path"]).resolve())
    recipe["name"] = "captionswap"
    recipe["source"].update({"tile": {"size": 128, "gsd": 2.5, "overlap": 96}, "keep_geotiff": False,
                             "partition_size": 256})
    recipe["output"] = {"dir": str(tmp / "corpus"), "max_samples_per_shard": 512, "max_bytes_per_shard": "64MB"}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    if cli(["run", str(path), "--workers", "2", *(["--quiet"] if quiet else [])]) != 0:
        raise RuntimeError("rsdata run failed")
    return tmp / "corpus"


def train(data: Path, exclude: Path, out: Path, steps: int, quiet: bool) -> Path:
    from rsdata.cli import main as cli

    argv = ["train", "--data", str(data), "--out", str(out), "--model", MODEL, "--steps", str(steps),
            "--batch-size", "64", "--exclude-keys", str(exclude), "--checkpoint-every", str(steps),
            "--log-every", "10", "--seed", "0"]
    import torch

    threads = torch.get_num_threads()
    try:
        if cli(argv + (["--quiet"] if quiet else [])) != 0:
            raise RuntimeError("rsdata train failed")
    finally:
        torch.set_num_threads(threads)  # the trainer sets its own thread count in this process
    return out


def visible_classes(meta: dict[str, Any]) -> frozenset[str]:
    """What the sample's metadata says is visible: OSM tags marked visible, land-cover classes."""
    out = {str(t.get("tag") or t.get("phrase")) for t in (meta.get("osm") or {}).get("tags", [])
           if isinstance(t, dict) and t.get("visible", True)}
    lc = meta.get("landcover") or {}
    out |= {f"landcover={c.get('name')}" for c in lc.get("classes", [])
            if isinstance(c, dict) and c.get("name") not in (None, "unknown")}
    return frozenset(out)


def swap_plan(classes: list[frozenset[str]], fraction: float, rng: np.random.Generator,
              texts: list[str] | None = None, tries: int = 50) -> dict[int, int]:
    """receiver -> donor: a cycle over about ``fraction`` of the samples in which each receiver
    gets the captions of a donor with **no visible class in common** (and another text).

    Built as a random walk over compatible samples; samples without any visible class never
    take part. Fewer than ``fraction`` are corrupted when the classes do not allow more (the
    plan says how many it made)."""
    n = len(classes)
    k = int(round(fraction * n))

    def ok(a: int, b: int) -> bool:
        return bool(classes[a]) and bool(classes[b]) and not (classes[a] & classes[b]) and \
            (texts is None or texts[a] != texts[b])

    best: list[int] = []
    for _ in range(tries):
        if k < 2:
            break
        order = [int(i) for i in rng.permutation(n) if classes[int(i)]]
        if not order:
            break
        cycle, used = [order[0]], {order[0]}
        while len(cycle) < k:
            nxt = next((j for j in order if j not in used and ok(cycle[-1], j)), None)
            if nxt is None:
                break
            cycle.append(nxt)
            used.add(nxt)
        while len(cycle) >= 2 and not ok(cycle[-1], cycle[0]):  # close the cycle
            cycle.pop()
        if len(cycle) > len(best):
            best = cycle
        if len(best) == k:
            break
    if len(best) < 2:
        return {}
    return {best[i]: best[(i + 1) % len(best)] for i in range(len(best))}


def corrupt(data: Path, out: Path, groups: dict[str, set[str]], fraction: float, seed: int
            ) -> tuple[Path, set[str]]:
    """A copy of the corpus in which ``fraction`` of each group's samples carry all the captions
    of another sample of the same group whose visible classes are disjoint from theirs.

    Swaps stay inside a group (region), so no held-out caption reaches training. Samples in no
    group are copied unchanged. Returns (corrupted corpus, the corrupted keys)."""
    from rsdata.corpus import Corpus
    from rsdata.corpus.derived import DerivedCorpusWriter

    corpus = Corpus(data)
    samples = [e.sample() for e in corpus.entries()]
    rng = np.random.default_rng(seed)
    receivers: dict[int, int] = {}
    for name in sorted(groups):
        members = [i for i, s in enumerate(samples) if s.key in groups[name]]
        plan = swap_plan([visible_classes(samples[i].meta) for i in members], fraction, rng,
                         [samples[i].caption for i in members])
        receivers.update({members[a]: members[b] for a, b in plan.items()})
    captions = [[dict(c) for c in s.meta["captions"]] for s in samples]
    writer = DerivedCorpusWriter(corpus, out, "captionswap-corrupted")
    for i, sample in enumerate(samples):
        if i in receivers:  # every caption of the donor replaces every caption of the receiver
            sample.meta = {**sample.meta, "captions": captions[receivers[i]]}
        writer.write(sample)
    writer.finish([{"name": "caption_swap", "in": len(samples), "out": len(samples), "dropped": {},
                    "counters": {"swapped": len(receivers)}}],
                  {"command": "benchmarks.bench_filter_quality", "fraction": fraction, "seed": seed,
                   "rule": "disjoint visible classes"})
    return out, {samples[i].key for i in receivers}


def separation(keys: list[str], intact_score: np.ndarray, corrupted: set[str], n_boot: int,
               reference: np.ndarray | None = None) -> dict[str, Any]:
    """AUC (corrupted should score lower) with its interval, precision at the corrupted count,
    and with ``reference`` the paired AUC difference to it."""
    bad = np.array([k in corrupted for k in keys])
    k = int(bad.sum())
    out: dict[str, Any] = {"samples": len(keys), "corrupted": k}
    if not k or k == len(keys):
        return out
    lo, hi = auc_ci(-intact_score, bad, n_boot)
    out.update({"roc_auc": round(roc_auc(-intact_score, bad), 4), "ci": [round(lo, 4), round(hi, 4)],
                "precision_at_k": round(precision_at_k(intact_score, bad, k), 4),
                "mean_intact": round(float(intact_score[~bad].mean()), 4),
                "mean_corrupted": round(float(intact_score[bad].mean()), 4)})
    if reference is not None:
        d = paired_auc_difference(-intact_score, -reference, bad, n_boot)
        out["minus_image_free"] = {"difference": round(d["difference"], 4), "ci": [round(x, 4) for x in d["ci"]]}
    return out


def score_and_filter(corrupted_corpus: Path, corrupted: set[str], scorer: Any, out: Path) -> dict[str, Any]:
    """Score with the real ``rsdata score`` path and filter with the real ``rsdata filter`` path
    (top fraction = the intact share of the whole corpus); returns the scores and what the filter removed."""
    from rsdata.filtering import Corpus, FilterSettings, decide
    from rsdata.scoring.rescore import score_corpus

    started = time.perf_counter()
    score_corpus(corrupted_corpus, out, scorer)
    seconds = time.perf_counter() - started
    scores = {e.key: float(e.meta()["scores"][scorer.name]) for e in Corpus(out).entries({"json"})}
    subset, _ = decide(Corpus(out), FilterSettings(top_fraction=1 - len(corrupted) / len(scores)))
    return {"scores": scores, "removed": set(subset.dropped), "score_seconds": round(seconds, 2)}


def image_free_scores(corpus: Path, disjoint: bool, k: int = 8) -> dict[str, float]:
    """Per tile, the TF-IDF agreement of its primary caption with all captions of its k nearest
    tiles (:func:`rsdata.evaluate.neighbour_caption_scores`): no pixel read, no label used."""
    from rsdata.corpus import Corpus
    from rsdata.evaluate import neighbour_caption_scores

    keys, captions, context, bounds = [], [], [], []
    for e in Corpus(corpus).entries({"json"}):
        meta = e.meta()
        caps = [str(c.get("text", "")) for c in meta.get("captions", [])]
        keys.append(e.key)
        captions.append(caps[0] if caps else "")
        context.append(" . ".join(caps))
        bounds.append(meta["geo"]["bounds_wgs84"])
    s = neighbour_caption_scores(captions, np.array(bounds), context, k=k, disjoint=disjoint)
    return dict(zip(keys, s.tolist()))


def _ranks(v: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(v, kind="mergesort"), kind="mergesort") / max(v.size - 1, 1)


DETECTORS = ("trained scorer", "untrained scorer", "image-free: neighbour captions",
             "image-free: non-overlapping neighbours", "trained scorer + neighbour captions")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_filter_quality", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short training run (a smoke test, weak model)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--data", type=Path, help="an existing 128 px corpus of both photos (default: built here)")
    ap.add_argument("--checkpoint", type=Path,
                    help="a baseline run trained on the corrupted training region (default: train one)")
    ap.add_argument("--steps", type=int, help="training steps (default 600; quick 40)")
    ap.add_argument("--fraction", type=float, default=0.25, help="fraction of each region's captions swapped")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUC intervals")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="progress bars of run/train")
    args = ap.parse_args(argv)

    import torch

    from rsdata.models import create_model, save_checkpoint
    from rsdata.scoring import create_scorer

    from benchmarks.bench_train import region_split

    steps = args.steps or (40 if args.quick else 600)
    quiet = not args.verbose
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rsdata-bench-filter-") as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        data = args.data or build_corpus(tmp, quiet)
        timings["corpus_s"] = round(time.perf_counter() - t, 1)
        split, tests, held = region_split(data)
        photo_name, block_name = list(tests)[:2]
        regions = {"training region": set(split.train), **{k: set(v) for k, v in held.items()}}
        corrupted_corpus, corrupted = corrupt(data, tmp / "corrupted", regions, args.fraction, args.seed)
        exclude = tmp / "not_for_training.txt"
        exclude.write_text("\n".join(split.not_for_training()) + "\n")
        t = time.perf_counter()
        run = args.checkpoint or train(corrupted_corpus, exclude, tmp / "run", steps, quiet)
        timings["train_s"] = round(time.perf_counter() - t, 1)
        trained = create_scorer("baseline", str(run), name="trained", device="auto")
        scored = {"trained scorer": score_and_filter(corrupted_corpus, corrupted, trained, tmp / "s_trained")}
        torch.manual_seed(args.seed)
        architecture = trained.describe().get("architecture", MODEL)
        untrained_ckpt = save_checkpoint(tmp / "untrained.pt", create_model(architecture, pretrained=False))
        untrained = create_scorer("baseline", str(untrained_ckpt), name="untrained", device="auto")
        scored["untrained scorer"] = score_and_filter(corrupted_corpus, corrupted, untrained, tmp / "s_untrained")
        t = time.perf_counter()
        free = {"image-free: neighbour captions": image_free_scores(corrupted_corpus, disjoint=False),
                "image-free: non-overlapping neighbours": image_free_scores(corrupted_corpus, disjoint=True)}
        timings["image_free_s"] = round(time.perf_counter() - t, 1)
        log = (Path(run) / "log.jsonl") if Path(run).is_dir() else None
        losses = [json.loads(line)["loss"] for line in log.read_text().splitlines()
                  if '"loss"' in line] if log is not None and log.is_file() else []

    scores = {**{name: r["scores"] for name, r in scored.items()}, **free}
    results: dict[str, Any] = {}
    for region, members in regions.items():
        keys = sorted(members)
        values = {name: np.array([s[k] for k in keys]) for name, s in scores.items()}
        values["trained scorer + neighbour captions"] = (_ranks(values["trained scorer"])
                                                         + _ranks(values["image-free: neighbour captions"])) / 2
        reference = values["image-free: neighbour captions"]
        results[region] = {name: separation(keys, values[name], corrupted, args.bootstrap,
                                            None if name.startswith("image-free") else reference)
                           for name in DETECTORS}
        for name, r in scored.items():
            removed = r["removed"] & members
            results[region][name]["filter_removed"] = len(removed)
            results[region][name]["filter_removed_corrupted"] = len(removed & corrupted)

    setup = {"corpus_samples": sum(len(v) for v in regions.values()) + len(split.excluded),
             "regions": {k: len(v) for k, v in regions.items()}, "excluded_edge_tiles": len(split.excluded),
             "corrupted": {k: len(v & corrupted) for k, v in regions.items()},
             "fraction": args.fraction, "swap_rule": "disjoint visible classes", "model": architecture,
             "trained_here": args.checkpoint is None, "steps": steps if args.checkpoint is None else None,
             "train_loss_first_last": [round(losses[0], 4), round(losses[-1], 4)] if losses else None,
             "timings": timings, "held_out": [photo_name, block_name]}
    print(f"\nsetup: {setup}")
    print(f"\n95% bootstrap intervals ({args.bootstrap} resamples of tiles); 'minus image-free' = paired AUC "
          "difference to the neighbour-caption detector")
    print("\n| region | detector | ROC AUC [95% CI] | minus image-free [95% CI] | precision @ corrupted count "
          "| filter removes (corrupted) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for region, per in results.items():
        for name in DETECTORS:
            g = per[name]
            if "roc_auc" not in g:
                if name == DETECTORS[0]:
                    print(f"| {region}: {g['samples']} ({g['corrupted']} corrupted) | all | n/a: no two tiles here "
                          "have disjoint visible classes, so no swap would be a corruption | | | |")
                continue
            diff = g.get("minus_image_free")
            dcell = f"{diff['difference']:+.3f} [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}]" if diff else ""
            fcell = (f"{g['filter_removed']} ({g['filter_removed_corrupted']})" if "filter_removed" in g else "")
            print(f"| {region}: {g['samples']} ({g['corrupted']} corrupted) | {name} | {g['roc_auc']:.3f} "
                  f"[{g['ci'][0]:.3f}, {g['ci'][1]:.3f}] | {dcell} | {g['precision_at_k']:.3f} | {fcell} |")
    print(f"\nchance: ROC AUC 0.5, precision = the corrupted share ({args.fraction:.2f}); 'filter removes' is "
          "rsdata filter --top-fraction over the whole corpus at its intact share, counted per region")
    machine = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "results": results, "machine": machine}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
