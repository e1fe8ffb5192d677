"""Caption rules as data: which tags may be a caption's subject, synonyms, visible attributes.

``CaptionRules.default()`` loads the packaged ``rsdata/data/caption_rules.yaml`` (its header
documents the format). Everything here is immutable and picklable.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from rsdata.errors import RsdataError

_RESOURCE = ("data", "caption_rules.yaml")
_FALSE = frozenset({"no", "false", "0", ""})


class CaptionRulesError(RsdataError, ValueError):
    """The caption rules file is malformed; the message names the bad entry."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans only (``yes``/``no`` stay strings: real OSM values)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf"))


@dataclass(frozen=True)
class Attribute:
    """A visible feature attribute (``roof:material``) and how captions word its values."""

    key: str
    form: str  # noun | adjective | levels
    applies_to: frozenset[str]
    values: Mapping[str, str] = field(default_factory=dict)
    noun: str = ""

    def word(self, raw: Any) -> str | None:
        """The caption word of one raw attribute value (None: not a value captions use)."""
        text = str(raw).strip().lower()
        if self.form == "levels":
            try:
                levels = float(text.split(";")[0])
            except ValueError:
                return None
            return str(int(levels)) if levels >= 1 and levels == int(levels) and levels <= 60 else None
        return self.values.get(text.split(";")[0].strip())


@dataclass(frozen=True)
class CaptionRules:
    not_subject_keys: frozenset[str]
    not_subject_prefixes: tuple[str, ...]
    not_subject_tags: frozenset[str]
    hidden: Mapping[str, Any]
    synonyms: Mapping[str, tuple[tuple[str, str], ...]]
    attributes: Mapping[str, Attribute]
    min_known: float

    @staticmethod
    @functools.cache
    def default() -> CaptionRules:
        text = resources.files("rsdata").joinpath(*_RESOURCE).read_text(encoding="utf-8")
        return CaptionRules.from_dict(yaml.load(text, Loader=_Loader))  # noqa: S506 - SafeLoader

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> CaptionRules:
        try:
            ns = data["not_subjects"]
            keys = [str(k) for k in ns.get("keys", [])]
            syn = {str(tag): tuple((str(s), str(p)) for s, p in pairs)
                   for tag, pairs in (data.get("synonyms") or {}).items()}
            attrs_raw = dict(data.get("attributes") or {})
            min_known = float(attrs_raw.pop("min_known", 0.5))
            attrs = {str(k): Attribute(key=str(k), form=str(v["form"]),
                                       applies_to=frozenset(v.get("applies_to", [])),
                                       values={str(a): str(b) for a, b in (v.get("values") or {}).items()},
                                       noun=str(v.get("noun", "")))
                     for k, v in attrs_raw.items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise CaptionRulesError(f"caption rules: malformed entry ({exc!r})") from None
        for a in attrs.values():
            if a.form not in ("noun", "adjective", "levels"):
                raise CaptionRulesError(f"caption rules: attribute {a.key}: unknown form {a.form!r}")
        return CaptionRules(
            not_subject_keys=frozenset(k for k in keys if not k.endswith("*")),
            not_subject_prefixes=tuple(k[:-1] for k in keys if k.endswith("*")),
            not_subject_tags=frozenset(str(t) for t in ns.get("tags", [])),
            hidden=dict(ns.get("hidden") or {}),
            synonyms=syn, attributes=attrs, min_known=min_known)

    # -- subjects ---------------------------------------------------------------------------
    def key_is_subject(self, key: str) -> bool:
        return key not in self.not_subject_keys and not key.startswith(self.not_subject_prefixes)

    def tag_is_subject(self, tag: str) -> bool:
        """Whether a ``key=value`` tag may be a caption's subject (never: reserves, boundaries,
        places, routes, addresses ...)."""
        key = tag.split("=", 1)[0]
        return tag not in self.not_subject_tags and self.key_is_subject(key)

    def hides(self, attrs: Mapping[str, Any] | None) -> bool:
        """Whether an object's attributes hide it from above (tunnel, underground, covered)."""
        for key, rule in self.hidden.items():
            raw = (attrs or {}).get(key)
            if raw is None:
                continue
            value = str(raw).strip().lower()
            if rule == "any":
                if value not in _FALSE:
                    return True
            elif rule == "negative":
                try:
                    if float(value.split(";")[0]) < 0:
                        return True
                except ValueError:
                    continue
            elif value in {str(v).lower() for v in rule}:
                return True
        return False

    def synonyms_of(self, tag: str) -> tuple[tuple[str, str], ...]:
        return self.synonyms.get(tag, ())
