"""Passive health (cortexd.core.health): when a replica leaves rotation, on a fake clock."""

from __future__ import annotations

from cortexd.core.health import (
    DROPPED,
    FAILURE,
    HEALTHY,
    TIMEOUT,
    HealthPolicy,
    after_answer,
    after_failure,
    is_ejected,
    readmitted,
)

POLICY = HealthPolicy(eject_after_failures=3, ejection_time=10.0, max_ejection_time=25.0,
                      unhealthy_after_timeouts=3)


def fail(health, kind, now, times=1, others=1):
    for _ in range(times):
        health = after_failure(health, kind, now, POLICY, others_in_rotation=others)
    return health


def test_three_connection_failures_in_a_row_eject_for_the_ejection_time():
    h = fail(HEALTHY, FAILURE, 100.0, times=2)
    assert not is_ejected(h, 100.0)
    h = fail(h, FAILURE, 100.0)
    assert is_ejected(h, 100.0)
    assert is_ejected(h, 109.9)
    assert not is_ejected(h, 110.0)
    assert h.reason == "3 connection failures in a row; out of rotation for 10s"
    assert h.unhealthy is None  # ejected for a while, not replaced


def test_an_answer_in_between_ends_the_streak():
    h = fail(HEALTHY, FAILURE, 100.0, times=2)
    h = after_answer(h)
    h = fail(h, FAILURE, 101.0, times=2)
    assert not is_ejected(h, 101.0)
    assert after_answer(HEALTHY) is HEALTHY  # the request path allocates nothing when healthy


def test_each_ejection_lasts_longer_up_to_the_maximum():
    h = fail(HEALTHY, FAILURE, 0.0, times=3)
    assert h.ejected_until == 10.0
    h = fail(readmitted(h), FAILURE, 20.0, times=3)
    assert h.ejected_until == 40.0  # second time: 2 x 10 s
    h = fail(readmitted(h), FAILURE, 50.0, times=3)
    assert h.ejected_until == 75.0  # capped at 25 s
    assert readmitted(h).failures == 0


def test_the_last_replica_in_rotation_is_not_ejected_for_connection_failures():
    h = fail(HEALTHY, FAILURE, 0.0, times=5, others=0)
    assert not is_ejected(h, 0.0)


def test_requests_timing_out_in_a_row_make_a_replica_hung_for_good():
    h = fail(HEALTHY, TIMEOUT, 0.0, times=2)
    assert not is_ejected(h, 0.0)
    h = fail(h, TIMEOUT, 60.0, others=0)  # even the last replica: it serves nothing
    assert h.unhealthy == "3 requests in a row timed out"
    assert is_ejected(h, 10_000.0)
    assert readmitted(h) is h
    assert fail(h, FAILURE, 61.0) is h  # nothing more to decide


def test_a_timeout_between_answers_is_only_a_slow_request():
    h = HEALTHY
    for t in range(10):
        h = after_answer(fail(h, TIMEOUT, float(t)))
    assert h.unhealthy is None and not is_ejected(h, 10.0)


def test_a_dropped_request_ejects_at_once_but_never_the_last_replica():
    h = fail(HEALTHY, DROPPED, 5.0)
    assert is_ejected(h, 5.0) and h.ejected_until == 15.0
    assert h.reason == "it dropped a request without answering; out of rotation for 10s"
    assert not is_ejected(fail(HEALTHY, DROPPED, 5.0, others=0), 5.0)
