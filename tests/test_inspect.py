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


# --- inspect --overlay: the map over the picture ------------------------------------------------

from rsdata.inspect import (OVERLAY_COLORS, OverlayLayout, _legend_height,  # noqa: E402
                            draw_overlay_tile, font, line_height, overlay_class,
                            overlay_geometries, run_inspect)

RED = OVERLAY_COLORS["building"]
YELLOW = OVERLAY_COLORS["track / path"]
GREY = (100, 100, 100)
UTM_BOUNDS = [500000.0, 6240000.0, 500064.0, 6240064.0]  # EPSG:32734, 1 m pixels, 64 x 64


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def near(pixel: tuple[int, ...], rgb: tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, rgb))


def square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


BUILDING = {"tag": "building=yes", "phrase": "building", "geom": "polygon",
            "pixels": [square(10, 10, 30, 30)]}
TRACK = {"tag": "highway=track", "phrase": "dirt track", "geom": "line",
         "pixels": [[[0, 50], [63, 50]]]}


def test_overlay_tile_draws_outline_fill_line_and_grid() -> None:
    tile = draw_overlay_tile(png(GREY), [BUILDING, TRACK], 128)  # scale 2
    assert tile.size == (128, 128)
    for xy in ((40, 20), (20, 40), (60, 40), (40, 60)):  # the square's four edges
        assert near(tile.getpixel(xy), RED, 2), (xy, tile.getpixel(xy))
    inside = tile.getpixel((30, 30))  # filled, half transparent: grey tinted red
    assert inside[0] > GREY[0] + 20 and inside[1] < GREY[1] and not near(inside, RED)
    assert near(tile.getpixel((110, 70)), GREY, 2)  # nothing drawn there
    assert near(tile.getpixel((20, 100)), YELLOW, 2) and near(tile.getpixel((120, 100)), YELLOW, 2)
    grid = tile.getpixel((42, 120)), tile.getpixel((120, 42))  # 3x3 grid lines at 1/3
    assert all(p[0] > GREY[0] + 40 for p in grid)
    bare = draw_overlay_tile(png(GREY), [], 128, grid=False)
    assert near(bare.getpixel((40, 20)), GREY, 2) and near(bare.getpixel((42, 120)), GREY, 2)


def test_overlay_classes_by_colour() -> None:
    assert overlay_class("building=house") == "building"
    assert overlay_class("highway=track") == overlay_class("highway=path") == "track / path"
    assert overlay_class("highway=unclassified") == "road"
    assert overlay_class("waterway=stream") == overlay_class("natural=water") == "water"
    assert overlay_class("landuse=forest") == overlay_class("natural=wood") == "trees / vegetation"
    assert overlay_class("landuse=farmland") == "farmland / crops"
    assert overlay_class("leisure=nature_reserve") == "designation (not visible)"
    assert overlay_class("landuse=residential") == "built-up land use"
    assert overlay_class("amenity=school") == "leisure / amenity"


def overlay_corpus(root: Path, meta_osm: dict[str, Any], recipe: dict[str, Any] | None = None,
                   recipe_path: str | None = None) -> Path:
    """One 64 x 64 grey sample over UTM_BOUNDS with the given ``osm`` member."""
    key = "t_00000_00000"
    meta = sample_json(key, [("building=yes", "building", True)],
                       [("A building.", "template", "counts.v1.a"),
                        ("A building near a dirt track.", "template", "positions.v1.a")])
    meta["geo"].update({"crs": "EPSG:32734", "bounds": UTM_BOUNDS, "size": [64, 64],
                        "bounds_wgs84": [20.99, -33.97, 21.0, -33.96],  # only roughly right
                        "transform": [1.0, 0.0, UTM_BOUNDS[0], 0.0, -1.0, UTM_BOUNDS[3]]})
    meta["osm"].update(meta_osm)
    shard = root / "shards" / "tiny-00000.tar"
    shard.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        add_member(tar, f"{key}.png", png(GREY))
        add_member(tar, f"{key}.json", json.dumps(meta).encode())
        add_member(tar, f"{key}.txt", b"A building.")
    data = shard.read_bytes()
    manifest = manifest_for([{"path": "shards/tiny-00000.tar", "nsamples": 1, "bytes": len(data),
                              "sha256": hashlib.sha256(data).hexdigest()}])
    manifest["recipe"] = recipe or {"name": "tiny"}
    manifest["recipe_path"] = recipe_path
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def overlay_tile_origin(n_items: int = 1) -> tuple[int, int]:
    """Where the first item's overlay tile lies on contact_sheet_overlay.png."""
    lay = OverlayLayout(cols=min(2, n_items))
    top = lay.margin + line_height(font(24)) + line_height(font(15)) + 16 + _legend_height(lay) + 12
    return lay.margin + lay.thumb + lay.gap, top


def test_cli_overlay_draws_the_json_objects(tmp_path: Path) -> None:
    root = overlay_corpus(tmp_path / "c", {"objects": [BUILDING, TRACK]})
    assert main(["inspect", str(root), "--overlay"]) == 0
    out = root / "inspect"
    s = summary_of(root)
    assert s["overlay"]["geometries"] == "json" and s["overlay"]["objects"] == {"t_00000_00000": 2}
    assert s["files"]["contact_sheet_overlay.png"] == str(out / "contact_sheet_overlay.png")
    x0, y0 = overlay_tile_origin()
    with Image.open(out / "contact_sheet_overlay.png") as sheet:
        sheet = sheet.convert("RGB")
        scale = 256 / 64
        for px, py in ((20, 10), (10, 20), (30, 20), (20, 30)):  # building edges, image pixels
            got = sheet.getpixel((x0 + int(px * scale), y0 + int(py * scale)))
            assert near(got, RED, 2), ((px, py), got)
        assert near(sheet.getpixel((x0 + 200, y0 + int(50 * scale))), YELLOW, 2)
        assert near(sheet.getpixel((x0 + 220, y0 + 20)), GREY, 2)  # empty part of the tile
        plain = sheet.getpixel((x0 - 256 - 8 + int(20 * scale), y0 + int(10 * scale)))
        assert near(plain, GREY, 2)  # the picture beside it is drawn without the map


def test_without_overlay_nothing_changes(tmp_path: Path) -> None:
    root = overlay_corpus(tmp_path / "c", {"objects": [BUILDING]})
    inspect_corpus(root, out=tmp_path / "a")
    inspect_corpus(root, out=tmp_path / "b", overlay=True)
    assert not (tmp_path / "a" / "contact_sheet_overlay.png").exists()
    assert "overlay" not in json.loads((tmp_path / "a" / "summary.json").read_text())
    for name in ("contact_sheet.png", "tag_histogram.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_overlay_recomputes_geometries_from_the_recipe_sources(tmp_path: Path) -> None:
    """No objects in the json: the recipe's osm_join source is read again and clipped."""
    from pyproj import Transformer

    to_wgs84 = Transformer.from_crs("EPSG:32734", "EPSG:4326", always_xy=True)
    x0, top = UTM_BOUNDS[0], UTM_BOUNDS[3]

    def ring(px0: float, py0: float, px1: float, py1: float) -> list[list[float]]:
        return [list(to_wgs84.transform(x0 + px, top - py))
                for px, py in square(px0, py0, px1, py1)]

    features = [
        {"type": "Feature", "properties": {"building": "yes"},
         "geometry": {"type": "Polygon", "coordinates": [ring(10, 10, 30, 30)]}},
        {"type": "Feature", "properties": {"highway": "track"},  # runs out of the tile: clipped
         "geometry": {"type": "LineString", "coordinates": [
             list(to_wgs84.transform(x0 - 20, top - 50)),
             list(to_wgs84.transform(x0 + 90, top - 50))]}},
        {"type": "Feature", "properties": {"building": "yes"},  # outside the tile
         "geometry": {"type": "Polygon", "coordinates": [ring(200, 200, 220, 220)]}},
    ]
    recipes = tmp_path / "pipelines"
    (recipes / "osm").mkdir(parents=True)
    (recipes / "osm" / "features.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features}))
    (recipes / "tiny.yaml").write_text("name: tiny\n")
    recipe = {"name": "tiny", "stages": [
        {"type": "osm_join", "sources": [{"path": "osm/features.geojson"}],
         "min_pixels": {"polygon": 16, "line": 8, "point": None}}]}
    root = overlay_corpus(tmp_path / "c", {}, recipe, str(recipes / "tiny.yaml"))
    _, summary = run_inspect(root, overlay=True)
    assert summary["overlay"]["geometries"] == "recipe", summary["overlay"]
    assert summary["overlay"]["objects"] == {"t_00000_00000": 2}
    from rsdata.corpus.manifest import load_manifest
    from rsdata.inspect import scan_corpus

    scan = scan_corpus(root, load_manifest(root), 12)
    objs = overlay_geometries(root, load_manifest(root), scan.sheet).objects["t_00000_00000"]
    building = next(o for o in objs if o["tag"] == "building=yes")
    xs = [p[0] for p in building["pixels"][0]]
    ys = [p[1] for p in building["pixels"][0]]
    assert building["geom"] == "polygon"
    assert min(xs) == pytest.approx(10, abs=0.05) and max(xs) == pytest.approx(30, abs=0.05)
    assert min(ys) == pytest.approx(10, abs=0.05) and max(ys) == pytest.approx(30, abs=0.05)
    track = next(o for o in objs if o["tag"] == "highway=track")
    assert track["geom"] == "line"
    assert sorted(round(p[0]) for p in track["pixels"][0]) == [0, 64]
    x, y = overlay_tile_origin()
    with Image.open(root / "inspect" / "contact_sheet_overlay.png") as sheet:
        assert near(sheet.convert("RGB").getpixel((x + 80, y + 40)), RED, 2)  # top edge, x 20 px


def test_overlay_without_sources_still_draws(tmp_path: Path) -> None:
    root = overlay_corpus(tmp_path / "c", {}, {"name": "tiny", "stages": [
        {"type": "osm_join", "sources": [{"path": "osm/missing.geojson"}]}]}, "nowhere/tiny.yaml")
    _, summary = run_inspect(root, overlay=True)
    assert summary["overlay"]["geometries"] == "none"
    assert "not found" in summary["overlay"]["note"]
    assert (root / "inspect" / "contact_sheet_overlay.png").exists()
