"""cortex.yaml -> validated, defaulted APISpec values.

    load_config(paths) -> LoadedConfig(apis, notices)   raises ConfigError

`paths` are folders holding a cortex.yaml, or yaml files. All problems of all
files are collected and raised together as one ConfigError.

The loader (YAML, JSON Schema) is imported when first asked for: `cortexd.spec.units`
is read by every CLI command (settings, the views) and must not cost them the loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cortexd.spec.load import LoadedConfig, load_config
    from cortexd.spec.model import APISpec

__all__ = ["APISpec", "LoadedConfig", "load_config"]


def __getattr__(name: str) -> Any:
    if name in ("LoadedConfig", "load_config"):
        from cortexd.spec import load

        return getattr(load, name)
    if name == "APISpec":
        from cortexd.spec.model import APISpec

        return APISpec
    raise AttributeError(f"module 'cortexd.spec' has no attribute {name!r}")
