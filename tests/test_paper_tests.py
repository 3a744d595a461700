"""The paper's own tests as part of the milestone (repro/gates/paper_tests.py, issue 22): shapes
runs papers/<code>/tests (not marked slow) in a pytest subprocess, full runs the slow ones before
it trains; a failing test FAILs the gate naming it and its assertion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from repro.gates.paper_tests import Where, judge_paper_tests, start_paper_tests
from repro.init_project import init_project
from repro.project import Project
from repro.records import load_run
from repro.runner import run_stage
from repro.scaffold import TASKS, scaffold_paper
from tests.configs import set_paper_tests, shrink_toy

REPO = Path(__file__).resolve().parents[1]
QUIET = Console(quiet=True)
FAILING = """
def test_wrong_sum():
    assert 1 + 1 == 3, "the sum is wrong"
"""
SLOW_FAILING = """
import pytest


@pytest.mark.slow
def test_slow_and_wrong():
    assert 2 * 2 == 5, "slow arithmetic is wrong"
"""
SLOW_PASSING = """
import pytest


@pytest.mark.slow
def test_slow_and_right():
    assert 2 * 2 == 4
"""


def record(run) -> dict:
    return json.loads((run.dir / "record.json").read_text())


def check_named(rec: dict, name: str) -> dict:
    (found,) = [c for c in rec["verdict"]["checks"] if c["name"] == name]
    return found


@pytest.fixture
def tested(make_project) -> Project:
    """The toy project with the paper's tests turned on (the suite's default is off)."""
    return make_project(paper_tests=True)


def write_test(project: Project, name: str, text: str, paper: str = "toy") -> None:
    (project.papers_dir / paper / "tests" / name).write_text(text)


# ---- judgement (pure) -------------------------------------------------------------------------
WHERE = Where("paper_tests", "papers/x/tests", "not slow", 600.0, "stage.shapes.x_timeout_s")


def lines(*outcomes: tuple[str, str, str], message: str = "assert 1 == 2") -> list[dict]:
    """Plugin lines: (nodeid, when, outcome) each."""
    out = []
    for node, when, outcome in outcomes:
        ln = {"kind": "test", "nodeid": node, "when": when, "outcome": outcome, "seconds": 0.1}
        if outcome == "failed":
            ln["message"] = f"{message} in {node}"
        out.append(ln)
    return out


def test_judge_names_the_first_failures_and_counts_the_rest():
    ok = [(f"t.py::ok{i}", "call", "passed") for i in range(3)]
    bad = [(f"t.py::bad{i}", "call", "failed") for i in range(5)]
    c = judge_paper_tests(lines(*ok, *bad), 1, 2.5, WHERE, Path("p.log"))
    assert not c.passed and c.measured
    assert "5 of 8 tests in papers/x/tests failed" in c.reason
    assert "t.py::bad0: assert 1 == 2 in t.py::bad0" in c.reason
    assert "t.py::bad2" in c.reason and "t.py::bad3" not in c.reason
    assert "and 2 more" in c.reason
    assert c.evidence["failed"] == 5 and c.evidence["passed"] == 3
    assert c.evidence["failing"] == [f"t.py::bad{i}" for i in range(5)]


def test_judge_counts_a_failed_setup_as_an_error_and_a_skip_as_no_pass():
    ls = lines(
        ("t.py::a", "setup", "failed"),
        ("t.py::b", "setup", "skipped"),
        ("t.py::c", "setup", "passed"),
        ("t.py::c", "call", "passed"),
        ("t.py::c", "teardown", "passed"),
    )
    c = judge_paper_tests(ls, 1, 1.0, WHERE, Path("p.log"))
    assert not c.passed and c.evidence["error"] == 1 and c.evidence["skipped"] == 1
    assert c.evidence["passed"] == 1 and "t.py::a" in c.reason


def test_judge_collection_error_fails_naming_the_file():
    ls = [{"kind": "collect", "nodeid": "t/test_b.py", "message": "ImportError: no x"}]
    ls += lines(("t/test_a.py::ok", "call", "passed"))
    c = judge_paper_tests(ls, 1, 1.0, WHERE, Path("p.log"))
    assert not c.passed
    assert "t/test_b.py could not be collected: ImportError: no x" in c.reason
    assert c.evidence["collect_errors"] == ["t/test_b.py"]


def test_judge_a_timeout_fails_naming_the_key_to_raise():
    c = judge_paper_tests(lines(("t.py::a", "call", "passed")), None, 600.2, WHERE, Path("l"))
    assert not c.passed and c.measured
    assert "ran past stage.shapes.x_timeout_s = 600 s" in c.reason and "1 finished" in c.reason


def test_judge_pytest_that_could_not_run_fails(tmp_path):
    log = tmp_path / "p.log"
    log.write_text("ERROR: usage: bad option --nope\n")
    c = judge_paper_tests([], 4, 0.5, WHERE, log)
    assert not c.passed and "exit code 4" in c.reason and "bad option --nope" in c.reason


def test_judge_pytest_that_never_started_fails_not_as_no_tests(tmp_path):
    log = tmp_path / "p.log"
    log.write_text("/usr/bin/python: No module named pytest\n")
    c = judge_paper_tests(None, 1, 0.1, WHERE, log)  # no report: the plugin never loaded
    assert not c.passed and c.measured
    assert "pytest could not run" in c.reason and "No module named pytest" in c.reason


def test_judge_no_tests_all_skipped_or_all_slow_is_not_measured():
    none = judge_paper_tests([], 5, 1.0, WHERE, Path("l"))
    assert not none.measured and not none.passed
    assert "papers/x/tests has no tests: add one (repro new scaffolds one)" in none.reason
    skipped = judge_paper_tests(lines(("t.py::a", "setup", "skipped")), 0, 1.0, WHERE, Path("l"))
    assert not skipped.measured and "all 1 tests" in skipped.reason
    slow = judge_paper_tests([{"kind": "deselected", "count": 4}], 5, 1.0, WHERE, Path("l"))
    assert not slow.measured and "outside the 4 marked slow" in slow.reason


def test_judge_passes_with_counts_and_seconds():
    ls = lines(("t.py::a", "call", "passed"), ("t.py::b", "setup", "skipped"))
    ls += lines(("t.py::c", "call", "passed"))
    c = judge_paper_tests(ls, 0, 3.21, WHERE, Path("l"))
    assert c.passed and c.reason.startswith("2 tests in papers/x/tests passed")
    assert "1 skipped" in c.reason and "3.2 s" in c.reason
    assert c.evidence["seconds"] == 3.21


# ---- through the gates ------------------------------------------------------------------------
def test_a_failing_paper_test_fails_shapes_naming_it_and_its_assertion(tested):
    write_test(tested, "test_broken.py", FAILING)
    run = run_stage(tested, "toy", "shapes", console=QUIET)
    rec = record(run)
    assert rec["status"] == "failed"
    c = check_named(rec, "paper_tests")
    assert c["measured"] and not c["passed"]
    assert "papers/toy/tests/test_broken.py::test_wrong_sum" in c["reason"]
    assert "the sum is wrong" in c["reason"] and "assert (1 + 1) == 3" in c["reason"]
    assert c["reason"] in rec["verdict"]["reason"]
    assert (run.dir / "paper_tests.log").is_file()  # pytest's own output, named in the reason
    assert c["evidence"]["passed"] == 2 and c["evidence"]["failed"] == 1  # the scaffold's 2


def test_passing_paper_tests_pass_with_counts_and_time_in_the_record(tested):
    run = run_stage(tested, "toy", "shapes", console=QUIET)
    rec = record(run)
    assert rec["status"] == "passed", rec["verdict"]["reason"]
    c = check_named(rec, "paper_tests")
    assert c["passed"] and c["measured"]
    ev = c["evidence"]
    assert (ev["passed"], ev["failed"], ev["error"], ev["skipped"]) == (2, 0, 0, 0)
    assert ev["seconds"] > 0 and rec["verdict"]["evidence"]["paper_tests_s"] == ev["seconds"]
    assert ev["folder"] == "papers/toy/tests" and ev["marker"] == "not slow"


@pytest.mark.slow  # ~21 s: four shapes runs
def test_a_pass_on_the_same_files_is_reused_and_says_so_any_change_measures_again(tested):
    first = run_stage(tested, "toy", "shapes", console=QUIET)
    assert check_named(record(first), "paper_tests")["evidence"].get("reused_from_run") is None
    again = check_named(record(run_stage(tested, "toy", "shapes", console=QUIET)), "paper_tests")
    assert again["passed"] and again["evidence"]["reused_from_run"] == first.id
    assert f"reused: run {first.id} passed them on these same files" in again["reason"]
    assert again["evidence"]["passed"] == 2 and again["evidence"]["seconds"] == 0.0
    write_test(tested, "test_more.py", "def test_c():\n    assert True\n")  # a change: measured
    third = check_named(record(run_stage(tested, "toy", "shapes", console=QUIET)), "paper_tests")
    assert "reused_from_run" not in third["evidence"] and third["evidence"]["passed"] == 3
    forced = run_stage(
        tested, "toy", "shapes", ["stage.shapes.paper_tests_reuse=false"], console=QUIET
    )
    c = check_named(record(forced), "paper_tests")
    assert "reused_from_run" not in c["evidence"] and c["evidence"]["seconds"] > 0


@pytest.mark.slow  # ~14 s: two shapes runs with pytest subprocesses
def test_a_failure_is_never_reused(tested):
    write_test(tested, "test_broken.py", FAILING)
    for _ in range(2):
        c = check_named(record(run_stage(tested, "toy", "shapes", console=QUIET)), "paper_tests")
        assert not c["passed"] and "reused_from_run" not in c["evidence"]


def test_a_test_file_that_cannot_be_imported_fails_shapes_naming_the_file(tested):
    write_test(
        tested, "test_imports.py", "import no_such_module_here\n\n\ndef test_a():\n    pass\n"
    )
    rec = record(run_stage(tested, "toy", "shapes", console=QUIET))
    c = check_named(rec, "paper_tests")
    assert not c["passed"]
    assert "papers/toy/tests/test_imports.py could not be collected" in c["reason"]
    assert "No module named 'no_such_module_here'" in c["reason"]
    assert c["evidence"]["passed"] == 2  # the other files still ran


def test_no_tests_is_not_measured_never_passed(tested):
    shutil.rmtree(tested.papers_dir / "toy" / "tests")
    rec = record(run_stage(tested, "toy", "shapes", console=QUIET))
    c = check_named(rec, "paper_tests")
    assert not c["measured"] and not c["passed"]
    assert "papers/toy/tests has no tests: add one (repro new scaffolds one)" in c["reason"]
    assert rec["status"] == "passed"  # the other checks hold; this one is listed, not counted
    not_measured = rec["verdict"]["reason"].split(" not measured: ", 1)[1]  # listed there
    assert "paper_tests: papers/toy/tests has no tests" in not_measured


def test_tests_past_the_timeout_fail_naming_the_key(tested):
    write_test(tested, "test_sleepy.py", "import time\n\n\ndef test_a():\n    time.sleep(120)\n")
    rec = record(
        run_stage(tested, "toy", "shapes", ["stage.shapes.paper_tests_timeout_s=3"], console=QUIET)
    )
    c = check_named(rec, "paper_tests")
    assert not c["passed"] and c["evidence"]["exit_code"] is None
    assert "ran past stage.shapes.paper_tests_timeout_s = 3 s" in c["reason"]
    assert c["evidence"]["seconds"] < 60  # killed, not waited for


def test_an_interrupt_during_the_gate_stops_the_paper_tests(tested, monkeypatch):
    from repro.gates import paper_tests
    from repro.gates.shapes import gate

    started = []

    def start(ctx, stage):
        started.append(paper_tests.start_stage_tests(ctx, stage))
        return started[-1]

    def interrupted(ctx):
        raise KeyboardInterrupt

    write_test(tested, "test_sleepy.py", "import time\n\n\ndef test_a():\n    time.sleep(120)\n")
    monkeypatch.setattr(gate, "start_stage_tests", start)
    monkeypatch.setattr(gate, "_measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_stage(tested, "toy", "shapes", force=True, console=QUIET)
    assert started and started[0].proc.poll() is not None  # pytest was stopped, not left running


def test_turned_off_the_check_is_not_measured(project):
    write_test(project, "test_broken.py", FAILING)
    rec = record(run_stage(project, "toy", "shapes", console=QUIET))
    c = check_named(rec, "paper_tests")
    assert not c["measured"] and "stage.shapes.paper_tests is false" in c["reason"]


@pytest.mark.slow  # ~10 s: shapes and full with pytest subprocesses
def test_a_slow_failing_test_passes_shapes_and_fails_full_before_training(tested):
    write_test(tested, "test_slow.py", SLOW_FAILING)
    shapes = record(run_stage(tested, "toy", "shapes", console=QUIET))
    assert shapes["status"] == "passed", shapes["verdict"]["reason"]
    assert check_named(shapes, "paper_tests")["evidence"]["deselected"] == 1
    run = run_stage(tested, "toy", "full", force=True, console=QUIET)
    rec = record(run)
    assert rec["status"] == "failed"
    c = check_named(rec, "paper_tests_slow")
    assert "papers/toy/tests/test_slow.py::test_slow_and_wrong" in c["reason"]
    assert "slow arithmetic is wrong" in c["reason"]
    assert [x["name"] for x in rec["verdict"]["checks"]] == ["paper_tests_slow"]
    assert not rec["metrics"] and not list(run.dir.rglob("*.ckpt"))  # nothing trained


def test_passing_slow_tests_are_a_check_of_full_and_judge_keeps_them(tested):
    from repro.config.compose import compose
    from repro.judge import judged_verdict

    shrink_toy(tested)
    write_test(tested, "test_slow.py", SLOW_PASSING)
    run = run_stage(tested, "toy", "full", force=True, console=QUIET)
    rec = record(run)
    c = check_named(rec, "paper_tests_slow")
    assert c["passed"] and c["evidence"]["passed"] == 1 and c["evidence"]["deselected"] == 2
    assert rec["metrics"]["per_seed"]  # it trained after them
    verdict, _ = judged_verdict(
        tested, load_run(tested.runs_dir, run.id), compose(tested, "toy", [])
    )
    assert [x.name for x in verdict.checks][0] == "paper_tests_slow"


# ---- a project made by `repro init` (no pyproject.toml), every task's scaffold -------------------
@pytest.mark.parametrize("task", TASKS)
def test_each_scaffolded_test_passes_in_an_init_project_and_is_counted(task, tmp_path):
    init_project(tmp_path)
    project = Project(tmp_path)
    scaffold_paper(project, "p", task=task)
    write_test(project, "test_slow.py", SLOW_FAILING, paper="p")  # deselected, not an error
    assert not (tmp_path / "pyproject.toml").exists()  # no pytest config: the plugin's marker
    where = Where("paper_tests", "papers/p/tests", "not slow", 300.0, "k")
    c = start_paper_tests(project, "p", where, tmp_path).result()
    assert c.passed, (c.reason, (tmp_path / "paper_tests.log").read_text())
    assert c.evidence["passed"] == 2 and c.evidence["failed"] == 0  # really run and counted
    assert c.evidence["deselected"] == 1  # the slow one is full's


def test_a_scaffolded_paper_passes_shapes_with_its_tests_counted(make_project):
    project = make_project(paper="seq", task="sequence", paper_tests=True)
    rec = record(run_stage(project, "seq", "shapes", console=QUIET))
    assert rec["status"] == "passed", rec["verdict"]["reason"]
    assert check_named(rec, "paper_tests")["evidence"]["passed"] == 2


# ---- issue 22's done-when: BiMPM ---------------------------------------------------------------
@pytest.mark.slow  # BiMPM's data and shapes gates and its 146 tests: ~1-2 min on 2 busy CPUs
def test_a_failing_test_in_bimpms_tests_fails_repro_stage_shapes_naming_it(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    for name in ("conf", "papers", "tests"):  # BiMPM's tests read tests/fixtures, tests/configs.py
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    set_paper_tests(root, True)
    (root / "papers" / "bimpm" / "tests" / "test_injected.py").write_text(FAILING)
    r = subprocess.run(
        [sys.executable, "-m", "repro", "stage", "shapes", "--paper", "bimpm"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "papers/bimpm/tests/test_injected.py::test_wrong_sum" in r.stdout
    (run,) = (root / "runs" / "bimpm" / "shapes").iterdir()
    c = check_named(json.loads((run / "record.json").read_text()), "paper_tests")
    assert c["evidence"]["failing"] == ["papers/bimpm/tests/test_injected.py::test_wrong_sum"]
    assert c["evidence"]["passed"] >= 130  # BiMPM's own not marked slow (138), which all pass
    assert c["evidence"]["failed"] == 1 and c["evidence"]["error"] == 0
