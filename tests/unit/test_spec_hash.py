"""The spec hash: computed once per spec, from the document and the project digest, never changing value.

Running replicas carry the hash (Docker labels; the process backend's records), and a
restarted daemon adopts the replicas whose hash still matches: the same cortex.yaml and
project files must give the same hash as every earlier cortexd did, or an upgrade would
roll every API.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from cortexd.daemon.projects import load_project
from cortexd.spec.model import (
    APISpec,
    spec_hash_of,
)
from tests.builders import api_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOC = {
    "name": "iris", "kind": "RealtimeAPI",
    "predictor": {"type": "python", "path": "/srv/iris/predictor.py", "processes_per_replica": 1},
    "compute": {"cpu": "200m", "mem": None},
    "autoscaling": {"window": "60s", "target_replica_concurrency": 1.0},
    "update_strategy": {"max_surge": "25%", "max_unavailable": "25%"},
}


def old_hash(document: dict) -> str:
    """cortexd's original algorithm: the digest folded into the document under `_project_digest`."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:12]


def spec(raw: dict, digest: str | None = None) -> APISpec:
    return api_spec("iris", "/srv/iris", raw=raw, project_digest=digest)


def test_the_hash_of_a_document_is_the_value_earlier_versions_stamped_on_replicas():
    # the literals are what cortexd 0.x computed for these inputs (before the digest became a field)
    assert spec(DOC).spec_hash == "75d57a5cebc8"
    assert spec(DOC, "0123456789abcdef").spec_hash == "a12687ee849f"
    assert spec_hash_of(DOC, "0123456789abcdef") == "a12687ee849f"


def test_an_example_project_hashes_as_the_original_algorithm_did(tmp_path):
    shutil.copytree(EXAMPLES / "iris-classifier", tmp_path / "iris")
    (api,) = load_project(str(tmp_path / "iris")).specs
    assert api.project_digest
    assert api.spec_hash == old_hash({**api.raw, "_project_digest": api.project_digest})
    assert "_project_digest" not in api.raw  # the document stays what cortex.yaml says


def test_replacing_the_digest_makes_a_new_hash_and_leaves_the_document_alone():
    first = spec(DOC, "aaaa")
    second = dataclasses.replace(first, project_digest="bbbb")
    assert second.spec_hash != first.spec_hash
    assert second.spec_hash == spec(DOC, "bbbb").spec_hash
    assert first.raw == second.raw == DOC


def test_an_edited_project_file_changes_the_hash_and_an_untouched_one_does_not(tmp_path):
    shutil.copytree(EXAMPLES / "iris-classifier", tmp_path / "iris")
    (before,) = load_project(str(tmp_path / "iris")).specs
    (again,) = load_project(str(tmp_path / "iris")).specs
    assert again.spec_hash == before.spec_hash
    predictor = tmp_path / "iris" / "predictor.py"
    predictor.write_text(predictor.read_text() + "\n# edited\n")
    (after,) = load_project(str(tmp_path / "iris")).specs
    assert after.spec_hash != before.spec_hash
    assert after.raw == before.raw
