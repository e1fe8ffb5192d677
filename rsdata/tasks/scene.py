"""Scene labels: one dominant land use / cover class per tile, and multi-label tags.

The class list and its thresholds are data: ``rsdata/data/scene_classes.yaml`` (its header
documents the rules; a recipe may name its own file). The evidence is what the OSM join measured
(``osm.tags``: area shares, visible building counts, line lengths) and, when a ``landcover_join``
ran, the class raster's shares (``landcover.classes``). Only visible, primary tags count.

    stages:
      - type: scene_label
        classes: null          # the built-in list (rsdata/data/scene_classes.yaml), or a YAML file

The json gets ``scene``: ``{"label": "residential" | null, "labels": [...], "scores": {class:
ratio}, "classes": "v1", "evidence": [...], "reason": ...}``. ``labels`` are the multi-label tags
(every class whose ``present`` threshold holds); ``scores`` are measure / dominant threshold
(≥ 1 for a class that may be the label). ``rsdata export --format classes`` writes the labelled
tiles as a folder per class, which ``rsdata eval --classes DIR --classnames classnames.json``
reads for zero-shot classification.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from rsdata.errors import InputError, RecipeError
from rsdata.sample import Sample
from rsdata.settings import from_config
from rsdata.stage import RunContext, Stage
from rsdata.stats import StageStats

FULL_COVERAGE = 0.999
RULE_KINDS = ("area", "landcover", "building_share", "building_density", "line")


@dataclass(frozen=True)
class Rule:
    kind: str
    tags: tuple[str, ...]  # area / line tags, or landcover class names
    dominant: float
    present: float
    min_count: int = 0


@dataclass(frozen=True)
class SceneClass:
    name: str
    prompt: str
    level: str  # land | feature
    rules: tuple[Rule, ...]
    excludes: tuple[str, ...] = ()
    full_coverage: bool = False

    @property
    def folder(self) -> str:
        return self.name.replace(" ", "_").replace("/", "_")


@dataclass(frozen=True)
class SceneClasses:
    version: str
    classes: tuple[SceneClass, ...]

    def by_name(self, name: str) -> SceneClass:
        return next(c for c in self.classes if c.name == name)


def parse_classes(data: Any, where: str) -> SceneClasses:
    """A scene class list from its YAML mapping (see the packaged file's header)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise RecipeError(f"{where}: expected a mapping with a non-empty 'classes' list")
    out = []
    names: set[str] = set()
    for i, raw in enumerate(data["classes"]):
        here = f"{where}: classes[{i}]"
        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
            raise RecipeError(f"{here}: a class is a mapping with a 'name'")
        if raw.get("level", "land") not in ("land", "feature"):
            raise RecipeError(f"{here}: level is land or feature, not {raw.get('level')!r}")
        rules = []
        for j, r in enumerate(raw.get("rules") or []):
            kinds = [k for k in RULE_KINDS if k in (r or {})]
            if len(kinds) != 1 or "dominant" not in r:
                raise RecipeError(f"{here}.rules[{j}]: one of {', '.join(RULE_KINDS)} and 'dominant'")
            kind = kinds[0]
            tags = r[kind] if isinstance(r[kind], list) else []
            rules.append(Rule(kind, tuple(str(t) for t in tags), float(r["dominant"]),
                              float(r.get("present", r["dominant"])), int(r.get("min_count", 0))))
        if not rules:
            raise RecipeError(f"{here}: no rules")
        names.add(raw["name"])
        out.append(SceneClass(name=str(raw["name"]), prompt=str(raw.get("prompt") or raw["name"]),
                              level=str(raw.get("level", "land")), rules=tuple(rules),
                              excludes=tuple(str(e) for e in raw.get("excludes") or []),
                              full_coverage=bool(raw.get("full_coverage", False))))
    for c in out:
        unknown = set(c.excludes) - names
        if unknown:
            raise RecipeError(f"{where}: class {c.name!r} excludes unknown classes {sorted(unknown)}")
    return SceneClasses(str(data.get("version", "custom")), tuple(out))


@functools.cache
def default_classes() -> SceneClasses:
    text = resources.files("rsdata").joinpath("data", "scene_classes.yaml").read_text(encoding="utf-8")
    return parse_classes(yaml.safe_load(text), "rsdata/data/scene_classes.yaml")


def load_classes(path: str | Path | None) -> SceneClasses:
    if path is None:
        return default_classes()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"scene classes {path}: {exc.strerror or exc}") from None
    return parse_classes(yaml.safe_load(text), str(path))


def _tag_matches(tag: str, patterns: tuple[str, ...]) -> bool:
    key = tag.split("=", 1)[0]
    return tag in patterns or f"{key}=*" in patterns


@dataclass
class Evidence:
    """The measures rules read, from one sample's json."""

    tags: list[dict[str, Any]]  # visible, primary OSM tags
    landcover: dict[str, float]  # class name -> share of the tile
    width_m: float
    area_ha: float
    full: bool

    @classmethod
    def of(cls, meta: Mapping[str, Any]) -> "Evidence":
        osm = meta.get("osm") or {}
        tags = [t for t in osm.get("tags") or [] if t.get("visible") and t.get("primary", True)]
        lc: dict[str, float] = {}
        land = meta.get("landcover")
        if isinstance(land, Mapping):
            covered = float(land.get("covered", 0.0) or 0.0)
            for c in land.get("classes") or []:
                if c.get("code") is None:
                    continue
                lc[str(c.get("name"))] = lc.get(str(c.get("name")), 0.0) + float(c.get("share", 0.0)) * covered
        geo = meta.get("geo") or {}
        size = geo.get("size") or [0, 0]
        gsd = geo.get("gsd_xy_m") or [geo.get("gsd_m", 0.0)] * 2
        width_m, height_m = float(size[0]) * float(gsd[0]), float(size[1]) * float(gsd[1])
        full = float((osm.get("coverage") or {}).get("fraction", 0.0) or 0.0) >= FULL_COVERAGE
        return cls(tags, lc, width_m, width_m * height_m / 1e4, full)

    def measure(self, rule: Rule) -> float:
        if rule.kind == "area":
            return min(1.0, sum(float(t.get("area_share", 0.0)) for t in self.tags
                                if _tag_matches(str(t["tag"]), rule.tags)))
        if rule.kind == "landcover":
            return min(1.0, sum(v for k, v in self.landcover.items() if k in rule.tags))
        if rule.kind == "line":
            length = sum(float(t.get("length_m", 0.0)) for t in self.tags
                         if _tag_matches(str(t["tag"]), rule.tags))
            return length / self.width_m if self.width_m else 0.0
        buildings = [t for t in self.tags if t.get("category") == "building"]
        if rule.kind == "building_share":
            return min(1.0, sum(float(t.get("area_share", 0.0)) for t in buildings))
        n = sum(int(t.get("visible_count_objects", t.get("visible_count", 0))) for t in buildings)
        if n < rule.min_count or not self.area_ha:
            return 0.0
        return n / self.area_ha


def classify(meta: Mapping[str, Any], classes: SceneClasses | None = None) -> dict[str, Any]:
    """The ``scene`` member of a sample's json (see the module docstring)."""
    classes = classes or default_classes()
    ev = Evidence.of(meta)
    ratios: dict[str, float] = {}
    present: dict[str, float] = {}
    land_share: dict[str, float] = {}
    for c in classes.classes:
        if c.full_coverage and not ev.full:
            continue
        best, best_present, share = 0.0, 0.0, 0.0
        for rule in c.rules:
            m = ev.measure(rule)
            if rule.dominant > 0:
                best = max(best, m / rule.dominant)
            if m >= rule.present and m > 0:
                best_present = max(best_present, m / rule.dominant if rule.dominant else 1.0)
            if rule.kind in ("area", "landcover", "building_share"):
                share = max(share, m)
        if best > 0:
            ratios[c.name] = round(best, 3)
        if best_present > 0:
            present[c.name] = best_present
        land_share[c.name] = share
    excluded = {e for name in present for e in classes.by_name(name).excludes}
    labels = sorted((n for n in present if n not in excluded), key=lambda n: (-present[n], n))

    def eligible(c: SceneClass) -> bool:
        if c.name in excluded or ratios.get(c.name, 0.0) < 1.0:
            return False
        # partial coverage: an unmapped part could hold something larger than a minority class
        return ev.full or c.level != "land" or land_share[c.name] >= 0.5

    label = None
    for level in ("land", "feature"):
        cands = [c.name for c in classes.classes if c.level == level and eligible(c)]
        if cands:
            label = max(cands, key=lambda n: (ratios[n], -[c.name for c in classes.classes].index(n)))
            break
    out: dict[str, Any] = {"label": label, "labels": labels,
                           "scores": dict(sorted(ratios.items())), "classes": classes.version,
                           "evidence": (["osm"] if meta.get("osm") else []) + (["landcover"] if ev.landcover else [])}
    if label is None:
        out["reason"] = ("no class reaches its threshold" if meta.get("osm") or ev.landcover
                         else "no OSM or landcover evidence")
    else:
        out["prompt"] = classes.by_name(label).prompt
    return out


@dataclass(frozen=True)
class SceneLabelSettings:
    """The ``scene_label`` stage's options (``$defs.scene_label``)."""

    classes: str | None  # a class list YAML (relative to the recipe); None: the built-in


class SceneLabel(Stage):
    """Adds ``meta["scene"]`` to every sample (never drops one)."""

    name = "scene_label"
    settings_class: ClassVar[type | None] = SceneLabelSettings

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.settings = from_config(SceneLabelSettings, self.config, "scene_label")
        self.classes_path: str | None = None
        self.init_lazy()

    def init_lazy(self) -> None:
        self._lazy_classes: SceneClasses | None = None

    def input_files(self, ctx: RunContext) -> list[Path]:
        return [ctx.resolve(self.settings.classes)] if self.settings.classes else []

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        if self.settings.classes:
            self.classes_path = str(ctx.resolve(self.settings.classes))
        classes = load_classes(self.classes_path)  # a bad file fails here, before any partition
        return {"classes": classes.version, "names": [c.name for c in classes.classes]}

    def class_list(self) -> SceneClasses:
        if self._lazy_classes is None:
            self._lazy_classes = load_classes(self.classes_path)
        return self._lazy_classes

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        for sample in samples:
            stats.n_in += 1
            scene = classify(sample.meta, self.class_list())
            sample.meta["scene"] = scene
            stats.extra[f"label:{scene['label'] or 'none'}"] += 1
            stats.n_out += 1
            yield sample
