"""Pass 2 of ``rsdata filter``: copy the samples a subset list keeps into a new corpus version."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rsdata.errors import InputError
from rsdata.corpus import Corpus
from rsdata.corpus.derived import DerivedCorpusWriter, derived_name
from rsdata.filtering.subset import Subset
from rsdata.stats import StageStats
from rsdata.atomic import atomic_write_bytes

STAGE_NAME = "filter"


def check_subset(corpus: Corpus, subset: Subset) -> None:
    """A subset list applies only to the exact corpus it was computed from."""
    sha = corpus.manifest_sha256()
    if subset.parent_manifest_sha256 != sha:
        raise InputError(f"this subset list was computed from another corpus (or an older version of "
                         f"{corpus.dir}): its parent manifest sha256 is "
                         f"{subset.parent_manifest_sha256[:12]}..., {corpus.manifest_path} is {sha[:12]}...; "
                         "compute the subset again from this corpus")


def reshard(corpus: Corpus, subset: Subset, out_dir: str | Path, corpus_name: str | None = None,
            overwrite: bool = False, max_samples: int | None = None, max_bytes: int | str | None = None,
            leakage_report: dict[str, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Write the kept samples into ``out_dir`` as a new corpus; returns its manifest."""
    check_subset(corpus, subset)
    started = time.perf_counter()
    kept = set(subset.kept)
    if not kept:
        counts = ", ".join(f"{r} {n}" for r, n in subset.counts().items())
        raise InputError(f"the filter keeps none of the {len(subset.keys)} samples ({counts}); "
                         "nothing would be written; see the reasons above and relax the filter")
    out = Path(out_dir)
    writer = DerivedCorpusWriter(corpus, out, corpus_name or derived_name(corpus.manifest["name"], "filtered"),
                                 overwrite=overwrite, max_samples=max_samples, max_bytes=max_bytes)
    stats = StageStats(STAGE_NAME)
    bar = tqdm(total=corpus.nsamples, unit="sample", desc="filter: writing", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    seen = 0
    try:
        with bar:
            for entry in corpus.entries():
                stats.n_in += 1
                bar.update(1)
                if entry.key in kept:
                    writer.write(entry.sample())
                    stats.n_out += 1
                    seen += 1
                else:
                    stats.drop(subset.dropped.get(entry.key, {}).get("reason", "not_in_subset"))
    except BaseException:
        writer.abort()
        raise
    if seen != len(kept):
        writer.abort()
        raise InputError(f"{len(kept) - seen} kept keys of the subset list are not in {corpus.dir}")
    subset.save(out / "subset.json")
    if leakage_report is not None:
        atomic_write_bytes(out / "leakage_report.json",
                           json.dumps(leakage_report, indent=1, ensure_ascii=False).encode("utf-8"))
    derivation = {"command": "filter", "settings": subset.settings, "subset": "subset.json",
                  "leakage_report": "leakage_report.json" if leakage_report is not None else None}
    return writer.finish([stats.to_json()], derivation, seconds=time.perf_counter() - started)
