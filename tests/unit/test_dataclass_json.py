"""The one (de)serialiser of dataclasses (cortexd/dataclass_json.py): fields by name, never by
position; a new field needs no code; a key older daemons lack reads as the field says."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortexd.dataclass_json import JSONRecord, from_json, to_json


class Kind(enum.StrEnum):
    OOM = "oom"


class Level(enum.Enum):
    HIGH = 3


@dataclass(frozen=True)
class Inner(JSONRecord):
    n: int
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Outer(JSONRecord):
    name: str
    inner: Inner
    inners: tuple[Inner, ...]
    extra: Mapping[str, Any]
    where: Path
    maybe: Inner | None
    level: Level
    shown: bool = field(metadata={"absent": True})
    kind: Kind | None = None  # added later: older JSON lacks it


VALUE = Outer("a", Inner(1, ("x",)), (Inner(2, ()),), {"k": [1, {"z": 2}]}, Path("/p"), None, Level.HIGH,
              False, Kind.OOM)


def test_written_in_declaration_order_and_read_back_equal():
    doc = json.loads(json.dumps(VALUE.to_json()))
    assert list(doc) == ["name", "inner", "inners", "extra", "where", "maybe", "level", "shown", "kind"]
    assert doc["inners"] == [{"n": 2, "tags": []}] and doc["kind"] == "oom" and doc["level"] == 3
    assert doc["where"] == "/p"
    assert Outer.from_json(doc) == VALUE
    assert from_json(Outer, doc) == VALUE and to_json(VALUE) == VALUE.to_json()


def test_absent_keys_read_as_the_default_the_metadata_or_the_zero():
    got = Outer.from_json({"name": "a", "where": "/p", "level": 3})
    assert got.inner == Inner(0, ()) and got.inners == () and got.extra == {} and got.maybe is None
    assert got.shown is True and got.kind is None  # metadata "absent", then the field's default
    nulls = Outer.from_json({"name": "a", "where": "/p", "level": 3, "inners": None, "inner": None})
    assert nulls.inners == () and nulls.inner == Inner(0, ())
