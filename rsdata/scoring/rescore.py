"""``rsdata score`` over an existing corpus: a new version whose samples carry ``scores.<name>``.

The corpus is never rewritten in place. The scored copy goes to another directory, with a
manifest that names its parent: the parent stays intact and verifiable (its checksums, its
run's resume markers, any subset list computed from it keep holding), and a crash leaves a
directory without a manifest rather than a half-scored corpus. The price is a second copy of
the images on disk.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rsdata.filtering.corpus import Corpus, DerivedCorpusWriter, Entry, derived_name
from rsdata.sample import Sample
from rsdata.scoring.base import Scorer
from rsdata.scoring.images import decode_rgb
from rsdata.scoring.stage import SCORE_DIGITS
from rsdata.stats import StageStats

STAGE_NAME = "score"


def _flush(scorer: Scorer, batch: list[tuple[Sample, str, bytes]], writer: DerivedCorpusWriter,
           values: list[float]) -> None:
    images = [decode_rgb(data, f"sample {s.key}") for s, _, data in batch]
    scores = scorer.score(images, [t for _, t, _ in batch])
    for (sample, _, _), value in zip(batch, scores):
        sample.meta.setdefault("scores", {})[scorer.name] = round(float(value), SCORE_DIGITS)
        writer.write(sample)
        values.append(float(value))
    batch.clear()


def score_corpus(source: str | Path, out_dir: str | Path, scorer: Scorer, corpus_name: str | None = None,
                 overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Score every sample of ``source`` and write the scored corpus to ``out_dir``."""
    corpus = Corpus(source)
    started = time.perf_counter()
    scorer.load()  # a wrong model fails before the output directory is touched
    writer = DerivedCorpusWriter(corpus, out_dir, corpus_name or derived_name(corpus.manifest["name"], "scored"),
                                 overwrite=overwrite)
    stats = StageStats(STAGE_NAME)
    values: list[float] = []
    batch: list[tuple[Sample, str, bytes]] = []
    bar = tqdm(total=corpus.nsamples, unit="sample", desc=f"score ({scorer.name})", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        with bar:
            entry: Entry
            for entry in corpus.entries():
                stats.n_in += 1
                batch.append((entry.sample(), entry.text(), entry.image()))
                if len(batch) >= scorer.batch_size:
                    n = len(batch)
                    _flush(scorer, batch, writer, values)
                    stats.n_out += n
                    bar.update(n)
            if batch:
                n = len(batch)
                _flush(scorer, batch, writer, values)
                stats.n_out += n
                bar.update(n)
    except BaseException:
        writer.abort()
        raise
    seconds = time.perf_counter() - started
    summary = {}
    if values:
        import numpy as np

        q = np.quantile(np.array(values), [0.0, 0.1, 0.5, 0.9, 1.0])
        summary = dict(zip(("min", "p10", "median", "p90", "max"), (round(float(v), 4) for v in q)))
    entry_stats = stats.to_json()
    entry_stats["counters"] = {"samples_per_second": round(stats.n_out / seconds, 2) if seconds else 0}
    sources = [_model_source(p) for p in scorer.input_files()]
    derivation = {"command": "score", "scorer": scorer.describe(), "score_name": scorer.name,
                  "score_summary": summary}
    return writer.finish([entry_stats], derivation, sources=sources, seconds=seconds)


def _model_source(path: Path) -> dict[str, Any]:
    from rsdata.inputs import sha256_file

    return {"path": str(path.resolve()), "role": "other", "sha256": sha256_file(path),
            "bytes": path.stat().st_size, "license": "unknown",
            "attribution": "scoring model (check its license before publishing scores)", "manifest": None}
