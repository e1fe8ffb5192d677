"""``rsdata export CORPUS --format rsvqa|coco|karpathy|classes --out DIR``.

    rsdata export out/vqa --format rsvqa --out out/vqa-rsvqa       # RSVQA JSON + Images/
    rsdata export out/vqa --format coco --out out/vqa-coco         # COCO instances + refs.json
    rsdata export out/vqa --format karpathy --out out/vqa-karpathy # rsdata eval --karpathy reads it
    rsdata export out/vqa --format classes --out out/vqa-classes   # rsdata eval --classes reads it

The layouts are described in :mod:`rsdata.tasks.export`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rsdata.argtypes import bounded

_fraction = bounded(float, low=0, high=1)
FORMATS = ("rsvqa", "coco", "karpathy", "classes")


def cmd_export(args: argparse.Namespace) -> int:
    from rsdata.errors import UsageError
    from rsdata.tasks.export import SplitRule, export

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"rsdata export: {out} is not empty; choose another --out or pass --overwrite")
    if args.holdout + args.val > 1:
        raise UsageError("--holdout and --val together exceed 1")
    if args.tif and args.format != "rsvqa":
        raise UsageError("--tif is for --format rsvqa (RSVQA's loaders read Images/N.tif)")
    rule = SplitRule(holdout=args.holdout, val=args.val, seed=args.holdout_seed)
    report = export(args.corpus, args.format, out, rule, tif=args.tif, prefix=args.prefix,
                    split=args.split)
    splits = ", ".join(f"{k} {v}" for k, v in sorted(report.splits.items()))
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(report.skipped.items()))
    print(f"rsdata export {args.format}: {report.images} images, {report.items} items ({splits})"
          + (f"; skipped: {skipped}" if skipped else "") + f" -> {out}")
    if args.json:
        json.dump(report.to_json(), sys.stdout)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    e = sub.add_parser("export", help="write a corpus as RSVQA, COCO, Karpathy or folder-per-class files",
                       description="Write the VQA pairs (rsvqa), grounding boxes (coco), captions "
                                   "(karpathy) or scene labels (classes) of a corpus in the layouts "
                                   "other tools read.")
    e.add_argument("corpus", help="output directory of rsdata run (holds manifest.json)")
    e.add_argument("--format", required=True, choices=FORMATS,
                   help="rsvqa: RSVQA JSON + Images/; coco: COCO instances + refs.json + images/; "
                        "karpathy: dataset_NAME.json + images/; classes: OUT/<class>/<key>.jpg + "
                        "classnames.json")
    e.add_argument("--out", required=True, help="directory to write (must be empty or new)")
    e.add_argument("--holdout", type=_fraction, default=0.1,
                   help="share of keys in the test split, as rsdata train --holdout picks them (default 0.1)")
    e.add_argument("--val", type=_fraction, default=0.1, help="share of keys in the val split (default 0.1)")
    e.add_argument("--holdout-seed", type=int, default=0)
    e.add_argument("--split", choices=("train", "val", "test"),
                   help="with --format classes: only this split (default: all)")
    e.add_argument("--prefix", default="rsdata", help="with --format rsvqa: file prefix (RSVQA: LR, USGS)")
    e.add_argument("--tif", action="store_true", help="with --format rsvqa: write Images/N.tif")
    e.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    e.add_argument("--json", action="store_true", help="also print the export report as JSON")
    e.set_defaults(func=cmd_export)
