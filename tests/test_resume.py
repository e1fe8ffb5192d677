"""Killed runs: ``kill -9`` mid-run, then a rerun, must give exactly the uninterrupted corpus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin
from shapely.geometry import LineString, box

from rsdata.manifest import load_manifest

UTM_ORIGIN = (330000.0, 6230000.0)  # EPSG:32734, near Swellendam


def write_scene(directory: Path, size: int = 2048, seed: int = 0) -> tuple[Path, Path]:
    """A seeded UTM raster (2 m pixels) and a GeoJSON of buildings and roads over it."""
    rng = np.random.default_rng(seed)
    raster = directory / "scene.tif"
    yy, xx = np.mgrid[0:size, 0:size]
    base = (np.sin(xx / 37.0) + np.cos(yy / 53.0)) * 40 + 120
    data = np.stack([base + rng.normal(0, 8, base.shape) for _ in range(3)]).clip(0, 255).astype("uint8")
    transform = from_origin(UTM_ORIGIN[0], UTM_ORIGIN[1], 2.0, 2.0)
    with rasterio.open(raster, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32734", transform=transform, tiled=True, blockxsize=256,
                       blockysize=256) as dst:
        dst.write(data)
    geoms, tags = [], []
    for _ in range(400):
        x = UTM_ORIGIN[0] + rng.uniform(0, size * 2.0)
        y = UTM_ORIGIN[1] - rng.uniform(0, size * 2.0)
        geoms.append(box(x, y, x + rng.uniform(8, 20), y + rng.uniform(8, 20)))
        tags.append({"building": "yes", "highway": None})
    for i in range(12):
        y = UTM_ORIGIN[1] - (i + 0.5) * size * 2.0 / 12
        geoms.append(LineString([(UTM_ORIGIN[0], y), (UTM_ORIGIN[0] + size * 2.0, y + 50)]))
        tags.append({"building": None, "highway": "residential"})
    frame = gpd.GeoDataFrame(tags, geometry=geoms, crs="EPSG:32734").to_crs(4326)
    osm = directory / "osm.geojson"
    frame.to_file(osm, driver="GeoJSON")
    return raster, osm


def write_recipe(directory: Path, raster: Path, osm: Path) -> Path:
    recipe = {
        "version": 1, "name": "resume",
        "source": {"type": "raster", "rasters": [{"id": "scene", "path": str(raster)}],
                   "tile": {"size": 128, "gsd": 2.0}, "partition_size": 4},
        "stages": [{"type": "osm_join", "sources": [{"path": str(osm)}]},
                   {"type": "template_captions", "count": 2}],
        "output": {"max_samples_per_shard": 5},
    }
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_cli(recipe: Path, out: Path, workers: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rsdata", "run", str(recipe), "--out", str(out),
                           "--workers", str(workers), "--quiet"],
                          capture_output=True, text=True, timeout=300)


def keys_of(out: Path) -> list[str]:
    import tarfile

    keys = []
    for shard in load_manifest(out)["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            keys.extend(m.name.split(".", 1)[0] for m in tar if m.name.endswith(".json"))
    return keys


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_then_rerun_gives_the_uninterrupted_corpus(tmp_path: Path, workers: int) -> None:
    raster, osm = write_scene(tmp_path, size=3072)
    recipe = write_recipe(tmp_path, raster, osm)

    reference = tmp_path / "reference"
    done = run_cli(recipe, reference, workers=1)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "rsdata", "run", str(recipe), "--out", str(out),
                             "--workers", str(workers), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    markers = out / ".rsdata" / "partitions"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if markers.exists() and len(list(markers.glob("*.json"))) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed; make the scene bigger")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = len(list(markers.glob("*.json")))
    assert not (out / "manifest.json").exists(), "a killed run must not have written its manifest"

    rerun = run_cli(recipe, out, workers=workers)
    assert rerun.returncode == 0, rerun.stderr
    manifest = load_manifest(out)
    assert manifest["timing"]["partitions_skipped"] >= finished_before >= 3
    keys = keys_of(out)
    assert len(keys) == len(set(keys)), "duplicated samples after resume"
    assert sorted(keys) == sorted(keys_of(reference))
    # shards are reproducible byte for byte, so the resumed corpus is the same corpus
    ref = {s["path"]: s["sha256"] for s in load_manifest(reference)["shards"]}
    assert {s["path"]: s["sha256"] for s in manifest["shards"]} == ref
    # nothing half-written or orphaned is left next to the listed shards
    on_disk = {f"shards/{p.name}" for p in (out / "shards").iterdir()}
    assert on_disk == set(ref)
