"""The corpus manifest (``DIR/manifest.json``): shards, counts, stats, sources, recipe, lineage.

One builder (:func:`new_manifest`) makes the manifest of every corpus: a run's
(:func:`build_run_manifest`, from its partition markers) and a derived version's (``rsdata
filter``'s reshard, see :mod:`rsdata.corpus.derived`). One loader (:func:`load_manifest`)
reads them all and refuses what no reader should trust: a failed run's manifest (unless asked),
a shard listed twice, a shard path outside the corpus directory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rsdata import __version__, schemas
from rsdata.atomic import atomic_write_bytes
from rsdata.errors import InputError

FORMAT = "rsdata-manifest/1"


@dataclass(frozen=True)
class ShardRecord:
    """One shard as the manifest lists it, with its absolute file path."""

    path: str  # relative to the corpus directory, as listed
    file: Path
    nsamples: int
    bytes: int
    sha256: str


def parent_record(manifest_path: Path, manifest: dict[str, Any], manifest_sha256: str,
                  out_dir: Path) -> dict[str, Any]:
    """How a derived corpus names its parent: path (relative to the new corpus), sha256 of the
    parent's manifest, its recipe hash and name."""
    return {"path": os.path.relpath(manifest_path.resolve(), out_dir.resolve()),
            "manifest_sha256": manifest_sha256, "recipe_hash": manifest["recipe_hash"],
            "name": manifest["name"]}


def new_manifest(*, name: str, recipe: dict[str, Any], recipe_path: str | None, recipe_hash: str,
                 shards: list[dict[str, Any]], stages: list[dict[str, Any]],
                 sources: list[dict[str, Any]], parents: list[dict[str, Any]] | None = None,
                 **extra: Any) -> dict[str, Any]:
    """The manifest of a corpus (checked against schemas/manifest.schema.json)."""
    parents = parents or []
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rsdata_version": __version__,
        "status": "complete",
        "recipe": recipe,
        "recipe_path": recipe_path,
        "recipe_hash": recipe_hash,
        "parent": parents[0] if parents else None,
        "nsamples": sum(s["nsamples"] for s in shards),
        "shards": shards,
        "stages": stages,
        "sources": sources,
    }
    if len(parents) > 1:
        manifest["parents"] = parents
    manifest.update({k: v for k, v in extra.items() if v is not None})
    schemas.validate("manifest", manifest, f"the manifest of corpus {name}")
    return manifest


def build_run_manifest(plan: Any, markers: list[dict[str, Any]], timing: dict[str, Any]) -> dict[str, Any]:
    """Merge partition markers (in plan order) into the manifest of a finished run."""
    from rsdata.stats import merge_stats

    shards = [s for m in markers for s in m["shards"]]
    per_source: dict[str, int] = {sid: 0 for sid in plan.source_ids}
    for m in markers:
        per_source[m["source"]] = per_source.get(m["source"], 0) + m["nsamples"]
    return new_manifest(
        name=plan.recipe.name, recipe=plan.recipe.data,
        recipe_path=str(plan.recipe.path) if plan.recipe.path else None,
        recipe_hash=plan.recipe_hash, shards=shards, stages=merge_stats([m["stats"] for m in markers]),
        sources=plan.inputs, parents=plan.parents, partitions=len(markers),
        samples_per_source=per_source, osm=plan.reports.get("osm_join", {}),
        stage_reports={k: v for k, v in plan.reports.items() if k != "osm_join"} or None,
        source_reports=plan.source_reports or None,
        footprints_wgs84=[list(b) for b in plan.footprints_wgs84] or None,
        footprint_crs=list(plan.footprint_crs) or None, timing=timing)


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    path = out_dir / "manifest.json"
    atomic_write_bytes(path, json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"))
    return path


def load_manifest(out_dir: str | Path, allow_failed: bool = False) -> dict[str, Any]:
    """Read ``DIR/manifest.json`` (or a manifest path) and check it: schema, shard list, status."""
    path = Path(out_dir)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.exists():
        raise InputError(f"{path} not found: is this the output directory of `rsdata run`? A run that "
                         "was interrupted writes its manifest only at the end; run it again to finish.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not readable JSON ({str(exc)[:120]}): it is half-written or "
                         "corrupt; rerun the command that made it") from None
    problems = schemas.errors("manifest", manifest)
    if problems:
        raise InputError(f"{path} is not a valid rsdata manifest: {problems[0]}")
    if manifest.get("status") == "failed" and not allow_failed:
        raise InputError(f"{path} belongs to a run that failed ({manifest.get('failure', 'no reason given')}); "
                         "it is kept so you can inspect it, but no reader uses it unless told "
                         "(rsdata inspect shows it). Fix the cause and rerun.")
    _check_shard_list(path, manifest)
    return manifest


def _check_shard_list(path: Path, manifest: dict[str, Any]) -> None:
    seen: set[str] = set()
    for shard in manifest["shards"]:
        rel = PurePosixPath(shard["path"])
        if rel.is_absolute() or ".." in rel.parts or "\\" in shard["path"]:
            raise InputError(f"{path} lists shard {shard['path']!r}, a path outside the corpus "
                             "directory; refusing to read it (shard paths are relative, below it)")
        norm = str(rel)
        if norm in seen:
            raise InputError(f"{path} lists shard {shard['path']!r} twice; the manifest is corrupt "
                             "(a reader would count its samples twice): rebuild the corpus")
        seen.add(norm)


def shard_records(out_dir: str | Path, manifest: dict[str, Any] | None = None) -> list[ShardRecord]:
    """The shards of a corpus, in manifest order."""
    out = Path(out_dir)
    manifest = manifest or load_manifest(out)
    return [ShardRecord(s["path"], out / s["path"], int(s["nsamples"]), int(s["bytes"]), s["sha256"])
            for s in manifest["shards"]]


def shard_paths(out_dir: str | Path, manifest: dict[str, Any] | None = None) -> list[Path]:
    """Absolute paths of a corpus's shards, in manifest order."""
    return [r.file for r in shard_records(out_dir, manifest)]
