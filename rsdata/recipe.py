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
            if cond is not None and Draft202012Validator(cond).is_valid(instance):
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
        return self.data["source"]

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


def load_recipe(path: str | Path) -> Recipe:
    """Read, validate and resolve a recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}. Recipes live in pipelines/, "
                          "e.g. rsdata run pipelines/demo.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path} is not valid YAML: {exc}") from None
    return parse_recipe(data, base_dir=path.resolve().parent, path=path, what=str(path))
