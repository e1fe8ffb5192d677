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
    keywords draft-07 has, so the 2020-12 text is compiled as draft-07.

    Two changes to what fastjsonschema generates, neither to what it accepts (tested against
    jsonschema): ``$defs`` references are inlined, and the names of array items in its
    messages are formatted from the variables they name instead of ``**locals()``, which it
    evaluated for every referenced item and every failed ``if`` (27 us per OSM tag and per
    caption in a function with hundreds of locals: more than the rest of the check)."""
    import fastjsonschema

    schema = json.loads(schema_text(name))
    schema = inline_refs(schema, schema.pop("$defs", {}))
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    code = _LOCALS_FORMAT.sub(_named_format, fastjsonschema.compile_to_code(schema))
    entry = re.search(r"^def (validate\w*)\(", code, re.MULTILINE)
    if entry is None:  # not the code layout this was written for: compile it as it comes
        return fastjsonschema.compile(schema)
    namespace: dict[str, Any] = {}
    exec(compile(code, f"<schemas/{name}.schema.json>", "exec"), namespace)  # noqa: S102 - our own schema's code
    return namespace[entry.group(1)]


# '"...[{data__x}]".format(**locals())' in fastjsonschema's code: a string literal, then the call
_LOCALS_FORMAT = re.compile(r'("(?:[^"\\]|\\.)*")\.format\(\*\*locals\(\)\)')


def _named_format(match: re.Match[str]) -> str:
    literal = match.group(1)
    names = sorted(set(re.findall(r"(?<!\{)\{([A-Za-z_]\w*)\}(?!\})", literal)))
    return f"{literal}.format({', '.join(f'{n}={n}' for n in names)})"


ANNOTATIONS = frozenset({"description", "title", "$comment", "examples", "default"})


def inline_refs(node: Any, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``node`` with every ``{"$ref": "#/$defs/x"}`` replaced by definition ``x`` (recursively;
    keywords beside a reference are kept next to it in an ``allOf``). A recursive definition
    cannot be inlined: an error, our schemas have none."""
    if isinstance(node, list):
        return [inline_refs(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return {key: inline_refs(value, defs, seen) for key, value in node.items()}
    prefix = "#/$defs/"
    target = ref[len(prefix):]
    if not ref.startswith(prefix) or target not in defs:
        raise ValueError(f"schema reference {ref!r} is not one of this schema's $defs")
    if target in seen:
        raise ValueError(f"schema definition {target!r} refers to itself: it cannot be inlined")
    body = inline_refs(defs[target], defs, seen + (target,))
    rest = {key: inline_refs(value, defs, seen) for key, value in node.items()
            if key != "$ref" and key not in ANNOTATIONS}
    return {**rest, "allOf": [*rest.get("allOf", []), body]} if rest else body


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
