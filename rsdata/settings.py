"""Settings declared once: a stage's or source's options as a typed, frozen dataclass.

The recipe schema checks types and fills in defaults; :func:`from_config` then turns the
resolved dict into the component's settings dataclass, once, in the constructor. Component
code reads ``self.settings.field`` and never ``config.get(key, default)``: a default lives in
the schema only (fields without a schema default are ``Optional`` with ``None``), and a test
checks that every settings class and its schema section name the same fields.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, TypeVar

from rsdata.errors import RecipeError

T = TypeVar("T")


def from_config(cls: type[T], config: dict[str, Any], what: str,
                nested: dict[str, type] | None = None) -> T:
    """Build ``cls`` from a schema-resolved config dict (``type`` ignored).

    ``nested`` maps field names to settings classes for sub-objects. Unknown or missing fields
    are a :class:`RecipeError` (the schema normally catches them first; this guards code that
    builds configs by hand).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {k: copy.deepcopy(v) for k, v in config.items() if k != "type"}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise RecipeError(f"{what}: unknown option(s) {unknown}; allowed: {sorted(fields)}")
    for name, sub in (nested or {}).items():
        if isinstance(values.get(name), dict):
            values[name] = from_config(sub, values[name], f"{what}.{name}")
    missing = [n for n, f in fields.items() if n not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise RecipeError(f"{what}: missing option(s) {missing} (a recipe resolved against the "
                          "schema has them: build configs with rsdata.recipe.parse_recipe)")
    return cls(**values)  # type: ignore[call-arg]


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def with_schema_defaults(config: dict[str, Any], defs_name: str, type_name: str) -> dict[str, Any]:
    """A stage entry with the defaults of ``$defs.<defs_name>`` in schemas/recipe.schema.json
    filled in. A recipe run already has them; code and tests that build a stage from a partial
    dict get the same values, so defaults still live in the schema only."""
    from rsdata import schemas
    from rsdata.recipe import apply_defaults

    root = schemas.validator("recipe").schema
    entry = copy.deepcopy({"type": type_name, **config})
    return apply_defaults(entry, root["$defs"][defs_name], root)  # type: ignore[no-any-return]
