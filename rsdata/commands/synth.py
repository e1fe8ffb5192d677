"""``rsdata train-synth CORPUS --out MODELDIR``: the default synthetic-scene model, and
``rsdata eval-synth MODEL_OR_CORPUS``: how its scenes compare with real tiles.

    rsdata run pipelines/synth-layouts.yaml                        # real tiles + layout.png
    rsdata train-synth out/synth-layouts --out out/synth-model --steps 1500
    rsdata train-synth out/synth-layouts --out out/synth-model --steps 3000   # resume, extend

    rsdata eval-synth out/synth-model --real out/synth-layouts --out out/synth-eval
    rsdata eval-synth out/synth --out out/synth-eval-corpus   # a corpus's synthetic samples

See :mod:`rsdata.synth.training` and :mod:`rsdata.synth.evaluate` for what they do; the output directory is a diffusers pipeline
that ``source: {type: synthetic, model: ...}`` loads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rsdata.argtypes import bounded

_positive = bounded(int, low=1)
_nonneg = bounded(int, low=0)


def cmd_train_synth(args: argparse.Namespace) -> int:
    from rsdata.errors import MissingDependencyError

    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "diffusers", "synth", "rsdata train-synth") from None
    from rsdata.synth.training import TrainConfig, train

    channels = tuple(int(c) for c in args.channels.split(","))
    attention = tuple(i >= len(channels) - args.attention_levels for i in range(len(channels)))
    cfg = TrainConfig(size=args.size, gsd=args.gsd, batch_size=args.batch_size, lr=args.lr,
                      warmup=args.warmup, seed=args.seed, channels=channels,
                      layers_per_block=args.layers_per_block, attention=attention,
                      prediction=args.prediction, patch=args.patch)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    exclude = frozenset()
    if args.exclude_keys:
        from rsdata.corpus.samples import read_key_file

        exclude = read_key_file(args.exclude_keys)
    summary = train(Path(args.corpus), Path(args.out), cfg, args.steps, stop_after=args.stop_after,
                    checkpoint_every=args.checkpoint_every, device=args.device,
                    max_tiles=args.max_tiles, progress=not args.quiet, preview=not args.no_preview,
                    exclude=exclude)
    where = f"resumed at step {summary['resumed_from']}, " if summary["resumed_from"] is not None else ""
    state = "interrupted (checkpoint saved; run the same command to resume)" if summary["interrupted"] else (
        "done" if summary["step"] >= summary["steps"] else "stopped (run the same command to resume)")
    print(f"rsdata train-synth: {state}: {where}step {summary['step']}/{summary['steps']} on "
          f"{summary['tiles']} tiles at {summary['gsd_m']:g} m, {summary['device']}, "
          f"{summary['seconds']} s, last loss {summary['last_loss']} -> {summary['out']}",
          file=sys.stderr)
    if summary["preview"]:
        print(f"preview (layouts / real crops / generated): {summary['preview']}", file=sys.stderr)
    if args.json:
        json.dump(summary, sys.stdout)
        print()
    return 130 if summary["interrupted"] else 0


def cmd_eval_synth(args: argparse.Namespace) -> int:
    from rsdata.errors import MissingDependencyError, UsageError

    try:
        import diffusers  # noqa: F401
        import torch
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "diffusers", "synth", "rsdata eval-synth") from None
    from rsdata.corpus.samples import read_key_file
    from rsdata.synth.evaluate import run_eval, summary_lines

    if args.keys and args.exclude_keys:
        raise UsageError("give --keys or --exclude-keys, not both")
    keep = None
    if args.keys:
        keys = read_key_file(args.keys)
        keep = keys.__contains__
    elif args.exclude_keys:
        left = read_key_file(args.exclude_keys)
        keep = lambda key: key not in left  # noqa: E731
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but torch sees no CUDA device; use --device auto or cpu")
    target = Path(args.target)
    out = Path(args.out) if args.out else (target / "eval" if (target / "model_index.json").is_file()
                                           else target.parent / f"{target.name}-eval-synth")
    report = run_eval(target, out, real=Path(args.real) if args.real else None, n=args.n, steps=args.steps,
                      batch=args.batch_size, seed=args.seed, encoder=args.encoder, keep=keep, device=device)
    print("\n".join(summary_lines(report)))
    print(f"report: {out / 'report.json'}, contact sheet: {report['contact_sheet']}")
    if args.json:
        json.dump(report, sys.stdout)
        print()
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "train-synth", help="train the small layout-conditioned diffusion model on a corpus",
        description="Train a small layout-conditioned diffusion model (diffusers UNet2DModel, layout "
                    "channels concatenated to the noisy image; DDPM training, DDIM sampling) on a "
                    "corpus's real tiles and their layout.png members, and save it as a pipeline "
                    "directory the synthetic source loads. Run it again with the same options to "
                    "resume; raise --steps to extend.")
    p.add_argument("corpus", help="an rsdata corpus whose samples have layout.png (or osm.objects)")
    p.add_argument("--out", required=True, help="model directory to write (a diffusers pipeline)")
    p.add_argument("--steps", type=_positive, default=1500, help="total optimizer steps (default 1500)")
    p.add_argument("--size", type=_positive, default=64, help="image size in pixels (default 64)")
    p.add_argument("--gsd", type=float, default=None,
                   help="training metres per pixel (default: the corpus tiles' own)")
    p.add_argument("--batch-size", type=_positive, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=_nonneg, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", default="64,128,128",
                   help="UNet block widths, one per resolution level (default 64,128,128)")
    p.add_argument("--patch", type=_positive, default=2,
                   help="fold p x p pixels into channels before the UNet (default 2: ~4x cheaper steps)")
    p.add_argument("--layers-per-block", type=_positive, default=1)
    p.add_argument("--attention-levels", type=_nonneg, default=1,
                   help="self-attention in this many of the lowest-resolution levels (default 1)")
    p.add_argument("--prediction", choices=["v_prediction", "epsilon"], default="v_prediction")
    p.add_argument("--checkpoint-every", type=_nonneg, default=200,
                   help="steps between checkpoints (0: only at the end)")
    p.add_argument("--stop-after", type=_positive, default=None,
                   help="stop (with a checkpoint) at this step; run again to resume")
    p.add_argument("--max-tiles", type=_positive, default=None, help="read at most this many tiles")
    p.add_argument("--exclude-keys", default=None,
                   help="never train on the tiles whose keys this file lists (one per line): held-out "
                        "tiles for rsdata eval-synth --keys FILE")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=_positive, default=None, help="torch CPU threads")
    p.add_argument("--no-preview", action="store_true", help="skip the preview sheet at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=cmd_train_synth)

    e = sub.add_parser(
        "eval-synth", help="Fréchet distance, layout adherence and a contact sheet for synthetic scenes",
        description="Compare generated scenes with real tiles: a Fréchet distance on rsdata's own image "
                    "encoder (FID-style, not comparable with Inception FID) beside the same distance "
                    "for noise and for other real tiles (the floor); layout adherence of a pixel "
                    "classifier fitted on real tiles (beside held-out real tiles, the ceiling, and "
                    "shuffled layouts, chance); a contact sheet layout | generated | nearest real. "
                    "Writes OUT/report.json and OUT/contact_sheet.png.")
    e.add_argument("target", help="a model directory (rsdata train-synth) to generate from, or a corpus "
                                  "whose synthetic samples (with layout.png) are evaluated")
    e.add_argument("--real", help="corpus of real tiles with layouts (default: TARGET, when it is a corpus)")
    e.add_argument("--out", help="report directory (default MODEL/eval or CORPUS-eval-synth)")
    e.add_argument("--n", type=_positive, default=128, help="crops per set (default 128)")
    e.add_argument("--steps", type=_positive, default=25, help="DDIM steps when generating (default 25)")
    e.add_argument("--batch-size", type=_positive, default=8)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--encoder", default=None,
                   help="an rsdata train run or checkpoint, or a model config name (untrained, seeded); "
                        "default: untrained rs-cnn-tiny (random convolutional features)")
    e.add_argument("--keys", help="use only the real tiles whose keys this file lists (held-out tiles)")
    e.add_argument("--exclude-keys", help="leave out the real tiles whose keys this file lists")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    e.add_argument("--threads", type=_positive, default=None, help="torch CPU threads")
    e.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    e.set_defaults(func=cmd_eval_synth)
