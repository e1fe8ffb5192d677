"""Evaluate a dual encoder on retrieval and zero-shot sets; write ``report.json`` + ``report.png``.

Every retrieval figure gets a bootstrap interval (:mod:`rsdata.evaluate.bootstrap`, query images
resampled) and, when the training side is known, the share of test captions that occur verbatim
in training. A no-learning reference (:mod:`rsdata.evaluate.baselines`) is evaluated by the same
code: anything with a ``similarity(RetrievalSet)`` method stands in for the model, and
:func:`learning_verdict` says whether a model beats it outside the interval.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence, Union

import numpy as np
import torch

from rsdata import __version__
from rsdata.evaluate.baselines import verbatim_share
from rsdata.evaluate.bootstrap import DEFAULT_BOOT, DEFAULT_LEVEL, paired_difference, retrieval_ci
from rsdata.evaluate.datasets import ClassSet, RetrievalSet
from rsdata.evaluate.embed import class_embeddings, embed_images, embed_texts
from rsdata.evaluate.metrics import retrieval_metrics, retrieval_ranks, zero_shot_metrics
from rsdata.evaluate.plots import draw_report
from rsdata.models import DualEncoder
from rsdata.atomic import atomic_write_bytes


class Ranker(Protocol):
    """A reference system: scores every caption of a retrieval set for every image."""

    name: str

    def similarity(self, data: RetrievalSet) -> np.ndarray: ...

    def describe(self) -> dict[str, object]: ...


System = Union[DualEncoder, Ranker]


@dataclass
class EvalSpec:
    """What to evaluate: retrieval sets, zero-shot sets (with their prompt templates).

    ``n_boot`` bootstrap resamples give every retrieval figure an interval (0: none);
    ``train_captions`` (the captions of the training side) adds the verbatim share."""

    retrieval: list[RetrievalSet] = field(default_factory=list)
    zero_shot: list[tuple[ClassSet, list[str]]] = field(default_factory=list)
    n_boot: int = DEFAULT_BOOT
    level: float = DEFAULT_LEVEL
    seed: int = 0
    train_captions: Sequence[str] | None = None
    train_side: str = ""


def _similarity(system: System, data: RetrievalSet, batch_size: int) -> np.ndarray:
    if isinstance(system, DualEncoder):
        images = embed_images(system, data.images, batch_size)
        texts = embed_texts(system, data.captions)
        return images @ texts.T
    return np.asarray(system.similarity(data), dtype=np.float64)


def evaluate_retrieval(model: System, data: RetrievalSet, batch_size: int = 64,
                       spec: EvalSpec | None = None) -> dict[str, Any]:
    spec = spec or EvalSpec()
    t0 = time.perf_counter()
    sim = _similarity(model, data, batch_size)
    result = retrieval_metrics(sim, data.caption_image)
    i2t, t2i = retrieval_ranks(sim, data.caption_image)
    out: dict[str, Any] = {"kind": "retrieval", "name": data.name, **result,
                           "ranks": {"i2t": i2t.tolist(), "t2i": t2i.tolist()},
                           "caption_image": list(map(int, data.caption_image))}
    if spec.n_boot:
        out["ci"] = retrieval_ci(i2t, t2i, data.caption_image, spec.n_boot, spec.level, spec.seed)
    if spec.train_captions is not None:
        out["verbatim"] = {**verbatim_share(data.captions, spec.train_captions, data.caption_image),
                           "train_side": spec.train_side}
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def evaluate_zero_shot(model: DualEncoder, data: ClassSet, templates: list[str],
                       batch_size: int = 64) -> dict[str, Any]:
    t0 = time.perf_counter()
    images = embed_images(model, data.images, batch_size)
    classes = class_embeddings(model, data.classes, templates)
    result = zero_shot_metrics(images @ classes.T, data.labels, data.classes)
    return {"kind": "zero_shot", "name": data.name, "templates": templates, **result,
            "seconds": round(time.perf_counter() - t0, 3)}


def evaluate(model: System, spec: EvalSpec, out_dir: Path | None, source: str,
             batch_size: int = 64) -> dict[str, Any]:
    """Run every set in ``spec``; write ``out_dir/report.json`` and ``out_dir/report.png``
    (``out_dir`` None: write nothing). ``model`` is a dual encoder or a baseline."""
    is_model = isinstance(model, DualEncoder)
    if spec.zero_shot and not is_model:
        raise ValueError(f"{model.name} ranks captions of retrieval sets only; zero-shot needs a dual encoder")
    sets: list[dict[str, Any]] = []
    if is_model:
        model.eval()
    with torch.no_grad():
        for r in spec.retrieval:
            sets.append(evaluate_retrieval(model, r, batch_size, spec))
        for c, templates in spec.zero_shot:
            sets.append(evaluate_zero_shot(model, c, templates, batch_size))  # type: ignore[arg-type]
    report: dict[str, Any] = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "rsdata_version": __version__, "model": model.name, "source": source,
                              "device": str(model.device) if is_model else "cpu", "sets": sets}
    if not is_model:
        report["baseline"] = model.describe()
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "report.json", json.dumps(report, indent=2).encode("utf-8"))
    draw_report(report["sets"], out_dir / "report.png")


def learning_verdict(model_set: dict[str, Any], baseline_set: dict[str, Any], n_boot: int = DEFAULT_BOOT,
                     level: float = DEFAULT_LEVEL, seed: int = 0) -> dict[str, Any]:
    """Does the model beat the no-learning baseline on this set, outside the interval?

    ``learns`` holds only when the model's whole mR interval lies above the baseline's whole
    interval (non-overlapping ``level`` intervals: stricter than the paired test, which is
    reported beside it as ``paired``)."""
    for s in (model_set, baseline_set):
        if "ci" not in s:
            raise ValueError("a verdict needs bootstrap intervals (n_boot > 0)")
    if model_set["caption_image"] != baseline_set["caption_image"]:
        raise ValueError("the model and the baseline were evaluated on different sets")
    lo, hi = model_set["ci"]["mR"][0], baseline_set["ci"]["mR"][1]
    paired = paired_difference(model_set["ranks"], baseline_set["ranks"], model_set["caption_image"],
                               n_boot, level, seed)
    return {"learns": bool(lo > hi), "model_mR": model_set["mR"], "model_ci": model_set["ci"]["mR"],
            "baseline_mR": baseline_set["mR"], "baseline_ci": baseline_set["ci"]["mR"], "paired": paired,
            "rule": f"model mR {int(level * 100)}% interval entirely above the baseline's"}


def verdict_line(name: str, v: dict[str, Any], against: str, claim: str | None = None) -> str:
    """One line: whether ``name`` beats ``against`` outside the interval; with ``claim``, that
    claim is said to hold or not."""
    p = v["paired"]
    head = f"claim '{claim}' {'HOLDS' if v['learns'] else 'DOES NOT HOLD'}: " if claim else ""
    word = "beats" if v["learns"] else "does not beat"
    return (f"{head}{name} {word} {against} outside the interval: mR {v['model_mR']:.2f} "
            f"[{v['model_ci'][0]:.2f}, {v['model_ci'][1]:.2f}] vs {v['baseline_mR']:.2f} "
            f"[{v['baseline_ci'][0]:.2f}, {v['baseline_ci'][1]:.2f}]; paired difference "
            f"{p['mR_difference']:+.2f} [{p['ci'][0]:+.2f}, {p['ci'][1]:+.2f}]")


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short human-readable summary of a report."""
    lines = [f"model {report['model']} ({report['source']})"]
    for s in report["sets"]:
        if s["kind"] == "retrieval":
            i2t, t2i, ch = s["i2t"], s["t2i"], s["chance"]
            ci = s.get("ci")

            def fig(d: str, k: str) -> str:
                return f"{s[d][k]:.1f}" + (f" [{ci[d][k][0]:.1f}, {ci[d][k][1]:.1f}]" if ci else "")

            mr = f"mR {s['mR']:.2f}" + (f" [{ci['mR'][0]:.2f}, {ci['mR'][1]:.2f}]" if ci else "")
            lines.append(
                f"{s['name']}: {s['n_images']} images, {s['n_texts']} captions | "
                f"i2t R@1/5/10 {fig('i2t', 'R@1')} / {fig('i2t', 'R@5')} / {fig('i2t', 'R@10')} | "
                f"t2i R@1/5/10 {fig('t2i', 'R@1')} / {fig('t2i', 'R@5')} / {fig('t2i', 'R@10')} | "
                f"{mr} (chance {ch['mR']:.2f})" + (f" ({int(ci['level'] * 100)}% bootstrap intervals, "
                                                   f"{ci['n_boot']} resamples of images)" if ci else ""))
            if "verbatim" in s:
                v = s["verbatim"]
                lines.append(f"  {v['matched']}/{v['n_test']} test captions ({100 * v['share']:.1f}%) occur "
                             f"verbatim in training ({v['train_side']})")
        else:
            lines.append(f"{s['name']}: {s['n_images']} images, {s['n_classes']} classes | "
                         f"zero-shot top-1 {s['top1']:.1f}% top-5 {s['top5']:.1f}% "
                         f"mean per class {s['mean_per_class']:.1f}% (chance {s['chance_top1']:.1f}%)")
    return lines

