"""docs/configuration.md and the shipped JSON Schema say what the config Structs say:
every key, no other, each with its default."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import pytest

from watchdog.sidecar._config_docs import (
    DOCS_BEGIN,
    DOCS_END,
    SCHEMA_PATH,
    config_schema,
    docs_block,
    key_rows,
    render_default,
)
from watchdog.sidecar._config_forms import iter_fields, struct_info
from watchdog.sidecar.config import ConfigError, ConfigFile, load_config

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
REGENERATE = "run `python -m watchdog.sidecar.config --write`"
_CELL = re.compile(r"(?<!\\)\|")


def documented(text: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(section, key) -> (default, environment) from the key tables of ``text``."""
    rows: dict[tuple[str, str], tuple[str, str]] = {}
    section = ""
    for line in text.splitlines():
        heading = re.fullmatch(r"### `(\[.+\])`", line)
        if heading:
            section = heading[1]
        elif line.startswith("| `") and section:
            key, _form, default, env, _meaning = (c.strip() for c in _CELL.split(line)[1:-1])
            rows[section, key.strip("`")] = (default, env)
    return rows


def declared() -> dict[tuple[str, str], tuple[str, str]]:
    return {(r.section, r.key): (r.default, r.env) for r in key_rows()}


def differences(
    docs: dict[tuple[str, str], tuple[str, str]], structs: dict[tuple[str, str], tuple[str, str]]
) -> list[str]:
    """What a reader of the docs would get wrong, one line each."""
    found = [f"missing from the docs: {s} {k}" for s, k in structs.keys() - docs.keys()]
    found += [f"not a key: {s} {k}" for s, k in docs.keys() - structs.keys()]
    for where in docs.keys() & structs.keys():
        if docs[where] != structs[where]:
            found.append(f"{where[0]} {where[1]}: docs say {docs[where]}, code {structs[where]}")
    return sorted(found)


def test_docs_list_every_key_with_its_default_and_variable() -> None:
    problems = differences(documented(DOCS.read_text(encoding="utf-8")), declared())
    assert not problems, f"{REGENERATE}:\n" + "\n".join(problems)


def test_docs_key_tables_are_the_generated_ones() -> None:
    text = DOCS.read_text(encoding="utf-8")
    block = text[text.index(DOCS_BEGIN) : text.index(DOCS_END) + len(DOCS_END)]
    assert block == docs_block(), REGENERATE


def test_the_check_catches_a_missing_key_an_extra_key_and_a_wrong_default() -> None:
    text = docs_block()
    port = "| `port` | an integer from 0 to 65535 | `9750` |"
    assert port in text and "| `window` |" in text and "\n| `max_names` |" in text
    doctored = (
        text.replace(port, "| `port` | x | `80` |")
        .replace("| `window` |", "| `windows` |")
        .replace("\n| `max_names` |", "\n| `gone` |")
    )
    assert differences(documented(doctored), declared()) == [
        "[server] port: docs say ('`80`', '`AGENTS_WATCHDOG_PORT`'), "
        "code ('`9750`', '`AGENTS_WATCHDOG_PORT`')",
        "missing from the docs: [learning] max_names",
        "missing from the docs: [learning] window",
        "not a key: [learning] gone",
        "not a key: [learning] windows",
    ]


def test_every_documented_variable_sets_its_key() -> None:
    """The *Environment* column is what the loader reads."""
    for row in key_rows():
        if not row.env or row.section == "[server]":
            continue
        variable = row.env.strip("`")
        config = load_config(environ={variable: "42.5"})
        table = config.thresholds.by_kind if row.section == "[thresholds]" else None
        table = config.thresholds.max_duration if table is None else table
        assert table[row.key] == 42.5, variable
    server = load_config(environ={"AGENTS_WATCHDOG_PORT": "8123", "AGENTS_WATCHDOG_HOST": "::1"})
    assert (server.server.port, server.server.host) == (8123, "::1")


# -- the JSON Schema -----------------------------------------------------------------------


def shipped_schema() -> dict[str, Any]:
    text = (resources.files("watchdog.sidecar") / "config.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def test_shipped_schema_is_the_generated_one() -> None:
    assert SCHEMA_PATH.parent.name == "sidecar"
    assert shipped_schema() == config_schema(), REGENERATE


def test_schema_has_every_key_and_default_of_the_structs() -> None:
    definitions = shipped_schema()["$defs"]
    root = struct_info(ConfigFile)
    document = definitions["ConfigFile"]["properties"]
    assert set(document) == {f.encode_name for f in root.fields}
    for section in root.fields:
        where = document[section.encode_name]
        reference = where.get("$ref") or where["items"]["$ref"]
        properties = definitions[reference.rsplit("/", 1)[1]]["properties"]
        struct = _section_struct(section)
        assert set(properties) == {name for name, _ in iter_fields(struct)}, section.encode_name
        for name, field in iter_fields(struct):
            if render_default(field) in ("—", "required"):
                assert "default" not in properties[name], (section.encode_name, name)
                continue
            default = field.default
            if field.default_factory is not msgspec.NODEFAULT:
                default = field.default_factory()
            assert properties[name]["default"] == json.loads(msgspec.json.encode(default)), name


def _section_struct(field: msgspec.inspect.Field) -> msgspec.inspect.StructType:
    kind = field.type
    while isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    if isinstance(kind, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
        kind = kind.item_type
    assert isinstance(kind, msgspec.inspect.StructType)
    return kind


def test_schema_command_prints_the_shipped_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "watchdog.sidecar.config", "--schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout) == shipped_schema()


def toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "watchdog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def validator() -> Any:
    """A JSON Schema validator of the shipped schema, as an editor would use it."""
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.Draft202012Validator(shipped_schema())


def test_documented_examples_load_and_pass_the_schema(tmp_path: Path) -> None:
    assert len(toml_blocks()) >= 2
    for block in toml_blocks():
        validator().validate(tomllib.loads(block))
        load_config(write(tmp_path, block), environ={"SLACK_WEBHOOK_URL": "https://h/x"})


@pytest.mark.parametrize(
    "text",
    [
        "[server]\nport = 'http'\n",
        "[server]\nprot = 1\n",
        "[thresholds]\nresponse = -1\n",
        "[thresholds]\nrespones = 3\n",
        "[[rules]]\nthreshold = 'soon'\n",
        "[[rules]]\nthreshold = 3\naction = 'nuke'\n",
        "[[alerts]]\ntype = 'pager'\n",
        "[[alerts]]\ntype = 'log'\nkinds = ['tool']\n",
        "[incidents]\nenabled = 'yes'\n",
        "[alerting]\nexternal_url = 'watchdog.local'\n",
    ],
)
def test_schema_refuses_what_the_loader_refuses(tmp_path: Path, text: str) -> None:
    assert not validator().is_valid(tomllib.loads(text))
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text), environ={})


@pytest.mark.parametrize(
    "text",
    [
        "[[rules]]\nkind = 'function'\nthreshold = 'auto'\nfloor = 0.5\n",
        "[[alerts]]\ntype = 'log'\nkinds = 'response'\n",
        "[thresholds]\nguardrail = 5\n",
    ],
)
def test_schema_accepts_what_the_loader_accepts(tmp_path: Path, text: str) -> None:
    validator().validate(tomllib.loads(text))
    load_config(write(tmp_path, text), environ={})


def test_write_rewrites_the_schema_and_only_the_generated_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from watchdog.sidecar import _config_docs

    schema, docs = tmp_path / "config.schema.json", tmp_path / "configuration.md"
    docs.write_text(f"# Prose\n\n{DOCS_BEGIN}\nstale\n{DOCS_END}\n\nMore prose.\n", "utf-8")
    monkeypatch.setattr(_config_docs, "SCHEMA_PATH", schema)
    monkeypatch.setattr(_config_docs, "DOCS_PATH", docs)
    assert _config_docs.main(["--write"]) == 0
    assert json.loads(schema.read_text("utf-8")) == config_schema()
    assert docs.read_text("utf-8") == f"# Prose\n\n{docs_block()}\n\nMore prose.\n"
    assert f"wrote {docs}" in capsys.readouterr().out
