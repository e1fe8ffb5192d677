"""Tests of rsdata.inspect: report numbers, shard checks, the PNGs, the empty corpus."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from rsdata import schemas
from rsdata.cli import main
from rsdata.corpus.reader import UnsafeShardError, split_member
from rsdata.inspect import inspect_corpus, pick_indices

LICENSE = "CC-BY-4.0"

# key, [(tag, phrase, visible)], captions [(text, kind, template)], primary caption (txt)
Tag = tuple[str, str, bool]
Caption = tuple[str, str, str | None]
SAMPLES: list[list[tuple[str, list[Tag], list[Caption], str]]] = [
    [  # shard 0
        ("t_00000_00000",
         [("highway=track", "dirt track", True), ("building=yes", "building", True)],
         [("A dirt track and a building.", "template", "counts.v1.a"),
          ("A building near a dirt track.", "template", "positions.v1.a")],
         "A dirt track and a building."),
        ("t_00000_00001", [("highway=track", "dirt track", True)],
         [("Dirt tracks.", "template", "counts.v1.a"),
          ("Dirt tracks cross the image.", "template", "positions.v1.a"),
          ("About 300 m of dirt track.", "template", "lengths.v1.a")],
         "Dirt tracks."),
        ("t_00000_00002", [("highway=track", "dirt track", False), ("leisure=park", "park", True)],
         [("A park seen from above in summer", "template", "sizes.v1.a")],
         "A park seen from above in summer"),
    ],
    [  # shard 1
        ("t_00001_00000", [("building=yes", "building", True)],
         [("One building.", "template", "counts.v1.a"), ("A lone building.", "human", None)],
         "One building."),
        ("t_00001_00001", [],
         [("Empty scrubland with nothing else at all here today", "llm", None)],
         "Empty scrubland with nothing else at all here today"),
    ],
]


LLM_PROVENANCE = {"llm": {"backend": "openai", "model": "test-model", "prompt_version": "p1",
                          "settings": {"temperature": 0.0}},
                  "human": {"round": "r1"}}


def tag_json(tag: str, phrase: str, visible: bool) -> dict[str, Any]:
    key, value = tag.split("=")
    return {"key": key, "value": value, "tag": tag, "phrase": phrase, "count": 1,
            "visible_count": int(visible), "visible": visible, "area_share": 0.1, "area_m2": 100.0,
            "length_m": 0.0, "position": "center", "cells": ["center"]}


def sample_json(key: str, tags: list[tuple[str, str, bool]],
                captions: list[tuple[str, str, str | None]]) -> dict[str, Any]:
    caps = [{"text": t, "kind": k, **({"template": tpl} if tpl else {}), **LLM_PROVENANCE.get(k, {})}
            for t, k, tpl in captions]
    meta = {
        "schema_version": 1, "key": key, "synthetic": False, "origin": {"type": "raster"},
        "source": {"type": "raster", "id": "test-src", "license": LICENSE, "attribution": "test"},
        "geo": {"crs": "EPSG:32734", "bounds": [0, 0, 64, 64],
                "bounds_wgs84": [20.0, -34.0, 20.1, -33.9], "gsd_m": 0.5, "size": [48, 32],
                "bands": [1, 2, 3]},
        "osm": {"n_features": len(tags), "tags": [tag_json(*t) for t in tags]},
        "captions": caps, "scores": {},
    }
    schemas.validate("sample", meta, f"test sample {key}")
    return meta


def jpeg(color: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples: list[Any]) -> dict[str, Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, (key, tags, captions, primary) in enumerate(samples):
            add_member(tar, f"{key}.jpg", jpeg((40 * i, 120, 200 - 30 * i)))
            add_member(tar, f"{key}.json", json.dumps(sample_json(key, tags, captions)).encode())
            add_member(tar, f"{key}.txt", primary.encode())
    data = path.read_bytes()
    return {"nsamples": len(samples), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def manifest_for(shards: list[dict[str, Any]],
                 stages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    n = sum(s["nsamples"] for s in shards)
    manifest = {
        "format": "rsdata-manifest/1", "name": "tiny", "created": "2026-01-01T00:00:00+00:00",
        "rsdata_version": "0.1.0", "recipe": {"name": "tiny"}, "recipe_path": None,
        "recipe_hash": "ab" * 32, "parent": None, "nsamples": n, "shards": shards, "partitions": 1,
        "stages": stages or [
            {"name": "tile", "in": n + 2, "out": n + 2, "dropped": {}},
            {"name": "osm_join", "in": n + 2, "out": n, "dropped": {"no_visible_osm_tags": 2}}],
        "sources": [{"path": "data/test.tif", "role": "imagery", "sha256": "cd" * 32,
                     "license": LICENSE, "attribution": "test imagery"}],
        "osm": {"sources": [{"id": "roads.gpkg", "features": 7, "stats": {"loaded": 7}}],
                "features": 7},
    }
    schemas.validate("manifest", manifest, "test manifest")
    return manifest


def write_corpus(root: Path, shards: list[list[Any]]) -> Path:
    entries = []
    for i, samples in enumerate(shards):
        rel = f"shards/tiny-{i:05d}.tar"
        entries.append({"path": rel, **write_shard(root / rel, samples)})
    (root / "manifest.json").write_text(json.dumps(manifest_for(entries)))
    return root


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "tiny", SAMPLES)


def summary_of(root: Path) -> dict[str, Any]:
    return json.loads((root / "inspect" / "summary.json").read_text())


def test_report_numbers(corpus: Path) -> None:
    report = inspect_corpus(corpus)
    s = summary_of(corpus)
    assert s["corpus"]["nsamples"] == s["corpus"]["samples_read"] == 5
    assert s["corpus"]["shards"] == 2
    assert s["integrity"]["ok"] and not s["integrity"]["bad_shards"]
    assert [(t["tag"], t["samples"], t["share"]) for t in s["tags"]["top"]] == [
        ("building=yes", 2, 0.4), ("highway=track", 2, 0.4), ("leisure=park", 1, 0.2)]
    cap = s["captions"]
    assert cap["total"] == 9
    assert cap["per_sample"] == {"min": 1, "mean": 1.8, "median": 2, "max": 3}
    assert cap["primary_words"] == {"min": 2, "mean": 5.2, "median": 6, "max": 9}
    assert cap["templates"] == {"counts.v1.a": 3, "positions.v1.a": 2,
                                "lengths.v1.a": 1, "sizes.v1.a": 1}
    assert cap["kinds"] == {"template": 7, "human": 1, "llm": 1}
    assert s["geo"]["crs"] == {"EPSG:32734": 5} and s["geo"]["gsd_m"]["median"] == 0.5
    assert s["stages"][1]["dropped"] == {"no_visible_osm_tags": 2}
    assert s["sources"]["samples_by_source"] == {"test-src": {"samples": 5, "license": LICENSE}}

    assert "recipe abababababab " in report
    assert "5 samples in 2 shards" in report
    assert "OK: all 2 shards match the manifest" in report
    assert "osm_join" in report and "no_visible_osm_tags 2" in report
    assert "primary caption length (words): min 2, mean 5.2, median 6, max 9" in report
    assert "roads.gpkg: 7 features" in report and LICENSE in report
    lines = report.splitlines()
    first_tag = next(i for i, line in enumerate(lines) if line.strip().startswith("1. "))
    assert "building=yes" in lines[first_tag] and "40.0%" in lines[first_tag]
    assert (corpus / "inspect" / "report.txt").read_text() == report


def test_pngs(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    inspect_corpus(corpus, samples=4, out=out)
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.mode == "RGB"
        assert 4 * 200 < sheet.width < 2000 and 300 < sheet.height < 1000
        assert sheet.getpixel((2, 2)) == (255, 255, 255)
    with Image.open(out / "tag_histogram.png") as hist:
        assert hist.format == "PNG" and 600 <= hist.width < 2000 and 200 < hist.height < 1000
    assert not list(out.glob(".*tmp*"))
    assert json.loads((out / "summary.json").read_text())["contact_sheet_keys"] == [
        "t_00000_00000", "t_00000_00001", "t_00001_00000", "t_00001_00001"]


def test_pick_indices_are_even_and_deterministic() -> None:
    assert pick_indices(100, 4) == [12, 37, 62, 87]
    assert pick_indices(3, 12) == [0, 1, 2]
    assert pick_indices(0, 12) == [] and pick_indices(5, 1) == [2]


def test_inspect_uses_the_one_member_name_rule() -> None:
    import tarfile

    def member(name: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size = 1
        return info

    assert split_member(member("a_1.jpg"), "s.tar") == ("a_1", "jpg")
    assert split_member(member("a_1.layout.PNG"), "s.tar") == ("a_1", "layout.png")
    for bad in ("dir.x/a_1.seg.png", "README", "../a.jpg", ".a.jpg", "a b.jpg"):
        with pytest.raises(UnsafeShardError):
            split_member(member(bad), "s.tar")


def test_tampered_shard_is_reported(corpus: Path) -> None:
    shard = corpus / "shards" / "tiny-00000.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # inside the first jpg: the tar still reads, the hash differs
    shard.write_bytes(bytes(data))
    report = inspect_corpus(corpus)
    bad = [line for line in report.splitlines() if "MISMATCH" in line]
    assert len(bad) == 1 and "shards/tiny-00000.tar" in bad[0] and "sha256 mismatch" in bad[0]
    s = summary_of(corpus)
    assert not s["integrity"]["ok"]
    assert [b["path"] for b in s["integrity"]["bad_shards"]] == ["shards/tiny-00000.tar"]
    assert s["corpus"]["samples_read"] == 5


def test_truncated_and_missing_shards_do_not_crash(corpus: Path) -> None:
    first, second = corpus / "shards" / "tiny-00000.tar", corpus / "shards" / "tiny-00001.tar"
    first.write_bytes(first.read_bytes()[:1500])
    second.unlink()
    report = inspect_corpus(corpus)
    assert "MISMATCH shards/tiny-00000.tar: size is 1,500 bytes" in report
    assert "MISMATCH shards/tiny-00001.tar: missing" in report
    assert "unreadable tar" in report
    assert "MISMATCH samples: 0 read from the shards, manifest says 5" in report
    assert not summary_of(corpus)["integrity"]["ok"]


def test_empty_corpus(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    stages = [{"name": "osm_join", "in": 4, "out": 0, "dropped": {"no_visible_osm_tags": 4}}]
    (root / "manifest.json").write_text(json.dumps(manifest_for([], stages)))
    report = inspect_corpus(root)
    assert "0 samples in 0 shards" in report and "empty" in report
    assert "(no visible tags)" in report
    for name in ("contact_sheet.png", "tag_histogram.png"):
        with Image.open(root / "inspect" / name) as im:
            assert im.width >= 600 and im.height >= 200
    s = summary_of(root)
    assert s["corpus"]["samples_read"] == 0 and s["tags"]["top"] == []
    assert s["captions"]["primary_words"] is None


def test_cli_inspect(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(corpus), "--samples", "2"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert (corpus / "inspect" / "contact_sheet.png").exists()


def test_not_a_corpus(tmp_path: Path) -> None:
    assert main(["inspect", str(tmp_path)]) == 2
