"""The control API's errors: one table (cortexd/errors.py CONTROL_API_ANSWERS) gives the HTTP
status the daemon answers each error class with and the class the CLI raises for it (so the
exit code: cli.EXIT_CODES)."""

from __future__ import annotations

import pytest

from cortexd.cli import EXIT_USER, exit_code_for
from cortexd.errors import (
    BackendError,
    ConfigError,
    ConfigProblem,
    ConfigRejected,
    DependencyError,
    RequestError,
    UnknownAPI,
    error_from_http,
    http_status,
)

PROBLEM = ConfigProblem("/p/cortex.yaml", 3, 5, "iris", "predictor.type", "expected python")


@pytest.mark.parametrize(("raised", "status", "read_as"), [
    (UnknownAPI("no api named 'x' (apis: none)"), 404, UnknownAPI),
    (ConfigError([PROBLEM]), 422, ConfigRejected),
    (DependencyError("torch==0 cannot be installed"), 409, RequestError),  # any other: refused
    (BackendError("no image"), 409, RequestError),
])
def test_an_error_crosses_the_control_api_as_its_class_says(raised, status, read_as):
    assert http_status(raised) == status
    read = error_from_http(status, str(raised))
    assert type(read) is read_as and str(read) == str(raised)
    assert exit_code_for(read) == EXIT_USER


def test_answers_of_no_row_are_request_errors_and_silence_is_explained():
    assert type(error_from_http(400, "tail must be an integer")) is RequestError
    assert str(error_from_http(500, None)) == "daemon answered HTTP 500"
    assert str(error_from_http(404, None)) == "not found"
    assert str(error_from_http(422, None)) == "the configuration was rejected"
