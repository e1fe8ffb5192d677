"""Turn a recipe into a run plan: checked inputs, every source's partitions, prepared stages,
a recipe hash."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsdata.errors import OutputConflictError, RecipeError
from rsdata.inputs import InputRegistry
from rsdata.recipe import Recipe, parse_bytes
from rsdata.sources import Partition, PlanContext, Source, SourcePlan, create_source
from rsdata.stage import RunContext, Stage, create_stage
from rsdata.atomic import atomic_write_bytes

STATE_DIR = ".rsdata"


@dataclass
class RunPlan:
    recipe: Recipe
    out_dir: Path
    recipe_hash: str
    partitions: list[Partition]
    sources: dict[str, Source]  # by source id, in recipe order
    stages: list[Stage]
    inputs: list[dict[str, Any]]  # every input file read (the manifest's ``sources``)
    parents: list[dict[str, Any]] = field(default_factory=list)
    footprints_wgs84: list[tuple[float, float, float, float]] = field(default_factory=list)
    footprint_crs: list[str] = field(default_factory=list)
    reports: dict[str, Any] = field(default_factory=dict)  # stage name -> prepare() report
    source_reports: dict[str, Any] = field(default_factory=dict)  # source id -> plan report

    @property
    def state_dir(self) -> Path:
        return self.out_dir / STATE_DIR

    @property
    def source_ids(self) -> list[str]:
        return list(self.sources)

    @property
    def source_stats_names(self) -> set[str]:
        return {s.stats_name for s in self.sources.values()}

    @property
    def max_samples(self) -> int:
        return int(self.recipe.output["max_samples_per_shard"])

    @property
    def max_bytes(self) -> int:
        return parse_bytes(self.recipe.output["max_bytes_per_shard"])

    @property
    def n_tiles(self) -> int:
        """Items (tiles, samples) the sources will read."""
        return sum(p.size for p in self.partitions)


def _has_output(out_dir: Path) -> bool:
    """Did an earlier run leave finished work (markers, shards or a manifest) in ``out_dir``?"""
    markers = out_dir / STATE_DIR / "partitions"
    shards = out_dir / "shards"
    return ((out_dir / "manifest.json").exists()
            or (markers.is_dir() and any(markers.glob("*.json")))
            or (shards.is_dir() and any(shards.glob("*.tar"))))


def _claim_output(out_dir: Path, recipe: Recipe, recipe_hash: str, overwrite: bool) -> None:
    """Refuse to mix two recipes' outputs in one directory."""
    lock = out_dir / STATE_DIR / "recipe.json"
    if lock.exists():
        previous = json.loads(lock.read_text())
        if previous.get("recipe_hash") != recipe_hash:
            if not overwrite and not _has_output(out_dir):
                overwrite = True  # the earlier run wrote nothing: there is nothing to mix with
            if not overwrite:
                raise OutputConflictError(
                    f"{out_dir} holds the output of another recipe or other inputs (recipe "
                    f"'{previous.get('name')}', hash {previous.get('recipe_hash', '?')[:12]}; this run "
                    f"is '{recipe.name}', hash {recipe_hash[:12]}). Mixing them would corrupt the "
                    "corpus: choose another --out, or pass --overwrite to delete the old output.")
            for name in ("shards", STATE_DIR, "manifest.json", "inspect"):
                target = out_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
    elif out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        if (out_dir / "manifest.json").exists() or (out_dir / "shards").exists():
            raise OutputConflictError(
                f"{out_dir} already holds shards that rsdata did not make with this recipe; "
                "choose another --out or pass --overwrite")
    atomic_write_bytes(lock, json.dumps({"name": recipe.name, "recipe_hash": recipe_hash,
                                         "recipe": recipe.data}, indent=2).encode())


def build_plan(recipe: Recipe, out_dir: Path | None = None, overwrite: bool = False) -> RunPlan:
    """Check every input, plan every source's partitions, claim the output directory and
    prepare the stages."""
    out_dir = Path(out_dir) if out_dir else recipe.output_dir()
    registry = InputRegistry([recipe.resolve(p) for p in recipe.data.get("inputs", [])])
    pctx = PlanContext(base_dir=recipe.base_dir, out_dir=out_dir, registry=registry,
                       allow_remote=recipe.allow_remote)
    sources: dict[str, Source] = {}
    plans: dict[str, SourcePlan] = {}
    for source_id, cfg, prefix in recipe.source_entries():
        if source_id in sources:
            raise RecipeError(f"sources: ids must be unique (they prefix sample keys); repeated: {source_id!r}")
        source = create_source(cfg, source_id, prefix)
        sources[source_id] = source
        plans[source_id] = source.plan(pctx)
    inputs: list[dict[str, Any]] = []
    checksums: dict[str, str] = {}
    for sp in plans.values():
        for rec in sp.inputs:
            if rec.manifest_entry is not None:
                inputs.append(rec.manifest_entry)
            if rec.hash_key:
                checksums[rec.hash_key] = rec.sha256
    footprints = [b for sp in plans.values() for b in sp.footprints_wgs84]
    footprint_crs = [c for sp in plans.values() for c in sp.footprint_crs]
    stages = [create_stage(cfg) for cfg in recipe.stages]
    ctx = RunContext(base_dir=recipe.base_dir, state_dir=out_dir / STATE_DIR,
                     footprints_wgs84=footprints, footprint_crs=footprint_crs,
                     allow_remote=recipe.allow_remote)
    for stage, cfg in zip(stages, recipe.stages):
        for path in stage.input_files(ctx):
            prov = registry.describe(path, "osm" if cfg["type"] == "osm_join" else "other")
            inputs.append(prov.to_json(pctx.display(path)))
            checksums[os.path.relpath(path, recipe.base_dir)] = prov.sha256
    recipe_hash = recipe.hash(checksums)
    _claim_output(out_dir, recipe, recipe_hash, overwrite)
    reports = {}
    for stage in stages:
        report = stage.prepare(ctx)
        if report:
            reports[stage.name] = report
    partitions = [p for sp in plans.values() for p in sp.partitions]
    return RunPlan(recipe=recipe, out_dir=out_dir, recipe_hash=recipe_hash, partitions=partitions,
                   sources=sources, stages=stages, inputs=inputs,
                   parents=[p for sp in plans.values() for p in sp.parents],
                   footprints_wgs84=footprints, footprint_crs=footprint_crs, reports=reports,
                   source_reports={sid: sp.report for sid, sp in plans.items() if sp.report})
