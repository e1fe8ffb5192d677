"""Helpers of the annotation tests: a small corpus with OSM tags, real and synthetic samples, and
annotators who sign up and annotate through Label Studio's own web endpoints."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from scoring_helpers import encode, scene

from rsdata import __version__
from rsdata.corpus.manifest import write_manifest
from rsdata.corpus.writer import ShardWriter
from rsdata.sample import Sample

TAGS = [("building=yes", "building", "buildings"), ("highway=track", "dirt track", "dirt tracks"),
        ("landuse=farmland", "farmland", "farmland")]


def tag(tag_: str, phrase: str, plural: str, visible: bool = True, share: float = 0.1) -> dict[str, Any]:
    key, value = tag_.split("=")
    return {"key": key, "value": value, "tag": tag_, "phrase": phrase, "plural": plural, "count": 2,
            "visible_count": 2 if visible else 0, "visible": visible, "area_share": share,
            "area_m2": 100.0, "length_m": 0.0, "position": "center", "cells": ["center"],
            "geom_types": {"polygon": 2}}


def meta_for(key: str, i: int, synthetic: bool) -> dict[str, Any]:
    main = TAGS[i % len(TAGS)]
    other = TAGS[(i + 1) % len(TAGS)]
    kind = "synthetic" if synthetic else "raster"
    return {
        "schema_version": 1, "key": key, "synthetic": synthetic, "origin": {"type": kind},
        "source": {"type": kind, "id": "t", "license": "CC0-1.0", "attribution": "test scenes"},
        "geo": {"crs": "EPSG:32734", "bounds": [0, 0, 96, 96], "bounds_wgs84": [20.0, -34.1, 20.01, -34.0],
                "gsd_m": 1.0, "size": [96, 96], "bands": [1, 2, 3]},
        "osm": {"n_features": 4, "tags": [tag(*main, share=0.3), tag(*other, visible=i % 2 == 0, share=0.05)]},
        "captions": [{"text": f"An overhead image with {main[2]} and {other[2]} ({key}).", "kind": "template",
                      "template": "counts.v1.a"},
                     {"text": f"{main[2].capitalize()} seen from above.", "kind": "template",
                      "template": "sizes.v1.a"}],
        "scores": {"clip": round(0.1 + 0.02 * i, 3)},
    }


def layout_png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10 * i % 255, 80, 160)).save(buf, "PNG")
    return buf.getvalue()


def write_annotation_corpus(directory: Path, n: int = 12, synthetic_every: int = 4,
                            per_shard: int = 5, name: str = "anno", size: int = 96) -> Path:
    """A corpus of ``n`` samples (every ``synthetic_every``-th synthetic, with a layout.png),
    written through the real shard writer and manifest code."""
    writer = ShardWriter(directory, "part", per_shard, 10**9)
    for i in range(n):
        key = f"s_{i:04d}"
        synthetic = bool(synthetic_every) and i % synthetic_every == synthetic_every - 1
        extra = {"layout.png": layout_png(i)} if synthetic else {}
        writer.write(Sample(key=key, image=encode(scene(i, size)), image_format="jpg",
                            meta=meta_for(key, i, synthetic), extra=extra))
    shards = writer.close()
    recipe = {"name": name, "output": {"max_samples_per_shard": per_shard, "max_bytes_per_shard": "64MB"}}
    manifest = {"format": "rsdata-manifest/1", "name": name,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "rsdata_version": __version__, "recipe": recipe, "recipe_path": None,
                "recipe_hash": hashlib.sha256(json.dumps(recipe).encode()).hexdigest(), "parent": None,
                "nsamples": sum(s["nsamples"] for s in shards), "shards": shards,
                "stages": [{"name": "tile", "in": n, "out": n, "dropped": {}}], "sources": []}
    write_manifest(directory, manifest)
    return directory


class Annotator:
    """A person who signs up on Label Studio's web page and annotates with their browser session."""

    def __init__(self, url: str, email: str, password: str) -> None:
        self.url = url
        self.email = email
        self.http = httpx.Client(base_url=url, follow_redirects=False, timeout=60)
        self.http.get("/user/signup/")
        r = self.http.post("/user/signup/", data={"email": email, "password": password,
                                                   "csrfmiddlewaretoken": self.http.cookies["csrftoken"],
                                                   "allow_newsletters": "false"},
                           headers={"Referer": f"{url}/user/signup/"})
        if r.status_code != 302:  # already signed up (a rerun against the same server): log in
            self.http.get("/user/login/")
            r = self.http.post("/user/login/", data={"email": email, "password": password,
                                                      "csrfmiddlewaretoken": self.http.cookies["csrftoken"]},
                               headers={"Referer": f"{url}/user/login/"})
        assert r.status_code == 302, (r.status_code, r.text[:300])
        me = self.http.get("/api/current-user/whoami")
        assert me.status_code == 200, me.text[:300]
        self.id = me.json()["id"]

    def _post(self, path: str, body: Any) -> Any:
        r = self.http.post(path, json=body, headers={"X-CSRFToken": self.http.cookies["csrftoken"],
                                                     "Referer": self.url})
        assert r.status_code in (200, 201), (r.status_code, r.text[:500])
        return r.json()

    def tasks(self, project: int) -> dict[str, int]:
        """sample key -> task id of a project (as an annotator sees them)."""
        out: dict[str, int] = {}
        page = 1
        while True:
            r = self.http.get("/api/tasks", params={"project": project, "page": page, "page_size": 100})
            assert r.status_code == 200, r.text[:300]
            body = r.json()
            items = body["tasks"] if isinstance(body, dict) else body
            for t in items:
                out[t["data"]["rsdata_key"]] = t["id"]
            total = body.get("total") if isinstance(body, dict) else len(items)
            if not items or len(out) >= (total or 0):
                return out
            page += 1

    def annotate(self, task: int, result: list[dict[str, Any]], cancelled: bool = False) -> dict[str, Any]:
        return self._post(f"/api/tasks/{task}/annotations/",
                          {"result": result, "was_cancelled": cancelled, "lead_time": 4.2})


def verdict(choice: str, caption: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
    out = [{"from_name": "verdict", "to_name": "caption", "type": "choices", "value": {"choices": [choice]}}]
    if caption is not None:
        out.append({"from_name": "edited_caption", "to_name": "caption", "type": "textarea",
                    "value": {"text": [caption]}})
    if reason is not None:
        out.append({"from_name": "reject_reason", "to_name": "image", "type": "choices",
                    "value": {"choices": [reason]}})
    return out


def rating(value: int) -> list[dict[str, Any]]:
    return [{"from_name": "match", "to_name": "image", "type": "rating", "value": {"rating": value}}]


def visible(labels: list[str]) -> list[dict[str, Any]]:
    return [{"from_name": "visible_tags", "to_name": "image", "type": "choices", "value": {"choices": labels}}]
