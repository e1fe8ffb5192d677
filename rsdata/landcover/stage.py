"""The ``landcover_join`` stage: per-tile class shares from a classified raster.

    stages:
      - type: landcover_join
        path: ../data/worldcover_swellendam.tif   # any CRS and resolution
        classes: worldcover                       # or a table code -> {name, phrase, ...}
        min_share: 0.05                           # below: not "present"
        drop_without_landcover: false             # true: drop tiles it says nothing about

For every tile the class raster is resampled by **mode** onto the tile's own pixel grid (its CRS,
transform and size from ``meta.geo``) through a GDAL warped VRT, so a 10 m WorldCover tile in
EPSG:4326 serves 0.3 m imagery in UTM as well as 30 m imagery in a national CRS. The tile gets
``meta.landcover``::

    {"source": "worldcover", "covered": 1.0, "min_share": 0.05,
     "pixels": {"total": 4096, "valid": 4096},
     "classes": [{"code": 10, "name": "tree cover", "phrase": "tree cover", "countable": false,
                  "share": 0.75, "pixels": 3072, "cells": ["left", "center", ...]}, ...],
     "dominant": "tree cover"}

``covered`` is the share of the tile's pixels that hold a valid class (inside the raster, not
nodata); ``share`` is of those covered pixels; classes come largest share first; ``cells`` are
the 3x3 grid cells (words as in ``osm_join``) where the class is the most frequent one. Codes
the class table lacks are counted together as one ``{"code": null, "name": "unknown",
"codes": [...]}`` entry, and ``prepare`` warns about each such code it finds in a sample of the
raster over the run's footprints. ``drop_without_landcover`` drops (reason ``no_landcover``) tiles
without a pixel of a known class: outside the raster, all nodata or all unknown codes. The stage's
counters (``partly_covered``, ``not_covered``, ``without_geo``) go into the run's stage stats.

Along a class boundary GDAL's mode kernel counts every source pixel a tile pixel touches (ties to
the first), so a tile pixel straddling the boundary may take either class: at most one pixel per
tile row (or column) per boundary. Phrases for captions: :mod:`rsdata.landcover.phrases`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rsdata.errors import InputError
from rsdata.landcover.classes import LandcoverClass, parse_class_table
from rsdata.sample import Sample
from rsdata.settings import from_config
from rsdata.stage import RunContext, Stage
from rsdata.stats import StageStats

NO_LANDCOVER = "no_landcover"
UNKNOWN = "unknown"
SAMPLE_SIDE = 1024  # prepare() samples the raster's codes on at most this many pixels a side
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
CELL_WORDS = [[f"{r} {c}" for c in COLS] for r in ROWS]
CELL_WORDS[0][1], CELL_WORDS[1][0], CELL_WORDS[1][1], CELL_WORDS[1][2], CELL_WORDS[2][1] = (
    "top", "left", "center", "right", "bottom")


@dataclass(frozen=True)
class LandcoverSettings:
    """The ``landcover_join`` stage's options (``$defs.landcover_join`` of the recipe schema)."""

    path: str
    classes: Any  # "worldcover" or a table code -> {name, phrase, countable, category, plural}
    min_share: float
    drop_without_landcover: bool
    id: str | None = None  # how sample jsons name the source; default: the file's stem
    nodata: int | list[int] | None = None  # codes to ignore; default: the raster's nodata


class LandcoverJoin(Stage):
    name = "landcover_join"
    settings_class: ClassVar[type | None] = LandcoverSettings

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.settings = from_config(LandcoverSettings, self.config, "landcover_join")
        self.table: dict[int, LandcoverClass] = parse_class_table(self.settings.classes)
        self.source_name = self.settings.id or Path(self.settings.path).name.split(".")[0]
        # set by prepare(): the resolved raster path and the codes to ignore
        self.raster_path: str | None = None
        self.allow_remote = False
        self.ignore: list[int] = []
        self.init_lazy()

    def init_lazy(self) -> None:
        self._lazy_src: Any = None

    # -- driver side ----------------------------------------------------------------------------
    def input_files(self, ctx: RunContext) -> list[Path]:
        path = ctx.resolve(self.settings.path)
        if not path.is_file():
            raise InputError(f"landcover_join: the class raster {path} does not exist (path, "
                             "relative to the recipe file)")
        return [path]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        path = self.input_files(ctx)[0]
        self.raster_path = str(path)
        self.allow_remote = ctx.allow_remote
        self._close()
        src = self._open(path, ctx.allow_remote)
        try:
            return self._check(src, path, ctx)
        finally:
            src.close()

    def _open(self, path: Path, allow_remote: bool = False) -> Any:
        from rasterio.errors import RasterioIOError

        from rsdata.gdal_env import open_local_raster

        try:
            src = open_local_raster(str(path), allow_remote=allow_remote)
        except RasterioIOError as exc:
            raise InputError(f"landcover_join: cannot read the class raster {path}: {exc}. Give a "
                             "GeoTIFF (or another raster GDAL reads) of integer class codes") from None
        if src.crs is None:
            src.close()
            raise InputError(f"landcover_join: the class raster {path} has no CRS, so its pixels "
                             "cannot be placed on the tiles; give it one (e.g. gdal_edit.py -a_srs "
                             "EPSG:4326 FILE for ESA WorldCover)")
        if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            dtype = src.dtypes[0]
            src.close()
            raise InputError(f"landcover_join: the class raster {path} holds {dtype} values; a "
                             "class raster holds integer class codes (ESA WorldCover: uint8)")
        return src

    def _check(self, src: Any, path: Path, ctx: RunContext) -> dict[str, Any]:
        from rasterio.warp import transform_bounds

        cfg = self.settings
        if cfg.nodata is not None:
            self.ignore = [int(v) for v in (cfg.nodata if isinstance(cfg.nodata, list)
                                            else [cfg.nodata])]
        else:
            self.ignore = [int(src.nodata)] if src.nodata is not None else []
        warnings: list[str] = []
        if src.count > 1:
            warnings.append(f"landcover_join: {path.name} has {src.count} bands; band 1 holds the "
                            "class codes")
        bounds_wgs84 = tuple(transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21))
        footprints = [tuple(float(v) for v in b) for b in ctx.footprints_wgs84]
        overlapping = [b for b in footprints if _intersects(b, bounds_wgs84)]
        if footprints and not overlapping:
            msg = (f"landcover_join: the class raster {path.name} (CRS {_crs_name(src.crs)}, "
                   f"WGS84 extent {_rounded(bounds_wgs84)}) covers none of the run's footprints "
                   f"{[_rounded(b) for b in footprints]}; no tile gets land cover from it")
            if cfg.drop_without_landcover:
                raise InputError(msg + ", and drop_without_landcover: true would drop every tile. "
                                 "Use a class raster that overlaps the imagery (check its CRS).")
            warnings.append(msg)
        counts = self._sample_codes(src, overlapping)
        sampled = int(sum(counts.values()))
        for code in sorted(c for c in counts if c not in self.table):
            warnings.append(
                f"landcover_join: code {code} is not in the class table ({counts[code] / sampled:.1%}"
                f" of the sampled pixels of {path.name}); its pixels are counted as '{UNKNOWN}'. "
                f"Add it to classes: '{code}': {{name: ..., phrase: ...}}")
        for msg in warnings:
            print(f"rsdata: warning: {msg}", file=sys.stderr)
        res = src.res
        report: dict[str, Any] = {
            "source": self.source_name, "path": _display(path, ctx.base_dir),
            "crs": _crs_name(src.crs), "resolution": [float(res[0]), float(res[1])],
            "size": [src.width, src.height], "bounds_wgs84": _rounded(bounds_wgs84),
            "nodata": self.ignore,
            "classes": "worldcover" if cfg.classes == "worldcover" else len(self.table),
            "sampled_codes": {str(c): round(n / sampled, 4) for c, n in sorted(counts.items())}
            if sampled else {},
        }
        if warnings:
            report["warnings"] = warnings
        return report

    def _sample_codes(self, src: Any, footprints: list[tuple[float, ...]]) -> dict[int, int]:
        """Codes (and their pixel counts) in a decimated read of the raster over the footprints
        (the whole raster when the run declares none)."""
        from rasterio.enums import Resampling
        from rasterio.warp import transform_bounds
        from rasterio.windows import Window, from_bounds

        windows = []
        full = (0.0, 0.0, float(src.width), float(src.height))
        for b in footprints or [None]:
            if b is None:
                windows.append(full)
                continue
            x0, y0, x1, y1 = transform_bounds("EPSG:4326", src.crs, *b, densify_pts=21)
            win = from_bounds(x0, y0, x1, y1, src.transform)
            c0 = max(0.0, min(win.col_off, win.col_off + win.width))
            r0 = max(0.0, min(win.row_off, win.row_off + win.height))
            c1 = min(float(src.width), max(win.col_off, win.col_off + win.width))
            r1 = min(float(src.height), max(win.row_off, win.row_off + win.height))
            if c1 > c0 and r1 > r0:
                windows.append((c0, r0, c1, r1))
        counts: dict[int, int] = {}
        for c0, r0, c1, r1 in windows:
            c0, r0 = int(np.floor(c0)), int(np.floor(r0))
            c1, r1 = int(np.ceil(c1)), int(np.ceil(r1))
            w, h = c1 - c0, r1 - r0
            scale = max(1.0, max(w, h) / SAMPLE_SIDE)
            shape = (max(1, int(round(h / scale))), max(1, int(round(w / scale))))
            win = Window(c0, r0, w, h)
            data = src.read(1, window=win, out_shape=shape, resampling=Resampling.nearest)
            valid = src.read_masks(1, window=win, out_shape=shape,
                                   resampling=Resampling.nearest) > 0
            values = data[valid & ~np.isin(data, self.ignore)]
            codes, n = np.unique(values, return_counts=True)
            for code, k in zip(codes.tolist(), n.tolist()):
                counts[int(code)] = counts.get(int(code), 0) + int(k)
        return counts

    # -- worker side ----------------------------------------------------------------------------
    def _source(self) -> Any:
        if self._lazy_src is None:
            if self.raster_path is None:
                raise RuntimeError("LandcoverJoin.prepare() must run before the stage is used")
            self._lazy_src = self._open(Path(self.raster_path), self.allow_remote)
        return self._lazy_src

    def _close(self) -> None:
        if self._lazy_src is not None:
            self._lazy_src.close()
            self._lazy_src = None

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        drop = self.settings.drop_without_landcover
        for sample in samples:
            stats.n_in += 1
            geo = sample.meta.get("geo")
            if not geo or "transform" not in geo:
                stats.extra["without_geo"] += 1
                if drop:
                    stats.drop(NO_LANDCOVER)
                    continue
                stats.n_out += 1
                yield sample
                continue
            landcover = self.join(geo)
            sample.meta["landcover"] = landcover
            if landcover["covered"] < 1:
                stats.extra["partly_covered" if landcover["covered"] > 0 else "not_covered"] += 1
            if drop and not any(c["code"] is not None for c in landcover["classes"]):
                stats.drop(NO_LANDCOVER)
                continue
            stats.n_out += 1
            yield sample

    def read_tile(self, geo: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The class codes resampled (mode) onto the tile's grid, and where they are valid."""
        from affine import Affine
        from rasterio.crs import CRS
        from rasterio.enums import ColorInterp, Resampling
        from rasterio.vrt import WarpedVRT

        src = self._source()
        width, height = (int(v) for v in geo["size"])
        transform = Affine(*geo["transform"][:6])
        crs = CRS.from_user_input(geo["crs"])
        # an alpha band marks where the warp found source pixels (outside: 0), with or without
        # a nodata value in the class raster
        add_alpha = ColorInterp.alpha not in src.colorinterp
        with WarpedVRT(src, crs=crs, transform=transform, width=width, height=height,
                       resampling=Resampling.mode, add_alpha=add_alpha) as vrt:
            codes = vrt.read(1)
            valid = vrt.read_masks(1) > 0
        if self.ignore:
            valid &= ~np.isin(codes, self.ignore)
        return codes, valid

    def join(self, geo: dict[str, Any]) -> dict[str, Any]:
        """The ``landcover`` member of a tile's json (see the module docstring)."""
        codes, valid = self.read_tile(geo)
        return summarize(codes, valid, self.table, self.source_name, self.settings.min_share)


def summarize(codes: np.ndarray, valid: np.ndarray, table: dict[int, LandcoverClass],
              source: str, min_share: float) -> dict[str, Any]:
    """Class shares, pixel counts and dominant cells of one tile's resampled class codes."""
    height, width = codes.shape
    total = int(codes.size)
    n_valid = int(valid.sum())
    out: dict[str, Any] = {"source": source, "covered": round(n_valid / total, 4) if total else 0.0,
                           "min_share": min_share, "pixels": {"total": total, "valid": n_valid},
                           "classes": [], "dominant": None}
    if not n_valid:
        return out
    present, inverse = np.unique(codes[valid], return_inverse=True)
    # one label per class: known codes keep their own, every unknown code shares one
    known = [int(c) in table for c in present.tolist()]
    keys: list[int | None] = sorted({int(c) for c, k in zip(present.tolist(), known) if k})
    if not all(known):
        keys.append(None)
    label_of_code = np.array([keys.index(int(c)) if k else len(keys) - 1
                              for c, k in zip(present.tolist(), known)])
    labels = np.full(codes.shape, -1, np.int64)
    labels[valid] = label_of_code[inverse.ravel()]
    pixels = np.bincount(labels[valid], minlength=len(keys))
    # the 3x3 grid: pixel (row, col) lies in cell (3 * (row + .5) // h, 3 * (col + .5) // w)
    rows = (3 * (np.arange(height) + 0.5) // height).astype(int)
    cols = (3 * (np.arange(width) + 0.5) // width).astype(int)
    cell = rows[:, None] * 3 + cols[None, :]
    per_cell = np.zeros((9, len(keys)), np.int64)
    np.add.at(per_cell, (cell[valid], labels[valid]), 1)
    order = sorted(range(len(keys)), key=lambda i: (-int(pixels[i]), keys[i] is None,
                                                    keys[i] if keys[i] is not None else 0))
    rank = {i: r for r, i in enumerate(order)}
    cells: dict[int, list[str]] = {i: [] for i in range(len(keys))}
    for k in range(9):
        counts = per_cell[k]
        if counts.sum() == 0:
            continue
        best = max(range(len(keys)), key=lambda i: (int(counts[i]), -rank[i]))
        cells[best].append(CELL_WORDS[k // 3][k % 3])
    unknown_codes = [int(c) for c, k in zip(present.tolist(), known) if not k]
    for i in order:
        key = keys[i]
        if key is None:
            entry: dict[str, Any] = {"code": None, "name": UNKNOWN, "phrase": None,
                                     "codes": unknown_codes}
        else:
            cls = table[key]
            entry = {"code": key, "name": cls.name, "phrase": cls.phrase,
                     "countable": cls.countable}
            if cls.countable:
                entry["plural"] = cls.noun
            if cls.category:
                entry["category"] = cls.category
        entry["share"] = round(int(pixels[i]) / n_valid, 4)
        entry["pixels"] = int(pixels[i])
        entry["cells"] = cells[i]
        out["classes"].append(entry)
    out["dominant"] = out["classes"][0]["name"]
    return out


def _intersects(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _rounded(b: tuple[float, ...]) -> list[float]:
    return [round(float(v), 6) for v in b]


def _crs_name(crs: Any) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]


def _display(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)
