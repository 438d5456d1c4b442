"""Byte sizes: one meaning per unit (Kubernetes quantities: M is 10^6, Mi 2^20) wherever a user
writes one, and one formatter wherever cortexd writes one (cortexd/spec/units.py)."""

from __future__ import annotations

import pytest

from cortexd.errors import CortexdError, UsageError
from cortexd.settings import configured
from cortexd.spec.units import format_bytes, parse_memory
from cortexd.ui.view import fmt_bytes


@pytest.mark.parametrize(("written", "size"), [("500M", 500 * 10**6), ("500Mi", 500 * 2**20),
                                                ("2G", 2 * 10**9), ("2Gi", 2 * 2**30)])
def test_compute_mem_the_tmpfs_size_and_the_log_size_read_a_unit_alike(written, size):
    assert parse_memory(written) == size  # compute.mem
    assert configured({}, {"CORTEXD_TMPFS_SIZE": written}).tmpfs_bytes == size
    assert configured({}, {"CORTEXD_LOG_MAX_SIZE": written}).log_max_bytes == size
    assert configured({"log_max_bytes": written}, {}).log_max_bytes == size  # --log-max-size


@pytest.mark.parametrize("written", ["500K", "10MB", "1gb"])
def test_sizes_that_are_no_kubernetes_quantity_are_refused_alike(written):
    with pytest.raises(ValueError, match="not a Kubernetes quantity suffix"):
        parse_memory(written)
    with pytest.raises(CortexdError, match=r"e\.g\. CORTEXD_TMPFS_SIZE=2Gi"):
        configured({}, {"CORTEXD_TMPFS_SIZE": written})
    with pytest.raises(UsageError, match="expected a size such as 10Mi"):
        configured({"log_max_bytes": written}, {})


def test_one_formatter_writes_limits_exactly_and_sizes_rounded():
    # limits (the gateway's 413 and 431 answers): exact, in the largest unit that divides them
    assert [format_bytes(n) for n in (32 * 2**20, 64 * 2**10, 1000, 1536 * 2**10)] == [
        "32 MiB", "64 KiB", "1000 bytes", "1536 KiB"]
    # sizes (`cortexd build`, `export`): the largest unit reached, one decimal
    assert [format_bytes(n, 1) for n in (4096, 3000, 12, 3 * 2**30)] == [
        "4.0 KiB", "2.9 KiB", "12 bytes", "3.0 GiB"]
    # GPU memory in the live view: compact, in MiB below a GiB
    assert [fmt_bytes(n) for n in (40 * 2**30, 512 * 2**20, 0, None)] == ["40.0GiB", "512MiB", "0MiB", "-"]
