"""The vectorised OSM join (rsdata.osm.tilejoin) against a straightforward per-tile reference.

The reference below is the join as one would write it first: per tile, query the index, move
each feature to pixels, intersect it with the tile (GEOS overlay), measure it, intersect it with
each of the 3x3 cells, sum per tag (a union where a tag has several polygons). The stage joins a
whole batch of tiles at once with clip_by_rect and bincount; both must say the same thing on
random geometry, including grid-aligned features whose vertices lie exactly on tile and cell
borders, polygons with holes, multipolygons, overlapping duplicates, points, features with two
tags, tiles of several sizes and a rotated tile.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from affine import Affine
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon, box

from rsdata.osm.join import OsmJoin, position_words
from rsdata.sample import Sample
from rsdata.stage import RunContext

# tiles in EPSG:4326 with power-of-two pixel sizes, so grid-aligned vertices are exact in pixels
LON0, LAT0 = 20.0, -34.0
DEG = 1 / 1024  # degrees per pixel
GSD = (DEG * 92_385, DEG * 110_922)  # metres per pixel at 34 S


def to_lonlat(x: float, y: float) -> tuple[float, float]:
    return LON0 + x * DEG, LAT0 - y * DEG


def lonlat_geom(geom: Any) -> Any:
    return shapely.transform(geom, lambda xy: np.column_stack([LON0 + xy[:, 0] * DEG,
                                                               LAT0 - xy[:, 1] * DEG]))


def geo(x0: float, y0: float, size: tuple[int, int], rotate: float = 0.0) -> dict[str, Any]:
    t = Affine.translation(*to_lonlat(x0, y0)) @ Affine.rotation(rotate) @ Affine.scale(DEG, -DEG)
    return {"crs": "EPSG:4326", "transform": list(t)[:6], "size": list(size), "gsd_xy_m": list(GSD),
            "gsd_m": float(np.sqrt(GSD[0] * GSD[1]))}


def random_scene(seed: int) -> list[tuple[Any, dict[str, str]]]:
    """Features in global pixel coordinates (x right, y down) over a 256 x 256 px area."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[Any, dict[str, str]]] = []
    n = 0

    def add(geom: Any, tags: dict[str, str]) -> None:
        nonlocal n
        n += 1
        ident = ({"@id": f"way/{n}"} if n % 3 == 0 else
                 {"osm_type": "way", "osm_id": str(n)} if n % 3 == 1 else {})
        rows.append((geom, {**tags, **ident}))

    for _ in range(120):  # rotated buildings, some straddling tile and cell borders
        cx, cy = rng.uniform(0, 256, 2)
        w, h, a = rng.uniform(2, 12), rng.uniform(2, 12), rng.uniform(0, np.pi)
        poly = shapely.affinity.rotate(box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), a,
                                       use_radians=True)
        add(poly, {"building": str(rng.choice(["yes", "house"]))})
    for _ in range(40):  # grid-aligned buildings: vertices on integer pixels (tile borders too)
        x, y = rng.integers(-4, 256, 2)
        w, h = rng.integers(1, 12, 2)
        add(box(x, y, x + w, y + h), {"building": "yes", "roof:material": "metal"})
    for i in range(25):  # roads, some named, some split into touching ways
        pts = np.cumsum(rng.normal(0, 30, (rng.integers(3, 8), 2)), axis=0) + rng.uniform(0, 256, 2)
        tags = {"highway": str(rng.choice(["residential", "track"]))}
        if i % 4 == 0:
            tags["name"] = f"Road {i % 3}"
        if i % 5 == 0 and len(pts) >= 4:
            add(LineString(pts[:3]), tags)
            add(LineString(pts[2:]), tags)
        else:
            add(LineString(pts), tags)
    for y in (0, 64, 100, 128, 64 / 3, 128 / 3 * 2):  # along tile borders and cell lines
        add(LineString([(-10, y), (270, y)]), {"highway": "residential"})
    add(LineString([(64, -5), (64, 300)]), {"waterway": "river"})
    for _ in range(10):  # fields, some with holes, some overlapping duplicates
        cx, cy = rng.uniform(0, 256, 2)
        r = rng.uniform(20, 80)
        ring = [(cx + r * np.cos(t), cy + r * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 9)[:-1]]
        hole = [(cx + r / 3 * np.cos(t), cy + r / 3 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 7)[:-1]]
        poly = Polygon(ring, [hole] if rng.random() < 0.5 else [])
        add(poly, {"landuse": "farmland"})
        if rng.random() < 0.3:
            add(shapely.affinity.translate(poly, 5, 3), {"landuse": "farmland"})
    add(MultiPolygon([box(10, 10, 40, 40), box(70, 70, 100, 100)]), {"natural": "water"})
    add(box(0, 0, 128, 128), {"leisure": "nature_reserve", "landuse": "conservation"})
    add(box(-20, -20, 300, 300), {"landuse": "forest"})  # covers every tile whole
    for _ in range(15):
        add(Point(*rng.uniform(0, 256, 2)), {"natural": "tree"})
    add(Point(64, 64), {"natural": "tree"})  # on a tile corner
    add(MultiPoint([(5, 5), (50, 50), (120, 20)]), {"natural": "tree"})
    return rows


def write_scene(path: Path, rows: list[tuple[Any, dict[str, str]]]) -> Path:
    feats = [{"type": "Feature", "properties": tags,
              "geometry": json.loads(shapely.to_geojson(lonlat_geom(g)))} for g, tags in rows]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def tiles() -> list[dict[str, Any]]:
    out = [geo(x, y, (64, 64)) for x in range(0, 256, 64) for y in range(0, 256, 64)]
    out += [geo(x, y, (48, 40)) for x in (10, 100, 200) for y in (5, 150)]
    out.append(geo(100, 100, (60, 60), rotate=17.0))
    return out


# -- the reference: one tile at a time, GEOS overlay everywhere ------------------------------------
def _kind(g: Any) -> str | None:
    dim = shapely.get_dimensions(g)
    if dim == 2 and g.area > 0:
        return "polygon"
    if dim >= 1 and g.length > 0:
        return "line"
    if dim >= 0 and not g.is_empty:
        return "point"
    return None


def _measure(g: Any, kind: str) -> float:
    return g.area if kind == "polygon" else g.length if kind == "line" else float(not g.is_empty)


def reference(stage: OsmJoin, g: dict[str, Any]) -> dict[str, Any]:
    index = stage._index(g["crs"])
    w, h = g["size"]
    tr = Affine(*g["transform"])
    inv = ~tr
    tile = Polygon([tr @ xy for xy in ((0, 0), (w, 0), (w, h), (0, h))])
    px_area, px_len = g["gsd_xy_m"][0] * g["gsd_xy_m"][1], float(np.sqrt(g["gsd_xy_m"][0] * g["gsd_xy_m"][1]))
    cells = [box(c * w / 3, r * h / 3, c * w / 3 + w / 3, r * h / 3 + h / 3)
             for r in range(3) for c in range(3)]
    feats = []
    for i in sorted(index.tree.query(tile, predicate="intersects").tolist()):
        pix = shapely.transform(index.geometries[i], lambda xy: np.column_stack(
            [inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c, inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f]))
        clipped = pix.intersection(box(0, 0, w, h))
        kind = _kind(clipped)
        if kind is None:
            continue
        visible = ((kind == "polygon" and clipped.area >= stage.min_polygon)
                   or (kind == "line" and clipped.length >= stage.min_line)
                   or (kind == "point" and stage.min_point is not None))
        weights = np.array([_measure(clipped.intersection(c), kind) for c in cells])
        feats.append((i, clipped, kind, visible, weights))
    tags: dict[str, dict[str, Any]] = {}
    members: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for f in feats:
        for rank, (k, v, _phrase) in enumerate(index.tags[f[0]]):
            members[f"{k}={v}"].append((rank, *f))
    for tag, ms in members.items():
        polys = [m[2] for m in ms if m[3] == "polygon"]
        area = shapely.union_all(polys).area if len(polys) > 1 else sum(p.area for p in polys)
        length = sum(m[2].length for m in ms if m[3] == "line")
        weights = sum(m[5] for m in ms)
        position, covered = position_words(weights.reshape(3, 3))
        # objects: members of one tag that touch (and whose names/refs agree) are one object
        parent = list(range(len(ms)))

        def root(x: int) -> int:
            while parent[x] != x:
                x = parent[x]
            return x

        if not tag.startswith("building="):
            for a in range(len(ms)):
                for b in range(a + 1, len(ms)):
                    ta, tb = index.table.name_ref[ms[a][1]], index.table.name_ref[ms[b][1]]
                    if any(x and y and x != y for x, y in zip(ta, tb)):
                        continue
                    if ms[a][2].intersects(ms[b][2]):
                        parent[root(b)] = root(a)
        roots = {root(x) for x in range(len(ms))}
        visible_roots = {root(x) for x in range(len(ms)) if ms[x][4]}
        tags[tag] = {"count": len(ms), "visible_count": sum(m[4] for m in ms),
                     "primary": any(m[0] == 0 for m in ms), "area_m2": area * px_area,
                     "area_share": min(1.0, area / (w * h)), "length_m": length * px_len,
                     "position": position, "cells": covered, "shares": weights / max(weights.sum(), 1e-300),
                     "count_objects": len(roots), "visible_objects": len(visible_roots),
                     "geom_types": dict(sorted({k: sum(m[3] == k for m in ms)
                                                for k in ("line", "point", "polygon")
                                                if any(m[3] == k for m in ms)}.items()))}
    objects = {}
    for i, clipped, kind, visible, _w in feats:
        if visible:
            objects[i] = (clipped, kind)
    return {"n_features": len(feats), "tags": tags, "objects": objects}


CELL_INDEX = {w: k for k, w in enumerate(
    ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"])}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_join_equals_the_per_tile_reference(tmp_path: Path, seed: int) -> None:
    path = write_scene(tmp_path / "scene.geojson", random_scene(seed))
    stage = OsmJoin({"type": "osm_join", "sources": [{"path": str(path)}], "keep_objects": True,
                     "min_pixels": {"polygon": 16, "line": 8, "point": 1}})
    ctx = RunContext(base_dir=tmp_path, state_dir=tmp_path / "state",
                     footprints_wgs84=[(LON0 - 0.05, LAT0 - 0.3, LON0 + 0.3, LAT0 + 0.05)],
                     footprint_crs=["EPSG:4326"])
    stage.prepare(ctx)
    geos = tiles()
    samples = [Sample(key=f"t{i}", image=b"", meta={"key": f"t{i}", "geo": g}) for i, g in enumerate(geos)]
    got = stage.join_many(samples)
    assert [stage.join(s) for s in samples[:3]] == got[:3]  # one at a time: the same
    index = stage._index("EPSG:4326")
    checked = aligned = 0
    for g, osm in zip(geos, got):
        ref = reference(stage, g)
        assert osm["n_features"] == ref["n_features"]
        assert {t["tag"] for t in osm["tags"]} == set(ref["tags"])
        for t in osm["tags"]:
            r = ref["tags"][t["tag"]]
            where = f"{g['transform'][2:6:3]} {t['tag']}"
            for k in ("count", "visible_count", "primary", "position", "geom_types", "count_objects",
                      "visible_objects"):
                assert t[k] == r[k], (where, k, t[k], r[k])
            assert t["count_ways"] == t["count"]
            assert t["visible"] == (r["visible_count"] > 0)
            assert abs(t["area_m2"] - r["area_m2"]) <= 0.05 + 1e-9 * r["area_m2"], where
            assert abs(t["area_share"] - r["area_share"]) <= 5e-5 + 1e-12, where
            assert abs(t["length_m"] - r["length_m"]) <= 0.05 + 1e-9 * r["length_m"], where
            assert set(t["cells"]) == set(r["cells"]), where
            shares = [r["shares"][CELL_INDEX[c]] for c in t["cells"]]
            assert all(a >= b - 1e-9 for a, b in zip(shares, shares[1:])), where  # largest first
            checked += 1
        # objects: one per visible feature, named by its first tag, measured as the reference
        objs = osm["objects"]
        assert len(objs) == len(ref["objects"])
        keys = [(-o["area_px"], -o["length_px"]) for o in objs]
        assert keys == sorted(keys)
        w, h = g["size"]
        for o in objs:
            assert set(o) == {"id", "tag", "phrase", "category", "geom", "pixels", "box", "box_crs",
                              "area_px", "length_px", "area_m2", "length_m", "cell", "touches_edge",
                              "attrs"}
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
            assert o["cell"] in CELL_INDEX
            if o["geom"] == "polygon":
                assert all(p[0] == p[-1] and len(p) >= 4 for p in o["pixels"])
                aligned += o["attrs"].get("roof:material") == "metal"
        ref_by_measure = sorted((round(c.area, 1) if k == "polygon" else 0.0,
                                 round(c.length, 1) if k == "line" else 0.0, k)
                                for c, k in ref["objects"].values())
        got_by_measure = sorted((o["area_px"], o["length_px"], o["geom"]) for o in objs)
        assert len(ref_by_measure) == len(got_by_measure)
        for (ra, rl, rk), (ga, gl, gk) in zip(ref_by_measure, got_by_measure):
            assert rk == gk and abs(ra - ga) <= 0.11 and abs(rl - gl) <= 0.11
    assert checked > 100 and aligned > 0
    ids = {o["id"] for osm in got for o in osm["objects"]}
    assert None in ids and any(i and i.startswith("way/") for i in ids)
    assert index.table.ids.count(None) > 0


def test_objects_in_pixels_and_crs(tmp_path: Path) -> None:
    """An object's pixels, box and box_crs on a hand-built tile."""
    rows = [(box(8, 8, 24, 16), {"building": "yes", "roof:material": "metal", "building:levels": "2",
                                 "@id": "way/7"}),
            (LineString([(-5, 40), (70, 40)]), {"highway": "track", "surface": "dirt",
                                                "osm_type": "way", "osm_id": "9"}),
            (box(50, 50, 51, 51), {"building": "yes"})]  # 1 px: not visible
    path = write_scene(tmp_path / "o.geojson", rows)
    stage = OsmJoin({"type": "osm_join", "sources": [{"path": str(path)}]})
    ctx = RunContext(base_dir=tmp_path, state_dir=tmp_path / "state",
                     footprints_wgs84=[(LON0 - 0.05, LAT0 - 0.3, LON0 + 0.3, LAT0 + 0.05)],
                     footprint_crs=["EPSG:4326"], keep_objects=True)
    stage.prepare(ctx)
    osm = stage.join(Sample(key="t", image=b"", meta={"key": "t", "geo": geo(0, 0, (64, 64))}))
    house, track = osm["objects"]
    assert house["id"] == "way/7" and house["tag"] == "building=yes" and house["geom"] == "polygon"
    assert house["phrase"] == "building" and house["category"] == "building"
    assert house["box"] == [8.0, 8.0, 24.0, 16.0] and house["area_px"] == 128.0
    assert sorted(map(tuple, house["pixels"][0][:-1])) == [(8.0, 8.0), (8.0, 16.0), (24.0, 8.0), (24.0, 16.0)]
    assert house["cell"] == "top left" and not house["touches_edge"]
    assert {k: v for k, v in house["attrs"].items() if v} == {"roof:material": "metal", "building:levels": "2"}
    assert house["area_m2"] == round(128 * GSD[0] * GSD[1], 1) and house["length_px"] == 0
    assert house["box_crs"] == pytest.approx([LON0 + 8 * DEG, LAT0 - 16 * DEG, LON0 + 24 * DEG, LAT0 - 8 * DEG])
    assert track["id"] == "way/9" and track["geom"] == "line" and track["pixels"] == [[[0.0, 40.0], [64.0, 40.0]]]
    assert track["length_px"] == 64.0 and track["touches_edge"] and track["cell"] == "center"
    assert {k: v for k, v in track["attrs"].items() if v} == {"surface": "dirt"} and track["area_px"] == 0
