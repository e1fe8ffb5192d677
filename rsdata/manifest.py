"""The corpus manifest (``DIR/manifest.json``): shards, counts, stats, sources, recipe."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from rsdata import __version__, schemas
from rsdata.errors import InputError
from rsdata.stats import merge_stats
from rsdata.writer import atomic_write_bytes

FORMAT = "rsdata-manifest/1"


def build_manifest(plan: Any, markers: list[dict[str, Any]], timing: dict[str, Any]) -> dict[str, Any]:
    """Merge partition markers (in plan order) into the manifest of a finished run."""
    shards = [s for m in markers for s in m["shards"]]
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "name": plan.recipe.name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rsdata_version": __version__,
        "recipe": plan.recipe.data,
        "recipe_path": str(plan.recipe.path) if plan.recipe.path else None,
        "recipe_hash": plan.recipe_hash,
        "parent": None,
        "nsamples": sum(s["nsamples"] for s in shards),
        "shards": shards,
        "partitions": len(markers),
        "stages": merge_stats([m["stats"] for m in markers]),
        "sources": plan.sources,
        "osm": plan.reports.get("osm_join", {}),
        "timing": timing,
    }
    schemas.validate("manifest", manifest, "the run's manifest.json")
    return manifest


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    path = out_dir / "manifest.json"
    atomic_write_bytes(path, json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"))
    return path


def load_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Read ``DIR/manifest.json`` (or a manifest path) and check it against the schema."""
    path = Path(out_dir)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.exists():
        raise InputError(f"{path} not found: is this the output directory of `rsdata run`? A run that "
                         "was interrupted writes its manifest only at the end; run it again to finish.")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    problems = schemas.errors("manifest", manifest)
    if problems:
        raise InputError(f"{path} is not a valid rsdata manifest: {problems[0]}")
    return manifest


def shard_paths(out_dir: str | Path, manifest: dict[str, Any] | None = None) -> list[Path]:
    """Absolute paths of a corpus's shards, in manifest order."""
    out = Path(out_dir)
    manifest = manifest or load_manifest(out)
    return [out / s["path"] for s in manifest["shards"]]
