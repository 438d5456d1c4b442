"""The nearest releases that install here, the rewritten requirements and the words (issue 17):
core/nearest_pins.py, and the one-pass check's orchestration (backends/requirement_checks.py)
driven by a runner that answers with real pip output instead of running pip."""

from __future__ import annotations

import asyncio
from pathlib import Path

from packaging.version import Version

from cortexd.backends.requirement_checks import RequirementChecks
from cortexd.core.line_checks import Cause, Verdict
from cortexd.core.nearest_pins import (
    Nearest,
    NearestSearch,
    candidates,
    change_notice,
    nearest_changes,
    not_relaxable,
    one_pass_report,
    rewrite_requirement,
    rewritten_requirements,
)
from cortexd.core.requirements import requirement_lines
from tests.unit import pip_captures as pip

PY = "3.11"
SKLEARN_VERSIONS = ["0.20.4", "0.21.1", "0.21.2", "0.21.3", "0.22", "1.0.2", "1.1.2", "1.1.3", "1.2.0rc1",
                    "1.2.0", "1.2.1"]


def test_candidates_are_the_releases_past_the_pin_with_a_wheel_here_nearest_first():
    wheels = ["1.1.3", "1.2.0rc1", "1.2.0", "1.2.1"]
    newer, older = candidates("scikit-learn==0.21.3", SKLEARN_VERSIONS, wheels)
    assert newer == ["1.1.3", "1.2.0", "1.2.1"]  # no pre-release: the pin names none
    assert older == []
    # without pip's list of wheels: every release it lists for this Python, older ones after
    newer, older = candidates("scikit-learn==0.21.3", SKLEARN_VERSIONS)
    assert newer[:2] == ["0.22", "1.0.2"] and older == ["0.21.2", "0.21.1", "0.20.4"]
    # a wildcard pin: the releases it allows were pip's own choice already
    newer, _ = candidates("transformers==2.9.*", ["2.8.0", "2.9.0", "2.9.1", "2.10.0", "3.0.0"])
    assert newer == ["2.10.0", "3.0.0"]
    # a pin of a release no index lists for this Python (its Requires-Python): past it
    newer, older = candidates("oldpin==0.1", ["1.0", "1.1"])
    assert (newer, older) == (["1.0", "1.1"], [])


def test_the_search_gallops_then_bisects_back_to_the_nearest_that_installs():
    releases = [f"3.{i}.0" for i in range(40)]
    installs_from = 21
    search = NearestSearch(releases, bound=12)
    while (v := search.next()) is not None:
        search.record(v, int(v.split(".")[1]) >= installs_from)
    assert search.found == "3.21.0"
    assert len(search.outcomes) <= 12
    # the first one installs: one check
    search = NearestSearch(["1.1.3", "1.2.0"])
    assert search.next() == "1.1.3"
    search.record("1.1.3", True)
    assert search.next() is None and search.found == "1.1.3" and search.tried == ()


def test_a_bisection_cut_short_says_where_the_nearest_lies():
    search = NearestSearch([f"3.{i}.0" for i in range(40)], bound=8)
    while (v := search.next()) is not None:
        search.record(v, int(v.split(".")[1]) >= 21)
    assert (search.found, search.unsure_after) == ("3.22.0", "3.20.0")
    summary, _ = one_pass_report([Verdict(TF_LINE, TOKENIZERS)], {2: Nearest("3.22.0", unsure_after="3.20.0")}, PY)
    assert "a release of transformers that installs here: 3.22.0 (nearer ones after 3.20.0 were not all checked)" \
        in summary


def test_the_search_stops_at_its_bound_and_says_what_it_tried():
    search = NearestSearch([str(i) for i in range(1, 100)], ["0.5"], bound=4)
    while (v := search.next()) is not None:
        search.record(v, False)
    assert search.found is None and len(search.tried) == 4


def test_older_releases_are_tried_only_when_no_newer_one_exists():
    search = NearestSearch([], ["0.9", "0.8"])
    assert search.next() == "0.9"
    search.record("0.9", False)
    assert search.next() == "0.8"
    search.record("0.8", True)
    assert search.found == "0.8" and search.next() is None


def test_a_line_is_rewritten_keeping_its_extras_marker_and_options():
    assert rewrite_requirement("scikit-learn==0.21.3", "1.1.3") == "scikit-learn==1.1.3"
    assert rewrite_requirement('Transformers[torch]==2.9.* ; python_version > "3"', "4.0.0") == \
        'Transformers[torch]==4.0.0; python_version > "3"'
    assert rewrite_requirement("six==1.0 --no-binary six", "1.16.0") == "six==1.16.0 --no-binary six"


def test_only_index_releases_without_hashes_are_moved():
    lines = requirement_lines("numpy\nsix==1.0 --hash=sha256:abc\ngit+https://x/y.git\n./pkg\nsix==1.0\n")
    assert [not_relaxable(r) is None for r in lines] == [False, False, False, False, True]


def test_the_rewritten_file_keeps_every_line_number_and_reads_includes_from_the_project():
    text = ("# models\n-r base.txt\n-c ./constraints.txt\nscikit-learn==0.21.3 \\\n    --no-binary scikit-learn\n"
            "--find-links wheels\n--index-url https://pypi.org/simple\nsix\n")
    out = rewritten_requirements(text, {4: "scikit-learn==1.1.3"}, "/p")
    assert out.splitlines() == ["# models", "-r /p/base.txt", "-c /p/./constraints.txt", "scikit-learn==1.1.3", "",
                                "--find-links /p/wheels", "--index-url https://pypi.org/simple", "six"]
    assert [r.line for r in requirement_lines(out)] == [2, 3, 4, 6, 7, 8]


SKLEARN_LINE = requirement_lines("boto3\nnumpy\npandas\nscikit-learn==0.21.3\n")[3]
TF_LINE = requirement_lines("numpy\ntransformers==2.9.*\n")[1]
NO_BUILD = Cause("scikit-learn==0.21.3", "0.21.3 has no build for Python 3.11",
                 "building it from source fails (No module named 'pkg_resources')", no_build=True)
TOKENIZERS = Cause("tokenizers==0.7.0", "0.7.0 has no build for Python 3.11",
                   "building it from source needs a Rust compiler (cargo), which is not installed",
                   dependency=True, no_build=True)


def test_each_change_is_said_in_the_issues_words():
    assert change_notice(SKLEARN_LINE, "1.1.3", NO_BUILD) == \
        "scikit-learn==0.21.3 -> 1.1.3: 0.21.3 has no build for Python 3.11"
    assert change_notice(TF_LINE, "4.30.0", TOKENIZERS) == \
        "transformers==2.9.* -> 4.30.0: it needs tokenizers==0.7.0: 0.7.0 has no build for Python 3.11"


def test_one_line_reads_as_one_sentence_naming_its_line_and_the_nearest_release():
    summary, deterministic = one_pass_report([Verdict(SKLEARN_LINE, NO_BUILD)], {4: Nearest("1.1.3")}, PY)
    first, hint = summary.splitlines()
    assert first == ("scikit-learn==0.21.3 (requirements.txt line 4) cannot be installed here: 0.21.3 has "
                     "no build for Python 3.11; building it from source fails (No module named 'pkg_resources'); "
                     "the nearest release that installs here: 1.1.3")
    assert hint == ("`cortexd deploy --nearest-pins` (CORTEXD_NEAREST_PINS=1 for every project) installs these "
                    "nearest releases instead, leaving requirements.txt as it is")
    assert deterministic


def test_every_failing_line_is_in_one_report():
    git = requirement_lines("a\nb\ngit+https://github.com/x/y.git\n")[2]
    offline = Cause("https://github.com/x/y.git", "the repository cannot be cloned: no network to it (...)",
                    deterministic=False)
    verdicts = [Verdict(SKLEARN_LINE, NO_BUILD), Verdict(TF_LINE, TOKENIZERS), Verdict(git, offline),
                Verdict(requirement_lines("pandas\n")[0])]
    nearest = {4: Nearest("1.1.3"), 2: Nearest(None, ("2.10.0", "3.0.0")), 3: Nearest(not_searched="a URL")}
    summary, deterministic = one_pass_report(verdicts, nearest, PY, opted_in=True)
    lines = summary.splitlines()
    assert lines[0] == ("3 requirements of requirements.txt cannot be installed here "
                        "(Python 3.11; each line checked alone):")
    assert lines[1].startswith("- scikit-learn==0.21.3 (requirements.txt line 4): 0.21.3 has no build")
    assert lines[2].startswith("- tokenizers==0.7.0, needed by transformers==2.9.* (requirements.txt line 2): "
                               "0.7.0 has no build for Python 3.11; building it from source needs a Rust compiler")
    assert lines[2].endswith("none of the releases of transformers tried installs here (2.10.0, 3.0.0)")
    assert lines[3].startswith("- git+https://github.com/x/y.git (requirements.txt line 3): the repository cannot "
                               "be cloned: no network to it")
    assert len(lines) == 4  # opted in already: no hint; pandas installs
    assert not deterministic  # the network may come back


def test_a_line_whose_check_did_not_finish_is_listed_as_such():
    verdicts = [Verdict(SKLEARN_LINE, NO_BUILD),
                Verdict(TF_LINE, undecided="building tokenizers==0.7.0 from source did not finish within 120s")]
    lines = one_pass_report(verdicts, {4: Nearest("1.1.3")}, PY)[0].splitlines()
    assert lines[0] == ("1 requirement of requirements.txt cannot be installed here, 1 could not be "
                        "checked (Python 3.11; each line checked alone):")
    assert lines[2] == ("- transformers==2.9.* (requirements.txt line 2): not checked: building tokenizers==0.7.0 "
                        "from source did not finish within 120s")


def test_the_nearest_pins_mode_changes_every_failing_line_or_none():
    verdicts = [Verdict(SKLEARN_LINE, NO_BUILD), Verdict(TF_LINE, TOKENIZERS)]
    assert nearest_changes(verdicts, {4: Nearest("1.1.3"), 2: Nearest("4.30.0")}) == {
        4: ("scikit-learn==1.1.3", "scikit-learn==0.21.3 -> 1.1.3: 0.21.3 has no build for Python 3.11"),
        2: ("transformers==4.30.0", "transformers==2.9.* -> 4.30.0: it needs tokenizers==0.7.0: 0.7.0 has no "
                                    "build for Python 3.11"),
    }
    assert nearest_changes(verdicts, {4: Nearest("1.1.3"), 2: Nearest(None, ("2.10.0",))}) is None


# -- the orchestration, with pip's real answers --------------------------------------------------

PIP = ["python", "-m", "pip"]


def _asked(cmd: list[str]) -> str:
    return Path(cmd[cmd.index("-r") + 1]).read_text().splitlines()[-1] if "-r" in cmd else cmd[-1]


class RecordedPip:
    """A Runner answering each pip command with captured output, by what it asks for."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    async def __call__(self, cmd: list[str], seconds: float) -> tuple[bool | None, list[str]]:
        self.commands.append(cmd)
        asked, wheels_only = _asked(cmd), "--only-binary" in cmd
        if cmd[3:5] == ["index", "versions"]:
            if cmd[5] == "transformers":
                return True, pip.TRANSFORMERS_VERSIONS
            return True, ["Available versions: 2.10.1, 2.10.0, 1.0.0, 0.9.0"] if cmd[5] == "allennlp" else []
        if asked == "scikit-learn==0.21.3":
            return False, pip.SKLEARN_WHEELS_ONLY if wheels_only else pip.SKLEARN_DRY_RUN
        if asked == "scikit-learn==1.1.3":
            return True, pip.SKLEARN_113_WHEELS_ONLY
        if asked == "allennlp==0.9.*":
            return False, pip.ALLENNLP_WHEELS_ONLY if wheels_only else pip.ALLENNLP_REQUIREMENTS
        if asked.startswith("allennlp=="):
            return False, pip.ALLENNLP_WHEELS_ONLY  # none of its later releases installs here either
        if asked == "transformers==2.9.*":
            if wheels_only:
                return False, pip.TRANSFORMERS_WHEELS_ONLY
            Path(cmd[cmd.index("--report") + 1]).write_text(pip.TRANSFORMERS_REPORT)  # it resolves with sdists
            return True, []
        if asked == "tokenizers==0.7.0":
            return False, pip.TOKENIZERS_NO_RUST
        if asked.startswith("transformers=="):  # the releases newer than 5.20.1 install from wheels
            return Version(asked.split("==")[1]) > Version("5.20.1"), pip.TRANSFORMERS_WHEELS_ONLY
        if asked == "git+https://github.com/huggingface/transformers.git@v2.9.1":
            return False, pip.GIT_OFFLINE
        return True, []  # the others install


def test_every_line_is_checked_alone_once_and_the_nearest_release_found(tmp_path):
    lines = requirement_lines("--extra-index-url https://example.org/simple\nboto3\nscikit-learn==0.21.3\n"
                              "git+https://github.com/huggingface/transformers.git@v2.9.1\n")
    runner, said = RecordedPip(), []
    checks = RequirementChecks(runner, PIP, tmp_path, lines, "/p", PY, said.append)
    verdicts, nearest = asyncio.run(checks.one_pass(lines))
    assert [v.line.line for v in verdicts if v.fails] == [3, 4]
    assert nearest[3] == Nearest("1.1.3")  # the first release with a wheel here, checked: it installs
    assert nearest[4].version is None and "not a release from an index" in nearest[4].not_searched
    # each check file carries the project's index options, then the one requirement
    first = next(c for c in runner.commands if "-r" in c)
    assert Path(first[first.index("-r") + 1]).read_text().splitlines()[0] == \
        "--extra-index-url https://example.org/simple"
    # the releases with a wheel here came with pip's answer: no `pip index versions`
    assert not [c for c in runner.commands if c[3:5] == ["index", "versions"]]
    # the git line: no wheels-only step (a URL), one dry run; every dry run writes a --report
    git = [c for c in runner.commands if "-r" in c and "git+" in _asked(c)]
    assert len(git) == 1 and "--only-binary" not in git[0] and "--report" in git[0]
    assert "looking for the nearest release of scikit-learn that installs here: trying 1.1.3" in said


def test_the_four_cases_of_the_issue_in_one_report(tmp_path):
    """scikit-learn==0.21.3 (pip blamed pyasn1), transformers==2.9.* (cloudpickle), allennlp==0.9.*
    on line 1 (preshed), a git+https line without network ("old pins"): each by its own line."""
    text = ("allennlp==0.9.*\nboto3\ntransformers==2.9.*\nscikit-learn==0.21.3\n"
            "git+https://github.com/huggingface/transformers.git@v2.9.1\n")
    lines = requirement_lines(text)
    runner = RecordedPip()
    checks = RequirementChecks(runner, PIP, tmp_path, lines, "/p", PY, lambda _: None)
    verdicts, nearest = asyncio.run(checks.one_pass(lines))
    report, deterministic = one_pass_report(verdicts, nearest, PY)
    assert report.splitlines() == [
        "4 requirements of requirements.txt cannot be installed here (Python 3.11; each line checked alone):",
        "- spacy<2.2,>=2.1.0, needed by allennlp==0.9.* (requirements.txt line 1): no release matching "
        "<2.2,>=2.1.0 has a build for Python 3.11; building it from source needs preshed<2.1.0,>=2.0.1, whose "
        "own build fails (cannot import name 'msvccompiler' from 'distutils': its build predates today's "
        "build tools); none of the releases of allennlp tried installs here (1.0.0, 2.10.1)",
        "- tokenizers==0.7.0, needed by transformers==2.9.* (requirements.txt line 3): 0.7.0 has no build for "
        "Python 3.11; building it from source needs a Rust compiler (cargo), which is not installed; the "
        "nearest release of transformers that installs here: 5.20.2",
        "- scikit-learn==0.21.3 (requirements.txt line 4): 0.21.3 has no build for Python 3.11; building it "
        "from source fails (No module named 'pkg_resources': its build predates today's build tools); the "
        "nearest release that installs here: 1.1.3",
        "- git+https://github.com/huggingface/transformers.git@v2.9.1 (requirements.txt line 5): the "
        "repository cannot be cloned: no network to it (unable to access "
        "'https://github.com/huggingface/transformers.git/': Could not resolve host: github.com); vendor the "
        "package into the project (a wheel or a folder named in requirements.txt) or install it from a "
        "reachable index",
    ]
    assert not deterministic  # the network may come back: tried again later


def test_the_line_pips_own_answer_traced_is_not_built_again(tmp_path):
    lines = requirement_lines("boto3\nscikit-learn==0.21.3\n")
    runner = RecordedPip()
    checks = RequirementChecks(runner, PIP, tmp_path, lines, "/p", PY, lambda _: None)
    verdicts, nearest = asyncio.run(checks.one_pass(lines, {2: Verdict(lines[1], NO_BUILD)}))
    assert [v.cause for v in verdicts] == [None, NO_BUILD]
    pinned = [c for c in runner.commands if _asked(c) == "scikit-learn==0.21.3"]
    # one wheels-only dry run, for the releases that have a wheel here; no build is tried again
    assert len(pinned) == 1 and "--only-binary" in pinned[0]
    assert nearest[2] == Nearest("1.1.3")


def test_a_check_out_of_time_is_undecided(tmp_path):
    async def slow(cmd, seconds):
        return None, ["Collecting x==1"]

    lines = requirement_lines("x==1\n")
    checks = RequirementChecks(slow, ["pip"], tmp_path, lines, "/p", PY, lambda _: None, check_seconds=5)
    [found], nearest = asyncio.run(checks.one_pass(lines))
    assert found.cause is None and found.undecided == "the dry run did not finish within 5s" and nearest == {}


def test_the_nearest_pins_mode_is_part_of_the_environment_digest_and_of_the_version(tmp_path):
    from dataclasses import replace

    from cortexd.backends.environment_plan import make_plan
    from cortexd.spec import load_config
    from tests.builders import write_project

    project = write_project(tmp_path / "p", "- name: a\n  kind: RealtimeAPI\n  predictor:\n    type: python\n"
                            "    path: predictor.py\n", {"predictor.py": "", "requirements.txt": "six==1.0\n"})
    spec = load_config([str(project)]).apis[0]
    deployed = replace(spec, nearest_pins=True)  # `cortexd deploy --nearest-pins`
    exact, relaxed = make_plan(spec, "rt"), make_plan(deployed, "rt")
    assert exact.digest != relaxed.digest and relaxed.nearest_pins and not exact.nearest_pins
    assert make_plan(replace(deployed), "rt").digest == relaxed.digest
    # the mode is part of the API's version (a deploy that turns it on rolls the API); without it
    # the hash is the one it always was
    assert deployed.spec_hash != spec.spec_hash and replace(deployed, nearest_pins=False).spec_hash == spec.spec_hash
