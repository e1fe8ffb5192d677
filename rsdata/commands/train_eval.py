"""``rsdata train`` and ``rsdata eval``: train the baseline dual encoder on shards, measure it.

    rsdata train --data out/demo --model rs-cnn-small --out runs/demo --epochs 10
    rsdata train ... --out runs/demo --resume                   # continue exactly where it stopped
    torchrun --nproc-per-node 4 -m rsdata train ...             # DDP on 4 GPUs
    rsdata eval --checkpoint runs/demo --data out/demo --holdout 0.1
    rsdata eval --checkpoint runs/demo --karpathy dataset_rsicd.json --images RSICD_images
    rsdata eval --checkpoint runs/demo --classes UCMerced_LandUse/Images
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rsdata.argtypes import bounded
from rsdata.argtypes import nonnegative_int as _nonnegative_int
from rsdata.argtypes import positive_float as _positive_float
from rsdata.argtypes import positive_int as _positive_int
from rsdata.errors import UsageError  # noqa: F401  (re-exported: it used to live here)

_fraction = bounded(float, low=0, high=1, high_open=True)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "image_size", None):
        out["image"] = {"size": args.image_size}
    if getattr(args, "text_path", None):
        out["text"] = {"path": str(Path(args.text_path).expanduser().resolve())}
    return out


# -- synthetic samples ---------------------------------------------------------------------------
SYNTHETIC_HELP = ("synthetic samples (json synthetic: true, or origin type/root synthetic): include them, "
                  "exclude them, or use only them")
LEFT_OUT_FILE = "keys-left-out.txt"


def _train_exclusions(args: argparse.Namespace) -> str | None:
    """The key file ``rsdata train`` leaves out: --exclude-keys, plus the samples --synthetic
    leaves out (written to RUN/keys-left-out.txt, so a resume sees the same keys)."""
    from rsdata.corpus.samples import SampleDataError, read_key_file, synthetic_split

    split = synthetic_split(args.data)
    if args.synthetic == "include":
        if split.synthetic:
            print(f"rsdata train: {len(split.synthetic)} of {len(split.keys)} samples are synthetic and "
                  "are trained on (--synthetic exclude leaves them out)", file=sys.stderr)
        return args.exclude_keys
    left = split.left_out(args.synthetic)
    if len(left) == len(split.keys):
        raise SampleDataError(f"{split.describe(args.synthetic)}: nothing left to train on")
    print(f"rsdata train: {split.describe(args.synthetic)}", file=sys.stderr)
    if args.exclude_keys:
        left = left | read_key_file(args.exclude_keys)
    if not left:
        return None
    from rsdata.atomic import atomic_write_bytes

    path = Path(args.out) / LEFT_OUT_FILE
    header = (f"# keys rsdata train leaves out: --synthetic {args.synthetic}"
              + (f" and --exclude-keys {args.exclude_keys}" if args.exclude_keys else "") + "\n")
    atomic_write_bytes(path, (header + "".join(k + "\n" for k in sorted(left))).encode("utf-8"))
    return str(path)


def _eval_keep(args: argparse.Namespace, keys: frozenset[str] | None) -> Any:
    """The keep(key) filter of ``rsdata eval --data``: --keys and --synthetic together."""
    if args.synthetic == "include":
        return keys.__contains__ if keys else None
    from rsdata.corpus.samples import synthetic_split

    split = synthetic_split(args.data)
    left = split.left_out(args.synthetic)
    if split.synthetic or args.synthetic == "only":
        print(f"rsdata eval: {split.describe(args.synthetic)}", file=sys.stderr)
    return lambda key: key not in left and (keys is None or key in keys)


# -- train ----------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from rsdata.models import list_models

    if args.list_models:
        print("\n".join(list_models()))
        return 0
    if not args.data or not args.out:
        raise UsageError("rsdata train needs --data OUT [OUT ...] and --out RUN (see rsdata train --help)")
    if args.steps is None and args.epochs is None:
        raise UsageError("say how long to train: --steps N or --epochs E")
    from rsdata.train import TrainConfig, train

    from rsdata.lock import LOCK_NAME, command_line, output_lock

    # one training process per run directory; under torchrun every rank takes its own lock file
    # (rank 0 the plain one), so a second launch on the same --out fails on every rank at once
    rank = int(os.environ.get("RANK", "0") or 0) if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else 0
    try:
        with output_lock(Path(args.out), command_line(),
                         name=LOCK_NAME if rank == 0 else f"{LOCK_NAME}.rank{rank}"):
            # under the lock: the key file of what is left out is written into the run directory
            exclude_keys = _train_exclusions(args)
            cfg = TrainConfig(
                data=args.data, out=args.out, model=args.model, model_overrides=_overrides(args), steps=args.steps,
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                warmup=args.warmup, workers=args.workers, seed=args.seed, augment=not args.no_augment,
                caption=args.caption, holdout=args.holdout, holdout_seed=args.holdout_seed,
                exclude_keys=exclude_keys, checkpoint_every=args.checkpoint_every,
                keep_checkpoints=args.keep_checkpoints,
                log_every=args.log_every, resume=args.resume, stop_after=args.stop_after, device=args.device,
                precision=args.precision, compile=args.compile, threads=args.threads, progress=not args.quiet)
            result = train(cfg)
    except KeyboardInterrupt:
        print(f"rsdata train: interrupted; the last finished step is checkpointed in {args.out}: "
              "run the same command with --resume to continue", file=sys.stderr)
        return 130
    first, last = result["first_loss"], result["last_loss"]
    state = "finished" if result["finished"] else "stopped (continue with --resume)"
    losses = f"loss {first:.4f} -> {last:.4f}" if first is not None else "no steps run"
    print(f"rsdata train: {state} at step {result['step']}/{result['total_steps']} on {result['device']}, "
          f"{losses}; checkpoints in {Path(args.out) / 'checkpoints'}, "
          f"log in {Path(args.out) / 'log.jsonl'}")
    return 0


# -- eval -----------------------------------------------------------------------------------------
def _train_side(args: argparse.Namespace, eval_keys: set[str], images: bool) -> tuple[Any, list[str], str] | None:
    """The training side a baseline learns from and verbatim shares are measured against:
    --train-data (default: --data) minus the evaluated keys, --train-exclude-keys and
    --train-holdout; without shards, the Karpathy file's train split. Returns (a RetrievalSet
    with images, or None when ``images`` is off and only captions are read; its captions; what it is)."""
    from rsdata.corpus import Corpus
    from rsdata.corpus.samples import captions_of, is_holdout, read_key_file
    from rsdata.evaluate import EvalDataError, read_karpathy, shard_retrieval_set

    corpora = args.train_data or args.data
    if corpora:
        excluded = read_key_file(args.train_exclude_keys) if args.train_exclude_keys else frozenset()
        frac, seed = (args.train_holdout if args.train_holdout is not None else args.holdout), args.holdout_seed
        all_captions = args.captions == "all"

        def keep(key: str) -> bool:
            return key not in eval_keys and key not in excluded and not is_holdout(key, frac, seed)

        data = None
        if images:
            data = shard_retrieval_set(corpora, keep=keep, all_captions=all_captions)
            captions, n = data.captions, len(data.images)
        else:  # captions only: the txt and json members
            captions, n = [], 0
            for corpus in corpora:
                for e in Corpus(corpus).entries({"txt", "json"}):
                    if keep(e.key):
                        captions += captions_of({"__key__": e.key, **e.members}, e.shard, all_captions)
                        n += 1
            if not n:
                raise EvalDataError("the training side is empty")
        what = (f"{n} tiles of {', '.join(map(str, corpora))} not evaluated"
                + (f", not in {args.train_exclude_keys}" if args.train_exclude_keys else "")
                + (f", outside the {frac:g} holdout" if frac else ""))
        return data, captions, what
    if args.karpathy:
        data = read_karpathy(args.karpathy, args.images, split="train")
        return data, data.captions, f"the train split of {args.karpathy} ({len(data.images)} images)"
    return None


def cmd_eval(args: argparse.Namespace) -> int:
    if sum(map(bool, (args.checkpoint, args.model, args.baseline))) != 1:
        raise UsageError("give exactly one of --checkpoint RUN (a trained model), --model NAME "
                         "(a freshly initialised model: the untrained reference) or --baseline "
                         "histogram|random (a reference that learns nothing)")
    if not (args.data or args.karpathy or args.classes):
        raise UsageError("nothing to evaluate on: give --data OUT, --karpathy JSON --images DIR, "
                         "and/or --classes DIR")
    if args.karpathy and not args.images:
        raise UsageError("--karpathy needs --images DIR (the folder holding the files the JSON names)")
    if args.baseline and args.classes:
        raise UsageError("--baseline ranks captions of retrieval sets (--data, --karpathy); zero-shot "
                         "(--classes) needs a dual encoder")
    if args.compare and args.baseline:
        raise UsageError("--compare evaluates the baselines beside a model: use it with --checkpoint or --model")
    import torch

    from rsdata.evaluate import (EvalSpec, HistogramBaseline, RandomBaseline, evaluate, learning_verdict,
                                 read_class_folders, read_karpathy, shard_retrieval_set, verdict_line)
    from rsdata.evaluate.datasets import read_classnames, read_templates
    from rsdata.evaluate.run import summary_lines, write_report
    from rsdata.models import create_model, load_checkpoint
    from rsdata.corpus.samples import read_key_file

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.checkpoint:
        model: Any = load_checkpoint(args.checkpoint, device=device)
        source = str(args.checkpoint)
        ckpt = Path(args.checkpoint)
        default_out = ckpt / "eval" if ckpt.is_dir() else ckpt.parent / "eval"
    elif args.model:
        torch.manual_seed(args.seed)
        model = create_model(args.model, **_overrides(args)).to(device).eval()
        source = f"untrained {args.model} (seed {args.seed})"
        default_out = Path(f"eval-{args.model}-untrained")
    else:
        model = None  # the baseline, once its training side is read
        default_out = Path(f"eval-{args.baseline}-baseline")
    spec = EvalSpec(n_boot=args.bootstrap, seed=args.seed)
    if args.data:
        keys = read_key_file(args.keys) if args.keys else None
        spec.retrieval.append(shard_retrieval_set(
            args.data, holdout=args.holdout, holdout_seed=args.holdout_seed,
            all_captions=args.captions == "all", max_images=args.max_images,
            keep=_eval_keep(args, keys)))
    if args.karpathy:
        spec.retrieval.append(read_karpathy(args.karpathy, args.images, split=args.split or None,
                                            max_images=args.max_images))
    if args.classes:
        classes = read_class_folders(args.classes, read_classnames(args.classnames))
        spec.zero_shot.append((classes, read_templates(args.templates)))
    eval_keys = {img.id for r in spec.retrieval for img in r.images} if args.data else set()
    needs_train = args.baseline == "histogram" or args.compare
    from rsdata.evaluate import EvalDataError

    try:
        train = (_train_side(args, eval_keys, images=needs_train)
                 if (needs_train or args.train_data or spec.retrieval) else None)
    except EvalDataError:
        if needs_train or args.train_data:
            raise
        train = None  # e.g. evaluating on every tile: no training side, no verbatim share
    if needs_train and train is None:
        raise UsageError("the histogram baseline learns from a training side: give --train-data OUT "
                         "(with --train-exclude-keys FILE as given to rsdata train)")
    if train is not None:
        spec.train_captions, spec.train_side = train[1], train[2]

    baselines: dict[str, Any] = {}
    if args.baseline == "histogram" or args.compare:
        assert train is not None
        baselines["histogram"] = HistogramBaseline(k=args.neighbours).fit(train[0])  # type: ignore[arg-type]
    if args.baseline == "random" or args.compare:
        baselines["random"] = RandomBaseline(seed=args.seed)
    if model is None:
        model = baselines.pop(args.baseline)
        source = f"{args.baseline} baseline, fitted on {train[2]}" if train and args.baseline == "histogram" \
            else f"{args.baseline} baseline"
    out_dir = Path(args.out) if args.out else default_out
    report = evaluate(model, spec, None, source, batch_size=args.batch_size)
    if baselines:
        ref_spec = EvalSpec(retrieval=spec.retrieval, n_boot=spec.n_boot, seed=spec.seed)
        report["baselines"] = {}
        for name, ref in baselines.items():
            r = evaluate(ref, ref_spec, None, f"{name} baseline", batch_size=args.batch_size)
            report["baselines"][name] = {"model": r["model"], "baseline": r["baseline"], "sets": r["sets"]}
        report["verdicts"] = []
        if spec.n_boot:
            for i, s in enumerate(report["sets"]):
                if s["kind"] != "retrieval":
                    continue
                for name, r in report["baselines"].items():
                    v = learning_verdict(s, r["sets"][i], spec.n_boot, spec.level, spec.seed)
                    report["verdicts"].append({"set": s["name"], "against": name, **v})
    write_report(report, out_dir)
    print("\n".join(summary_lines(report)))
    for name, r in report.get("baselines", {}).items():
        print("\n".join("  " + ln for ln in summary_lines({"model": r["model"], "source": f"{name} baseline",
                                                          "sets": r["sets"]})))
    for v in report.get("verdicts", []):
        claim = "the model learns" if v["against"] == "histogram" else None
        print(verdict_line(f"{report['model']} on {v['set']}", v, f"the {v['against']} baseline", claim))
    print(f"report: {out_dir / 'report.json'}, figure: {out_dir / 'report.png'}")
    if args.json:
        json.dump(report, sys.stdout)
    return 0


# -- parsers --------------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    t = sub.add_parser("train", help="train the baseline dual encoder on rsdata shards",
                       description="Train a CLIP-style dual encoder on the shards of one or more "
                                   "`rsdata run` outputs (streamed; lengths from their manifests).")
    t.add_argument("--data", nargs="+", metavar="OUT",
                   help="output directories of rsdata run (manifest.json)")
    t.add_argument("--out", metavar="RUN", help="run directory: checkpoints/, log.jsonl, model_config.json")
    t.add_argument("--model", default="rs-cnn-small",
                   help="model config name or .json path (default rs-cnn-small)")
    t.add_argument("--list-models", action="store_true", help="print the known model configs and exit")
    t.add_argument("--image-size", type=_positive_int, help="override the config's image size (pixels)")
    t.add_argument("--text-path", help="override an hf text tower's local model directory")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive_int, help="optimizer steps of the whole schedule")
    length.add_argument("--epochs", type=_positive_float, help="passes over the training samples")
    t.add_argument("--batch-size", type=_positive_int, default=64, help="per process (default 64)")
    t.add_argument("--lr", type=_positive_float, default=5e-4, help="peak learning rate (default 5e-4)")
    t.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    t.add_argument("--warmup", type=_nonnegative_int, help="linear warmup steps (default 5%% of the steps)")
    t.add_argument("--workers", type=_nonnegative_int, default=2, help="data-loader processes (default 2)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--caption", choices=("random", "txt"), default="random",
                   help="random: any caption of the sample each epoch; txt: the primary caption only")
    t.add_argument("--no-augment", action="store_true", help="no flips / 90-degree rotations")
    t.add_argument("--holdout", type=_fraction, default=0.0,
                   help="leave this fraction of keys out of training "
                        "(evaluate them with rsdata eval --holdout)")
    t.add_argument("--holdout-seed", type=int, default=0)
    t.add_argument("--exclude-keys", metavar="FILE",
                   help="never train on the sample keys listed in FILE (one per line), "
                        "e.g. a held-out area")
    t.add_argument("--synthetic", choices=("include", "exclude", "only"), default="include",
                   help=SYNTHETIC_HELP + ". Default include: a corpus that holds generated scenes was "
                        "made to train on them (the count is printed); exclude trains on real imagery "
                        "only")
    t.add_argument("--checkpoint-every", type=_positive_int, default=500, help="steps (default 500)")
    t.add_argument("--keep-checkpoints", type=_nonnegative_int, default=2,
                   help="step checkpoints kept besides latest.pt (default 2)")
    t.add_argument("--log-every", type=_positive_int, default=10,
                   help="steps per log.jsonl line (default 10)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint")
    t.add_argument("--stop-after", type=_positive_int,
                   help="end after this many steps of this invocation (checkpointed; --resume continues)")
    t.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    t.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="mixed precision on CUDA (auto: bf16 where supported); CPU always trains in fp32")
    t.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile on CUDA (auto: on); never on CPU")
    t.add_argument("--threads", type=_positive_int,
                   help="CPU threads per training process (default: the cores the data workers leave)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="retrieval Recall@K / mR and zero-shot accuracy of a dual encoder",
                       description="Evaluate a trained dual encoder (or an untrained reference) and write "
                                   "report.json and report.png.")
    e.add_argument("--checkpoint", help="a run directory of rsdata train, or a checkpoint file")
    e.add_argument("--model", help="evaluate a freshly initialised model of this config instead (baseline)")
    e.add_argument("--baseline", choices=("histogram", "random"),
                   help="evaluate a reference that learns nothing instead: histogram = colour/texture "
                        "histogram nearest neighbours transferring their training captions (needs a "
                        "training side: --train-data), random = random similarities")
    e.add_argument("--compare", action="store_true",
                   help="with --checkpoint/--model: also evaluate the histogram and random baselines on "
                        "the same sets and say whether the model beats them outside the interval")
    e.add_argument("--train-data", nargs="+", metavar="OUT",
                   help="the training side (default: --data minus the evaluated keys): what the histogram "
                        "baseline transfers captions from and verbatim shares are measured against")
    e.add_argument("--train-exclude-keys", metavar="FILE",
                   help="keys left out of the training side (the file given to rsdata train --exclude-keys)")
    e.add_argument("--train-holdout", type=_fraction,
                   help="leave the keys of this holdout fraction out of the training side (default: --holdout)")
    e.add_argument("--neighbours", type=_positive_int, default=10,
                   help="histogram baseline: training images whose captions are transferred (default 10)")
    e.add_argument("--bootstrap", type=_nonnegative_int, default=1000,
                   help="bootstrap resamples of the query images for 95%% intervals (default 1000; 0: none)")
    e.add_argument("--seed", type=int, default=0, help="init seed for --model")
    e.add_argument("--image-size", type=_positive_int, help="with --model: override the image size")
    e.add_argument("--data", nargs="+", metavar="OUT",
                   help="retrieval on rsdata shards (all captions per image)")
    e.add_argument("--holdout", type=_fraction, default=0.0,
                   help="with --data: only the keys rsdata train --holdout F left out")
    e.add_argument("--holdout-seed", type=int, default=0)
    e.add_argument("--keys", metavar="FILE", help="with --data: only the sample keys listed in FILE")
    e.add_argument("--synthetic", choices=("include", "exclude", "only"), default="exclude",
                   help="with --data: " + SYNTHETIC_HELP + ". Default exclude: a model is measured on "
                        "real imagery")
    e.add_argument("--captions", choices=("all", "primary"), default="all",
                   help="with --data: every caption in the json, or the txt caption only")
    e.add_argument("--karpathy", metavar="JSON",
                   help="Karpathy-style caption file (RSICD, UCM, Sydney, RSITMD)")
    e.add_argument("--images", metavar="DIR", help="with --karpathy: the image folder")
    e.add_argument("--split", default="test",
                   help="with --karpathy: split to use ('' for all; default test)")
    e.add_argument("--classes", metavar="DIR", help="zero-shot on a folder per class (UC Merced, AID)")
    e.add_argument("--classnames", metavar="JSON",
                   help="with --classes: {folder: class name} for the prompts")
    e.add_argument("--templates", metavar="FILE",
                   help="with --classes: prompt templates, one per line with {}")
    e.add_argument("--max-images", type=_positive_int, help="evaluate at most this many images per set")
    e.add_argument("--batch-size", type=_positive_int, default=64)
    e.add_argument("--device", help="cpu, cuda (default: cuda when available)")
    e.add_argument("--out", help="report directory (default RUN/eval)")
    e.add_argument("--json", action="store_true", help="also print the report as JSON on stdout")
    e.set_defaults(func=cmd_eval)
