"""Semantic layouts: a tile's OSM objects rasterized into a fixed class map.

The class -> channel map is fixed and versioned (``rsdata-layout-v1``); a model trained on it
records it, and the ``synthetic`` source refuses a model whose conditioning channels differ.

====  ============  ==================================================================  ============
 idx  class         what paints it (OSM tags of visible objects; points are not painted)  line width
====  ============  ==================================================================  ============
   0  unmapped      nothing mapped here
   1  building      building=*                                                             —
   2  road_major    highway=motorway/trunk/primary/secondary/tertiary (+ _link),        12 m
                    aeroway=runway/taxiway                                               45 / 20 m
   3  road_minor    every other highway=* line (residential, unclassified, service ...)   7 m
   4  track         highway=track/path/footway/cycleway/bridleway/steps                  3 m
   5  railway       railway=rail/light_rail/tram/narrow_gauge/monorail/funicular ...      5 m
   6  water         natural=water, water=*, waterway=riverbank/dock, landuse=reservoir/  river 12 m,
                    basin, leisure=swimming_pool/marina; waterway lines                  canal 8 m,
                                                                                        stream 3 m
   7  forest        landuse=forest, natural=wood/scrub
   8  grass         landuse=grass/meadow/village_green/recreation_ground/cemetery,
                    leisure=park/garden/pitch/golf_course/common/playground,
                    natural=grassland/heath/wetland/fell
   9  farmland      landuse=farmland/farmyard/orchard/vineyard/allotments/
                    greenhouse_horticulture/plant_nursery
  10  bare          natural=bare_rock/scree/sand/beach/shingle, landuse=quarry/
                    construction/brownfield/landfill
  11  developed     landuse=residential/commercial/industrial/retail/railway/garages/
                    military, amenity=* areas (parking, school grounds ...), highway and
                    railway areas, aeroway areas, leisure=stadium/sports_centre
====  ============  ==================================================================  ============

Tags not listed fall back on their vocabulary category (water -> water, building -> building,
road -> road_minor, railway -> railway, landuse/amenity -> developed, leisure -> grass); other
categories (and administrative tags such as nature reserves, which are never visible objects)
are not painted. Objects hidden from above (``tunnel``, ``covered=yes``,
``location=underground``, ``indoor=yes``, ``layer`` < 0) are not painted.

Paint order, bottom to top: developed, farmland, grass, forest, bare, water areas, then lines
(water lines, track, railway, road_minor, road_major), then buildings. A pixel takes the class
of the last shape whose interior holds its centre (``rasterio.features.rasterize``, not
``all_touched``); lines are buffered to their width in pixels (width in metres / GSD, at least
1.5 px) with flat ends. Polygon parts are exterior rings (the join stores no holes).

On disk the class map is ``layout.png``: an 8-bit palette PNG whose pixel values are the class
indices (viewers show the palette colours below) with a ``rsdata:layout`` text chunk naming the
class map.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

LAYOUT_VERSION = "rsdata-layout-v1"
LAYOUT_MEMBER = "layout.png"
PNG_TEXT_KEY = "rsdata:layout"

CLASSES: tuple[str, ...] = ("unmapped", "building", "road_major", "road_minor", "track", "railway",
                            "water", "forest", "grass", "farmland", "bare", "developed")
CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}
N_CLASSES = len(CLASSES)
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),          # unmapped
    (220, 50, 40),      # building
    (255, 190, 0),      # road_major
    (250, 250, 250),    # road_minor
    (170, 120, 70),     # track
    (130, 60, 170),     # railway
    (30, 100, 230),     # water
    (20, 100, 40),      # forest
    (120, 200, 90),     # grass
    (235, 220, 140),    # farmland
    (160, 160, 160),    # bare
    (215, 160, 170),    # developed
)

# paint order, bottom to top (areas), then lines, then buildings
AREA_ORDER = ("developed", "farmland", "grass", "forest", "bare", "water")
LINE_ORDER = ("water", "track", "railway", "road_minor", "road_major")
MIN_LINE_PX = 1.5

_MAJOR = {"motorway", "trunk", "primary", "secondary", "tertiary", "motorway_link", "trunk_link",
          "primary_link", "secondary_link", "tertiary_link"}
_TRACK = {"track", "path", "footway", "cycleway", "bridleway", "steps", "corridor"}
_RAIL = {"rail", "light_rail", "tram", "narrow_gauge", "monorail", "funicular", "subway",
         "preserved", "miniature"}
_AREA_TAGS: dict[str, str] = {
    **{f"landuse={v}": "forest" for v in ("forest",)},
    **{f"natural={v}": "forest" for v in ("wood", "scrub")},
    **{f"landuse={v}": "grass" for v in ("grass", "meadow", "village_green", "recreation_ground",
                                          "cemetery", "flowerbed")},
    **{f"leisure={v}": "grass" for v in ("park", "garden", "pitch", "golf_course", "common",
                                          "playground", "dog_park")},
    **{f"natural={v}": "grass" for v in ("grassland", "heath", "wetland", "fell")},
    **{f"landuse={v}": "farmland" for v in ("farmland", "farmyard", "orchard", "vineyard", "allotments",
                                             "greenhouse_horticulture", "plant_nursery")},
    **{f"natural={v}": "bare" for v in ("bare_rock", "scree", "sand", "beach", "shingle")},
    **{f"landuse={v}": "bare" for v in ("quarry", "construction", "brownfield", "landfill")},
    **{f"landuse={v}": "developed" for v in ("residential", "commercial", "industrial", "retail",
                                              "railway", "garages", "military")},
    **{f"leisure={v}": "developed" for v in ("stadium", "sports_centre")},
    **{f"landuse={v}": "water" for v in ("reservoir", "basin")},
    **{f"leisure={v}": "water" for v in ("swimming_pool", "marina")},
    **{f"waterway={v}": "water" for v in ("riverbank", "dock", "boatyard")},
    "natural=water": "water",
    "natural=bay": "water",
}
_WATER_LINE_M = {"river": 12.0, "canal": 8.0, "stream": 3.0, "ditch": 2.0, "drain": 2.0}
_CATEGORY_FALLBACK = {"water": "water", "building": "building", "road": "road_minor",
                      "railway": "railway", "landuse": "developed", "amenity": "developed",
                      "leisure": "grass"}
LINE_WIDTH_M = {"road_major": 12.0, "road_minor": 7.0, "track": 3.0, "railway": 5.0, "water": 3.0}


def hidden(attrs: Mapping[str, str] | None) -> bool:
    """Whether an object's attributes say it cannot be seen from above."""
    if not attrs:
        return False
    if attrs.get("tunnel", "no") not in ("no", ""):
        return True
    if attrs.get("covered") == "yes" or attrs.get("indoor") == "yes":
        return True
    if str(attrs.get("location", "")).startswith("underground"):
        return True
    try:
        return float(str(attrs.get("layer", "0")).split(";")[0]) < 0
    except ValueError:
        return False


def classify(tag: str, category: str | None, geom: str) -> tuple[str, float | None] | None:
    """The layout class of one object (its primary ``key=value`` tag, vocabulary category and
    geometry kind), with the line width in metres for lines; None: not painted."""
    if geom == "point":
        return None
    key, _, value = tag.partition("=")
    if key == "building":
        return ("building", None) if geom == "polygon" else None
    if key == "highway":
        if geom == "polygon":
            return "developed", None
        cls = "road_major" if value in _MAJOR else "track" if value in _TRACK else "road_minor"
        return cls, LINE_WIDTH_M[cls]
    if key == "aeroway":
        if geom == "polygon":
            return "developed", None
        if value in ("runway", "taxiway"):
            return "road_major", 45.0 if value == "runway" else 20.0
        return None
    if key == "railway":
        if geom == "polygon":
            return "developed", None
        return ("railway", LINE_WIDTH_M["railway"]) if value in _RAIL else None
    if key == "waterway" and geom == "line":
        return "water", _WATER_LINE_M.get(value, LINE_WIDTH_M["water"])
    if key == "water" and geom == "polygon":
        return "water", None
    cls = _AREA_TAGS.get(f"{key}={value}")
    if cls is None and key in ("leisure",) and value in ("nature_reserve",):
        return None  # administrative: never painted
    if cls is None:
        cls = _CATEGORY_FALLBACK.get(category or "")
    if cls is None:
        return None
    if geom == "line":
        if cls in LINE_WIDTH_M:
            return cls, LINE_WIDTH_M[cls]
        return None  # area classes drawn as lines (a park's outline) are not painted
    return (cls, None) if cls in AREA_ORDER or cls == "building" else None


def _shapes(objects: Iterable[Mapping[str, Any]], gsd_m: float) -> list[tuple[Any, int]]:
    """(pixel-space geometry, class index) pairs in paint order."""
    import shapely

    layers: dict[tuple[int, int], list[Any]] = {}
    for obj in objects:
        if hidden(obj.get("attrs")):
            continue
        found = classify(str(obj.get("tag", "")), obj.get("category"), str(obj.get("geom", "")))
        if found is None:
            continue
        cls, width_m = found
        parts = [p for p in obj.get("pixels") or [] if len(p) >= 2]
        if not parts:
            continue
        if obj.get("geom") == "polygon":
            polys = [shapely.Polygon(p) for p in parts if len(p) >= 4]
            geoms = [shapely.make_valid(g) if not g.is_valid else g for g in polys]
            order = ((0, AREA_ORDER.index(cls)) if cls != "building" else (2, 0))
        else:
            width_px = max(MIN_LINE_PX, float(width_m or 1.0) / gsd_m)
            geoms = [shapely.LineString(p).buffer(width_px / 2, cap_style="flat", join_style="round")
                     for p in parts]
            order = (1, LINE_ORDER.index(cls))
        layers.setdefault(order, []).extend((g, CLASS_INDEX[cls]) for g in geoms
                                            if g is not None and not g.is_empty)
    return [s for k in sorted(layers) for s in layers[k]]


def rasterize(objects: Iterable[Mapping[str, Any]], width: int, height: int, gsd_m: float) -> np.ndarray:
    """The (height, width) uint8 class map of a tile's objects (``meta["osm"]["objects"]``:
    pixel-space parts, y down) at ``gsd_m`` metres per pixel (for line widths)."""
    from affine import Affine
    from rasterio.features import rasterize as burn

    if gsd_m <= 0:
        raise ValueError(f"gsd_m must be positive, not {gsd_m}")
    shapes = _shapes(objects, gsd_m)
    if not shapes:
        return np.zeros((height, width), np.uint8)
    return burn(shapes, out_shape=(height, width), transform=Affine.identity(), fill=0,
                all_touched=False, dtype="uint8")


def class_pixels(layout: np.ndarray) -> dict[str, int]:
    """Pixels per class name (classes with none left out)."""
    counts = np.bincount(layout.ravel(), minlength=N_CLASSES)
    return {CLASSES[i]: int(c) for i, c in enumerate(counts[:N_CLASSES]) if c}


def encode_png(layout: np.ndarray) -> bytes:
    """The class map as ``layout.png`` (palette PNG: pixel values are class indices)."""
    from PIL import Image, PngImagePlugin

    if layout.dtype != np.uint8 or layout.ndim != 2:
        raise ValueError("a layout is a 2-D uint8 class map")
    if layout.size and int(layout.max()) >= N_CLASSES:
        raise ValueError(f"layout holds class {int(layout.max())}; {LAYOUT_VERSION} has {N_CLASSES}")
    img = Image.frombytes("P", (layout.shape[1], layout.shape[0]), np.ascontiguousarray(layout).tobytes())
    flat = [c for rgb in PALETTE for c in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_TEXT_KEY, f"{LAYOUT_VERSION} " + ",".join(CLASSES))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, optimize=False, compress_level=6)
    return buf.getvalue()


def decode_png(data: bytes, what: str = "layout.png") -> np.ndarray:
    """A ``layout.png`` back to its class map; a PNG of another class map is refused."""
    from PIL import Image

    from rsdata.errors import InputError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            text = (getattr(img, "text", None) or {}).get(PNG_TEXT_KEY)
            if img.mode not in ("P", "L"):
                raise InputError(f"{what}: a layout is a palette or grey PNG of class indices, not {img.mode}")
            arr = np.array(img, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: not a readable PNG ({exc})") from None
    if text is not None and not text.startswith(LAYOUT_VERSION + " "):
        raise InputError(f"{what} uses the class map {text.split(' ')[0]!r}, not {LAYOUT_VERSION}: "
                         "rebuild the layouts with this rsdata (the layout stage)")
    if arr.size and int(arr.max()) >= N_CLASSES:
        raise InputError(f"{what} holds class index {int(arr.max())}; {LAYOUT_VERSION} has {N_CLASSES}")
    return arr


def one_hot(layouts: np.ndarray) -> np.ndarray:
    """(N, H, W) class maps -> (N, C, H, W) float32 one-hot channels (C = N_CLASSES)."""
    eye = np.eye(N_CLASSES, dtype=np.float32)
    return np.ascontiguousarray(eye[layouts].transpose(0, 3, 1, 2))


def colorize(layout: np.ndarray) -> np.ndarray:
    """(H, W) class map -> (H, W, 3) uint8 palette colours (for contact sheets and ControlNet)."""
    return np.asarray(PALETTE, np.uint8)[layout]


def resize_nearest(layout: np.ndarray, width: int, height: int) -> np.ndarray:
    """A class map resampled to (height, width) by nearest pixel centre."""
    h, w = layout.shape
    if (h, w) == (height, width):
        return layout
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(int), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(int), w - 1)
    return layout[rows[:, None], cols[None, :]]


def subjects_phrase(osm: Mapping[str, Any] | None, limit: int = 4) -> str:
    """Words for a text prompt from a tile's OSM statistics: the visible tags' plural phrases,
    largest area then longest first ("buildings, residential roads and water")."""
    tags = [t for t in (osm or {}).get("tags", []) if t.get("visible")]
    tags.sort(key=lambda t: (-float(t.get("area_share") or 0), -float(t.get("length_m") or 0)))
    words: list[str] = []
    for t in tags:
        word = t.get("plural") or t.get("phrase") or t.get("tag", "")
        if word and word not in words:
            words.append(str(word))
        if len(words) >= limit:
            break
    if not words:
        return "open land"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def palette_legend() -> list[dict[str, Any]]:
    """The class map as data: index, name, colour (for docs and reports)."""
    return [{"index": i, "name": n, "color": list(PALETTE[i])} for i, n in enumerate(CLASSES)]


def check_layout_classes(names: Sequence[str], where: str) -> None:
    """Refuse a model whose layout classes are not this class map."""
    from rsdata.errors import InputError

    if list(names) != list(CLASSES):
        raise InputError(f"{where} was trained on the layout classes {list(names)}, but this rsdata "
                         f"rasterizes {LAYOUT_VERSION} = {list(CLASSES)}; retrain it with rsdata "
                         "train-synth on layouts made by this version")
