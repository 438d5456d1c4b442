"""Credentials are masked in everything cortexd logs (cortexd/credentials.py), as pip masks them."""

from __future__ import annotations

import pytest

from cortexd.credentials import redact_credentials


@pytest.mark.parametrize(("text", "shown"), [
    ("uv pip install --index-url https://user:TOKEN@pypi.example/simple -r r.txt",
     "uv pip install --index-url https://user:****@pypi.example/simple -r r.txt"),
    ("--extra-index-url https://TOKEN@pypi.example/simple", "--extra-index-url https://****@pypi.example/simple"),
    ("HTTPS_PROXY=http://me:p%40ss@proxy:3128", "HTTPS_PROXY=http://me:****@proxy:3128"),
    ("git+https://TOKEN@github.com/org/repo@v1.0#egg=x", "git+https://****@github.com/org/repo@v1.0#egg=x"),
    ("'https://a:b@h/x' \"https://c:d@h\"", "'https://a:****@h/x' \"https://c:****@h\""),
    ("-c https://conda.anaconda.org/t/abc-123/private", "-c https://conda.anaconda.org/t/****/private"),
])
def test_the_credentials_of_every_url_are_masked(text, shown):
    assert redact_credentials(text) == shown
    assert "TOKEN" not in redact_credentials(text)


@pytest.mark.parametrize("text", [
    "pip install -r /proj/requirements.txt",
    "--index-url https://pypi.example/simple --find-links file:///wheels",
    "Collecting torch@https://download.example/torch.whl",  # an '@' outside the URL's netloc
    "user:pass@host without a scheme is not a URL",
])
def test_text_without_credentials_is_left_as_it_was(text):
    assert redact_credentials(text) == text


def test_an_image_builds_output_is_masked_in_progress_and_in_the_error():
    from cortexd.backends.image_plans import BuildPlan
    from cortexd.backends.images import ImageBuilder
    from cortexd.errors import BackendError

    class Engine:
        class api:  # docker-py's attribute
            @staticmethod
            def build(**kwargs):
                return iter([{"stream": "Step 3/4 : RUN pip install -r requirements.txt\n"},
                             {"stream": "Looking in indexes: https://ci:TOKEN@pypi.example/simple\n"},
                             {"error": "fetching https://ci:TOKEN@pypi.example/simple/x failed"}])

    said: list[str] = []
    builder = ImageBuilder(Engine(), base_image="base:1", pip_config_list="", progress=said.append)
    plan = BuildPlan(tag="t:1", dockerfile="Dockerfile", buildargs={}, files={"Dockerfile": b"FROM x\n"},
                     description="deps")
    with pytest.raises(BackendError) as e:
        builder._build(plan, "api")
    assert "TOKEN" not in "\n".join(said) + str(e.value)
    assert "https://ci:****@pypi.example/simple" in "\n".join(said)
    assert "https://ci:****@pypi.example/simple/x failed" in str(e.value)
