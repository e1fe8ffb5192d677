"""Pass 2 of ``rsdata filter``: the samples a subset list keeps, as a new corpus version.

An ordinary run: a ``corpus`` source over the parent and the ``subset`` stage (see
:mod:`rsdata.filtering.subset_stage`), so resharding resumes after a crash, runs on Ray like any
run, verifies every parent shard it reads, and counts every drop by reason. The subset list and
the leakage report are kept next to the new manifest.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rsdata.atomic import atomic_write_bytes
from rsdata.corpus import Corpus
from rsdata.errors import InputError
from rsdata.filtering.subset import Subset


def check_subset(corpus: Corpus, subset: Subset) -> None:
    """A subset list applies only to the exact corpus it was computed from."""
    sha = corpus.manifest_sha256()
    if subset.parent_manifest_sha256 != sha:
        raise InputError(f"this subset list was computed from another corpus (or an older version of "
                         f"{corpus.dir}): its parent manifest sha256 is "
                         f"{subset.parent_manifest_sha256[:12]}..., {corpus.manifest_path} is {sha[:12]}...; "
                         "compute the subset again from this corpus")


def reshard_recipe(corpus: Corpus, subset_path: Path, out_dir: Path, name: str, n_kept: int,
                   max_samples: int | None = None, max_bytes: int | str | None = None) -> dict[str, Any]:
    parent_out = (corpus.manifest.get("recipe") or {}).get("output") or {}
    output: dict[str, Any] = {"dir": str(out_dir), "min_samples": n_kept}
    samples = max_samples or parent_out.get("max_samples_per_shard")
    nbytes = max_bytes or parent_out.get("max_bytes_per_shard")
    if samples:
        output["max_samples_per_shard"] = samples
    if nbytes:
        output["max_bytes_per_shard"] = nbytes
    return {"version": 1, "name": name, "description": f"a subset of corpus {corpus.name}",
            "source": {"type": "corpus", "path": str(corpus.dir.resolve()), "verify": corpus.verify},
            "stages": [{"type": "subset", "path": str(subset_path.resolve())}], "output": output}


def reshard(corpus: Corpus, subset: Subset, out_dir: str | Path, corpus_name: str | None = None,
            overwrite: bool = False, max_samples: int | None = None, max_bytes: int | str | None = None,
            leakage_report: dict[str, Any] | None = None, progress: bool = False,
            workers: int = 1) -> dict[str, Any]:
    """Write the kept samples into ``out_dir`` as a new corpus; returns its manifest."""
    from rsdata.executors.local import run_local
    from rsdata.plan import build_plan
    from rsdata.recipe import parse_recipe

    check_subset(corpus, subset)
    kept = subset.kept
    if not kept:
        counts = ", ".join(f"{r} {n}" for r, n in subset.counts().items())
        raise InputError(f"the filter keeps none of the {len(subset.keys)} samples ({counts}); "
                         "nothing would be written; see the reasons above and relax the filter")
    out = Path(out_dir)
    here, there = corpus.dir.resolve(), out.resolve()
    if there == here or here in there.parents or there in here.parents:
        from rsdata.errors import OutputConflictError

        raise OutputConflictError(f"--out {out} is (or contains, or lies inside) the input corpus "
                                  f"{corpus.dir}; rsdata never rewrites a corpus in place: choose a "
                                  "new directory for the new version")
    name = corpus_name or (corpus.name if corpus.name.endswith("-filtered") else f"{corpus.name}-filtered")
    name = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_") or "filtered"
    subset_path = subset.save(out / "subset.json")  # the run's input: its checksum names the run
    recipe = parse_recipe(reshard_recipe(corpus, subset_path, out, name, len(kept), max_samples, max_bytes),
                          base_dir=Path.cwd(), what="the filter run")
    plan = build_plan(recipe, out, overwrite=overwrite)
    manifest = run_local(plan, workers=workers, progress=progress).manifest
    if leakage_report is not None:
        atomic_write_bytes(out / "leakage_report.json",
                           json.dumps(leakage_report, indent=1, ensure_ascii=False).encode("utf-8"))
    return manifest
