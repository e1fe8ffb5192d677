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
from rsdata.evaluate.metrics import retrieval_metrics, retrieval_ranks, zero_shot_metrics
from rsdata.evaluate.run import EvalSpec, evaluate, summary_lines

__all__ = [
    "ClassSet", "EvalDataError", "EvalSpec", "ImageRef", "RetrievalSet", "evaluate", "read_class_folders",
    "read_karpathy", "retrieval_metrics", "retrieval_ranks", "shard_retrieval_set", "summary_lines",
    "zero_shot_metrics",
]
