"""core.api_status: the restart backoff and the status an API shows, on values."""

from __future__ import annotations

import pytest

from cortexd.core.api_status import api_status, restart_delay, shows_error


@pytest.mark.parametrize("failures, delay", [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (40, 8.0)])
def test_restart_delay_doubles_up_to_the_cap(failures, delay):
    assert restart_delay(failures, initial=1.0, maximum=8.0) == delay


def test_restart_delay_never_overflows_on_a_long_crash_loop():
    assert restart_delay(10_000, initial=0.5, maximum=60.0) == 60.0


@pytest.mark.parametrize("failures, oom, at_once, error", [
    (1, False, False, False), (2, False, False, False), (3, False, False, True), (4, False, False, True),
    (1, True, False, True),  # out of memory: the same limit fails again
    (1, False, True, True),  # a requirement pip cannot install
])
def test_error_after_repeated_failures_or_at_once(failures, oom, at_once, error):
    assert shows_error(failures, 3, oom=oom, at_once=at_once) is error


@pytest.mark.parametrize("failing, desired, current_ready, stale, routable, status", [
    (False, 2, 2, False, 2, "live"),
    (False, 0, 0, False, 0, "live"),  # scaled to zero and done
    (False, 2, 1, False, 1, "updating"),  # one still starting
    (False, 2, 2, True, 3, "updating"),  # an old replica still serves
    (False, 2, 2, False, 3, "updating"),  # a draining-to-be one is still routed
    (True, 2, 2, False, 2, "error"),
    (True, 1, 0, False, 0, "error"),
])
def test_api_status(failing, desired, current_ready, stale, routable, status):
    assert api_status(failing=failing, desired=desired, current_ready=current_ready, stale=stale,
                      routable=routable) == status
