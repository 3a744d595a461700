"""The milestone rule (repro/progression.py, repro/runner.py): stage order, STALE with what changed,
auto-runs, --force, runs with overrides as experiments around the milestones, `repro judge`, and
status and refusal agreeing on every sequence."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from rich.console import Console

from repro.config.compose import compose
from repro.errors import GateRefused
from repro.gates import STAGES
from repro.progression import current_fingerprint, stage_states
from repro.records import create_run, list_runs
from repro.runner import run_stage

# The toy paper made fast in its own config (the base config: milestones are runs without overrides).
FAST = {
    "  n_examples: 1200": "  n_examples: 300",
    "  max_epochs: 15": "  max_epochs: 2",
    "      value: 95.0": "      value: 40.0",  # reachable in 2 epochs
}


@pytest.fixture
def fast(project):
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    text = paper_yaml.read_text()
    for old, new in FAST.items():
        assert old in text
        text = text.replace(old, new)
    paper_yaml.write_text(text + "optim:\n  lr: 0.01\nstage:\n  overfit:\n    max_steps: 300\n")
    return project


def _run(project, stage, overrides=(), force=False):
    return run_stage(
        project, "toy", stage, list(overrides), force=force, console=Console(quiet=True)
    )


def _rows(project) -> dict:
    current = current_fingerprint(project, "toy", compose(project, "toy", []))
    return {r.stage: r for r in stage_states(project.runs_dir, "toy", current)}


def _states(project) -> dict[str, str]:
    return {s: r.state for s, r in _rows(project).items()}


def _runs(project, stage):
    return list_runs(project.runs_dir, paper="toy", stage=stage)


def _notes(project) -> list[str]:
    return (project.notes_dir / "toy.md").read_text().splitlines()


def _append_comment(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit that changes nothing but the file\n")


def test_data_shapes_overfit_pass_in_order_and_each_appends_a_note(fast):
    before = _notes(fast)
    for i, stage in enumerate(("data", "shapes", "overfit"), start=1):
        run = _run(fast, stage)
        assert run.record.status == "passed", run.record.verdict.reason
        assert run.record.forced is False
        notes = _notes(fast)
        assert len(notes) == len(before) + i
        assert f" · {stage} · PASS · {run.id}" in notes[-1]
    assert _states(fast) == {
        "data": "PASS",
        "shapes": "PASS",
        "overfit": "PASS",
        "full": "not run",
        "experiments": "not run",
    }


def test_full_before_overfit_is_refused_with_the_command(fast):
    with pytest.raises(GateRefused) as e:
        _run(fast, "full")
    msg = str(e.value)
    assert "repro stage overfit --paper toy" in msg
    assert "needs 'overfit'" in msg
    assert not _runs(fast, "full")
    assert not _runs(fast, "overfit")


def test_unknown_stage_is_refused(fast):
    with pytest.raises(GateRefused, match="stage 'bogus': expected one of data, shapes"):
        _run(fast, "bogus")


def test_overfit_runs_missing_cheap_stages_first_and_is_deterministic(fast):
    first = _run(fast, "overfit")
    assert first.record.status == "passed"
    assert [r.effective_status for r in _runs(fast, "data")] == ["passed"]
    assert [r.effective_status for r in _runs(fast, "shapes")] == ["passed"]
    second = _run(fast, "overfit")  # prerequisites pass now: nothing re-runs
    assert len(_runs(fast, "data")) == 1 and len(_runs(fast, "shapes")) == 1
    a = (first.dir / "overfit_losses.csv").read_text()
    b = (second.dir / "overfit_losses.csv").read_text()
    assert len(a.splitlines()) > 2
    assert a == b
    assert first.record.fingerprint.stages == second.record.fingerprint.stages


def test_editing_the_model_makes_shapes_and_later_stages_stale_naming_the_file(fast):
    assert _run(fast, "overfit").record.status == "passed"
    full = _run(fast, "full")
    assert full.record.status == "passed", full.record.verdict.reason
    assert _states(fast)["full"] == "PASS"

    _append_comment(fast.paper_dir("toy") / "model.py")
    rows = _rows(fast)
    assert {s: r.state for s, r in rows.items()} == {
        "data": "PASS",
        "shapes": "STALE",
        "overfit": "STALE",
        "full": "STALE",
        "experiments": "not run",
    }
    assert rows["shapes"].changed == ["code.model", "papers/toy/model.py"]
    assert "changed since: code.model, papers/toy/model.py" in rows["full"].reason
    assert rows["full"].reason.startswith("PASS on other code/config/data")

    # full is expensive: refused naming overfit; overfit re-runs the stale shapes itself, not data
    with pytest.raises(GateRefused, match="repro stage overfit --paper toy"):
        _run(fast, "full")
    assert _run(fast, "overfit").record.status == "passed"
    assert len(_runs(fast, "data")) == 1 and len(_runs(fast, "shapes")) == 2
    assert _states(fast)["overfit"] == "PASS"


def test_editing_data_makes_data_stale_too(fast):
    _run(fast, "shapes")
    _append_comment(fast.paper_dir("toy") / "data.py")
    rows = _rows(fast)
    assert rows["data"].state == "STALE" and rows["shapes"].state == "STALE"
    assert rows["data"].changed == ["code.data", "papers/toy/data.py"]


def test_a_changed_base_config_makes_later_stages_stale(fast):
    _run(fast, "shapes")
    paper_yaml = fast.conf_dir / "paper" / "toy.yaml"
    paper_yaml.write_text(paper_yaml.read_text().replace("  hidden: 64", "  hidden: 32"))
    rows = _rows(fast)
    assert rows["data"].state == "PASS"
    assert rows["shapes"].state == "STALE" and rows["shapes"].changed == ["config.shapes"]


def test_force_runs_without_prerequisites_and_is_recorded(fast):
    run = _run(fast, "overfit", force=True)
    assert run.record.status == "passed"
    assert run.record.forced is True
    assert run.record.skipped_prerequisites == ["data", "shapes"]
    assert not _runs(fast, "data") and not _runs(fast, "shapes")
    assert "(forced)" in _notes(fast)[-1]
    row = _rows(fast)["overfit"]
    assert row.state == "not run" and "1 run with overrides or --force since" in row.around


def test_force_with_prerequisites_met_is_not_marked_forced(fast):
    _run(fast, "data")
    run = _run(fast, "shapes", force=True)
    assert run.record.forced is False


# ---- runs with overrides or --force are experiments around the milestones (issue 13) ----------
def test_a_failed_run_with_overrides_does_not_replace_the_passed_milestone(fast):
    assert _run(fast, "overfit").record.status == "passed"
    bad = _run(fast, "overfit", ["optim.lr=1e-7", "stage.overfit.max_steps=5"])
    assert bad.record.status == "failed"
    row = _rows(fast)["overfit"]
    assert row.state == "PASS"  # the milestone
    assert f"(newest {bad.id}: FAIL)" in row.around
    full = _run(fast, "full")  # status and refusal agree: overfit passed, so full runs
    assert full.record.status == "passed", full.record.verdict.reason


def test_a_passed_run_with_overrides_is_listed_not_stale(fast):
    _run(fast, "overfit")
    ok = _run(fast, "overfit", ["optim.lr=0.02"])
    assert ok.record.status == "passed"
    row = _rows(fast)["overfit"]
    assert row.state == "PASS" and row.run_id != ok.id and f"{ok.id}: PASS" in row.around


def test_a_forced_failing_full_does_not_replace_the_full_milestone(fast):
    _run(fast, "overfit")
    assert _run(fast, "full").record.status == "passed"
    paper_yaml = fast.conf_dir / "paper" / "toy.yaml"
    paper_yaml.write_text(
        paper_yaml.read_text()
        .replace("      value: 40.0", "      value: 101.0")  # above any accuracy: a sure FAIL
        .replace("      tolerance: 3.0", "      tolerance: 0.0")
    )
    forced = _run(fast, "full", ["seed=1"], force=True)
    assert forced.record.status == "failed"
    assert forced.record.overrides == ["seed=1"]
    row = _rows(fast)["full"]
    assert row.state == "REJUDGE"  # the targets changed: the milestone's verdict is out of date
    assert row.run_id != forced.id and f"{forced.id}: FAIL" in row.around


def test_a_run_with_overrides_needs_the_earlier_stages_its_overrides_change(fast):
    _run(fast, "overfit")
    with pytest.raises(GateRefused) as e:
        _run(fast, "full", ["model.hidden=8"])  # shapes and overfit differ with this model
    msg = str(e.value)
    assert "needs 'overfit'" in msg and "not passed with these overrides" in msg
    assert "repro stage overfit --paper toy model.hidden=8" in msg
    assert all(not r.record.overrides for r in _runs(fast, "shapes"))  # refused before any work
    shapes = _run(fast, "overfit", ["model.hidden=8"])  # overfit may run: shapes (cheap) runs first
    assert shapes.record.status == "passed"
    assert _runs(fast, "shapes")[0].record.overrides == ["model.hidden=8"]
    seeded = _run(fast, "full", ["seed=1"])  # seed is full's own: the milestones before it hold
    assert seeded.record.status == "passed", seeded.record.verdict.reason


def test_an_overridden_stage_runs_the_earlier_stages_with_its_overrides_not_the_base_ones(fast):
    """Issue 21: an overfit with model overrides ran the base config's shapes first, then its own."""
    run = _run(fast, "overfit", ["model.hidden=8"])
    assert run.data["status"] == "passed"
    assert [r.data["overrides"] for r in _runs(fast, "data")] == [[]]  # data is the base one's
    assert [r.data["overrides"] for r in _runs(fast, "shapes")] == [["model.hidden=8"]]


def test_a_loader_override_runs_shapes_on_the_base_data_milestone_and_its_own_batches(fast):
    """Issue 21: `repro stage shapes data.batch_size=…` ran the data gate again although the
    examples are the same; the loader keys are shapes' (its batches), not data's."""
    _run(fast, "data")
    run = _run(fast, "shapes", ["data.batch_size=5", "data.eval_batch_size=7"])
    assert run.data["status"] == "passed"
    assert [r.data["overrides"] for r in _runs(fast, "data")] == [[]]  # no second data run
    assert run.data["config"]["data"]["batch_size"] == 5
    base = current_fingerprint(fast, "toy", compose(fast, "toy", []))
    over = current_fingerprint(fast, "toy", compose(fast, "toy", ["data.batch_size=5"]))
    assert base["stages"]["data"] == over["stages"]["data"]
    assert base["stages"]["shapes"] != over["stages"]["shapes"]  # shapes serves those batches
    # an override that changes the examples still needs its own data run first
    _run(fast, "shapes", ["data.split_seed=3"])
    assert sorted(r.data["overrides"] for r in _runs(fast, "data")) == [[], ["data.split_seed=3"]]


def test_a_fingerprint_of_the_earlier_scheme_names_the_scheme_among_what_changed(fast):
    from repro.fingerprint import changed_parts

    now = current_fingerprint(fast, "toy", compose(fast, "toy", []))
    old = {**now, "parts": {k: v for k, v in now["parts"].items() if k != "fingerprint_scheme"}}
    assert "fingerprint_scheme" in changed_parts(old, now, "data")


def test_experiments_need_a_passed_full(fast):
    _run(fast, "overfit")
    paper_yaml = fast.conf_dir / "paper" / "toy.yaml"
    paper_yaml.write_text(
        paper_yaml.read_text()
        .replace("      value: 40.0", "      value: 101.0")  # above any accuracy: a sure FAIL
        .replace("      tolerance: 3.0", "      tolerance: 0.0")
    )
    assert _run(fast, "full").record.status == "failed"
    with pytest.raises(
        GateRefused, match=r"needs 'full'.*\(full is FAIL\); run: repro stage full --paper toy"
    ):
        _run(fast, "experiments")


def test_seeds_vary_the_model_not_the_test_set(fast):
    from repro.context import StageContext

    ctx = StageContext(fast, "toy", compose(fast, "toy", ["seed=5"]), Console(quiet=True))
    splits = []
    for seed in (0, 1, 2):
        dm = ctx.build_datamodule(seed)
        dm.setup("fit")
        splits.append([ex["x"] for ex in dm.splits["test"]])
    assert splits[0] == splits[1] == splits[2]  # data.split_seed fixes the split


# ---- repro judge: targets are part of the verdict, not of the training ------------------------
def test_changing_a_tolerance_rejudges_without_training(fast, cli):
    _run(fast, "overfit")
    full = _run(fast, "full")
    assert full.record.status == "passed"
    ours = full.record.metrics["mean"]["test/acc"]
    paper_yaml = fast.conf_dir / "paper" / "toy.yaml"
    paper_yaml.write_text(
        paper_yaml.read_text()
        .replace("      value: 40.0", f"      value: {ours + 2:.2f}")
        .replace("      tolerance: 3.0", "      tolerance: 0.5")
    )
    assert _states(fast)["full"] == "REJUDGE"
    with pytest.raises(GateRefused, match=f"run: repro judge {full.id}"):
        _run(fast, "experiments")
    code, out, err = cli("judge", "--paper", "toy")
    assert code == 1, out + err  # 2 points below the paper, tolerance 0.5: NOT REPRODUCED
    (judged, _) = _runs(fast, "full")
    assert judged.record.links == {"judged": full.id}
    assert "NOT REPRODUCED" in judged.record.verdict.reason
    assert judged.record.metrics["per_seed"] == full.record.metrics["per_seed"]  # no training
    assert not (judged.dir / "checkpoints").exists()
    assert _states(fast)["full"] == "FAIL"
    paper_yaml.write_text(
        paper_yaml.read_text().replace("      tolerance: 0.5", "      tolerance: 3.0")
    )
    assert cli("judge", full.id)[0] == 0
    assert _states(fast)["full"] == "PASS"


# ---- status and refusal agree on every sequence ----------------------------------------------
OUTCOMES = (
    "passed",
    "failed",
    "override-passed",
    "override-failed",
    "forced-failed",
    "stale-passed",
)


def _fake(project, stage: str, outcome: str, fp: dict) -> None:
    overrides = ["optim.lr=0.5"] if outcome.startswith("override") else []
    stale = {"stages": {s: "0" * 16 for s in STAGES}}
    run = create_run(
        project.runs_dir,
        "toy",
        stage,
        overrides=overrides,
        forced=outcome.startswith("forced"),
        fingerprint=stale if outcome.startswith("stale") else fp,
    )
    run.finish(None, outcome.rsplit("-", 1)[-1])


@pytest.mark.parametrize("seq", list(itertools.product(OUTCOMES[:4], OUTCOMES, OUTCOMES))[::5])
def test_status_and_refusal_agree(project, seq):
    """Fake records (no training) for data, shapes, overfit: `full` is refused exactly when status
    shows overfit not PASS, and otherwise first runs exactly the cheap stages status shows not PASS."""
    from repro.runner import _plan

    resolved = compose(project, "toy", [])
    fp = current_fingerprint(project, "toy", resolved)
    for stage, outcome in zip(("data", "shapes", "overfit"), seq, strict=True):
        _fake(project, stage, outcome, fp)
    rows = _rows(project)
    not_passed = [s for s in ("data", "shapes", "overfit") if rows[s].state != "PASS"]
    assert (rows["overfit"].state == "PASS") == (seq[2] == "passed")
    if "overfit" in not_passed:
        with pytest.raises(
            GateRefused, match=f"needs 'overfit'.*overfit is {rows['overfit'].state}"
        ):
            _plan(project, "toy", "full", [], resolved, resolved, None)
    else:
        todo = _plan(project, "toy", "full", [], resolved, resolved, None)
        assert todo == [(s, []) for s in not_passed]
