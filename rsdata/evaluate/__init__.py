"""Evaluating dual encoders: retrieval Recall@K / mR and zero-shot accuracy, JSON + PNG reports."""

from rsdata.evaluate.datasets import (
    ClassSet,
    EvalDataError,
    ImageRef,
    RetrievalSet,
    read_class_folders,
    read_karpathy,
    shard_retrieval_set,
)
from rsdata.evaluate.baselines import (
    HistogramBaseline,
    RandomBaseline,
    neighbour_caption_scores,
    verbatim_share,
)
from rsdata.evaluate.bootstrap import auc_ci, bootstrap_ci, paired_difference, retrieval_ci, roc_auc
from rsdata.evaluate.metrics import retrieval_metrics, retrieval_ranks, zero_shot_metrics
from rsdata.evaluate.run import EvalSpec, evaluate, learning_verdict, summary_lines, verdict_line

__all__ = [
    "ClassSet", "EvalDataError", "EvalSpec", "HistogramBaseline", "ImageRef", "RandomBaseline", "RetrievalSet",
    "auc_ci", "bootstrap_ci", "evaluate", "learning_verdict", "neighbour_caption_scores", "paired_difference",
    "read_class_folders", "retrieval_ci", "roc_auc", "verbatim_share", "verdict_line",
    "read_karpathy", "retrieval_metrics", "retrieval_ranks", "shard_retrieval_set", "summary_lines",
    "zero_shot_metrics",
]
