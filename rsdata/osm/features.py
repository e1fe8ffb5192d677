"""The in-memory form of OpenStreetMap features, whatever file or service they came from."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shapely.geometry.base import BaseGeometry


@dataclass
class FeatureSet:
    """OSM features in WGS84 (EPSG:4326, lon/lat order) with their tags.

    ``geometries[i]``, ``tags[i]`` and ``ids[i]`` describe one feature. ``ids`` are OSM-style
    ("n123", "w456", "r789") when the input knows them, else ``"{layer}:{row}"``.
    ``stats`` counts what the reader did: ``loaded`` plus one ``dropped:<reason>`` or
    ``repaired:<reason>`` entry per kind of problem (never silently lost).

    ``crs`` names the CRS the data came in (for messages) and ``extent`` is where the source
    has data, in WGS84, measured before any bbox filter: the extract bounds an ``.osm``/``.pbf``
    header declares, else the convex hull of all its features (None: unknown or empty).
    """

    source: str
    geometries: list[BaseGeometry] = field(default_factory=list)
    tags: list[dict[str, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    crs: str | None = None
    extent: BaseGeometry | None = None

    def __len__(self) -> int:
        return len(self.geometries)

    def add(self, geometry: BaseGeometry, tags: dict[str, str], fid: str) -> None:
        self.geometries.append(geometry)
        self.tags.append(tags)
        self.ids.append(fid)

    def extend(self, other: "FeatureSet") -> None:
        self.geometries.extend(other.geometries)
        self.tags.extend(other.tags)
        self.ids.extend(other.ids)
        self.stats.update(other.stats)
