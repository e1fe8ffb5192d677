"""Killed runs: ``kill -9`` mid-run, then a rerun, must give exactly the uninterrupted corpus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.scene import corpus_keys, shard_checksums, write_recipe, write_scene
from rsdata.corpus.manifest import load_manifest

EXECUTORS = {
    "local-1": ["--workers", "1"],
    "local-2": ["--workers", "2"],
    "ray": ["--executor", "ray", "--workers", "2"],
}


def cli(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rsdata", "run", str(recipe), "--out", str(out), "--quiet", *extra]


def run_cli(recipe: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(cli(recipe, out, *extra), capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("executor", list(EXECUTORS))
def test_kill_9_then_rerun_gives_the_uninterrupted_corpus(tmp_path: Path, executor: str) -> None:
    raster, osm = write_scene(tmp_path, size=3072)
    recipe = write_recipe(tmp_path, raster, osm)
    extra = EXECUTORS[executor]

    reference = tmp_path / "reference"
    done = run_cli(recipe, reference, "--workers", "1")
    assert done.returncode == 0, done.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen(cli(recipe, out, *extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    markers = out / ".rsdata" / "partitions"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if markers.exists() and len(list(markers.glob("*.json"))) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed; make the scene bigger")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every worker it started
    proc.wait()
    finished_before = len(list(markers.glob("*.json")))
    assert not (out / "manifest.json").exists(), "a killed run must not have written its manifest"

    rerun = run_cli(recipe, out, *extra)
    assert rerun.returncode == 0, rerun.stderr
    manifest = load_manifest(out)
    assert manifest["timing"]["partitions_skipped"] >= finished_before >= 3
    keys = corpus_keys(out)
    assert len(keys) == len(set(keys)), "duplicated samples after resume"
    assert sorted(keys) == sorted(corpus_keys(reference))
    # shards are reproducible byte for byte, so the resumed corpus is the same corpus
    assert shard_checksums(out) == shard_checksums(reference)
    # nothing half-written or orphaned is left next to the listed shards
    assert {f"shards/{p.name}" for p in (out / "shards").iterdir()} == set(shard_checksums(reference))
