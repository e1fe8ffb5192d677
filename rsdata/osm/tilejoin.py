"""The OSM join of many tiles at once: the vectorised core of the ``osm_join`` stage.

The stage hands over a partition's tiles (those of one CRS) and this module joins them in one
pass instead of one tile at a time:

* one bulk STRtree query gives every (tile, feature) pair;
* every pair's geometry is moved to its tile's pixel space at once (one coordinate array, a
  per-coordinate affine);
* features inside their tile are kept as they are, the others are cut with ``clip_by_rect``;
  only a pair with a vertex exactly on a tile or 3×3-cell border (grid-aligned data), a
  geometry collection or a multi-point goes through GEOS overlay (``intersection``), because
  there the fast clip and overlay may disagree (a line along the border, a polygon touching
  the tile from outside);
* measures, visibility, 3×3 cell weights, position words and the per-(tile, tag) sums come
  from vectorised passes (``bincount`` in feature order, so sums add up in the same order as
  the per-tile code did); polygons of one tag are unioned only in clusters whose interiors
  overlap (found among those whose boxes meet); elsewhere their areas simply add up.

The statistics equal those of a straightforward per-tile join (``tests/osm/test_tilejoin.py``
keeps one and compares on random geometry) up to floating-point rounding, far below the
rounding the json applies (0.1 m², 1e-4 shares); only the order of cells whose shares differ in
the last bit can differ from the per-tile code's.

Objects (``meta["osm"]["objects"]``, asked for by a later stage or ``keep_objects: true``) and
the object counts of each tag (``count_objects``: touching ways of one tag with no conflicting
``name``/``ref`` are one object; buildings stay one per polygon) are computed here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import Transformer
from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from rsdata.osm.coverage import coverage_of

KIND_NONE, KIND_POINT, KIND_LINE, KIND_POLYGON = 0, 1, 2, 3
KIND_NAMES = ("", "point", "line", "polygon")
CELL_MIN_SHARE = 0.05  # a cell counts as covered when it holds at least 5% of the tag's extent
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
CELL_WORDS = [[f"{r} {c}" for c in COLS] for r in ROWS]
CELL_WORDS[0][1], CELL_WORDS[1][0], CELL_WORDS[1][1], CELL_WORDS[1][2], CELL_WORDS[2][1] = (
    "top", "left", "center", "right", "bottom")
FLAT_CELL_WORDS = [w for row in CELL_WORDS for w in row]
# attributes a camera sees (or that name the object), and those that hide it from above (a
# tunnel, a covered or underground way: rsdata/data/caption_rules.yaml ``hidden``), copied into
# each object's ``attrs`` when the feature has them
OBJECT_ATTRS = ("roof:material", "roof:colour", "building:levels", "surface", "leaf_type", "crop",
                "name", "ref", "tunnel", "covered", "location", "indoor", "layer", "level")
# tags whose features are one object each, touching or not (terraced houses are houses)
SEPARATE_KEYS = frozenset({"building"})
_OSM_ID = re.compile(r"^(node|way|relation)/(\d+)$")
_SHORT_ID = re.compile(r"^([nwr])(\d+)$")
_TYPES = {"n": "node", "w": "way", "r": "relation"}
_SIMPLE_TYPES = np.array([True, True, False, True, False, True, True, False])  # by GEOS type id
_POINT_TYPES = np.array([True, False, False, False, True, False, False, False])
_YS = np.repeat(np.arange(3.0), 3)  # row of each flat cell
_XS = np.tile(np.arange(3.0), 3)  # column of each flat cell


def osm_id(fid: str | None, tags: Mapping[str, str]) -> str | None:
    """``way/123`` style id of a feature: from the reader's id (``w123``: ``full_id`` or
    ``osm_type`` + ``osm_id``) or an ``@id`` column; None when the source has none."""
    if fid:
        m = _SHORT_ID.match(fid)
        if m:
            return f"{_TYPES[m.group(1)]}/{m.group(2)}"
        if _OSM_ID.match(fid):
            return fid
    at = tags.get("@id")
    if at and _OSM_ID.match(str(at).strip()):
        return str(at).strip()
    return None


@dataclass
class TagTable:
    """Per feature of an index, its feature tags (CSR arrays), and per distinct tag what the
    json says of it. Built once per worker and CRS."""

    ptr: np.ndarray  # (F + 1,): feature i's tags are rows ptr[i]:ptr[i + 1]
    tag: np.ndarray  # tag id ((key, value) pair) of each row
    rank: np.ndarray  # 0 for the tag that names the feature
    phrase: np.ndarray  # phrase id of each row
    names: list[tuple[str, str]] = field(default_factory=list)  # tag id -> (key, value)
    # tag id -> its features are one object each (buildings)
    separate: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    templates: list[dict[str, Any]] = field(default_factory=list)  # phrase id -> base entry
    phrases: list[Any] = field(default_factory=list)  # phrase id -> Phrase
    name_ref: list[tuple[str | None, str | None]] = field(default_factory=list)  # per feature
    ids: list[str | None] = field(default_factory=list)  # per feature
    attrs: list[dict[str, str]] = field(default_factory=list)  # per feature
    object_base: list[dict[str, Any]] = field(default_factory=list)  # per feature: id, tag, ...

    @classmethod
    def build(cls, entries: Sequence[Sequence[tuple[str, str, Any]]],
              raw_tags: Sequence[Mapping[str, str]], fids: Sequence[str | None]) -> "TagTable":
        tag_ids: dict[tuple[str, str], int] = {}
        phrase_ids: dict[tuple[str, str, Any], int] = {}
        names: list[tuple[str, str]] = []
        templates: list[dict[str, Any]] = []
        phrases: list[Any] = []
        ptr = [0]
        rows_tag, rows_rank, rows_phrase = [], [], []
        for feature in entries:
            for rank, (key, value, phrase) in enumerate(feature):
                tid = tag_ids.setdefault((key, value), len(tag_ids))
                if tid == len(names):
                    names.append((key, value))
                pid = phrase_ids.get((key, value, phrase))
                if pid is None:
                    pid = phrase_ids[(key, value, phrase)] = len(templates)
                    base = {"key": key, "value": value, "phrase": phrase.singular,
                            "plural": phrase.plural, "mass": phrase.mass,
                            "category": phrase.category}
                    if phrase.plural_verb:
                        base["plural_verb"] = True
                    templates.append(base)
                    phrases.append(phrase)
                rows_tag.append(tid)
                rows_rank.append(rank)
                rows_phrase.append(pid)
            ptr.append(len(rows_tag))
        name_ref = []
        attrs = []
        for tags in raw_tags:
            name, ref = (str(tags.get(k) or "").strip() or None for k in ("name", "ref"))
            name_ref.append((name, ref))
            # every key always present ("" when the feature has none): one fixed structure, so
            # loaders that infer a schema from the first rows (Hugging Face datasets) read them all
            attrs.append({k: ("" if tags.get(k) in (None, "") else str(tags[k])) for k in OBJECT_ATTRS})
        ids = [osm_id(f, t) for f, t in zip(fids, raw_tags)]
        # what an object says of the feature it comes from: the tag that names it
        base = []
        for i, oid in enumerate(ids):
            row = ptr[i]
            key, value = names[rows_tag[row]]
            phrase = phrases[rows_phrase[row]]
            base.append({"id": oid, "tag": f"{key}={value}", "phrase": phrase.singular,
                         "category": phrase.category})
        return cls(ptr=np.asarray(ptr, dtype=np.int64), tag=np.asarray(rows_tag, dtype=np.int64),
                   rank=np.asarray(rows_rank, dtype=np.int64),
                   phrase=np.asarray(rows_phrase, dtype=np.int64), names=names,
                   separate=np.array([k in SEPARATE_KEYS for k, _ in names], dtype=bool),
                   templates=templates, phrases=phrases, name_ref=name_ref, ids=ids, attrs=attrs,
                   object_base=base)


@dataclass
class Thresholds:
    polygon: float
    line: float
    point: float | None


class Tiles:
    """The geometry of a batch of tiles of one CRS: forward and inverse affines, sizes, GSDs,
    corners (in the CRS) and the query polygons."""

    def __init__(self, geos: Sequence[Mapping[str, Any]]) -> None:
        n = self.n = len(geos)
        fwd = np.array([list(g["transform"])[:6] for g in geos], dtype=float).reshape(n, 6)
        self.fwd = fwd
        a, b, c, d, e, f = fwd.T
        det = a * e - b * d
        if (det == 0).any():  # as Affine says it
            ~Affine(*fwd[np.flatnonzero(det == 0)[0]].tolist())
        # Affine.__invert__, element by element (the same arithmetic, so the same numbers)
        idet = 1.0 / det
        ra, rb, rd, re = e * idet, -b * idet, -d * idet, a * idet
        self.inv = np.column_stack([ra, rb, -c * ra - f * rb, rd, re, -c * rd - f * re])
        size = np.array([g["size"] for g in geos], dtype=float).reshape(n, 2)
        self.w, self.h = size[:, 0], size[:, 1]
        gsd = np.array([g["gsd_xy_m"] for g in geos], dtype=float).reshape(n, 2)
        self.gx, self.gy = gsd[:, 0], gsd[:, 1]
        # corners (0,0) (w,0) (w,h) (0,h) through the affine, as Affine.__matmul__ computes them
        px = np.stack([np.zeros(n), self.w, self.w, np.zeros(n)], axis=1)
        py = np.stack([np.zeros(n), np.zeros(n), self.h, self.h], axis=1)
        a, b, c, d, e, f = (fwd[:, k:k + 1] for k in range(6))
        self.corners = np.stack([px * a + py * b + c, px * d + py * e + f], axis=-1)  # (n, 4, 2)
        self.polygons = shapely.polygons(self.corners)


def tiles_wgs84(corners: np.ndarray, transformer: Transformer | None) -> np.ndarray:
    """Tiles (corners in their CRS) as densified WGS84 polygons, as
    :func:`rsdata.osm.coverage.tile_polygon_wgs84` makes them one at a time."""
    ring = np.concatenate([corners, corners[:, :1]], axis=1)  # (n, 5, 2)
    t = np.linspace(0, 1, 9)[:-1]
    a, b = ring[:, :-1, None, :], ring[:, 1:, None, :]  # (n, 4, 1, 2)
    pts = (a + (b - a) * t[None, None, :, None]).reshape(len(corners), -1, 2)
    if transformer is not None:
        flat = pts.reshape(-1, 2)
        x, y = transformer.transform(flat[:, 0], flat[:, 1])
        pts = np.column_stack([x, y]).reshape(pts.shape)
    return shapely.polygons(pts)


def coverage_many(tiles: np.ndarray, covers: Sequence[tuple[str, BaseGeometry]],
                  union: BaseGeometry | None) -> list[dict[str, Any]]:
    """:func:`rsdata.osm.coverage.coverage_of` for an array of WGS84 tiles, with the common
    cases (inside all coverage, outside it) answered by vectorised predicates."""
    n = len(tiles)
    if union is None or union.is_empty or not n:
        return [{"fraction": 0.0, "sources": []} for _ in range(n)]
    area = shapely.area(tiles)
    inside = shapely.contains(union, tiles)
    touching = shapely.intersects(union, tiles)
    per_cover = [(sid, geom, shapely.intersects(geom, tiles), shapely.contains(geom, tiles))
                 for sid, geom in covers]
    out: list[dict[str, Any]] = []
    for i in range(n):
        if area[i] <= 0 or not touching[i]:
            out.append({"fraction": 0.0, "sources": []})
        elif not inside[i]:
            out.append(coverage_of(tiles[i], covers, union))
        else:
            ids = [sid for sid, geom, hit, within in per_cover
                   if hit[i] and (within[i] or shapely.intersection(geom, tiles[i]).area > 0)]
            out.append({"fraction": 1.0, "sources": ids})
    return out


def position_words_many(weights: np.ndarray) -> list[tuple[str, list[str]]]:
    """:func:`rsdata.osm.join.position_words` for (n, 9) weight rows at once (same arithmetic:
    each row's total, shares and centre of mass are reduced over its 9 cells as numpy reduces
    a 3×3 array)."""
    n = len(weights)
    if not n:
        return []
    total = weights.sum(axis=1)
    positive = total > 0
    share = np.zeros_like(weights)
    share[positive] = weights[positive] / total[positive, None]
    covered = share >= CELL_MIN_SHARE
    grid = covered.reshape(n, 3, 3)
    cols_hit = grid.any(axis=1)
    rows_hit = grid.any(axis=2)
    spans = (cols_hit[:, 0] & cols_hit[:, 2]) | (rows_hit[:, 0] & rows_hit[:, 2])
    ncov = covered.sum(axis=1)
    across = (ncov >= 6) | (spans & (ncov >= 3))
    r = np.rint((share * _YS).sum(axis=1)).astype(int)
    c = np.rint((share * _XS).sum(axis=1)).astype(int)
    order = np.argsort(-share, axis=1, kind="stable")
    in_order = np.take_along_axis(covered, order, axis=1).tolist()
    word = [FLAT_CELL_WORDS[k] if not a else "across"
            for k, a in zip((r * 3 + c).tolist(), across.tolist())]
    out = []
    for o, cov, w, pos in zip(order.tolist(), in_order, word, positive.tolist()):
        cells = [FLAT_CELL_WORDS[k] for k, x in zip(o, cov) if x]
        out.append((w, cells) if pos else ("center", []))
    return out


@dataclass
class Pairs:
    """Every (tile, feature) pair of a batch, clipped to its tile in pixel space and measured."""

    tile: np.ndarray
    feature: np.ndarray
    clipped: np.ndarray
    kind: np.ndarray
    area: np.ndarray
    length: np.ndarray
    visible: np.ndarray
    weights: np.ndarray  # (n, 9)
    bounds: np.ndarray  # (n, 4) of the clipped geometry, pixels


def _clip_pairs(geoms: np.ndarray, tile: np.ndarray, tiles: Tiles
                ) -> tuple[np.ndarray, np.ndarray]:
    """The pairs' geometries in their tiles' pixel space, clipped to the tile; and which pairs
    went through GEOS overlay (``exact``) because a vertex lies on a tile or cell border."""
    n = len(geoms)
    coords, cidx = shapely.get_coordinates(geoms, return_index=True)
    ct = tile[cidx]
    ia, ib, ic, id_, ie, if_ = (tiles.inv[ct, k] for k in range(6))
    x, y = coords[:, 0], coords[:, 1]
    px = x * ia + y * ib + ic
    py = x * id_ + y * ie + if_
    pix = shapely.set_coordinates(np.array(geoms, dtype=object, copy=True),
                                  np.column_stack([px, py]))
    w, h = tiles.w[ct], tiles.h[ct]
    w3, h3 = w / 3, h / 3
    on_border = ((px == 0) | (px == w) | (py == 0) | (py == h)
                 | (px == w3) | (px == 2 * w / 3) | (px == w3 + w3) | (px == 2 * w / 3 + w3)
                 | (py == h3) | (py == 2 * h / 3) | (py == h3 + h3) | (py == 2 * h / 3 + h3))
    exact = np.bincount(cidx[on_border], minlength=n) > 0
    type_id = shapely.get_type_id(pix)
    exact |= ~_SIMPLE_TYPES[np.clip(type_id, 0, 7)]
    b = shapely.bounds(pix)
    tw, th = tiles.w[tile], tiles.h[tile]
    inside = (b[:, 0] > 0) & (b[:, 1] > 0) & (b[:, 2] < tw) & (b[:, 3] < th)
    exact |= ~inside & _POINT_TYPES[np.clip(type_id, 0, 7)]
    clipped = pix.copy()
    cut = np.flatnonzero(~inside & ~exact)
    if len(cut):
        for size in np.unique(np.column_stack([tw[cut], th[cut]]), axis=0):
            sel = cut[(tw[cut] == size[0]) & (th[cut] == size[1])]
            clipped[sel] = shapely.clip_by_rect(pix[sel], 0.0, 0.0, float(size[0]), float(size[1]))
        empty = cut[shapely.is_empty(clipped[cut])]
        exact[empty] = True  # touches the tile only along its border: let overlay decide
    ex = np.flatnonzero(exact)
    if len(ex):
        boxes = shapely.box(0.0, 0.0, tw[ex], th[ex])
        clipped[ex] = shapely.intersection(pix[ex], boxes)
    return clipped, exact


def _cell_weights(clipped: np.ndarray, kind: np.ndarray, measure: np.ndarray, bounds: np.ndarray,
                  tile: np.ndarray, exact: np.ndarray, tiles: Tiles) -> np.ndarray:
    """(n, 9): how much of each clipped feature lies in each 3×3 cell of its tile (area, length
    or 1 for points). A feature inside one cell (most buildings) gets its whole measure there
    from its box alone; the others are clipped per cell they reach."""
    n = len(clipped)
    out = np.zeros((n, 9))
    valid = kind != KIND_NONE
    if not valid.any():
        return out
    w, h = tiles.w[tile], tiles.h[tile]
    col0 = np.clip(bounds[:, 0] * 3 // w, 0, 2).astype(int)
    col1 = np.clip(bounds[:, 2] * 3 // w, 0, 2).astype(int)
    row0 = np.clip(bounds[:, 1] * 3 // h, 0, 2).astype(int)
    row1 = np.clip(bounds[:, 3] * 3 // h, 0, 2).astype(int)
    single = valid & (col0 == col1) & (row0 == row1)
    idx = np.flatnonzero(single)
    out[idx, (row0 * 3 + col0)[idx]] = measure[idx]
    cross = valid & ~single
    # overlay (as the per-tile code does) where the fast clip may not agree
    slow = np.flatnonzero(cross & (exact | (kind == KIND_POINT)))
    for j in slow:
        xs = np.arange(3) * w[j] / 3
        ys = np.arange(3) * h[j] / 3
        cells = shapely.box(np.tile(xs, 3), np.repeat(ys, 3), np.tile(xs, 3) + w[j] / 3,
                            np.repeat(ys, 3) + h[j] / 3)
        parts = shapely.intersection(clipped[j], cells)
        out[j] = (shapely.area(parts) if kind[j] == KIND_POLYGON else
                  shapely.length(parts) if kind[j] == KIND_LINE else
                  (~shapely.is_empty(parts)).astype(float))
    fast = np.flatnonzero(cross & ~exact & (kind != KIND_POINT))
    if not len(fast):
        return out
    cells = np.arange(9)
    r, c = cells // 3, cells % 3
    reach = ((r[None, :] >= row0[fast, None]) & (r[None, :] <= row1[fast, None])
             & (c[None, :] >= col0[fast, None]) & (c[None, :] <= col1[fast, None]))
    pj, pc = np.nonzero(reach)
    pairs = fast[pj]
    key = np.column_stack([w[pairs], h[pairs], pc])
    for wv, hv, cell in np.unique(key, axis=0):
        sel = np.flatnonzero((key[:, 0] == wv) & (key[:, 1] == hv) & (key[:, 2] == cell))
        cr, cc = int(cell) // 3, int(cell) % 3
        x0 = float(cc * wv / 3)
        y0 = float(cr * hv / 3)
        cell_box = shapely.box(x0, y0, x0 + wv / 3, y0 + hv / 3)
        part = shapely.clip_by_rect(clipped[pairs[sel]], x0, y0, x0 + wv / 3, y0 + hv / 3)
        js = pairs[sel]
        area = shapely.area(part)
        # a cell covered whole measures as the cell's own box does (as overlay returns it), so
        # equal shares stay exactly equal
        full_area = cell_box.area
        full = ((kind[js] == KIND_POLYGON) & (np.abs(area - full_area) <= 1e-9 * full_area)
                & (shapely.get_num_coordinates(part) == 5))
        area[full] = full_area
        out[js, int(cell)] = np.where(kind[js] == KIND_POLYGON, area, shapely.length(part))
    return out


def clip_and_measure(index_tree: STRtree, geometries: np.ndarray, tiles: Tiles,
                     thresholds: Thresholds) -> Pairs:
    """Query, clip and measure every (tile, feature) pair of a batch."""
    if tiles.n and len(geometries):
        hits = index_tree.query(tiles.polygons, predicate="intersects")
    else:
        hits = np.zeros((2, 0), dtype=np.int64)
    order = np.lexsort((hits[1], hits[0]))
    tile, feature = hits[0][order], hits[1][order]
    n = len(tile)
    if not n:
        empty = np.zeros(0)
        return Pairs(tile, feature, np.array([], dtype=object), np.zeros(0, int), empty, empty,
                     np.zeros(0, bool), np.zeros((0, 9)), np.zeros((0, 4)))
    clipped, exact = _clip_pairs(geometries[feature], tile, tiles)
    dims = shapely.get_dimensions(clipped)
    area = shapely.area(clipped)
    length = shapely.length(clipped)
    empty = shapely.is_empty(clipped)
    kind = np.where((dims == 2) & (area > 0), KIND_POLYGON,
                    np.where((dims >= 1) & (length > 0), KIND_LINE,
                             np.where((dims >= 0) & ~empty, KIND_POINT, KIND_NONE)))
    visible = (((kind == KIND_POLYGON) & (area >= thresholds.polygon))
               | ((kind == KIND_LINE) & (length >= thresholds.line))
               | ((kind == KIND_POINT) & (thresholds.point is not None)))
    measure = np.where(kind == KIND_POLYGON, area,
                       np.where(kind == KIND_LINE, length, (kind == KIND_POINT).astype(float)))
    bounds = shapely.bounds(clipped)
    weights = _cell_weights(clipped, kind, measure, bounds, tile, exact, tiles)
    return Pairs(tile, feature, clipped, kind, area, length, visible, weights, bounds)


def _box_pairs(bounds: np.ndarray, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of boxes (pixel bounds) of one tile that meet. Every tile has its own pixel
    space, so the tiles' boxes are laid side by side before they go into one STRtree."""
    stride = float(np.max(bounds[:, 2:]) - min(0.0, float(np.min(bounds[:, :2])))) * 2 + 16
    off = tile * stride
    boxes = shapely.box(bounds[:, 0] + off, bounds[:, 1], bounds[:, 2] + off, bounds[:, 3])
    i, j = STRtree(boxes).query(boxes)
    keep = (i < j) & (tile[i] == tile[j])
    return i[keep], j[keep]


def _overlap_clusters(pairs: Pairs, rows_pair: np.ndarray, group: np.ndarray
                      ) -> dict[int, list[np.ndarray]]:
    """Per (tile, tag) group whose polygons overlap, the clusters of overlapping polygons (pair
    indices). Overlap is looked for only among polygons whose boxes meet; polygons that only
    touch (terraced houses) do not overlap, and apart from the clusters areas simply add up."""
    poly_rows = np.flatnonzero(pairs.kind[rows_pair] == KIND_POLYGON)
    if len(poly_rows) < 2:
        return {}
    counts = np.bincount(group[poly_rows])
    poly_rows = poly_rows[counts[group[poly_rows]] > 1]
    if len(poly_rows) < 2:
        return {}
    i, j = _box_pairs(pairs.bounds[rows_pair[poly_rows]], pairs.tile[rows_pair[poly_rows]])
    g = group[poly_rows]
    same = g[i] == g[j]
    i, j = i[same], j[same]
    if not len(i):
        return {}
    geoms = pairs.clipped[rows_pair[poly_rows]]
    try:  # do the interiors meet?
        inner = shapely.relate_pattern(geoms[i], geoms[j], "T********")
    except shapely.errors.GEOSException:
        inner = np.ones(len(i), dtype=bool)
    i, j = i[inner], j[inner]
    if not len(i):
        return {}
    parent = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(i.tolist(), j.tolist()):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    members: dict[int, list[int]] = {}
    for x in sorted(parent):
        members.setdefault(find(x), []).append(x)
    out: dict[int, list[np.ndarray]] = {}
    for root, xs in members.items():
        out.setdefault(int(g[root]), []).append(rows_pair[poly_rows[np.array(xs)]])
    return out


def _object_components(pairs: Pairs, table: TagTable, rows_pair: np.ndarray,
                       rows_tag: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Per row, the row that represents its object (union-find root): rows of one group whose
    clipped geometries touch and whose ``name``/``ref`` do not conflict are one object."""
    parent = np.arange(len(rows_pair))
    cand = np.flatnonzero(candidates)
    if len(cand) < 2:
        return parent
    uniq_pairs = np.unique(rows_pair[cand])
    qi, qj = _box_pairs(pairs.bounds[uniq_pairs], pairs.tile[uniq_pairs])
    ga, gb = pairs.clipped[uniq_pairs[qi]], pairs.clipped[uniq_pairs[qj]]
    try:
        keep = shapely.intersects(ga, gb)
    except shapely.errors.GEOSException:  # a dirty fast clip: repair, then ask again
        keep = shapely.intersects(shapely.make_valid(ga), shapely.make_valid(gb))
    if not keep.any():
        return parent
    row_of = {(int(p), int(t)): int(r) for r, p, t in zip(cand, rows_pair[cand], rows_tag[cand])}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(uniq_pairs[qi[keep]].tolist(), uniq_pairs[qj[keep]].tolist()):
        fa, fb = int(pairs.feature[a]), int(pairs.feature[b])
        (na, ra), (nb, rb) = table.name_ref[fa], table.name_ref[fb]
        if (na and nb and na != nb) or (ra and rb and ra != rb):
            continue
        tags_b = set(table.tag[table.ptr[fb]:table.ptr[fb + 1]].tolist())
        for t in table.tag[table.ptr[fa]:table.ptr[fa + 1]].tolist():
            if t in tags_b and (a, t) in row_of and (b, t) in row_of:
                x, y = find(row_of[(a, t)]), find(row_of[(b, t)])
                if x != y:
                    parent[max(x, y)] = min(x, y)
    for r in cand:
        parent[r] = find(int(r))
    return parent


def aggregate(pairs: Pairs, table: TagTable, tiles: Tiles
              ) -> list[tuple[int, list[dict[str, Any]]]]:
    """Per tile: (number of features, the tag statistics, sorted as the json lists them)."""
    valid = np.flatnonzero(pairs.kind != KIND_NONE)
    n_features = np.bincount(pairs.tile[valid], minlength=tiles.n)
    if not len(valid):
        return [(0, []) for _ in range(tiles.n)]
    f = pairs.feature[valid]
    counts = table.ptr[f + 1] - table.ptr[f]
    rows_pair = np.repeat(valid, counts)
    starts = np.repeat(table.ptr[f] - np.cumsum(counts) + counts, counts)
    flat = starts + np.arange(len(rows_pair))
    rows_tag = table.tag[flat]
    n_tags = max(1, len(table.names))
    key = pairs.tile[rows_pair] * n_tags + rows_tag
    uniq, first, group = np.unique(key, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    G = len(uniq)
    g_tile = uniq // n_tags
    g_tag = uniq % n_tags
    g_phrase = table.phrase[flat[first]]
    kind = pairs.kind[rows_pair]
    vis = pairs.visible[rows_pair]
    is_poly = kind == KIND_POLYGON
    is_line = kind == KIND_LINE
    count = np.bincount(group, minlength=G)
    vcount = np.bincount(group, weights=vis, minlength=G)
    primary = np.bincount(group, weights=table.rank[flat] == 0, minlength=G)
    n_poly = np.bincount(group, weights=is_poly, minlength=G)
    n_line = np.bincount(group, weights=is_line, minlength=G)
    n_point = np.bincount(group, weights=kind == KIND_POINT, minlength=G)
    area_px = np.bincount(group, weights=np.where(is_poly, pairs.area[rows_pair], 0.0), minlength=G)
    length_px = np.bincount(group, weights=np.where(is_line, pairs.length[rows_pair], 0.0),
                            minlength=G)
    for g, clusters in _overlap_clusters(pairs, rows_pair, group).items():
        # overlapping polygons of one tag (duplicated landuse) must not count twice
        for members in clusters:
            area_px[g] += _union_area(pairs.clipped[members]) - pairs.area[members].sum()
    w = pairs.weights[rows_pair]
    gw = np.column_stack([np.bincount(group, weights=w[:, k], minlength=G) for k in range(9)])
    positions = position_words_many(gw)
    # objects: touching ways of one tag are one object (buildings: one per polygon)
    candidates = (count[group] > 1) & ~table.separate[rows_tag]
    root = _object_components(pairs, table, rows_pair, rows_tag, candidates)
    is_root = root == np.arange(len(root))
    n_objects = np.bincount(group, weights=is_root, minlength=G)
    obj_visible = np.zeros(len(root), dtype=bool)
    np.logical_or.at(obj_visible, root, vis)
    n_vis_objects = np.bincount(group, weights=is_root & obj_visible, minlength=G)
    px_area = tiles.gx * tiles.gy
    px_len = np.sqrt(tiles.gx * tiles.gy)
    tile_area = tiles.w * tiles.h
    per_tile: list[list[dict[str, Any]]] = [[] for _ in range(tiles.n)]
    for g in range(G):
        t = int(g_tile[g])
        key_, value = table.names[int(g_tag[g])]
        entry = dict(table.templates[int(g_phrase[g])])
        geom_types = {}
        if n_line[g]:
            geom_types["line"] = int(n_line[g])
        if n_point[g]:
            geom_types["point"] = int(n_point[g])
        if n_poly[g]:
            geom_types["polygon"] = int(n_poly[g])
        position, cells = positions[g]
        a = float(area_px[g])
        entry.update({
            "count": int(count[g]), "count_ways": int(count[g]),
            "count_objects": int(n_objects[g]), "visible_count": int(vcount[g]),
            "visible_objects": int(n_vis_objects[g]), "geom_types": geom_types,
            "tag": f"{key_}={value}", "visible": bool(vcount[g] > 0),
            "primary": bool(primary[g] > 0),
            "area_m2": round(a * float(px_area[t]), 1),
            "area_share": round(min(1.0, a / float(tile_area[t])), 4),
            "length_m": round(float(length_px[g]) * float(px_len[t]), 1),
            "position": position, "cells": cells})
        per_tile[t].append(entry)
    out = []
    for t in range(tiles.n):
        tags = per_tile[t]
        tags.sort(key=lambda e: (not e["visible"], -e["area_share"], -e["length_m"], -e["count"],
                                 e["tag"]))
        out.append((int(n_features[t]), tags))
    return out


def _union_area(polys: np.ndarray) -> float:
    try:
        return float(shapely.union_all(polys).area)
    except shapely.errors.GEOSException:  # a dirty fast clip: repair, then union
        return float(shapely.union_all(shapely.make_valid(polys)).area)


def objects(pairs: Pairs, table: TagTable, tiles: Tiles, geographic: bool
            ) -> list[list[dict[str, Any]]]:
    """Per tile, its visible clipped objects (one per feature, named by its primary tag) in the
    stored image's pixel space, largest area then longest first."""
    out: list[list[dict[str, Any]]] = [[] for _ in range(tiles.n)]
    sel = np.flatnonzero(pairs.visible)
    if not len(sel):
        return out
    geoms = pairs.clipped[sel]
    kind = pairs.kind[sel]
    tile = pairs.tile[sel]
    # parts of each object's own dimension: polygon exterior rings, lines, points
    parts, pidx = shapely.get_parts(geoms, return_index=True)
    nested = shapely.get_num_geometries(parts) > 1  # a collection's multi-part members
    if nested.any() or (shapely.get_type_id(parts) == 7).any():
        sub, sidx = shapely.get_parts(parts, return_index=True)
        parts, pidx = sub, pidx[sidx]
    pdims = shapely.get_dimensions(parts)
    pkind = kind[pidx]
    want = np.where(pkind == KIND_POLYGON, (pdims == 2) & (shapely.area(parts) > 0),
                    np.where(pkind == KIND_LINE, (pdims >= 1) & (shapely.length(parts) > 0),
                             (pdims == 0) & ~shapely.is_empty(parts)))
    parts, pidx = parts[want], pidx[want]
    rings = np.where(shapely.get_dimensions(parts) == 2, shapely.get_exterior_ring(parts), parts)
    coords, ridx = shapely.get_coordinates(rings, return_index=True)
    coord_list = np.round(coords, 1).tolist()
    ends = np.cumsum(np.bincount(ridx, minlength=len(rings))).tolist()
    per_object: list[list[list[list[float]]]] = [[] for _ in range(len(sel))]
    start = 0
    for p, end in zip(pidx.tolist(), ends):
        per_object[p].append(coord_list[start:end])
        start = end
    b = pairs.bounds[sel]
    w, h = tiles.w[tile], tiles.h[tile]
    x0, y0 = np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h)
    x1, y1 = np.clip(b[:, 2], 0, w), np.clip(b[:, 3], 0, h)
    fwd = tiles.fwd[tile]
    bx = np.stack([x0, x1, x1, x0], axis=1)
    by = np.stack([y0, y0, y1, y1], axis=1)
    cx = bx * fwd[:, 0:1] + by * fwd[:, 1:2] + fwd[:, 2:3]
    cy = bx * fwd[:, 3:4] + by * fwd[:, 4:5] + fwd[:, 5:6]
    box_crs = np.round(np.column_stack([cx.min(1), cy.min(1), cx.max(1), cy.max(1)]),
                       8 if geographic else 3).tolist()
    boxes = np.round(np.column_stack([x0, y0, x1, y1]), 1).tolist()
    cent = shapely.get_coordinates(shapely.centroid(geoms))
    if len(cent) != len(sel):  # (a visible object always has a centroid; guard anyway)
        cent = np.column_stack([(x0 + x1) / 2, (y0 + y1) / 2])
    col = np.clip(np.floor(cent[:, 0] * 3 / w), 0, 2).astype(int)
    row = np.clip(np.floor(cent[:, 1] * 3 / h), 0, 2).astype(int)
    cell = [FLAT_CELL_WORDS[k] for k in (row * 3 + col).tolist()]
    eps = 1e-9 * np.maximum(w, h)
    edge = ((b[:, 0] <= eps) | (b[:, 1] <= eps) | (b[:, 2] >= w - eps)
            | (b[:, 3] >= h - eps)).tolist()
    area = np.where(kind == KIND_POLYGON, pairs.area[sel], 0.0)
    length = np.where(kind == KIND_LINE, pairs.length[sel], 0.0)
    area_px, length_px = np.round(area, 1).tolist(), np.round(length, 1).tolist()
    area_m2 = np.round(area * (tiles.gx * tiles.gy)[tile], 1).tolist()
    length_m = np.round(length * np.sqrt(tiles.gx * tiles.gy)[tile], 1).tolist()
    feature = pairs.feature[sel].tolist()
    geom_word = [KIND_NAMES[k] for k in kind.tolist()]
    tile_l = tile.tolist()
    named = table.object_base
    for i in np.lexsort((-length, -area, tile)).tolist():
        f = feature[i]
        out[tile_l[i]].append({
            **named[f], "geom": geom_word[i], "pixels": per_object[i], "box": boxes[i],
            "box_crs": box_crs[i], "area_px": area_px[i], "length_px": length_px[i],
            "area_m2": area_m2[i], "length_m": length_m[i], "cell": cell[i],
            "touches_edge": edge[i], "attrs": dict(table.attrs[f])})
    return out
