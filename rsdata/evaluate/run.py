"""Evaluate a dual encoder on retrieval and zero-shot sets; write ``report.json`` + ``report.png``."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rsdata import __version__
from rsdata.evaluate.datasets import ClassSet, RetrievalSet
from rsdata.evaluate.embed import class_embeddings, embed_images, embed_texts
from rsdata.evaluate.metrics import retrieval_metrics, zero_shot_metrics
from rsdata.evaluate.plots import draw_report
from rsdata.models import DualEncoder
from rsdata.atomic import atomic_write_bytes


@dataclass
class EvalSpec:
    """What to evaluate: retrieval sets, zero-shot sets (with their prompt templates)."""

    retrieval: list[RetrievalSet] = field(default_factory=list)
    zero_shot: list[tuple[ClassSet, list[str]]] = field(default_factory=list)


def evaluate_retrieval(model: DualEncoder, data: RetrievalSet, batch_size: int = 64) -> dict[str, Any]:
    t0 = time.perf_counter()
    images = embed_images(model, data.images, batch_size)
    texts = embed_texts(model, data.captions)
    result = retrieval_metrics(images @ texts.T, data.caption_image)
    return {"kind": "retrieval", "name": data.name, **result, "seconds": round(time.perf_counter() - t0, 3)}


def evaluate_zero_shot(model: DualEncoder, data: ClassSet, templates: list[str],
                       batch_size: int = 64) -> dict[str, Any]:
    t0 = time.perf_counter()
    images = embed_images(model, data.images, batch_size)
    classes = class_embeddings(model, data.classes, templates)
    result = zero_shot_metrics(images @ classes.T, data.labels, data.classes)
    return {"kind": "zero_shot", "name": data.name, "templates": templates, **result,
            "seconds": round(time.perf_counter() - t0, 3)}


def evaluate(model: DualEncoder, spec: EvalSpec, out_dir: Path, source: str,
             batch_size: int = 64) -> dict[str, Any]:
    """Run every set in ``spec``; write ``out_dir/report.json`` and ``out_dir/report.png``."""
    model.eval()
    sets: list[dict[str, Any]] = []
    with torch.no_grad():
        for r in spec.retrieval:
            sets.append(evaluate_retrieval(model, r, batch_size))
        for c, templates in spec.zero_shot:
            sets.append(evaluate_zero_shot(model, c, templates, batch_size))
    report = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "rsdata_version": __version__, "model": model.name, "source": source,
              "device": str(model.device), "sets": sets}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "report.json", json.dumps(report, indent=2).encode("utf-8"))
    draw_report(sets, out_dir / "report.png")
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short human-readable summary of a report."""
    lines = [f"model {report['model']} ({report['source']})"]
    for s in report["sets"]:
        if s["kind"] == "retrieval":
            i2t, t2i, ch = s["i2t"], s["t2i"], s["chance"]
            lines.append(
                f"{s['name']}: {s['n_images']} images, {s['n_texts']} captions | "
                f"i2t R@1/5/10 {i2t['R@1']:.1f}/{i2t['R@5']:.1f}/{i2t['R@10']:.1f} | "
                f"t2i R@1/5/10 {t2i['R@1']:.1f}/{t2i['R@5']:.1f}/{t2i['R@10']:.1f} | "
                f"mR {s['mR']:.2f} (chance {ch['mR']:.2f})")
        else:
            lines.append(f"{s['name']}: {s['n_images']} images, {s['n_classes']} classes | "
                         f"zero-shot top-1 {s['top1']:.1f}% top-5 {s['top5']:.1f}% "
                         f"mean per class {s['mean_per_class']:.1f}% (chance {s['chance_top1']:.1f}%)")
    return lines

