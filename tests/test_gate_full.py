"""Tests for repro/gates/full.py (ours vs the paper's numbers) and the LR finder rule in repro/train/fit.py."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from repro.config.schema import Target
from repro.gates.full import (
    NOT_REPRODUCED,
    REPRODUCED,
    WITHIN,
    check_targets,
    compare_target,
    mean_std,
)
from repro.train.lr_finder import steepest_descent_lr

ACC = Target(name="test accuracy", metric="test/acc", value=90.0, tolerance=2.0, where="Table 2")
LOSS = Target(
    name="test loss",
    metric="test/loss",
    value=0.5,
    tolerance=0.1,
    higher_is_better=False,
    where="Table 3",
)


# ---- compare_target ---------------------------------------------------------------------------
def test_reproduced_when_ours_matches_or_beats_the_paper():
    for ours in (90.0, 91.5):
        c = compare_target(ACC, [ours])
        assert c.passed
        assert c.evidence["label"] == REPRODUCED
        assert c.reason.startswith("REPRODUCED: ours")
        assert "vs paper 90 (Table 2)" in c.reason


def test_within_tolerance_when_below_by_at_most_tolerance():
    c = compare_target(ACC, [88.5])
    assert c.passed
    assert c.evidence["label"] == WITHIN
    assert "gap -1.50" in c.reason and "tolerance 2" in c.reason
    assert compare_target(ACC, [88.0]).evidence["label"] == WITHIN  # boundary


def test_not_reproduced_names_the_gap():
    c = compare_target(ACC, [85.0])
    assert not c.passed
    assert c.evidence["label"] == NOT_REPRODUCED
    assert c.reason.startswith("NOT REPRODUCED: ours 85.00 (1 seed) vs paper 90")
    assert "gap -5.00" in c.reason
    assert c.evidence["gap"] == pytest.approx(-5.0)


def test_lower_is_better_metric():
    assert compare_target(LOSS, [0.45]).evidence["label"] == REPRODUCED
    assert compare_target(LOSS, [0.55]).evidence["label"] == WITHIN
    c = compare_target(LOSS, [0.7])
    assert not c.passed
    assert c.evidence["label"] == NOT_REPRODUCED


def test_above_paper_by_more_than_tolerance_warns_of_leakage():
    c = compare_target(ACC, [95.0])
    assert c.passed
    assert c.evidence["label"] == REPRODUCED
    assert c.evidence["warning"] == "above paper"
    assert "check for leakage" in c.reason
    assert (
        "warning" not in compare_target(ACC, [91.0]).evidence
    )  # within tolerance above: no warning


def test_lower_is_better_far_below_paper_warns_too():
    c = compare_target(LOSS, [0.2])
    assert c.passed
    assert c.evidence.get("warning") == "above paper"


def test_mean_and_std_over_seeds():
    c = compare_target(ACC, [88.0, 90.0, 92.0])
    assert c.evidence["ours_mean"] == pytest.approx(90.0)
    assert c.evidence["ours_std"] == pytest.approx(2.0)
    assert c.evidence["n_seeds"] == 3
    assert "ours 90.00 ± 2.00 (3 seeds)" in c.reason
    assert mean_std([1.0]) == (1.0, None)


def test_missing_measurement_fails():
    c = compare_target(ACC, [])
    assert not c.passed
    assert "test/acc was not measured" in c.reason


# ---- check_targets ----------------------------------------------------------------------------
def test_no_target_for_the_dataset_fails():
    targets = [replace(ACC, dataset="snli")]
    checks = check_targets(targets, "quora", [{"test/acc": 91.0}])
    assert len(checks) == 1
    assert not checks[0].passed
    assert "no target for dataset 'quora'" in checks[0].reason
    assert "snli" in checks[0].reason


def test_no_targets_at_all_fails():
    checks = check_targets([], "toy", [{"test/acc": 91.0}])
    assert [c.passed for c in checks] == [False]
    assert "none" in checks[0].reason


def test_only_targets_of_the_dataset_are_compared():
    targets = [
        replace(ACC, dataset="snli", value=99.0),
        replace(ACC, dataset="quora"),
        LOSS,
    ]  # LOSS: any dataset
    checks = check_targets(targets, "quora", [{"test/acc": 89.0, "test/loss": 0.45}])
    assert [c.evidence["paper"] for c in checks] == [90.0, 0.5]
    assert all(c.passed for c in checks)


def test_metric_missing_from_every_seed_fails():
    checks = check_targets([ACC], None, [{"test/loss": 0.3}, {"test/loss": 0.4}])
    assert len(checks) == 1 and not checks[0].passed
    assert "not measured" in checks[0].reason


def test_mean_over_seeds_in_check_targets():
    checks = check_targets([ACC], "toy", [{"test/acc": 86.0}, {"test/acc": 88.0}])
    assert checks[0].evidence["ours_mean"] == pytest.approx(87.0)
    assert checks[0].evidence["label"] == NOT_REPRODUCED


# ---- steepest_descent_lr ----------------------------------------------------------------------
def _u_curve(n: int = 100):
    """Flat, then a steep fall centred at lr = 10**-2.5, a minimum, then divergence: the finder's usual U."""
    x = np.linspace(-6, 0, n)  # log10(lr)
    loss = 1.5 - np.tanh(2.0 * (x + 2.5)) + 5.0 * np.clip(x + 1.0, 0, None) ** 2
    return list(10.0**x), list(loss)


def test_steepest_descent_on_u_curve():
    lrs, losses = _u_curve()
    lr = steepest_descent_lr(lrs, losses)
    assert lr is not None
    assert abs(math.log10(lr) - (-2.5)) < 0.1


def test_steepest_descent_ignores_non_finite_losses():
    lrs, losses = _u_curve()
    losses[-5:] = [float("nan")] * 5  # diverged to nan at the end
    lr = steepest_descent_lr(lrs, losses)
    assert abs(math.log10(lr) - (-2.5)) < 0.1


def test_no_descending_part_gives_none():
    x = np.linspace(-6, 0, 50)
    assert steepest_descent_lr(list(10.0**x), list(1.0 + x + 6)) is None


def test_too_few_points_gives_none():
    assert steepest_descent_lr([1e-3, 1e-2, 1e-1], [1.0, 0.5, 0.2]) is None


# ---- what no reproduction can show (issue 13's bug zoo) ----------------------------------------
def _sanity(mean, majority=None, sizes=None):
    from repro.gates.full import check_sanity
    from repro.tasks import builtin_metrics
    from tests.configs import stage_config

    majority = majority if majority is not None else {"val": 33.3, "test": 33.3}
    sizes = sizes if sizes is not None else {"val": 300, "test": 300}
    specs = builtin_metrics("classification")
    checks = check_sanity(mean, stage_config("full"), specs, "acc", None, majority, sizes)
    return {c.name: c for c in checks}


def test_accuracy_at_chance_fails_naming_misaligned_labels():
    """A record written before tasks (the majority rate and split sizes only) is judged as then."""
    checks = _sanity({"val/acc": 35.0, "test/acc": 10.0, "val/loss": 1.1, "test/loss": 2.0})
    assert not checks["test beats the majority class"].passed
    assert (
        "are the labels aligned with the inputs" in checks["test beats the majority class"].reason
    )
    # 35 vs 33.3 on 300 examples is within 2 standard errors (5.4 points) of a constant guess
    assert not checks["val beats the majority class"].passed
    ok = _sanity({"val/acc": 60.0, "test/acc": 61.0, "val/loss": 0.9, "test/loss": 0.8})
    assert ok["val beats the majority class"].passed and ok["test beats the majority class"].passed


def test_val_and_test_far_apart_or_identical_fail():
    apart = _sanity({"val/acc": 95.0, "test/acc": 1.67, "val/loss": 0.2, "test/loss": 3.0})
    assert not apart["val and test agree"].passed
    assert "a test-only label mapping" in apart["val and test agree"].reason
    same = _sanity({"val/acc": 80.0, "test/acc": 80.0, "val/loss": 0.51, "test/loss": 0.51})
    assert not same["val and test differ"].passed
    assert "the model is selected on test" in same["val and test differ"].reason
