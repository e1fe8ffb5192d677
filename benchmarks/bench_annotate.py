"""Annotation rounds against a local Label Studio: push and pull time for N tasks (default 1,000).

    python -m benchmarks.bench_annotate [--quick] [--tasks N] [--json PATH] [--keep]

Starts a fresh Label Studio from ``.venv-ls`` (``$RSDATA_LABEL_STUDIO_VENV``) on 127.0.0.1 with a
temporary data directory, writes a corpus of N seeded 256 px JPEG scenes with OSM-like tags
(every fourth synthetic, with a layout.png), and measures, through the same code as
``rsdata annotate``:

* **push** of a caption_verification round of all N samples (project creation, image uploads
  through the API, task import in batches of 100), then a second push (idempotent: nothing added);
* one answer per task created through the API as annotators would (two annotators, alternating;
  not part of push or pull time), then **status** (the task list, page by page: N/100 pages);
* **pull**: the export snapshot alone, and the whole pull (export, answers + agreement, the merge
  run into a new corpus version); checked: every one of the N tasks comes back with its answer
  and the merged corpus holds the expected samples.

``--quick``: 100 tasks. Label Studio's first start (migrations) is reported separately.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def write_corpus(directory: Path, n: int, size: int = 256) -> Path:
    from PIL import Image, ImageDraw

    from rsdata import __version__
    from rsdata.corpus.manifest import write_manifest
    from rsdata.corpus.writer import ShardWriter
    from rsdata.sample import Sample

    tags = [("building=yes", "building", "buildings"), ("highway=track", "dirt track", "dirt tracks"),
            ("landuse=farmland", "farmland", "farmland"), ("natural=water", "water", "water")]
    rng = np.random.default_rng(0)
    writer = ShardWriter(directory, "part", 250, 10**9)
    for i in range(n):
        arr = np.clip(rng.integers(40, 200, 3) + rng.normal(0, 14, (size, size, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
        for _ in range(5):
            x, y = rng.integers(0, size - 40, 2)
            w, h = rng.integers(10, 60, 2)
            draw.rectangle([int(x), int(y), int(x + w), int(y + h)], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        synthetic = i % 4 == 3
        t, p, pl = tags[i % len(tags)]
        k, v = t.split("=")
        key = f"b_{i:05d}"
        extra = {}
        if synthetic:
            lbuf = io.BytesIO()
            Image.new("RGB", (64, 64), (i % 255, 90, 30)).save(lbuf, "PNG")
            extra["layout.png"] = lbuf.getvalue()
        meta = {"schema_version": 1, "key": key, "synthetic": synthetic,
                "origin": {"type": "synthetic" if synthetic else "raster"},
                "source": {"type": "synthetic" if synthetic else "raster", "id": "bench", "license": "CC0-1.0",
                           "attribution": "benchmark scenes"},
                "geo": {"crs": "EPSG:32734", "bounds": [0, 0, 640, 640], "bounds_wgs84": [20.0, -34.1, 20.01, -34.0],
                        "gsd_m": 2.5, "size": [size, size], "bands": [1, 2, 3]},
                "osm": {"n_features": 3, "tags": [{"key": k, "value": v, "tag": t, "phrase": p, "plural": pl,
                                                   "count": 3, "visible_count": 3, "visible": True,
                                                   "area_share": 0.2, "area_m2": 900.0, "length_m": 0.0,
                                                   "position": "center", "cells": ["center"]}]},
                "captions": [{"text": f"An aerial image with {pl} in the center.", "kind": "template",
                              "template": "positions.v1.a"}],
                "scores": {}}
        writer.write(Sample(key=key, image=buf.getvalue(), image_format="jpg", meta=meta, extra=extra))
    shards = writer.close()
    recipe = {"name": "bench-annotate", "output": {"max_samples_per_shard": 250, "max_bytes_per_shard": "256MB"}}
    write_manifest(directory, {
        "format": "rsdata-manifest/1", "name": "bench-annotate",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rsdata_version": __version__, "recipe": recipe, "recipe_path": None,
        "recipe_hash": hashlib.sha256(json.dumps(recipe).encode()).hexdigest(), "parent": None,
        "nsamples": n, "shards": shards, "stages": [{"name": "tile", "in": n, "out": n, "dropped": {}}],
        "sources": []})
    return directory


def annotate_all(server: Any, project: int, users: list[int]) -> float:
    """One answer per task (accept, edit or reject in turn), created through the API."""
    tasks = list(server.tasks(project))
    verdicts = ["accept", "edit", "accept", "reject"]

    def one(i_task: tuple[int, dict[str, Any]]) -> None:
        i, task = i_task
        v = verdicts[i % len(verdicts)]
        result = [{"from_name": "verdict", "to_name": "caption", "type": "choices", "value": {"choices": [v]}}]
        if v == "edit":
            result.append({"from_name": "edited_caption", "to_name": "caption", "type": "textarea",
                           "value": {"text": [f"Edited caption {i}."]}})
        server.client.annotations.create(id=task["id"], result=result, completed_by=users[i % len(users)])

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, enumerate(tasks)))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_annotate", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 tasks")
    ap.add_argument("--tasks", type=int, default=None, help="tasks in the round (default 1000)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (corpus, server data)")
    args = ap.parse_args(argv)
    n = args.tasks or (100 if args.quick else 1000)

    from rsdata.annotation import localserver
    from rsdata.annotation.rounds import pull, push, status
    from rsdata.annotation.server import LabelStudioServer

    if localserver.executable() is None:
        print(f"Label Studio is not installed in {localserver.default_venv()}: "
              f"python3.11 -m venv .venv-ls && .venv-ls/bin/pip install label-studio=={localserver.LS_VERSION}",
              file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-annotate-"))
    results: dict[str, Any] = {"tasks": n}
    ls = None
    try:
        t0 = time.perf_counter()
        ls = localserver.start(tmp / "label-studio")
        results["server_start_s"] = round(time.perf_counter() - t0, 1)
        print(f"Label Studio up after {results['server_start_s']} s at {ls.url}", file=sys.stderr)
        corpus = write_corpus(tmp / "corpus", n)
        round_path = tmp / "round.yaml"
        config = Path(__file__).resolve().parents[1] / "annotation" / "configs" / "caption_verification.xml"
        round_path.write_text(json.dumps({"version": 1, "id": "bench", "kind": "caption_verification",
                                          "config": str(config), "overlap": 1,
                                          "sampling": {"count": n, "stratify": ["tag", "origin"]}}))
        state = tmp / "state"
        t0 = time.perf_counter()
        pushed = push(corpus, round_path, ls.url, ls.token, state_dir=state, quiet=True)
        results["push_s"] = round(time.perf_counter() - t0, 2)
        results["push_tasks_per_s"] = round(n / results["push_s"], 1)
        results["images_uploaded"] = pushed.images_uploaded
        t0 = time.perf_counter()
        again = push(corpus, round_path, ls.url, ls.token, state_dir=state, quiet=True)
        results["second_push_s"] = round(time.perf_counter() - t0, 2)
        results["second_push_imported"] = again.imported

        server = LabelStudioServer(ls.url, ls.token, timeout=600)
        users = [server.whoami()["id"]]
        for email in ("bench1@example.com", "bench2@example.com"):
            user = server.client.users.create(email=email, username=email.split("@")[0])
            users.append(user.id)
        results["annotate_s"] = round(annotate_all(server, pushed.project, users[1:]), 1)
        t0 = time.perf_counter()
        rows = status(ls.url, ls.token, state_dir=state, server=server)
        results["status_s"] = round(time.perf_counter() - t0, 2)
        results["status_with_answers"] = rows[0]["with_answers"]
        t0 = time.perf_counter()
        export = server.export(pushed.project, "bench export")
        results["export_s"] = round(time.perf_counter() - t0, 2)
        results["export_tasks"] = len(export)
        results["export_annotations"] = sum(len(t.get("annotations") or []) for t in export)
        t0 = time.perf_counter()
        pulled = pull(corpus, round_path, tmp / "merged", ls.url, ls.token, state_dir=state, quiet=True)
        results["pull_s"] = round(time.perf_counter() - t0, 2)
        counts = pulled.answers["counts"]
        results["pull_tasks_with_answers"] = counts.get("tasks_with_answers", 0)
        results["pull_answers"] = counts.get("answers", 0)
        results["merged_samples"] = pulled.manifest["nsamples"]
        expected = n - sum(1 for i in range(n) if i % 4 == 3)  # every fourth answer rejects
        results["ok"] = (results["export_tasks"] == n and results["export_annotations"] == n
                         and results["pull_tasks_with_answers"] == n and results["pull_answers"] == n
                         and results["merged_samples"] == expected and results["second_push_imported"] == 0
                         and results["status_with_answers"] == n)
        server.close()
    finally:
        if ls is not None:
            ls.stop()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    machine = {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
               "platform": platform.platform()}
    print("\n| tasks | push | second push | status | export | pull (export + merge run) | all back |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {n} | {results['push_s']:.1f} s ({results['push_tasks_per_s']:.0f} tasks/s, "
          f"{results['images_uploaded']} images) | {results['second_push_s']:.1f} s (+{results['second_push_imported']}) "
          f"| {results['status_s']:.1f} s | {results['export_s']:.1f} s | {results['pull_s']:.1f} s | "
          f"{'yes' if results['ok'] else 'NO'} ({results['pull_tasks_with_answers']} tasks, "
          f"{results['pull_answers']} answers, {results['merged_samples']} samples kept) |")
    print(f"\nLabel Studio start: {results['server_start_s']} s; creating {n} answers through the API: "
          f"{results['annotate_s']} s; machine: {machine}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "machine": machine}, indent=2))
    return 0 if results.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
