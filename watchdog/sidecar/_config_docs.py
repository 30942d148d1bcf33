"""The configuration's JSON Schema and key tables, made from the same Structs the loader
decodes, so that neither can drift from the code.

``python -m watchdog.sidecar.config --schema`` prints the schema;
``python -m watchdog.sidecar.config --write`` rewrites ``config.schema.json`` beside the
module and the generated part of ``docs/configuration.md`` (in a checkout).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple

import msgspec
from msgspec import inspect as mi

from watchdog.sidecar._config_env import env_variable
from watchdog.sidecar._config_forms import (
    bare_type,
    description_of,
    extra_of,
    form_of,
    iter_fields,
)
from watchdog.sidecar.config import ConfigFile

__all__ = [
    "DOCS_BEGIN",
    "DOCS_END",
    "SCHEMA_PATH",
    "KeyRow",
    "config_schema",
    "docs_block",
    "key_rows",
    "main",
    "render_default",
]

SCHEMA_PATH: Final = Path(__file__).with_name("config.schema.json")
DOCS_PATH: Final = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
DOCS_BEGIN: Final = (
    "<!-- Generated from the config Structs by `python -m watchdog.sidecar.config --write`;"
    " edit watchdog/sidecar/config.py or policy.py, not this table. -->"
)
DOCS_END: Final = "<!-- End of generated keys. -->"


class KeyRow(NamedTuple):
    """One key of the configuration, as the docs list it."""

    section: str  # `[server]`, `[[rules]]`
    key: str
    form: str
    default: str
    env: str
    meaning: str


def render_default(field: mi.Field) -> str:
    """A field's default as TOML would write it; ``required`` or ``—`` (not set)."""
    if field.required:
        return "required"
    value = field.default if field.default_factory is msgspec.NODEFAULT else field.default_factory()
    if value is None or value is msgspec.UNSET or value is msgspec.NODEFAULT:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, int | float):
        return f"`{value}`"
    if isinstance(value, str):
        return f"`{json.dumps(value)}`"
    if isinstance(value, tuple | list | dict) and not value:
        return "`[]`" if not isinstance(value, dict) else "`{}`"
    if isinstance(value, tuple) and all(isinstance(v, msgspec.Struct) for v in value):
        return ", ".join(f"one `{getattr(v, 'type', '?')}` sink" for v in value)
    return f"`{value!r}`"


def _sections() -> Iterator[tuple[str, mi.StructType]]:
    root = mi.type_info(ConfigFile)
    assert isinstance(root, mi.StructType)
    for field in root.fields:
        kind = bare_type(field.type)
        if isinstance(kind, mi.StructType):
            yield field.encode_name, kind
        elif isinstance(kind, mi.ListType | mi.VarTupleType):
            item = kind.item_type
            assert isinstance(item, mi.StructType)
            yield f"[{field.encode_name}]", item


def key_rows() -> list[KeyRow]:
    """Every key of the configuration, in the order of the Structs."""
    rows = []
    for section, struct in _sections():
        name = section.strip("[]")
        for key, field in iter_fields(struct):
            env = env_variable(name, key)
            rows.append(
                KeyRow(
                    section=f"[{section}]",
                    key=key,
                    form=form_of(field.type, name),
                    default=render_default(field),
                    env=f"`{env}`" if env else "",
                    meaning=description_of(field.type),
                )
            )
    return rows


def docs_block() -> str:
    """The generated part of docs/configuration.md: one table per section."""
    lines = [DOCS_BEGIN, ""]
    current = None
    for row in key_rows():
        if row.section != current:
            if current is not None:
                lines.append("")
            current = row.section
            lines += [
                f"### `{row.section}`",
                "",
                "| Key | Expects | Default | Environment | Meaning |",
                "|---|---|---|---|---|",
            ]
        cells = (f"`{row.key}`", row.form, row.default, row.env, row.meaning)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += ["", DOCS_END]
    return "\n".join(lines)


def _drop_null(node: Any) -> Any:
    """TOML has no null: drop it from unions, and null defaults."""
    if isinstance(node, list):
        return [_drop_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: _drop_null(v) for k, v in node.items() if not (k == "default" and v is None)}
    options = node.get("anyOf")
    if isinstance(options, list):
        options = [o for o in options if o != {"type": "null"}]
        if len(options) == 1:
            del node["anyOf"]
            node = {**options[0], **node}
        else:
            node["anyOf"] = options
    return node


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a config file, for editors (Taplo, Even Better TOML)."""
    schema: dict[str, Any] = msgspec.json.schema(ConfigFile)
    definitions = schema["$defs"]
    for _, struct in _sections():
        properties = definitions[struct.cls.__name__]["properties"]
        for field in struct.fields:
            extra = extra_of(field.type)
            if extra.get("flatten"):
                # The keys of the field's Struct sit beside the table's own keys.
                inner = properties.pop(field.encode_name)
                reference = next(o["$ref"] for o in inner["anyOf"] if "$ref" in o)
                nested = definitions.pop(reference.rsplit("/", 1)[1])
                properties.update(nested["properties"])
            elif "also" in extra:  # a value the loader reads before decoding
                options = properties[field.encode_name]["anyOf"]
                options.append({"const": extra["also"]})
            elif extra.get("one_or_many"):
                many = properties[field.encode_name]
                described = {k: many.pop(k) for k in ("description", "default") if k in many}
                properties[field.encode_name] = {"anyOf": [many["items"], many], **described}
    whole = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "agents-watchdog sidecar configuration",
        "description": "The TOML file of `agents-watchdog serve --config FILE`.",
        **_drop_null(schema),
    }
    # Through JSON and back: defaults such as () become the lists a file would hold.
    plain: dict[str, Any] = json.loads(json.dumps(whole))
    return plain


def schema_text() -> str:
    """The schema as shipped: indented JSON with a final newline."""
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"


def _rewrite_docs(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    begin, end = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if begin < 0 or end < begin:
        return False
    path.write_text(text[:begin] + docs_block() + text[end + len(DOCS_END) :], encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m watchdog.sidecar.config``: print or rewrite the generated files."""
    parser = argparse.ArgumentParser(
        prog="python -m watchdog.sidecar.config",
        description="The configuration's JSON Schema and key tables, from its Structs.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--schema", action="store_true", help="print the JSON Schema")
    what.add_argument(
        "--write",
        action="store_true",
        help=f"rewrite {SCHEMA_PATH.name} and the key tables of docs/configuration.md",
    )
    args = parser.parse_args(argv)
    if args.schema:
        print(schema_text(), end="")
        return 0
    SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    if DOCS_PATH.exists() and _rewrite_docs(DOCS_PATH):
        print(f"wrote {DOCS_PATH}")
    else:
        print(f"skipped {DOCS_PATH}: not a checkout, or no generated block")
    return 0
