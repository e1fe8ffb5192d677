"""Tests of rsdata.sources.raster: the tile grid (plan_windows), and reading tiles (RasterSource)
from the generated GeoTIFFs of tests/fixtures/rasters.py."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import rasterio
from affine import Affine
from PIL import Image
from pyproj import Geod, Transformer
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from rasterio.windows import Window

from fixtures import rasters as fx
from rsdata import schemas
from rsdata.cli import main
from rsdata.errors import InputError
from rsdata.inputs import sha256_file
from rsdata.recipe import parse_recipe
from rsdata.sample import KEY_PATTERN, Sample
from rsdata.sources.raster import (
    RasterInfo,
    RasterSource,
    TileWindow,
    plan_raster,
    plan_windows,
)
from rsdata.stats import StageStats

UTM = CRS.from_epsg(32734)
WGS84 = CRS.from_epsg(4326)
# WGS84 ellipsoid, for hand-computing metres per degree
A = 6378137.0
F = 1 / 298.257223563
E2 = F * (2 - F)


def metres_per_degree_lon(lat: float) -> float:
    """Length of one degree of longitude along the parallel at ``lat`` (WGS84)."""
    phi = math.radians(lat)
    return math.radians(1) * A * math.cos(phi) / math.sqrt(1 - E2 * math.sin(phi) ** 2)


def metres_per_degree_lat(lat: float) -> float:
    """Length of one degree of latitude along the meridian at ``lat`` (WGS84)."""
    phi = math.radians(lat)
    return math.radians(1) * A * (1 - E2) / (1 - E2 * math.sin(phi) ** 2) ** 1.5


# --- helpers ----------------------------------------------------------------------------------


def tile(path: Path, **kw: Any) -> tuple[RasterInfo, list[TileWindow], list[Sample], StageStats]:
    """Plan and read every tile of ``path`` as the recipe ``fx.recipe_dict(path, **kw)`` says."""
    recipe = parse_recipe(fx.recipe_dict(path, **kw), base_dir=path.parent)
    cfg = recipe.source
    prov = {"display_path": path.name, "sha256": sha256_file(path), "license": "CC-BY-4.0",
            "attribution": "rsdata test fixtures"}
    source = RasterSource(cfg, "raster")
    info, windows = plan_raster(cfg["rasters"][0], path, source.settings, prov)
    stats = StageStats("tile")
    samples = [s for part in source._partitions(info, windows) for s in source.read(part, stats)]
    return info, windows, samples, stats


def decode(sample: Sample) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(sample.image)).convert("RGB"))


def window_of(sample: Sample) -> Window:
    w = sample.meta["source"]["window"]
    return Window(w["col_off"], w["row_off"], w["width"], w["height"])


def tile_mask_fraction(path: Path, windows: list[TileWindow]) -> dict[tuple[int, int], float]:
    """Nodata fraction of each (native-resolution, whole-pixel) window, from the file's mask."""
    with rasterio.open(path) as src:
        mask = src.dataset_mask() > 0
    out = {}
    for w in windows:
        r0, c0 = int(round(w.row_off)), int(round(w.col_off))
        block = mask[r0:r0 + int(round(w.height)), c0:c0 + int(round(w.width))]
        out[(w.col, w.row)] = 1.0 - float(block.mean())
    return out


# --- plan_windows: projected CRSs -------------------------------------------------------------

UTM_2M = from_origin(*fx.UTM_ORIGIN, 2.0, 2.0)


# The sizes leave slack at the raster edges (no exact fits except at the native resolution),
# so the counts hold whether "metres" are the CRS's nominal metres or ground metres (the UTM
# scale factor here is 0.99963: 0.04% apart).
@pytest.mark.parametrize(
    "width, height, size, gsd, overlap, n_rows, n_cols, src",
    [
        # native 2 m, no overlap: 256/64 = 4 x 4, an exact fit
        (256, 256, 64, None, 0, 4, 4, 64.0),
        # gsd 2.5 m: 64*2.5/2 = 80 source px, stride (64-16)*2.5/2 = 60;
        # rows: floor((210-80)/60)+1 = 3, cols: floor((300-80)/60)+1 = 4
        (300, 210, 64, 2.5, 16, 3, 4, 80.0),
        # native, overlap 16: window 64, stride 48; rows floor(136/48)+1 = 3, cols floor(236/48)+1 = 5
        (300, 200, 64, None, 16, 3, 5, 64.0),
        # gsd 4 m: 128 source px; floor((260-128)/128)+1 = 2 -> 2 x 2
        (260, 260, 64, 4.0, 0, 2, 2, 128.0),
        # upsampling to 1 m: 32 source px; floor((260-32)/32)+1 = 8 -> 8 x 8
        (260, 260, 64, 1.0, 0, 8, 8, 32.0),
        # a window (64*4/2 = 128 px) bigger than the raster (100 px): no tile at all
        (100, 100, 64, 4.0, 0, 0, 0, 128.0),
        # 250 px: floor((250-128)/128)+1 = 1 row and 1 column; the rest is left out
        (250, 250, 64, 4.0, 0, 1, 1, 128.0),
    ],
)
def test_plan_windows_projected_counts(width: int, height: int, size: int, gsd: float | None,
                                       overlap: int, n_rows: int, n_cols: int, src: float) -> None:
    windows, used = plan_windows(UTM, UTM_2M, width, height, size, gsd, overlap)
    assert used == pytest.approx(gsd if gsd else 2.0, rel=1e-3)
    assert len(windows) == n_rows * n_cols
    assert {(w.col, w.row) for w in windows} == {(c, r) for r in range(n_rows) for c in range(n_cols)}
    step = src * (size - overlap) / size
    for w in windows:
        assert w.width == pytest.approx(src, rel=1e-3) and w.height == pytest.approx(src, rel=1e-3)
        assert w.col_off == pytest.approx(w.col * step, rel=1e-3)
        assert w.row_off == pytest.approx(w.row * step, rel=1e-3)


def test_plan_windows_projected_in_feet() -> None:
    """A CRS in US survey feet: 1 ftUS pixels are 0.3048006 m, so 64 px at 1.2192 m need
    64 * 1.2192 / 0.3048006 = 255.9995 source pixels."""
    crs = CRS.from_epsg(2227)  # NAD83 / California zone 3 (ftUS)
    transform = from_origin(6_000_000, 2_100_000, 1.0, 1.0)
    windows, _ = plan_windows(crs, transform, 600, 300, 64, 1.2192, 0)
    src = 64 * 1.2192 / (1200 / 3937)
    assert len(windows) == 2  # floor((600-256)/256)+1 columns, 1 row
    assert windows[0].width == pytest.approx(src, rel=1e-3)
    assert windows[0].height == pytest.approx(src, rel=1e-3)


def test_plan_windows_overlap_must_be_smaller_than_size() -> None:
    with pytest.raises(InputError, match=r"source.tile.overlap \(64\) must be smaller"):
        plan_windows(UTM, UTM_2M, 256, 256, 64, None, 64)


# --- plan_windows: geographic CRSs ------------------------------------------------------------


def expected_geographic_rows(north: float, pixel: float, width: int, height: int, size: int,
                             gsd: float) -> list[tuple[float, int]]:
    """(source width of a window, number of columns) for each row, computed by hand: rows are
    ``size*gsd`` metres tall at the raster's centre latitude; each row's windows are
    ``size*gsd`` metres wide at that row's centre latitude."""
    centre_lat = north - pixel * height / 2
    dy0 = metres_per_degree_lat(centre_lat) * pixel
    src_h = size * gsd / dy0
    n_rows = math.floor((height - src_h) / src_h + 1e-9) + 1
    rows = []
    for r in range(n_rows):
        lat = north - pixel * (r * src_h + src_h / 2)
        dx = metres_per_degree_lon(lat) * pixel
        src_w = size * gsd / dx
        n_cols = math.floor((width - src_w) / src_w + 1e-9) + 1 if src_w <= width else 0
        rows.append((src_w, n_cols))
    return rows


@pytest.mark.parametrize("north, towards_pole", [(-50.0, True), (70.0, False)])
def test_plan_windows_geographic_rows(north: float, towards_pole: bool) -> None:
    """0.01 degree pixels over 20 degrees of latitude (50-70 S, or 70-50 N), 1 km tiles.

    A degree of longitude is 71.7 km at 50 degrees and 38.2 km at 70: to cover the same 64 km,
    windows nearer the pole take more source pixels (wider windows) and fewer fit in a row.
    """
    pixel, width, height, size, gsd = 0.01, 1000, 2000, 64, 1000.0
    transform = from_origin(20.0, north, pixel, pixel)
    windows, used = plan_windows(WGS84, transform, width, height, size, gsd, 0)
    assert used == gsd
    expected = expected_geographic_rows(north, pixel, width, height, size, gsd)
    by_row: dict[int, list[TileWindow]] = {}
    for w in windows:
        by_row.setdefault(w.row, []).append(w)
    assert sorted(by_row) == list(range(len(expected)))
    # src_h = 64 km / (1.1137 km per 0.01 degree at 60 degrees) = 57.5 px: 2000 px hold 34 rows
    assert len(expected) == 34
    for r, (src_w, n_cols) in enumerate(expected):
        row = by_row[r]
        assert len(row) == n_cols
        for w in row:
            assert w.width == pytest.approx(src_w, rel=1e-6)
            assert w.height == pytest.approx(windows[0].height)
            assert w.col_off == pytest.approx(w.col * src_w, rel=1e-6)
    widths = [by_row[r][0].width for r in sorted(by_row)]
    cols = [len(by_row[r]) for r in sorted(by_row)]
    # the first row of the 50-70 S raster is centred at 50.29 S: 64 km / 712.6 m per 0.01 degree
    # = 89.8 px wide, 11 columns; its last row at 69.27 S: 161.8 px, 6 columns. The 70-50 N
    # raster starts near the pole (69.71 N: 165.3 px, 6 columns) and ends at 50.73 N (90.7 px).
    if towards_pole:
        assert all(b > a for a, b in zip(widths, widths[1:]))
        assert all(b <= a for a, b in zip(cols, cols[1:]))
        assert widths[0] == pytest.approx(89.8, abs=0.1) and widths[-1] == pytest.approx(161.8, abs=0.1)
        assert (cols[0], cols[-1]) == (11, 6)
    else:
        assert all(b < a for a, b in zip(widths, widths[1:]))
        assert all(b >= a for a, b in zip(cols, cols[1:]))
        assert widths[0] == pytest.approx(165.3, abs=0.1) and widths[-1] == pytest.approx(90.7, abs=0.1)
        assert (cols[0], cols[-1]) == (6, 11)


def test_plan_windows_geographic_tiles_cover_the_same_metres() -> None:
    """Every window of a geographic raster is size*gsd metres wide on the ground at its centre."""
    geod = Geod(ellps="WGS84")
    pixel, north = 0.01, -50.0
    transform = from_origin(20.0, north, pixel, pixel)
    windows, _ = plan_windows(WGS84, transform, 1000, 2000, 64, 1000.0, 0)
    for w in windows:
        lon0, lat = transform @ (w.col_off, w.row_off + w.height / 2)
        lon1, _ = transform @ (w.col_off + w.width, w.row_off + w.height / 2)
        _, _, metres = geod.inv(lon0, lat, lon1, lat)
        assert metres == pytest.approx(64_000, rel=1e-3)


def test_plan_windows_geographic_native_gsd() -> None:
    """Without gsd, a geographic raster keeps its resolution as sqrt(dx * dy) at its centre, and
    the windows are square on the ground (more degrees of longitude than of latitude)."""
    transform = fx.geo_transform()
    windows, used = plan_windows(WGS84, transform, 240, 240, 64, None, 0)
    lat = fx.GEO_ORIGIN[1] - fx.GEO_PIXEL * 120
    dx = metres_per_degree_lon(lat) * fx.GEO_PIXEL
    dy = metres_per_degree_lat(lat) * fx.GEO_PIXEL
    assert used == pytest.approx(math.sqrt(dx * dy), rel=1e-6)  # about 2.53 m
    assert windows[0].height == pytest.approx(64 * used / dy, rel=1e-6)
    assert windows[0].width > windows[0].height  # 2.31 m x 2.77 m pixels at 34 S


@pytest.mark.parametrize(
    "crs, transform, width, height, size, gsd, overlap",
    [
        (UTM, UTM_2M, 256, 256, 64, None, 0),
        (UTM, UTM_2M, 300, 211, 64, 2.5, 16),
        (UTM, UTM_2M, 257, 255, 48, 3.3, 7),
        (UTM, UTM_2M, 256, 256, 64, 1.0, 60),
        (WGS84, fx.geo_transform(), 240, 240, 64, None, 0),
        (WGS84, fx.geo_transform(), 240, 240, 32, 3.0, 8),
        (WGS84, from_origin(20.0, -50.0, 0.01, 0.01), 1000, 2000, 64, 1000.0, 12),
        (WGS84, from_origin(20.0, 89.0, 0.01, 0.01), 400, 90, 16, 500.0, 0),
    ],
)
def test_windows_never_exceed_the_raster(crs: CRS, transform: Affine, width: int, height: int,
                                         size: int, gsd: float | None, overlap: int) -> None:
    windows, _ = plan_windows(crs, transform, width, height, size, gsd, overlap)
    assert windows
    assert len({(w.col, w.row) for w in windows}) == len(windows)
    for w in windows:
        assert w.col_off >= 0 and w.row_off >= 0
        assert w.col_off + w.width <= width + 1e-6
        assert w.row_off + w.height <= height + 1e-6


# --- reading tiles: resolution ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, gsd",
    [("utm_rgb", 3.0), ("utm_rgb", 1.5), ("utm_uint16", 2.5), ("wgs84_rgb", 3.0),
     ("wgs84_rgb", 2.0)],
)
def test_resampling_to_target_gsd(raster_files: dict[str, Path], name: str, gsd: float) -> None:
    info, windows, samples, stats = tile(raster_files[name], size=48, gsd=gsd)
    assert windows and len(samples) == len(windows) == stats.n_out
    for s in samples:
        geo = s.meta["geo"]
        assert decode(s).shape == (48, 48, 3)
        assert geo["size"] == [48, 48]
        assert geo["gsd_m"] == pytest.approx(gsd, rel=0.01)
        assert geo["gsd_xy_m"][0] == pytest.approx(gsd, rel=0.01)
        assert geo["gsd_xy_m"][1] == pytest.approx(gsd, rel=0.01)


def ground_pixel_size(crs: CRS, transform: Affine, col: float, row: float) -> tuple[float, float]:
    """Metres on the WGS84 ellipsoid of one pixel step along a row and along a column at
    pixel (col, row), measured independently of rsdata."""
    to_wgs = Transformer.from_crs(crs, WGS84, always_xy=True)
    geod = Geod(ellps="WGS84")
    p0 = to_wgs.transform(*(transform @ (col, row)))
    px = to_wgs.transform(*(transform @ (col + 1, row)))
    py = to_wgs.transform(*(transform @ (col, row + 1)))
    return geod.inv(*p0, *px)[2], geod.inv(*p0, *py)[2]


@pytest.mark.parametrize("name, gsd", [("utm_rgb", 2.5), ("wgs84_rgb", 3.0)])
def test_gsd_is_ground_metres(raster_files: dict[str, Path], name: str, gsd: float) -> None:
    path = raster_files[name]
    with rasterio.open(path) as src:
        crs = src.crs
    _, _, samples, _ = tile(path, size=48, gsd=gsd)
    for s in samples:
        gx, gy = ground_pixel_size(crs, Affine(*s.meta["geo"]["transform"]), 24, 24)
        assert gx == pytest.approx(gsd, rel=0.01) and gy == pytest.approx(gsd, rel=0.01)


def test_gsd_of_a_web_mercator_raster_is_ground_metres(raster_files: dict[str, Path]) -> None:
    path = raster_files["webmercator_rgb"]
    _, windows, samples, _ = tile(path, size=48, gsd=2.5)
    assert samples
    for s in samples:
        gx, gy = ground_pixel_size(CRS.from_epsg(3857), Affine(*s.meta["geo"]["transform"]), 24, 24)
        assert s.meta["geo"]["gsd_m"] == pytest.approx(math.sqrt(gx * gy), rel=0.01)
        assert gx == pytest.approx(2.5, rel=0.01) and gy == pytest.approx(2.5, rel=0.01)


def test_native_gsd_of_a_geographic_raster_is_square(raster_files: dict[str, Path]) -> None:
    _, _, samples, _ = tile(raster_files["wgs84_rgb"], size=64)
    assert samples
    for s in samples:
        gx, gy = s.meta["geo"]["gsd_xy_m"]
        assert gx == pytest.approx(gy, rel=0.01)
        assert s.meta["geo"]["gsd_m"] == pytest.approx(2.53, abs=0.01)


@pytest.mark.parametrize("name, gsd", [("utm_rgb", 2.7), ("utm_rgb", 1.3), ("wgs84_rgb", 3.1)])
def test_pixels_are_where_the_transform_says(raster_files: dict[str, Path], name: str,
                                             gsd: float) -> None:
    """Each tile (fractional source windows, resampled on read) equals the source warped onto
    the tile's geo.transform; a grid shifted by one tile pixel does not."""
    from rasterio.warp import Resampling, reproject

    path = raster_files[name]
    with rasterio.open(path) as src:
        data, crs, transform = src.read().astype(np.float32), src.crs, src.transform
    _, windows, samples, _ = tile(path, size=48, gsd=gsd, overlap=5, image_format="png")
    assert any(w.col_off % 1 or w.width % 1 for w in windows)  # really fractional windows
    for s in samples[:6]:
        img = decode(s).astype(np.float32)[2:-2, 2:-2]
        tr = Affine(*s.meta["geo"]["transform"])
        diffs = []
        for shift in (0, 1):
            warped = np.zeros((3, 48, 48), np.float32)
            reproject(data, warped, src_transform=transform, src_crs=crs,
                      dst_transform=tr @ Affine.translation(shift, 0), dst_crs=crs,
                      resampling=Resampling.bilinear)
            diffs.append(np.abs(np.moveaxis(warped, 0, -1)[2:-2, 2:-2] - img).mean())
        assert diffs[0] < 1.0  # rounding to uint8 only
        assert diffs[1] > 2 * diffs[0] + 1.0


def test_resampling_does_not_blend_nodata_into_valid_pixels(raster_files: dict[str, Path]) -> None:
    """Resampled on read, pixels next to the nodata border keep their values (as a warp that
    knows the nodata value gives them) instead of being darkened by the 0s beside them."""
    from rasterio.warp import Resampling, reproject

    path = raster_files["utm_nodata_border"]
    with rasterio.open(path) as src:
        data, crs, transform = src.read(), src.crs, src.transform
    _, _, samples, _ = tile(path, size=48, gsd=3.3, max_nodata_fraction=0.5, image_format="png")
    edge = [s for s in samples if s.meta["geo"]["nodata_fraction"] > 0]
    assert edge
    for s in edge:
        img = decode(s).astype(np.float32)
        warped = np.zeros((3, 48, 48), np.float32)
        reproject(data, warped, src_transform=transform, src_crs=crs, src_nodata=0, dst_nodata=0,
                  dst_transform=Affine(*s.meta["geo"]["transform"]), dst_crs=crs,
                  resampling=Resampling.bilinear)
        warped = np.moveaxis(warped, 0, -1)
        both = (img > 0).all(-1) & (warped > 0).all(-1)
        assert both.mean() > 0.5
        assert np.abs(warped - img)[both].max() <= 1.0


# --- reading tiles: bands ---------------------------------------------------------------------


def test_single_band_is_rendered_grey(raster_files: dict[str, Path]) -> None:
    path = raster_files["utm_grey"]
    info, _, samples, _ = tile(path, image_format="png")
    assert info.render_bands == [1]
    with rasterio.open(path) as src:
        band = src.read(1)
    for s in samples:
        img = decode(s)
        assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
        w = window_of(s)  # native resolution: whole-pixel windows, copied as they are
        r0, c0 = int(w.row_off), int(w.col_off)
        assert (img[..., 0] == band[r0:r0 + 64, c0:c0 + 64]).all()
        assert s.meta["geo"]["bands"] == [1] and s.meta["geo"]["band_count"] == 1


def test_explicit_bands_pick_the_channels(raster_files: dict[str, Path]) -> None:
    path = raster_files["utm_rgb"]
    info, _, samples, _ = tile(path, bands=[3, 1, 2], image_format="png")
    assert info.render_bands == [3, 1, 2]
    with rasterio.open(path) as src:
        data = src.read()
    for s in samples:
        img = decode(s)
        w = window_of(s)
        r0, c0 = int(w.row_off), int(w.col_off)
        for channel, band in enumerate([3, 1, 2]):
            assert (img[..., channel] == data[band - 1, r0:r0 + 64, c0:c0 + 64]).all()
        assert s.meta["geo"]["bands"] == [3, 1, 2]


def test_one_explicit_band_is_grey(raster_files: dict[str, Path]) -> None:
    _, _, samples, _ = tile(raster_files["utm_rgb"], bands=[2], image_format="png")
    img = decode(samples[0])
    assert (img[..., 0] == img[..., 2]).all()
    assert samples[0].meta["geo"]["bands"] == [2]


@pytest.mark.parametrize(
    "name, bands, alpha, count",
    [("utm_rgb", [1, 2, 3], [], 3),
     ("utm_rgba", [1, 2, 3], [4], 4),        # alpha is never rendered
     ("utm_uint16", [1, 2, 3], [], 4),       # no colour interpretation: the first three bands
     ("utm_grey", [1], [], 1),
     ("utm_nodata_corner", [1], [], 1)],
)
def test_default_band_selection(raster_files: dict[str, Path], name: str, bands: list[int],
                                alpha: list[int], count: int) -> None:
    info, _, samples, _ = tile(raster_files[name])
    assert info.render_bands == bands
    assert info.alpha_bands == alpha
    assert info.band_count == count
    assert samples[0].meta["geo"]["bands"] == bands


def test_bands_beyond_the_raster_are_an_input_error(raster_files: dict[str, Path]) -> None:
    with pytest.raises(InputError, match=r"source.bands asks for band\(s\) \[5\].*3 band"):
        tile(raster_files["utm_rgb"], bands=[1, 5])


def test_alpha_band_masks_tiles(raster_files: dict[str, Path]) -> None:
    """The last 40 of 256 columns are transparent: the 4 tiles of the last column (40/64 =
    62.5% transparent) are dropped; with the threshold lifted they are black there."""
    path = raster_files["utm_rgba"]
    _, windows, samples, stats = tile(path)
    assert len(windows) == 16
    assert stats.dropped == {"nodata": 4}
    assert {s.meta["source"]["tile"]["col"] for s in samples} == {0, 1, 2}
    _, _, samples, stats = tile(path, max_nodata_fraction=1.0, image_format="png")
    assert not stats.dropped
    last = [s for s in samples if s.meta["source"]["tile"]["col"] == 3]
    assert len(last) == 4
    for s in last:
        assert s.meta["geo"]["nodata_fraction"] == pytest.approx(40 / 64)
        img = decode(s)
        assert (img[:, 64 - fx.ALPHA_STRIPE:] == 0).all()
        assert img[:, : 64 - fx.ALPHA_STRIPE].mean() > 30


# --- reading tiles: stretch -------------------------------------------------------------------


def test_uint16_percentile_stretch_spreads_0_to_255(raster_files: dict[str, Path]) -> None:
    path = raster_files["utm_uint16"]
    info, _, samples, _ = tile(path, image_format="png")
    assert info.limits is not None
    lows, highs = info.limits
    assert len(lows) == len(highs) == 3
    for lo, hi in zip(lows, highs):
        assert 300 <= lo < hi <= 2500  # the 2..98 percentiles, not the 0..4000 range
    imgs = np.stack([decode(s) for s in samples])
    for c in range(3):
        channel = imgs[..., c]
        assert channel.min() == 0 and channel.max() == 255
        assert len(np.unique(channel)) > 200
        assert 60 < channel.mean() < 200
        assert channel.std() > 40
    # 2% of the pixels are at most the low cut, 2% at least the high cut (within sampling error)
    assert 0.005 < (imgs == 0).mean() < 0.06
    assert 0.005 < (imgs == 255).mean() < 0.06


def test_uint16_without_stretch_saturates(raster_files: dict[str, Path]) -> None:
    """Why the stretch matters: clipping 300..4000 to 0..255 gives a white picture."""
    info, _, samples, _ = tile(raster_files["utm_uint16"], stretch={"mode": "none"})
    assert info.limits is None
    assert (decode(samples[0]) >= 250).mean() > 0.95


def test_percentile_limits_ignore_nodata(raster_files: dict[str, Path]) -> None:
    """15% of utm_nodata_corner is nodata (0); a stretch that counted it would start at 0."""
    info, _, _, _ = tile(raster_files["utm_nodata_corner"])
    assert info.limits is not None
    assert info.limits[0][0] >= 300


# --- reading tiles: nodata and masks ----------------------------------------------------------


@pytest.mark.parametrize("threshold, dropped", [(0.05, 12), (0.2, 4), (1.0, 0)])
def test_nodata_border_drops(raster_files: dict[str, Path], threshold: float, dropped: int) -> None:
    """An 8 px nodata border around 256 x 256 px, 64 px tiles: edge tiles are 8*64/64^2 =
    12.5% nodata, corner tiles 1 - 56^2/64^2 = 23.4%, the 4 inner tiles 0%."""
    path = raster_files["utm_nodata_border"]
    _, windows, samples, stats = tile(path, max_nodata_fraction=threshold)
    fractions = tile_mask_fraction(path, windows)
    assert sum(f > threshold for f in fractions.values()) == dropped
    assert stats.n_in == 16 and stats.n_out == 16 - dropped == len(samples)
    assert stats.dropped == ({"nodata": dropped} if dropped else {})
    for s in samples:
        t = s.meta["source"]["tile"]
        assert s.meta["geo"]["nodata_fraction"] == pytest.approx(fractions[(t["col"], t["row"])], abs=1e-5)


def test_nodata_corner_block(raster_files: dict[str, Path]) -> None:
    path = raster_files["utm_nodata_corner"]
    """A 100 x 100 px nodata block in the top-left corner, 64 px tiles: tile (0, 0) is all
    nodata, (1, 0) and (0, 1) 36/64 = 56%, (1, 1) 36*36/64^2 = 32%, the others none."""
    _, windows, samples, stats = tile(path, max_nodata_fraction=0.35, image_format="png")
    fractions = tile_mask_fraction(path, windows)
    assert fractions[(0, 0)] == 1.0
    assert fractions[(1, 0)] == fractions[(0, 1)] == pytest.approx(36 / 64)
    assert fractions[(1, 1)] == pytest.approx(36 * 36 / 64 ** 2)
    assert stats.dropped == {"nodata": sum(f > 0.35 for f in fractions.values())} == {"nodata": 3}
    s = next(s for s in samples if s.meta["source"]["tile"] == {"col": 1, "row": 1})
    img = decode(s)
    assert (img[:36, :36] == 0).all()  # nodata is black
    assert (img[36:, 36:] > 0).mean() > 0.97


def test_internal_mask_is_respected(raster_files: dict[str, Path]) -> None:
    """The GDAL mask band hides columns 0..69 (which hold ordinary values, not 0): column 0 of
    tiles is all hidden, column 1 (px 64..127) is 6/64 = 9.4% hidden."""
    path = raster_files["utm_internal_mask"]
    _, windows, samples, stats = tile(path)
    assert stats.dropped == {"nodata": 8}
    assert {s.meta["source"]["tile"]["col"] for s in samples} == {2, 3}
    _, _, samples, stats = tile(path, max_nodata_fraction=0.1, image_format="png")
    assert stats.dropped == {"nodata": 4}
    with rasterio.open(path) as src:
        raw = src.read()
    hidden = fx.MASK_BAND_WIDTH - 64
    for s in (s for s in samples if s.meta["source"]["tile"]["col"] == 1):
        assert s.meta["geo"]["nodata_fraction"] == pytest.approx(hidden / 64)
        img = decode(s)
        r0 = int(window_of(s).row_off)
        assert raw[:, r0:r0 + 64, 64:64 + hidden].min() > 0  # the file has values there ...
        assert (img[:, :hidden] == 0).all()  # ... but they are masked out
        assert (img[:, hidden:] == np.moveaxis(raw[:, r0:r0 + 64, 64 + hidden:128], 0, -1)).all()


# --- keep_geotiff -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kw",
    [("utm_rgb", {"gsd": 2.5}),
     ("utm_rgba", {"gsd": 3.0, "max_nodata_fraction": 1.0}),
     ("utm_uint16", {}),
     ("utm_nodata_border", {"max_nodata_fraction": 0.3}),
     ("utm_internal_mask", {"max_nodata_fraction": 0.5}),
     ("wgs84_rgb", {"gsd": 3.0}),
     ("utm_grey", {"size": 32, "overlap": 8})],
)
def test_keep_geotiff_round_trips(raster_files: dict[str, Path], name: str, kw: dict[str, Any]) -> None:
    path = raster_files[name]
    with rasterio.open(path) as src:
        crs, dtype, count, nodata = src.crs, src.dtypes[0], src.count, src.nodata
        colorinterp = src.colorinterp
        left, bottom, right, top = src.bounds
    kw.setdefault("size", 64)
    size = kw["size"]
    _, _, samples, _ = tile(path, keep_geotiff=True, **kw)
    assert samples
    eps = 1e-6 * max(abs(right - left), 1e-9) + 1e-9
    for s in samples:
        assert s.tif is not None
        geo = s.meta["geo"]
        with MemoryFile(s.tif) as mem, mem.open() as chip:
            assert chip.crs == crs
            assert chip.dtypes == tuple([dtype] * count)
            assert chip.count == count
            assert chip.colorinterp == colorinterp
            assert chip.nodata == nodata
            assert (chip.width, chip.height) == (size, size)
            assert list(chip.transform)[:6] == pytest.approx(geo["transform"], rel=1e-12, abs=1e-12)
            b = chip.bounds
            assert list(b) == pytest.approx(geo["bounds"], rel=1e-9, abs=1e-6)
            assert b.left >= left - eps and b.right <= right + eps
            assert b.bottom >= bottom - eps and b.top <= top + eps
            assert chip.read().dtype == np.dtype(dtype)
            valid = chip.dataset_mask() > 0
            assert 1 - valid.mean() == pytest.approx(geo["nodata_fraction"], abs=1e-4)


def test_without_keep_geotiff_there_is_no_tif(raster_files: dict[str, Path]) -> None:
    _, _, samples, _ = tile(raster_files["utm_rgb"])
    assert all(s.tif is None for s in samples)
    assert "geotiff" not in samples[0].to_wds() and "tif" not in samples[0].to_wds()


# --- metadata ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["utm_rgb", "utm_grey", "utm_uint16", "utm_nodata_border",
                                  "utm_nodata_corner", "utm_internal_mask", "utm_rgba",
                                  "wgs84_rgb", "webmercator_rgb"])
def test_sample_metadata_is_valid(raster_files: dict[str, Path], name: str) -> None:
    path = raster_files[name]
    info, windows, samples, _ = tile(path, size=48, overlap=8, keep_geotiff=True)
    assert samples
    with rasterio.open(path) as src:
        width, height = src.width, src.height
    keys = [s.key for s in samples]
    assert len(set(keys)) == len(keys)
    for s in samples:
        schemas.validate("sample", s.meta, f"sample {s.key}")
        json.loads(json.dumps(s.meta))  # plain JSON values only
        assert "." not in s.key and KEY_PATTERN.match(s.key)
        assert s.meta["key"] == s.key
        t = s.meta["source"]["tile"]
        assert s.key == f"r_{t['col']:05d}_{t['row']:05d}"
        assert s.meta["source"]["sha256"] == sha256_file(path)
        assert s.meta["source"]["license"] == "CC-BY-4.0"
        assert s.meta["synthetic"] is False
        w = s.meta["source"]["window"]
        assert w["col_off"] + w["width"] <= width + 1e-3
        assert w["row_off"] + w["height"] <= height + 1e-3
        # the transform maps the tile's corners onto its bounds
        tr = Affine(*s.meta["geo"]["transform"])
        x0, y0 = tr @ (0, 0)
        x1, y1 = tr @ (48, 48)
        assert [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)] == pytest.approx(
            s.meta["geo"]["bounds"], rel=1e-9, abs=1e-6)


def test_keys_are_sanitised_ids(raster_files: dict[str, Path]) -> None:
    _, _, samples, _ = tile(raster_files["utm_grey"], raster_id="Swellendam_3420B-2010")
    assert samples[0].key == "Swellendam_3420B-2010_00000_00000"


# --- placement on the map ---------------------------------------------------------------------


def test_utm_bounds_wgs84_are_near_swellendam(raster_files: dict[str, Path]) -> None:
    path = raster_files["utm_rgb"]
    to_wgs = Transformer.from_crs(UTM, WGS84, always_xy=True)
    with rasterio.open(path) as src:
        left, bottom, right, top = src.bounds
    (w, n) = to_wgs.transform(left, top)
    (e, s_) = to_wgs.transform(right, bottom)
    assert w == pytest.approx(20.4998, abs=1e-3) and n == pytest.approx(-33.9993, abs=1e-3)
    assert e - w == pytest.approx(512 / metres_per_degree_lon(-34.0), rel=0.01)
    assert n - s_ == pytest.approx(512 / metres_per_degree_lat(-34.0), rel=0.01)
    _, _, samples, _ = tile(path)
    for smp in samples:
        bw, bs, be, bn = smp.meta["geo"]["bounds_wgs84"]
        assert bw < be and bs < bn
        assert w - 1e-4 <= bw and be <= e + 1e-4 and s_ - 1e-4 <= bs and bn <= n + 1e-4
        # the tile centre, projected independently
        tr = Affine(*smp.meta["geo"]["transform"])
        lon, lat = to_wgs.transform(*(tr @ (32, 32)))
        assert smp.meta["geo"]["center_wgs84"] == pytest.approx([lon, lat], abs=2e-6)
        assert smp.meta["geo"]["crs"] == "EPSG:32734"
    nw = next(s for s in samples if s.meta["source"]["tile"] == {"col": 0, "row": 0})
    se = next(s for s in samples if s.meta["source"]["tile"] == {"col": 3, "row": 3})
    assert nw.meta["geo"]["bounds_wgs84"][0] == pytest.approx(w, abs=2e-5)
    assert nw.meta["geo"]["bounds_wgs84"][3] == pytest.approx(n, abs=2e-5)
    assert se.meta["geo"]["bounds_wgs84"][2] == pytest.approx(e, abs=2e-5)
    assert se.meta["geo"]["bounds_wgs84"][1] == pytest.approx(s_, abs=2e-5)


def test_geographic_bounds_wgs84_are_the_bounds(raster_files: dict[str, Path]) -> None:
    _, _, samples, _ = tile(raster_files["wgs84_rgb"], size=64)
    lon0, lat0 = fx.GEO_ORIGIN
    for s in samples:
        geo = s.meta["geo"]
        assert geo["crs"] == "EPSG:4326"
        assert geo["bounds_wgs84"] == pytest.approx(geo["bounds"], abs=1e-7)
        w, so, e, n = geo["bounds_wgs84"]
        assert lon0 - 1e-9 <= w < e <= lon0 + 240 * fx.GEO_PIXEL + 1e-9
        assert lat0 - 240 * fx.GEO_PIXEL - 1e-9 <= so < n <= lat0 + 1e-9
    nw = next(s for s in samples if s.meta["source"]["tile"] == {"col": 0, "row": 0})
    assert nw.meta["geo"]["bounds_wgs84"][0] == pytest.approx(lon0)
    assert nw.meta["geo"]["bounds_wgs84"][3] == pytest.approx(lat0)


def test_tiles_go_east_by_column_and_south_by_row(raster_files: dict[str, Path]) -> None:
    for name in ("utm_rgb", "wgs84_rgb"):
        _, _, samples, _ = tile(raster_files[name], size=64)
        centre = {(s.meta["source"]["tile"]["col"], s.meta["source"]["tile"]["row"]):
                  s.meta["geo"]["center_wgs84"] for s in samples}
        for (c, r), (lon, lat) in centre.items():
            if (c + 1, r) in centre:
                assert centre[(c + 1, r)][0] > lon
            if (c, r + 1) in centre:
                assert centre[(c, r + 1)][1] < lat


# --- end to end: shards on disk, OSM placed on the tiles ----------------------------------------


def read_shards(out: Path) -> dict[str, dict[str, bytes]]:
    manifest = json.loads((out / "manifest.json").read_text())
    entries: dict[str, dict[str, bytes]] = {}
    for shard in manifest["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                entries.setdefault(key, {})[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return entries


def test_run_writes_valid_samples_with_osm_in_the_right_tiles(
        raster_files: dict[str, Path], osm_geojson: Path, make_recipe: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    recipe = make_recipe(raster_files["utm_rgb"], osm=osm_geojson, captions=True,
                         keep_geotiff=True, partition_size=5)
    data = yaml.safe_load(recipe.read_text())  # the OSM file is complete over the whole raster
    data["stages"][0]["sources"][0]["coverage"] = list(fx.raster_bounds_wgs84(raster_files["utm_rgb"]))
    recipe.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    assert "16 samples" in capsys.readouterr().out
    entries = read_shards(out)
    assert len(entries) == 16
    tags: dict[tuple[int, int], set[str]] = {}
    for key, entry in entries.items():
        assert set(entry) == {"jpg", "json", "txt", "geotiff"}
        meta = json.loads(entry["json"])
        schemas.validate("sample", meta, key)
        assert meta["key"] == key and "." not in key
        assert entry["txt"].decode() == meta["captions"][0]["text"]
        t = meta["source"]["tile"]
        tags[(t["col"], t["row"])] = {g["tag"] for g in meta["osm"]["tags"] if g["visible"]}
    # the building sits on the raster's centre, where four tiles meet
    assert {k for k, v in tags.items() if "building=yes" in v} == {(1, 1), (2, 1), (1, 2), (2, 2)}
    # the road crosses the raster 38-40% from the top: tile row 1 (25-50%)
    assert {k for k, v in tags.items() if "highway=residential" in v} == {(c, 1) for c in range(4)}
    # farmland fills the south-west quarter, the stream runs down the east side
    farm = {k for k, v in tags.items() if "landuse=farmland" in v}
    assert {(0, 2), (0, 3), (1, 2), (1, 3)} <= farm and not farm & {(3, 0), (2, 0), (3, 1)}
    assert {k for k, v in tags.items() if "waterway=stream" in v} <= {(3, r) for r in range(4)}
