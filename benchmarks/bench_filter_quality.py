"""Does contrastive filtering work? Swap captions between samples, score, and measure separation.

    python -m benchmarks.bench_filter_quality [--quick] [--json PATH]
        [--data OUT --checkpoint RUN --test-prefix KEYPREFIX] [--steps N] [--fraction F]

1. Corpus: unless ``--data`` is given, the demo recipe's inputs (two Swellendam aerial photos
   + OSM) are tiled at 128 px / 2.5 m with 96 px overlap into a temp dir (``rsdata run``).
2. Corrupt: a seeded ``--fraction`` (default 0.25) of the samples get another sample's caption
   (a cyclic swap within each photo; never a caption with the same text), written as a derived
   corpus through the normal writer. Which samples were corrupted is known only to the benchmark.
3. Train the baseline on the *corrupted* corpus, as a user would on their own noisy corpus
   (``rsdata train --model rs-cnn-tiny``), leaving out every tile of the photo
   ``swellendam-3320d`` (``--exclude-keys``); ``--checkpoint`` skips training.
4. Score the corrupted corpus through the ``rsdata score`` code path with the trained model and,
   as the in-process baseline, the same architecture untrained.
5. Report, per photo (the trained-on one, whose noisy pairs the model saw, and the held-out
   one), ROC AUC of corrupted vs intact (corrupted should score lower) and precision at the
   corrupted fraction (of the k lowest-scored pairs, how many are corrupted); then run the real
   filter (``--top-fraction`` = the intact share) and count what it removes.
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

REPO = Path(__file__).resolve().parent.parent
TEST_PREFIX = "swellendam-3320d_"
MODEL = "rs-cnn-tiny"


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        raise ValueError("ROC AUC needs both classes")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < scores.size:  # average ranks over ties
        j = i
        while j + 1 < scores.size and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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


def swap_plan(texts: list[str], fraction: float, rng: np.random.Generator) -> dict[int, int]:
    """receiver -> donor: a cyclic swap of captions among a random ``fraction`` of the samples,
    in which no sample receives a caption with its own text."""
    k = int(round(fraction * len(texts)))
    if k < 2:
        return {}
    chosen = rng.choice(len(texts), size=k, replace=False)
    partner: dict[int, int] = {}
    for _ in range(100):
        order = rng.permutation(chosen)
        partner = {int(order[i]): int(order[(i + 1) % k]) for i in range(k)}
        if all(texts[a] != texts[b] for a, b in partner.items()):
            return partner
    return {a: b for a, b in partner.items() if texts[a] != texts[b]}


def corrupt(data: Path, out: Path, held_out_prefix: str, fraction: float, seed: int) -> tuple[Path, set[str]]:
    """A copy of the corpus in which ``fraction`` of the samples carry another sample's caption.

    Captions are swapped within the training photo and within the held-out photo separately, so
    no held-out caption reaches training. Returns (corrupted corpus, the corrupted keys).
    """
    from rsdata.corpus import Corpus
    from rsdata.corpus.derived import DerivedCorpusWriter

    corpus = Corpus(data)
    samples = [e.sample() for e in corpus.entries()]
    rng = np.random.default_rng(seed)
    receivers: dict[int, int] = {}
    for held in (False, True):
        group = [i for i, s in enumerate(samples) if s.key.startswith(held_out_prefix) == held]
        plan = swap_plan([samples[i].caption for i in group], fraction, rng)
        receivers.update({group[a]: group[b] for a, b in plan.items()})
    primary = [dict(s.meta["captions"][0]) for s in samples]
    writer = DerivedCorpusWriter(corpus, out, "captionswap-corrupted")
    for i, sample in enumerate(samples):
        if i in receivers:  # the donor's caption replaces the primary one (txt) and the others
            sample.meta = {**sample.meta, "captions": [primary[receivers[i]]]}
        writer.write(sample)
    writer.finish([{"name": "caption_swap", "in": len(samples), "out": len(samples), "dropped": {},
                    "counters": {"swapped": len(receivers)}}],
                  {"command": "benchmarks.bench_filter_quality", "fraction": fraction, "seed": seed})
    return out, {samples[i].key for i in receivers}


def separation(keys: list[str], scores: np.ndarray, corrupted: set[str]) -> dict[str, Any]:
    bad = np.array([k in corrupted for k in keys])
    k = int(bad.sum())
    return {"samples": len(keys), "corrupted": k, "roc_auc": round(roc_auc(-scores, bad), 4),
            "precision_at_k": round(precision_at_k(scores, bad, k), 4),
            "mean_score_intact": round(float(scores[~bad].mean()), 4),
            "mean_score_corrupted": round(float(scores[bad].mean()), 4)}


def evaluate(corrupted_corpus: Path, corrupted: set[str], held_out_prefix: str, scorer: Any,
             out: Path) -> dict[str, Any]:
    """Score with the real ``rsdata score`` path, filter each photo with the real ``rsdata
    filter`` path (top fraction = the intact share), and measure both against the truth."""
    from rsdata.filtering import Corpus, FilterSettings, decide
    from rsdata.scoring.rescore import score_corpus

    started = time.perf_counter()
    score_corpus(corrupted_corpus, out, scorer)
    seconds = time.perf_counter() - started
    keys, scores = [], []
    for entry in Corpus(out).entries({"json"}):
        keys.append(entry.key)
        scores.append(entry.meta()["scores"][scorer.name])
    s = np.array(scores)
    result: dict[str, Any] = {"score_seconds": round(seconds, 2)}
    for group, held in (("trained_photo", False), ("held_out_photo", True)):
        idx = [i for i, k in enumerate(keys) if k.startswith(held_out_prefix) == held]
        result[group] = separation([keys[i] for i in idx], s[idx], corrupted)
    # the filter itself, over the whole scored corpus: keep the intact share
    subset, _ = decide(Corpus(out), FilterSettings(top_fraction=1 - len(corrupted) / len(keys)))
    removed = set(subset.dropped)
    result["filter"] = {"removed": len(removed), "removed_corrupted": len(removed & corrupted),
                        "precision": round(len(removed & corrupted) / max(len(removed), 1), 4),
                        "recall": round(len(removed & corrupted) / max(len(corrupted), 1), 4)}
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_filter_quality", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short training run (a smoke test, weak model)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--data", type=Path, help="an existing corpus (default: built from the demo inputs)")
    ap.add_argument("--checkpoint", type=Path, help="a trained baseline run or checkpoint (default: train one)")
    ap.add_argument("--test-prefix", default=TEST_PREFIX, help="key prefix of the held-out samples")
    ap.add_argument("--steps", type=int, help="training steps (default 300; quick 40)")
    ap.add_argument("--fraction", type=float, default=0.25, help="fraction of held-out captions swapped")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="progress bars of run/train")
    args = ap.parse_args(argv)

    import torch

    from rsdata.models import create_model, save_checkpoint
    from rsdata.scoring import create_scorer

    steps = args.steps or (40 if args.quick else 300)
    quiet = not args.verbose
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rsdata-bench-filter-") as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        data = args.data or build_corpus(tmp, quiet)
        timings["corpus_s"] = round(time.perf_counter() - t, 1)
        corrupted_corpus, corrupted = corrupt(data, tmp / "corrupted", args.test_prefix, args.fraction, args.seed)
        from rsdata.filtering import Corpus

        keys = [e.key for e in Corpus(corrupted_corpus).entries({"json"})]
        held_out = [k for k in keys if k.startswith(args.test_prefix)]
        if len(held_out) < 20:
            raise RuntimeError(f"only {len(held_out)} samples with prefix {args.test_prefix!r}: need 20 or more")
        exclude = tmp / "held_out_keys.txt"
        exclude.write_text("\n".join(held_out) + "\n")
        t = time.perf_counter()
        run = args.checkpoint or train(corrupted_corpus, exclude, tmp / "run", steps, quiet)
        timings["train_s"] = round(time.perf_counter() - t, 1)
        trained = create_scorer("baseline", str(run), name="trained", device="auto")
        results = {"trained": evaluate(corrupted_corpus, corrupted, args.test_prefix, trained, tmp / "s_trained")}
        torch.manual_seed(args.seed)
        architecture = trained.describe().get("architecture", MODEL)
        untrained_ckpt = save_checkpoint(tmp / "untrained.pt", create_model(architecture, pretrained=False))
        untrained = create_scorer("baseline", str(untrained_ckpt), name="untrained", device="auto")
        results["untrained"] = evaluate(corrupted_corpus, corrupted, args.test_prefix, untrained, tmp / "s_untrained")
        log = (Path(run) / "log.jsonl") if Path(run).is_dir() else None
        losses = [json.loads(line)["loss"] for line in log.read_text().splitlines()
                  if '"loss"' in line] if log is not None and log.is_file() else []

    setup = {"corpus_samples": len(keys), "held_out_photo_samples": len(held_out), "corrupted": len(corrupted),
             "fraction": args.fraction, "model": architecture,
             "trained_here": args.checkpoint is None, "steps": steps if args.checkpoint is None else None,
             "train_loss_first_last": [round(losses[0], 4), round(losses[-1], 4)] if losses else None,
             "timings": timings}
    print(f"\nsetup: {setup}")
    print("\n| scorer | samples | ROC AUC | precision @ corrupted fraction | mean score intact / corrupted |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        for group, label in (("trained_photo", "trained-on photo (noisy pairs in training)"),
                             ("held_out_photo", "held-out photo (never trained on)")):
            g = r[group]
            print(f"| {name} baseline | {label}: {g['samples']} ({g['corrupted']} corrupted) | {g['roc_auc']:.3f} | "
                  f"{g['precision_at_k']:.3f} | {g['mean_score_intact']:.3f} / {g['mean_score_corrupted']:.3f} |")
    for name, r in results.items():
        f = r["filter"]
        print(f"\nrsdata filter --top-fraction {1 - len(corrupted) / len(keys):.3f} with the {name} scores: removes "
              f"{f['removed']} samples, {f['removed_corrupted']} of them corrupted (precision {f['precision']:.3f}, "
              f"recall {f['recall']:.3f})")
    ratio = results["trained"]["trained_photo"]["roc_auc"] / max(results["untrained"]["trained_photo"]["roc_auc"], 1e-9)
    print(f"\ntrained vs untrained ROC AUC (trained-on photo): {ratio:.2f}x (chance = 0.5; precision of a "
          f"random pick = {args.fraction:.2f})")
    machine = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "results": results, "machine": machine}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
