"""Why a requirements.txt line cannot be installed here, read from real pip output (issue 17):
the four cases of the issue (a 2019 pin on Python 3.11, a dependency failing under the user's
line, a git+https line without network, a build needing a toolchain), and pip's own answer to
the whole file naming the user's line."""

from __future__ import annotations

from cortexd.core.line_checks import (
    LineRun,
    Step,
    builds_in_report,
    cause_of,
    index_versions,
    known_failures,
    not_found,
    verdict,
    wheel_versions,
)
from cortexd.core.requirements import install_failure, requirement_lines
from tests.unit import pip_captures as pip

PY = "3.11"
SKLEARN = requirement_lines("boto3\nnumpy\npandas\nscikit-learn==0.21.3\n")[3]
TRANSFORMERS = requirement_lines("numpy\ntransformers==2.9.*\n")[1]
GIT = requirement_lines("numpy\n# the model code\ngit+https://github.com/huggingface/transformers.git@v2.9.1\n")[1]
PSUTIL = requirement_lines("six\npsutil==5.6.7\n")[1]
ALLENNLP_FILE = requirement_lines("allennlp==0.9.*\nnumpy\n")


def test_a_2019_pin_has_no_build_for_this_python_and_its_sdist_does_not_build():
    run = LineRun(Step(False, tuple(pip.SKLEARN_WHEELS_ONLY)), Step(False, tuple(pip.SKLEARN_DRY_RUN)))
    found = verdict(SKLEARN, run, PY)
    assert found.cause is not None and not found.cause.dependency
    assert found.cause.requirement == "scikit-learn==0.21.3"
    assert found.cause.why == "0.21.3 has no build for Python 3.11"
    assert found.cause.more == ("building it from source fails (No module named 'pkg_resources': its build "
                                "predates today's build tools)")
    assert found.cause.deterministic
    # the releases that have a wheel here: where the nearest one is looked for
    assert wheel_versions(pip.SKLEARN_WHEELS_ONLY, "scikit-learn")[:3] == ["1.1.3", "1.2.0rc1", "1.2.0"]


def test_a_release_that_installs_from_wheels_needs_no_further_step():
    assert verdict(SKLEARN, LineRun(Step(True, tuple(pip.SKLEARN_113_WHEELS_ONLY))), PY).cause is None


def test_a_dependency_without_a_build_is_named_under_the_users_line():
    # wheels only: pip calls it a conflict between the line's two candidates, naming the pin
    wheels = cause_of(pip.TRANSFORMERS_WHEELS_ONLY, TRANSFORMERS.text, PY)
    # (pip's words do not prove the release exists: a wheel for other Pythons only reads the same)
    assert (wheels.requirement, wheels.dependency, wheels.why) == (
        "tokenizers==0.7.0", True, "0.7.0 is not available for Python 3.11")
    # with sources: the dry run resolves, the report names the sdist to build, its build fails
    run = LineRun(Step(False, tuple(pip.TRANSFORMERS_WHEELS_ONLY)), Step(True, ()),
                  (("tokenizers==0.7.0", Step(False, tuple(pip.TOKENIZERS_NO_RUST))),))
    found = verdict(TRANSFORMERS, run, PY)
    assert found.cause is not None
    assert (found.cause.requirement, found.cause.dependency) == ("tokenizers==0.7.0", True)
    assert found.cause.why == "0.7.0 has no build for Python 3.11"
    assert found.cause.more == "building it from source needs a Rust compiler (cargo), which is not installed"


def test_the_sdists_a_dry_run_chose_are_read_from_its_report():
    assert builds_in_report(pip.TRANSFORMERS_REPORT) == [("tokenizers", "tokenizers==0.7.0")]
    assert builds_in_report("not json") == []


def test_a_git_line_without_network_says_so_not_old_pins():
    found = verdict(GIT, LineRun(full=Step(False, tuple(pip.GIT_OFFLINE))), PY)
    assert found.cause is not None
    assert found.cause.why.startswith("the repository cannot be cloned: no network to it (unable to access "
                                      "'https://github.com/huggingface/transformers.git/': Could not resolve host")
    assert "vendor the package into the project" in found.cause.more
    assert not found.cause.deterministic  # the network may come back: not remembered as a failure


def test_a_build_needing_a_compiler_or_headers_names_what_is_missing():
    gcc = cause_of(pip.PSUTIL_NO_GCC, PSUTIL.text, PY)
    assert gcc.why == "5.6.7 has no build for Python 3.11"
    assert gcc.more == "building it from source needs a C compiler (gcc), which is not installed"
    header = cause_of(pip.SNAPPY_NO_HEADER, "python-snappy==0.5.4", PY)
    assert header.more == ("building it from source needs the C header snappy-c.h (the -dev package of the "
                           "library it wraps), which is not installed")
    python_h = cause_of(["  Building wheel for x (setup.py): finished with status 'error'",
                         "      x.c:1:10: fatal error: Python.h: No such file or directory",
                         "  ERROR: Failed building wheel for x"], "x==1.0", PY)
    assert "Python's C headers (Python.h; a python3-dev package)" in python_h.more


def test_an_unreachable_index_is_the_cause_even_when_local_indexes_answered():
    found = cause_of(pip.INDEX_UNREACHABLE, SKLEARN.text, PY)
    assert found.why == "the package index cannot be reached" and not found.deterministic


def test_a_release_that_does_not_exist_is_not_called_a_missing_build():
    output = ["ERROR: Could not find a version that satisfies the requirement six==0.0.999 (from versions: none)",
              "ERROR: No matching distribution found for six==0.0.999"]
    found = cause_of(output, "six==0.0.999", PY)
    assert "no build" not in found.why and not found.no_build
    # releases listed, but not this one: it may not exist at all
    listed = ["ERROR: Could not find a version that satisfies the requirement six==0.0.999 (from versions: "
              "1.16.0, 1.17.0)"]
    assert cause_of(listed, "six==0.0.999", PY).why == "0.0.999 is not available for Python 3.11"


def test_requires_python_is_said_with_the_missing_build():
    output = ["ERROR: Ignored the following versions that require a different python version: "
              "0.1 Requires-Python >=3.6,<3.7; 0.2 Requires-Python <3.8",
              "ERROR: Could not find a version that satisfies the requirement oldpin==0.1 (from versions: 1.0, 1.1)",
              "ERROR: No matching distribution found for oldpin==0.1"]
    assert cause_of(output, "oldpin==0.1", PY).why == \
        "0.1 has no build for Python 3.11 (it requires Python >=3.6,<3.7)"
    # a dependency's: pip names the line's requirement as the parent
    dep = ["ERROR: Could not find a version that satisfies the requirement oldpin==0.1 (from needsold) "
           "(from versions: 1.0, 1.1)"]
    assert not_found(dep) == ("oldpin==0.1", "needsold", ["1.0", "1.1"])
    found = cause_of(dep, "needsold==1.0", PY)
    assert (found.requirement, found.dependency) == ("oldpin==0.1", True)


def test_a_check_that_ran_out_of_time_is_undecided_not_a_failure():
    run = LineRun(Step(False, tuple(pip.TRANSFORMERS_WHEELS_ONLY)), Step(True, ()),
                  (("tokenizers==0.7.0", Step(None, ())),))
    found = verdict(TRANSFORMERS, run, PY)
    assert found.cause is None and found.undecided == "building tokenizers==0.7.0 from source did not finish"


def test_pip_index_versions_lists_the_releases_for_this_python():
    assert index_versions(pip.TRANSFORMERS_VERSIONS)[:2] == ["5.25.0", "5.24.0"]


# -- pip's answer to the whole file (what the one-pass check follows) ----------------------------


def test_pips_answer_names_the_users_line_for_a_dependency_that_failed_to_build():
    # "did not run successfully" comes before "Failed building wheel for tokenizers"; the last
    # "Collecting" is cloudpickle: neither is the requirement that failed (the complaint)
    failure = install_failure(pip.TRANSFORMERS_NO_RUST, requirement_lines("numpy\ntransformers==2.9.*\n"), PY)
    assert failure.summary.startswith(
        "tokenizers==0.7.0 (needed by transformers==2.9.*, requirements.txt line 2) cannot be installed on "
        "Python 3.11: pip found no wheel of it for this Python, and building it from source needs a Rust "
        "compiler (cargo), which is not installed")
    assert failure.line == 2


def test_pips_answer_names_allennlp_on_line_1_not_the_build_dependency_a_nested_pip_failed_on():
    # the issue's `preshed...`: a nested pip (spacy's build dependencies) printed the last "Collecting"
    failure = install_failure(pip.ALLENNLP_REQUIREMENTS, ALLENNLP_FILE, PY)
    assert failure.summary.startswith(
        "spacy<2.2,>=2.1.0 (needed by allennlp==0.9.*, requirements.txt line 1) cannot be installed on Python "
        "3.11: pip found no wheel of it for this Python, and building it from source needs "
        "preshed<2.1.0,>=2.0.1, whose own build fails (cannot import name 'msvccompiler' from 'distutils': its "
        "build predates today's build tools)")
    assert failure.line == 1


def test_allennlp_checked_alone_names_spacy_and_why_its_build_fails():
    run = LineRun(Step(False, tuple(pip.ALLENNLP_WHEELS_ONLY)), Step(False, tuple(pip.ALLENNLP_REQUIREMENTS)))
    found = verdict(ALLENNLP_FILE[0], run, PY)
    assert found.cause is not None
    assert (found.cause.requirement, found.cause.dependency) == ("spacy<2.2,>=2.1.0", True)
    assert found.cause.why == "no release matching <2.2,>=2.1.0 has a build for Python 3.11"
    assert found.cause.more.startswith("building it from source needs preshed<2.1.0,>=2.0.1, whose own build fails")
    # pip's answer to the whole file traces spacy's failed build to line 1: no second check needed
    known = known_failures(pip.ALLENNLP_REQUIREMENTS, ALLENNLP_FILE, "/tmp/cap/p6/requirements.txt", PY)
    assert list(known) == [1] and known[1].cause is not None
    assert known[1].cause.requirement == "spacy<2.2,>=2.1.0" and known[1].cause.dependency


def test_pips_answer_to_a_git_line_without_network_is_not_a_failed_build():
    lines = requirement_lines("numpy\n# the model code\ngit+https://github.com/huggingface/transformers.git@v2.9.1\n")
    # nothing was built: the line is checked alone, not taken from pip's answer as a failed build
    assert known_failures(pip.GIT_OFFLINE_REQUIREMENTS, lines, "/tmp/cap/p3/requirements.txt", PY) == {}
    failure = install_failure(pip.GIT_OFFLINE_REQUIREMENTS, lines, PY)
    assert failure.summary.startswith("git+https://github.com/huggingface/transformers.git@v2.9.1 "
                                      "(requirements.txt line 3) cannot be installed: the repository cannot be "
                                      "cloned: no network to it")
    assert (failure.line, failure.deterministic) == (3, False)


def test_pips_answer_to_the_2019_pin_and_the_compiler():
    sklearn = install_failure(pip.SKLEARN_REQUIREMENTS, requirement_lines(
        "boto3\nnumpy\npandas\nscikit-learn==0.21.3\n"), PY)
    assert sklearn.summary.startswith("scikit-learn==0.21.3 (requirements.txt line 4) cannot be installed")
    psutil = install_failure(pip.PSUTIL_NO_GCC_REQUIREMENTS, requirement_lines("six\npsutil==5.6.7\n"), PY)
    assert psutil.summary.startswith("psutil==5.6.7 (requirements.txt line 2) cannot be installed on Python 3.11")


def test_each_build_that_failed_in_pips_answer_is_traced_to_its_line():
    lines = requirement_lines("numpy\ntransformers==2.9.*\npsutil==5.6.7\n")
    known = known_failures(pip.TWO_BUILDS_FAIL, lines, "/tmp/cap/p5/requirements.txt", PY)
    assert sorted(known) == [2, 3]
    tokenizers, psutil = known[2].cause, known[3].cause
    assert (tokenizers.requirement, tokenizers.dependency) == ("tokenizers==0.7.0", True)
    # each build's own words: psutil's missing gcc is not tokenizers' cause
    assert tokenizers.more == "building it from source needs a Rust compiler (cargo), which is not installed"
    assert (psutil.requirement, psutil.dependency) == ("psutil==5.6.7", False)
    assert psutil.more == "building it from source needs a C compiler (gcc), which is not installed"
    # an install of another file (an include) is left to the checks
    assert known_failures(pip.TWO_BUILDS_FAIL, lines, "/p/requirements.txt", PY) == {}


def test_a_repository_that_was_cloned_is_not_blamed_for_its_build():
    from cortexd.core.pip_builds import failed_clone

    cloned_then_built = ["Collecting git+https://github.com/x/y.git (from -r /p/requirements.txt (line 1))",
                         "  Cloning https://github.com/x/y.git to /tmp/pip-req-build-1",
                         "  Building wheel for y (pyproject.toml): finished with status 'error'",
                         "      error: [Errno 2] No such file or directory: 'gcc'",
                         "  ERROR: Failed building wheel for y"]
    assert failed_clone(cloned_then_built) is None
    found = cause_of(cloned_then_built, "git+https://github.com/x/y.git", PY)
    assert found.more == "building it from source needs a C compiler (gcc), which is not installed"
    no_git = ["  Cloning https://github.com/x/y.git to /tmp/pip-req-build-1",
              "ERROR: Cannot find command 'git' - do you have 'git' installed and in your PATH?"]
    assert cause_of(no_git, "git+https://github.com/x/y.git", PY).why == \
        "it needs git to clone the repository, and git is not installed"
