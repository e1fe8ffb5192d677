"""Faults a long run meets: a partition that raises, a half-written shard left by a crash,
a full disk, and loss guards that refuse to write a silently empty corpus."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.scene import corpus_keys, shard_checksums, write_recipe, write_scene
from rsdata.errors import RunFailedError
from rsdata.executors.local import run_local
from rsdata.corpus.manifest import load_manifest
from rsdata.plan import build_plan
from rsdata.recipe import load_recipe


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("scene")
    return write_scene(d, size=768)


def recipe_with(tmp_path: Path, scene: tuple[Path, Path], **changes: Any) -> Path:
    raster, osm = scene
    path = write_recipe(tmp_path, raster, osm, partition_size=4)
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    path.write_text(yaml.safe_dump(data))
    return path


def run(recipe: Path, out: Path, workers: int = 1) -> dict[str, Any]:
    return run_local(build_plan(load_recipe(recipe), out), workers=workers, progress=False).manifest


def two_rasters(tmp_path: Path, scene: tuple[Path, Path], bad: Path, **output: Any) -> Path:
    raster, osm = scene
    return recipe_with(tmp_path, scene, **{
        "source.rasters": [{"id": "good", "path": str(raster)}, {"id": "bad", "path": str(bad)}],
        "source.tile": {"size": 64, "gsd": 2.0},
        **{f"output.{k}": v for k, v in output.items()}})


def test_a_raising_partition_is_reported_and_the_others_are_kept(
        tmp_path: Path, scene: tuple[Path, Path], raster_files: dict[str, Path]) -> None:
    recipe = two_rasters(tmp_path, scene, raster_files["truncated"])
    out = tmp_path / "out"
    with pytest.raises(RunFailedError) as err:
        run(recipe, out)
    text = str(err.value)
    assert "partitions failed" in text and "bad.0000" in text and "truncated" in text
    assert "max_error_rate" in text
    assert not (out / "manifest.json").exists()
    markers = {p.stem for p in (out / ".rsdata" / "partitions").glob("*.json")}
    assert any(m.startswith("good.") for m in markers), "finished partitions must be kept"
    failed = set(re.findall(r"(bad\.\d{5}):", text))
    assert failed and not failed & markers, "a failed partition must not count as done"


def test_max_error_rate_lets_a_run_finish_and_lists_the_failures(
        tmp_path: Path, scene: tuple[Path, Path], raster_files: dict[str, Path]) -> None:
    recipe = two_rasters(tmp_path, scene, raster_files["truncated"], max_error_rate=0.5)
    out = tmp_path / "out"
    manifest = run(recipe, out)
    failed = manifest["failed_partitions"]
    assert failed and all(f["partition"].startswith("bad.") and "truncated" in f["error"] for f in failed)
    assert manifest["nsamples"] == len(corpus_keys(out)) > 0
    assert all(s["partition"].startswith(("good.", "bad.")) for s in manifest["shards"])
    failed_ids = {f["partition"] for f in failed}
    assert not failed_ids & {s["partition"] for s in manifest["shards"]}
    # a rerun retries exactly the failed partitions (they still fail: the file is still bad)
    again = run(recipe, out)
    assert again["timing"]["partitions_run"] == len(failed)


def test_max_drop_rate_fails_a_run_that_loses_too_much(tmp_path: Path, scene: tuple[Path, Path]) -> None:
    recipe = recipe_with(tmp_path, scene, **{"stages": [
        {"type": "osm_join", "sources": [{"path": str(scene[1])}], "drop_without_visible": True,
         "min_pixels": {"polygon": 1e9, "line": 1e9}},
        {"type": "template_captions"}], "output.max_drop_rate": 0.5, "output.min_samples": 0})
    out = tmp_path / "out"
    with pytest.raises(RunFailedError, match="max_drop_rate"):
        run(recipe, out)
    assert load_manifest(out, allow_failed=True)["nsamples"] == 0  # written, so the losses can be inspected
    assert load_manifest(out, allow_failed=True)["status"] == "failed"


def test_half_written_shards_are_never_listed_and_are_cleaned(tmp_path: Path, scene: tuple[Path, Path]) -> None:
    recipe = recipe_with(tmp_path, scene)
    reference = tmp_path / "reference"
    run(recipe, reference)
    out = tmp_path / "out"
    run(recipe, out)
    # simulate a crash inside partition scene.00002: its marker never got written, a shard was
    # half-written under its temp name and another was cut short under its final name
    (out / ".rsdata" / "partitions" / "scene.00002.json").unlink()
    (out / "manifest.json").unlink()
    shards = out / "shards"
    (shards / ".scene.00002.00000.tar.tmp4242").write_bytes(b"half a tar")
    cut = shards / "scene.00002.00000.tar"
    cut.write_bytes(cut.read_bytes()[:700])
    manifest = run(recipe, out)
    assert manifest["timing"]["partitions_run"] == 1
    assert shard_checksums(out) == shard_checksums(reference)
    assert {f"shards/{p.name}" for p in shards.iterdir()} == set(shard_checksums(reference))
    # a marker whose shard was damaged afterwards does not count as done either
    victim = out / manifest["shards"][0]["path"]
    victim.write_bytes(victim.read_bytes()[:-1024])
    (out / "manifest.json").unlink()
    assert run(recipe, out)["timing"]["partitions_run"] == 1
    assert shard_checksums(out) == shard_checksums(reference)


def _limit_file_size() -> None:
    # a real OS limit: writes past 300 kB fail with EFBIG, like a full disk fails with ENOSPC
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))


def test_disk_full_during_a_shard_write_is_a_clear_error_and_loses_nothing(
        tmp_path: Path, scene: tuple[Path, Path]) -> None:
    recipe = recipe_with(tmp_path, scene, **{"output.max_samples_per_shard": 1000,
                                             "source.partition_size": 64, "source.image_format": "png"})
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "rsdata", "run", str(recipe), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot write the shards" in proc.stderr and "free some space" in proc.stderr
    assert not (out / "manifest.json").exists()
    leftovers = [p.name for p in (out / "shards").iterdir()] if (out / "shards").exists() else []
    assert not [n for n in leftovers if ".tmp" in n], leftovers
    # with space again, the same command finishes and matches an undisturbed run
    run(recipe, out)
    reference = tmp_path / "reference"
    run(recipe, reference)
    assert shard_checksums(out) == shard_checksums(reference)
    assert sorted(corpus_keys(out)) == sorted(corpus_keys(reference))
    assert os.listdir(out / "shards") == os.listdir(reference / "shards") or \
        sorted(os.listdir(out / "shards")) == sorted(os.listdir(reference / "shards"))
