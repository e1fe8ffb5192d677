"""Turn a recipe into a run plan: checked inputs, partitions, prepared stages, a recipe hash."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsdata.errors import InputError, OutputConflictError
from rsdata.inputs import InputRegistry
from rsdata.recipe import Recipe, parse_bytes
from rsdata.remote import is_url
from rsdata.sources.raster import Partition, make_partitions, plan_raster
from rsdata.stage import RunContext, Stage, create_stage
from rsdata.writer import atomic_write_bytes

STATE_DIR = ".rsdata"


@dataclass
class RunPlan:
    recipe: Recipe
    out_dir: Path
    recipe_hash: str
    partitions: list[Partition]
    stages: list[Stage]
    sources: list[dict[str, Any]]
    reports: dict[str, Any] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.out_dir / STATE_DIR

    @property
    def max_samples(self) -> int:
        return int(self.recipe.output["max_samples_per_shard"])

    @property
    def max_bytes(self) -> int:
        return parse_bytes(self.recipe.output["max_bytes_per_shard"])

    @property
    def n_tiles(self) -> int:
        return sum(len(p.tiles) for p in self.partitions)


def _display(path: Path, recipe: Recipe) -> str:
    """A path as a reader of the manifest would want it: relative to the current directory
    when it lies below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


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
    """Check every input, lay the tiles, claim the output directory and prepare the stages."""
    out_dir = Path(out_dir) if out_dir else recipe.output_dir()
    registry = InputRegistry([recipe.resolve(p) for p in recipe.data.get("inputs", [])])
    src_cfg = recipe.source
    sources: list[dict[str, Any]] = []
    checksums: dict[str, str] = {}
    rasters = []
    for entry in src_cfg["rasters"]:
        path = recipe.resolve(entry["path"])
        prov = registry.describe(path, "imagery") if path.is_file() else None
        display = entry["path"] if is_url(entry["path"]) else _display(path, recipe)
        provenance = {"display_path": display, "sha256": prov.sha256 if prov else "",
                      "license": prov.license if prov else "unknown",
                      "attribution": prov.attribution if prov else "unknown"}
        info, windows = plan_raster(entry, path, src_cfg, provenance)
        assert prov is not None
        sources.append(prov.to_json(display))
        checksums[entry["path"] if is_url(entry["path"]) else os.path.relpath(path, recipe.base_dir)] = prov.sha256
        rasters.append((info, windows))
    if not any(windows for _, windows in rasters):
        raise InputError("no raster of the recipe is large enough for one tile of "
                         f"{src_cfg['tile']['size']} px at {src_cfg['tile'].get('gsd') or 'native'} m; "
                         "use smaller tiles (source.tile.size) or a finer gsd")
    for info, windows in rasters:
        if not windows:
            print(f"rsdata: warning: raster {info.id} ({info.extra['width']} x {info.extra['height']} px) "
                  "is smaller than one tile: it gives no tiles", file=sys.stderr)
    ids = [info.id for info, _ in rasters]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        from rsdata.errors import RecipeError

        raise RecipeError(f"source.rasters: ids must be unique (they prefix sample keys); repeated: {sorted(dupes)}")

    stages = [create_stage(cfg) for cfg in recipe.stages]
    ctx = RunContext(base_dir=recipe.base_dir, state_dir=out_dir / STATE_DIR,
                     raster_bounds_wgs84=[tuple(i.extra["bounds_wgs84"]) for i, _ in rasters],
                     raster_crs=[i.crs_wkt for i, _ in rasters], allow_remote=recipe.allow_remote)
    for stage, cfg in zip(stages, recipe.stages):
        for path in stage.input_files(ctx):
            prov = registry.describe(path, "osm" if cfg["type"] == "osm_join" else "other")
            display = _display(path, recipe)
            sources.append(prov.to_json(display))
            checksums[os.path.relpath(path, recipe.base_dir)] = prov.sha256
    recipe_hash = recipe.hash(checksums)
    _claim_output(out_dir, recipe, recipe_hash, overwrite)
    reports = {}
    for stage in stages:
        report = stage.prepare(ctx)
        if report:
            reports[stage.name] = report
    partitions: list[Partition] = []
    for info, windows in rasters:
        partitions.extend(make_partitions(info, windows, int(src_cfg["partition_size"])))
    return RunPlan(recipe=recipe, out_dir=out_dir, recipe_hash=recipe_hash, partitions=partitions,
                   stages=stages, sources=sources, reports=reports)
