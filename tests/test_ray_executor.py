"""The Ray executor on a real local Ray cluster: same corpus as the local executor, survives
a worker process killed mid-run."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from fixtures.scene import corpus_keys, shard_checksums, write_recipe, write_scene
from rsdata.executors.local import run_local
from rsdata.corpus.manifest import load_manifest
from rsdata.plan import build_plan
from rsdata.recipe import load_recipe

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("scene")
    raster, osm = write_scene(d, size=1536)
    return raster, write_recipe(d, raster, osm, partition_size=16)


def run(recipe: Path, out: Path, executor: str, workers: int = 2) -> dict[str, Any]:
    plan = build_plan(load_recipe(recipe), out)
    if executor == "ray":
        from rsdata.executors.ray_executor import run_ray

        return run_ray(plan, workers=workers, progress=False).manifest
    return run_local(plan, workers=workers, progress=False).manifest


def samples_by_key(out: Path) -> dict[str, dict[str, Any]]:
    import json
    import tarfile

    found: dict[str, dict[str, Any]] = {}
    for shard in load_manifest(out)["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            for m in tar:
                if m.name.endswith(".json"):
                    found[m.name.split(".")[0]] = json.loads(tar.extractfile(m).read())  # type: ignore[union-attr]
    return found


def test_ray_output_equals_local_output(cluster: Any, scene: tuple[Path, Path], tmp_path: Path) -> None:
    _, recipe = scene
    local = run(recipe, tmp_path / "local", "local", workers=1)
    distributed = run(recipe, tmp_path / "ray", "ray")
    assert distributed["timing"]["executor"] == "ray"
    assert distributed["stages"] == local["stages"]
    assert distributed["nsamples"] == local["nsamples"] > 100
    assert shard_checksums(tmp_path / "ray") == shard_checksums(tmp_path / "local")
    a, b = samples_by_key(tmp_path / "local"), samples_by_key(tmp_path / "ray")
    assert a.keys() == b.keys()
    assert all(a[k]["captions"] == b[k]["captions"] and a[k]["osm"] == b[k]["osm"] for k in a)


def _actor_pids() -> list[int]:
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if "PartitionActor" in cmd:
            pids.append(proc.info["pid"])
    return pids


@pytest.mark.slow
def test_worker_killed_mid_partition_is_retried_without_duplicates(
        cluster: Any, scene: tuple[Path, Path], tmp_path: Path) -> None:
    _, recipe = scene
    reference = tmp_path / "reference"
    run(recipe, reference, "local", workers=1)

    out = tmp_path / "out"
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(m=run(recipe, out, "ray")))
    thread.start()
    markers = out / ".rsdata" / "partitions"
    killed = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and thread.is_alive():
        pids = _actor_pids()
        if pids and markers.exists() and len(list(markers.glob("*.json"))) >= 2:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)  # the OOM killer, a lost node: Ray restarts the actor
            break
        time.sleep(0.01)
    thread.join(timeout=300)
    assert killed is not None, "no actor process was found to kill"
    manifest = result["m"]
    keys = corpus_keys(out)
    assert len(keys) == len(set(keys))
    assert sorted(keys) == sorted(corpus_keys(reference))
    assert shard_checksums(out) == shard_checksums(reference)
    assert not manifest.get("failed_partitions")


def test_missing_ray_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from rsdata.errors import MissingDependencyError
    from rsdata.executors import ray_executor

    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'rsdata\[ray\]'"):
        ray_executor._ray()


def test_actors_ask_for_the_gpus_their_stages_declare(scene: tuple[Path, Path], tmp_path: Path) -> None:
    from rsdata.executors.ray_executor import stage_resources

    plan = build_plan(load_recipe(scene[1]), tmp_path / "out")
    assert stage_resources(plan) == {"num_cpus": 1, "num_gpus": 0.0}
    plan.stages[0].resources = lambda: {"num_gpus": 0.5}  # type: ignore[method-assign]
    assert stage_resources(plan)["num_gpus"] == 0.5


def test_actors_started_while_planning_give_the_same_corpus(
        cluster: Any, scene: tuple[Path, Path], tmp_path: Path) -> None:
    """RayStart before build_plan (actors start while the driver plans): run_ray runs on those
    actors and stops them at the end, and the corpus is the local executor's, byte for byte."""
    from rsdata.executors.ray_executor import RayStart, run_ray

    _, recipe_path = scene
    recipe = load_recipe(recipe_path)
    start = RayStart(recipe, workers=2)
    plan = build_plan(recipe, tmp_path / "ray")
    manifest = run_ray(plan, workers=2, progress=False, start=start).manifest
    run(recipe_path, tmp_path / "local", "local", workers=1)
    assert manifest["timing"]["executor"] == "ray"
    assert shard_checksums(tmp_path / "ray") == shard_checksums(tmp_path / "local")
    prestarted = start.actors()
    assert len(prestarted) == 2
    for actor in prestarted:  # run_ray took them over and stopped them: nothing leaks
        assert _stops(actor)


def test_actors_of_a_start_that_is_not_run_are_stopped(cluster: Any, scene: tuple[Path, Path]) -> None:
    """Planning failed after RayStart: close() stops the actors it started."""
    from rsdata.executors.ray_executor import RayStart

    start = RayStart(load_recipe(scene[1]), workers=1)
    [actor] = start.actors()
    assert ray.get(actor.ready.remote(), timeout=120)["pid"] > 0
    start.close()
    assert _stops(actor)


def _stops(actor: Any, within: float = 60.0) -> bool:
    """Whether ``actor`` is dead within ``within`` seconds. ``ray.kill`` is asynchronous: a call
    sent right after it may still reach the live actor, so this asks until the actor is gone."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ready.remote(), timeout=within)
        except ray.exceptions.RayActorError:
            return True
        time.sleep(0.2)
    return False


def test_an_actor_imports_no_heavy_module_the_recipe_does_not_need(
        cluster: Any, scene: tuple[Path, Path]) -> None:
    """No torch, webdataset, pandas or geopandas in an actor of a tile + OSM + captions recipe:
    an actor imports only what its partitions run (its start stays short)."""
    from rsdata.executors.ray_executor import recipe_resources, start_actors, worker_modules

    recipe = load_recipe(scene[1])
    modules = worker_modules(recipe)
    assert modules == ["rsdata.sources.raster", "rsdata.osm.join", "rsdata.captions.templates"]
    [actor] = start_actors(cluster, recipe_resources(recipe), 1, modules)
    try:
        facts = cluster.get(actor.ready.remote(), timeout=120)
    finally:
        cluster.kill(actor)
    assert facts["heavy"] == [], f"an actor imported {facts['heavy']}"
    assert facts["pid"] != os.getpid()


def test_the_recipe_alone_tells_what_an_actor_needs(scene: tuple[Path, Path], tmp_path: Path) -> None:
    from rsdata.executors.ray_executor import recipe_resources, stage_resources

    recipe = load_recipe(scene[1])
    assert recipe_resources(recipe) == stage_resources(build_plan(recipe, tmp_path / "out"))


class _FakeRay:
    def __init__(self, cpus: float, gpus: float = 0.0) -> None:
        self.total = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}

    def cluster_resources(self) -> dict[str, float]:
        return self.total


def test_actor_count_follows_workers_cpus_gpus_and_partitions() -> None:
    from rsdata.errors import RsdataError
    from rsdata.executors.ray_executor import actor_count

    cpu = {"num_cpus": 1, "num_gpus": 0.0}
    assert actor_count(_FakeRay(8), cpu, None) == 8
    assert actor_count(_FakeRay(8), cpu, 3) == 3
    assert actor_count(_FakeRay(8), cpu, None, todo=2) == 2
    assert actor_count(_FakeRay(8, gpus=2), {"num_cpus": 1, "num_gpus": 0.5}, None) == 4
    assert actor_count(_FakeRay(8, gpus=2), {"num_cpus": 1, "num_gpus": 1.0}, None) == 2
    with pytest.raises(RsdataError, match="has no GPU"):  # rather than actors that never start
        actor_count(_FakeRay(8), {"num_cpus": 1, "num_gpus": 1.0}, None)
