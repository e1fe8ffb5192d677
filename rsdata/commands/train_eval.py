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

    cfg = TrainConfig(
        data=args.data, out=args.out, model=args.model, model_overrides=_overrides(args), steps=args.steps,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup=args.warmup, workers=args.workers, seed=args.seed, augment=not args.no_augment,
        caption=args.caption, holdout=args.holdout, holdout_seed=args.holdout_seed,
        exclude_keys=args.exclude_keys, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        log_every=args.log_every, resume=args.resume, stop_after=args.stop_after, device=args.device,
        precision=args.precision, compile=args.compile, threads=args.threads, progress=not args.quiet)
    from rsdata.lock import LOCK_NAME, command_line, output_lock

    # one training process per run directory; under torchrun every rank takes its own lock file
    # (rank 0 the plain one), so a second launch on the same --out fails on every rank at once
    rank = int(os.environ.get("RANK", "0") or 0) if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else 0
    try:
        with output_lock(Path(args.out), command_line(),
                         name=LOCK_NAME if rank == 0 else f"{LOCK_NAME}.rank{rank}"):
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
def cmd_eval(args: argparse.Namespace) -> int:
    if bool(args.checkpoint) == bool(args.model):
        raise UsageError("give exactly one of --checkpoint RUN (a trained model) or --model NAME "
                         "(a freshly initialised model: the untrained reference)")
    if not (args.data or args.karpathy or args.classes):
        raise UsageError("nothing to evaluate on: give --data OUT, --karpathy JSON --images DIR, "
                         "and/or --classes DIR")
    if args.karpathy and not args.images:
        raise UsageError("--karpathy needs --images DIR (the folder holding the files the JSON names)")
    import torch

    from rsdata.evaluate import EvalSpec, evaluate, read_class_folders, read_karpathy, shard_retrieval_set
    from rsdata.evaluate.datasets import read_classnames, read_templates
    from rsdata.evaluate.run import summary_lines
    from rsdata.models import create_model, load_checkpoint
    from rsdata.corpus.samples import read_key_file

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint, device=device)
        source = str(args.checkpoint)
        ckpt = Path(args.checkpoint)
        default_out = ckpt / "eval" if ckpt.is_dir() else ckpt.parent / "eval"
    else:
        torch.manual_seed(args.seed)
        model = create_model(args.model, **_overrides(args)).to(device).eval()
        source = f"untrained {args.model} (seed {args.seed})"
        default_out = Path(f"eval-{args.model}-untrained")
    spec = EvalSpec()
    if args.data:
        keys = read_key_file(args.keys) if args.keys else None
        spec.retrieval.append(shard_retrieval_set(
            args.data, holdout=args.holdout, holdout_seed=args.holdout_seed,
            all_captions=args.captions == "all", max_images=args.max_images,
            keep=keys.__contains__ if keys else None))
    if args.karpathy:
        spec.retrieval.append(read_karpathy(args.karpathy, args.images, split=args.split or None,
                                            max_images=args.max_images))
    if args.classes:
        classes = read_class_folders(args.classes, read_classnames(args.classnames))
        spec.zero_shot.append((classes, read_templates(args.templates)))
    out_dir = Path(args.out) if args.out else default_out
    report = evaluate(model, spec, out_dir, source, batch_size=args.batch_size)
    print("\n".join(summary_lines(report)))
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
    e.add_argument("--seed", type=int, default=0, help="init seed for --model")
    e.add_argument("--image-size", type=_positive_int, help="with --model: override the image size")
    e.add_argument("--data", nargs="+", metavar="OUT",
                   help="retrieval on rsdata shards (all captions per image)")
    e.add_argument("--holdout", type=_fraction, default=0.0,
                   help="with --data: only the keys rsdata train --holdout F left out")
    e.add_argument("--holdout-seed", type=int, default=0)
    e.add_argument("--keys", metavar="FILE", help="with --data: only the sample keys listed in FILE")
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
