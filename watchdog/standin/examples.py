"""Example values for JSON schemas: the arguments of scripted tool calls and the text of
structured-output replies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["example_value"]

# Schemas come from the app; a self-referencing one must not recurse forever.
_MAX_SCHEMA_DEPTH = 16


def example_value(schema: object, root: Mapping[str, Any] | None = None, _depth: int = 0) -> Any:
    """Return a value valid for a JSON schema: strings ``"x"``, numbers ``1``, booleans ``true``.

    Objects get their required properties only, arrays are empty unless ``minItems`` asks for
    more, enums and consts give their first value, ``anyOf``/``oneOf`` the first non-null
    option, and local ``$ref``s are followed.
    """
    if not isinstance(schema, Mapping) or _depth > _MAX_SCHEMA_DEPTH:
        return None
    root = schema if root is None else root
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key) if isinstance(target, Mapping) else None
        return example_value(target, root, _depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if not _is_null_schema(o)), options[0])
            return example_value(chosen, root, _depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind == "string":
        return "x"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        min_items = schema.get("minItems")
        count = min_items if isinstance(min_items, int) and min_items > 0 else 0
        return [example_value(schema.get("items"), root, _depth + 1) for _ in range(count)]
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        names = required if isinstance(required, list) else []
        return {
            name: example_value(properties.get(name), root, _depth + 1)
            for name in names
            if isinstance(name, str)
        }
    return "x"


def _is_null_schema(schema: object) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null"
