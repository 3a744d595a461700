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
    assert bad.record["status"] == "failed"
    assert run_stage(project, "toy", "overfit", [], console=quiet).record["status"] == "passed"
    full = run_stage(project, "toy", "full", ["seeds=1"], console=quiet)
    assert full.record["status"] in ("passed", "failed")

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
    assert "repro stage full --paper toy seeds=1" in text
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
