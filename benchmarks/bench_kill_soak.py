"""Kill/signal soak: random kills of `rsdata run`, each followed by a rerun and a byte comparison.

    python -m benchmarks.bench_kill_soak [--kills 50] [--seed 0] [--quick] [--json PATH]
                                         [--ray-share 0.1] [--no-ray] [--keep]

One clean reference run, then N trials. Each trial starts `python -m rsdata run` in a session of
its own (fresh --out), waits a random time (a random number of finished partitions, or a random
delay that may land in planning), and sends one signal:

  target   driver only (the driver pid), group (the whole process group, as a terminal or a job
           scheduler does), or one worker (a pool worker; a Ray actor process)
  signal   SIGKILL, SIGTERM, SIGINT
  executor local --workers 1, local --workers 2, and a few with --executor ray (when ray imports;
           --ray-share of the trials, default 10%: a Ray run starts a cluster, which is slow)

Then it waits for the driver to exit (a driver left alone, e.g. after a worker was killed, may
finish the run), checks that every process the run started is gone within a few seconds
(leftovers: target 0), reruns the same command until it exits 0 (reruns), and compares the corpus
with the reference: sample keys (lost, duplicated: target 0/0), shard checksums and names, and
stray files in shards/. Reports a table and one JSON line (``SOAK {...}``).

Scene: a 1024 px raster with overlapping tiles (225 tiles, 57 partitions of 4): a run takes a few
seconds, so 50 trials take about 8 minutes on 2 cores (Ray trials ~30 s each).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
EXECUTORS = {"local-1": ["--workers", "1"], "local-2": ["--workers", "2"],
             "ray-2": ["--executor", "ray", "--workers", "2"]}
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
SETTLE_S = {"local": 5.0, "ray": 20.0}  # how long processes may take to go after the driver
RUN_TIMEOUT_S = 300


# --- processes (Linux /proc) ---------------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int, int] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int) -> dict[int, int]:
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
    out = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st and st[0] != "Z" and st[2] == start:
            out.append(pid)
    return out


def kill_all(procs: dict[int, int]) -> None:
    for pid in alive(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def is_worker(pid: int, executor: str, driver: int) -> bool:
    """A pool worker (forked by the driver or by its fork server), or a Ray actor process."""
    cmd = _cmdline(pid)
    if executor.startswith("ray"):
        return cmd.startswith("ray::") and "IDLE" not in cmd
    st = _stat(pid)
    if st is None or "resource_tracker" in cmd:
        return False
    if st[1] == driver:
        return "forkserver" not in cmd
    return "forkserver" in _cmdline(st[1])


# --- the corpus ----------------------------------------------------------------------------------

def corpus(out: Path) -> dict[str, Any]:
    """Keys, shard checksums and stray files of a finished run (empty when no manifest)."""
    path = out / "manifest.json"
    if not path.exists():
        return {"keys": [], "shards": {}, "stray": []}
    manifest = json.loads(path.read_text())
    keys: list[str] = []
    shards = {}
    for s in manifest["shards"]:
        shards[s["path"]] = s["sha256"]
        try:
            with tarfile.open(out / s["path"]) as tar:
                keys.extend(m.name.split(".", 1)[0] for m in tar if m.name.endswith(".json"))
        except (OSError, tarfile.TarError):
            pass
    on_disk = {f"shards/{p.name}" for p in (out / "shards").iterdir()} if (out / "shards").is_dir() else set()
    return {"keys": keys, "shards": shards, "stray": sorted(on_disk - set(shards))}


def cli(recipe: Path, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "rsdata", "run", str(recipe), "--out", str(out), "--quiet", *extra]


def n_markers(out: Path) -> int:
    d = out / ".rsdata" / "partitions"
    return len(list(d.glob("*.json"))) if d.is_dir() else 0


def make_scene(work: Path) -> tuple[Path, int]:
    spec = importlib.util.spec_from_file_location("rsdata_test_scene", ROOT / "tests" / "fixtures" / "scene.py")
    assert spec and spec.loader
    scene = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scene)
    raster, osm = scene.write_scene(work, size=1024)
    recipe = scene.write_recipe(work, raster, osm, partition_size=4)
    data = yaml.safe_load(recipe.read_text())
    data["source"]["tile"]["overlap"] = 64  # (1024-128)/64+1 = 15 -> 225 tiles, 57 partitions
    recipe.write_text(yaml.safe_dump(data))
    n_parts = -(-15 * 15 // 4)
    return recipe, n_parts


# --- one trial -----------------------------------------------------------------------------------

def trial(i: int, rng: random.Random, work: Path, recipe: Path, n_parts: int, reference: dict[str, Any],
          executor: str, target: str, signame: str) -> dict[str, Any]:
    out = work / f"t{i:03d}"
    extra = EXECUTORS[executor]
    kind = "ray" if executor.startswith("ray") else "local"
    rec: dict[str, Any] = {"trial": i, "executor": executor, "target": target, "signal": signame}
    started = time.monotonic()
    proc = subprocess.Popen(cli(recipe, out, extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=ENV)
    # when: after k finished partitions, or (1 in 6) after a random delay from the start
    if rng.random() < 1 / 6:
        when = ("delay", round(rng.uniform(0.3, 4.0 if kind == "local" else 10.0), 2))
    else:
        when = ("markers", rng.randint(1, max(1, int(n_parts * 0.9))))
    rec["when"] = f"{when[0]}={when[1]}"
    seen: dict[int, int] = {}
    victim = None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        seen.update(descendants(proc.pid))
        if when[0] == "delay" and time.monotonic() - started >= when[1]:
            break
        if when[0] == "markers" and n_markers(out) >= when[1]:
            break
        time.sleep(0.02)
    rec["markers_at_kill"] = n_markers(out)
    if proc.poll() is not None:
        rec["delivered"] = False  # the run ended before the kill point
    else:
        seen.update(descendants(proc.pid))
        rec["delivered"] = True
        try:
            if target == "driver":
                os.kill(proc.pid, SIGNALS[signame])
            elif target == "group":
                os.killpg(proc.pid, SIGNALS[signame])
            else:
                workers = [p for p in alive(seen) if is_worker(p, executor, proc.pid)]
                if not workers:
                    rec["delivered"] = False
                    rec["note"] = "no worker yet: signalled nothing"
                else:
                    victim = rng.choice(workers)
                    os.kill(victim, SIGNALS[signame])
        except ProcessLookupError:
            rec["delivered"] = False
    # the driver: it exits by itself (killed, interrupted, or finishing after a worker's death)
    signalled = time.monotonic()
    try:
        _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        rec["rc"] = proc.returncode
    except subprocess.TimeoutExpired:
        rec["rc"] = "hung"
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    rec["exit_s"] = round(time.monotonic() - signalled, 2)
    rec["traceback"] = "Traceback" in (err or "")
    if rec["rc"] not in (0, 130, "hung") and err:
        rec["error"] = [ln for ln in err.strip().splitlines() if ln.strip()][:3]
    # every process the run started must be gone shortly after the driver
    settle = time.monotonic() + SETTLE_S[kind]
    while alive(seen) and time.monotonic() < settle:
        time.sleep(0.05)
    left = alive(seen)
    rec["leftover"] = len(left)
    rec["leftover_cmd"] = sorted({_cmdline(p)[:60] for p in left})
    kill_all(seen)
    # rerun until it succeeds (at most 3), then compare
    reruns = 0
    rerun_rc: list[int] = []
    while reruns < 3:
        reruns += 1
        r = subprocess.run(cli(recipe, out, extra), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                           env=ENV, start_new_session=True)
        rerun_rc.append(r.returncode)
        if r.returncode == 0:
            break
        rec.setdefault("rerun_errors", []).append(r.stderr.strip().splitlines()[-1:])
    rec["reruns"] = reruns
    rec["rerun_rc"] = rerun_rc
    got = corpus(out)
    ref_keys = Counter(reference["keys"])
    keys = Counter(got["keys"])
    rec["lost"] = sum((ref_keys - keys).values())
    rec["duplicated"] = sum((keys - ref_keys).values())
    rec["shards_differ"] = sum(1 for k in set(reference["shards"]) | set(got["shards"])
                               if reference["shards"].get(k) != got["shards"].get(k))
    rec["stray_files"] = len(got["stray"])
    rec["ok"] = (rerun_rc[-1] == 0 and rec["lost"] == 0 and rec["duplicated"] == 0
                 and rec["shards_differ"] == 0 and rec["stray_files"] == 0 and rec["leftover"] == 0
                 and rec["rc"] != "hung")
    shutil.rmtree(out, ignore_errors=True)
    return rec


def plan_trials(n: int, rng: random.Random, ray_share: float, with_ray: bool,
                only: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(executor, target, signal) for each trial: the combinations in a shuffled round-robin over
    the targets (so that a short soak still hits every target), Ray for ``ray_share`` of them."""
    executors = only or ["local-1", "local-2"] + (["ray-2"] if with_ray else [])
    n_ray = 0
    if "ray-2" in executors:
        n_ray = n if executors == ["ray-2"] else max(1, round(n * ray_share))

    def cycle(execs: list[str], count: int) -> list[tuple[str, str, str]]:
        by_target = {t: [(e, t, s) for e in execs for s in SIGNALS if not (e == "local-1" and t == "worker")]
                     for t in ("driver", "group", "worker")}
        for combos in by_target.values():
            rng.shuffle(combos)
        order = [c for row in zip(*(combos * 4 for combos in by_target.values())) for c in row]
        return [order[i % len(order)] for i in range(count)]

    local = [e for e in executors if e != "ray-2"]
    picks = cycle(local, n - n_ray) if local else []
    ray = cycle(["ray-2"], n_ray) if n_ray else []
    # spread the Ray trials over the soak
    for k, r in enumerate(ray):
        picks.insert(min(len(picks), (k + 1) * len(picks) // (len(ray) + 1) + k), r)
    return picks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_kill_soak", description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=50, help="number of trials (one signal each)")
    ap.add_argument("--quick", action="store_true", help="12 trials")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ray-share", type=float, default=0.1, help="share of trials on Ray (when ray imports)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--only", help="comma-separated executors to use (local-1, local-2, ray-2); "
                                   "overrides --ray-share")
    ap.add_argument("--json", type=Path, help="write every trial and the totals here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("bench_kill_soak follows processes through /proc: Linux only", file=sys.stderr)
        return 0
    n = 12 if args.quick and args.kills == 50 else args.kills
    with_ray = not args.no_ray and importlib.util.find_spec("ray") is not None
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="rsdata-kill-soak-"))
    t0 = time.monotonic()
    records: list[dict[str, Any]] = []
    try:
        recipe, n_parts = make_scene(work)
        ref = subprocess.run(cli(recipe, work / "reference", ["--workers", "1"]), capture_output=True,
                             text=True, timeout=RUN_TIMEOUT_S, env=ENV)
        if ref.returncode != 0:
            print(ref.stderr, file=sys.stderr)
            return 1
        reference = corpus(work / "reference")
        only = [e.strip() for e in args.only.split(",") if e.strip() in EXECUTORS] if args.only else None
        trials = plan_trials(n, rng, args.ray_share, with_ray, only)
        for i, (executor, target, signame) in enumerate(trials):
            rec = trial(i, rng, work, recipe, n_parts, reference, executor, target, signame)
            records.append(rec)
            print(f"  {i + 1:3d}/{n} {executor:8s} {target:6s} {signame:7s} {rec['when']:11s} "
                  f"rc={rec['rc']!s:4s} exit {rec['exit_s']:5.1f}s left={rec['leftover']} "
                  f"reruns={rec['reruns']} lost={rec['lost']} dup={rec['duplicated']} "
                  f"{'ok' if rec['ok'] else 'FAIL ' + json.dumps({k: rec[k] for k in ('rerun_rc', 'shards_differ', 'stray_files', 'leftover_cmd')})}",
                  flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")
    seconds = time.monotonic() - t0
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["executor"], r["target"], r["signal"])].append(r)
    print("\n| executor | target | signal | kills | delivered | killed-run rc | max exit s | reruns "
          "| lost | dup | shard diffs | stray | leftover procs | ok |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (e, t, s), rs in sorted(groups.items()):
        rcs = ",".join(f"{k}x{v}" for k, v in sorted(Counter(str(r["rc"]) for r in rs).items()))
        print(f"| {e} | {t} | {s} | {len(rs)} | {sum(r['delivered'] for r in rs)} | {rcs} | "
              f"{max(r['exit_s'] for r in rs):.1f} | {sum(r['reruns'] for r in rs)} | "
              f"{sum(r['lost'] for r in rs)} | {sum(r['duplicated'] for r in rs)} | "
              f"{sum(r['shards_differ'] for r in rs)} | {sum(r['stray_files'] for r in rs)} | "
              f"{sum(r['leftover'] for r in rs)} | {sum(r['ok'] for r in rs)}/{len(rs)} |")
    totals = {
        "kills": len(records), "delivered": sum(r["delivered"] for r in records),
        "reruns": sum(r["reruns"] for r in records),
        "failed_reruns": sum(1 for r in records if r["rerun_rc"][-1] != 0),
        "lost": sum(r["lost"] for r in records), "duplicated": sum(r["duplicated"] for r in records),
        "shards_differ": sum(r["shards_differ"] for r in records),
        "stray_files": sum(r["stray_files"] for r in records),
        "leftover_processes": sum(r["leftover"] for r in records),
        "hung": sum(1 for r in records if r["rc"] == "hung"),
        "tracebacks": sum(r["traceback"] for r in records),
        "ok": sum(r["ok"] for r in records),
        "by_executor": dict(Counter(r["executor"] for r in records)),
        "seconds": round(seconds, 1), "seed": args.seed,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    print(f"\ntargets: lost 0, duplicated 0, leftover processes 0, hung 0 -> "
          f"{'pass' if totals['ok'] == len(records) else 'FAIL'}")
    print("SOAK " + json.dumps(totals))
    if args.json:
        args.json.write_text(json.dumps({"totals": totals, "trials": records}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
