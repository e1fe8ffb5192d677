"""Read OpenStreetMap features from files or from Overpass into a :class:`FeatureSet`.

Vector files (GeoPackage, GeoJSON, Shapefile, FlatGeobuf ...) are read with geopandas/pyogrio,
one layer at a time and in any CRS (the run's WGS84 bbox is turned into each layer's CRS for
the prefilter, then the features are reprojected to WGS84), with OSM tags taken from the
attribute columns, or from a class column through a ``classes`` map (labelled layers);
``.osm``/``.osm.pbf`` files go through pyosmium (see ``osm_file``); Overpass goes through osmnx
and is only used when the recipe allows the network. Every geometry is checked: empty ones are dropped, invalid ones
repaired with ``make_valid`` (or dropped when nothing is left), and each case is counted.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

from rsdata.errors import InputError, MissingDependencyError
from rsdata.osm.coverage import bbox_in_crs, crs_label, data_extent, geometry_to_wgs84
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


ClassMap = tuple[str, dict[str, dict[str, str]]]
"""A class column and what each of its values becomes: ``(column, {value: tags})``."""


def class_value(value: Any) -> str | None:
    """A class column's cell as the text a ``classes`` mapping names (``3.0`` -> ``"3"``)."""
    if isinstance(value, float) and not math.isnan(value) and value.is_integer():
        value = int(value)
    return _tag_value(value)


def read_vector(path: Path, layers: list[str] | None = None, bbox: BBox | None = None,
                keep_keys: Collection[str] | None = None, crs: str | None = None,
                classes: ClassMap | None = None) -> FeatureSet:
    """Read OSM-derived features from a vector file (every layer unless ``layers`` is given).

    Layers may be in any CRS: ``bbox`` (WGS84) is turned into a box in each layer's own CRS
    (edges densified) before filtering, and the features are reprojected to WGS84 afterwards.
    ``crs`` is used for layers that declare none. With ``classes`` the tags of a feature come
    from its class column alone (see :data:`ClassMap`).
    """
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
    infos = {layer: _layer_info(path, layer) for layer in wanted}
    if classes is None and keep_keys is not None:
        useful = [layer for layer in wanted if _tag_columns(infos[layer]["fields"]) & set(keep_keys)]
        if not useful:
            columns = sorted({c for layer in wanted for c in _tag_columns(infos[layer]["fields"])})
            shown = ", ".join(sorted(keep_keys)[:12]) + (", ..." if len(keep_keys) > 12 else "")
            raise InputError(
                f"{path}: no layer has a column named after any of the OSM keys osm_join looks "
                f"for ({shown}); its columns are {columns or 'none'}. If it is a labelled layer "
                "(e.g. a 'name' column with water/crop/tree), map the class column in its source: "
                "class_column: name, classes: {water: 'natural=water', crop: {phrase: cropland, "
                "countable: false}}; or list the keys to use (keys: [...]).")
        for layer in wanted:
            if layer not in useful:
                out.stats["skipped:layer_without_wanted_keys"] += 1
        wanted = useful
    extents = []
    crs_names = []
    for layer in wanted:
        layer_crs = infos[layer]["crs"]
        if layer_crs is None:
            if not crs:
                raise InputError(
                    f"layer {layer!r} of {path} has no CRS, so its features cannot be placed on "
                    f"the map. Give the source one in the recipe (crs: EPSG:4326, or the CRS "
                    f"the coordinates are in, e.g. crs: EPSG:32734), or fix the file: ogr2ogr "
                    f"-a_srs EPSG:<code> fixed{path.suffix} {path.name}")
            layer_crs = crs
        _check_crs(layer_crs, path, layer)
        frame, extent = _read_layer(path, layer, bbox, out.stats, layer_crs, infos[layer])
        if frame.crs is None:
            frame = frame.set_crs(layer_crs)
        if frame.crs.to_epsg() != 4326:
            frame = frame.to_crs(4326)
        if classes is not None:
            _add_class_frame(out, frame, layer, classes, path)
        else:
            _add_frame(out, frame, layer, keep_keys)
        if extent is not None:
            extents.append(extent)
        crs_names.append(crs_label(layer_crs))
    out.crs = ", ".join(sorted(set(crs_names))) or None
    out.extent = shapely.union_all(extents) if extents else None
    return out


def _layer_info(path: Path, layer: str) -> dict[str, Any]:
    import pyogrio

    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read layer {layer!r} of {path}: {exc}") from None
    return {"crs": info.get("crs"), "fields": [str(f) for f in info.get("fields", [])],
            "features": info.get("features", -1)}


def _tag_columns(fields: list[str]) -> set[str]:
    return {f for f in fields if f.lower() not in _ID_COLUMNS}


def _check_crs(crs: Any, path: Path, layer: str) -> None:
    from pyproj import CRS

    try:
        CRS.from_user_input(crs)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"layer {layer!r} of {path}: {crs!r} is not a CRS pyproj knows "
                         f"({exc}); give the source a crs such as EPSG:4326") from None


def _read_layer(path: Path, layer: str, bbox: BBox | None, stats: Any, crs: Any,
                info: dict[str, Any]) -> tuple[Any, BaseGeometry | None]:
    """Read one layer, limited to ``bbox`` (WGS84); survive files GDAL half-reads.

    Returns the frame (in the layer's CRS) and the layer's data extent in WGS84 (the convex
    hull of all its features, or its declared total bounds when only part of it was read).

    The bbox is turned into the layer's CRS first (densified edges), so layers in UTM or a
    national grid are filtered correctly. Files up to BBOX_PUSHDOWN_BYTES are read whole and
    filtered in memory, so that null and empty geometries are seen and counted (GDAL's spatial
    filter would hide them); larger files push the filter down to GDAL. A pushed-down filter
    can fail on a slightly corrupt file (the sample rivers.shp has a bad record size) where a
    plain read works: then filter in memory. When even that fails, read feature by feature and
    count the unreadable ones.
    """
    import geopandas as gpd
    import pandas as pd
    import pyogrio

    native = bbox_in_crs(bbox, crs) if bbox is not None else None
    if native is not None and path.stat().st_size > BBOX_PUSHDOWN_BYTES:
        try:
            frame = gpd.read_file(path, layer=layer, bbox=native)
            total = pyogrio.read_info(path, layer=layer, force_total_bounds=True).get("total_bounds")
            extent = (geometry_to_wgs84(shapely.box(*total), crs)
                      if total is not None and all(math.isfinite(v) for v in total) else None)
            return frame, extent
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
    extent = data_extent(frame.geometry.values, crs)
    if native is not None:
        geoms = frame.geometry
        # null/empty geometries go on to check_geometry, which counts them as dropped
        keep = geoms.isna() | geoms.is_empty | geoms.intersects(shapely.box(*native))
        stats["skipped:outside_bbox"] += int((~keep).sum())
        frame = frame[keep]
    return frame, extent


def _feature_id(frame: Any, i: int, layer: str) -> str:
    if "full_id" in frame.columns and _tag_value(frame["full_id"].iat[i]):
        return str(frame["full_id"].iat[i])
    if "osm_id" in frame.columns and "osm_type" in frame.columns:
        return f"{str(frame['osm_type'].iat[i])[:1]}{frame['osm_id'].iat[i]}"
    return f"{layer}:{i}"


def _add_frame(out: FeatureSet, frame: Any, layer: str, keep_keys: Collection[str] | None) -> None:
    columns = [c for c in frame.columns if c != frame.geometry.name and c.lower() not in _ID_COLUMNS]
    records = frame[columns].to_dict("records")
    for i, (geom, rec) in enumerate(zip(frame.geometry.values, records)):
        tags = {k: v for k, v in ((k, _tag_value(val)) for k, val in rec.items()) if v is not None}
        if keep_keys is not None and not any(k in keep_keys for k in tags):
            out.stats["skipped:no_wanted_tag"] += 1
            continue
        geom = check_geometry(geom, out.stats)
        if geom is None:
            continue
        out.add(geom, tags, _feature_id(frame, i, layer))
        out.stats["loaded"] += 1


def _add_class_frame(out: FeatureSet, frame: Any, layer: str, classes: ClassMap, path: Path) -> None:
    """Features of a labelled layer: tags from the class column through the ``classes`` map."""
    column, mapping = classes
    if column not in frame.columns:
        columns = [c for c in frame.columns if c != frame.geometry.name]
        raise InputError(f"layer {layer!r} of {path} has no class column {column!r}; its columns "
                         f"are {columns}. Set class_column to one of them.")
    unmapped: Counter[str] = Counter()
    for i, (geom, raw) in enumerate(zip(frame.geometry.values, frame[column].tolist())):
        value = class_value(raw)
        tags = mapping.get(value) if value is not None else None
        if tags is None:
            out.stats["skipped:unmapped_class"] += 1
            unmapped[str(value)] += 1
            continue
        geom = check_geometry(geom, out.stats)
        if geom is None:
            continue
        out.add(geom, dict(tags), _feature_id(frame, i, layer))
        out.stats["loaded"] += 1
    if unmapped:
        shown = ", ".join(f"{v!r} ({n})" for v, n in unmapped.most_common(10))
        print(f"rsdata: warning: {path} layer {layer!r}: class_column {column!r} values without "
              f"an entry in classes are skipped: {shown}. Add them to classes to use them.",
              file=sys.stderr)


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
                keep_keys: Collection[str] | None, classes: ClassMap | None = None) -> FeatureSet:
    """Read one ``osm_join`` source of a recipe (``crs``, ``layers`` from ``spec``); the
    result knows its CRS and data extent (see :class:`FeatureSet`)."""
    if spec.get("overpass"):
        if classes is not None:
            raise InputError("class_column applies to vector layers with a class column, not to "
                             "Overpass (its OSM tags are used as they are)")
        if bbox is None or keep_keys is None:
            raise InputError("an Overpass source needs the rasters' bounds and the OSM keys to ask for")
        fs = read_overpass(bbox, keep_keys)
        fs.crs = crs_label("EPSG:4326")
        fs.extent = shapely.box(*bbox)  # Overpass answers for the whole box it was asked
        return fs
    assert path is not None
    if not path.exists():
        raise InputError(f"OSM file not found: {path}. Check the osm_join source path in the recipe "
                         "(relative paths are relative to the recipe file).")
    if is_osm_file(path):
        from rsdata.osm.osm_file import read_osm_file

        if classes is not None:
            raise InputError(f"{path}: class_column applies to vector layers with a class column, "
                             "not to OSM files (their tags are used as they are)")
        fs = read_osm_file(path, bbox=bbox, keep_keys=keep_keys)
        fs.crs = crs_label("EPSG:4326")
        return fs
    return read_vector(path, spec.get("layers"), bbox, keep_keys, crs=spec.get("crs"),
                       classes=classes)
