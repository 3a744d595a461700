"""`repro report`: REPORT.md from the records alone, numbers equal to the records, same bytes twice."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

from repro.cli import app
from repro.report import parse_results_table
from tests.configs import shrink_toy


def test_report_numbers_match_the_records_and_regenerate_byte_identical(project):
    from repro.runner import run_stage

    quiet = Console(quiet=True)
    readme = project.paper_dir("toy") / "README.md"
    readme.write_text(
        readme.read_text().replace(
            "## Deviations\nTODO",
            "## Deviations\n- hidden width 64: the paper's is unreadable in the scan",
        )
    )
    shrink_toy(project, target=95.0)
    bad = run_stage(project, "toy", "overfit", ["stage.overfit.max_steps=1"], console=quiet)
    assert bad.record.status == "failed"
    assert run_stage(project, "toy", "overfit", [], console=quiet).record.status == "passed"
    full = run_stage(project, "toy", "full", [], console=quiet)
    assert full.record.status in ("passed", "failed")

    out = CliRunner().invoke(app, ["report", "--paper", "toy"])
    assert out.exit_code == 0, out.output
    path = project.paper_dir("toy") / "REPORT.md"
    first = path.read_bytes()
    text = first.decode()

    record = json.loads((full.dir / "record.json").read_text())
    (check,) = [c for c in record["verdict"]["checks"] if "label" in c["evidence"]]  # the target
    ev = check["evidence"]
    (row,) = parse_results_table(text)
    assert row["target"] == check["name"] and row["metric"] == "test/acc" and row["run"] == full.id
    assert float(row["ours"]) == pytest.approx(ev["ours_mean"], abs=0.005)
    assert int(row["seeds"]) == ev["n_seeds"] == 1
    assert float(row["paper"]) == ev["paper"]
    assert float(row["gap"]) == pytest.approx(ev["gap"], abs=0.005)
    assert row["verdict"] == ev["label"] and row["within paper's spread"] == "no spread stated"

    assert (
        "| overfit | 2 | 1 | 1 | 0 | memorise a fixed subset: loss" in text
    )  # the failure and its reason
    assert "repro stage full --paper toy\n```" in text
    assert "hidden width 64: the paper's is unreadable in the scan" in text
    assert "| `optim.weight_decay` | `0.01` |" in text  # an assumption: a repro default
    for name in [
        line.split("(report/")[1].rstrip(")") for line in text.splitlines() if "(report/" in line
    ]:
        assert (project.paper_dir("toy") / "report" / name).is_file()
    assert "curves.png" in text

    assert CliRunner().invoke(app, ["report", "--paper", "toy"]).exit_code == 0
    assert path.read_bytes() == first


def test_report_without_runs_imports_no_torch(project):
    code = (
        "import sys; from repro.cli import main; sys.argv=['repro','report','--paper','toy']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'pytorch_lightning' not in sys.modules"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    text = (project.paper_dir("toy") / "REPORT.md").read_text()
    assert "no finished full run yet" in text


def _fake_full(project, seeds: int, fp: dict, acc: float, overrides=()):
    from dataclasses import asdict

    from repro.gates.metrics import FullMetrics, TargetResult, to_record
    from repro.records import create_run

    per_seed = [{"test/acc": acc + i, "val/acc": acc} for i in range(seeds)]
    mean = sum(p["test/acc"] for p in per_seed) / seeds
    target = TargetResult(
        "toy test accuracy", "test/acc", 95.0, 3.0, mean, None, seeds, mean - 95.0, "NOT REPRODUCED"
    )
    metrics = FullMetrics(
        list(range(seeds)), per_seed, {"test/acc": mean}, {"test/acc": None}, [target], {}, 2, 1.0
    )
    run = create_run(
        project.runs_dir,
        "toy",
        "full",
        fingerprint=fp,
        overrides=list(overrides),
        config={"data": {"dataset": "toy"}},
    )
    run.finish(
        {"stage": "full", "passed": False, "reason": "r", "checks": [{"evidence": asdict(target)}]},
        "failed",
        metrics=to_record(metrics),
    )
    return run


def test_report_headlines_the_current_run_with_the_most_seeds_and_marks_a_stale_one(project):
    from repro.config.compose import compose
    from repro.progression import current_fingerprint
    from repro.report import build_report

    fp = current_fingerprint(project, "toy", compose(project, "toy", []))
    three = _fake_full(project, 3, fp, 80.0)
    _fake_full(project, 1, fp, 70.0)  # newer, fewer seeds
    _fake_full(project, 5, fp, 60.0, overrides=["seed=3"])  # not a milestone
    (row,) = parse_results_table(build_report(project, "toy")[0])
    assert (
        row["run"] == three.id and row["seeds"] == "3" and row["per seed"] == "80.00, 81.00, 82.00"
    )

    stale = {**fp, "stages": {**fp["stages"], "full": "0" * 16}}
    only = project.runs_dir / "toy" / "full"
    for d in only.iterdir():
        import shutil

        shutil.rmtree(d)
    old = _fake_full(project, 2, stale, 50.0)
    (row,) = parse_results_table(build_report(project, "toy")[0])
    assert row["run"] == f"{old.id} (STALE: other code, config or data)"


def test_report_collects_deviation_and_unstated_comments_from_the_code(project):
    from repro.report import build_report

    model = project.paper_dir("toy") / "model.py"
    model.write_text(
        model.read_text().replace(
            "        self.net = nn.Sequential(",
            "        # DEVIATION: a ReLU where the paper used tanh,\n        # because tanh stalled here\n"
            "        self.net = nn.Sequential(",
        )
    )
    text = build_report(project, "toy")[0]
    section = text.split("## Deviations", 1)[1].split("\n## ", 1)[0]
    assert "- DEVIATION `papers/toy/model.py:" in section
    assert "a ReLU where the paper used tanh, because tanh stalled here" in section
    assert "none recorded" not in section
