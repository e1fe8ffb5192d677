"""Turn a recipe into a run plan: checked inputs, every source's partitions, prepared stages,
a recipe hash."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsdata.errors import OutputConflictError, RecipeError, RsdataError
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
    """Refuse to mix two recipes' outputs in one directory; with ``overwrite``, delete the other
    recipe's output (only what rsdata wrote: see :func:`_remove_output`)."""
    lock = out_dir / STATE_DIR / "recipe.json"
    previous = _read_state(lock)  # None: missing, or half-written by a killed run
    if previous is None and out_dir.is_dir():
        previous = _previous_from_outputs(out_dir)
    if previous is not None:
        if previous.get("recipe_hash") != recipe_hash:
            if not overwrite and not _has_output(out_dir):
                overwrite = True  # the earlier run wrote nothing: there is nothing to mix with
            if not overwrite:
                old_hash = previous.get("recipe_hash")
                old_hash = old_hash[:12] if isinstance(old_hash, str) else "?"
                raise OutputConflictError(
                    f"{out_dir} holds the output of another recipe or other inputs (recipe "
                    f"'{previous.get('name', '?')}', hash {old_hash}; this run "
                    f"is '{recipe.name}', hash {recipe_hash[:12]}). Mixing them would corrupt the "
                    "corpus: choose another --out, or pass --overwrite to delete the old output.")
            _remove_output(out_dir)
    elif out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        if (out_dir / "manifest.json").exists() or (out_dir / "shards").exists():
            raise OutputConflictError(
                f"{out_dir} already holds shards that rsdata did not make with this recipe; "
                "choose another --out or pass --overwrite")
    atomic_write_bytes(lock, json.dumps({"name": recipe.name, "recipe_hash": recipe_hash,
                                         "recipe": recipe.data}, indent=2).encode())


try:  # rsdata.lock reads state files a killed run may have half-written
    from rsdata.lock import read_json_state as _read_state
except ImportError:  # pragma: no cover - an rsdata without rsdata.lock
    def _read_state(path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(Path(path).read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None


try:
    from rsdata.lock import LOCK_NAME as _LOCK_NAME
except ImportError:  # pragma: no cover
    _LOCK_NAME = "lock"

# What ``rsdata inspect`` writes into DIR/inspect (rsdata/inspect.py)
INSPECT_FILES = ("contact_sheet.png", "tag_histogram.png", "report.txt", "summary.json")
_TMP = re.compile(r"\..+\.tmp[0-9]+")  # rsdata.atomic / ShardWriter temporaries: .NAME.tmpPID
_SHARD_TMP = re.compile(r"\..+\.tar\.tmp[0-9]+")


def _markers(out_dir: Path) -> list[dict[str, Any]]:
    markers = out_dir / STATE_DIR / "partitions"
    if not markers.is_dir():
        return []
    found = []
    for path in sorted(markers.glob("*.json")):
        try:
            marker = _read_state(path)
        except RsdataError:
            marker = None
        if marker is not None:
            found.append(marker)
    return found


def _read_manifest_state(out_dir: Path) -> dict[str, Any] | None:
    try:
        return _read_state(out_dir / "manifest.json")
    except RsdataError:
        return None


def _previous_from_outputs(out_dir: Path) -> dict[str, Any] | None:
    """Which recipe made the output when ``.rsdata/recipe.json`` is missing or unreadable: the
    recipe hash its manifest and completion markers name (one that differs from the others wins,
    so a mix is never taken for this recipe's output)."""
    hashes: list[tuple[str, str]] = []
    manifest = _read_manifest_state(out_dir)
    if manifest is not None and isinstance(manifest.get("recipe_hash"), str):
        name = manifest.get("name") or (manifest.get("recipe") or {}).get("name") or "?"
        hashes.append((manifest["recipe_hash"], str(name)))
    for marker in _markers(out_dir):
        if isinstance(marker.get("recipe_hash"), str):
            hashes.append((marker["recipe_hash"], "?"))
    if not hashes:
        return None
    distinct = {h for h, _ in hashes}
    if len(distinct) > 1:  # a mix: report a hash no recipe has, so only --overwrite accepts it
        return {"recipe_hash": "mixed:" + ",".join(sorted(distinct)), "name": "several recipes"}
    return {"recipe_hash": hashes[0][0], "name": hashes[0][1]}


def _listed_shards(out_dir: Path) -> set[str]:
    """File names in ``shards/`` that the old manifest or completion markers list (paths that
    point anywhere else are ignored: a tampered list must not delete outside the corpus)."""
    entries: list[Any] = []
    manifest = _read_manifest_state(out_dir)
    if manifest is not None and isinstance(manifest.get("shards"), list):
        entries.extend(manifest["shards"])
    for marker in _markers(out_dir):
        if isinstance(marker.get("shards"), list):
            entries.extend(marker["shards"])
    names = set()
    for entry in entries:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or "\\" in path or "\x00" in path:
            continue
        parts = path.split("/")
        if len(parts) == 2 and parts[0] == "shards" and parts[1] not in ("", ".", ".."):
            names.add(parts[1])
    return names


def _remove_output(out_dir: Path) -> None:
    """Delete what an earlier rsdata run wrote into ``out_dir``, and nothing else: the shards its
    manifest and markers list and shard temp files, manifest.json, inspect's own files in
    ``inspect/``, and rsdata's state in ``.rsdata/`` (but not the run lock, held by this run).
    A folder is removed only when nothing is left in it."""
    shard_dir = out_dir / "shards"
    if shard_dir.is_dir() and not shard_dir.is_symlink():
        listed = _listed_shards(out_dir)
        for f in shard_dir.iterdir():
            if (f.name in listed or _SHARD_TMP.fullmatch(f.name)) and not f.is_dir():
                f.unlink(missing_ok=True)
        _rmdir_if_empty(shard_dir)
    inspect_dir = out_dir / "inspect"
    if inspect_dir.is_dir() and not inspect_dir.is_symlink():
        for f in inspect_dir.iterdir():
            name = f.name
            if _TMP.fullmatch(name):
                name = name[1:name.rindex(".tmp")]
            if name in INSPECT_FILES and not f.is_dir():
                f.unlink(missing_ok=True)
        _rmdir_if_empty(inspect_dir)
    for f in out_dir.iterdir():
        if (f.name == "manifest.json" or (_TMP.fullmatch(f.name) and f.name.startswith(
                ".manifest.json.tmp"))) and not f.is_dir():
            f.unlink(missing_ok=True)
    state = out_dir / STATE_DIR
    if state.is_dir() and not state.is_symlink():
        for f in state.iterdir():
            if f.name == _LOCK_NAME:  # the running command holds it: keep it
                continue
            if f.is_dir() and not f.is_symlink():
                shutil.rmtree(f)
            else:
                f.unlink(missing_ok=True)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


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
                     allow_remote=recipe.allow_remote,
                     keep_objects=any(type(s).needs_objects for s in stages))
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
