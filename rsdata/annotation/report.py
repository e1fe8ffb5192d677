"""The ``rsdata inspect`` section of a corpus that merged an annotation round.

Reads only the manifest (the ``human_merge`` stage's counters and drops, the recipe's answers
path) and the answers file it names (checked against the sha256 the manifest lists for it), so
it needs neither Label Studio nor ``krippendorff``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

STAGE = "human_merge"


def _answers_file(out_dir: Path, manifest: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    stage_cfg = next((s for s in (manifest.get("recipe") or {}).get("stages", [])
                      if isinstance(s, dict) and s.get("type") == STAGE), None)
    if not stage_cfg or not isinstance(stage_cfg.get("answers"), str):
        return None, "no answers file named in the recipe"
    path = (out_dir / stage_cfg["answers"]).resolve()
    try:
        raw = path.read_bytes()
    except OSError:
        return None, f"answers file {stage_cfg['answers']} not found next to the corpus"
    sha = hashlib.sha256(raw).hexdigest()
    listed = {s.get("sha256") for s in manifest.get("sources", []) if isinstance(s, dict)}
    if sha not in listed:
        return None, f"answers file {stage_cfg['answers']} does not match the manifest (changed?)"
    try:
        data = json.loads(raw)
    except ValueError:
        return None, f"answers file {stage_cfg['answers']} is not JSON"
    return (data if isinstance(data, dict) else None), ""


def annotation_summary(out_dir: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Review counts and agreement of a merged corpus (None when it merged no round)."""
    stage = next((s for s in manifest.get("stages", []) if s.get("name") == STAGE), None)
    if stage is None:
        return None
    counters = stage.get("counters") or {}
    answers, problem = _answers_file(Path(out_dir), manifest)
    out: dict[str, Any] = {
        "reviewed": int(counters.get("reviewed", 0)),
        "not_in_round": int(counters.get("not_in_round", 0)),
        "no_answers": int(counters.get("no_answers", 0)),
        "human_captions": int(counters.get("human_captions", 0)),
        "resolutions": {k.split(":", 1)[1]: int(v) for k, v in sorted(counters.items())
                        if k.startswith("resolution:")},
        "invalid_answers": {k.split(":", 1)[1]: int(v) for k, v in sorted(counters.items())
                            if k.startswith("invalid_answer:")},
        "reject_reasons": {k.split(":", 1)[1]: int(v) for k, v in sorted(counters.items())
                           if k.startswith("reject_reason:")},
        "dropped": dict(stage.get("dropped") or {}),
        "round": None, "project": None, "kind": None, "agreement": None, "counts": None,
    }
    if answers is not None:
        out.update({"round": answers.get("round"), "project": answers.get("project"),
                    "kind": answers.get("kind"), "agreement": answers.get("agreement"),
                    "counts": answers.get("counts")})
    elif problem:
        out["problem"] = problem
    return out


def section_annotation(summary: dict[str, Any]) -> list[str]:
    """The report section (empty when the corpus merged no annotation round)."""
    s = summary.get("annotation")
    if not s:
        return []
    kinds = (summary.get("captions") or {}).get("kinds") or {}
    lines = [f"Human review (round {s['round'] or '?'}, {s['kind'] or '?'}, Label Studio project "
             f"{s['project'] if s['project'] is not None else '?'})"]
    lines.append(f"  captions by kind: human {kinds.get('human', 0):,}, template {kinds.get('template', 0):,}, "
                 f"llm {kinds.get('llm', 0):,}"
                 + "".join(f", {k} {v:,}" for k, v in kinds.items() if k not in ("human", "template", "llm")))
    lines.append(f"  samples reviewed: {s['reviewed']:,}; without answers: {s['no_answers']:,}; not in the "
                 f"round: {s['not_in_round']:,}; new human captions: {s['human_captions']:,}")
    if s["resolutions"]:
        lines.append("  resolutions: " + ", ".join(f"{k} {v:,}" for k, v in s["resolutions"].items()))
    if s["dropped"]:
        lines.append("  dropped: " + ", ".join(f"{k} {v:,}" for k, v in s["dropped"].items())
                     + (" (reasons: " + ", ".join(f"{k} {v}" for k, v in s["reject_reasons"].items()) + ")"
                        if s["reject_reasons"] else ""))
    if s["invalid_answers"]:
        lines.append("  answers not applied: " + ", ".join(f"{k} {v:,}" for k, v in s["invalid_answers"].items()))
    counts = s.get("counts") or {}
    if counts:
        lines.append(f"  answers: {counts.get('answers', 0):,} by {counts.get('annotators', 0):,} annotators; "
                     f"skipped by annotators: {counts.get('cancelled_answers', 0):,}; tasks from another "
                     f"corpus version: {counts.get('skipped_other_corpus_version', 0):,}; unknown keys: "
                     f"{counts.get('skipped_unknown_key', 0):,}")
    for name, fig in (s.get("agreement") or {}).items():
        alpha = "n/a" if fig.get("alpha") is None else f"{fig['alpha']:.3f}"
        pct = "n/a" if fig.get("percent_agreement") is None else f"{100 * fig['percent_agreement']:.1f}%"
        lines.append(f"  agreement {name}: Krippendorff's alpha {alpha} ({fig.get('level')}), "
                     f"{pct} of {fig.get('units', 0):,} units agree"
                     + (f" [{fig['note']}]" if fig.get("note") else ""))
    if s.get("problem"):
        lines.append(f"  ({s['problem']})")
    return lines
