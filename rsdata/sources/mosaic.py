"""Many small rasters read as one: a raster entry whose ``path`` is a folder or a glob.

Tiled deliveries (OpenAerialMap slippy tiles, drone orthomosaics cut in blocks, a scene in
granules) are common; users should not have to mosaic them by hand. The plan lists the files,
checks that they can form one mosaic (same CRS, band count and data type), and writes a GDAL
VRT over them into a content-addressed cache (``$RSDATA_CACHE/mosaics``, default
``~/.cache/rsdata/mosaics``): the file list, sizes and georeferencing (sidecars included) name
it, so the same tiles always give the same VRT and a changed tile a new one. The VRT carries a
mask band built from the tiles' own masks, so gaps between tiles are nodata, not black.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from rsdata.atomic import atomic_write_bytes
from rsdata.errors import InputError

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt")
SIDECARS = (".aux.xml", ".ovr", ".msk")
MAX_TILES = 100_000


def is_multi(path: str) -> bool:
    """Whether a raster entry's ``path`` names several files (a glob pattern)."""
    return any(c in path for c in "*?[")


def list_tiles(spec: str, base_dir: Path) -> list[Path]:
    """The files a folder or a glob names (relative to ``base_dir``), sorted; a clear error
    when it names none."""
    pattern = spec if os.path.isabs(spec) else str(base_dir / spec)
    if os.path.isdir(pattern):
        files = [p for p in sorted(Path(pattern).iterdir()) if p.suffix.lower() in RASTER_SUFFIXES]
    else:
        files = [Path(p) for p in sorted(glob.glob(pattern)) if Path(p).is_file()]
    if not files:
        raise InputError(f"source.rasters[].path {spec!r} names no raster files (looked in {pattern}); "
                         "give a folder of GeoTIFFs, a glob such as tiles/*.tif, or one file")
    if len(files) > MAX_TILES:
        raise InputError(f"{spec!r} names {len(files):,} files, more than {MAX_TILES:,}; build a VRT "
                         "yourself (gdalbuildvrt) and point the recipe at it")
    return files


def sidecars(path: Path) -> list[Path]:
    return [Path(str(path) + s) for s in SIDECARS if Path(str(path) + s).is_file()]


@dataclass(frozen=True)
class TileFacts:
    path: Path
    crs_wkt: str
    transform: tuple[float, ...]
    width: int
    height: int
    count: int
    dtype: str
    colorinterp: tuple[str, ...]


def _facts(path: Path, allow_remote: bool) -> TileFacts:
    from rasterio.errors import RasterioIOError

    from rsdata.gdal_env import open_local_raster

    try:
        with open_local_raster(str(path), allow_remote=allow_remote) as src:
            if src.crs is None:
                raise InputError(f"{path} has no CRS (a mosaic tile needs one; keep its .aux.xml "
                                 "sidecar next to it)")
            if abs(src.transform.b) > 1e-12 or abs(src.transform.d) > 1e-12:
                raise InputError(f"{path} is rotated; mosaics of rotated tiles are not supported: "
                                 "warp it first (gdalwarp)")
            return TileFacts(path, src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height,
                             src.count, src.dtypes[0], tuple(c.name for c in src.colorinterp))
    except RasterioIOError as exc:
        raise InputError(f"cannot open mosaic tile {path}: {exc}. The file is corrupt or not a "
                         "raster; remove it from the folder or re-download it") from None


def mosaic_digest(files: list[Path]) -> str:
    """Identity of a set of tiles: names, sizes, mtimes of each file and its sidecars."""
    h = hashlib.sha256()
    for f in files:
        for p in [f, *sidecars(f)]:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("RSDATA_CACHE", Path.home() / ".cache" / "rsdata")) / "mosaics"


def build_vrt(files: list[Path], allow_remote: bool = False) -> Path:
    """Write (or reuse) the VRT over ``files``; returns its path."""
    target = cache_dir() / f"{mosaic_digest(files)[:32]}.vrt"
    if target.is_file():
        return target
    facts = [_facts(f, allow_remote) for f in files]
    first = facts[0]
    for f in facts[1:]:
        for what, a, b in (("CRS", f.crs_wkt, first.crs_wkt), ("band count", f.count, first.count),
                           ("data type", f.dtype, first.dtype)):
            if a != b:
                raise InputError(f"mosaic tiles differ in {what}: {f.path.name} vs {first.path.name}; "
                                 "tiles of one raster entry must share CRS, bands and data type "
                                 "(give them separate entries, or warp them to one CRS first)")
    res_x = sorted(abs(f.transform[0]) for f in facts)[len(facts) // 2]
    res_y = sorted(abs(f.transform[4]) for f in facts)[len(facts) // 2]
    lefts = [f.transform[2] for f in facts]
    tops = [f.transform[5] for f in facts]
    rights = [f.transform[2] + f.width * f.transform[0] for f in facts]
    bottoms = [f.transform[5] + f.height * f.transform[4] for f in facts]
    minx, maxy = min(lefts), max(tops)
    width = int(math.ceil((max(rights) - minx) / res_x - 1e-6))
    height = int(math.ceil((maxy - min(bottoms)) / res_y - 1e-6))
    dtype = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
             "int32": "Int32", "float32": "Float32", "float64": "Float64"}.get(first.dtype)
    if dtype is None:
        raise InputError(f"mosaic tiles of data type {first.dtype} are not supported")
    interp = {"red": "Red", "green": "Green", "blue": "Blue", "alpha": "Alpha", "gray": "Gray"}

    def sources(band: str) -> str:
        out = []
        for f in facts:
            x = (f.transform[2] - minx) / res_x
            y = (maxy - f.transform[5]) / res_y
            w = f.width * abs(f.transform[0]) / res_x
            h = f.height * abs(f.transform[4]) / res_y
            out.append(
                f'      <SimpleSource><SourceFilename relativeToVRT="0">{escape(str(f.path.resolve()))}'
                f'</SourceFilename><SourceBand>{band}</SourceBand>'
                f'<SrcRect xOff="0" yOff="0" xSize="{f.width}" ySize="{f.height}"/>'
                f'<DstRect xOff="{x:.6f}" yOff="{y:.6f}" xSize="{w:.6f}" ySize="{h:.6f}"/></SimpleSource>')
        return "\n".join(out)

    bands = []
    for b in range(1, first.count + 1):
        ci = interp.get(first.colorinterp[b - 1], "Undefined") if b <= len(first.colorinterp) else "Undefined"
        bands.append(f'  <VRTRasterBand dataType="{dtype}" band="{b}">\n'
                     f'    <ColorInterp>{ci}</ColorInterp>\n{sources(str(b))}\n  </VRTRasterBand>')
    gt = f"{minx!r}, {res_x!r}, 0.0, {maxy!r}, 0.0, {-res_y!r}"
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n'
           f'  <SRS>{escape(first.crs_wkt)}</SRS>\n  <GeoTransform>{gt}</GeoTransform>\n'
           + "\n".join(bands) + '\n  <MaskBand>\n    <VRTRasterBand dataType="Byte">\n'
           + sources("mask,1") + "\n    </VRTRasterBand>\n  </MaskBand>\n</VRTDataset>\n")
    atomic_write_bytes(target, xml.encode("utf-8"))
    return target
