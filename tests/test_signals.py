"""Real signals to a real ``python -m rsdata run``: nothing outlives the driver, Ctrl-C stops a
run quickly (twice: at once) and a rerun gives exactly the uninterrupted corpus; ``--overwrite``
deletes only what rsdata wrote.

Processes are followed through /proc (Linux): a process counts as gone when its pid no longer
exists, is a zombie (exited, not yet reaped by init), or belongs to another process (start time).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fixtures.scene import corpus_keys, shard_checksums, write_recipe, write_scene

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="follows processes via /proc")

ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


# --- processes -----------------------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a live process, None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    return fields[0], int(fields[1]), int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of ``pid``: pid -> start time."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st and st[0] != "Z":
                table[int(entry.name)] = (st[1], st[2])
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, start) in table.items():
            if ppid == parent and child not in found:
                found[child] = start
                frontier.append(child)
    return found


def alive(procs: dict[int, int]) -> list[int]:
    """The processes of ``procs`` (pid -> start time) that still run."""
    out = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st and st[0] != "Z" and st[2] == start:
            out.append(pid)
    return out


def wait_gone(procs: dict[int, int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(procs):
            return []
        time.sleep(0.05)
    return alive(procs)


def kill_leftovers(procs: dict[int, int]) -> None:
    for pid in alive(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- runs ------------------------------------------------------------------------------------

def cli(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rsdata", "run", str(recipe), "--out", str(out), "--quiet", *extra]


def run_cli(recipe: Path, out: Path, *extra: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(recipe, out, *extra), capture_output=True, text=True, timeout=600,
                          env=env or ENV)


def start(recipe: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    # a session of its own: the process group a terminal would signal on Ctrl-C
    return subprocess.Popen(cli(recipe, out, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=env or ENV)


def n_markers(out: Path) -> int:
    markers = out / ".rsdata" / "partitions"
    return len(list(markers.glob("*.json"))) if markers.is_dir() else 0


def wait_markers(proc: subprocess.Popen[str], out: Path, n: int, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if n_markers(out) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before it could be interrupted: "
                        f"make the scene bigger\n{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.02)
    pytest.fail(f"no {n} finished partitions after {seconds} s")


def wait_exit(proc: subprocess.Popen[str], seconds: float) -> tuple[int | None, str]:
    """Return code and stderr; (None, ...) when the process did not exit in time (then killed)."""
    try:
        _, err = proc.communicate(timeout=seconds)
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return None, err


def assert_same_corpus(out: Path, reference: Path) -> None:
    keys = corpus_keys(out)
    assert len(keys) == len(set(keys)), "duplicated samples after resume"
    assert sorted(keys) == sorted(corpus_keys(reference))
    assert shard_checksums(out) == shard_checksums(reference)
    assert {f"shards/{p.name}" for p in (out / "shards").iterdir()} == set(shard_checksums(reference))


def with_overlap(recipe: Path, overlap: int, partition_size: int, name: str) -> Path:
    """The recipe with overlapping tiles: many tiles (long partitions) from a small raster."""
    data = yaml.safe_load(recipe.read_text())
    data["source"]["tile"]["overlap"] = overlap
    data["source"]["partition_size"] = partition_size
    path = recipe.with_name(name)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A scene and recipe of ~200 short partitions, and the uninterrupted corpus it gives."""
    base = tmp_path_factory.mktemp("signals")
    raster, osm = write_scene(base, size=1024)
    recipe = with_overlap(write_recipe(base, raster, osm), overlap=96, partition_size=4,
                          name="many.yaml")  # (1024-128)/32+1 = 29 -> 841 tiles, 211 partitions
    reference = base / "reference"
    done = run_cli(recipe, reference, "--workers", "1")
    assert done.returncode == 0, done.stderr
    # two long partitions (stride 12 px: 75 x 75 tiles) for interrupting partitions mid-way
    slow = with_overlap(recipe, overlap=116, partition_size=2813, name="slow.yaml")
    return {"base": base, "recipe": recipe, "reference": reference, "slow": slow}


# --- 6. workers exit when the driver dies -------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("start_method", ["fork", "forkserver", "ray"])
def test_killing_only_the_driver_leaves_no_process(scene: dict[str, Path], tmp_path: Path,
                                                   start_method: str) -> None:
    """The pool's workers (and with forkserver the fork server; with Ray everything ray.init
    started) are gone within seconds of a SIGKILL to the driver alone."""
    if start_method == "ray":
        pytest.importorskip("ray")
        pytest.importorskip("psutil")
        extra = ["--executor", "ray", "--workers", "2"]
    else:
        extra = ["--workers", "2"]
    out = tmp_path / "out"
    env = {**ENV, "RSDATA_START_METHOD": start_method}
    proc = start(scene["recipe"], out, *extra, env=env)
    procs: dict[int, int] = {}
    try:
        wait_markers(proc, out, 3)
        procs = descendants(proc.pid)
        assert len(procs) >= 2, f"expected the pool's workers below the driver, found {procs}"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, not its process group
        proc.wait()
        left = wait_gone(procs, 5.0)
        assert not left, (f"{len(left)} of the run's processes outlived the driver by 5 s "
                          f"({start_method}): {[(p, _cmd(p)) for p in left]}")
    finally:
        kill_leftovers(procs)
        proc.stdout.close(), proc.stderr.close()
    assert not (out / "manifest.json").exists()
    rerun = run_cli(scene["recipe"], out, *extra, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_corpus(out, scene["reference"])


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
    except OSError:
        return "?"


@pytest.mark.parametrize("use_prctl", [True, False], ids=["prctl", "watch-thread"])
def test_a_process_following_its_parent_dies_with_it(use_prctl: bool) -> None:
    """``exit_with_parent``: the kernel's parent-death signal, and the portable fallback alone
    (a thread that notices the re-parenting), each end the process within a second."""
    child = ("from rsdata.executors.partition import exit_with_parent; "
             f"exit_with_parent(use_prctl={use_prctl}); print('ready', flush=True); "
             "import time; time.sleep(120)")
    parent = ("import subprocess, sys, time; "
              f"c = subprocess.Popen([sys.executable, '-c', {child!r}]); "
              "print(c.pid, flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True,
                            start_new_session=True, env=ENV)
    procs: dict[int, int] = {}
    try:
        lines = {proc.stdout.readline().strip(), proc.stdout.readline().strip()}
        assert "ready" in lines, lines  # the child follows its parent from now on
        pid = int((lines - {"ready"}).pop())
        procs = {p: s for p, s in descendants(proc.pid).items() if p == pid}
        assert procs, "the child did not start"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not wait_gone(procs, 2.0), "the child outlived its parent"
    finally:
        kill_leftovers(procs)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


# --- 7. Ctrl-C --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_first_ctrl_c_stops_scheduling_and_a_rerun_resumes(scene: dict[str, Path], tmp_path: Path,
                                                            workers: str) -> None:
    out = tmp_path / "out"
    total = len(json.loads((scene["reference"] / "manifest.json").read_text())["shards"])
    n_parts = 211
    assert total >= n_parts
    proc = start(scene["recipe"], out, "--workers", workers)
    wait_markers(proc, out, 3)
    procs = descendants(proc.pid)
    done_at_signal = n_markers(out)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the driver and every worker
    sent = time.monotonic()
    rc, err = wait_exit(proc, 30)
    took = time.monotonic() - sent
    kill_leftovers(procs)
    assert rc == 130, f"rc {rc} after {took:.1f} s; stderr:\n{err[-3000:]}"
    assert took < 15, f"Ctrl-C took {took:.1f} s to stop the run"
    done = n_markers(out)
    # stopped scheduling: at most the running partitions (and a few already queued) finished
    assert done - done_at_signal <= 8 and done < n_parts // 2, (done_at_signal, done, n_parts)
    assert "run the same command" in err and "Traceback" not in err, err[-3000:]
    assert not (out / "manifest.json").exists()
    assert not wait_gone(procs, 3.0), "a worker outlived the interrupted run"
    rerun = run_cli(scene["recipe"], out, "--workers", workers)
    assert rerun.returncode == 0, rerun.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["timing"]["partitions_skipped"] == done
    assert_same_corpus(out, scene["reference"])


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_second_ctrl_c_exits_at_once(scene: dict[str, Path], tmp_path: Path, workers: str) -> None:
    """Partitions of several seconds: the second Ctrl-C does not wait for them (nor hangs)."""
    out = tmp_path / "out"
    proc = start(scene["slow"], out, "--workers", workers)
    try:
        deadline = time.monotonic() + 120
        procs: dict[int, int] = {}
        # wait until the partitions run (the workers hold a shard being written)
        while time.monotonic() < deadline and proc.poll() is None:
            shards = out / "shards"
            if shards.is_dir() and any(shards.iterdir()):
                break
            time.sleep(0.05)
        procs = descendants(proc.pid)
        assert proc.poll() is None and n_markers(out) == 0, "partitions too short for this test"
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        rc, err = wait_exit(proc, 30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    left = wait_gone(procs, 3.0)
    kill_leftovers(procs)
    assert rc == 130, f"rc {rc} after {took:.1f} s (None: hung); stderr:\n{err[-3000:]}"
    assert took < 5, f"the second Ctrl-C took {took:.1f} s"
    assert not left, f"processes left after a double Ctrl-C: {left}"
    assert "Traceback" not in err, err[-3000:]
    assert n_markers(out) == 0  # the long partitions were aborted, not waited for


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_first_ctrl_c_stops_a_long_partition_after_the_grace_period(scene: dict[str, Path],
                                                                    tmp_path: Path, workers: str) -> None:
    from rsdata.executors import local

    GRACE_S = getattr(local, "GRACE_S", 5.0)
    out = tmp_path / "out"
    proc = start(scene["slow"], out, "--workers", workers)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "shards").is_dir() and any((out / "shards").iterdir()):
            break
        time.sleep(0.05)
    procs = descendants(proc.pid)
    assert proc.poll() is None and n_markers(out) == 0, "partitions too short for this test"
    os.killpg(proc.pid, signal.SIGINT)
    sent = time.monotonic()
    rc, err = wait_exit(proc, GRACE_S + 30)
    took = time.monotonic() - sent
    left = wait_gone(procs, 3.0)
    kill_leftovers(procs)
    assert rc == 130, f"rc {rc} after {took:.1f} s; stderr:\n{err[-3000:]}"
    assert took < GRACE_S + 6, f"a first Ctrl-C took {took:.1f} s (grace {GRACE_S} s)"
    # normally the grace period runs out ("did not finish within"); on a loaded machine the
    # partition may end inside it: either way the run stops within the bound, exit 130, no traceback
    assert "Traceback" not in err and ("did not finish within" in err or "interrupted" in err), err[-3000:]
    assert not left, f"processes left: {left}"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_dead_worker_is_replaced_and_its_partitions_retried(scene: dict[str, Path], tmp_path: Path,
                                                              sig: signal.Signals) -> None:
    """One worker killed (the OOM killer, kill -9): the run still ends complete and exact."""
    out = tmp_path / "out"
    proc = start(scene["recipe"], out, "--workers", "2")
    wait_markers(proc, out, 3)
    workers = [pid for pid in descendants(proc.pid)]
    assert workers
    os.kill(workers[0], sig)
    rc, err = wait_exit(proc, 300)
    assert rc == 0, err[-3000:]
    assert "worker process died" in err and "retrying" in err, err[-3000:]
    assert_same_corpus(out, scene["reference"])


# --- 4. --overwrite deletes only what rsdata wrote ----------------------------------------------

def _small_run(tmp_path: Path, name: str, **output: object) -> tuple[Path, Path]:
    raster, osm = write_scene(tmp_path, size=512)
    recipe = write_recipe(tmp_path, raster, osm, **output)
    data = yaml.safe_load(recipe.read_text())
    data["name"] = name
    recipe.write_text(yaml.safe_dump(data))
    return recipe, raster


def test_overwrite_deletes_only_what_rsdata_wrote(tmp_path: Path) -> None:
    from rsdata.executors.local import run_local
    from rsdata.inspect import inspect_corpus
    from rsdata.plan import build_plan
    from rsdata.recipe import load_recipe

    recipe, _ = _small_run(tmp_path, "first")
    out = tmp_path / "out"
    run_local(build_plan(load_recipe(recipe), out), progress=False)
    inspect_corpus(out, samples=4)
    old_shards = set(shard_checksums(out))
    # the user's own files, next to and inside rsdata's folders
    user = {out / "inspect" / "notes.txt": "my notes", out / "README.txt": "mine",
            out / "shards" / "my-archive.tar": "not rsdata's", out / "shards" / "notes.md": "x",
            out / "extra" / "keep.txt": "keep"}
    for path, text in user.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    # a temp file a killed writer left behind, a half-written marker
    (out / "shards" / ".scene.00000.00000.tar.tmp4242").write_bytes(b"partial")
    (out / ".rsdata" / "partitions" / "scene.00099.json").write_bytes(b'{"recipe_')

    changed = yaml.safe_load(recipe.read_text())
    changed["source"]["tile"]["overlap"] = 16
    recipe.write_text(yaml.safe_dump(changed))
    plan = build_plan(load_recipe(recipe), out, overwrite=True)

    for path, text in user.items():
        assert path.read_text() == text, f"--overwrite touched the user's {path}"
    left = {p.name for p in (out / "inspect").iterdir()}
    assert left == {"notes.txt"}, left  # inspect's own outputs are gone, the user's note stays
    assert not (out / "manifest.json").exists()
    assert {p.name for p in (out / "shards").iterdir()} == {"my-archive.tar", "notes.md"}
    assert not any((out / ".rsdata" / "partitions").glob("*.json"))
    assert json.loads((out / ".rsdata" / "recipe.json").read_text())["recipe_hash"] == plan.recipe_hash

    run_local(plan, progress=False)
    new_shards = {Path(p).name for p in shard_checksums(out)}
    assert new_shards and {f"shards/{n}" for n in new_shards} != old_shards
    assert {p.name for p in (out / "shards").iterdir()} == new_shards | {"my-archive.tar", "notes.md"}


def test_overwrite_removes_folders_only_when_empty(tmp_path: Path) -> None:
    from rsdata.executors.local import run_local
    from rsdata.inspect import inspect_corpus
    from rsdata.plan import build_plan
    from rsdata.recipe import load_recipe

    recipe, _ = _small_run(tmp_path, "first")
    out = tmp_path / "out"
    run_local(build_plan(load_recipe(recipe), out), progress=False)
    inspect_corpus(out, samples=4)
    changed = yaml.safe_load(recipe.read_text())
    changed["source"]["tile"]["overlap"] = 16
    recipe.write_text(yaml.safe_dump(changed))
    build_plan(load_recipe(recipe), out, overwrite=True)
    assert not (out / "inspect").exists()  # only inspect's files were in it
    assert not (out / "shards").exists() or not any((out / "shards").iterdir())


def test_overwrite_never_deletes_outside_the_output(tmp_path: Path) -> None:
    """A tampered marker or manifest naming a path outside shards/ is not followed."""
    from rsdata.executors.local import run_local
    from rsdata.plan import build_plan
    from rsdata.recipe import load_recipe

    recipe, _ = _small_run(tmp_path, "first")
    out = tmp_path / "out"
    run_local(build_plan(load_recipe(recipe), out), progress=False)
    victim = tmp_path / "victim.tar"
    victim.write_text("keep")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"].append({**manifest["shards"][0], "path": "../victim.tar"})
    (out / "manifest.json").write_text(json.dumps(manifest))
    marker = next((out / ".rsdata" / "partitions").glob("*.json"))
    data = json.loads(marker.read_text())
    data["shards"].append({**data["shards"][0], "path": str(victim)})
    marker.write_text(json.dumps(data))
    changed = yaml.safe_load(recipe.read_text())
    changed["source"]["tile"]["overlap"] = 16
    recipe.write_text(yaml.safe_dump(changed))
    build_plan(load_recipe(recipe), out, overwrite=True)
    assert victim.read_text() == "keep"


@pytest.mark.parametrize("content", [b"", b'{"name": "first", "recipe_ha', b"\xff\xfe", b"[1, 2]"])
def test_half_written_recipe_state_is_no_traceback(tmp_path: Path, content: bytes) -> None:
    """A killed run's half-written .rsdata/recipe.json: the same recipe resumes (its markers say
    which recipe made them), another recipe is refused with the usual message, --overwrite works."""
    from rsdata.errors import OutputConflictError
    from rsdata.executors.local import run_local
    from rsdata.plan import build_plan
    from rsdata.recipe import load_recipe

    recipe, _ = _small_run(tmp_path, "first")
    out = tmp_path / "out"
    first = build_plan(load_recipe(recipe), out)
    run_local(first, progress=False)
    reference = shard_checksums(out)
    (out / "manifest.json").unlink()  # as if killed before the end
    state = out / ".rsdata" / "recipe.json"
    state.write_bytes(content)

    again = build_plan(load_recipe(recipe), out)  # same recipe: resumes
    result = run_local(again, progress=False)
    assert result.skipped == len(first.partitions) and shard_checksums(out) == reference

    state.write_bytes(content)
    changed = yaml.safe_load(recipe.read_text())
    changed["source"]["tile"]["overlap"] = 16
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(changed))
    with pytest.raises(OutputConflictError, match="--overwrite"):
        build_plan(load_recipe(other), out)
    assert shard_checksums(out) == reference  # untouched
    plan = build_plan(load_recipe(other), out, overwrite=True)
    run_local(plan, progress=False)
    assert shard_checksums(out) != reference
    assert json.loads((out / "manifest.json").read_text())["recipe_hash"] == plan.recipe_hash


def test_half_written_recipe_state_through_the_cli(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from rsdata.cli import main

    recipe, _ = _small_run(tmp_path, "first")
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    (out / ".rsdata" / "recipe.json").write_bytes(b'{"name": "fir')
    changed = yaml.safe_load(recipe.read_text())
    changed["source"]["tile"]["overlap"] = 16
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(changed))
    capsys.readouterr()
    assert main(["run", str(other), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "rsdata: error:" in err and "--overwrite" in err and "Traceback" not in err
    assert main(["run", str(other), "--out", str(out), "--quiet", "--overwrite"]) == 0
