"""Filtering a corpus: score thresholds and top fractions, near-duplicate removal, and the
eval-leakage guard.

``rsdata filter OUT --out OUT2`` works in two passes, as DataComp does: :func:`decide` reads
the corpus once and writes a subset list (kept keys, and every dropped key with its reason),
then :func:`reshard` writes the kept samples as a new corpus version (an ordinary run: a corpus
source and the ``subset`` stage) whose manifest points at its parent and counts every drop by
reason. The ``filter`` pipeline stage applies what can be
decided one partition at a time (a threshold, the leakage guard) while a run writes.
"""

from __future__ import annotations

from rsdata.corpus import Corpus, CorpusError
from rsdata.corpus.derived import DerivedCorpusWriter
from rsdata.filtering.decide import FilterSettings, decide, sweep
from rsdata.filtering.leakage import EvalSpec
from rsdata.filtering.reshard import reshard
from rsdata.filtering.subset import Subset

__all__ = ["Corpus", "CorpusError", "DerivedCorpusWriter", "EvalSpec", "FilterSettings", "Subset",
           "decide", "reshard", "sweep"]
