"""VQA pairs, grounding expressions and scene labels on the demo corpus: what they hold, what they
cost, and how often the picture contradicts them.

    python -m benchmarks.bench_vqa [--quick] [--banepa] [--json PATH] [--reps N]

* **Corpus** (``pipelines/vqa.yaml``, run into a temp dir): pairs per tile by family, the answer
  distribution (yes / no by family, count answers, share buckets, "where" cells), the share of
  tiles with at least one unambiguous grounding expression and expressions per tile by kind, the
  scene label and multi-label distributions. ``--banepa`` also runs ``pipelines/banepa.yaml``
  with the same three stages added (0.5 m, OSM coverage over the centre only).
* **Cost** per tile, on the demo's tiles read once into memory (best of ``--reps``): the OSM join
  alone (as ``pipelines/demo.yaml`` runs it, no objects kept), the join keeping objects (what
  the three stages make it do), and scene_label + vqa + grounding over the joined tiles. Target:
  the three stages (with the objects they make the join keep) cost at most 1.5x the join alone.
* **Picture truth** (``tests/data/picture_truth.jsonl``, labels made by eye from the images, see
  ``benchmarks/bench_caption_truth.py``): for the labelled tiles, the share of "yes" / nonzero
  answers whose noun's classes are visible (or uncertain) in the picture, the share of "no" / 0
  answers whose classes are *not* visible, the share of grounding referents visible, and how
  often the scene label's classes are visible. Nouns outside the label table are not scored.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "pipelines" / "vqa.yaml"
DEMO = REPO / "pipelines" / "demo.yaml"
BANEPA = REPO / "pipelines" / "banepa.yaml"
LABELS = REPO / "tests" / "data" / "picture_truth.jsonl"
TARGET_COST = 1.5
TASK_STAGES = [{"type": "scene_label"}, {"type": "vqa", "seed": 0}, {"type": "grounding", "seed": 0}]

#: scene class -> picture-truth classes it stands for
SCENE_CLASSES = {
    "dense residential": ("residential_area", "building"), "residential": ("residential_area", "building"),
    "sparse residential": ("building", "residential_area"),
    "commercial or industrial": ("industrial_commercial",), "farmland": ("farmland", "orchard"),
    "forest": ("forest",), "grassland": ("grassland", "shrubland"), "wetland": ("wetland",),
    "water": ("water_body",), "bare land": ("bare_soil", "rock"),
    "built-up area": ("residential_area", "building", "industrial_commercial"),
    "sports ground or park": ("sports_field", "grassland"), "parking lot": ("industrial_commercial", "road_paved"),
    "highway": ("road_paved",), "road": ("road_paved", "road_unpaved"), "dirt track": ("road_unpaved",),
    "railway": ("railway",), "river": ("river",),
}


def cpu() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(recipe: Path | dict[str, Any], out: Path) -> float:
    """``rsdata run`` in this process; returns the CPU seconds it took (workers included)."""
    from rsdata.cli import main

    if isinstance(recipe, dict):
        import yaml

        path = out.parent / f"{out.name}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
        recipe = path
    t0 = cpu()
    if main(["run", str(recipe), "--out", str(out), "--quiet"]) != 0:
        raise SystemExit(f"rsdata run {recipe} failed")
    return cpu() - t0


def run_cost(tmp: Path, reps: int) -> dict[str, Any]:
    """CPU of a whole ``rsdata run`` of pipelines/vqa.yaml with and without the three stages."""
    import yaml

    full = yaml.safe_load(RECIPE.read_text())
    without = copy.deepcopy(full)
    without["stages"] = [s for s in full["stages"] if s["type"] not in ("scene_label", "vqa", "grounding")]
    for recipe in (full, without):
        recipe["inputs"] = [str((RECIPE.parent / p).resolve()) for p in recipe.get("inputs", [])]
        recipe["source"]["rasters"] = [{**r, "path": str((RECIPE.parent / r["path"]).resolve())}
                                       for r in recipe["source"]["rasters"]]
        for st in recipe["stages"]:
            for src in st.get("sources", []):
                src["path"] = str((RECIPE.parent / src["path"]).resolve())
    best = {"with": float("inf"), "without": float("inf")}
    for i in range(reps):
        for name, recipe in (("with", full), ("without", without)):
            best[name] = min(best[name], run(recipe, tmp / f"run-{name}-{i}"))
    return {"run_cpu_s_with_tasks": round(best["with"], 3), "run_cpu_s_without_tasks": round(best["without"], 3),
            "run_overhead": round(best["with"] / best["without"] - 1, 3)}


def read_metas(out: Path) -> list[dict[str, Any]]:
    from rsdata.corpus.samples import list_shards, read_shard

    return [json.loads(e["json"]) for shard in list_shards([out]) for e in read_shard(shard)]


def corpus_stats(metas: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(metas)
    fam_per_tile: dict[str, list[int]] = defaultdict(list)
    yes_no: dict[str, Counter[str]] = defaultdict(Counter)
    counts: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    where: Counter[str] = Counter()
    main_use: Counter[str] = Counter()
    absence = 0
    kinds: Counter[str] = Counter()
    with_expr = 0
    expr_per_tile = []
    labels: Counter[str] = Counter()
    multi: Counter[str] = Counter()
    full = sum(1 for m in metas if m["osm"]["coverage"]["fraction"] >= 0.999)
    for m in metas:
        pairs = m["vqa"]["pairs"]
        fam = Counter(p["family"] for p in pairs)
        for f in ("presence", "counting", "comparison", "area", "position"):
            fam_per_tile[f].append(fam[f])
        for p in pairs:
            absence += p["absence"]
            if p["answer_type"] == "yes/no":
                yes_no[p["family"]][p["answer"]] += 1
            elif p["family"] == "counting":
                counts[p["answer"]] += 1
            elif p["template"].startswith("area.v1.share"):
                buckets[p["answer"]] += 1
            elif p["template"].startswith("area.v1.main"):
                main_use[p["answer"]] += 1
            elif p["template"].startswith("position.v1.where"):
                where[p["answer"]] += 1
        items = m["grounding"]["items"]
        with_expr += bool(items)
        expr_per_tile.append(len(items))
        kinds.update(it["kind"] for it in items)
        labels[m["scene"]["label"] or "(none)"] += 1
        multi.update(m["scene"]["labels"])
    total_pairs = sum(sum(v) for v in fam_per_tile.values())
    return {
        "tiles": n, "tiles_fully_covered": full,
        "pairs": total_pairs, "pairs_per_tile": round(total_pairs / n, 2) if n else 0,
        "pairs_per_tile_by_family": {f: round(statistics.mean(v), 2) for f, v in fam_per_tile.items()},
        "tiles_without_pairs": sum(1 for m in metas if not m["vqa"]["pairs"]),
        "yes_no_by_family": {f: dict(c) for f, c in sorted(yes_no.items())},
        "count_answers": dict(sorted(counts.items(), key=lambda kv: int(kv[0]))),
        "share_buckets": dict(buckets), "main_land_use": dict(main_use), "where_cells": dict(where),
        "absence_answers": absence,
        "tiles_with_expression": with_expr, "share_tiles_with_expression": round(with_expr / n, 3) if n else 0,
        "expressions_per_tile": round(statistics.mean(expr_per_tile), 2) if n else 0,
        "expressions_by_kind": dict(kinds),
        "scene_labels": dict(labels.most_common()), "multi_labels": dict(multi.most_common()),
    }


# -- cost ---------------------------------------------------------------------------------------------
def cost(reps: int, quick: bool) -> dict[str, Any]:
    """Per-tile time of the join alone, the join keeping objects, and the three stages."""
    from rsdata.plan import build_plan
    from rsdata.recipe import load_recipe
    from rsdata.stage import create_stage
    from rsdata.stats import StageStats

    tmp = Path(tempfile.mkdtemp(prefix="rsdata-bench-vqa-cost-"))
    plan = build_plan(load_recipe(DEMO), tmp / "plan", overwrite=True)
    tiles = []
    for part in plan.partitions:
        tiles += list(plan.sources[part.source].read(part, StageStats("tile")))
    if quick:
        tiles = tiles[:48]
    join = plan.stages[0]
    tasks = [create_stage(cfg) for cfg in _resolved_tasks()]
    from rsdata.stage import RunContext

    ctx = RunContext(base_dir=REPO, state_dir=tmp / "state")
    for t in tasks:
        t.prepare(ctx)

    clock = time.process_time  # CPU time of this process: the machine may be shared

    def run_join(keep: bool) -> tuple[float, list[Any]]:
        join.keep_objects = keep
        batch = copy.deepcopy(tiles)
        t0 = clock()
        out = list(join(iter(batch), StageStats("j")))
        return clock() - t0, out

    def run_tasks(joined: list[Any], only: Any = None) -> float:
        batch = copy.deepcopy(joined)
        _clear_tile_cache()
        t0 = clock()
        stream: Any = iter(batch)
        for t in ([only] if only is not None else tasks):
            stream = t(stream, StageStats(t.name))
        list(stream)
        return clock() - t0

    run_join(True)  # warm: the join's index is built once per worker
    joined = run_join(True)[1]
    run_tasks(joined)
    best = {"join": float("inf"), "objects": float("inf"), "tasks": float("inf")}
    per_stage = {t.name: float("inf") for t in tasks}
    for _ in range(reps):  # interleaved, best of each
        best["join"] = min(best["join"], run_join(False)[0])
        best["objects"] = min(best["objects"], run_join(True)[0])
        best["tasks"] = min(best["tasks"], run_tasks(joined))
        for t in tasks:
            per_stage[t.name] = min(per_stage[t.name], run_tasks(joined, t))
    t_plain, t_objects, best_tasks = best["join"], best["objects"], best["tasks"]
    # the join as a run pays it: its per-worker index built on the first batch (cold)
    cold_join = OsmJoinCold(join, tiles, clock)
    n = len(joined)
    ms = lambda s: round(1000 * s / n, 3)  # noqa: E731
    overhead = (t_objects - t_plain) + best_tasks
    return {"tiles": n, "reps": reps, "clock": "process CPU time, best of reps",
            "join_ms_per_tile": ms(t_plain), "join_keep_objects_ms_per_tile": ms(t_objects),
            "join_cold_ms_per_tile": ms(cold_join),
            "ratio_tasks_and_objects_vs_cold_join": round(overhead / cold_join, 3),
            "tasks_ms_per_tile": ms(best_tasks), "per_stage_ms_per_tile": {k: ms(v) for k, v in per_stage.items()},
            "ratio_tasks_vs_join": round(best_tasks / t_plain, 3),
            "ratio_tasks_and_objects_vs_join": round(overhead / t_plain, 3),
            "target": TARGET_COST, "ok": overhead / t_plain <= TARGET_COST}


def _clear_tile_cache() -> None:
    from rsdata.tasks import objects

    objects._CACHE.clear()


def OsmJoinCold(join: Any, tiles: list[Any], clock: Any) -> float:  # noqa: N802
    """The join over the tiles as a fresh worker runs it (index built on the first batch)."""
    import pickle

    from rsdata.stats import StageStats

    best = float("inf")
    for _ in range(2):
        fresh = pickle.loads(pickle.dumps(join))
        fresh.keep_objects = False
        batch = copy.deepcopy(tiles)
        t0 = clock()
        list(fresh(iter(batch), StageStats("j")))
        best = min(best, clock() - t0)
    return best


def _resolved_tasks() -> list[dict[str, Any]]:
    from rsdata.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    return [s for s in recipe.stages if s["type"] in ("scene_label", "vqa", "grounding")]


# -- picture truth ---------------------------------------------------------------------------------
def picture_truth(metas: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        from benchmarks.bench_caption_truth import PHRASE_CLASSES
    except ImportError:
        return {"skipped": "benchmarks.bench_caption_truth not importable"}
    if not LABELS.is_file():
        return {"skipped": f"{LABELS} not found"}
    labels = {}
    for line in LABELS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            labels[rec["key"]] = rec
    table = dict(PHRASE_CLASSES)
    table.update({k + "s": v for k, v in PHRASE_CLASSES.items()})
    table.setdefault("highway", ("road_paved",))
    yes = Counter()
    no = Counter()
    ground = Counter()
    scene = Counter()
    contradicted: list[str] = []
    tiles = 0
    for m in metas:
        lab = labels.get(m["key"])
        if lab is None:
            continue
        tiles += 1
        seen = set(lab.get("visible", [])) | set(lab.get("uncertain", []))
        visible = set(lab.get("visible", []))
        for p in m["vqa"]["pairs"]:
            if p["family"] not in ("presence", "counting"):
                continue
            noun = _noun(p["question"], table)
            if noun is None:
                yes["unscored"] += 1
                continue
            classes = set(table[noun])
            positive = p["answer"] not in ("no", "0")
            if positive:
                yes["ok" if classes & seen else "contradicted"] += 1
            else:
                no["contradicted" if classes & visible else "ok"] += 1
                if classes & visible:
                    contradicted.append(f"{m['key']}: {p['question']} -> {p['answer']} (picture: {sorted(classes & visible)})")
        for it in m["grounding"]["items"]:
            phrase = it["referent"]["phrase"]
            if phrase not in table:
                ground["unscored"] += 1
                continue
            ground["ok" if set(table[phrase]) & seen else "contradicted"] += 1
        label = m["scene"]["label"]
        if label:
            scene["visible" if set(SCENE_CLASSES.get(label, ())) & seen else "not_visible"] += 1
            dom = lab.get("dominant")
            if dom in SCENE_CLASSES.get(label, ()):
                scene["is_dominant"] += 1

    def share(c: Counter[str], good: str, bad: str) -> float | None:
        total = c[good] + c[bad]
        return round(c[good] / total, 3) if total else None

    return {"labelled_tiles": tiles,
            "positive_answers": dict(yes), "positive_supported": share(yes, "ok", "contradicted"),
            "absence_answers": dict(no), "absence_supported": share(no, "ok", "contradicted"),
            "absence_contradicted_examples": contradicted[:8],
            "grounding_referents": dict(ground), "referents_visible": share(ground, "ok", "contradicted"),
            "scene_labels": dict(scene), "scene_label_visible": share(scene, "visible", "not_visible")}


def _noun(question: str, table: dict[str, Any]) -> str | None:
    q = question.lower().rstrip("?")
    best = None
    for phrase in table:
        if f" {phrase} " in f" {q} " and (best is None or len(phrase) > len(best)):
            best = phrase
    return best


def fmt(results: dict[str, Any]) -> str:
    lines = []
    for name, c in results["corpora"].items():
        lines.append(f"[{name}] {c['tiles']} tiles ({c['tiles_fully_covered']} inside OSM coverage): "
                     f"{c['pairs']} pairs, {c['pairs_per_tile']}/tile; by family {c['pairs_per_tile_by_family']}")
        lines.append(f"  yes/no by family {c['yes_no_by_family']}; counts {c['count_answers']}; "
                     f"buckets {c['share_buckets']}; where {c['where_cells']}; main land use {c['main_land_use']}")
        lines.append(f"  tiles with >= 1 expression: {c['tiles_with_expression']} ({100 * c['share_tiles_with_expression']:.1f}%), "
                     f"{c['expressions_per_tile']}/tile, by kind {c['expressions_by_kind']}")
        lines.append(f"  scene labels {c['scene_labels']}; multi-labels {c['multi_labels']}")
        t = c.get("picture_truth") or {}
        if t.get("labelled_tiles"):
            lines.append(f"  picture truth ({t['labelled_tiles']} labelled tiles): yes/nonzero supported "
                         f"{t['positive_supported']}, no/0 supported {t['absence_supported']}, referents visible "
                         f"{t['referents_visible']}, scene label visible {t['scene_label_visible']} "
                         f"(is the dominant class: {t['scene_labels'].get('is_dominant', 0)})")
            for ex in t["absence_contradicted_examples"]:
                lines.append(f"    contradicted: {ex}")
    k = results["cost"]
    lines.append(f"[cost] {k['tiles']} tiles: join {k['join_ms_per_tile']} ms/tile, join keeping objects "
                 f"{k['join_keep_objects_ms_per_tile']} ms/tile, scene_label+vqa+grounding {k['tasks_ms_per_tile']} ms/tile "
                 f"{k['per_stage_ms_per_tile']}; (tasks + objects) / join = {k['ratio_tasks_and_objects_vs_join']} "
                 f"(target <= {k['target']}: {'ok' if k['ok'] else 'FAIL'}); tasks / join = {k['ratio_tasks_vs_join']}; "
                 f"join as a fresh worker runs it (index built): {k['join_cold_ms_per_tile']} ms/tile, "
                 f"(tasks + objects) / that = {k['ratio_tasks_and_objects_vs_cold_join']}")
    lines.append(f"[run] rsdata run pipelines/vqa.yaml: {k['run_cpu_s_with_tasks']} CPU s; without the three "
                 f"stages {k['run_cpu_s_without_tasks']} CPU s: +{100 * k['run_overhead']:.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_vqa", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and tiles for the cost")
    ap.add_argument("--banepa", action="store_true", help="also the Banepa recipe with the three stages")
    ap.add_argument("--reps", type=int, default=None, help="timing repetitions (default 5; --quick 2)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    reps = args.reps or (2 if args.quick else 5)
    tmp = Path(tempfile.mkdtemp(prefix="rsdata-bench-vqa-"))
    results: dict[str, Any] = {"corpora": {}}
    run(RECIPE, tmp / "vqa")
    metas = read_metas(tmp / "vqa")
    results["corpora"]["vqa (demo)"] = {**corpus_stats(metas), "picture_truth": picture_truth(metas)}
    if args.banepa:
        import yaml

        recipe = yaml.safe_load(BANEPA.read_text())
        recipe["stages"] += TASK_STAGES
        recipe["inputs"] = [str((BANEPA.parent / p).resolve()) for p in recipe.get("inputs", [])]
        for s in recipe["stages"]:
            for src in s.get("sources", []):
                if "path" in src:
                    src["path"] = str((BANEPA.parent / src["path"]).resolve())
        for r in recipe["source"]["rasters"]:
            r["path"] = str((BANEPA.parent / r["path"]).resolve())
        run(recipe, tmp / "banepa")
        metas = read_metas(tmp / "banepa")
        results["corpora"]["banepa"] = {**corpus_stats(metas), "picture_truth": picture_truth(metas)}
    results["cost"] = {**cost(reps, args.quick), **run_cost(tmp, 1 if args.quick else 3)}
    print(fmt(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
