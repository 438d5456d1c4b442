"""What an HTTP client is told about an API in error: a category, never the daemon's detail."""

import pytest

from cortexd.gateway.proxy import client_reason

SECRET = "password=hunter2 postgres://admin:hunter2@db/prod"


@pytest.mark.parametrize("detail, why", [
    (f"the predictor exited during start-up (code 1):\n{SECRET}\nTraceback ...", "its predictor failed to start"),
    ("six==0.0.999 (requirements.txt line 2) cannot be installed on Python 3.11: ...",
     "its dependencies could not be installed"),
    ("conda-packages.txt needs conda, mamba or micromamba on PATH", "its dependencies could not be installed"),
    ("cannot create a Python environment in /var/cache/cortexd/envs/x: disk full",
     "its dependencies could not be installed"),
    ("replica api-r1 unhealthy: 3 requests in a row timed out; replacing it",
     "its replicas stopped answering and are being replaced"),
    ("error (out of memory): the replica was killed", "its predictor ran out of memory"),
    ("replica api-r1 did not become ready within 300 s", "its predictor did not become ready in time"),
    ("could not prepare the replica image: step 3 failed", "its replica image could not be prepared"),
])
def test_a_client_gets_the_category_and_none_of_the_detail(detail, why):
    said = client_reason("api", f"{detail}\n{SECRET}")
    assert said == f"the API is not ready: {why}; see `cortexd get api`"
    assert "hunter2" not in said
