"""How varied are the template captions, and how many name an invisible subject?

    python -m benchmarks.bench_caption_variety [--recipe RECIPE ...] [--corpus DIR ...] [--json PATH]

Runs each recipe (default: ``pipelines/demo.yaml`` and ``pipelines/banepa.yaml``) with
``rsdata run`` into a temp dir, or reads ready corpora (``--corpus``; e.g. one made by an older
rsdata for a before/after), and reports per corpus and over all of them
(:func:`rsdata.captions.metrics.variety`): distinct words, distinct sentence skeletons, the
most common skeleton's share, the most common 4-word template fragment and its share (target:
at most 5% of captions, in every corpus and over all of them; share words count as "S of", so
"most of the roofs are" shows its constant "of the roofs are"), and the share of captions that
name a tag the caption rules never allow as a subject (target: 0).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ("pipelines/demo.yaml", "pipelines/banepa.yaml")
MAX_FRAGMENT_SHARE = 0.05


def records(corpus: Path) -> list[tuple[str, dict[str, Any]]]:
    from rsdata.corpus.samples import list_shards, read_shard

    out = []
    for shard in list_shards([corpus]):
        for sample in read_shard(shard):
            meta = json.loads(sample["json"])
            out += [(c["text"], meta) for c in meta.get("captions", [])]
    return out


def main(argv: list[str] | None = None) -> int:
    from rsdata.captions.metrics import variety
    from rsdata.cli import main as rsdata_main

    ap = argparse.ArgumentParser(prog="bench_caption_variety", description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", action="append", default=[])
    ap.add_argument("--corpus", action="append", default=[])
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="(no effect: the run is already small)")
    args = ap.parse_args(argv)
    recipes = args.recipe or ([] if args.corpus else list(RECIPES))
    report: dict[str, Any] = {}
    everything: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="rsdata-variety-") as tmp:
        corpora = [(Path(c).name, Path(c)) for c in args.corpus]
        for recipe in recipes:
            out = Path(tmp) / Path(recipe).stem
            if rsdata_main(["run", str(ROOT / recipe), "--out", str(out), "--quiet"]) != 0:
                print(f"{recipe}: the run failed", file=sys.stderr)
                return 1
            corpora.append((Path(recipe).stem, out))
        for name, path in corpora:
            recs = records(path)
            everything += recs
            report[name] = variety(recs)
    report["all"] = variety(everything)
    width = max(len(k) for k in report)
    print(f"{'corpus':<{width}}  captions  words  skeletons  top skeleton  top fragment (share)  invisible")
    for name, r in report.items():
        print(f"{name:<{width}}  {r['captions']:>8}  {r['words']:>5}  {r['skeletons']:>9}  "
              f"{r['top_skeleton_share']:>12.1%}  {r['top_fragment']!r} ({r['top_fragment_share']:.1%})"
              f"  {r['invisible_subject_share']:.1%}")
    # per corpus: a fragment constant in one recipe's captions is diluted in the pooled figure
    ok = all(r["top_fragment_share"] <= MAX_FRAGMENT_SHARE and r["invisible_subject_share"] == 0
             for r in report.values())
    print("fragment <= 5% and no invisible subject in every corpus:", "ok" if ok else "FAIL")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
