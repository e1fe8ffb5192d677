"""The ``layout`` stage: rasterize each tile's OSM objects into ``layout.png``.

    stages:
      - type: osm_join          # measures the tile; keeps osm.objects because layout needs them
        sources: [...]
      - type: layout            # writes the layout.png member (class map rsdata-layout-v1)
        drop_objects: false     # true: remove osm.objects from the json afterwards (smaller json;
                                # only when no later stage reads them)

The class map and the painting rules are in :mod:`rsdata.synth.layouts`. The layout has the
tile's size (``geo.size``) and its line widths follow the tile's GSD (``geo.gsd_m``). The json
gets ``layout: {classes: "rsdata-layout-v1", member: "layout.png", pixels: {class: count}}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from rsdata.errors import InputError
from rsdata.sample import Sample
from rsdata.settings import from_config
from rsdata.stage import Stage
from rsdata.stats import StageStats
from rsdata.synth.layouts import LAYOUT_MEMBER, LAYOUT_VERSION, class_pixels, encode_png, rasterize


@dataclass(frozen=True)
class LayoutSettings:
    drop_objects: bool


def layout_of(meta: dict[str, Any], key: str) -> Any:
    """The class map of a sample from its json (``osm.objects`` and ``geo``)."""
    osm = meta.get("osm")
    if not isinstance(osm, dict) or "objects" not in osm:
        raise InputError(
            f"sample {key} has no osm.objects, so its layout cannot be drawn: put an osm_join stage "
            "before the layout stage (it keeps the objects when a layout stage follows), or set "
            "keep_objects: true on it")
    geo = meta.get("geo") or {}
    width, height = (geo.get("size") or [0, 0])[:2]
    gsd = geo.get("gsd_m")
    if not width or not height or not gsd:
        raise InputError(f"sample {key} has no geo.size / geo.gsd_m: its layout cannot be drawn")
    return rasterize(osm["objects"], int(width), int(height), float(gsd))


class LayoutStage(Stage):
    name = "layout"
    settings_class = LayoutSettings
    needs_objects: ClassVar[bool] = True

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.settings = from_config(LayoutSettings, self.config, "layout")

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        for sample in samples:
            stats.n_in += 1
            layout = layout_of(sample.meta, sample.key)
            sample.extra[LAYOUT_MEMBER] = encode_png(layout)
            sample.meta["layout"] = {"classes": LAYOUT_VERSION, "member": LAYOUT_MEMBER,
                                     "pixels": class_pixels(layout)}
            if self.settings.drop_objects:
                sample.meta["osm"].pop("objects", None)
            stats.n_out += 1
            yield sample
