"""Quantities of cortex.yaml and of the daemon's settings: CPU, bytes, durations, surge counts.

Pure parsing, used as jsonschema format checkers (config_schema.json says
`"format": "duration"`...; a ValueError's text becomes the user's message), by
the spec builder to turn validated strings into the units APISpec carries
(cores, bytes, seconds, replica counts or a Percent), and by cortexd/settings.py
for the sizes a user sets outside cortex.yaml. The syntax follows what Cortex 0.23
accepted: Kubernetes quantities for cpu/mem, Go's time.ParseDuration for durations.

One meaning per unit: every byte size a user writes (compute.mem, `--log-max-size`,
CORTEXD_LOG_MAX_SIZE, CORTEXD_TMPFS_SIZE) is read by `parse_memory`, where `M` is
10^6 and `Mi` 2^20, as Kubernetes has it; every byte size cortexd writes for a
person is written by `format_bytes`, in binary units (KiB, MiB, GiB).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

CPU_EXAMPLE = 'a CPU quantity such as 1, 0.5 or "200m" (200 millicores = 0.2 cores)'
MEMORY_EXAMPLE = 'a memory quantity such as "512Mi", "1Gi", "500M", "1G" or a number of bytes'
DURATION_EXAMPLE = 'a duration such as "10s", "5m", "1h", "1m30s" or "100ms"'
SURGE_EXAMPLE = 'a number of replicas such as 1, or a percentage of the desired replicas such as "25%"'

_MEMORY_SUFFIXES = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_MEMORY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_CPU_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)$")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_PERCENT_RE = re.compile(r"^([0-9]+)%$")
_DAYS_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")

# Upper bounds where Kubernetes, which ran Cortex, would have refused the value: quantities
# are int64 (bytes, millicores), durations Go's int64 nanoseconds, replica counts int32.
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
MAX_MEMORY = INT64_MAX  # bytes (8Ei)
MAX_CPU = INT64_MAX // 1000  # cores (int64 millicores)
MAX_DURATION = INT64_MAX / 1e9  # seconds (Go's time.Duration, about 292 years)
MAX_DURATION_TEXT = "2562047h"


def describe_value(value: Any) -> str:
    """How a YAML value reads in a message: "the string 'abc'", "the integer 3"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        text = str(value)
        return f"the integer {text}" if len(text) <= 30 else f"an integer of {len(text.lstrip('-'))} digits"
    if isinstance(value, float):
        return f"the number {value:g}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_finite(value: Any, example: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected {example}; found {describe_value(value)} (a finite number is needed)")


def _cpu_in_range(cores: float, value: Any) -> float:
    if not math.isfinite(cores) or cores > MAX_CPU:
        raise ValueError(f"expected a CPU quantity of at most {MAX_CPU} cores (Kubernetes' limit); "
                         f"found {describe_value(value)}")
    return cores


def parse_cpu(value: Any) -> float:
    """CPU cores from 1, 0.5, "1", "0.5" or "200m"; raises ValueError with an example."""
    if _is_number(value):
        _check_finite(value, CPU_EXAMPLE)
        if value < 0:
            raise ValueError(f"expected {CPU_EXAMPLE}, not negative; found {describe_value(value)}")
        if value > MAX_CPU:
            return _cpu_in_range(math.inf, value)
        return _cpu_in_range(float(value), value)
    if isinstance(value, str):
        m = _CPU_RE.match(value.strip())
        if m:
            number = float(m.group(1))
            return _cpu_in_range(number / 1000.0 if m.group(2) else number, value)
    raise ValueError(f"expected {CPU_EXAMPLE}; found {describe_value(value)}")


def parse_memory(value: Any) -> int:
    """Bytes from "200Mi", "1Gi", "500M", "1G" or a plain number of bytes (Kubernetes' quantities:
    k, M, G... are powers of 1000, Ki, Mi, Gi... powers of 1024)."""
    too_large = f"expected a memory quantity of at most 8Ei ({MAX_MEMORY} bytes, Kubernetes' limit)"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"expected {MEMORY_EXAMPLE}, not negative; found {describe_value(value)}")
        if value > MAX_MEMORY:
            raise ValueError(f"{too_large}; found {describe_value(value)}")
        return value
    if isinstance(value, str):
        m = _MEMORY_RE.match(value.strip())
        if m:
            number = float(m.group(1)) * _MEMORY_SUFFIXES[m.group(2) or ""]
            if not math.isfinite(number) or number > MAX_MEMORY:
                raise ValueError(f"{too_large}; found {describe_value(value)}")
            return int(number)
        if re.match(r"^[0-9.]+(kb|KB|Kb|K|mb|MB|m|gb|GB|g|Gb)$", value.strip()):
            unit = re.sub(r"^[0-9.]+", "", value.strip())
            raise ValueError(
                f"expected {MEMORY_EXAMPLE}; found {describe_value(value)} "
                f"(unit {unit!r} is not a Kubernetes quantity suffix: use Ki/Mi/Gi or k/M/G)"
            )
    raise ValueError(f"expected {MEMORY_EXAMPLE}; found {describe_value(value)}")


_BINARY_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("bytes", 1))


def format_bytes(n: int, decimals: int | None = None, *, sep: str = " ", smallest: str = "bytes") -> str:
    """`n` bytes for a person to read, in binary units down to `smallest` (KiB, MiB or bytes).

    decimals=None (limits: "32 MiB", "1000 bytes"): exact, in the largest unit that divides
    `n`; decimals=k (sizes: "2.9 KiB", "40.0 GiB"): the largest unit `n` reaches, k decimals.
    """
    units = _BINARY_UNITS[: [unit for unit, _ in _BINARY_UNITS].index(smallest) + 1]
    unit, scale = next(((unit, scale) for unit, scale in units[:-1]
                        if n >= scale and (decimals is not None or n % scale == 0)), units[-1])
    if decimals is None:
        return f"{n // scale}{sep}{unit}"
    return f"{n / scale:.{decimals if scale > 1 else 0}f}{sep}{unit}"


def parse_duration(value: Any) -> float:
    """Seconds from a Go duration string ("10s", "5m", "1h", "1m30s", "100ms"; "0")."""
    if isinstance(value, str):
        text = value.strip()
        if text == "0":
            return 0.0
        pos, total = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        else:
            if text and pos == len(text):
                if not total <= MAX_DURATION:  # also catches inf and nan
                    raise ValueError(f"expected a duration of at most {MAX_DURATION_TEXT} (Go's "
                                     f"time.Duration limit); found {describe_value(value)}")
                return total
    hint = " (a number needs a unit, e.g. \"60s\")" if _is_number(value) else ""
    raise ValueError(f"expected {DURATION_EXAMPLE}; found {describe_value(value)}{hint}")


def parse_age(value: str) -> float:
    """Seconds back in time (`cortexd logs --since`): a duration as parse_duration reads it
    ("90s", "10m", "1h30m"), or days ("1d", "1.5d"), which Go's syntax lacks."""
    text = value.strip()
    if text.endswith("d") and _DAYS_RE.fullmatch(text[:-1]):
        return float(text[:-1]) * 86400.0
    return parse_duration(text)


@dataclass(frozen=True)
class Percent:
    """A share of the desired replica count: max_surge / max_unavailable written as "25%" (0..100)."""

    value: int

    def __str__(self) -> str:
        return f"{self.value}%"

    def of(self, count: int, *, round_up: bool) -> int:
        """This share of `count` replicas, rounded up or down (integer maths: no float surprises)."""
        share = self.value * count
        return -(-share // 100) if round_up else share // 100


def parse_surge(value: Any) -> int | Percent:
    """max_surge / max_unavailable: an int >= 0 (also "5") or a percentage "0%".."100%" (a Percent)."""
    if isinstance(value, Percent):
        return value
    too_large = f"expected at most {INT32_MAX} replicas (an int32, as Kubernetes has it)"
    if isinstance(value, int) and not isinstance(value, bool):
        if value > INT32_MAX:
            raise ValueError(f"{too_large}; found {describe_value(value)}")
        if value >= 0:
            return value
    elif isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            if len(text) > 10 or int(text) > INT32_MAX:
                raise ValueError(f"{too_large}; found {describe_value(value)}")
            return int(text)
        m = _PERCENT_RE.match(text)
        if m and len(m.group(1)) <= 3 and int(m.group(1)) <= 100:
            return Percent(int(m.group(1)))
        if m:
            raise ValueError(f"expected a percentage between 0% and 100%; found {describe_value(value)}")
    raise ValueError(f"expected {SURGE_EXAMPLE}; found {describe_value(value)}")


def surge_is_zero(value: int | Percent) -> bool:
    """True for 0 and "0%" (the value parse_surge returned)."""
    return value == 0 or value == Percent(0)


def surge_as_written(value: int | Percent) -> int | str:
    """A parsed max_surge / max_unavailable as cortex.yaml (and Kubernetes' IntOrString) write it."""
    return str(value) if isinstance(value, Percent) else value
