"""Round templates (``annotation/rounds/*.yaml``) and the Label Studio configs they name.

A template is read with the recipe's bounded safe YAML loader, checked against
``schemas/annotation_round.schema.json`` and completed with the schema's defaults. Its labeling
config (XML a user may edit) is checked here before any server sees it: it must parse, declare
no DTD or entities, keep the control names its kind reads (``verdict`` ... below) with the right
tag types, and use only task fields rsdata fills in (:data:`TASK_FIELDS`). Label Studio then
validates the config itself when the project is created; its message is shown as is.
"""

from __future__ import annotations

import copy
import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsdata import schemas
from rsdata.errors import RecipeError

SCHEMA = "annotation_round"

# control name -> Label Studio tag, per kind: what rsdata reads from the answers
CONTROLS: dict[str, dict[str, str]] = {
    "caption_verification": {"verdict": "Choices", "edited_caption": "TextArea"},
    "match_rating": {"match": "Rating"},
    "tag_check": {"visible_tags": "Choices"},
}
# optional controls rsdata reads when present
OPTIONAL_CONTROLS: dict[str, dict[str, str]] = {
    "caption_verification": {"reject_reason": "Choices"},
    "match_rating": {},
    "tag_check": {},
}
VERDICTS = ("accept", "edit", "reject")
# the task fields rsdata fills in (a config may show any of them)
TASK_FIELDS = ("image", "caption", "caption_kind", "tags", "layout_html", "tag_options", "sample_info")
_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
MAX_CONFIG_BYTES = 200_000


class TemplateError(RecipeError):
    """A round template or its labeling config cannot be used."""


@dataclass(frozen=True)
class RoundTemplate:
    """A checked round template with defaults filled in, and its labeling config."""

    path: Path
    data: dict[str, Any]
    config_path: Path
    config_xml: str
    config_sha256: str

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def title(self) -> str:
        return self.data.get("title") or f"rsdata {self.id}"[:50]

    @property
    def instructions(self) -> str:
        return self.data["instructions"]

    @property
    def overlap(self) -> int:
        return int(self.data["overlap"])

    @property
    def sampling(self) -> dict[str, Any]:
        return self.data["sampling"]

    @property
    def answers(self) -> dict[str, Any]:
        return self.data["answers"]

    @property
    def license(self) -> str:
        return self.data["license"]

    @property
    def attribution(self) -> str:
        return self.data.get("attribution") or f"rsdata annotation round {self.id}"


def load_round(path: str | Path) -> RoundTemplate:
    """Read, check and resolve a round template and its labeling config."""
    from rsdata.recipe import apply_defaults, read_recipe_yaml

    path = Path(path)
    if not path.is_file():
        raise TemplateError(f"round template not found: {path}. Templates live in "
                            "annotation/rounds/, e.g. annotation/rounds/caption_verification.yaml")
    data = read_recipe_yaml(path, f"round template {path}")
    if not isinstance(data, dict):
        raise TemplateError(f"round template {path}: expected a YAML mapping (version, id, kind, "
                            f"config, ...), got {type(data).__name__}")
    problems = schemas.errors(SCHEMA, data)
    if problems:
        shown = "\n  - ".join(problems[:6])
        raise TemplateError(f"round template {path} is not valid:\n  - {shown}\n"
                            f"See schemas/{SCHEMA}.schema.json and annotation/rounds/.")
    root = schemas.validator(SCHEMA).schema
    data = apply_defaults(copy.deepcopy(data), root, root)
    edges = data["sampling"]["score_buckets"]
    if list(edges) != sorted(edges):
        raise TemplateError(f"round template {path}: sampling.score_buckets must be ascending, got {edges}")
    if "score_bucket" in data["sampling"]["stratify"] and not data["sampling"]["score"]:
        raise TemplateError(f"round template {path}: sampling.stratify names score_bucket, so "
                            "sampling.score must name the score (a key under scores in the sample json)")
    config_path = (path.resolve().parent / data["config"]).resolve()
    xml = read_config(config_path, data["kind"])
    return RoundTemplate(path=path, data=data, config_path=config_path, config_xml=xml,
                         config_sha256=hashlib.sha256(xml.encode("utf-8")).hexdigest())


def read_config(path: Path, kind: str) -> str:
    """The labeling config's text, checked for what rsdata needs of a config of ``kind``."""
    if not path.is_file():
        raise TemplateError(f"labeling config not found: {path} (config: in the round template, "
                            "relative to the template file)")
    raw = path.read_bytes()
    if len(raw) > MAX_CONFIG_BYTES:
        raise TemplateError(f"labeling config {path} is {len(raw):,} bytes; a config is at most "
                            f"{MAX_CONFIG_BYTES:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TemplateError(f"labeling config {path} is not UTF-8 text") from None
    check_config(text, kind, str(path))
    return text


def check_config(text: str, kind: str, what: str) -> ET.Element:
    """Parse a labeling config and check its controls and task fields for ``kind``."""
    if re.search(r"<!(DOCTYPE|ENTITY)", text, re.IGNORECASE):
        raise TemplateError(f"labeling config {what} declares a DTD or entities; Label Studio "
                            "configs need neither: remove them")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TemplateError(f"labeling config {what} is not well-formed XML: {exc}") from None
    if root.tag != "View":
        raise TemplateError(f"labeling config {what}: the root element must be <View>, not <{root.tag}>")
    tags_by_name: dict[str, str] = {}
    for el in root.iter():
        name = el.attrib.get("name")
        if name:
            if name in tags_by_name:
                raise TemplateError(f"labeling config {what}: two tags are named {name!r}; names "
                                    "must be unique")
            tags_by_name[name] = el.tag
    for name, tag in CONTROLS[kind].items():
        if name not in tags_by_name:
            raise TemplateError(f"labeling config {what}: a {kind} round reads the control "
                                f"<{tag} name=\"{name}\">, which the config lacks. Keep the control "
                                "names of annotation/configs/ (you may change everything else)")
        if tags_by_name[name] != tag:
            raise TemplateError(f"labeling config {what}: control {name!r} must be a <{tag}>, not "
                                f"<{tags_by_name[name]}>")
    for name, tag in OPTIONAL_CONTROLS[kind].items():
        if name in tags_by_name and tags_by_name[name] != tag:
            raise TemplateError(f"labeling config {what}: control {name!r} must be a <{tag}>, not "
                                f"<{tags_by_name[name]}>")
    if kind == "caption_verification":
        verdict = next(el for el in root.iter("Choices") if el.attrib.get("name") == "verdict")
        values = {c.attrib.get("value") for c in verdict.iter("Choice")}
        if not set(VERDICTS) <= values:
            raise TemplateError(f"labeling config {what}: the verdict choices must include "
                                f"{', '.join(VERDICTS)} (found {', '.join(sorted(v for v in values if v))})")
    if kind == "match_rating":
        rating = next(el for el in root.iter("Rating") if el.attrib.get("name") == "match")
        if rating.attrib.get("maxRating", "5") != "5":
            raise TemplateError(f"labeling config {what}: the match rating is on a 1-5 scale "
                                "(maxRating=\"5\")")
    if kind == "tag_check":
        tags = next(el for el in root.iter("Choices") if el.attrib.get("name") == "visible_tags")
        if tags.attrib.get("value") != "$tag_options":
            raise TemplateError(f"labeling config {what}: the visible_tags choices come from the "
                                "task: value=\"$tag_options\"")
    unknown = sorted({m for el in root.iter() for v in el.attrib.values()
                      for m in _VARIABLE.findall(v)} - set(TASK_FIELDS))
    if unknown:
        raise TemplateError(f"labeling config {what} uses task fields rsdata does not fill in: "
                            f"{', '.join('$' + u for u in unknown)}; available: "
                            f"{', '.join('$' + f for f in TASK_FIELDS)}")
    return root


def reject_reasons(xml: str) -> list[str]:
    """The reject reasons a caption_verification config offers (may be empty)."""
    root = ET.fromstring(xml)
    for el in root.iter("Choices"):
        if el.attrib.get("name") == "reject_reason":
            return [c.attrib["value"] for c in el.iter("Choice") if c.attrib.get("value")]
    return []

