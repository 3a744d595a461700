"""Records written by earlier releases stay first-class (issue 20): `status`, `log`, `show`, `judge`
and `report` read the real records of tests/fixtures/old_records/ (made by running that revision's
code) as they read today's, in a project scaffolded by today's `repro new toy`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from repro.gates.metrics import FullMetrics, load_metrics
from repro.records import list_runs
from repro.report import parse_results_table

OLD = Path(__file__).parent / "fixtures" / "old_records"
RELEASES = sorted(p.name for p in OLD.iterdir() if p.is_dir())


@pytest.fixture(params=RELEASES)
def old(request, project):
    """(project, release): the project holding that release's runs of the toy paper."""
    shutil.copytree(OLD / request.param / "runs", project.runs_dir, dirs_exist_ok=True)
    return project, request.param


def _old_full(project):
    (run,) = list_runs(project.runs_dir, "toy", "full")
    return run


def _file_means(run) -> dict[str, float]:
    """The test/val means as the old record.json holds them, in whichever format it used."""
    on_disk = json.loads(run.record_file.read_text())
    metrics = on_disk["metrics"]
    return metrics.get("mean", metrics)


def test_the_old_full_run_reads_as_full_metrics(old):
    project, _ = old
    run = _old_full(project)
    m = load_metrics(FullMetrics, run.record)
    assert m is not None
    assert m.seeds == [0] and len(m.per_seed) == 1
    assert m.mean["test/acc"] == _file_means(run)["test/acc"]
    (target,) = m.targets
    assert target.name == "toy test accuracy" and target.metric == "test/acc"
    assert target.ours_mean == m.mean["test/acc"] and target.label in (
        "REPRODUCED",
        "WITHIN TOLERANCE",
    )
    assert set(m.lr_by_seed) == {"0"} and m.epochs > 0


def test_judge_judges_an_old_full_run(old, cli):
    project, _ = old
    run = _old_full(project)
    code, out, err = cli("judge", run.id)
    assert code == 0, out + err
    assert err == "" and "Traceback" not in out
    judged = next(r for r in list_runs(project.runs_dir, "toy", "full") if r.id != run.id)
    assert judged.record.links == {"judged": run.id}
    assert judged.record.status == "passed"
    m = load_metrics(FullMetrics, judged.record)
    assert m.mean["test/acc"] == _file_means(run)["test/acc"]
    (target,) = m.targets
    assert target.label == ("REPRODUCED" if target.gap >= 0 else "WITHIN TOLERANCE")
    # the record has no split sizes: the majority-class checks are named as not judged
    reason = judged.record.verdict.reason
    assert "(2 not measured: val beats the majority class: run" in reason
    assert f"run {run.id} has no split sizes recorded" in reason
    checks = {c["name"]: c for c in judged.data["verdict"]["checks"]}
    for split in ("val", "test"):
        c = checks[f"{split} beats the majority class"]
        assert c["measured"] is False and c["passed"] is False  # never counted as passed
    assert judged.record.verdict.evidence["not_judged"] == [
        "val beats the majority class",
        "test beats the majority class",
    ]


def test_status_log_show_and_report_read_old_records(old, cli):
    project, _ = old
    runs = list_runs(project.runs_dir, "toy")
    assert len(runs) == 4 and all(r.corrupt is None for r in runs)
    full = _old_full(project)

    code, out, err = cli("status")
    assert code == 0 and err == ""
    for r in runs:
        assert r.id in out
    assert "CORRUPT" not in out

    code, out, err = cli("log")
    assert code == 0 and err == ""
    assert all(r.id in out for r in runs)

    code, out, err = cli("show", full.id)
    assert code == 0 and err == ""
    # the typed metrics' table: metric, ours
    assert re.search(rf"test/acc\s*│\s*{_file_means(full)['test/acc']:.2f}\s*│", out), out

    code, out, err = cli("report")
    assert code == 0 and err == ""
    (row,) = parse_results_table((project.paper_dir("toy") / "REPORT.md").read_text())
    assert row["run"].startswith(full.id)
    assert row["ours"] == f"{_file_means(full)['test/acc']:.2f}"
    assert row["target"] == "toy test accuracy"
