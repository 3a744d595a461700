"""Tests for repro/progression.py and repro/runner.py: stage order, STALE on changed code, auto-runs, --force."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from repro.config import compose
from repro.errors import GateRefused
from repro.progression import stage_states
from repro.records import list_runs
from repro.runner import current_fingerprint, run_stage

OV = ["data.n_examples=300", "optim.lr=0.01", "trainer.max_epochs=2", "stage.overfit.max_steps=300"]


def _run(project, stage, force=False, overrides=OV):
    return run_stage(
        project, "toy", stage, list(overrides), force=force, console=Console(quiet=True)
    )


def _states(project, overrides=OV) -> dict[str, str]:
    current = current_fingerprint(project, "toy", compose(project, "toy", overrides))
    return {r.stage: r.state for r in stage_states(project.runs_dir, "toy", current)}


def _runs(project, stage):
    return list_runs(project.runs_dir, paper="toy", stage=stage)


def _notes(project) -> list[str]:
    return (project.notes_dir / "toy.md").read_text().splitlines()


def _append_comment(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit that changes nothing but the file\n")


def test_data_shapes_overfit_pass_in_order_and_each_appends_a_note(project):
    before = _notes(project)
    for i, stage in enumerate(("data", "shapes", "overfit"), start=1):
        run = _run(project, stage)
        assert run.record["status"] == "passed", run.record["verdict"]["reason"]
        assert run.record["forced"] is False
        notes = _notes(project)
        assert len(notes) == len(before) + i
        assert f" · {stage} · PASS · {run.id}" in notes[-1]
    assert _states(project) == {
        "data": "PASS",
        "shapes": "PASS",
        "overfit": "PASS",
        "full": "not run",
        "experiments": "not run",
    }


def test_full_before_overfit_is_refused_with_the_command(project):
    with pytest.raises(GateRefused) as e:
        _run(project, "full")
    msg = str(e.value)
    assert "repro stage overfit --paper toy" in msg
    assert "needs 'overfit'" in msg
    assert not _runs(project, "full")
    assert not _runs(project, "overfit")


def test_unknown_stage_is_refused(project):
    with pytest.raises(GateRefused, match="stage 'bogus': expected one of data, shapes"):
        _run(project, "bogus")


def test_overfit_runs_missing_cheap_stages_first_and_is_deterministic(project):
    first = _run(project, "overfit")
    assert first.record["status"] == "passed"
    assert [r.effective_status for r in _runs(project, "data")] == ["passed"]
    assert [r.effective_status for r in _runs(project, "shapes")] == ["passed"]
    second = _run(project, "overfit")  # prerequisites pass now: nothing re-runs
    assert len(_runs(project, "data")) == 1 and len(_runs(project, "shapes")) == 1
    a = (first.dir / "overfit_losses.csv").read_text()
    b = (second.dir / "overfit_losses.csv").read_text()
    assert len(a.splitlines()) > 2
    assert a == b
    assert first.record["fingerprint"]["stages"] == second.record["fingerprint"]["stages"]


def test_editing_model_makes_shapes_and_later_stages_stale_but_not_data(project):
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    paper_yaml.write_text(
        paper_yaml.read_text().replace("value: 95.0", "value: 40.0")
    )  # reachable in 2 epochs
    assert _run(project, "overfit").record["status"] == "passed"
    full = _run(project, "full")
    assert full.record["status"] == "passed", full.record["verdict"]["reason"]
    assert _states(project)["full"] == "PASS"

    _append_comment(project.paper_dir("toy") / "model.py")
    states = _states(project)
    assert states["data"] == "PASS"
    assert states["shapes"] == "STALE"
    assert states["overfit"] == "STALE"
    assert states["full"] == "STALE"

    # full is expensive: refused naming overfit; overfit re-runs the stale shapes itself, not data
    with pytest.raises(GateRefused, match="repro stage overfit --paper toy"):
        _run(project, "full")
    assert _run(project, "overfit").record["status"] == "passed"
    assert len(_runs(project, "data")) == 1
    assert len(_runs(project, "shapes")) == 2
    assert _states(project)["overfit"] == "PASS"


def test_editing_data_makes_data_stale_too(project):
    _run(project, "data")
    _run(project, "shapes")
    _append_comment(project.paper_dir("toy") / "data.py")
    states = _states(project)
    assert states["data"] == "STALE"
    assert states["shapes"] == "STALE"


def test_changed_config_makes_later_stages_stale(project):
    _run(project, "data")
    _run(project, "shapes")
    states = _states(project, [*OV, "model.hidden=32"])
    assert states["data"] == "PASS"
    assert states["shapes"] == "STALE"


def test_force_runs_without_prerequisites_and_is_recorded(project):
    run = _run(project, "overfit", force=True)
    assert run.record["status"] == "passed"
    assert run.record["forced"] is True
    assert run.record["skipped_prerequisites"] == ["data", "shapes"]
    assert not _runs(project, "data") and not _runs(project, "shapes")
    assert "(forced)" in _notes(project)[-1]


def test_force_with_prerequisites_met_is_not_marked_forced(project):
    _run(project, "data")
    run = _run(project, "shapes", force=True)
    assert run.record["forced"] is False
