"""The landcover_join stage on generated class rasters whose per-tile shares are known by hand.

The imagery is the fixture ``utm_rgb`` (EPSG:32734, 2 m, 256 x 256 px from (453800, 6237800)),
tiled 64 x 64 px: 4 x 4 tiles of 128 m. Class rasters are written at other resolutions and in
other CRSs, so every tile is resampled (mode) from a grid unlike its own.

Tolerance of mode resampling: GDAL's mode kernel takes every source pixel a target pixel touches
(unweighted, ties to the first), so a tile pixel that straddles (or by floating point just
touches) a class boundary may take either class. A boundary that crosses a tile from top to
bottom does so once per tile row, so a share can be off by at most one pixel per row:
``1 / 64`` for a 64 px tile (``1 / size`` in general). Boundaries parallel to the other axis,
likewise, one pixel per column. Away from boundaries the answer is exact.
"""

from __future__ import annotations

import copy
import json
import pickle
import random
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from fixtures import rasters as fx
from pyproj import Transformer
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

from rsdata import schemas
from rsdata.cli import main
from rsdata.corpus.manifest import load_manifest, shard_paths
from rsdata.errors import InputError, RecipeError, RsdataError
from rsdata.landcover import (WORLDCOVER, check_landcover_phrase, describe_landcover,
                              landcover_phrases, parse_class_table, position_phrase)
from rsdata.landcover.stage import LandcoverJoin, LandcoverSettings, summarize
from rsdata.plan import build_plan
from rsdata.recipe import load_recipe, parse_recipe
from rsdata.sample import Sample
from rsdata.stage import STAGES, RunContext, create_stage
from rsdata.stats import StageStats

X0, Y0 = fx.UTM_ORIGIN  # imagery's upper-left corner
TILE = 64  # tile size in px
TILE_M = TILE * fx.UTM_GSD  # 128 m
ROUNDING = 1e-4  # shares are stored rounded to 4 decimals
TOL = 1 / TILE + ROUNDING  # one tile pixel per row crossed by a boundary (module docstring)
BOUNDARY_X = X0 + 160.0  # tree cover west, cropland east: 32 m = 16 px into tile column 1
TREE, CROP, GRASS, WATER = 10, 40, 30, 80


# --- class rasters -----------------------------------------------------------------------------
def write_classes(path: Path, codes: np.ndarray, crs: str | None, transform: Affine,
                  nodata: int | None = None, dtype: str = "uint8") -> Path:
    return fx.write_geotiff(path, codes[None].astype(dtype), crs=crs, transform=transform,
                            nodata=nodata)


def utm_halves(path: Path, res: float = 6.0) -> Path:
    """EPSG:32734 at ``res`` m: code 10 west of BOUNDARY_X, 40 east of it (boundary on a pixel
    edge); 100 x 100 px from 30 px west of the boundary, reaching past the imagery on all sides."""
    cols = np.arange(100)
    codes = np.where(cols[None, :] < 30, TREE, CROP).repeat(100, axis=0)
    origin = (BOUNDARY_X - 30 * res, Y0 + 5 * res)
    return write_classes(path, codes, fx.UTM_CRS, from_origin(*origin, res, res))


def expected_halves_utm(col: int) -> dict[int, float]:
    """Shares in tile column ``col`` of the imagery (every row alike), by hand."""
    x0, x1 = X0 + col * TILE_M, X0 + (col + 1) * TILE_M
    west = min(max((BOUNDARY_X - x0) / TILE_M, 0.0), 1.0)
    assert x1 > x0
    return {c: s for c, s in ((TREE, west), (CROP, 1.0 - west)) if s > 0}


def geo_halves(path: Path, boundary_lon: float, pixel: float = 5e-5) -> Path:
    """EPSG:4326 at ``pixel`` degrees: 10 west of the meridian ``boundary_lon``, 40 east of it
    (the meridian is a pixel edge), a margin of 40 px around the imagery."""
    w, s, e, n = fx.raster_bounds_wgs84(fx_path["utm_rgb"])
    lon0 = boundary_lon - pixel * int(np.ceil((boundary_lon - w) / pixel) + 40)
    lat0 = n + 40 * pixel
    width = int(np.ceil((e - lon0) / pixel)) + 40
    height = int(np.ceil((lat0 - s) / pixel)) + 40
    cols = np.arange(width)
    split = int(round((boundary_lon - lon0) / pixel))
    codes = np.where(cols[None, :] < split, TREE, CROP).repeat(height, axis=0)
    return write_classes(path, codes, fx.GEO_CRS, from_origin(lon0, lat0, pixel, pixel))


fx_path: dict[str, Path] = {}


@pytest.fixture(autouse=True)
def _paths(raster_files: dict[str, Path]) -> None:
    fx_path.update(raster_files)


# --- running the stage on the imagery's tiles --------------------------------------------------
def tiles_of(imagery: Path, size: int = TILE) -> list[Sample]:
    """Tile samples (meta.geo as the raster source writes it) over a whole raster."""
    with rasterio.open(imagery) as src:
        crs, t, width, height = src.crs, src.transform, src.width, src.height
    name = f"EPSG:{crs.to_epsg()}"
    out = []
    for row in range(height // size):
        for col in range(width // size):
            tt = t @ Affine.translation(col * size, row * size)
            xs, ys = zip(*(tt @ (c, r) for c, r in ((0, 0), (size, 0), (0, size), (size, size))))
            geo = {"crs": name, "transform": list(tt)[:6], "size": [size, size],
                   "bounds": [min(xs), min(ys), max(xs), max(ys)]}
            key = f"r_{col:05d}_{row:05d}"
            out.append(Sample(key=key, image=b"", meta={"key": key, "geo": geo,
                                                        "source": {"tile": {"col": col, "row": row}}}))
    return out


def footprint(imagery: Path) -> tuple[list[tuple[float, ...]], list[str]]:
    with rasterio.open(imagery) as src:
        return ([tuple(transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21))],
                [src.crs.to_string()])


def make_stage(tmp_path: Path, classes_path: Path, imagery: Path | None = None,
               **options: Any) -> tuple[LandcoverJoin, dict[str, Any]]:
    recipe = fx.recipe_dict("unused.tif")
    recipe["stages"] = [{"type": "landcover_join", "path": str(classes_path), **options}]
    config = parse_recipe(recipe, tmp_path).stages[0]
    stage = create_stage(config)
    assert isinstance(stage, LandcoverJoin)
    fps, crss = footprint(imagery or fx_path["utm_rgb"])
    ctx = RunContext(base_dir=tmp_path, state_dir=tmp_path / "state", footprints_wgs84=fps,
                     footprint_crs=crss)
    return stage, stage.prepare(ctx)


def run_stage(stage: LandcoverJoin, samples: list[Sample]) -> tuple[list[Sample], StageStats]:
    stats = StageStats(stage.name)
    worker = pickle.loads(pickle.dumps(stage))  # as an executor ships it
    kept = list(worker(iter(copy.deepcopy(samples)), stats))
    return kept, stats


def shares(landcover: dict[str, Any]) -> dict[int | None, float]:
    return {c["code"]: c["share"] for c in landcover["classes"]}


def assert_shares(got: dict[int | None, float], want: dict[int, float], tol: float,
                  what: str) -> None:
    for code in set(got) | set(want):
        assert abs(got.get(code, 0.0) - want.get(code, 0.0)) <= tol, (what, got, want)


def col_row(sample: Sample) -> tuple[int, int]:
    t = sample.meta["source"]["tile"]
    return t["col"], t["row"]


def assert_phrases_checked(meta: dict[str, Any], seeds: int = 8) -> list[str]:
    """Every phrase the generator gives (over several seeds) passes the independent checker."""
    seen = []
    for seed in range(seeds):
        for phrase in landcover_phrases(meta, random.Random(seed)):
            assert check_landcover_phrase(phrase, meta) == [], (phrase, meta["landcover"])
            seen.append(phrase)
    return seen


# --- shares on hand-computed rasters -----------------------------------------------------------
def test_utm_class_raster_at_another_resolution_gives_the_hand_computed_shares(
        tmp_path: Path) -> None:
    classes = utm_halves(tmp_path / "halves.tif", res=6.0)
    stage, report = make_stage(tmp_path, classes)
    assert report["crs"] == "EPSG:32734" and report["resolution"] == [6.0, 6.0]
    assert report["sampled_codes"].keys() == {"10", "40"} and "warnings" not in report
    kept, stats = run_stage(stage, tiles_of(fx_path["utm_rgb"]))
    assert len(kept) == 16 and stats.n_out == 16
    for sample in kept:
        col, _ = col_row(sample)
        lc = sample.meta["landcover"]
        assert lc["source"] == "halves" and lc["covered"] == 1.0
        assert lc["pixels"] == {"total": TILE * TILE, "valid": TILE * TILE}
        # the boundary falls on a tile-pixel edge and a class-pixel edge, so no tile pixel
        # straddles it (GDAL 3.10 gives the exact shares); TOL allows for rounding in the warper
        assert_shares(shares(lc), expected_halves_utm(col), TOL, sample.key)
    by_col = {col_row(s)[0]: s.meta["landcover"] for s in kept if col_row(s)[1] == 0}
    assert by_col[0]["dominant"] == "tree cover" and by_col[1]["dominant"] == "cropland"
    assert by_col[1]["classes"][0]["name"] == "cropland"  # largest share first
    tree = by_col[1]["classes"][1]
    assert abs(tree["pixels"] - 16 * TILE) <= TILE and tree["phrase"] == "tree cover"
    # the 16 tree-cover columns lie in the left third (cells: columns 0..21): most frequent there
    assert set(tree["cells"]) == {"top left", "left", "bottom left"}
    assert describe_landcover(by_col[1]) == "mostly cropland with some tree cover"  # 0.75
    assert position_phrase(by_col[1]) == "tree cover in the top left, on the left and in the bottom left"
    assert describe_landcover(by_col[0]) == "mostly tree cover"
    for sample in kept:
        assert_phrases_checked(sample.meta)


def test_mode_resampling_takes_the_majority_of_a_finer_class_raster(tmp_path: Path) -> None:
    """0.5 m classes under 2 m tile pixels: every 4 x 4 block holds one row of cropland (25%),
    at most 2 of 5 rows of any block the kernel touches, so the mode is tree cover everywhere.
    (Nearest sampling would give cropland on about a quarter of the pixels.)"""
    n = 256 * 4
    rows = np.arange(n)
    codes = np.where(rows[:, None] % 4 == 0, CROP, TREE).repeat(n, axis=1)
    path = write_classes(tmp_path / "fine.tif", codes, fx.UTM_CRS, from_origin(X0, Y0, 0.5, 0.5))
    stage, report = make_stage(tmp_path, path)
    kept, _ = run_stage(stage, tiles_of(fx_path["utm_rgb"]))
    assert abs(report["sampled_codes"]["40"] - 0.25) < 0.01  # the raster itself is 25% cropland
    for sample in kept:
        assert shares(sample.meta["landcover"]) == {TREE: 1.0}, sample.key


def test_geographic_class_raster_over_utm_tiles(tmp_path: Path) -> None:
    """Class raster in EPSG:4326; the boundary meridian runs slightly askew across the UTM
    tiles. Expected shares: the tile pixel centres, projected to lon/lat, west or east of it."""
    w, s, e, n = fx.raster_bounds_wgs84(fx_path["utm_rgb"])
    boundary = round(w + 0.4 * (e - w), 5)
    classes = geo_halves(tmp_path / "geo.tif", boundary)
    stage, report = make_stage(tmp_path, classes)
    assert report["crs"] == "EPSG:4326"
    kept, _ = run_stage(stage, tiles_of(fx_path["utm_rgb"]))
    to_geo = Transformer.from_crs(fx.UTM_CRS, fx.GEO_CRS, always_xy=True)
    mixed = 0
    for sample in kept:
        t = Affine(*sample.meta["geo"]["transform"])
        jj, ii = np.meshgrid(np.arange(TILE) + 0.5, np.arange(TILE) + 0.5)
        xs, ys = t @ (jj.ravel(), ii.ravel())
        lon, _ = to_geo.transform(xs, ys)
        west = float(np.mean(np.asarray(lon) < boundary))
        want = {c: v for c, v in ((TREE, west), (CROP, 1 - west)) if v > 0}
        lc = sample.meta["landcover"]
        assert lc["covered"] == 1.0
        assert_shares(shares(lc), want, TOL, sample.key)
        mixed += 0 < west < 1
        assert_phrases_checked(sample.meta)
    assert mixed == 4  # the boundary crosses one column of tiles, 4 rows


def test_utm_class_raster_under_geographic_tiles(tmp_path: Path) -> None:
    """Tiles in EPSG:4326 (the wgs84_rgb fixture) over a 5 m UTM class raster."""
    imagery = fx_path["wgs84_rgb"]
    with rasterio.open(imagery) as src:
        x0, y0, x1, y1 = transform_bounds(src.crs, fx.UTM_CRS, *src.bounds, densify_pts=21)
    res = 5.0
    boundary = np.floor((x0 + 0.55 * (x1 - x0)) / res) * res
    ox, oy = boundary - res * 60, np.ceil(y1 / res) * res + 100
    width = int(np.ceil((x1 + 100 - ox) / res))
    height = int(np.ceil((oy - (y0 - 100)) / res))
    cols = np.arange(width)
    codes = np.where(cols[None, :] < 60, GRASS, WATER).repeat(height, axis=0)
    path = write_classes(tmp_path / "utm5.tif", codes, fx.UTM_CRS, from_origin(ox, oy, res, res))
    stage, _ = make_stage(tmp_path, path, imagery)
    size = 80
    kept, _ = run_stage(stage, tiles_of(imagery, size))
    assert len(kept) == 9
    to_utm = Transformer.from_crs(fx.GEO_CRS, fx.UTM_CRS, always_xy=True)
    for sample in kept:
        t = Affine(*sample.meta["geo"]["transform"])
        jj, ii = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
        lon, lat = t @ (jj.ravel(), ii.ravel())
        x, _ = to_utm.transform(lon, lat)
        west = float(np.mean(np.asarray(x) < boundary))
        want = {c: v for c, v in ((GRASS, west), (WATER, 1 - west)) if v > 0}
        assert_shares(shares(sample.meta["landcover"]), want, 1 / size + ROUNDING, sample.key)
        assert_phrases_checked(sample.meta)


# --- unknown codes, partial coverage, nodata, dropping -----------------------------------------
def test_a_code_missing_from_the_class_table_is_unknown_and_warned(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    classes = utm_halves(tmp_path / "halves.tif")
    table = {"10": {"name": "forest", "phrase": "forest"}}
    stage, report = make_stage(tmp_path, classes, classes=table)
    assert any("code 40 is not in the class table" in w for w in report["warnings"])
    assert "code 40 is not in the class table" in capsys.readouterr().err
    kept, _ = run_stage(stage, tiles_of(fx_path["utm_rgb"]))
    by_col = {col_row(s)[0]: s.meta["landcover"] for s in kept if col_row(s)[1] == 2}
    assert by_col[2]["classes"] == [{"code": None, "name": "unknown", "phrase": None,
                                     "codes": [40], "share": 1.0, "pixels": TILE * TILE,
                                     "cells": [w for row in _cell_words() for w in row]}]
    assert by_col[2]["dominant"] == "unknown"
    assert shares(by_col[1]) == {None: 0.75, 10: 0.25}
    # unknown is never named: only the known class, and with its true share word
    assert describe_landcover(by_col[1]) == "some forest"
    assert describe_landcover(by_col[2]) is None and landcover_phrases({"landcover": by_col[2]}) == []
    for lc in by_col.values():
        assert_phrases_checked({"landcover": lc})
    # drop_without_landcover: a tile of unknown codes only says nothing, so it is dropped
    stage, _ = make_stage(tmp_path, classes, classes=table, drop_without_landcover=True)
    kept, stats = run_stage(stage, tiles_of(fx_path["utm_rgb"]))
    assert len(kept) == 8 and stats.dropped == {"no_landcover": 8}


def _cell_words() -> list[list[str]]:
    from rsdata.landcover.stage import CELL_WORDS

    return CELL_WORDS


def partial_raster(tmp_path: Path) -> Path:
    """8 m grassland from 64 m west of the imagery to X0 + 352 m (tile column 2 is 3/4 covered,
    column 3 not at all); the top 64 m (tile row 0's upper half) is nodata (0)."""
    res = 8.0
    ox, oy = X0 - 64.0, Y0 + 64.0
    width = int((X0 + 352.0 - ox) / res)
    height = int((oy - (Y0 - 600.0)) / res)
    codes = np.full((height, width), GRASS)
    codes[: int(128 / res)] = 0  # y in (Y0 - 64, Y0 + 64]: nodata
    return write_classes(tmp_path / "partial.tif", codes, fx.UTM_CRS, from_origin(ox, oy, res, res),
                         nodata=0)


def test_tiles_outside_or_partly_outside_the_class_raster(tmp_path: Path) -> None:
    stage, report = make_stage(tmp_path, partial_raster(tmp_path))
    assert report["nodata"] == [0]
    kept, stats = run_stage(stage, tiles_of(fx_path["utm_rgb"]))
    assert len(kept) == 16
    assert stats.extra["not_covered"] == 4
    for sample in kept:
        col, row = col_row(sample)
        lc = sample.meta["landcover"]
        want = (0.75 if col == 2 else 0.0 if col == 3 else 1.0) * (0.5 if row == 0 else 1.0)
        # a nodata or raster edge crosses the tile: one pixel per row/column either way
        assert abs(lc["covered"] - want) <= 2 * TOL, (sample.key, lc["covered"], want)
        if col == 3:
            assert lc["classes"] == [] and lc["dominant"] is None and lc["covered"] == 0.0
            assert landcover_phrases(sample.meta, random.Random(0)) == []
        else:
            assert shares(lc) == {GRASS: 1.0}  # shares are of the covered pixels
        assert_phrases_checked(sample.meta)
    by_key = {col_row(s): s.meta for s in kept}
    # 3/4 covered, all grassland: at least 0.75 of the tile is grassland -> "mostly"
    assert describe_landcover(by_key[(2, 1)]["landcover"]) == "mostly grassland"
    assert position_phrase(by_key[(2, 1)]["landcover"]) is None  # not fully covered
    # half covered: grassland is somewhere in 0.5..1.0 of the tile: no share word holds
    assert describe_landcover(by_key[(0, 0)]["landcover"]) is None

    stage, _ = make_stage(tmp_path, partial_raster(tmp_path), drop_without_landcover=True)
    kept, stats = run_stage(stage, tiles_of(fx_path["utm_rgb"]))
    assert {col_row(s)[0] for s in kept} == {0, 1, 2}
    assert stats.dropped == {"no_landcover": 4} and stats.n_in == 16 and stats.n_out == 12


def test_nodata_codes_from_the_recipe_override_the_rasters(tmp_path: Path) -> None:
    """nodata: [40] ignores cropland: only the tree-cover pixels are covered."""
    stage, report = make_stage(tmp_path, utm_halves(tmp_path / "halves.tif"), nodata=[40])
    assert report["nodata"] == [40] and set(report["sampled_codes"]) == {"10"}
    kept, _ = run_stage(stage, tiles_of(fx_path["utm_rgb"]))
    for sample in kept:
        col, _ = col_row(sample)
        lc = sample.meta["landcover"]
        assert lc["covered"] == expected_halves_utm(col).get(TREE, 0.0)
        assert shares(lc) == ({TREE: 1.0} if col < 2 else {})


def test_no_overlap_warns_or_stops_with_drop(tmp_path: Path) -> None:
    codes = np.full((50, 50), TREE)
    far = write_classes(tmp_path / "far.tif", codes, fx.UTM_CRS,
                        from_origin(X0 + 50_000, Y0, 10.0, 10.0))
    _, report = make_stage(tmp_path, far)
    assert any("covers none of the run's footprints" in w for w in report["warnings"])
    with pytest.raises(InputError, match="would drop every tile"):
        make_stage(tmp_path, far, drop_without_landcover=True)


# --- phrases and the checker -------------------------------------------------------------------
def lc_of(pixels: dict[int | None, int], total: int | None = None, table: Any = None,
          cells: dict[int, list[str]] | None = None, min_share: float = 0.05) -> dict[str, Any]:
    """A landcover dict as the stage writes it, from class -> pixel counts."""
    table = parse_class_table(table or "worldcover")
    valid = sum(pixels.values())
    total = total or valid
    codes = np.concatenate([np.full(n, -1 if c is None else c) for c, n in pixels.items()])
    valid_mask = np.ones(total, bool)
    valid_mask[valid:] = False
    full = np.concatenate([codes, np.zeros(total - valid, int)])
    shape = (1, total)
    lc = summarize(full.reshape(shape), valid_mask.reshape(shape), table, "test", min_share)
    for entry in lc["classes"]:
        if cells is not None:
            entry["cells"] = cells.get(entry["code"], [])
    return lc


CASES = [
    ({10: 900, 40: 100}, "mostly tree cover with some cropland"),
    ({40: 500, 50: 450, 30: 50}, "a mix of cropland and built-up area with some grassland"),
    ({40: 500, 10: 300, 30: 200}, None),  # largely cropland ... or a mix: both faithful
    ({30: 310, 20: 290, 60: 250, 80: 150}, "a mix of grassland, shrubland and bare or sparsely "
                                           "vegetated land with some open water"),
    ({10: 960, 40: 40}, "mostly tree cover"),  # cropland below min_share: never named
    ({None: 700, 80: 300}, "some open water"),
    ({70: 700, 40: 300}, "mostly snow and ice with some cropland"),
]


@pytest.mark.parametrize("pixels, first", CASES)
def test_phrases_on_known_compositions(pixels: dict[int | None, int], first: str | None) -> None:
    lc = lc_of(pixels)
    if first is not None:
        assert describe_landcover(lc) == first
    phrases = assert_phrases_checked({"landcover": lc}, seeds=20)
    assert phrases or first is None


def test_rng_varies_the_wording_but_never_the_claims() -> None:
    lc = lc_of({40: 500, 10: 300, 30: 200})
    seen = {describe_landcover(lc, random.Random(s)) for s in range(40)}
    assert "largely cropland with some tree cover and grassland" in seen
    # every class of 0.2 or more joins a mix
    assert {"a mix of cropland, tree cover and grassland",
            "a mixture of cropland, tree cover and grassland"} <= seen
    lc = lc_of({10: 700, 40: 300})
    seen = {describe_landcover(lc, random.Random(s)) for s in range(40)}
    assert {"mainly tree cover with some cropland", "predominantly tree cover and some cropland"} & seen


def test_countable_classes_take_their_plural() -> None:
    table = {"1": {"name": "orchard", "phrase": "orchard", "countable": True},
             "2": {"name": "dairy", "phrase": "dairy", "countable": True},
             "3": {"name": "grass", "phrase": "grass"}}
    lc = lc_of({1: 650, 2: 250, 3: 100}, table=table)
    assert describe_landcover(lc) == "mostly orchards with some dairies and grass"
    meta = {"landcover": lc}
    assert check_landcover_phrase("mostly orchards with some dairies and grass", meta) == []
    assert check_landcover_phrase("mostly dairies", meta)


def test_position_phrases() -> None:
    lc = lc_of({10: 800, 80: 200}, cells={10: ["top", "center", "left", "right", "bottom",
                                               "top left", "top right"],
                                          80: ["bottom left", "bottom right"]})
    assert position_phrase(lc) == "open water in the bottom left and in the bottom right"
    meta = {"landcover": lc}
    assert assert_phrases_checked(meta)[1] == "open water in the bottom left and in the bottom right"
    assert check_landcover_phrase("open water at the top", meta)
    assert check_landcover_phrase("open water in the bottom left", meta) == []


def test_checker_catches_what_the_numbers_do_not_support() -> None:
    meta = {"landcover": lc_of({10: 650, 40: 300, 50: 50})}
    assert check_landcover_phrase("mostly tree cover with some cropland and built-up area",
                                  meta) == []
    wrong = [
        "mostly cropland",                          # 0.3
        "largely tree cover",                       # 0.65 is mostly, not largely
        "mostly tree cover with some snow and ice",  # absent
        "a mix of tree cover and cropland",         # tree cover >= 0.6: not a mix
        "a mix of cropland",                        # one class is no mix
        "some tree cover",                          # understates 0.65
        "mostly forest",                            # not a class at all
    ]
    for text in wrong:
        assert check_landcover_phrase(text, meta), text
    # tampered numbers: the checker re-derives shares from the pixel counts
    bad = copy.deepcopy(meta)
    bad["landcover"]["classes"][1]["share"] = 0.7
    assert any("share" in p for p in check_landcover_phrase("", bad))
    bad = copy.deepcopy(meta)
    bad["landcover"]["dominant"] = "cropland"
    assert any("dominant" in p for p in check_landcover_phrase("", bad))
    # without land cover in the json, no land-cover claim holds
    assert check_landcover_phrase("mostly tree cover", {})
    # a caption around the phrase: only land-cover claims are read
    assert check_landcover_phrase("An aerial image of mostly tree cover with some cropland.",
                                  meta) == []


def test_generator_and_checker_agree_on_random_compositions() -> None:
    rng = np.random.default_rng(3)
    codes = sorted(WORLDCOVER)
    for i in range(300):
        k = int(rng.integers(1, 6))
        chosen = rng.choice(codes + [None], size=k, replace=False)  # type: ignore[operator]
        counts = rng.dirichlet(np.ones(k) * float(rng.uniform(0.2, 3))) * 4096
        pixels = {(None if c is None else int(c)): int(n) + 1 for c, n in zip(chosen, counts)}
        valid = sum(pixels.values())
        total = valid if rng.random() < 0.6 else int(valid / rng.uniform(0.3, 1.0))
        lc = lc_of(pixels, total=total, min_share=float(rng.choice([0.02, 0.05, 0.1])))
        meta = {"landcover": lc}
        for phrase in assert_phrases_checked(meta, seeds=4):
            # the same phrase with its lead share word swapped is caught when it changes meaning
            for a, b in (("mostly", "some"), ("largely", "mostly"), ("some", "mostly")):
                if phrase.startswith(a + " "):
                    swapped = b + phrase[len(a):]
                    assert check_landcover_phrase(swapped, meta), (swapped, lc)


# --- options, settings, bad input --------------------------------------------------------------
def test_settings_come_from_the_schema_and_prepare_keeps_them(tmp_path: Path) -> None:
    classes = utm_halves(tmp_path / "halves.tif")
    assert STAGES["landcover_join"] == "rsdata.landcover.stage:LandcoverJoin"
    recipe = fx.recipe_dict("unused.tif")
    recipe["stages"] = [{"type": "landcover_join", "path": str(classes)}]
    config = parse_recipe(recipe, tmp_path).stages[0]
    stage = LandcoverJoin(config)
    assert stage.settings == LandcoverSettings(path=str(classes), classes="worldcover",
                                               min_share=0.05, drop_without_landcover=False)
    assert stage.table == WORLDCOVER
    before = (copy.deepcopy(stage.config), stage.settings)
    ctx = RunContext(base_dir=tmp_path, state_dir=tmp_path / "state")
    assert stage.input_files(ctx) == [classes]
    stage.prepare(ctx)
    stage.prepare(ctx)
    assert (stage.config, stage.settings) == before
    with pytest.raises(RecipeError, match="missing option"):
        LandcoverJoin({"type": "landcover_join", "path": str(classes)})


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    codes = np.full((20, 20), TREE)
    no_crs = write_classes(tmp_path / "nocrs.tif", codes, None, from_origin(X0, Y0, 10, 10))
    with pytest.raises(InputError, match="has no CRS"):
        make_stage(tmp_path, no_crs)
    with pytest.raises(InputError, match="does not exist"):
        make_stage(tmp_path, tmp_path / "missing.tif")
    floats = write_classes(tmp_path / "float.tif", codes, fx.UTM_CRS, from_origin(X0, Y0, 10, 10),
                           dtype="float32")
    with pytest.raises(InputError, match="integer class codes"):
        make_stage(tmp_path, floats)
    text = tmp_path / "text.tif"
    text.write_text("not a raster\n")
    with pytest.raises(InputError, match="cannot read the class raster"):
        make_stage(tmp_path, text)
    good = write_classes(tmp_path / "good.tif", codes, fx.UTM_CRS, from_origin(X0, Y0, 10, 10))
    # a class that is not a mapping: the schema names the field ...
    with pytest.raises(RecipeError, match=r"stages\[0\]\.classes"):
        make_stage(tmp_path, good, classes={"10": "tree cover"})
    # ... and a hand-built config gets the stage's own words
    with pytest.raises(RecipeError, match="a class is a mapping"):
        LandcoverJoin({"type": "landcover_join", "path": "x.tif", "classes": {"10": "tree cover"},
                       "min_share": 0.05, "drop_without_landcover": False})
    for bad, match in ((
            {"10": {"name": "a", "phrase": "x"}, "20": {"name": "b", "phrase": "x"}}, "same phrase"),
            ({"ten": {"name": "a", "phrase": "a"}}, "not an integer"),
            ("corine", "not a built-in class table")):
        with pytest.raises(RecipeError, match=match):
            parse_class_table(bad)
    with pytest.raises(RecipeError, match="not a valid recipe"):
        make_stage(tmp_path, good, min_share=2)


# --- end to end --------------------------------------------------------------------------------
def three_classes(path: Path) -> Path:
    """UTM 6 m: tree cover west of BOUNDARY_X, cropland east, open water south of Y0 - 384 m
    (tile row 3) east of the boundary."""
    res = 6.0
    ox, oy = BOUNDARY_X - 30 * res, Y0 + 5 * res
    cols, rows = np.meshgrid(np.arange(100), np.arange(100))
    ys = oy - (rows + 0.5) * res
    codes = np.where(cols < 30, TREE, np.where(ys < Y0 - 384.0, WATER, CROP))
    return write_classes(path, codes, fx.UTM_CRS, from_origin(ox, oy, res, res))


def read_metas(out: Path) -> dict[str, dict[str, Any]]:
    metas = {}
    for path in shard_paths(out):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                    metas[meta["key"]] = meta
    return metas


def test_rsdata_run_with_landcover_join(tmp_path: Path) -> None:
    recipe = fx.recipe_dict(fx_path["utm_rgb"], name="landcover", size=TILE)
    recipe["stages"] = [{"type": "landcover_join", "path": "classes.tif", "id": "wc"}]
    three_classes(tmp_path / "classes.tif")
    path = fx.write_recipe(tmp_path, recipe)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    metas = read_metas(out)
    assert len(metas) == 16
    for key, meta in metas.items():
        schemas.validate("sample", meta, key)
        col, row = meta["source"]["tile"]["col"], meta["source"]["tile"]["row"]
        want = expected_halves_utm(col)
        if row == 3 and CROP in want:
            want[WATER] = want.pop(CROP)
        lc = meta["landcover"]
        assert lc["source"] == "wc"
        assert_shares(shares(lc), want, TOL, key)
        assert_phrases_checked(meta)
    manifest = load_manifest(out)
    entry = [s for s in manifest["sources"] if s["path"].endswith("classes.tif")]
    assert len(entry) == 1 and len(entry[0]["sha256"]) == 64
    stage_stats = {s["name"]: s for s in manifest["stages"]}
    assert stage_stats["landcover_join"]["in"] == 16 and stage_stats["landcover_join"]["out"] == 16
    # the class raster's checksum is part of the recipe hash: a changed raster is another corpus
    utm_halves(tmp_path / "classes.tif")
    with pytest.raises(RsdataError, match="different recipe|recipe hash|another"):
        build_plan(load_recipe(path), out)
    assert main(["run", str(path), "--out", str(tmp_path / "out2"), "--quiet"]) == 0
    assert load_manifest(tmp_path / "out2")["recipe_hash"] != manifest["recipe_hash"]


def test_rsdata_run_reports_a_missing_class_raster(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    recipe = fx.recipe_dict(fx_path["utm_rgb"], name="landcover", size=TILE)
    recipe["stages"] = [{"type": "landcover_join", "path": "nowhere.tif"}]
    path = fx.write_recipe(tmp_path, recipe)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "class raster" in capsys.readouterr().err
