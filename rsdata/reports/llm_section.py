"""LLM caption numbers for ``rsdata inspect`` (and bench_llm), read from the manifest's
``llm_caption`` stage counters; needs nothing from :mod:`rsdata.llm`."""

from __future__ import annotations

from typing import Any

STAGE = "llm_caption"


def llm_summary(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Faithfulness rate, rejection reasons and coverage of a run's ``llm_caption`` stage
    (None when the run had none)."""
    stage = next((s for s in manifest.get("stages", []) if s.get("name") == STAGE), None)
    if stage is None:
        return None
    c = stage.get("counters") or {}
    answers = int(c.get("answers", 0))
    accepted = int(c.get("accepted", 0))
    requested = int(c.get("captions_requested", 0))
    reasons = {k.split(":", 1)[1]: int(v) for k, v in c.items() if k.startswith("rejected:")}
    tries = {k.split(":", 1)[1]: int(v) for k, v in c.items() if k.startswith("accepted_on_try:")}
    return {
        "answers": answers,
        "accepted": accepted,
        "rejected": int(c.get("rejected", 0)),
        "faithful_rate": round(accepted / answers, 4) if answers else None,
        "captions_requested": requested,
        "captions_kept": accepted,
        "kept_rate": round(accepted / requested, 4) if requested else None,
        "captions_fallback": int(c.get("captions_fallback", 0)),
        "samples_with_llm_caption": int(c.get("samples_with_llm_caption", 0)),
        "skipped_no_visible_tags": int(c.get("skipped:no_visible_tags", 0)),
        "cache_hits": int(c.get("cache_hits", 0)),
        "mean_coverage": round(c.get("coverage_permille_sum", 0) / 1000 / accepted, 4)
        if accepted
        else None,
        "accepted_on_try": dict(sorted(tries.items())),
        "rejection_reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def section_llm(summary: dict[str, Any]) -> list[str]:
    """The report section (empty when the corpus has no LLM stage)."""
    s = summary.get("llm")
    if not s:
        return []
    lines = [
        "LLM captions (validated against the OSM tags)",
        f"  answers checked: {s['answers']:,}; faithful (accepted): {s['accepted']:,} "
        f"({_pct(s['faithful_rate'])}); rejected: {s['rejected']:,}",
        f"  captions kept: {s['captions_kept']:,} of {s['captions_requested']:,} "
        f"({_pct(s['kept_rate'])}); template fallbacks: {s['captions_fallback']:,}; "
        f"mean coverage of kept: {_pct(s['mean_coverage'])}",
        f"  samples with an LLM caption: {s['samples_with_llm_caption']:,}; skipped (nothing "
        f"visible): {s['skipped_no_visible_tags']:,}; cache hits: {s['cache_hits']:,}",
    ]
    if s["accepted_on_try"]:
        lines.append(
            "  accepted on try: "
            + ", ".join(f"{k}: {v:,}" for k, v in s["accepted_on_try"].items())
        )
    lines.append("  rejection reasons (answers can have several):")
    if s["rejection_reasons"]:
        top = max(s["rejection_reasons"].values())
        width = max(len(k) for k in s["rejection_reasons"])
        lines += [
            f"    {k:<{width}}  {v:>6,}  {'#' * max(1, round(30 * v / top))}"
            for k, v in s["rejection_reasons"].items()
        ]
    else:
        lines.append("    (none)")
    return lines
