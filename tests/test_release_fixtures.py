"""Records and checkpoints written by every release (tests/fixtures/releases/<version>/, made by
its make.py) are read by this version: status, show, log, report, predict, eval, full --resume.
A change that breaks one fails here; a deliberate format change migrates them, with a test."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

RELEASES = sorted(
    p for p in (Path(__file__).resolve().parent / "fixtures" / "releases").iterdir() if p.is_dir()
)


@pytest.fixture(params=RELEASES, ids=[p.name for p in RELEASES])
def release(request, tmp_path, monkeypatch, purge_papers) -> Path:
    """A copy of one release's project, as the working directory."""
    root = tmp_path / request.param.name
    shutil.copytree(request.param, root)
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return root


def _runs(root: Path, stage: str) -> dict[str, dict]:
    """{status: record} of a stage's runs."""
    records = [json.loads(p.read_text()) for p in root.glob(f"runs/toy/{stage}/*/record.json")]
    return {r["status"]: r for r in records}


def test_there_is_a_fixture_of_this_release():
    from repro import __version__

    assert __version__ in [p.name for p in RELEASES], (
        f"no tests/fixtures/releases/{__version__}/: run tests/fixtures/releases/make.py"
    )


def test_status_show_log_and_report_read_every_record(release, cli):
    ids = [p.parent.name for p in release.glob("runs/toy/*/*/record.json")]
    assert len(ids) == 5
    code, out, err = cli("status")
    assert code == 0, err
    assert "CORRUPT" not in out and "Warning" not in err
    for stage in ("data", "shapes", "overfit", "full"):
        assert any(
            f"│ {stage} " in line and ("PASS" in line or "STALE" in line)
            for line in out.splitlines()
        )
    code, out, err = cli("log")
    assert code == 0 and all(i in out for i in ids) and "interrupted" in out
    for run_id in ids:
        code, out, err = cli("show", run_id)
        assert code == 0, err
        assert f"run {run_id}" in out
    code, out, err = cli("report")
    assert code == 0, err
    report = (release / "papers/toy/REPORT.md").read_text()
    assert _runs(release, "full")["passed"]["id"] in report
    assert "## Invariances" in report and "| nudge | learned |" in report


def test_predict_and_eval_use_the_releases_checkpoint(release, cli):
    full = _runs(release, "full")["passed"]
    run = release / "runs/toy/full" / full["id"]
    code, out, err = cli("predict", full["id"], "--split", "test")
    assert code == 0, err
    probs = torch.tensor(
        [list(json.loads(line)["probabilities"].values()) for line in out.splitlines()],
        dtype=torch.float64,
    )
    logits = torch.cat(torch.load(run / "test_outputs.pt", weights_only=True)["batches"])
    assert float((probs - torch.softmax(logits.double(), -1)).abs().max()) <= 1e-6
    code, out, err = cli("eval", full["id"], "test")
    assert code == 0, out + err
    assert "identical to run" in out


@pytest.mark.slow  # ~17 s: trains the rest of the run
def test_an_interrupted_full_run_of_the_release_resumes(release, cli):
    run = _runs(release, "full")["interrupted"]
    code, out, err = cli("stage", "full", "--resume", run["id"])
    assert code in (0, 1), out + err
    record = json.loads((release / "runs/toy/full" / run["id"] / "record.json").read_text())
    assert record["status"] in ("passed", "failed")
    assert record["resumed"][-1]["previous_status"] == "interrupted"
    assert record["metrics"]["per_seed"][0]["test/acc"] > 0
