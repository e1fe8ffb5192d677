"""Load the JSON Schemas (schemas/*.schema.json) and turn violations into readable errors."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # jsonschema loads on first use: shard writers only need the compiled validator
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError


def schema_dir() -> Path:
    """Where the schemas are: inside an installed wheel, or at the top of a source checkout."""
    packaged = Path(__file__).parent / "_schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas"


@lru_cache(maxsize=None)
def schema_text(name: str) -> str:
    """The text of ``schemas/{name}.schema.json``."""
    return (schema_dir() / f"{name}.schema.json").read_text()


@lru_cache(maxsize=None)
def validator(name: str) -> Draft202012Validator:
    """The validator of ``schemas/{name}.schema.json`` (``name``: recipe, sample, manifest)."""
    from jsonschema import Draft202012Validator

    schema = json.loads(schema_text(name))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def field_path(error: ValidationError) -> str:
    """``stages[1].min_pixels.line`` for an error at that place; ``(top level)`` at the root."""
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def describe(error: ValidationError) -> str:
    """One line: where the problem is and what was expected there."""
    where = field_path(error)
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"{where}: {error.message}; allowed fields: {', '.join(allowed)}"
    if error.validator == "enum":
        options = ", ".join(repr(v) for v in error.validator_value)
        return f"{where}: {error.instance!r} is not one of {options}"
    if error.validator == "type":
        expected = error.validator_value
        return f"{where}: expected {expected}, got {type(error.instance).__name__} {error.instance!r}"
    desc = error.schema.get("description") if isinstance(error.schema, dict) else None
    return f"{where}: {error.message}" + (f" ({desc})" if desc else "")


def errors(name: str, instance: Any) -> list[str]:
    """Every violation of schema ``name`` by ``instance``, most relevant first."""
    from jsonschema.exceptions import best_match

    found = list(validator(name).iter_errors(instance))
    if not found:
        return []
    first = best_match(found)
    rest = [e for e in found if e is not first]
    return [describe(first)] + [describe(e) for e in rest]


@lru_cache(maxsize=None)
def fast_validator(name: str) -> Any:
    """A compiled (fastjsonschema) validator of the same schema, ~30x faster than jsonschema:
    used on hot paths (every sample is validated before it is written). Our schemas use only
    keywords draft-07 has, so the 2020-12 text is compiled as draft-07, from
    :func:`validator_code`."""
    code = validator_code(name)
    entry = re.search(r"^def (validate\w*)\(", code, re.MULTILINE)
    if entry is None:  # not the code layout this was written for: let fastjsonschema compile it
        import fastjsonschema

        return fastjsonschema.compile(_draft07(name))
    namespace: dict[str, Any] = {}
    exec(compile(code, f"<schemas/{name}.schema.json>", "exec"), namespace)  # noqa: S102 - our own schema's code
    return namespace[entry.group(1)]


def _draft07(name: str) -> dict[str, Any]:
    schema = json.loads(schema_text(name).replace('"#/$defs/', '"#/definitions/'))
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["definitions"] = schema.pop("$defs", {})
    return schema


LOCALS_CALL = ".format(**locals())"
_NAME_FIELD = re.compile(r"(?<!\{)\{([A-Za-z_]\w*)\}(?!\})")


def validator_code(name: str) -> str:
    """fastjsonschema's Python source for a schema, with one change that keeps what it accepts
    (tested against jsonschema): the name of an array item in a message is formatted from the
    variables it names, not from ``**locals()``. fastjsonschema evaluates that name for every
    item it hands to a referenced definition and for every failed ``if``, and ``locals()`` of its
    function with hundreds of variables cost 27 us each: per OSM tag and per caption, more than
    the rest of the check."""
    import fastjsonschema

    pieces = fastjsonschema.compile_to_code(_draft07(name)).split(LOCALS_CALL)
    out = []
    for piece in pieces[:-1]:  # each ends with the string literal that was formatted
        start = piece.rfind('"', 0, len(piece) - 1)
        if not piece.endswith('"') or start < 0:
            out.append(piece + LOCALS_CALL)  # not a literal: leave it as it was
            continue
        names = sorted(set(_NAME_FIELD.findall(piece[start:])))
        out.append(f"{piece}.format({', '.join(f'{n}={n}' for n in names)})")
    return "".join(out) + pieces[-1]


def validate(name: str, instance: Any, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the first few violations."""
    import fastjsonschema

    try:
        fast_validator(name)(instance)
        return
    except fastjsonschema.JsonSchemaException:
        pass  # explain with jsonschema, whose messages name every violation and its path
    problems = errors(name, instance)
    if problems:
        shown = "\n  - ".join(problems[:5])
        more = f"\n  (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"{what} does not match schemas/{name}.schema.json:\n  - {shown}{more}")
