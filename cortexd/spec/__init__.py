"""cortex.yaml -> validated, defaulted APISpec values.

    load_config(paths) -> LoadedConfig(apis, notices)   raises ConfigError

`paths` are folders holding a cortex.yaml, or yaml files. All problems of all
files are collected and raised together as one ConfigError.
"""

from cortexd.spec.load import LoadedConfig, load_config
from cortexd.spec.model import APISpec

__all__ = ["APISpec", "LoadedConfig", "load_config"]
