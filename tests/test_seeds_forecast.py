"""Seeds (mean ± std over N, the paper's stated spread) and the full stage's time/memory forecast."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from repro.cli import app
from repro.config.schema import Target, Variant
from repro.forecast import (
    ForecastInputs,
    compare,
    forecast_full,
    format_forecast,
    scaled,
    train_batches,
)
from repro.gates.experiments import results_table
from repro.gates.full import compare_target, spread_verdict
from repro.records.record import RecordedActual
from tests.configs import shrink_toy

# the forecast's refusals on a machine too busy to time (repro/forecast.py: from_sample)
STARVED = re.compile(r"the CPUs were too busy while overfit|could not time training steps steadily")

# ---- seeds and spread wording (pure) -------------------------------------------------------------
TARGET = Target(name="test acc", metric="test/acc", value=90.0, tolerance=1.0, where="Table 2")


def test_mean_and_std_over_seeds_and_no_stated_spread():
    c = compare_target(TARGET, [89.0, 90.0, 91.0])
    assert c.reason.startswith(
        "REPRODUCED: ours 90.00 ± 1.00 (3 seeds) vs paper 90 (Table 2), gap +0.00"
    )
    assert c.reason.endswith("; the paper states no spread")
    assert c.evidence["n_seeds"] == 3 and c.evidence["within_paper_spread"] is None


def test_gap_within_and_outside_the_papers_stated_spread():
    inside = compare_target(replace(TARGET, spread=0.5), [89.7, 89.5])
    assert "gap within the paper's stated spread ±0.5" in inside.reason
    assert inside.evidence["within_paper_spread"] is True and inside.evidence["spread"] == 0.5
    outside = compare_target(replace(TARGET, spread=0.2), [89.5])
    assert "WITHIN TOLERANCE: ours 89.50 (1 seed)" in outside.reason
    assert "gap outside the paper's stated spread ±0.2" in outside.reason
    assert spread_verdict(-0.3, 0.3) == ("gap within the paper's stated spread ±0.3", True)


def test_experiments_aggregate_mean_std_and_n_per_variant():
    rows = results_table(
        [Variant("full"), Variant("small")],
        [
            {"variant": "full", "seed": 0, "metrics": {"acc": 80.0}},
            {"variant": "full", "seed": 1, "metrics": {"acc": 82.0}},
            {"variant": "small", "seed": 0, "metrics": {"acc": 70.0}},
        ],
        "acc",
    )
    assert (rows[0].ours, round(rows[0].std, 4), rows[0].n) == (81.0, 1.4142, 2)
    assert (rows[1].ours, rows[1].std, rows[1].n, rows[1].delta) == (
        70.0,
        None,
        1,
        -11.0,
    )


# ---- forecast arithmetic (pure) ------------------------------------------------------------------
def _inputs(**kw) -> ForecastInputs:
    base = dict(
        train_step_s=0.1,
        train_p90_s=0.12,
        eval_step_s=0.03,
        eval_p90_s=0.04,
        fit_overhead_s=0.4,
        eval_overhead_s=0.1,
        build_s=0.3,
        measured_batch=32,
        measured_eval_batch=32,
        n_train=800,
        n_val=100,
        n_test=100,
        batch_size=32,
        eval_batch_size=50,
        max_epochs=5,
        seeds=1,
        lr_finder_steps=0,
        params=1_000_000,
        overfit_peak_rss_mb=400.0,
        load_avg=1.0,
        cpus=2,
    )
    return ForecastInputs(**(base | kw))


def test_step_time_scales_up_with_batch_but_never_down():
    assert scaled(0.1, 32, 32) == pytest.approx(0.1)
    assert scaled(0.1, 32, 64) == pytest.approx(0.2)
    assert scaled(0.1, 32, 8) == pytest.approx(0.1)
    assert train_batches(801, 32, None) == 26
    assert train_batches(800, 32, 0.5) == 12 and train_batches(800, 32, 10) == 10


def test_forecast_sums_epochs_eval_finder_fixed_costs_and_seeds():
    fc = forecast_full(_inputs())
    eval_step = 0.03 * 50 / 32  # measured at 32, scaled up to 50
    epoch = 25 * 0.1 + 2 * eval_step + 0.1  # steps, validation batches, the validation's overhead
    assert fc["s_per_epoch"] == pytest.approx(epoch)
    # likely: build, fit set-up, every epoch, then validate and test the best checkpoint (each
    # its batches and its overhead)
    fixed = 0.3 + 0.4 + 2 * 0.1
    assert fc["likely_s"] == pytest.approx(fixed + 5 * epoch + 4 * eval_step)
    assert fc["margin"] == 1.5 and fc["noisy"] is False
    bound_epoch = 25 * 0.12 * 1.5 + 2 * 0.04 * 50 / 32 * 1.5 + 0.1 * 1.5
    assert fc["s_per_epoch_bound"] == pytest.approx(bound_epoch)
    two = forecast_full(_inputs(seeds=2, lr_finder_steps=100))
    assert two["lr_finder_s"] == pytest.approx(10.0 + 0.4)  # its steps and its fit's overhead
    assert two["likely_s"] == pytest.approx(2 * (fc["likely_s"] + 10.4))
    assert fc["param_state_mb"] == pytest.approx(16e6 / 2**20)
    assert fc["peak_rss_mb"] == pytest.approx(400 + 16e6 / 2**20)
    assert forecast_full(_inputs(overfit_peak_rss_mb=None))["peak_rss_mb"] is None


def test_the_preflight_is_counted_once_before_the_seeds_and_alone_with_preflight_only():
    """Issue 21: the dry run forecasts what would run, and full trains its preflight first."""
    plain = forecast_full(_inputs(seeds=2))
    fc = forecast_full(_inputs(seeds=2, preflight_steps=40, preflight_max_s=60.0, preflight_val=80))
    eval_step = 0.03 * 50 / 32
    pre = (
        40 * 0.1 + 2 * 2 * eval_step
    )  # its steps, then the model and the baseline on 80 of 100 val
    assert fc["preflight_s"] == pytest.approx(pre)
    assert fc["likely_s"] == pytest.approx(plain["likely_s"] + pre)  # once, not per seed
    assert "the preflight first ≈ 4.2 s" in format_forecast(fc)
    capped = forecast_full(_inputs(preflight_steps=10_000, preflight_max_s=6.0, preflight_val=80))
    assert capped["preflight_s"] == pytest.approx(6.0 + 4 * eval_step)  # its time budget caps it
    only = forecast_full(
        _inputs(preflight_steps=40, preflight_max_s=60.0, preflight_val=80, preflight_only=True)
    )
    assert only["likely_s"] == pytest.approx(pre + 0.3)  # and one build: no epochs
    assert "for the preflight alone (40 steps of batch 32" in format_forecast(only)
    assert "not counted: the paper's tests marked slow" in fc["note"]


def test_memory_counts_optimizer_state_for_trainable_parameters_only():
    """Frozen weights (BiMPM's word vectors) hold no gradient and no Adam moments (issue 21)."""
    fc = forecast_full(_inputs(params=1_000_000, trainable_params=100_000))
    assert fc["param_state_mb"] == pytest.approx((1_000_000 * 4 + 100_000 * 12) / 2**20)


def test_a_noisy_measurement_doubles_the_margin():
    spread = forecast_full(_inputs(train_p90_s=0.3))  # p90 3x the median
    loaded = forecast_full(_inputs(load_avg=5.0))  # measured with 5 runnable tasks on 2 CPUs
    for fc in (spread, loaded):
        assert fc["noisy"] is True and fc["margin"] == 3.0
    assert "noisy measurement: doubled margin" in loaded["note"]


def test_forecast_wording_and_comparison_with_actual():
    fc = forecast_full(_inputs(max_epochs=40, seeds=3))
    text = format_forecast(fc)
    assert text.startswith(
        f"forecast: ≈ {fc['likely_s'] / 60:.1f} min, ≤ {fc['total_s'] / 60:.1f} min for 40 epochs × 3 seeds"
    )
    assert (
        "steps measured through Lightning by overfit at batch 32: median 100 ms, p90 120 ms" in text
    )
    assert "load 1.0 on 2 CPUs" in text
    assert "peak memory ≈ 415 MB" in text and text.endswith("device cpu")
    line = compare(fc, RecordedActual(wall_s=100.0, s_per_epoch=2.0, epochs=30, peak_rss_mb=500.0))
    assert "(bound held)" in line
    assert "2.69 vs 2.00 s/epoch (30 epochs run of 120 forecast)" in line
    assert "peak memory ≈ 415 vs 500 MB" in line
    assert "(bound BROKEN)" in compare(fc, RecordedActual(wall_s=fc["total_s"] + 1))
    assert compare(None, RecordedActual(wall_s=1)) is None


RECORDED = [  # (forecast inputs, actual wall seconds) measured on this 2-core machine (toy paper)
    (
        dict(
            train_step_s=0.138,
            train_p90_s=0.156,
            eval_step_s=0.05,
            eval_p90_s=0.05,
            fit_overhead_s=0.1,
            eval_overhead_s=0.05,
            build_s=0.3,
            n_train=240,
            n_val=30,
            n_test=30,
            max_epochs=3,
            load_avg=6.2,
        ),
        4.0,
    ),
]


@pytest.mark.parametrize("inputs, wall", RECORDED)
def test_the_bound_holds_on_recorded_pairs(inputs, wall):
    fc = forecast_full(_inputs(**inputs))
    assert fc["likely_s"] <= fc["total_s"]
    assert wall <= fc["total_s"]


# ---- integration: two seeds on the toy paper, forecast before, actual after ----------------------
def test_full_with_two_seeds_reports_mean_std_and_records_forecast_and_actual(project):
    from repro.records import list_runs
    from repro.runner import run_stage

    quiet = Console(quiet=True)
    shrink_toy(project)
    assert run_stage(project, "toy", "overfit", [], console=quiet).record.status == "passed"

    dry = CliRunner().invoke(
        app,
        ["stage", "full", "--dry-run", "seeds=2"],
        env={"COLUMNS": "300"},
    )
    assert dry.exit_code == 0, dry.output
    # a machine so busy that overfit got under a quarter of a core: no forecast, by design
    starved = bool(STARVED.search(dry.output))
    assert starved or ("forecast: ≈ " in dry.output and "for 2 epochs × 2 seeds" in dry.output)
    assert list_runs(project.runs_dir, "toy", "full") == []  # a dry run records nothing

    run = run_stage(project, "toy", "full", ["seeds=2"], console=quiet)
    rec = run.data  # as record.json holds it
    assert rec["metrics"]["seeds"] == [0, 1]
    (check,) = [c for c in rec["verdict"]["checks"] if "label" in c["evidence"]]  # the target
    vals = [m["test/acc"] for m in rec["metrics"]["per_seed"]]
    assert len(vals) == 2 and check["evidence"]["n_seeds"] == 2
    assert (
        f"ours {sum(vals) / 2:.2f} ± {check['evidence']['ours_std']:.2f} (2 seeds)"
        in check["reason"]
    )
    assert "the paper states no spread" in check["reason"]
    assert starved or (rec["forecast"]["seeds"] == 2 and rec["forecast"]["epochs"] == 2)
    assert rec["actual"]["epochs"] == sum(r["epochs"] for r in rec["evidence"]["runs"])
    assert rec["actual"]["wall_s"] > 0 and rec["actual"]["s_per_epoch"] > 0
    assert rec["peak_rss_mb"] > 0

    shown = CliRunner().invoke(app, ["show", run.id], env={"COLUMNS": "300"})
    assert shown.exit_code == 0
    if not starved:
        assert "forecast ≈ " in shown.output and " s/epoch (" in shown.output
        assert rec["actual"]["wall_s"] <= rec["forecast"]["total_s"]  # the bound held


def test_no_forecast_from_a_stale_measurement(project, cli):
    from repro.runner import run_stage

    shrink_toy(project)
    assert (
        run_stage(project, "toy", "overfit", [], console=Console(quiet=True)).record.status
        == "passed"
    )
    model = project.paper_dir("toy") / "model.py"
    model.write_text(model.read_text() + "\n# edited\n")
    code, out, err = cli("stage", "full", "--dry-run")
    assert code == 0, err
    assert "forecast: unavailable: overfit is STALE" in out
    assert "changed since: code.model, papers/toy/model.py" in out


def test_dry_run_forecasts_the_overrides_data_and_their_own_overfit(project, cli):
    """`--dry-run` with a data override forecasts that data (its step count) from the overfit run
    with those overrides, or says which overfit to run first (issue 21)."""
    from repro.runner import run_stage

    quiet = Console(quiet=True)
    shrink_toy(project)  # 300 examples: 240 train, 8 steps of 32
    big = ["data.n_examples=600"]  # 480 train: 15 steps of 32
    code, out, err = cli("stage", "full", "--dry-run", *big)
    assert code == 0, err
    assert "forecast: unavailable: data has not passed with this config" in out
    assert "run first: repro stage overfit --paper toy data.n_examples=600" in out
    assert run_stage(project, "toy", "data", big, console=quiet).record.status == "passed"
    code, out, err = cli("stage", "full", "--dry-run", *big)
    assert "overfit has not passed with this config" in out
    assert "(its data: 15 training steps per epoch of batch 32)" in out
    # an overfit of the base config alone gives no forecast for the overrides' data
    assert run_stage(project, "toy", "overfit", [], console=quiet).record.status == "passed"
    assert "overfit has not passed with this config" in cli("stage", "full", "--dry-run", *big)[1]
    code, out, err = cli("stage", "full", "--dry-run")
    # the base config: its own data (or, on CPUs too busy to time, a refusal saying so)
    assert STARVED.search(out) or ("(≈ " in out and ": 8 steps of batch 32;" in out)
    assert run_stage(project, "toy", "overfit", big, console=quiet).record.status == "passed"
    code, out, err = cli("stage", "full", "--dry-run", *big)
    assert code == 0, err
    assert STARVED.search(out) or (
        out.startswith("forecast: ≈ ") and ": 15 steps of batch 32;" in out
    )
