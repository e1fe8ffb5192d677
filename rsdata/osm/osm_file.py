"""Read OpenStreetMap files (``.osm``, ``.osm.gz``, ``.osm.bz2``, ``.osm.pbf``) into a FeatureSet.

The reader uses pyosmium (the optional ``osm`` extra) and is built for *extracts*: files cut
out of the planet, in which ways and relations often reference nodes and member ways that the
file does not contain. Such objects never abort a read; each one that cannot become a feature
is counted in ``FeatureSet.stats`` under ``dropped:<reason>``.

What becomes a feature:

* a node with at least one tag -> ``Point`` (id ``n<id>``);
* a way that is not an area -> ``LineString`` (id ``w<id>``);
* a closed way whose tags make it an area (see :func:`is_area_way`) -> ``Polygon`` or
  ``MultiPolygon`` (id ``w<id>``; never also a line);
* a ``type=multipolygon`` or ``type=boundary`` relation, assembled by osmium's area
  assembler -> ``Polygon`` or ``MultiPolygon`` (id ``r<id>``, tags without ``type``).

Stats keys: ``loaded``, ``skipped:outside_bbox``, ``repaired:invalid_geometry`` and
``dropped:`` + one of ``missing_nodes`` (a way, or an area relation's member way, references
a node the file lacks), ``missing_members`` (an area relation's member way is not in the
file), ``degenerate`` (fewer than two distinct points, or a ring enclosing no area),
``invalid_geometry`` (osmium could not assemble the relation's rings, or GEOS could not
repair it) and ``empty_geometry``. Drops are counted before the bbox filter.

``FeatureSet.extent`` is the extract's bounds from the file header (``<bounds>`` in XML,
``HeaderBBox`` in PBF), else the convex hull of every feature read (before the bbox filter).

Limits: node locations are cached in memory (fine up to country extracts); objects with
negative ids (unsaved JOSM edits) are not supported, their ways count as ``missing_nodes``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from rsdata.errors import InputError, MissingDependencyError
from rsdata.osm.features import FeatureSet

BBox = tuple[float, float, float, float]

# Stats keys.
LOADED = "loaded"
SKIPPED_OUTSIDE_BBOX = "skipped:outside_bbox"
REPAIRED_INVALID = "repaired:invalid_geometry"
DROPPED_MISSING_NODES = "dropped:missing_nodes"
DROPPED_MISSING_MEMBERS = "dropped:missing_members"
DROPPED_DEGENERATE = "dropped:degenerate"
DROPPED_INVALID = "dropped:invalid_geometry"
DROPPED_EMPTY = "dropped:empty_geometry"

# Suffixes from which osmium can tell the format by itself.
_KNOWN_SUFFIXES = (".osm", ".osm.gz", ".osm.bz2", ".pbf", ".xml", ".xml.gz", ".xml.bz2")

# Which closed ways are areas. Follows the widely used osm-polygon-features rules
# (https://github.com/tyrasd/osm-polygon-features), except that ``barrier`` ways are always
# lines: a closed fence or wall around a yard is a line on the ground, not a filled area.
_AREA_KEYS_ALL_VALUES = frozenset({
    "building", "building:part", "landuse", "amenity", "leisure", "place", "shop",
    "tourism", "historic", "public_transport", "office", "military", "ruins",
    "area:highway", "craft", "golf", "indoor", "boundary",
})
_AREA_KEYS_EXCEPT: dict[str, frozenset[str]] = {
    "natural": frozenset({"coastline", "cliff", "ridge", "arete", "tree_row"}),
    "man_made": frozenset({"cutline", "embankment", "pipeline"}),
    "aeroway": frozenset({"taxiway"}),
}
_AREA_KEYS_ONLY: dict[str, frozenset[str]] = {
    "highway": frozenset({"services", "rest_area", "escape", "elevator"}),
    "waterway": frozenset({"riverbank", "dock", "boatyard", "dam"}),
    "railway": frozenset({"station", "turntable", "roundhouse", "platform"}),
    "power": frozenset({"plant", "substation", "generator", "transformer"}),
}
_AREA_RELATION_TYPES = frozenset({"multipolygon", "boundary"})


def read_osm_file(
    path: str | Path,
    bbox: BBox | None = None,
    keep_keys: Collection[str] | None = None,
) -> FeatureSet:
    """Read an OSM XML or PBF file into a :class:`FeatureSet` in EPSG:4326 (lon/lat).

    Args:
        path: a ``.osm``, ``.osm.gz``, ``.osm.bz2`` or ``.osm.pbf`` file. Files with another
            suffix are recognised by their content.
        bbox: ``(minx, miny, maxx, maxy)`` in lon/lat; when given only features whose geometry
            intersects it are loaded (the rest are counted as ``skipped:outside_bbox``).
        keep_keys: when given, only features with at least one tag whose key is listed are
            loaded (a single string is taken as one key; an empty collection keeps nothing).
            Features keep all their tags.

    Returns:
        The features, with ``stats`` counting ``loaded`` features and every dropped,
        repaired or skipped one by reason.

    Raises:
        MissingDependencyError: pyosmium is not installed.
        InputError: the file is missing or is not valid OSM XML/PBF, or ``bbox`` is malformed.
    """
    osmium = _import_osmium()
    file_path = _existing_file(path)
    keys = _normalise_keys(keep_keys)
    box = _bbox_geometry(bbox) if bbox is not None else None

    collector = _Collector(_OsmiumTools.create(osmium), keys)
    osm_file = _osmium_file(osmium, file_path)
    processor = _processor(osmium, osm_file, keys)
    for obj in _guarded(processor, file_path):
        collector.handle(obj)
    _count_failed_relations(osmium, collector, osm_file, processor, file_path)

    features = collector.finish(str(file_path))
    # where the file has data: the extract bounds its header declares, else its features' hull
    features.extent = _header_box(osmium, osm_file)
    if features.extent is None:
        from rsdata.osm.coverage import data_extent

        features.extent = data_extent(features.geometries, "EPSG:4326")
    if box is not None:
        features = _within_bbox(features, box)
    features.stats[LOADED] = len(features)
    return features


def is_area_way(tags: dict[str, str]) -> bool:
    """Tell whether a *closed* way with these tags is an area rather than a line.

    ``area=yes`` and ``area=no`` decide outright; otherwise the way is an area when one of
    its tags is an area tag (``building=*``, ``landuse=*``, ``natural=*`` except linear
    features, ``highway=rest_area`` ...). A closed ``highway=residential`` stays a line.
    """
    area = tags.get("area")
    if area == "no":
        return False
    if area is not None:
        return True
    for key, value in tags.items():
        if value == "no":
            continue
        if key in _AREA_KEYS_ALL_VALUES:
            return True
        if key in _AREA_KEYS_EXCEPT and value not in _AREA_KEYS_EXCEPT[key]:
            return True
        if key in _AREA_KEYS_ONLY and value in _AREA_KEYS_ONLY[key]:
            return True
    return False


# --- set-up -------------------------------------------------------------------------------


def _import_osmium() -> Any:
    """Import pyosmium, or say how to install it."""
    try:
        import osmium
    except ImportError as exc:
        raise MissingDependencyError("osmium", "osm", "Reading .osm/.pbf files") from exc
    return osmium


def _existing_file(path: str | Path) -> Path:
    """Return ``path`` as a Path, or raise InputError when it is not a readable file."""
    file_path = Path(path).expanduser()
    if not file_path.exists():
        raise InputError(
            f"OSM file not found: {file_path}. Check the path, or download an extract "
            "(e.g. from https://download.geofabrik.de) and point to its .osm.pbf file."
        )
    if not file_path.is_file():
        raise InputError(
            f"OSM input {file_path} is not a file. Point to a .osm, .osm.gz, .osm.bz2 or "
            ".osm.pbf file."
        )
    if not os.access(file_path, os.R_OK):
        raise InputError(
            f"OSM file {file_path} cannot be read (permission denied). Fix its permissions "
            "or copy it somewhere readable."
        )
    return file_path


def _normalise_keys(keep_keys: Collection[str] | None) -> frozenset[str] | None:
    """Turn ``keep_keys`` into a set; a lone string is one key, not a set of letters."""
    if keep_keys is None:
        return None
    if isinstance(keep_keys, str):
        return frozenset({keep_keys})
    return frozenset(keep_keys)


def _bbox_geometry(bbox: BBox) -> Polygon:
    """Check ``bbox`` and return it as a shapely box."""
    try:
        minx, miny, maxx, maxy = (float(v) for v in bbox)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"bbox must be four numbers (minx, miny, maxx, maxy) in lon/lat, got {bbox!r}."
        ) from exc
    if not (minx <= maxx and miny <= maxy):
        raise InputError(
            f"bbox {bbox!r} has min > max; give it as (minx, miny, maxx, maxy) in lon/lat, "
            "e.g. (24.9, 60.1, 25.0, 60.2)."
        )
    return shapely.box(minx, miny, maxx, maxy)


def _osmium_file(osmium: Any, file_path: Path) -> Any:
    """Wrap the path for osmium, telling it the format when the suffix does not."""
    name = file_path.name.lower()
    if name.endswith(_KNOWN_SUFFIXES):
        return osmium.io.File(str(file_path))
    return osmium.io.File(str(file_path), _sniff_format(file_path))


def _header_box(osmium: Any, osm_file: Any) -> Polygon | None:
    """The bounding box an OSM file's header declares (``<bounds>``, PBF ``HeaderBBox``)."""
    try:
        reader = osmium.io.Reader(osm_file, osmium.osm.osm_entity_bits.NOTHING)
    except Exception:  # noqa: BLE001 - a header osmium cannot read simply declares nothing
        return None
    try:
        box = reader.header().box()
        if not box.valid():
            return None
        bl, tr = box.bottom_left, box.top_right
        if not (bl.lon < tr.lon and bl.lat < tr.lat):
            return None
        return shapely.box(bl.lon, bl.lat, tr.lon, tr.lat)
    except Exception:  # noqa: BLE001
        return None
    finally:
        reader.close()


def _sniff_format(file_path: Path) -> str:
    """Guess the osmium format of a file with an unusual suffix from its first bytes."""
    with file_path.open("rb") as fh:
        head = fh.read(64)
    if head.startswith(b"\x1f\x8b"):
        return "osm.gz"
    if head.startswith(b"BZh"):
        return "osm.bz2"
    if b"OSMHeader" in head[:32]:
        return "pbf"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return "osm"
    raise _not_osm_error(file_path, "its content is neither XML nor PBF")


def _processor(osmium: Any, osm_file: Any, keys: frozenset[str] | None) -> Any:
    """Build the FileProcessor: node locations, area assembly and tag filters in C++."""
    processor = osmium.FileProcessor(osm_file).with_locations("flex_mem")
    processor.with_areas(_tag_filter(osmium, keys))
    return processor.with_filter(_tag_filter(osmium, keys))


def _tag_filter(osmium: Any, keys: frozenset[str] | None) -> Any:
    """A filter passing objects with tags (with one of ``keys`` when given)."""
    if keys is None:
        return osmium.filter.EmptyTagFilter()
    if not keys:
        return osmium.filter.EntityFilter(osmium.osm.NOTHING)
    return osmium.filter.KeyFilter(*sorted(keys))


def _guarded(processor: Any, file_path: Path) -> Iterator[Any]:
    """Iterate the processor, turning osmium's parse errors into InputError."""
    iterator = iter(processor)
    while True:
        try:
            obj = next(iterator)
        except StopIteration:
            return
        except RuntimeError as exc:
            raise _not_osm_error(file_path, str(exc)) from exc
        yield obj


def _not_osm_error(file_path: Path, detail: str) -> InputError:
    """The error for a file osmium cannot read."""
    return InputError(
        f"{file_path} is not a valid OSM XML/PBF file ({detail}). Check that the download "
        "finished and the file is not truncated, that its suffix matches its format "
        "(.osm, .osm.gz, .osm.bz2 or .osm.pbf), or convert it with "
        "'osmium cat INPUT -o OUTPUT.osm.pbf'."
    )


# --- turning osmium objects into features ------------------------------------------------


@dataclass
class _OsmiumTools:
    """The osmium pieces the collector needs per object."""

    wkb: Any
    invalid_location: type[Exception]

    @classmethod
    def create(cls, osmium: Any) -> _OsmiumTools:
        return cls(osmium.geom.WKBFactory(), osmium.InvalidLocationError)


@dataclass
class _Collector:
    """Turns the stream of osmium objects into features, counting what it drops.

    Points, lines and polygons of closed ways are built in bulk by :meth:`finish` (shapely's
    vectorised constructors are several times faster than one call per feature).
    """

    tools: _OsmiumTools
    keys: frozenset[str] | None
    stats: Counter[str] = field(default_factory=Counter)
    geometries: list[BaseGeometry | None] = field(default_factory=list)
    tags: list[dict[str, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    # Features whose geometry finish() creates: their index and coordinates / WKB.
    point_slots: list[int] = field(default_factory=list)
    point_xy: list[tuple[float, float]] = field(default_factory=list)
    line_slots: list[int] = field(default_factory=list)
    line_wkb: list[bytes] = field(default_factory=list)
    ring_slots: list[int] = field(default_factory=list)
    ring_wkb: list[bytes] = field(default_factory=list)
    # Relations that should become areas (id -> member way ids), and those osmium assembled.
    area_relations: dict[int, list[int]] = field(default_factory=dict)
    assembled: set[int] = field(default_factory=set)

    def handle(self, obj: Any) -> None:
        """Dispatch one osmium object (it is only valid during this call)."""
        if obj.is_node():
            self._node(obj)
        elif obj.is_way():
            self._way(obj)
        elif obj.is_area():
            self._area(obj)
        elif obj.is_relation():
            self._relation(obj)

    def finish(self, source: str) -> FeatureSet:
        """Create the pending geometries and return the features in file order."""
        geometries = self.geometries
        points = shapely.points(np.asarray(self.point_xy, dtype=float).reshape(-1, 2))
        for slot, point in zip(self.point_slots, points):
            geometries[slot] = point
        for slot, line in zip(self.line_slots, shapely.from_wkb(self.line_wkb)):
            geometries[slot] = line
        for slot, (polygon, reason) in zip(self.ring_slots, _ring_polygons(self.ring_wkb)):
            geometries[slot] = polygon
            if reason is not None:
                self.stats[reason] += 1
        features = FeatureSet(source=source, stats=self.stats)
        for geometry, tags, fid in zip(geometries, self.tags, self.ids):
            if geometry is not None:  # None: a closed way that could not be a polygon
                features.add(geometry, tags, fid)
        return features

    def _wanted(self, tags: dict[str, str]) -> bool:
        """Whether an object with these tags is a feature to keep."""
        if not tags:
            return False
        return self.keys is None or not self.keys.isdisjoint(tags)

    def _add(self, geometry: BaseGeometry | None, tags: dict[str, str], fid: str) -> int:
        """Append a feature (geometry None: filled in by finish) and return its index."""
        self.geometries.append(geometry)
        self.tags.append(tags)
        self.ids.append(fid)
        return len(self.ids) - 1

    def _node(self, node: Any) -> None:
        tags = _tags(node)
        if not self._wanted(tags):
            return
        location = node.location
        if not location.valid():
            self.stats[DROPPED_MISSING_NODES] += 1
            return
        self.point_slots.append(self._add(None, tags, f"n{node.id}"))
        self.point_xy.append((location.lon, location.lat))

    def _way(self, way: Any) -> None:
        tags = _tags(way)
        if not self._wanted(tags):
            return
        wkb, reason = self._way_wkb(way)
        if wkb is None:
            self.stats[reason] += 1
            return
        nodes = way.nodes
        if nodes[0].ref == nodes[-1].ref and is_area_way(tags):
            self.ring_slots.append(self._add(None, tags, f"w{way.id}"))
            self.ring_wkb.append(wkb)
        else:
            self.line_slots.append(self._add(None, tags, f"w{way.id}"))
            self.line_wkb.append(wkb)

    def _way_wkb(self, way: Any) -> tuple[bytes | None, str]:
        """The way's line as WKB (repeated points removed), or the reason there is none."""
        nodes = way.nodes
        if len(nodes) < 2:
            return None, DROPPED_DEGENERATE
        # osmium silently skips missing nodes at the start of a way (an invalid location
        # equals its initial "last location"), so check the first one here; it raises
        # InvalidLocationError for any later one.
        if not nodes[0].location.valid():
            return None, DROPPED_MISSING_NODES
        try:
            return self.tools.wkb.create_linestring(way), ""
        except self.tools.invalid_location:
            return None, DROPPED_MISSING_NODES
        except RuntimeError:  # osmium: fewer than two distinct points
            return None, DROPPED_DEGENERATE

    def _area(self, area: Any) -> None:
        """An area osmium assembled from a relation (closed ways are handled by _way)."""
        if area.from_way():
            return
        rel_id = area.orig_id()
        self.assembled.add(rel_id)
        tags = _tags(area)
        if not self._wanted(tags):
            return
        try:
            wkb = self.tools.wkb.create_multipolygon(area)
        except self.tools.invalid_location:
            self.stats[DROPPED_MISSING_NODES] += 1
            return
        except RuntimeError:  # osmium could not assemble valid rings
            self.stats[DROPPED_INVALID] += 1
            return
        geometry, reason = _valid_polygonal(shapely.from_wkb(wkb))
        if reason is not None:
            self.stats[reason] += 1
        if geometry is not None:
            self._add(geometry, tags, f"r{rel_id}")

    def _relation(self, relation: Any) -> None:
        """Remember relations that should become areas, to count those that do not."""
        tags = _tags(relation)
        if tags.pop("type", None) not in _AREA_RELATION_TYPES or not self._wanted(tags):
            return
        ways = [m.ref for m in relation.members if m.type == "w"]
        if ways:  # osmium ignores area relations without way members
            self.area_relations[relation.id] = ways


def _tags(obj: Any) -> dict[str, str]:
    """The object's tags as a plain dict (osmium's Tag is a (k, v) named tuple)."""
    return dict(obj.tags)


def _ring_polygons(wkbs: list[bytes]) -> list[tuple[BaseGeometry | None, str | None]]:
    """Polygons from closed ways' lines (as WKB), each with its repair or drop reason."""
    results: list[tuple[BaseGeometry | None, str | None]] = [(None, DROPPED_DEGENERATE)] * len(wkbs)
    lines = shapely.from_wkb(wkbs)
    # A ring needs three distinct points plus the closing one.
    rings_at = np.flatnonzero(shapely.get_num_coordinates(lines) >= 4)
    coords, owner = shapely.get_coordinates(lines[rings_at], return_index=True)
    polygons = shapely.polygons(shapely.linearrings(coords, indices=owner))
    valid = shapely.is_valid(polygons)
    for at, polygon, is_valid in zip(rings_at, polygons, valid):
        results[at] = (polygon, None) if is_valid else _valid_polygonal(polygon)
    return results


def _valid_polygonal(geometry: BaseGeometry) -> tuple[BaseGeometry | None, str | None]:
    """A valid (Multi)Polygon, repaired with make_valid when needed, or the drop reason."""
    if geometry.is_empty:
        return None, DROPPED_EMPTY
    if geometry.is_valid:
        return _simplest(geometry), None
    try:
        repaired = _polygonal_part(shapely.make_valid(geometry))
    except shapely.errors.GEOSException:
        return None, DROPPED_INVALID
    if repaired is None:  # the ring encloses no area: it collapses to lines or points
        return None, DROPPED_DEGENERATE
    return repaired, REPAIRED_INVALID


def _polygonal_part(geometry: BaseGeometry) -> BaseGeometry | None:
    """The polygons in ``geometry`` (a Polygon if just one), or None if it has none."""
    polygons = [
        part for part in shapely.get_parts(geometry)
        if isinstance(part, Polygon) and not part.is_empty
    ]
    polygons += [
        poly for part in shapely.get_parts(geometry) if isinstance(part, MultiPolygon)
        for poly in part.geoms
    ]
    if not polygons:
        return None
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)


def _simplest(geometry: BaseGeometry) -> BaseGeometry:
    """A one-part MultiPolygon as a Polygon; anything else unchanged."""
    if isinstance(geometry, MultiPolygon) and len(geometry.geoms) == 1:
        return geometry.geoms[0]
    return geometry


# --- relations osmium could not assemble -------------------------------------------------


def _count_failed_relations(osmium: Any, collector: _Collector, osm_file: Any,
                            processor: Any, file_path: Path) -> None:
    """Count area relations that produced no area, by why they failed.

    osmium only assembles a relation once all its member ways are in the file, so a relation
    with a way missing from the extract yields nothing. One extra pass over the file's ways
    (filtered by id in C++) tells missing members from member ways with missing nodes.
    """
    failed = {rid: ways for rid, ways in collector.area_relations.items()
              if rid not in collector.assembled}
    if not failed:
        return
    wanted = {way_id for ways in failed.values() for way_id in ways}
    present = _way_node_refs(osmium, osm_file, wanted, file_path)
    locations = processor.node_location_storage
    stats = collector.stats
    for ways in failed.values():
        if any(way_id not in present for way_id in ways):
            stats[DROPPED_MISSING_MEMBERS] += 1
        elif any(not _has_location(locations, ref) for w in ways for ref in present[w]):
            stats[DROPPED_MISSING_NODES] += 1
        else:
            stats[DROPPED_INVALID] += 1


def _way_node_refs(osmium: Any, osm_file: Any, way_ids: Iterable[int],
                   file_path: Path) -> dict[int, list[int]]:
    """Node ids of those of ``way_ids`` that are in the file."""
    id_filter = osmium.filter.IdFilter(way_ids)
    processor = osmium.FileProcessor(osm_file, osmium.osm.WAY).with_filter(id_filter)
    return {way.id: [n.ref for n in way.nodes] for way in _guarded(processor, file_path)}


def _has_location(locations: Any, node_id: int) -> bool:
    """Whether the node location cache holds a valid location for ``node_id``."""
    try:
        return bool(locations.get(node_id).valid())
    except KeyError:
        return False


# --- bbox ---------------------------------------------------------------------------------


def _within_bbox(features: FeatureSet, box: Polygon) -> FeatureSet:
    """Keep the features intersecting ``box``; count the others as skipped."""
    if not len(features):
        return features
    inside = shapely.intersects(np.asarray(features.geometries, dtype=object), box)
    kept = FeatureSet(source=features.source, stats=features.stats, crs=features.crs,
                      extent=features.extent)
    for keep, geometry, tags, fid in zip(inside, features.geometries, features.tags,
                                         features.ids):
        if keep:
            kept.add(geometry, tags, fid)
    kept.stats[SKIPPED_OUTSIDE_BBOX] += len(features) - len(kept)
    return kept
