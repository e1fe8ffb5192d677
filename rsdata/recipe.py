"""Recipes: YAML files in pipelines/ that say what to build (source + stages + output).

A recipe is read with a safe YAML loader, checked against ``schemas/recipe.schema.json``
(an error names the field path and what was expected there), and completed with the schema's
defaults, so the resolved recipe written into the manifest shows every setting that was used.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jsonschema import Draft202012Validator

from rsdata import schemas
from rsdata.errors import RecipeError
from rsdata.remote import is_url, resolve_input

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMG]i?B)?\s*$")
_UNITS = {None: 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def parse_bytes(value: int | str) -> int:
    """``"64MB"`` -> 64_000_000, ``"1GiB"`` -> 1_073_741_824, ``1000`` -> 1000."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise RecipeError(f"cannot read {value!r} as a size: write e.g. 1000000, '64MB' or '1GiB'")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _resolve_ref(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, not {ref}")
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


def apply_defaults(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """Fill ``default`` values of ``schema`` into a (valid) ``instance``, recursively."""
    schema = _resolve_ref(schema, root)
    if isinstance(instance, dict):
        for sub in schema.get("allOf", []):
            cond = sub.get("if")
            if cond is None:
                apply_defaults(instance, sub, root)
            elif Draft202012Validator(cond).is_valid(instance):
                apply_defaults(instance, sub["then"], root)
        for name, prop in schema.get("properties", {}).items():
            prop = _resolve_ref(prop, root)
            if name not in instance and "default" in prop:
                instance[name] = copy.deepcopy(prop["default"])
            elif name not in instance and prop.get("type") == "object" and "properties" in prop:
                # an optional section whose fields all have defaults
                if all("default" in _resolve_ref(p, root) for p in prop["properties"].values()):
                    instance[name] = apply_defaults({}, prop, root)
            if name in instance:
                apply_defaults(instance[name], prop, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            apply_defaults(item, schema["items"], root)
    return instance


@dataclass(frozen=True)
class Recipe:
    """A validated recipe with defaults filled in.

    ``data`` is the resolved recipe (JSON values only); ``base_dir`` is the directory input
    paths are relative to (the recipe file's directory).
    """

    data: dict[str, Any]
    base_dir: Path
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def source(self) -> dict[str, Any]:
        """The single ``source:`` (a recipe with ``sources:`` has none: use :meth:`source_entries`)."""
        return self.data["source"]

    def source_entries(self) -> list[tuple[str, dict[str, Any], str]]:
        """``(source id, config, key prefix)`` per source. A single ``source:`` keeps its keys
        unprefixed (its id defaults to its type); under ``sources:`` each id prefixes its keys."""
        if "sources" in self.data:
            return [(cfg["id"], cfg, f"{cfg['id']}_") for cfg in self.data["sources"]]
        cfg = self.data["source"]
        return [(cfg.get("id") or cfg["type"], cfg, "")]

    @property
    def stages(self) -> list[dict[str, Any]]:
        return self.data["stages"]

    @property
    def output(self) -> dict[str, Any]:
        return self.data["output"]

    @property
    def allow_remote(self) -> bool:
        return bool(self.data.get("allow_remote", False))

    def resolve(self, path: str) -> Path:
        """An input of the recipe as a local path (relative paths are to the recipe file; URLs
        are fetched when the recipe allows remote inputs, else refused)."""
        return resolve_input(path, self.base_dir, self.allow_remote)

    def output_dir(self) -> Path:
        return Path(self.output.get("dir") or f"out/{self.name}")

    def hash(self, input_checksums: dict[str, str]) -> str:
        """Identity of the corpus this recipe makes: settings + the checksums of its inputs.

        The output directory, the description and the number of workers do not change what is
        produced, so they are left out.
        """
        ident = copy.deepcopy(self.data)
        ident.pop("description", None)
        ident.get("output", {}).pop("dir", None)
        blob = json.dumps({"recipe": ident, "inputs": dict(sorted(input_checksums.items()))},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


# fields that name a service to talk to, not an input to fetch (an LLM endpoint)
SERVICE_FIELDS = frozenset({"base_url"})


def _remote_inputs(data: Any) -> list[str]:
    """Every string in the recipe that is a URL (inputs, raster paths, OSM sources, ...)."""
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key not in SERVICE_FIELDS:
                found.extend(_remote_inputs(value))
    elif isinstance(data, list):
        for value in data:
            found.extend(_remote_inputs(value))
    elif isinstance(data, str) and is_url(data):
        found.append(data)
    return found


def parse_recipe(data: Any, base_dir: Path, path: Path | None = None, what: str = "recipe") -> Recipe:
    """Validate a recipe given as a dict (e.g. from YAML) and fill in its defaults."""
    if not isinstance(data, dict):
        raise RecipeError(f"{what}: a recipe is a YAML mapping with version, name, source, stages "
                          f"and output; got {type(data).__name__}")
    if "source" not in data and "sources" not in data:
        raise RecipeError(f"{what}: 'source' is a required property: a recipe needs source: (one "
                          "source) or sources: (several, each with an id)")
    if "source" in data and "sources" in data:
        raise RecipeError(f"{what}: give either source: (one source) or sources: (several), not both")
    problems = schemas.errors("recipe", data)
    if problems:
        shown = "\n  - ".join(problems[:6])
        raise RecipeError(f"{what} is not a valid recipe:\n  - {shown}\n"
                          "See schemas/recipe.schema.json and the README's recipe section.")
    if not data.get("allow_remote"):
        remote = _remote_inputs(data)
        if remote:
            raise RecipeError(f"{what} names remote inputs ({', '.join(remote[:3])}); rsdata does not "
                              "fetch remote inputs unless the recipe says allow_remote: true at its top level")
    resolved = apply_defaults(copy.deepcopy(data), schemas.validator("recipe").schema,
                              schemas.validator("recipe").schema)
    try:
        parse_bytes(resolved["output"]["max_bytes_per_shard"])
    except RecipeError as exc:
        raise RecipeError(f"{what}: output.max_bytes_per_shard: {exc}") from None
    return Recipe(data=resolved, base_dir=base_dir, path=path)


# -- reading recipe YAML within bounds -----------------------------------------------------------
# A recipe is a small, shallow JSON-like document. YAML can describe far more: anchors and aliases
# (``&a`` / ``*a``) share a node, so ten lines can expand to 10^9 nodes ("billion laughs") that
# everything walking the recipe would visit; tags build bytes, dates and sets that a manifest
# cannot hold. Aliases stay allowed for what recipes use them for (a shared stage setting, a
# ``<<: *defaults`` merge), up to a few and a bounded expanded size, checked while composing,
# before anything is built.
MAX_RECIPE_BYTES = 1_000_000
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 200_000  # nodes after alias expansion
MAX_YAML_DEPTH = 50  # nesting after alias expansion


class _YamlLimitError(Exception):
    """A bound of the recipe loader was passed (message says which and what to do)."""


def _where(node_or_event: Any) -> str:
    mark = getattr(node_or_event, "start_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts aliases, expanded nodes and depth while composing."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0
        self._open_anchors: set[str] = set()
        self._extent: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded depth)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _YamlLimitError(
                    f"{_where(event)}: more than {MAX_YAML_ALIASES} YAML aliases (*name); a recipe "
                    "may reuse a few anchored settings, not build large documents from them. "
                    "Write the values out instead.")
            if event.anchor in self._open_anchors:
                raise _YamlLimitError(f"{_where(event)}: the alias *{event.anchor} refers to a node "
                                      "that contains it (a recursive structure), which a recipe "
                                      "cannot be. Remove the alias.")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _YamlLimitError(f"{_where(event)}: nested more than {MAX_YAML_DEPTH} levels deep; "
                                  "a recipe is a shallow mapping.")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open_anchors.discard(anchor)
        self._measure(node)
        return node

    def _measure(self, node: Any) -> None:
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        size, depth = 1, 1
        for child in children:
            c_size, c_depth = self._extent.get(id(child), (1, 1))
            size += c_size
            depth = max(depth, c_depth + 1)
        self._extent[id(node)] = (size, depth)
        if size > MAX_YAML_NODES:
            raise _YamlLimitError(f"{_where(node)}: this part of the recipe expands to more than "
                                  f"{MAX_YAML_NODES} values through its YAML aliases (*name); a "
                                  "recipe may not be built up from aliases like this. Write the "
                                  "values out, or use fewer aliases.")
        if depth > MAX_YAML_DEPTH:
            raise _YamlLimitError(f"{_where(node)}: nested more than {MAX_YAML_DEPTH} levels deep "
                                  "once its YAML aliases are expanded; a recipe is a shallow mapping.")


class _YamlTimestamp(str):
    """An unquoted date or time as written (kept as text so that an impossible date such as
    2024-02-30 still gets the clear error below rather than a ValueError)."""


RecipeLoader.add_constructor(
    "tag:yaml.org,2002:timestamp",
    lambda loader, node: _YamlTimestamp(loader.construct_scalar(node)))


def _field(path: list[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _check_json_types(value: Any, path: list[str | int], what: str) -> None:
    """Refuse what YAML can build but a recipe (JSON data) cannot hold, naming the field."""
    import datetime as _dt
    import math

    def bad(kind: str, hint: str) -> RecipeError:
        return RecipeError(f"{what}: field '{_field(path)}' is {kind}, which a recipe cannot hold "
                           f"(recipes are plain JSON data: text, numbers, true/false, lists, "
                           f"mappings). {hint}")

    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise bad(f"a mapping with the key {key!r} ({type(key).__name__})",
                          f"Keys must be text: quote it, e.g. '{key}':")
            _check_json_types(item, [*path, key], what)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_types(item, [*path, i], what)
    elif isinstance(value, (_dt.date, _dt.datetime, _YamlTimestamp)):
        raise bad(f"a date ({value}), as YAML reads an unquoted date",
                  f"Quote it to keep it as text, e.g. '{value}'.")
    elif isinstance(value, (bytes, bytearray)):
        raise bad("binary data (a !!binary tag)", "Remove the tag and write text.")
    elif isinstance(value, (set, frozenset)):
        raise bad("a set (a !!set tag or '? key' entries)", "Write a list instead.")
    elif isinstance(value, tuple):
        raise bad("an ordered-pairs value (!!omap / !!pairs)", "Write a mapping or a list instead.")
    elif isinstance(value, float) and not math.isfinite(value):
        raise bad(f"the number {value} (.nan / .inf)", "Give a finite number.")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise bad(f"a {type(value).__name__}", "Write plain text, numbers or lists instead.")


def read_recipe_yaml(path: Path, what: str | None = None) -> Any:
    """Read a recipe file's YAML within the bounds above: plain JSON data, or a RecipeError that
    says what is wrong and where."""
    what = what or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{what} is {size} bytes; a recipe is at most {MAX_RECIPE_BYTES} bytes. "
                              "Is this the right file? Put long lists (rasters, inputs) in fewer, "
                              "shorter entries.")
        with path.open("rb") as fh:
            raw = fh.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise RecipeError(f"cannot read the recipe {what}: {exc.strerror or exc}") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{what} is over {MAX_RECIPE_BYTES} bytes; a recipe is at most that.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{what} is not UTF-8 text (byte {exc.start}): is it a recipe? "
                          "Save it as UTF-8.") from None
    loader = RecipeLoader(text)
    try:
        data = loader.get_single_data()
    except _YamlLimitError as exc:
        raise RecipeError(f"{what}: {exc}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{what} is not valid YAML: {exc}") from None
    except RecursionError:
        raise RecipeError(f"{what}: nested too deeply; a recipe is a shallow mapping.") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a value YAML recognised but cannot build
        raise RecipeError(f"{what} is not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    _check_json_types(data, [], what)
    return data


def load_recipe(path: str | Path) -> Recipe:
    """Read, validate and resolve a recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}. Recipes live in pipelines/, "
                          "e.g. rsdata run pipelines/demo.yaml")
    data = read_recipe_yaml(path)
    return parse_recipe(data, base_dir=path.resolve().parent, path=path, what=str(path))
