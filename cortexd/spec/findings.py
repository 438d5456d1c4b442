"""What validation says about an API document: findings located by field path.

A Finding names a field by its path in the document, never a place in a file: spec.load
maps paths to file:line:column (it alone knows the YAML marks) and to legacy field names.
Shared by the schema step (schema.py), the cross-field rules (rules.py) and check_api
(validate.py).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

Path_ = tuple[str | int, ...]


class FindingKind(enum.Enum):
    """What a finding says is wrong, where code acts on it (spec/entries.py's _merge), not only a person."""

    OTHER = "other"
    # the value is not of a type, choice or format the field takes, and the message says what
    # it takes and what was found (the schema's type, enum, const, pattern and format errors)
    FORM = "form"
    # a traffic splitter names an api that is not deployed (daemon/projects.py lets one that
    # went after the splitter was deployed be: its share goes to the other apis)
    MISSING_TARGET = "missing_target"


@dataclass(frozen=True)
class Finding:
    """One problem (or notice) in an API document, located by field path."""

    path: Path_
    message: str
    on_key: bool = False  # point at the field's key (unknown field...) rather than its value
    kind: FindingKind = FindingKind.OTHER


def format_path(path: Sequence[str | int]) -> str:
    """("predictor", "models", "paths", 1, "name") -> "predictor.models.paths[1].name"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def is_bad(path: Path_, bad: set[Path_]) -> bool:
    """A path is bad when it, an ancestor or a descendant failed the schema."""
    return any(b[: len(path)] == path or path[: len(b)] == b for b in bad)
