"""The full stage's preflight (repro/gates/preflight.py), its regression warning against our own
best earlier run (repro/gates/regression.py) and early stopping as recorded (issue 22).

A model that ignores its input and labels shifted by one example against their inputs FAIL the
preflight within seconds, before the full schedule trains anything; a healthy model passes it."""

from __future__ import annotations

import json
import time

import pytest
from rich.console import Console

from repro.gates.metrics import FullMetrics
from repro.gates.preflight import check_preflight, p_value
from repro.gates.regression import NO_EARLIER, compare
from repro.runner import run_stage
from repro.tasks import MetricSpec
from repro.tasks.base import Comparison

FAST = {
    "  n_examples: 1200": "  n_examples: 300",
    "  max_epochs: 15": "  max_epochs: 2",
    "      value: 95.0": "      value: 40.0",  # reachable in 2 epochs
}
FORWARD = "        return self.net(x)  # (B, C) logits: no softmax, the loss applies it\n"
# The train split's labels rolled by one: each example gets its neighbour's label.
ROLLED = """
    def build(self, splits):
        train = splits["train"]
        labels = [ex["label"] for ex in train]
        splits["train"] = [{**ex, "label": y} for ex, y in zip(train, labels[1:] + labels[:1])]
"""

# The train split sorted by label and served in that order (a paper's own unshuffled loader).
SORTED = """
    def build(self, splits):
        splits["train"] = sorted(splits["train"], key=lambda ex: ex["label"])

    def train_dataloader(self):
        return self._loader("train", shuffle=False)
"""


@pytest.fixture
def toy(project):
    """The toy paper, fast: 300 examples, 2 epochs, a fixed LR (no LR finder)."""
    path = project.conf_dir / "paper" / "toy.yaml"
    text = path.read_text()
    for old, new in FAST.items():
        assert old in text
        text = text.replace(old, new)
    path.write_text(text + "optim:\n  lr: 0.01\n")
    return project


def _full(project, *overrides):
    return run_stage(
        project, "toy", "full", list(overrides), force=True, console=Console(quiet=True)
    )


def _checks(run) -> dict:
    return {c["name"]: c for c in run.data["verdict"]["checks"]}


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer holds {old!r}"
    path.write_text(text.replace(old, new))


def _assert_stopped_before_training(run, seconds: float) -> None:
    assert run.data["status"] == "failed"
    assert not (run.dir / "fit_result.json").exists()
    assert not (run.dir / "checkpoints").exists()
    assert run.data["verdict"]["evidence"]["preflight"]["steps"] == 150
    assert seconds < 60


# ---- the preflight end to end on the toy classifier ---------------------------------------------
def test_healthy_model_passes_the_preflight_then_trains(toy):
    from repro.judge import judge_run

    run = _full(toy)
    pre = _checks(run)["preflight"]
    assert pre["passed"], pre["reason"]
    assert pre["reason"].startswith("learned in 150 steps")
    ev = run.data["preflight"]
    assert ev == run.data["verdict"]["evidence"]["preflight"] == run.data["metrics"]["preflight"]
    assert ev["val"] > ev["trivial_val"] + 30  # accuracy points: the toy learns in 150 steps
    assert ev["lr"] == 0.01  # the paper's optim.lr
    assert (run.dir / "fit_result.json").exists()  # then the full schedule trained
    judged = judge_run(toy, "toy", run.id, Console(quiet=True))  # re-applied from the record
    assert _checks(judged)["preflight"]["reason"] == pre["reason"]


def test_model_that_ignores_its_input_fails_the_preflight_before_training(toy):
    _edit(
        toy.paper_dir("toy") / "model.py",
        FORWARD,
        FORWARD.replace("self.net(x)", "self.net(0 * x)"),
    )
    t0 = time.perf_counter()
    run = _full(toy)
    _assert_stopped_before_training(run, time.perf_counter() - t0)
    reason = run.data["verdict"]["reason"]
    assert reason.startswith("preflight: learned nothing in 150 steps")
    assert "val acc 33.33 vs 33.33 by the most frequent training class" in reason
    assert "p=" in reason and "Nothing was trained further" in reason
    assert list(_checks(run)) == ["paper_tests_slow", "preflight"]  # the slow tests: off here


def test_labels_shifted_by_one_example_fail_the_preflight_before_training(toy):
    _edit(toy.paper_dir("toy") / "data.py", "    def encode(", ROLLED + "\n    def encode(")
    t0 = time.perf_counter()
    run = _full(toy)
    _assert_stopped_before_training(run, time.perf_counter() - t0)
    ev = run.data["preflight"]
    assert run.data["verdict"]["reason"].startswith("preflight: learned nothing in 150 steps")
    assert (
        ev["comparison"]["mean_diff"]
        <= 2 * ev["comparison"]["sd_diff"] / ev["comparison"]["n"] ** 0.5
    )


def test_a_train_split_sorted_by_label_and_not_shuffled_fails_the_preflight(toy):
    """Caught when the preflight's steps take less than an epoch (300 batches here: 100 steps of
    class a, then 50 of class b); on the 300-example toy, 19 passes over a, b, c learn."""
    _edit(toy.paper_dir("toy") / "data.py", "    def encode(", SORTED + "\n    def encode(")
    t0 = time.perf_counter()
    run = _full(toy, "data.n_examples=12000")
    _assert_stopped_before_training(run, time.perf_counter() - t0)
    ev = run.data["preflight"]
    assert ev["val"] <= ev["trivial_val"]  # it predicts the class it saw last


def test_preflight_only_runs_alone_as_an_experiment(toy, cli):
    code, out, _ = cli("stage", "full", "--paper", "toy", "--force", "--preflight-only")
    assert code == 0, out
    run_dir = next((toy.runs_dir / "toy" / "full").iterdir())
    record = json.loads((run_dir / "record.json").read_text())
    assert record["overrides"] == ["stage.full.preflight.only=true"]
    assert [c["name"] for c in record["verdict"]["checks"]] == ["paper_tests_slow", "preflight"]
    assert not (run_dir / "fit_result.json").exists()
    assert "an experiment around the milestones" in out
    code, _, err = cli("stage", "data", "--paper", "toy", "--preflight-only")
    assert code == 1 and "apply to the full stage only" in err
    code, _, err = cli(
        "stage", "full", "--force", "--preflight-only", "stage.full.preflight.enabled=false"
    )
    assert code == 1 and "stage.full.preflight.only (set on the command line): expected" in err


@pytest.mark.slow  # the four stages of the toy: 46 s on 2 busy cores
def test_skipped_preflight_is_not_measured_and_said_by_status_and_report(toy, cli):
    from repro.report import build_report

    path = toy.conf_dir / "paper" / "toy.yaml"
    path.write_text(path.read_text() + "stage:\n  full:\n    preflight:\n      enabled: false\n")
    for stage in ("data", "shapes", "overfit"):  # the milestones, as status and report read them
        assert run_stage(toy, "toy", stage, console=Console(quiet=True)).data["status"] == "passed"
    run = run_stage(toy, "toy", "full", console=Console(quiet=True))
    pre = _checks(run)["preflight"]
    assert pre["measured"] is False and pre["passed"] is False
    assert "not measured: skipped (stage.full.preflight.enabled: false)" in pre["reason"]
    assert run.data["verdict"]["evidence"]["warnings"] == [f"preflight {pre['reason']}"]
    code, out, _ = cli("status", "--paper", "toy")
    assert f"full (run {run.id}): warning: preflight not measured: skipped" in out
    report = build_report(toy, "toy")[0]
    assert f"| {run.id} | not measured: skipped (stage.full.preflight.enabled: false) |" in report


# ---- the judgement (pure) ---------------------------------------------------------------------
def _record(mean_diff: float, sd: float = 0.5, n: int = 100, out_of_time: bool = False) -> dict:
    comp = Comparison(n, 0.5 + mean_diff, 0.5, mean_diff, sd)
    return {
        "planned_steps": 150,
        "max_seconds": 180.0,
        "steps": 40 if out_of_time else 150,
        "seconds": 3.2,
        "out_of_time": out_of_time,
        "lr": 1e-3,
        "metric": "acc",
        "val": 100 * comp.model,
        "trivial": "the most frequent training class",
        "trivial_val": 50.0,
        "unit": "example",
        "score": "accuracy (1 or 0)",
        "comparison": comp.__dict__,
    }


def test_preflight_passes_beyond_chance_only():
    assert check_preflight(_record(0.2), 2.0).passed  # 0.2 > 2 x 0.5 / 10
    fail = check_preflight(_record(0.09), 2.0)  # 0.09 <= 0.1: within chance
    assert not fail.passed and fail.measured
    assert fail.reason.startswith("learned nothing in 150 steps, 3.2 s, lr 0.001 (val acc 59 vs 50")
    assert "p=0.036" in fail.reason
    late = check_preflight(_record(0.0, out_of_time=True), 2.0)
    assert "40 steps of 150 (its 180 s ran out)" in late.reason
    assert "raise stage.full.preflight.max_seconds" in late.reason
    assert not check_preflight(None, 2.0).measured  # a record from before the preflight
    assert p_value(Comparison(100, 0.5, 0.5, 0.0, 0.5)) == pytest.approx(0.5)


# ---- regression against our own best ---------------------------------------------------------
ACC = MetricSpec("acc", True, "accuracy", 100.0)
LOSS = MetricSpec("loss", False, "loss")


class _Run:
    def __init__(self, run_id: str):
        self.id = run_id


def _metrics(values: list[float], key: str = "test/acc") -> FullMetrics:
    from repro.gates.full import mean_std

    mean, std = mean_std(values)
    per_seed = [{key: v} for v in values]
    return FullMetrics(list(range(len(values))), per_seed, {key: mean}, {key: std}, [], {}, 1, 1.0)


def test_worse_than_the_best_earlier_run_beyond_its_seed_spread_warns():
    found = [(_Run("A"), _metrics([97.0, 97.6])), (_Run("B"), _metrics([95.0]))]
    ev = compare({"test/acc": 92.7}, "acc", ACC, found, 1.0)
    assert ev["compared_with"] == "A" and ev["worse"]
    assert ev["margin"] == pytest.approx(0.4243, abs=1e-4)  # std of A's 2 seeds
    assert ev["warning"].startswith("test/acc 92.70 is 4.60 below our best earlier passed run A")
    assert "(97.30)" in ev["warning"] and "the std of its 2 seeds" in ev["warning"]
    ok = compare({"test/acc": 97.0}, "acc", ACC, found, 1.0)  # within A's spread
    assert not ok["worse"] and "warning" not in ok and ok["compared_with"] == "A"


def test_one_seed_uses_the_configured_margin_and_the_metric_direction():
    found = [(_Run("A"), _metrics([97.0]))]
    assert not compare({"test/acc": 96.5}, "acc", ACC, found, 1.0)["worse"]  # 1% of 100
    assert compare({"test/acc": 95.9}, "acc", ACC, found, 1.0)["worse"]
    losses = [(_Run("L"), _metrics([0.50], "test/loss"))]
    worse = compare({"test/loss": 0.52}, "loss", LOSS, losses, 1.0)  # 1% of 0.5 = 0.005
    assert worse["worse"] and "above our best" in worse["warning"]
    assert not compare({"test/loss": 0.40}, "loss", LOSS, losses, 1.0)["worse"]


def test_no_earlier_run_says_so_and_never_warns():
    ev = compare({"test/acc": 10.0}, "acc", ACC, [], 1.0)
    assert ev == {"compared_with": None, "note": NO_EARLIER, "worse": False}


@pytest.mark.slow  # three full runs of the toy: 72 s on 2 busy cores
def test_a_worse_second_full_run_warns_naming_the_earlier_one(toy):
    first = _full(toy)
    assert first.data["status"] == "passed", first.data["verdict"]["reason"]
    assert first.data["verdict"]["evidence"]["regression"]["note"] == NO_EARLIER
    model = toy.paper_dir("toy") / "model.py"
    good = model.read_text()
    # the model sees 3 features of 16: still beats the trivial baseline, worse on test
    _edit(
        model,
        FORWARD,
        FORWARD.replace("self.net(x)", "self.net(x * (x.new_ones(x.shape[-1]).cumsum(0) <= 3))"),
    )
    worse = _full(toy)
    warning = worse.data["verdict"]["evidence"]["warnings"][0]
    assert f"below our best earlier passed run {first.id}" in warning
    assert f"; warning: {warning}" in worse.data["verdict"]["reason"]
    model.write_text(good)
    again = _full(toy)  # the same code and data as the first: equal, no warning
    ev = again.data["verdict"]["evidence"]
    assert ev["regression"]["compared_with"] == first.id and not ev["regression"]["worse"]
    assert "warnings" not in ev
    # the preflight leaves the training it precedes as it was: the same numbers without it
    alone = _full(toy, "stage.full.preflight.enabled=false")
    assert alone.data["metrics"]["per_seed"] == first.data["metrics"]["per_seed"]


def _typed(run_id: str, verdict: dict):
    """A full run's record as readers get it (typed), holding `verdict`."""
    from repro.records.record import parse_record

    return parse_record(
        {"id": run_id, "paper": "toy", "stage": "full", "status": "passed", "verdict": verdict}
    )


def test_status_shows_the_warnings_of_the_milestone_run():
    from types import SimpleNamespace

    from repro.display import print_status
    from repro.progression import _row

    warning = "test/acc 92.70 is 4.60 below our best earlier passed run A on the same data"
    verdict = {"reason": "all 6 checks passed", "evidence": {"warnings": [warning]}}
    run = SimpleNamespace(
        id="B", record=_typed("B", verdict), effective_status="passed", status_reason=None
    )
    row = _row("full", run, "")
    assert row.state == "PASS" and row.warnings == [warning]
    console = Console(record=True, width=200)
    print_status(console, "toy", [row])
    assert f"full (run B): warning: {warning}" in console.export_text()


def test_report_names_the_preflight_and_the_regression_warning():
    from types import SimpleNamespace

    from repro.report import _guards

    warning = "test/acc 92.70 is 4.60 below our best earlier passed run A on the same data"
    skipped = {
        "name": "preflight",
        "passed": False,
        "measured": False,
        "reason": "not measured: skipped (x)",
    }
    passed = {
        "name": "preflight",
        "passed": True,
        "measured": True,
        "reason": "learned in 150 steps",
    }
    runs = [
        SimpleNamespace(
            id="B",
            record=_typed(
                "B", {"checks": [skipped], "evidence": {"regression": {"warning": warning}}}
            ),
        ),
        SimpleNamespace(
            id="C",
            record=_typed(
                "C",
                {
                    "checks": [passed],
                    "evidence": {"regression": {"compared_with": None, "note": NO_EARLIER}},
                },
            ),
        ),
        SimpleNamespace(id="D", record=_typed("D", {"checks": [], "evidence": {}})),  # before both
    ]
    lines = _guards(runs)
    assert f"| B | not measured: skipped (x) | warning: {warning} |" in lines
    assert f"| C | PASS: learned in 150 steps | {NO_EARLIER} |" in lines
    assert not any(line.startswith("| D ") for line in lines)


# ---- early stopping as recorded (issue 22, Done-when 5) ---------------------------------------
def test_an_early_stopped_run_records_stopped_early_and_its_epoch(toy):
    run = _full(
        toy,
        "trainer.max_epochs=12",
        "schedule.name=constant",
        "trainer.early_stopping.monitor=val/acc",
        "trainer.early_stopping.patience=1",
        "stage.full.preflight.enabled=false",
    )
    (fit,) = run.data["verdict"]["evidence"]["runs"]
    assert fit["stopped_early"] is True, fit
    assert isinstance(fit["stopped_epoch"], int) and 1 <= fit["stopped_epoch"] < 11
    assert fit["epochs"] == fit["stopped_epoch"] + 1 < 12
