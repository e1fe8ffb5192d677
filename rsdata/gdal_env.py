"""Open local rasters with GDAL without letting them reach the network.

GDAL identifies a file by its content, not its name: a local ``scene.tif`` can be a VRT (or a WMS
description, ...) whose sources are ``/vsicurl/http://...``, ``/vsis3/...`` or ``http://...``.
Opened plainly, it makes HTTP requests although the recipe never said ``allow_remote: true``.
Unless remote data is allowed, :func:`open_local_raster` therefore

1. reads the file's header and, when it is an XML description (VRT, WMS, WMTS, MRF, tile index,
   KML, ...), scans it (and the local descriptions it names, recursively) for remote references
   and refuses it before GDAL parses it;
2. opens it inside :func:`no_network_env`, GDAL configuration that makes every curl-based virtual
   file system refuse its paths and sends any other HTTP request of GDAL to a closed port;
3. refuses the opened dataset when its driver talks to network services or any file it lists
   is remote.

Local VRTs whose sources are local files open as before.
"""

from __future__ import annotations

import html
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rsdata.errors import InputError

# curl-based GDAL virtual file systems, URL schemes, and connection-string prefixes of drivers that
# fetch from services
_REMOTE = re.compile(
    r"/vsi(?:curl|s3|gs|az|adls|oss|swift|hdfs|webhdfs)"
    r"|\b(?:https?|ftps?|s3|gs|gcs|az|abfss?|wasbs?|oss|swift|hdfs|webhdfs)://"
    r"|(?<![A-Za-z0-9_])(?:WMS|WMTS|WCS|EEDAI|DAAS|NGW|OGCAPI|PLMOSAIC|STACIT|STACTA|PG|GTI):(?!\\)",
    re.IGNORECASE)
# GDAL drivers that talk to network services by design, or whose data files may be remote and are
# read lazily (a tile index, kerchunk Zarr): refused unless remote data is allowed
NETWORK_DRIVERS = frozenset({
    "WMS", "WMTS", "WCS", "HTTP", "EEDAI", "DAAS", "NGW", "OGCAPI", "PLMosaic", "STACIT", "STACTA",
    "ESRIC", "PostGISRaster", "GTI", "Zarr", "TileDB"})
_XML_TAGS = re.compile(rb"<\s*(?:\?xml|VRTDataset|GDAL_WMS|GDAL_WMTS|WCS_GDAL|MRF_META|"
                       rb"GDALTileIndexDataset|kml|Capabilities|PAMDataset)", re.IGNORECASE)
_SOURCE = re.compile(r"<\s*(SourceFilename|SourceDataset|IndexDataset|DataFile|IndexFile|"
                     r"OverviewDataset|Filename)\b([^>]*)>([^<]*)<", re.IGNORECASE)
_REF_TAGS = frozenset({"sourcefilename", "sourcedataset", "indexdataset", "datafile", "indexfile",
                       "overviewdataset", "filename"})
HEADER_BYTES = 4096
MAX_DESCRIPTION_BYTES = 64 * 2**20
MAX_NESTING = 8

# a file extension no real path has: with CPL_VSIL_CURL_ALLOWED_EXTENSIONS set to it, /vsicurl/,
# /vsis3/, /vsigs/, /vsiaz/, ... refuse every path before making a request
_BLOCKED_EXT = f".rsdata-no-network-{secrets.token_hex(8)}"


def no_network_options() -> dict[str, str]:
    """GDAL configuration options under which GDAL reaches no network."""
    return {
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": _BLOCKED_EXT,
        # CPLHTTPFetch (HTTP driver, WMS, ...) goes through a proxy on a closed port
        "GDAL_HTTP_PROXY": "127.0.0.1:9",
        "GDAL_HTTPS_PROXY": "127.0.0.1:9",
        "GDAL_HTTP_MAX_RETRY": "0",
        "GDAL_HTTP_CONNECTTIMEOUT": "1",
        "GDAL_HTTP_TIMEOUT": "1",
        # (GDAL_DISABLE_READDIR_ON_OPEN stays at its default: local sidecars such as .aux.xml
        # georeferencing and .msk masks must still be found)
        "GDAL_VRT_ENABLE_PYTHON": "NO",  # no Python pixel functions from a file
    }


@contextmanager
def no_network_env() -> Iterator[None]:
    """``rasterio.Env`` with :func:`no_network_options`."""
    import rasterio

    with rasterio.Env(**no_network_options()):
        yield


def is_remote_reference(text: str) -> bool:
    """Does a path or connection string name remote data (/vsicurl/, http://, WMS:, ...)?"""
    return bool(_REMOTE.search(text)) or bool(_REMOTE.search(html.unescape(text)))


def _refuse(path: str, ref: str, via: str | None = None) -> InputError:
    shown = ref if len(ref) <= 120 else ref[:117] + "..."
    chain = f" (through {via})" if via else ""
    return InputError(
        f"raster {path} references remote data{chain}: {shown!r}. GDAL would fetch it over the "
        "network, and the recipe does not allow remote inputs. If you trust this file, set "
        "allow_remote: true at the top level of the recipe; otherwise point the recipe at a local "
        "copy of the data (e.g. gdal_translate it to a GeoTIFF).")


def _header(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(HEADER_BYTES)
    except OSError:
        return b""


def _is_description(header: bytes) -> bool:
    """A text (XML) description GDAL would parse, rather than a binary raster."""
    stripped = header.lstrip(b"\xef\xbb\xbf \t\r\n")
    return stripped.startswith(b"<") or bool(_XML_TAGS.search(header))


def _scan_description(path: Path, top: str, seen: set[Path], depth: int) -> None:
    """Refuse ``path`` when it is an XML description that names remote data, directly or through
    the local descriptions it names."""
    try:
        real = path.resolve()
    except OSError:
        return
    if real in seen or not real.is_file():
        return
    seen.add(real)
    if not _is_description(_header(real)):
        return
    if depth > MAX_NESTING:
        raise InputError(f"raster {top}: its descriptions (VRT) nest more than {MAX_NESTING} levels "
                         "deep; flatten them (gdal_translate to a GeoTIFF).")
    size = real.stat().st_size
    if size > MAX_DESCRIPTION_BYTES:
        raise InputError(f"raster {top}: {real} is a text description (VRT/XML) of {size} bytes, more "
                         f"than the {MAX_DESCRIPTION_BYTES} rsdata checks; convert it to a GeoTIFF.")
    text = real.read_bytes().decode("utf-8", errors="replace")
    via = None if real == Path(top).resolve() else str(real)
    texts, refs = _description_parts(text)
    for candidate in texts:
        match = _REMOTE.search(candidate)
        if match:
            raise _refuse(top, candidate[max(0, match.start() - 20):match.end() + 100].strip(), via)
    for value, relative in refs:
        if relative:
            candidates = [real.parent / value]
        elif os.path.isabs(value):
            candidates = [Path(value)]
        else:  # relative to the working directory, as GDAL reads it; the file's folder to be safe
            candidates = [Path(value), real.parent / value]
        for ref in candidates:
            _scan_description(ref, top, seen, depth + 1)


def _description_parts(text: str) -> tuple[list[str], list[tuple[str, bool]]]:
    """The texts of an XML description that may name data (every text and attribute value but
    free text: descriptions and the default metadata domain, where a copied licence URL is
    harmless), and the file references to follow ``(path, relative to the file)``.

    XML that does not parse is scanned whole (stricter: GDAL's own parser is more lenient)."""
    import xml.etree.ElementTree as ET

    refs: list[tuple[str, bool]] = []
    try:
        root = ET.fromstring(text)
    except (ET.ParseError, ValueError):
        raw = [text, html.unescape(text)]
        for _tag, attrs, value in _SOURCE.findall(html.unescape(text)):
            if value.strip():
                refs.append((value.strip(), bool(re.search(r"relativeToVRT\s*=\s*[\"']?1", attrs, re.I))))
        return raw, refs
    texts: list[str] = []

    def walk(el: Any) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        local = tag.rsplit("}", 1)[-1].lower()
        domain = str(el.get("domain") or "")
        if local == "description" or (local == "metadata" and (not domain or domain.startswith("xml:"))):
            return
        texts.extend(str(v) for v in el.attrib.values())
        if el.text and el.text.strip():
            texts.append(el.text)
            if local in _REF_TAGS:
                refs.append((el.text.strip(), str(el.get("relativeToVRT", "0")).strip() == "1"))
        for child in el:
            walk(child)
            if child.tail and child.tail.strip():
                texts.append(child.tail)

    try:
        walk(root)
    except RecursionError:
        return [text, html.unescape(text)], refs
    return texts, refs


def check_local_raster(path: str | Path) -> None:
    """Refuse (``InputError``) a local file that is a description of remote data, before GDAL opens it."""
    _scan_description(Path(path), str(path), set(), 0)


def check_opened(src: Any, path: str | Path, _depth: int = 0) -> None:
    """Refuse an opened dataset whose driver talks to services or whose files are not local.

    A VRT opens its sources lazily, on the first read (outside the no-network settings), so every
    source is checked now: local files by their content, anything else (an archive member such as
    ``/vsizip/a.zip/b.vrt``) by opening it without network access and checking it the same way.
    """
    import rasterio
    from rasterio.errors import RasterioError

    driver = getattr(src, "driver", "") or ""
    if driver in NETWORK_DRIVERS:
        raise _refuse(str(path), f"GDAL driver {driver}, which reads from network services or from "
                                 "files it names only when reading")
    try:
        files = [str(f) for f in (src.files or [])]
    except Exception:  # noqa: BLE001 - a driver without a file list
        files = []
    for name in files:
        if is_remote_reference(name):
            raise _refuse(str(path), name)
    if driver != "VRT":
        return
    own = {str(Path(path)), str(Path(path).resolve()), str(getattr(src, "name", ""))}
    for name in files:
        if name in own:
            continue
        if Path(name).is_file():
            check_local_raster(name)
            continue
        if _depth >= MAX_NESTING:
            raise InputError(f"raster {path}: its sources (VRT) nest more than {MAX_NESTING} levels "
                             "deep; flatten them (gdal_translate to a GeoTIFF).")
        try:
            with no_network_env(), rasterio.open(name) as nested:
                check_opened(nested, name, _depth + 1)
        except InputError as exc:
            raise InputError(f"raster {path}: source {name}: {exc}") from None
        except (RasterioError, OSError) as exc:
            raise InputError(f"raster {path}: its source {name} cannot be opened without network "
                             f"access ({exc}). Fix the VRT, or set allow_remote: true at the top level "
                             "of the recipe if it may read remote data.") from None


def open_local_raster(path: str | Path, allow_remote: bool = False) -> Any:
    """``rasterio.open(path)`` for reading, refusing remote references unless ``allow_remote``.

    Raises ``InputError`` for a file that references remote data; rasterio's own errors for files
    GDAL cannot read pass through (the caller words those).
    """
    import rasterio

    if allow_remote:
        return rasterio.open(path)
    check_local_raster(path)
    with no_network_env():
        src = rasterio.open(path)
    try:
        check_opened(src, path)
    except BaseException:
        src.close()
        raise
    return src
