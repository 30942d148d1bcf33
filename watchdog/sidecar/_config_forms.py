"""The forms a configuration value takes, and how a value of the wrong form is reported.

Each key is declared once, as a field of a msgspec Struct (``config.py``, ``policy.py``):
its type and constraints (``msgspec.Meta(ge=..., gt=..., pattern=...)``, ``Literal``),
its default, its description, and, in ``Meta(extra={"form": ...})``, the words that say
what it expects. This module holds the forms several Structs share and turns msgspec's
``ValidationError`` — a path such as ``$.thresholds.response`` and no value — into a
:class:`ConfigError` that names the dotted key, the expected form and the value given,
and for an unknown key the nearest known one.

Markers in ``Meta(extra=...)`` say how a field reads from TOML: ``one_or_many`` (a
single string stands for a list of one), ``flatten`` (the keys of the field's Struct sit
beside the table's own keys, as a rule's ``floor`` and ``factor`` do) and ``also`` (a
value the loader reads before decoding, such as a rule's ``threshold = "auto"``).
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta
from msgspec import inspect as mi

__all__ = [
    "ConfigError",
    "bare_type",
    "description_of",
    "extra_of",
    "NonNegativeSeconds",
    "Seconds",
    "integer",
    "number",
    "positive",
    "form_of",
    "iter_fields",
    "known_keys",
    "marked",
    "one_of",
    "struct_info",
    "tables",
    "translate",
    "unknown_key",
]

# TOML can write `inf`; a bound below it refuses an infinite deadline.
_FINITE: Final = sys.float_info.max

Seconds = Annotated[float, Meta(gt=0, le=_FINITE, extra={"form": "a number of seconds > 0"})]
NonNegativeSeconds = Annotated[
    float, Meta(ge=0, le=_FINITE, extra={"form": "a number of seconds >= 0"})
]


def integer(low: int, high: int, meaning: str) -> Meta:
    """An integer key's bounds and meaning; its form reads "an integer from low to high"."""
    return Meta(ge=low, le=high, description=meaning)


def positive(form: str, meaning: str) -> Meta:
    """A number > 0 (and finite) counted in some unit; ``form`` names it in errors."""
    return Meta(gt=0, le=_FINITE, description=meaning, extra={"form": form})


def number(low: float, high: float, form: str, meaning: str) -> Meta:
    """A number from ``low`` to ``high``; ``form`` says so in errors."""
    return Meta(ge=low, le=high, description=meaning, extra={"form": form})


class ConfigError(ValueError):
    """A configuration value is missing, mistyped or out of range; the message says which."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config error: {key}: {message}")
        self.key = key


def unknown_key(key: str, known: Iterable[str]) -> ConfigError:
    """The error for an unknown ``key`` (dotted), naming the nearest of ``known``."""
    choices = sorted(known)
    name = key.rpartition(".")[2]
    near = difflib.get_close_matches(name, choices, n=1, cutoff=0.7)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return ConfigError(key, f"unknown key; {hint}expected one of: {', '.join(choices)}")


def one_of(values: Iterable[object]) -> str:
    """The form of a key that takes one of ``values``, in their order."""
    return "one of " + ", ".join(str(value) for value in values)


def _unwrap(kind: mi.Type) -> tuple[mi.Type, dict[str, Any]]:
    """The type under any ``Metadata`` wrappers, and their merged ``extra``."""
    extra: dict[str, Any] = {}
    while isinstance(kind, mi.Metadata):
        extra = {**(kind.extra or {}), **extra}
        kind = kind.type
    return kind, extra


def bare_type(kind: mi.Type) -> mi.Type:
    """``kind`` without its ``Metadata`` wrappers."""
    return _unwrap(kind)[0]


def extra_of(kind: mi.Type) -> dict[str, Any]:
    """The markers of ``kind``'s ``Meta(extra=...)``: ``form``, ``flatten``, ..."""
    return _unwrap(kind)[1]


def description_of(kind: mi.Type) -> str:
    """The ``Meta(description=...)`` of ``kind``, the outermost when several."""
    while isinstance(kind, mi.Metadata):
        if kind.extra_json_schema and "description" in kind.extra_json_schema:
            return str(kind.extra_json_schema["description"])
        kind = kind.type
    return ""


def _members(kind: mi.Type) -> list[mi.Type]:
    """A union's members other than None (TOML has no null); any other type alone."""
    bare, _ = _unwrap(kind)
    if isinstance(bare, mi.UnionType):
        return [t for t in bare.types if not isinstance(_unwrap(t)[0], mi.NoneType)]
    return [kind]


def _container(kind: mi.Type) -> mi.Type | None:
    """The struct, list or table a value of ``kind`` may hold, if it is one."""
    for member in _members(kind):
        bare, _ = _unwrap(member)
        if isinstance(bare, mi.StructType | mi.ListType | mi.VarTupleType | mi.DictType):
            return member
    return None


def iter_fields(struct: mi.StructType) -> Iterator[tuple[str, mi.Field]]:
    """The keys a TOML table of ``struct`` holds, each with its field; a ``flatten``
    field contributes its own Struct's keys instead of its name."""
    for field in struct.fields:
        inner = _flattened(field)
        if inner is not None:
            yield from iter_fields(inner)
        else:
            yield field.encode_name, field


def _flattened(field: mi.Field) -> mi.StructType | None:
    """The Struct whose keys ``field`` puts beside its table's own, if it is ``flatten``."""
    if not _unwrap(field.type)[1].get("flatten"):
        return None
    inner = _unwrap(_container(field.type) or field.type)[0]
    return inner if isinstance(inner, mi.StructType) else None


def known_keys(struct: mi.StructType) -> list[str]:
    """The keys a TOML table of ``struct`` may hold."""
    return [name for name, _ in iter_fields(struct)]


def struct_info(cls: type[msgspec.Struct]) -> mi.StructType:
    """msgspec's description of the Struct ``cls``."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info


def marked(struct: mi.StructType, marker: str) -> frozenset[str]:
    """The keys of ``struct`` whose ``Meta(extra=...)`` sets ``marker``."""
    return frozenset(name for name, f in iter_fields(struct) if _unwrap(f.type)[1].get(marker))


def tables(entries: object) -> list[dict[str, Any]]:
    """The tables of an array of tables, a stand-in for any entry that is not one;
    what is wrong with them is the conversion's to report."""
    if not isinstance(entries, list):
        return []
    return [entry if isinstance(entry, dict) else {} for entry in entries]


def form_of(kind: mi.Type, key: str = "") -> str:
    """What a value of ``kind`` must look like, in the words of an error message
    (``a number of seconds > 0``); ``key`` names an array of tables."""
    bare, extra = _unwrap(kind)
    if "form" in extra:
        return str(extra["form"])
    if isinstance(bare, mi.UnionType):
        return " or ".join(form_of(member, key) for member in _members(bare))
    if isinstance(bare, mi.IntType):
        if bare.ge is not None and bare.le is not None:
            return f"an integer from {bare.ge} to {bare.le}"
        return "an integer"
    if isinstance(bare, mi.FloatType):
        return "a number"
    if isinstance(bare, mi.BoolType):
        return "true or false"
    if isinstance(bare, mi.StrType):
        return "a string"
    if isinstance(bare, mi.LiteralType):
        return one_of(bare.values)
    if isinstance(bare, mi.StructType | mi.DictType):
        return "a table"
    if isinstance(bare, mi.ListType | mi.VarTupleType):
        item, _ = _unwrap(bare.item_type)
        if isinstance(item, mi.StructType):
            return f"an array of tables ([[{key}]])"
        if isinstance(item, mi.LiteralType):
            return "a list of values from " + one_of(item.values).removeprefix("one of ")
        return f"a list of {form_of(item).removeprefix('a ').removeprefix('an ')}s"
    return "a valid value"


_WHERE: Final = re.compile(r"(?P<message>.*?)(?: - at `\$(?P<path>.*)`)?", re.DOTALL)
_SEGMENT: Final = re.compile(r"\.(?P<name>[^.\[]+)|\[(?P<index>\d+|\.\.\.)\]")
_FIELD_MESSAGE: Final = re.compile(
    r"Object (?P<what>contains unknown|missing required) field `(?P<name>.+)`"
)


def translate(error: msgspec.ValidationError, data: object, root: type) -> ConfigError:
    """The :class:`ConfigError` for msgspec's ``error`` while converting ``data`` into
    ``root``: the dotted key, the expected form and the value given, read from ``data``."""
    where = _WHERE.fullmatch(str(error))
    assert where is not None  # the pattern matches any text
    segments: list[str | int] = [
        match["name"] if match["index"] is None else _index(match["index"])
        for match in _SEGMENT.finditer(where["path"] or "")
    ]
    kind: mi.Type = mi.type_info(root)
    key, value = "", data
    for segment in segments:
        bare = _unwrap(_container(kind) or kind)[0]
        if isinstance(segment, str) and isinstance(bare, mi.StructType):
            field = next(f for f in bare.fields if f.encode_name == segment)
            if _flattened(field) is None:  # a flattened field's keys are its table's
                key = f"{key}.{segment}" if key else segment
            kind, value = field.type, _get(value, segment)
        elif isinstance(segment, int) and isinstance(bare, mi.ListType | mi.VarTupleType):
            if _container(bare.item_type) is None:
                return _list_error(key, kind, value, segment)
            key, kind, value = f"{key}[{segment}]", bare.item_type, _get(value, segment)
        else:  # a table's value (msgspec does not say which): report the table
            break

    field_message = _FIELD_MESSAGE.fullmatch(where["message"])
    if field_message is None:
        return ConfigError(key or "config", f"expected {form_of(kind, key)}, got {value!r}")
    struct = _unwrap(_container(kind) or kind)[0]
    assert isinstance(struct, mi.StructType)
    name = field_message["name"]
    full = f"{key}.{name}" if key else name
    if field_message["what"] == "contains unknown":
        return unknown_key(full, known_keys(struct))
    field = next(f for n, f in iter_fields(struct) if n == name)
    return ConfigError(full, f"expected {form_of(field.type, full)}, got None")


def _index(text: str) -> int:
    return -1 if text == "..." else int(text)  # `[...]`: a table's value


def _list_error(key: str, kind: mi.Type, value: object, index: int) -> ConfigError:
    """A list of strings is one key: name it, and the item that is wrong when the items
    come from a fixed set (the whole list otherwise)."""
    form = form_of(kind, key)
    bare = _unwrap(_container(kind) or kind)[0]
    if isinstance(bare, mi.ListType | mi.VarTupleType) and isinstance(
        _unwrap(bare.item_type)[0], mi.LiteralType
    ):
        return ConfigError(
            key, f"expected {form.removeprefix('a list of ')}, got {_get(value, index)!r}"
        )
    return ConfigError(key, f"expected {form}, got {value!r}")


def _get(value: object, segment: str | int) -> object:
    if isinstance(segment, str) and isinstance(value, Mapping):
        return value.get(segment)
    if isinstance(segment, int) and isinstance(value, list) and 0 <= segment < len(value):
        return value[segment]
    return None
