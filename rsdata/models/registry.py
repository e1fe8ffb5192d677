"""Model configs: JSON files found by name, as open_clip keeps its architectures.

Configs come from three places, later ones winning on a name clash:

1. ``rsdata/models/configs/*.json`` (shipped with rsdata);
2. every directory or ``.json`` file listed in the ``RSDATA_MODEL_CONFIGS`` environment
   variable (separated by ``os.pathsep``);
3. :func:`register_config` calls (a path or a dict).

A config is checked against ``rsdata/models/config.schema.json`` when it is read, so a typo
fails with the field path instead of deep inside a tower constructor.
"""

from __future__ import annotations

import copy
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from rsdata.errors import RsdataError

CONFIG_DIR = Path(__file__).parent / "configs"
SCHEMA_PATH = Path(__file__).parent / "config.schema.json"
ENV_VAR = "RSDATA_MODEL_CONFIGS"

_registered: dict[str, dict[str, Any]] = {}


class ModelConfigError(RsdataError):
    """A model config is unknown, unreadable or does not match the config schema."""


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    """Raise :class:`ModelConfigError` naming the first problem of ``config``; return it."""
    from rsdata.schemas import describe

    found = sorted(_validator().iter_errors(config), key=lambda e: list(e.absolute_path))
    if found:
        raise ModelConfigError(f"{where} is not a valid model config: {describe(found[0])}")
    image, text = config["image"], config["text"]
    if image["type"] == "cnn":
        if len(image["widths"]) != len(image["depths"]):
            raise ModelConfigError(f"{where}: image.widths and image.depths must have the same length")
        bad = [s for s in image.get("multiscale", []) if s > len(image["widths"])]
        if bad:
            raise ModelConfigError(f"{where}: image.multiscale names stage(s) {bad}, but there are only "
                                   f"{len(image['widths'])} stages")
    if image["type"] == "vit":
        if image["size"] % image["patch_size"]:
            raise ModelConfigError(f"{where}: image.size {image['size']} is not a multiple of "
                                   f"image.patch_size {image['patch_size']}")
        if image["width"] % image["heads"]:
            raise ModelConfigError(f"{where}: image.width must be a multiple of image.heads")
    if text["type"] == "transformer" and text["width"] % text["heads"]:
        raise ModelConfigError(f"{where}: text.width must be a multiple of text.heads")
    return config


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read and check one config file."""
    p = Path(path)
    try:
        config = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelConfigError(f"model config {p} not found") from None
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"model config {p} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ModelConfigError(f"model config {p} must hold a JSON object")
    return validate_config(config, str(p))


def _config_files() -> list[Path]:
    files = sorted(CONFIG_DIR.glob("*.json"))
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if not entry.strip():
            continue
        p = Path(entry).expanduser()
        if p.is_dir():
            files += sorted(p.glob("*.json"))
        elif p.suffix == ".json" and p.is_file():
            files.append(p)
        else:
            raise ModelConfigError(f"{ENV_VAR} names {p}, which is neither a directory nor a .json file")
    return files


def all_configs() -> dict[str, dict[str, Any]]:
    """Every known config by name (shipped, then ``$RSDATA_MODEL_CONFIGS``, then registered)."""
    found: dict[str, dict[str, Any]] = {}
    for path in _config_files():
        config = read_config_file(path)
        found[config["name"]] = config
    found.update(_registered)
    return found


def register_config(config: str | Path | dict[str, Any]) -> str:
    """Add a config (a JSON file path or a dict) for this process; returns its name."""
    if isinstance(config, dict):
        checked = validate_config(copy.deepcopy(config), f"config {config.get('name')!r}")
    else:
        checked = read_config_file(config)
    _registered[checked["name"]] = checked
    return checked["name"]


def list_models() -> list[str]:
    """Names of every model config :func:`create_model` accepts."""
    return sorted(all_configs())


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; nested dicts merge key by key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def get_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The config ``name`` (a registered name or a path to a ``.json`` file) with overrides.

    ``overrides`` are top-level keys; dict values merge into the nested sections, e.g.
    ``get_config("rs-cnn-tiny", image={"size": 64}, embed_dim=64)``.
    """
    if name.endswith(".json") and Path(name).expanduser().is_file():
        config = read_config_file(Path(name).expanduser())
    else:
        configs = all_configs()
        if name not in configs:
            raise ModelConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(configs))}. "
                                   f"Add your own JSON config to a directory listed in ${ENV_VAR} "
                                   "or pass the path of a .json file")
        config = configs[name]
    if overrides:
        config = validate_config(deep_merge(config, overrides),
                                 f"model {name!r} with overrides {overrides}")
    return copy.deepcopy(config)
