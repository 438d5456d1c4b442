"""The host's NVIDIA GPUs, read through NVML (nvidia-ml-py): the I/O side of GPU placement.

The daemon reads the inventory once at start (device ids for core.placement)
and samples utilization and memory for the live view. A host without an
NVIDIA driver is normal (laptops, CI): it yields an empty inventory whose
`reason` says why, never an exception, so callers only check `devices`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class GPUDevice:
    index: int  # the id placement hands out (NVML index = CUDA / Docker device id)
    uuid: str
    name: str
    memory_total: int  # bytes
    memory_used: int  # bytes
    utilization: int | None  # percent of time a kernel ran over the last sample period


@dataclass(frozen=True)
class GPUInventory:
    devices: tuple[GPUDevice, ...] = ()
    reason: str | None = None  # why there are no devices, when there are none
    driver_version: str | None = None

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(d.index for d in self.devices)


def _text(value: Any) -> str:
    # older nvidia-ml-py releases return bytes, newer ones str
    return value.decode() if isinstance(value, bytes) else str(value)


def _load_nvml() -> ModuleType | str:
    try:
        import pynvml
    except ImportError as e:
        return f"nvidia-ml-py is not installed ({e}); install it with `pip install nvidia-ml-py`"
    return pynvml


class GPUMonitor:
    """Reads the inventory repeatedly with NVML initialised once (cheap per-second samples).

    Not thread-safe; the daemon calls read() from one thread (NVML calls take
    microseconds, so calling it on the event loop is acceptable).
    """

    def __init__(self, nvml: ModuleType | None = None):
        loaded = nvml if nvml is not None else _load_nvml()
        self._nvml: ModuleType | None = None
        self._reason: str | None = None
        self._driver: str | None = None
        if isinstance(loaded, str):
            self._reason = loaded
            return
        try:
            loaded.nvmlInit()
        except Exception as e:
            self._reason = f"no NVIDIA driver found (NVML: {e})"
            return
        self._nvml = loaded
        try:
            self._driver = _text(loaded.nvmlSystemGetDriverVersion())
        except Exception:
            self._driver = None

    def read(self) -> GPUInventory:
        nvml = self._nvml
        if nvml is None:
            return GPUInventory(reason=self._reason)
        try:
            count = nvml.nvmlDeviceGetCount()
        except Exception as e:
            return GPUInventory(reason=f"NVML could not count GPUs: {e}", driver_version=self._driver)
        if count == 0:
            return GPUInventory(reason="the NVIDIA driver reports no GPU", driver_version=self._driver)
        devices = []
        for i in range(count):
            try:
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
                try:
                    util: int | None = int(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
                except Exception:
                    util = None
                devices.append(
                    GPUDevice(
                        index=i,
                        uuid=_text(nvml.nvmlDeviceGetUUID(h)),
                        name=_text(nvml.nvmlDeviceGetName(h)),
                        memory_total=int(mem.total),
                        memory_used=int(mem.used),
                        utilization=util,
                    )
                )
            except Exception:
                continue
        return GPUInventory(devices=tuple(devices), driver_version=self._driver)

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None
            self._reason = "GPU monitor closed"


def read_inventory() -> GPUInventory:
    """One-shot inventory (initialises and shuts down NVML)."""
    monitor = GPUMonitor()
    try:
        return monitor.read()
    finally:
        monitor.close()
