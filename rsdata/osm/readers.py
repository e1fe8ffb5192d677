"""Read OpenStreetMap features from files or from Overpass into a :class:`FeatureSet`.

Vector files (GeoPackage, GeoJSON, Shapefile, FlatGeobuf ...) are read with geopandas/pyogrio,
one layer at a time, with OSM tags taken from the attribute columns; ``.osm``/``.osm.pbf``
files go through pyosmium (see ``osm_file``); Overpass goes through osmnx and is only used when
the recipe allows the network. Every geometry is checked: empty ones are dropped, invalid ones
repaired with ``make_valid`` (or dropped when nothing is left), and each case is counted.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

from rsdata.errors import InputError, MissingDependencyError
from rsdata.osm.features import FeatureSet

BBox = tuple[float, float, float, float]

BBOX_PUSHDOWN_BYTES = 256 * 2**20
OSM_SUFFIXES = (".osm", ".osm.pbf", ".pbf", ".osm.gz", ".osm.bz2", ".osm.xml")
# attribute columns that describe the feature rather than being OSM tags
_ID_COLUMNS = {"full_id", "osm_id", "osm_type", "id", "fid", "element_type", "element", "osmid",
               "source_layer", "layer_name", "ogc_fid", "nodes", "ways", "members"}


def is_osm_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in OSM_SUFFIXES)


def check_geometry(geom: BaseGeometry | None, stats: dict[str, int] | Any) -> BaseGeometry | None:
    """Return a usable geometry or None, counting what was wrong in ``stats``."""
    if geom is None or geom.is_empty:
        stats["dropped:empty_geometry"] += 1
        return None
    if not geom.is_valid:
        fixed = shapely.make_valid(geom)
        if geom.geom_type in ("Polygon", "MultiPolygon"):
            # keep only the areal part of a repaired polygon (make_valid may add stray lines)
            parts = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type in ("Polygon", "MultiPolygon")]
            fixed = shapely.union_all(parts) if parts else None
        if fixed is None or fixed.is_empty:
            stats["dropped:invalid_geometry"] += 1
            return None
        stats["repaired:invalid_geometry"] += 1
        return fixed
    return geom


def _tag_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def read_vector(path: Path, layers: list[str] | None = None, bbox: BBox | None = None,
                keep_keys: Collection[str] | None = None) -> FeatureSet:
    """Read OSM-derived features from a vector file (every layer unless ``layers`` is given)."""
    import geopandas as gpd
    import pyogrio

    if not path.exists():
        raise InputError(f"OSM file not found: {path}. Check the osm_join source path in the recipe.")
    try:
        available = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several DataSourceError kinds
        raise InputError(f"cannot read {path} as a vector file: {exc}. Is it a GeoPackage, "
                         "GeoJSON or Shapefile?") from None
    wanted = layers or available
    missing = [name for name in wanted if name not in available]
    if missing:
        raise InputError(f"{path} has no layer(s) {missing}; it has {available}")
    out = FeatureSet(source=str(path))
    for layer in wanted:
        frame = _read_layer(path, layer, bbox, out.stats)
        if frame.crs is None:
            raise InputError(f"layer {layer!r} of {path} has no CRS; OSM data is EPSG:4326 — set it "
                             "(ogr2ogr -a_srs EPSG:4326) and run again")
        if frame.crs.to_epsg() != 4326:
            frame = frame.to_crs(4326)
        _add_frame(out, frame, layer, keep_keys)
    return out


def _read_layer(path: Path, layer: str, bbox: BBox | None, stats: Any) -> Any:
    """Read one layer, limited to ``bbox``; survive files GDAL half-reads.

    Files up to BBOX_PUSHDOWN_BYTES are read whole and filtered in memory, so that null and
    empty geometries are seen and counted (GDAL's spatial filter would hide them); larger files
    push the filter down to GDAL. A pushed-down filter can fail on a slightly corrupt file (the
    sample rivers.shp has a bad record size) where a plain read works: then filter in memory.
    When even that fails, read feature by feature and count the unreadable ones.
    """
    import geopandas as gpd
    import pandas as pd
    import pyogrio

    if bbox is not None and path.stat().st_size > BBOX_PUSHDOWN_BYTES:
        try:
            return gpd.read_file(path, layer=layer, bbox=bbox)
        except Exception:  # noqa: BLE001 - GDAL errors come in many types
            pass
    try:
        frame = gpd.read_file(path, layer=layer)
    except Exception:  # noqa: BLE001
        n = pyogrio.read_info(path, layer=layer)["features"]
        pieces = []
        for i in range(n):
            try:
                pieces.append(gpd.read_file(path, layer=layer, skip_features=i, max_features=1))
            except Exception:  # noqa: BLE001
                stats["dropped:unreadable_feature"] += 1
        if not pieces:
            raise InputError(f"cannot read any feature of layer {layer!r} of {path}; the file is "
                             "corrupt: re-export it (ogr2ogr) and run again") from None
        frame = gpd.GeoDataFrame(pd.concat(pieces, ignore_index=True), crs=pieces[0].crs)
    if bbox is not None:
        import shapely

        geoms = frame.geometry
        # null/empty geometries go on to check_geometry, which counts them as dropped
        keep = geoms.isna() | geoms.is_empty | geoms.intersects(shapely.box(*bbox))
        stats["skipped:outside_bbox"] += int((~keep).sum())
        frame = frame[keep]
    return frame


def _add_frame(out: FeatureSet, frame: Any, layer: str, keep_keys: Collection[str] | None) -> None:
    columns = [c for c in frame.columns if c != frame.geometry.name and c.lower() not in _ID_COLUMNS]
    has_full_id = "full_id" in frame.columns
    has_osm = "osm_id" in frame.columns and "osm_type" in frame.columns
    records = frame[columns].to_dict("records")
    for i, (geom, rec) in enumerate(zip(frame.geometry.values, records)):
        tags = {k: v for k, v in ((k, _tag_value(val)) for k, val in rec.items()) if v is not None}
        if keep_keys is not None and not any(k in keep_keys for k in tags):
            out.stats["skipped:no_wanted_tag"] += 1
            continue
        geom = check_geometry(geom, out.stats)
        if geom is None:
            continue
        if has_full_id and _tag_value(frame["full_id"].iat[i]):
            fid = str(frame["full_id"].iat[i])
        elif has_osm:
            fid = f"{str(frame['osm_type'].iat[i])[:1]}{frame['osm_id'].iat[i]}"
        else:
            fid = f"{layer}:{i}"
        out.add(geom, tags, fid)
        out.stats["loaded"] += 1


def read_overpass(bbox: BBox, keep_keys: Collection[str]) -> FeatureSet:
    """Query Overpass through osmnx for features with any of ``keep_keys`` inside ``bbox``."""
    try:
        import osmnx as ox
    except ImportError:
        raise MissingDependencyError("osmnx", "osm", "Overpass queries") from None
    tags: dict[str, bool | str | list[str]] = {k: True for k in keep_keys}
    try:
        frame = ox.features_from_bbox(bbox, tags)  # (left, bottom, right, top) in osmnx 2.x
    except Exception as exc:  # noqa: BLE001 - network errors of many kinds
        raise InputError(f"Overpass query for {bbox} failed: {exc}. Check the network, or download "
                         "an extract (.osm.pbf) and use it as a file source.") from None
    frame = frame.reset_index()
    if "element" in frame.columns and "id" in frame.columns:
        frame["full_id"] = [f"{e[:1]}{i}" for e, i in zip(frame["element"], frame["id"])]
    out = FeatureSet(source="overpass")
    _add_frame(out, frame.set_crs(4326, allow_override=True), "overpass", keep_keys)
    return out


def read_source(spec: dict[str, Any], path: Path | None, bbox: BBox | None,
                keep_keys: Collection[str] | None) -> FeatureSet:
    """Read one ``osm_join`` source of a recipe."""
    if spec.get("overpass"):
        if bbox is None or keep_keys is None:
            raise InputError("an Overpass source needs the rasters' bounds and the OSM keys to ask for")
        return read_overpass(bbox, keep_keys)
    assert path is not None
    if not path.exists():
        raise InputError(f"OSM file not found: {path}. Check the osm_join source path in the recipe "
                         "(relative paths are relative to the recipe file).")
    if is_osm_file(path):
        from rsdata.osm.osm_file import read_osm_file

        fs = read_osm_file(path, bbox=bbox, keep_keys=keep_keys)
        return fs
    return read_vector(path, spec.get("layers"), bbox, keep_keys)
