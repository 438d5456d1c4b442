"""Dataclasses <-> JSON values, as the dataclasses' own fields declare them.

The one (de)serialiser of the status model (cortexd/status.py: the control API's
`/status` body and `cortexd get -o json`, read back by the CLI) and of the settings
`cortexd up -d` hands its detached daemon (cortexd/settings.py). Nothing is written
per class: `to_json` writes every field in declaration order (the order `-o json`
prints), tuples as lists, mappings as objects, enums as their values and paths as
text; `from_json` reads each field by its annotation, by name, never by position.

A key the JSON lacks (sent by a daemon older than the field) reads as the field's
default, else as `metadata={"absent": value}`, else as the zero of its type (None,
0, "", False, (), {}, a nested dataclass read from {}); null in a field that is not
Optional reads as that zero too.

Each class's annotations are read once into a plan of small converters, so a
snapshot is written about as fast as the hand-written methods did (the daemon
serialises one for every `/status`). Mappings typed `Mapping[str, Any]` (the
gateway's counters) are copied one level deep, as before: their values are JSON.

Written here rather than with msgspec or cattrs: both refuse a missing field that
has no default (the CLI reads what older daemons and hand-written test snapshots
send), and neither is a dependency yet; pydantic (installed in some environments,
no dependency of cortexd) would add about 0.1 s of imports to every CLI command
and coerces types the status model never coerced.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import operator
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R", bound="JSONRecord")
Convert = Callable[[Any], Any]


def to_json(record: Any) -> dict[str, Any]:
    """The dataclass instance `record` as a JSON object of its fields, in declaration order."""
    plan = _plan(type(record))
    return {name: value if write is None or value is None else write(value)
            for name, write, value in zip(plan.names, plan.writes, plan.values(record))}


_ABSENT = object()


def from_json(cls: type[T], data: Mapping[str, Any] | None) -> T:
    """An instance of the dataclass `cls` from what `to_json` wrote (see the module docstring
    for keys the JSON lacks)."""
    get = (data or {}).get
    values = {}
    for name, optional, _, read, zero, absent in _plan(cls).fields:
        value = get(name, _ABSENT)
        if value is _ABSENT:
            values[name] = absent()
        elif value is None:
            values[name] = None if optional else zero()
        else:
            values[name] = value if read is None else read(value)
    return cls(**values)


class _Field(typing.NamedTuple):
    name: str
    optional: bool
    write: Convert | None  # None: written as it is
    read: Convert | None  # None: read as it is
    zero: Callable[[], Any]
    absent: Callable[[], Any]


class _Plan(typing.NamedTuple):
    fields: tuple[_Field, ...]
    names: tuple[str, ...]
    writes: tuple[Convert | None, ...]
    values: Callable[[Any], tuple[Any, ...]]  # the record's field values, in order


_PLANS: dict[type, _Plan] = {}


def _plan(cls: type) -> _Plan:
    """How each init field of the dataclass `cls` is written and read (once per class)."""
    plan = _PLANS.get(cls)
    if plan is None:
        hints = typing.get_type_hints(cls)
        fields = tuple(_field(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init)
        getter = operator.attrgetter(*(f.name for f in fields))
        values = getter if len(fields) > 1 else (lambda record: (getter(record),))
        plan = _PLANS[cls] = _Plan(fields, tuple(f.name for f in fields), tuple(f.write for f in fields), values)
    return plan


def _field(f: dataclasses.Field[Any], hint: Any) -> _Field:
    zero = _zero(hint)
    absent: Callable[[], Any]
    if f.default is not dataclasses.MISSING:
        absent = functools.partial(_same, f.default)
    elif f.default_factory is not dataclasses.MISSING:
        absent = f.default_factory
    elif "absent" in f.metadata:
        absent = functools.partial(_same, f.metadata["absent"])
    else:
        absent = zero
    inner = _optional(hint)
    return _Field(f.name, inner is not None, _writer(inner or hint), _reader(inner or hint), zero, absent)


def _same(value: Any) -> Any:
    return value


def _optional(hint: Any) -> Any | None:
    """X for `X | None`, else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)):
            return functools.reduce(operator.or_, args)
    return None


def _kind(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    return typing.get_origin(hint) or hint, typing.get_args(hint)


def _is(origin: Any, base: type) -> bool:
    return isinstance(origin, type) and issubclass(origin, base)


def _writer(hint: Any) -> Convert | None:
    inner = _optional(hint)
    if inner is not None:
        write = _writer(inner)
        return None if write is None else (lambda v: None if v is None else write(v))
    origin, args = _kind(hint)
    if isinstance(origin, type) and dataclasses.is_dataclass(origin):
        return to_json
    if origin is tuple:
        write_item = _writer(args[0]) if args else None
        return list if write_item is None else (lambda v: [write_item(x) for x in v])
    if origin in (dict, Mapping):
        write_value = _writer(args[1]) if len(args) == 2 else None
        return dict if write_value is None else (lambda v: {k: write_value(x) for k, x in v.items()})
    if _is(origin, enum.Enum):
        return operator.attrgetter("value")
    if _is(origin, PurePath):
        return str
    return None  # str, int, float, bool, Any: JSON as they are


def _reader(hint: Any) -> Convert | None:
    inner = _optional(hint)
    if inner is not None:
        read = _reader(inner)
        return None if read is None else (lambda v: None if v is None else read(v))
    origin, args = _kind(hint)
    if isinstance(origin, type) and dataclasses.is_dataclass(origin):
        return functools.partial(from_json, origin)
    if origin is tuple:
        read_item = _reader(args[0]) if args else None
        return tuple if read_item is None else (lambda v: tuple(read_item(x) for x in v))
    if origin in (dict, Mapping):
        read_value = _reader(args[1]) if len(args) == 2 else None
        return dict if read_value is None else (lambda v: {k: read_value(x) for k, x in v.items()})
    if _is(origin, enum.Enum) or _is(origin, PurePath):
        return Path if _is(origin, PurePath) else origin
    return None


def _zero(hint: Any) -> Callable[[], Any]:
    """What a field reads as when the JSON lacks it (or holds null where it is no Optional)."""
    origin, _ = _kind(hint)
    if hint is Any or _optional(hint) is not None:
        return functools.partial(_same, None)
    if isinstance(origin, type) and dataclasses.is_dataclass(origin):
        return functools.partial(from_json, origin, {})
    zeros: dict[Any, Callable[[], Any]] = {tuple: tuple, dict: dict, Mapping: dict, str: str, int: int,
                                           float: float, bool: bool}
    if origin in zeros:
        return zeros[origin]

    def missing() -> Any:
        raise TypeError(f"no value for a field of type {hint!r}: give it a default")

    return missing


class JSONRecord:
    """A dataclass that travels as JSON: `record.to_json()` and `Cls.from_json(data)`."""

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any] | None) -> R:
        return from_json(cls, data)
