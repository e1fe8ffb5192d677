"""``rsdata score`` and ``rsdata filter``: score a corpus, then keep the pairs that match.

    rsdata score OUT --out OUT2 --scorer hf_clip --model models/remoteclip [--name remoteclip]
    rsdata filter OUT2 --sweep 0.1,0.15,0.2,0.25            # kept counts, from stored scores
    rsdata filter OUT2 --out OUT3 --top-fraction 0.5 --dedup --leakage eval/rsicd/dataset_rsicd.json

Both write a new corpus version (never in place) whose manifest names its parent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rsdata.argtypes import bounded
from rsdata.argtypes import number as _number
from rsdata.argtypes import positive_int as _positive_int

SCORER_KINDS = ("baseline", "hf_clip")
_fraction = bounded(float, low=0, high=1, low_open=True)
_bits = bounded(int, low=0, high=63)  # of a 64-bit perceptual hash


def _numbers(text: str) -> list[float]:
    return [_number(t) for t in text.split(",") if t.strip()]


def _add_scorer_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--scorer", choices=SCORER_KINDS, required=required,
                   help="baseline: an rsdata checkpoint or run directory; hf_clip: a local Hugging "
                        "Face CLIPModel directory")
    p.add_argument("--model", required=required, help="checkpoint file, run directory or model directory")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="pairs per batch (default: 64 on CUDA, 16 on the CPU)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto (default): CUDA with autocast when a GPU is there, else the CPU")


def _make_scorer(args: argparse.Namespace, name: str | None = None) -> Any:
    from rsdata.scoring import create_scorer

    if (args.scorer is None) != (args.model is None):
        from rsdata.errors import InputError

        raise InputError("--scorer and --model go together: give both or neither")
    if args.scorer is None:
        return None
    return create_scorer(args.scorer, args.model, name=name, batch_size=args.batch_size, device=args.device)


SYNTHETIC_HELP = ("synthetic samples (json synthetic: true, or origin type/root synthetic): include "
                  "(default) treats them like the others, exclude leaves them out of the new corpus, "
                  "only keeps nothing else (dropped samples are counted by reason: synthetic / real)")
SELECTION_FILE = "synthetic-selection.json"


def _synthetic_subset(corpus_dir: str, mode: str, verify: bool = True) -> Any:
    """The subset list of ``--synthetic exclude|only`` over a corpus: every key in corpus order,
    the left-out ones dropped with reason ``synthetic`` (exclude) or ``real`` (only)."""
    from rsdata.corpus import Corpus
    from rsdata.corpus.samples import synthetic_split
    from rsdata.errors import InputError
    from rsdata.filtering import Subset

    corpus = Corpus(corpus_dir, verify=verify)
    split = synthetic_split([corpus.dir], verify=verify)
    left = split.left_out(mode)
    if len(left) == len(split.keys):
        raise InputError(f"{corpus.dir}: {split.describe(mode)}; nothing would be written")
    dropped = {k: {"reason": "synthetic" if k in split.synthetic else "real"} for k in left}
    print(f"{split.describe(mode)}", file=sys.stderr)
    return Subset(parent=str(corpus.dir.resolve()), parent_manifest_sha256=corpus.manifest_sha256(),
                  settings={"synthetic": mode}, keys=list(split.keys), dropped=dropped)


def score_selected(args: argparse.Namespace, scorer: Any, after_plan: Any) -> dict[str, Any]:
    """``rsdata score``; with --synthetic exclude|only, a ``subset`` stage (its list saved as
    OUT/synthetic-selection.json) drops the left-out samples before they reach the scorer."""
    from rsdata.scoring.rescore import score_corpus, score_recipe

    if args.synthetic == "include":
        return score_corpus(args.corpus, args.out, scorer, corpus_name=args.corpus_name,
                            overwrite=args.overwrite, progress=not args.quiet, after_plan=after_plan)
    from rsdata.executors.local import run_local
    from rsdata.plan import build_plan
    from rsdata.recipe import parse_recipe

    subset = _synthetic_subset(args.corpus, args.synthetic)
    path = subset.save(Path(args.out) / SELECTION_FILE)  # the run's input: its checksum names the run
    data = score_recipe(args.corpus, args.out, scorer, args.corpus_name)
    data["stages"].insert(0, {"type": "subset", "path": str(path.resolve())})
    data["description"] += f" (--synthetic {args.synthetic})"
    recipe = parse_recipe(data, base_dir=Path.cwd(), what="the score run")
    plan = build_plan(recipe, Path(args.out), overwrite=args.overwrite)
    after_plan()
    return run_local(plan, workers=1, progress=not args.quiet).manifest


def cmd_score(args: argparse.Namespace) -> int:
    from rsdata.lock import command_line, output_lock

    scorer = _make_scorer(args, args.name)
    with output_lock(Path(args.out), command_line()) as lock:
        manifest = score_selected(args, scorer, lock.check)
    score = next((s for s in manifest["stages"] if s["name"] == "score"), {"out": 0})
    print(f"scored {score['out']} samples with {scorer.kind} ({scorer.model_path}) as "
          f"scores.{scorer.name} -> {Path(args.out) / 'manifest.json'} (parent "
          f"{manifest['parent']['path']})")
    print(f"{manifest['timing']['seconds']:.1f} s")
    return 0


def _settings(args: argparse.Namespace) -> Any:
    from rsdata.filtering import EvalSpec, FilterSettings

    splits = tuple(s for s in args.leakage_splits.split(",") if s) if args.leakage_splits else None
    return FilterSettings(
        score=args.score, threshold=args.threshold, top_fraction=args.top_fraction, dedup=args.dedup,
        max_phash_distance=args.max_phash_distance, max_dhash_distance=args.max_dhash_distance,
        semantic_threshold=args.semantic_threshold,
        leakage=[EvalSpec(p, args.leakage_images, splits) for p in args.leakage])


def cmd_filter(args: argparse.Namespace) -> int:
    if args.out is None or args.sweep:
        return _filter(args)
    from rsdata.lock import command_line, output_lock

    with output_lock(Path(args.out), command_line()):
        return _filter(args)


class _SelectedCorpus:
    """A corpus seen through a key set: what ``decide`` reads under --synthetic exclude|only."""

    def __init__(self, corpus: Any, keys: frozenset[str]) -> None:
        self._corpus, self._keys = corpus, keys

    def __getattr__(self, name: str) -> Any:
        return getattr(self._corpus, name)

    @property
    def nsamples(self) -> int:
        return len(self._keys)

    def entries(self, members: Any = None, skip: Any = ()) -> Any:
        return (e for e in self._corpus.entries(members, skip) if e.key in self._keys)


def _decide_selected(args: argparse.Namespace, corpus: Any, scorer: Any) -> tuple[Any, Any]:
    """Pass 1 of ``rsdata filter`` on the samples --synthetic selects; the others join the subset
    list as dropped (reason synthetic / real), so near duplicates, score ranks and top fractions
    are computed among the selected samples only."""
    from rsdata.filtering import Subset, decide

    if args.synthetic == "include":
        return decide(corpus, _settings(args), scorer=scorer, progress=not args.quiet)
    selection = _synthetic_subset(str(corpus.dir), args.synthetic, verify=not args.no_verify)
    settings = _settings(args)
    if (settings.threshold is None and settings.top_fraction is None and not settings.dedup
            and not settings.leakage):  # --synthetic alone: a real-only (or synthetic-only) copy
        return selection, None
    kept = frozenset(selection.kept)
    subset, report = decide(_SelectedCorpus(corpus, kept), settings, scorer=scorer,
                            progress=not args.quiet)
    dropped = {**selection.dropped, **subset.dropped}
    merged = Subset(parent=subset.parent, parent_manifest_sha256=subset.parent_manifest_sha256,
                    settings={**subset.settings, "synthetic": args.synthetic}, keys=selection.keys,
                    dropped=dropped)
    return merged, report


def _filter(args: argparse.Namespace) -> int:
    from rsdata.errors import InputError
    from rsdata.filtering import Corpus, Subset, decide, reshard, sweep

    corpus = Corpus(args.corpus, verify=not args.no_verify)
    if args.sweep:
        if args.synthetic != "include":
            selection = _synthetic_subset(str(corpus.dir), args.synthetic, verify=not args.no_verify)
            corpus = _SelectedCorpus(corpus, frozenset(selection.kept))
        name, rows = sweep(corpus, args.score, args.sweep)
        print(f"scores.{name} over {corpus.nsamples} samples of {corpus.dir}:")
        print(f"{'threshold':>10} {'kept':>8} {'fraction':>9}")
        for r in rows:
            print(f"{r['threshold']:>10.4f} {r['kept']:>8} {r['fraction']:>9.2%}")
        return 0
    if args.out is None:
        raise InputError("rsdata filter needs --out DIR for the filtered corpus (or --sweep to only count)")
    report = None
    if args.from_subset:
        if (args.threshold is not None or args.top_fraction is not None or args.dedup or args.leakage
                or args.subset_only):
            raise InputError("--from-subset applies a subset list as it was written; the filter options "
                             "belong to the command that wrote it (--subset-only)")
        subset = Subset.load(args.from_subset)
    else:
        scorer = _make_scorer(args)
        subset, report = _decide_selected(args, corpus, scorer)
    counts = subset.counts()
    print(f"keeping {len(subset.kept)} of {len(subset.keys)} samples; dropped: "
          + (", ".join(f"{r} {n}" for r, n in counts.items()) or "none"))
    if report is not None:
        print(f"eval leakage: {report['leaked_samples']} samples match "
              f"{sum(s['n_images'] for s in report['eval_sets'])} evaluation images "
              f"({', '.join(f'{k} {v}' for k, v in report['by_kind'].items()) or 'none'})")
    if args.subset_only:
        from rsdata.corpus.derived import claim_output
        from rsdata.atomic import atomic_write_bytes

        out = Path(args.out)
        claim_output(out, corpus.dir, args.overwrite)
        subset.save(out / "subset.json")
        if report is not None:
            atomic_write_bytes(out / "leakage_report.json", json.dumps(report, indent=1).encode("utf-8"))
        print(f"subset list -> {out / 'subset.json'} (apply it with: rsdata filter {args.corpus} "
              f"--out DIR --from-subset {out / 'subset.json'})")
        return 0
    manifest = reshard(corpus, subset, args.out, corpus_name=args.corpus_name, overwrite=args.overwrite,
                       max_samples=args.max_samples_per_shard, leakage_report=report,
                       progress=not args.quiet)
    print(f"{manifest['nsamples']} samples in {len(manifest['shards'])} shards -> "
          f"{Path(args.out) / 'manifest.json'} (parent {manifest['parent']['path']})")
    return 0


def register(sub: Any) -> None:
    """Add ``score`` and ``filter`` to the ``rsdata`` command line."""
    sc = sub.add_parser("score", help="score every image-caption pair of a corpus into a new version",
                        description="Score each sample (image vs its txt caption, cosine) and write a "
                                    "copy of the corpus whose json holds scores.<name>. The input "
                                    "corpus is never modified; the new manifest names it as parent.")
    sc.add_argument("corpus", help="corpus directory (holds manifest.json)")
    sc.add_argument("--out", required=True, help="directory of the scored copy")
    _add_scorer_args(sc, required=True)
    sc.add_argument("--name", help="key under scores (default: the scorer kind)")
    sc.add_argument("--synthetic", choices=("include", "exclude", "only"), default="include",
                    help=SYNTHETIC_HELP)
    sc.add_argument("--corpus-name", help="name of the new corpus (default: NAME-scored)")
    sc.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out")
    sc.add_argument("--quiet", action="store_true", help="no progress bar")
    sc.set_defaults(func=cmd_score)

    fl = sub.add_parser("filter", help="keep pairs by score, remove near duplicates and eval leakage",
                        description="Pass 1 reads the corpus and writes a subset list (kept keys, and "
                                    "each dropped key with its reason); pass 2 copies the kept samples "
                                    "into a new corpus whose manifest names its parent and counts "
                                    "every drop by reason.")
    fl.add_argument("corpus", help="corpus directory (holds manifest.json)")
    fl.add_argument("--out", help="directory of the filtered corpus (or of the subset list)")
    sel = fl.add_mutually_exclusive_group()
    sel.add_argument("--threshold", type=_number, help="keep samples whose score is >= this")
    sel.add_argument("--top-fraction", type=_fraction, help="keep this fraction of the best-scored samples")
    sel.add_argument("--sweep", type=_numbers, metavar="T1,T2,...",
                     help="only print how many samples each threshold keeps (no output written)")
    fl.add_argument("--score", help="which score (default: the only one the corpus has)")
    fl.add_argument("--dedup", action="store_true",
                    help="remove exact and near-duplicate images (and semantic ones with --semantic-threshold)")
    fl.add_argument("--max-phash-distance", type=_bits, default=6,
                    help="pHash bits that may differ in a near duplicate (default 6 of 64)")
    fl.add_argument("--max-dhash-distance", type=_bits, default=10,
                    help="dHash bits that may differ in a near duplicate (default 10 of 64)")
    fl.add_argument("--semantic-threshold", type=_number,
                    help="image-embedding cosine at or above which images are semantic duplicates "
                         "(needs --scorer and --model)")
    fl.add_argument("--leakage", action="append", default=[], metavar="EVAL",
                    help="drop samples that match evaluation images: a folder, a Karpathy-style JSON "
                         "(dataset_rsicd.json) or a corpus; repeatable")
    fl.add_argument("--leakage-images", help="image folder of a Karpathy JSON (default: images/ next to it)")
    fl.add_argument("--leakage-splits", help="Karpathy splits to guard, e.g. test,val (default: all)")
    _add_scorer_args(fl, required=False)
    fl.set_defaults(scorer=None, model=None)
    fl.add_argument("--synthetic", choices=("include", "exclude", "only"), default="include",
                    help=SYNTHETIC_HELP)
    fl.add_argument("--subset-only", action="store_true",
                    help="write only OUT/subset.json (pass 1); apply it later with --from-subset")
    fl.add_argument("--from-subset", help="reshard a subset list written by --subset-only (pass 2)")
    fl.add_argument("--max-samples-per-shard", type=_positive_int,
                    help="samples per output shard (default: the parent recipe's setting)")
    fl.add_argument("--corpus-name", help="name of the new corpus (default: NAME-filtered)")
    fl.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out")
    fl.add_argument("--quiet", action="store_true", help="no progress bars")
    fl.add_argument("--no-verify", action="store_true",
                    help="do not check shard checksums against the manifest while reading")
    fl.set_defaults(func=cmd_filter)


if __name__ == "__main__":  # pragma: no cover
    from rsdata.cli import main

    sys.exit(main())
