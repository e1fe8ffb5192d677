"""Exported Label Studio annotations as rsdata answers, and inter-annotator agreement.

An export (a list of tasks with their annotations) becomes the **answers file** that
``rsdata annotate pull`` writes and the ``human_merge`` stage reads: per sample key, every
submitted answer with its hashed annotator id and time. Tasks of another corpus version
(``rsdata_manifest_sha256`` differs from the round's) and keys the round never pushed are
reported and skipped, counted; skipped (cancelled) annotations are counted, never answers. The
file is a pure function of the server's annotations (sorted, no pull time), so pulling twice
without new annotations writes the same bytes, the same recipe hash, and resumes.

Agreement (Krippendorff's alpha, computed with the maintained ``krippendorff`` package from
per-unit value counts; units with fewer than two answers are not pairable and do not count):

* caption_verification — ``verdict`` (nominal: accept / edit / reject) and ``keep_or_reject``
  (nominal: accept and edit both mean keep);
* match_rating — ``rating`` (ordinal, 1-5);
* tag_check — ``tag_visible`` (nominal yes/no; a unit is one tag of one task: an option an
  annotator left unticked counts as "not visible").

Each figure also gives ``units`` (pairable units), ``answers`` and ``percent_agreement`` (share
of pairable units whose answers are all equal). Alpha is ``null`` when it is undefined (fewer
than two pairable units, or one value only), with a ``note`` saying which.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from rsdata.annotation.state import annotator_id
from rsdata.annotation.tasks import option_tags
from rsdata.annotation.template import VERDICTS
from rsdata.atomic import atomic_write_bytes
from rsdata.errors import MissingDependencyError

ANSWERS_FORMAT = "rsdata-annotation-answers/1"
ANSWERS_DIR = "annotation"


def _user(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("id", value.get("email"))
    return value


def _choices(result: list[dict[str, Any]], name: str) -> list[str]:
    for item in result:
        if item.get("from_name") == name:
            return [str(c) for c in (item.get("value") or {}).get("choices") or []]
    return []


def _text(result: list[dict[str, Any]], name: str) -> str | None:
    for item in result:
        if item.get("from_name") == name:
            text = (item.get("value") or {}).get("text")
            if isinstance(text, list):
                return "\n".join(str(t) for t in text)
            return None if text is None else str(text)
    return None


def _rating(result: list[dict[str, Any]], name: str) -> int | None:
    for item in result:
        if item.get("from_name") == name:
            value = (item.get("value") or {}).get("rating")
            if isinstance(value, (int, float)) and float(value).is_integer():
                return int(value)
    return None


def extract(kind: str, result: list[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    """The answer fields of one annotation's ``result`` for a round of ``kind``."""
    result = [r for r in (result or []) if isinstance(r, dict)]
    if kind == "caption_verification":
        verdict = (_choices(result, "verdict") or [None])[0]
        return {"verdict": verdict if verdict in VERDICTS else None,
                "caption": _text(result, "edited_caption"),
                "reason": (_choices(result, "reject_reason") or [None])[0]}
    if kind == "match_rating":
        return {"rating": _rating(result, "match")}
    labels = option_tags(data)
    return {"tags": sorted({labels.get(c, c) for c in _choices(result, "visible_tags")})}


def collect(kind: str, export: list[dict[str, Any]], record: dict[str, Any],
            salt: bytes) -> tuple[dict[str, Any], Counter[str]]:
    """Answers by sample key from an export, and counts of what was skipped and why."""
    sha = record["corpus"]["manifest_sha256"]
    keys = set(record["sample_keys"])
    counts: Counter[str] = Counter()
    tasks: dict[str, dict[str, Any]] = {}
    for task in sorted(export, key=lambda t: t.get("id", 0)):
        data = task.get("data") or {}
        key = data.get("rsdata_key")
        counts["tasks"] += 1
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        if data.get("rsdata_manifest_sha256") != sha:
            counts["skipped_other_corpus_version"] += 1
            counts["skipped_answers"] += len(annotations)
            continue
        if not isinstance(key, str) or key not in keys:
            counts["skipped_unknown_key"] += 1
            counts["skipped_answers"] += len(annotations)
            continue
        entry = tasks.setdefault(key, {"tasks": [], "answers": []})
        entry["tasks"].append(int(task.get("id", 0)))
        if len(entry["tasks"]) > 1:
            counts["duplicate_tasks"] += 1
        if kind == "tag_check":
            entry["options"] = sorted(set(option_tags(data).values()))
        for ann in annotations:
            if ann.get("was_cancelled"):
                counts["cancelled_answers"] += 1
                continue
            answer = {"annotator": annotator_id(salt, record["server"], _user(ann.get("completed_by"))),
                      "time": str(ann.get("updated_at") or ann.get("created_at") or ""),
                      **extract(kind, ann.get("result") or [], data)}
            lead = ann.get("lead_time")
            if isinstance(lead, (int, float)):
                answer["lead_time_s"] = round(float(lead), 1)
            entry["answers"].append(answer)
            counts["answers"] += 1
    for entry in tasks.values():
        entry["answers"].sort(key=lambda a: (a["time"], a["annotator"]))
    counts["tasks_with_answers"] = sum(1 for e in tasks.values() if e["answers"])
    counts["annotators"] = len({a["annotator"] for e in tasks.values() for a in e["answers"]})
    return dict(sorted(tasks.items())), counts


# -- agreement ----------------------------------------------------------------------------------


def _alpha(units: list[list[Any]], domain: list[Any], level: str) -> dict[str, Any]:
    """Krippendorff's alpha over units (each a list of the values its annotators gave)."""
    pairable = [u for u in units if len(u) >= 2]
    out: dict[str, Any] = {"alpha": None, "level": level, "units": len(pairable),
                           "answers": sum(len(u) for u in pairable),
                           "percent_agreement": round(sum(1 for u in pairable if len(set(u)) == 1)
                                                      / len(pairable), 4) if pairable else None}
    values = {v for u in pairable for v in u}
    if len(pairable) < 2:
        out["note"] = "fewer than two units with two or more answers: alpha undefined"
        return out
    if len(values) < 2:
        out["note"] = "every answer has the same value: alpha undefined (no variation)"
        return out
    try:
        import krippendorff
        import numpy as np
    except ImportError:
        raise MissingDependencyError("krippendorff", "annotate", "agreement figures") from None
    index = {v: i for i, v in enumerate(domain)}
    counts = np.zeros((len(pairable), len(domain)), dtype=np.float64)
    for i, unit in enumerate(pairable):
        for v in unit:
            counts[i, index[v]] += 1
    alpha = float(krippendorff.alpha(value_counts=counts, value_domain=list(range(len(domain))),
                                     level_of_measurement=level))
    out["alpha"] = None if alpha != alpha else round(alpha, 4)  # NaN: undefined
    if out["alpha"] is None:
        out["note"] = "alpha undefined for these answers"
    return out


def agreement(kind: str, tasks: dict[str, Any]) -> dict[str, Any]:
    """Per-question agreement figures of a round (see the module docstring)."""
    if kind == "caption_verification":
        verdicts = [[a["verdict"] for a in e["answers"] if a["verdict"]] for e in tasks.values()]
        keep = [["reject" if v == "reject" else "keep" for v in u] for u in verdicts]
        return {"verdict": _alpha(verdicts, list(VERDICTS), "nominal"),
                "keep_or_reject": _alpha(keep, ["keep", "reject"], "nominal")}
    if kind == "match_rating":
        ratings = [[a["rating"] for a in e["answers"] if isinstance(a.get("rating"), int)
                    and 1 <= a["rating"] <= 5] for e in tasks.values()]
        return {"rating": _alpha(ratings, [1, 2, 3, 4, 5], "ordinal")}
    units = []
    for e in tasks.values():
        for tag in e.get("options", []):
            units.append([tag in a["tags"] for a in e["answers"] if a.get("tags") is not None])
    return {"tag_visible": _alpha(units, [False, True], "nominal")}


# -- the answers file ---------------------------------------------------------------------------


def build_answers(template: Any, record: dict[str, Any], export: list[dict[str, Any]],
                  salt: bytes, reject_reasons: list[str]) -> dict[str, Any]:
    tasks, counts = collect(template.kind, export, record, salt)
    return {
        "format": ANSWERS_FORMAT,
        "round": record["round"],
        "kind": template.kind,
        "project": record["project"],
        "server": record["server"],
        "config_sha256": record["config_sha256"],
        "overlap": record.get("overlap"),
        "corpus": {k: record["corpus"][k] for k in ("name", "manifest_sha256", "recipe_hash")},
        "reject_reasons": reject_reasons,
        "counts": dict(sorted(counts.items())),
        "agreement": agreement(template.kind, tasks),
        "tasks": tasks,
    }


def encode(answers: dict[str, Any]) -> bytes:
    return json.dumps(answers, indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8")


def write_answers(out_dir: Path, answers: dict[str, Any], license: str,
                  attribution: str) -> tuple[str, str]:
    """Write the answers file and its input manifest into ``OUT/annotation/`` under
    content-addressed names (so an earlier pull's file is never overwritten); returns both paths
    relative to ``out_dir``."""
    data = encode(answers)
    sha = hashlib.sha256(data).hexdigest()
    folder = out_dir / ANSWERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"answers-{answers['round']}-{sha[:12]}.json"
    path = folder / name
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
        atomic_write_bytes(path, data)
    inputs = {"name": f"annotation round {answers['round']}",
              "description": f"Answers of Label Studio project {answers['project']} "
                             f"(round {answers['round']}), exported by rsdata annotate pull.",
              "files": [{"path": name, "role": "other", "sha256": sha, "bytes": len(data),
                         "license": license, "attribution": attribution,
                         "origin": f"{answers['server']} project {answers['project']}"}]}
    import yaml

    manifest_name = name[:-len(".json")] + ".inputs.yaml"
    manifest_data = yaml.safe_dump(inputs, sort_keys=True).encode("utf-8")
    mpath = folder / manifest_name
    if not mpath.is_file() or mpath.read_bytes() != manifest_data:
        atomic_write_bytes(mpath, manifest_data)
    return f"{ANSWERS_DIR}/{name}", f"{ANSWERS_DIR}/{manifest_name}"


def load_answers(path: str | Path) -> dict[str, Any]:
    from rsdata.errors import InputError

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"answers file not found: {path} (rsdata annotate pull writes it)") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"{path} is not a readable answers file ({str(exc)[:100]}); rerun "
                         "rsdata annotate pull") from None
    if not isinstance(data, dict) or data.get("format") != ANSWERS_FORMAT or not isinstance(
            data.get("tasks"), dict):
        raise InputError(f"{path} is not an rsdata answers file (format {ANSWERS_FORMAT}); it is "
                         "written by rsdata annotate pull")
    return data

