"""The raster source: plan tiles over GeoTIFFs and read them window by window.

Planning (in the driver) opens each raster once, checks it, and lays a grid of windows at the
target ground sampling distance; reading (in workers) reads one window at a time, resampled on
read, so no raster is ever held whole in memory. For geographic CRSs the grid is laid row by
row, since a degree of longitude shrinks with latitude: every tile covers the same metres.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from rsdata.errors import InputError, RecipeError
from rsdata.geo import TileGeo, bounds_wgs84, pixel_size_m
from rsdata.remote import is_url
from rsdata.render import Stretch, encode_image, percentile_limits, to_rgb8
from rsdata.sample import Sample
from rsdata.settings import from_config
from rsdata.sources.mosaic import build_vrt, is_multi, list_tiles, sidecars
from rsdata.sources.base import InputRecord, Partition, PlanContext, Source, SourcePlan, partition_id
from rsdata.stats import StageStats

STAGE_NAME = "tile"


@dataclass(frozen=True)
class TileSettings:
    size: int
    overlap: int
    resampling: str
    edge: str
    gsd: float | None = None


@dataclass(frozen=True)
class RasterSettings:
    """The ``raster`` source's options, parsed once from the schema-resolved recipe."""

    rasters: list[dict[str, Any]]
    tile: TileSettings
    stretch: dict[str, Any]
    max_nodata_fraction: float
    keep_geotiff: bool
    image_format: str
    jpeg_quality: int
    partition_size: int
    on_read_error: str
    max_tiles: int
    max_upsample: float
    bands: list[int] | None = None
    platform: str | None = None
    max_samples: int | None = None


@dataclass(frozen=True)
class TileWindow:
    """One tile: its grid position and its window in source pixels (floats)."""

    col: int
    row: int
    col_off: float
    row_off: float
    width: float
    height: float

    def window(self) -> Window:
        return Window(self.col_off, self.row_off, self.width, self.height)

    def inside(self, width: int, height: int) -> bool:
        return (self.col_off >= -1e-6 and self.row_off >= -1e-6
                and self.col_off + self.width <= width + 1e-6
                and self.row_off + self.height <= height + 1e-6)


@dataclass
class RasterInfo:
    """What workers need to know about one raster (plain data, picklable)."""

    id: str
    path: str
    display_path: str
    sha256: str
    license: str
    attribution: str
    crs_wkt: str
    crs_from_recipe: bool
    band_count: int
    dtype: str
    render_bands: list[int]
    alpha_bands: list[int]
    limits: Stretch | None = None
    nodata: list[float] | None = None  # per band (1-based band b -> nodata[b - 1]), declared in the recipe
    width: int = 0
    height: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def nodata_of(self, bands: list[int]) -> np.ndarray | None:
        if self.nodata is None:
            return None
        return np.asarray([self.nodata[b - 1] for b in bands], dtype=np.float64)


@dataclass(frozen=True)
class RasterBlock:
    """The payload of a raster partition: a block of tiles of one raster."""

    raster: RasterInfo
    tiles: list[TileWindow]


def _open(path: str, allow_remote: bool = False) -> rasterio.DatasetReader:
    if not Path(path).is_file():
        raise InputError(f"raster not found: {path}. Check the path in the recipe "
                         "(relative paths are relative to the recipe file).")
    from rsdata.gdal_env import open_local_raster

    try:
        # GDAL reads by content: a local .tif may be a VRT of /vsicurl/ sources. Without
        # allow_remote, such files are refused and GDAL gets no network access while opening.
        return open_local_raster(path, allow_remote=allow_remote)
    except RasterioIOError as exc:
        raise InputError(f"cannot open raster {path}: {exc}. The file is corrupt, truncated or "
                         "not a raster GDAL can read; re-download it or convert it to GeoTIFF.") from None


def _render_bands(src: rasterio.DatasetReader, bands: list[int] | None) -> tuple[list[int], list[int]]:
    """The bands to render as RGB, and the alpha bands."""
    interp = list(src.colorinterp)
    alpha = [i + 1 for i, c in enumerate(interp) if c == ColorInterp.alpha]
    if bands:
        bad = [b for b in bands if b > src.count]
        if bad:
            raise InputError(f"{src.name}: source.bands asks for band(s) {bad} but the raster has "
                             f"{src.count} band(s)")
        return list(bands), alpha
    rgb = [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
           if c in interp]
    if len(rgb) == 3:
        return rgb, alpha
    plain = [i for i in range(1, src.count + 1) if i not in alpha]
    return (plain[:3] if len(plain) >= 3 else plain[:1]), alpha


def _check_georeferencing(src: rasterio.DatasetReader, crs_override: str | None) -> CRS:
    if src.crs is not None:
        return src.crs
    if crs_override:
        try:
            return CRS.from_user_input(crs_override)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"source.rasters[].crs {crs_override!r} is not a CRS: {exc}") from None
    raise InputError(f"{src.name} has no CRS, so its tiles cannot be placed on the map or joined "
                     "with OpenStreetMap. Give it one in the recipe (source.rasters[].crs: "
                     "EPSG:...) or fix the file (gdal_edit.py -a_srs EPSG:...).")


def _edge_offsets(extent: float, src: float, step: float, edge: str) -> list[float]:
    """Offsets of the tiles along one axis: a regular grid, plus one tile for the remainder
    (``shift``: aligned to the far edge, overlapping its neighbour; ``pad``: continuing the grid
    past the edge, filled as nodata; ``drop``: none)."""
    if src > extent + 1e-9:
        return [0.0] if edge == "pad" else []
    n = int(math.floor((extent - src) / step + 1e-9)) + 1
    offsets = [i * step for i in range(n)]
    rest = extent - (offsets[-1] + src)
    if rest > 1e-6 * max(1.0, extent):
        if edge == "shift":
            offsets.append(extent - src)
        elif edge == "pad":
            offsets.append(n * step)
    return offsets


def plan_windows(crs: CRS, transform: Affine, width: int, height: int, size: int,
                 gsd: float | None, overlap: int, max_tiles: int | None = None,
                 max_upsample: float | None = None, name: str = "the raster",
                 edge: str = "drop") -> tuple[list[TileWindow], float]:
    """Lay tiles of ``size`` output pixels at ``gsd`` metres/pixel over a raster.

    Returns the windows (source pixel units) and the GSD used. ``edge`` decides the last
    partial column and row (see :func:`_edge_offsets`); only ``pad`` lays windows that reach
    past the raster. The tile count is checked against ``max_tiles`` *before* any window is
    made, so a small file that declares a huge raster cannot take the machine's memory.
    """
    if overlap >= size:
        raise InputError(f"source.tile.overlap ({overlap}) must be smaller than the tile size ({size})")
    cx, cy = transform @ (width / 2, height / 2)
    dx0, dy0 = pixel_size_m(crs, transform, cx, cy)
    native = math.sqrt(dx0 * dy0)
    target = gsd if gsd else native
    if max_upsample is not None and target * max_upsample < native:
        raise InputError(
            f"{name}: source.tile.gsd {target:g} m is {native / target:.0f}x finer than the raster's "
            f"native {native:.4g} m; upsampling beyond {max_upsample:g}x invents detail and multiplies "
            "the tile count. Use a coarser gsd, or raise source.max_upsample if you mean it.")
    stride = size - overlap
    src_h = size * target / dy0
    step_h = stride * target / dy0
    windows: list[TileWindow] = []
    rows = _edge_offsets(height, src_h, step_h, edge)
    if not rows:
        return windows, target
    n_rows = len(rows)
    if max_tiles is not None:
        est_cols = max(0, int(math.floor((width - size * target / dx0) / (stride * target / dx0) + 1e-9)) + 1)
        if n_rows * est_cols > max_tiles:
            raise InputError(
                f"{name}: {width} x {height} px at {target:g} m/px would make about "
                f"{n_rows * est_cols:,} tiles, more than source.max_tiles = {max_tiles:,}. Raise "
                "source.max_tiles if you mean it, or use larger tiles or a coarser gsd.")
    for row, row_off in enumerate(rows):
        if crs.is_geographic:
            x, y = transform @ (width / 2, min(row_off + src_h / 2, height))
            dx, _ = pixel_size_m(crs, transform, x, y)
        else:
            dx = dx0
        src_w = size * target / dx
        step_w = stride * target / dx
        for col, col_off in enumerate(_edge_offsets(width, src_w, step_w, edge)):
            windows.append(TileWindow(col, row, col_off, row_off, src_w, src_h))
    return windows, target


def covered_fraction(windows: list[TileWindow], width: int, height: int, grid: int = 512) -> float:
    """Share of the raster's pixels that some tile covers (on a grid of at most 512 x 512 cells)."""
    if not windows or width <= 0 or height <= 0:
        return 0.0
    gw, gh = min(grid, width), min(grid, height)
    sx, sy = gw / width, gh / height
    cover = np.zeros((gh, gw), bool)
    for w in windows:
        c0, r0 = max(0, int(round(w.col_off * sx))), max(0, int(round(w.row_off * sy)))
        c1 = min(gw, int(round((w.col_off + w.width) * sx)))
        r1 = min(gh, int(round((w.row_off + w.height) * sy)))
        cover[r0:r1, c0:c1] = True
    return round(float(cover.mean()), 4)


def _sample_limits(src: rasterio.DatasetReader, bands: list[int], windows: list[TileWindow],
                   low: float, high: float, on_error: str, nodata: np.ndarray | None = None) -> Stretch:
    """Stretch limits of the whole raster estimated from up to 25 tiles spread over it; pixels
    that are masked or equal the declared ``nodata`` do not count."""
    inside = [w for w in windows if w.inside(src.width, src.height)] or windows
    picks = inside[:: max(1, len(inside) // 25)][:25]
    chunks, masks = [], []
    for w in picks:
        win = w.window()
        try:
            chunk = src.read(bands, window=win, out_shape=(len(bands), 64, 64))
            mask = src.dataset_mask(window=win, out_shape=(64, 64)) > 0
            if nodata is not None:
                mask &= ~_is_nodata(chunk, nodata)
        except RasterioError as exc:
            if on_error == "skip":
                continue  # the tile itself will be dropped as read_error when it is read
            raise InputError(
                f"{src.name}: cannot read tile col={w.col} row={w.row} while estimating the "
                f"contrast stretch: {_gdal_reason(exc)}. The file is probably truncated or corrupt: re-download "
                "it, or set source.on_read_error: skip to drop unreadable tiles.") from None
        chunks.append(chunk)
        masks.append(mask)
    data = np.concatenate(chunks, axis=2) if chunks else np.zeros((len(bands), 1, 1))
    valid = np.concatenate(masks, axis=1) if masks else np.ones((1, 1), bool)
    return percentile_limits(data, valid, low, high)


def _is_nodata(data: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """(H, W) True where every band equals its declared nodata value."""
    return np.all(data == nodata.astype(data.dtype)[:, None, None], axis=0)


def _declared_nodata(entry: dict[str, Any], count: int, dtype: str, path: Path) -> list[float] | None:
    value = entry.get("nodata")
    if value is None:
        return None
    values = list(value) if isinstance(value, list) else [value] * count
    if len(values) != count:
        raise InputError(f"{path}: source.rasters[].nodata lists {len(values)} values but the raster "
                         f"has {count} bands; give one value, or one per band")
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    for v in values:
        if not (info.min <= v <= info.max) or (np.dtype(dtype).kind in "iu" and float(v) != int(v)):
            raise InputError(f"{path}: nodata {v!r} cannot occur in {dtype} data; give a value of "
                             "the raster's data type (e.g. 0)")
    return [float(v) for v in values]


def _border_warning(src: rasterio.DatasetReader, path: Path, windows: list[TileWindow]) -> str | None:
    """A warning when an unmasked raster has a constant 0 (or dtype-max) border: a nodata
    border without a flag, which would be rendered as black (or white) tiles. Samples up to 25
    tiles spread over the raster plus four thin strips along its edges (cheap on big rasters)."""
    W, H = src.width, src.height
    strip = max(1, min(H, W) // 64)
    edges = [Window(0, 0, W, strip), Window(0, H - strip, W, strip),
             Window(0, 0, strip, H), Window(W - strip, 0, strip, H)]
    inside = [w for w in windows if w.inside(W, H)]
    picks = [w.window() for w in inside[:: max(1, len(inside) // 25)][:25]]
    try:
        edge_px = [src.read(window=w, out_shape=(src.count, 4, 256) if w.width > w.height else
                            (src.count, 256, 4), resampling=Resampling.nearest) for w in edges]
        tile_px = [src.read(window=w, out_shape=(src.count, 32, 32), resampling=Resampling.nearest)
                   for w in picks]
    except RasterioError:
        return None
    dtype = edge_px[0].dtype
    top = np.iinfo(dtype).max if dtype.kind in "iu" else None
    for value in (0, top):
        if value is None:
            continue
        on_edge = any(bool(np.all(e == value, axis=0).any()) for e in edge_px)
        samples = [np.all(t == value, axis=0).ravel() for t in tile_px + edge_px]
        share = float(np.concatenate(samples).mean()) if samples else 0.0
        if share >= 0.05 and on_edge:
            return (f"raster {path} has no nodata value or mask, but {share:.0%} of its sampled "
                    f"pixels are exactly {value} and reach its edges: a border of nodata without a "
                    f"flag. Its tiles would be kept with nodata_fraction 0.0. If that is nodata, set "
                    f"`nodata: {value}` on the raster entry (source.rasters[]).")
    return None


def _band_warning(src: rasterio.DatasetReader, render: list[int], chosen_by_user: bool,
                  path: Path) -> str | None:
    """Warn when the rendered bands are not red, green, blue by colour interpretation."""
    if chosen_by_user or len(render) != 3:
        return None
    interp = [src.colorinterp[b - 1] for b in render]
    if interp == [ColorInterp.red, ColorInterp.green, ColorInterp.blue]:
        return None
    names = [d or f"band {b}" for d, b in zip((src.descriptions[b - 1] for b in render), render)]
    return (f"raster {path}: bands {render} ({', '.join(names)}) are rendered as red, green, blue, "
            "but their colour interpretation does not say red, green, blue; the images may come "
            "out in false colour (e.g. BGR for a file whose bands are blue, green, red). Set "
            "source.bands (e.g. [3, 2, 1]) to choose them.")


def plan_raster(entry: dict[str, Any], path: Path, cfg: RasterSettings, provenance: dict[str, str],
                allow_remote: bool = False) -> tuple[RasterInfo, list[TileWindow]]:
    """Open and check one raster of the recipe; return its info and its tile windows."""
    with _open(str(path), allow_remote=allow_remote) as src:
        crs = _check_georeferencing(src, entry.get("crs"))
        if src.transform == Affine.identity() and not src.gcps[0]:
            raise InputError(f"{path} has no geotransform (pixel coordinates only); georeference "
                             "it first (e.g. gdal_translate -a_ullr ... -a_srs ...)")
        tile = cfg.tile
        windows, _ = plan_windows(crs, src.transform, src.width, src.height, tile.size, tile.gsd,
                                  tile.overlap, cfg.max_tiles, cfg.max_upsample, name=str(path),
                                  edge=tile.edge)
        render, alpha = _render_bands(src, cfg.bands)
        nodata = _declared_nodata(entry, src.count, src.dtypes[0], path)
        warnings = [w for w in (
            _band_warning(src, render, cfg.bands is not None, path),
            None if (nodata is not None or src.nodata is not None or alpha
                     or any(m != [MaskFlags.all_valid] for m in src.mask_flag_enums))
            else _border_warning(src, path, windows)) if w]
        for w in warnings:
            print(f"rsdata: warning: {w}", file=sys.stderr)
        stretch = cfg.stretch
        mode = stretch["mode"]
        if mode == "auto":
            mode = "none" if src.dtypes[0] == "uint8" else "percentile"
        limits = None
        if mode == "percentile" and windows:
            limits = _sample_limits(src, render, windows, stretch["low"], stretch["high"],
                                    cfg.on_read_error,
                                    None if nodata is None else np.asarray([nodata[b - 1] for b in render]))
        info = RasterInfo(
            id=entry["id"], path=str(path), display_path=provenance["display_path"],
            sha256=provenance["sha256"], license=provenance["license"],
            attribution=provenance["attribution"], crs_wkt=crs.to_wkt(),
            crs_from_recipe=src.crs is None, band_count=src.count, dtype=src.dtypes[0],
            render_bands=render, alpha_bands=alpha, limits=limits, nodata=nodata,
            width=src.width, height=src.height,
            extra={"bounds_wgs84": bounds_wgs84(crs, tuple(src.bounds)), "width": src.width,
                   "height": src.height, "tiles": len(windows), "warnings": warnings},
        )
    return info, windows


def _geotiff_bytes(data: np.ndarray, crs: CRS, transform: Affine, nodata: float | None,
                   mask: np.ndarray | None, colorinterp: list[ColorInterp],
                   descriptions: list[str | None] | None = None) -> bytes:
    """The chip as a GeoTIFF: the source's dtype, CRS, transform, colour interpretation and band
    descriptions. Only a band the source calls alpha is alpha (a 4th NIR band stays undefined)."""
    from rasterio.io import MemoryFile

    count = data.shape[0]
    profile: dict[str, Any] = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
                               "count": count, "dtype": data.dtype.name, "crs": crs,
                               "transform": transform, "compress": "deflate"}
    if nodata is not None:
        profile["nodata"] = nodata
    rgb = colorinterp[:3] == [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if rgb and data.dtype == np.uint8:
        profile["photometric"] = "RGB"
    else:
        profile["photometric"] = "MINISBLACK"
    if count > 3 or (count > 1 and not rgb):
        has_alpha = ColorInterp.alpha in colorinterp[1:]
        profile["alpha"] = "YES" if has_alpha else "UNSPECIFIED"
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
            dst.colorinterp = colorinterp
            for i, desc in enumerate(descriptions or [], start=1):
                if desc:
                    dst.set_band_description(i, desc)
            if mask is not None:
                dst.write_mask(mask)
        return bytes(mem.read())


def _outside(tile: TileWindow, info: RasterInfo, size: int) -> np.ndarray:
    """(size, size) True for output pixels whose centre lies outside the raster."""
    cols = tile.col_off + (np.arange(size) + 0.5) * tile.width / size
    rows = tile.row_off + (np.arange(size) + 0.5) * tile.height / size
    return (rows[:, None] >= info.height) | (cols[None, :] >= info.width) | (rows[:, None] < 0) | (cols[None, :] < 0)


def _constant(data: np.ndarray, info: RasterInfo, read_bands: list[int]) -> bool:
    """Whether every rendered band holds one value over the whole tile."""
    idx = [read_bands.index(b) for b in info.render_bands if b in read_bands]
    flat = data[idx].reshape(len(idx), -1)
    return bool(np.all(flat == flat[:, :1]))


class RasterSource(Source):
    """GeoTIFF (any GDAL raster) windows: the ``raster`` source.

    Planning opens each raster once, checks it and lays its tile grid; reading opens the raster
    in the worker and reads the partition's windows one by one (resampled on read)."""

    type = "raster"
    stats_name = STAGE_NAME

    def __init__(self, config: dict[str, Any], source_id: str, key_prefix: str = "") -> None:
        super().__init__(config, source_id, key_prefix)
        self.settings = from_config(RasterSettings, self.config, "source",
                                    nested={"tile": TileSettings})
        self.allow_remote = False  # set by plan() from the recipe

    # -- driver ---------------------------------------------------------------------------
    def plan(self, ctx: PlanContext) -> SourcePlan:
        cfg = self.settings
        self.allow_remote = ctx.allow_remote
        ids = [e["id"] for e in cfg.rasters]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise RecipeError(f"source.rasters: ids must be unique (they prefix sample keys); repeated: {dupes}")
        out = SourcePlan(partitions=[])
        planned: list[tuple[RasterInfo, list[TileWindow]]] = []
        budget = cfg.max_samples
        for entry in cfg.rasters:
            if is_multi(entry["path"]) or (not is_url(entry["path"])
                                           and (ctx.base_dir / entry["path"]).is_dir()):
                path, provenance, records = self._plan_mosaic(entry, ctx)
            else:
                path = ctx.resolve(entry["path"])
                if not path.is_file():
                    raise InputError(f"raster not found: {path}. Check the path in the recipe "
                                     "(relative paths are relative to the recipe file).")
                prov = ctx.registry.describe(path, "imagery")
                display = entry["path"] if is_url(entry["path"]) else ctx.display(path)
                provenance = {"display_path": display, "sha256": prov.sha256, "license": prov.license,
                              "attribution": prov.attribution}
                hash_key = entry["path"] if is_url(entry["path"]) else os.path.relpath(path, ctx.base_dir)
                records = [InputRecord(hash_key, prov.sha256, prov.to_json(display))]
            info, windows = plan_raster(entry, path, cfg, provenance, ctx.allow_remote)
            if budget is not None:
                windows = windows[:budget]
                budget -= len(windows)
            out.inputs.extend(records)
            out.footprints_wgs84.append(tuple(info.extra["bounds_wgs84"]))
            out.footprint_crs.append(info.crs_wkt)
            planned.append((info, windows))
        if not any(windows for _, windows in planned):
            raise InputError(f"source {self.id}: no raster is large enough for one tile of "
                             f"{cfg.tile.size} px at {cfg.tile.gsd or 'native'} m; use smaller tiles "
                             "(source.tile.size) or a finer gsd")
        for info, windows in planned:
            if not windows:
                print(f"rsdata: warning: raster {info.id} ({info.extra['width']} x {info.extra['height']} px) "
                      "gives no tiles (smaller than one tile, or past source.max_samples)", file=sys.stderr)
            out.partitions.extend(self._partitions(info, windows))
            out.report[info.id] = {
                "tiles": len(windows), "width": info.width, "height": info.height,
                "edge": cfg.tile.edge, "covered_fraction": covered_fraction(windows, info.width, info.height),
                "nodata": info.nodata, "warnings": info.extra["warnings"]}
        return out

    def _plan_mosaic(self, entry: dict[str, Any], ctx: PlanContext
                     ) -> tuple[Path, dict[str, str], list[InputRecord]]:
        """A folder or glob of tiles: hash and check every tile (and its georeferencing
        sidecars), then read them through one VRT (see :mod:`rsdata.sources.mosaic`)."""
        import hashlib

        files = list_tiles(entry["path"], ctx.base_dir)
        records: list[InputRecord] = []
        listing = hashlib.sha256()
        licenses, attributions, manifests = set(), set(), set()
        total = 0
        for f in files:
            prov = ctx.registry.describe(f, "imagery")
            licenses.add(prov.license)
            attributions.add(prov.attribution)
            manifests.add(prov.manifest)
            total += prov.bytes
            rel = os.path.relpath(f, ctx.base_dir)
            records.append(InputRecord(rel, prov.sha256, None))
            listing.update(f"{rel} {prov.sha256}\n".encode())
            for side in sidecars(f):  # georeferencing lives there: it is part of the input
                digest = ctx.registry.describe(side, "other").sha256
                records.append(InputRecord(os.path.relpath(side, ctx.base_dir), digest, None))
                listing.update(f"{os.path.relpath(side, ctx.base_dir)} {digest}\n".encode())
        vrt = build_vrt(files, ctx.allow_remote)
        sha = listing.hexdigest()
        license = licenses.pop() if len(licenses) == 1 else "mixed: " + ", ".join(sorted(licenses))
        attribution = attributions.pop() if len(attributions) == 1 else "; ".join(sorted(attributions))
        display = f"{entry['path']} ({len(files)} files)"
        records.append(InputRecord("", sha, {
            "path": display, "role": "imagery", "sha256": sha, "bytes": total, "license": license,
            "attribution": attribution,
            "manifest": manifests.pop() if len(manifests) == 1 else None}))
        provenance = {"display_path": display, "sha256": sha, "license": license,
                      "attribution": attribution}
        return vrt, provenance, records

    def _partitions(self, info: RasterInfo, windows: list[TileWindow]) -> list[Partition]:
        size = self.settings.partition_size
        prefix = [self.id] if self.key_prefix else []
        return [Partition(id=partition_id(*prefix, info.id, i // size), source=self.id,
                          size=len(windows[i:i + size]),
                          payload=RasterBlock(info, windows[i:i + size]))
                for i in range(0, len(windows), size)]

    # -- worker ---------------------------------------------------------------------------
    def read(self, partition: Partition, stats: StageStats) -> Iterator[Sample]:
        block: RasterBlock = partition.payload
        info = block.raster
        crs = CRS.from_wkt(info.crs_wkt)
        geo = TileGeo(crs)
        keep = self.settings.keep_geotiff
        with _open(info.path, allow_remote=self.allow_remote) as src:
            read_bands = list(range(1, info.band_count + 1)) if keep else info.render_bands
            for tile in block.tiles:
                stats.n_in += 1
                sample = self._read_tile(src, geo, info, tile, read_bands, stats)
                if sample is not None:
                    stats.n_out += 1
                    yield sample

    def _read_tile(self, src: rasterio.DatasetReader, geo: TileGeo, info: RasterInfo,
                   tile: TileWindow, read_bands: list[int], stats: StageStats) -> Sample | None:
        cfg = self.settings
        win = Window(tile.col_off, tile.row_off, tile.width, tile.height)
        size = cfg.tile.size
        padded = not tile.inside(info.width, info.height)  # edge: pad reaches past the raster
        nodata = info.nodata_of(read_bands)
        try:
            data = src.read(read_bands, window=win, out_shape=(len(read_bands), size, size),
                            resampling=Resampling[cfg.tile.resampling], boundless=padded,
                            fill_value=None if nodata is None else nodata[0])
            mask = src.dataset_mask(window=win, out_shape=(size, size), boundless=padded)
            if padded:  # what lies past the raster is nodata, whatever the fill value
                mask = mask.copy()
                mask[_outside(tile, info, size)] = 0
            if nodata is not None:
                mask = np.where(_is_nodata(data, nodata), 0, mask)
        except RasterioError as exc:
            if cfg.on_read_error == "skip":
                stats.drop("read_error")
                return None
            raise InputError(
                f"{info.display_path}: cannot read tile col={tile.col} row={tile.row} "
                f"(window {win}): {_gdal_reason(exc)}. The file is probably truncated or corrupt: re-download "
                "it, or set source.on_read_error: skip to drop unreadable tiles.") from None
        valid = mask > 0
        nodata_fraction = 1.0 - float(valid.mean())
        if nodata_fraction > cfg.max_nodata_fraction:
            stats.drop("nodata")
            return None
        if _constant(data, info, read_bands):
            stats.drop("blank")  # one value everywhere: an unflagged blank, nothing to describe
            return None
        if cfg.keep_geotiff:
            render = data[[read_bands.index(b) for b in info.render_bands]]
        else:
            render = data
        rgb = to_rgb8(render, valid, info.limits)
        transform = window_transform(win, src.transform) @ Affine.scale(tile.width / size,
                                                                         tile.height / size)
        bounds = _corner_bounds(transform, size)
        cx, cy = transform @ (size / 2, size / 2)
        gx, gy = geo.pixel_size_m(transform, cx, cy)
        wgs = geo.bounds_wgs84(bounds)
        key = self.key(f"{info.id}_{tile.col:05d}_{tile.row:05d}")
        source: dict[str, Any] = {
                "type": "raster", "id": info.id, "path": info.display_path, "sha256": info.sha256,
                "license": info.license, "attribution": info.attribution,
                "window": {"col_off": round(tile.col_off, 3), "row_off": round(tile.row_off, 3),
                           "width": round(tile.width, 3), "height": round(tile.height, 3)},
                "tile": {"col": tile.col, "row": tile.row},
        }
        if cfg.platform:
            source["platform"] = cfg.platform
        meta: dict[str, Any] = {
            "schema_version": 1,
            "key": key,
            "synthetic": False,
            "origin": {"type": "raster", "source": self.id},
            "source": source,
            "geo": {
                "crs": geo.name, "crs_from_recipe": info.crs_from_recipe,
                "bounds": [round(float(b), 9) for b in bounds],
                "bounds_wgs84": [round(b, 7) for b in wgs],
                "center_wgs84": [round((wgs[0] + wgs[2]) / 2, 7), round((wgs[1] + wgs[3]) / 2, 7)],
                "transform": [float(v) for v in list(transform)[:6]],
                "gsd_m": round(math.sqrt(gx * gy), 4), "gsd_xy_m": [round(gx, 4), round(gy, 4)],
                "size": [size, size], "bands": info.render_bands, "band_count": info.band_count,
                "dtype": info.dtype, "nodata_fraction": round(nodata_fraction, 5),
            },
            "captions": [],
            "scores": {},
        }
        tif = None
        if cfg.keep_geotiff:
            for band in info.alpha_bands:  # resampled alpha agrees with the tile's mask
                i = read_bands.index(band)
                data[i] = np.where(valid, np.maximum(data[i], 1), 0).astype(data.dtype)
            declared = None if info.nodata is None else info.nodata[0]
            tif = _geotiff_bytes(data, geo.crs, transform, src.nodata if declared is None else declared,
                                 None if (src.nodata is not None or declared is not None
                                          or info.alpha_bands) else mask,
                                 list(src.colorinterp), list(src.descriptions))
        return Sample(key=key, image=encode_image(rgb, cfg.image_format, cfg.jpeg_quality),
                      image_format=cfg.image_format, meta=meta, tif=tif)


def _gdal_reason(exc: BaseException) -> str:
    """GDAL's own words for a read error (rasterio puts them in the cause)."""
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc).strip().rstrip(".")
    return text or type(exc).__name__


def _corner_bounds(transform: Affine, size: int) -> tuple[float, float, float, float]:
    xs, ys = zip(*(transform @ (c, r) for c, r in ((0, 0), (size, 0), (0, size), (size, size))))
    return min(xs), min(ys), max(xs), max(ys)
