"""Tests for repro/gates/overfit.py: the verdict on synthetic loss curves, and the gate on real models."""

from __future__ import annotations

from rich.console import Console

from repro.gates.overfit import check_overfit, disable_dropout, train_on_batch

NAN = float("nan")


# ---- check_overfit on synthetic curves --------------------------------------------------------
def test_passes_when_loss_reaches_ratio_of_initial_and_reports_step():
    c = check_overfit(
        [2.0, 1.0, 0.1, 0.019, 0.01],
        [0.3, 0.5, 0.9, 1.0, 1.0],
        loss_ratio=0.01,
        accept_full_accuracy=False,
    )
    assert c.passed
    assert c.evidence["step"] == 3
    assert "at step 3 of 5" in c.reason
    assert "<= 0.01 x initial 2.0000" in c.reason


def test_rising_curve_diagnosed_as_lr_too_high():
    c = check_overfit([1.0, 1.3, 1.8, 2.5], [0.3] * 4)
    assert not c.passed
    assert "too high" in c.reason
    assert "1.0000 -> 2.5000" in c.reason


def test_flat_curve_diagnosed_as_barely_moved():
    c = check_overfit([1.0, 0.99, 0.98, 0.97], [0.3] * 4)
    assert not c.passed
    assert "barely moved" in c.reason


def test_slowly_falling_curve_diagnosed_as_not_far_enough():
    c = check_overfit([1.0, 0.8, 0.5, 0.3], [0.3, 0.5, 0.6, 0.8])
    assert not c.passed
    assert "not far enough" in c.reason
    assert "accuracy 80.0%" in c.reason
    assert "threshold 0.01" in c.reason


def test_nan_loss_names_the_step():
    c = check_overfit([1.0, 0.5, NAN], [0.3, 0.5, 0.6])
    assert not c.passed
    assert "became nan at step 2" in c.reason
    assert "lower the learning rate" in c.reason


def test_inf_loss_is_caught_too():
    c = check_overfit([1.0, float("inf")], [0.3, 0.5])
    assert not c.passed
    assert "became inf at step 1" in c.reason


def test_no_steps_fails():
    c = check_overfit([], [])
    assert not c.passed
    assert "no training steps" in c.reason


def test_full_accuracy_passes_when_accepted():
    c = check_overfit([1.0, 0.6, 0.4], [0.5, 1.0, 1.0], loss_ratio=0.01, accept_full_accuracy=True)
    assert c.passed
    assert c.evidence["step"] == 1
    assert "100% accuracy" in c.reason and "at step 1 of 3" in c.reason


def test_full_accuracy_does_not_pass_when_not_accepted():
    c = check_overfit([1.0, 0.6, 0.4], [0.5, 1.0, 1.0], loss_ratio=0.01, accept_full_accuracy=False)
    assert not c.passed
    assert "not far enough" in c.reason


# ---- the gate on real models ------------------------------------------------------------------
IGNORES_INPUT_MODEL = '''

class IgnoresInput(nn.Module):
    """Logits from a bias alone: it cannot tell the examples apart, so it cannot memorise them."""

    def __init__(self, num_classes):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1)  # (B, C)


def build_model(cfg, *, n_features, num_classes):
    return IgnoresInput(num_classes)
'''


def _ctx(project, overrides):
    from repro.config import compose
    from repro.context import StageContext

    return StageContext(project, "toy", compose(project, "toy", overrides), Console(quiet=True))


def test_gate_fails_for_a_model_that_ignores_its_input(project):
    from repro.gates import overfit

    model_py = project.paper_dir("toy") / "model.py"
    model_py.write_text(model_py.read_text() + IGNORES_INPUT_MODEL)
    v = overfit.run(_ctx(project, ["data.n_examples=300", "stage.overfit.max_steps=60"]))
    assert not v.passed
    assert "memorise a fixed subset" in v.reason
    assert "barely moved" in v.reason or "not far enough" in v.reason
    assert v.evidence["steps"] == 60


def test_gate_fails_through_the_runner_and_records_the_curve(project):
    from repro.runner import run_stage

    model_py = project.paper_dir("toy") / "model.py"
    model_py.write_text(model_py.read_text() + IGNORES_INPUT_MODEL)
    run = run_stage(
        project,
        "toy",
        "overfit",
        ["data.n_examples=300", "stage.overfit.max_steps=50"],
        force=True,
        console=Console(quiet=True),
    )
    assert run.record["status"] == "failed"
    assert (run.dir / "overfit_curve.png").is_file()
    assert len((run.dir / "overfit_losses.csv").read_text().splitlines()) == 51


def test_gate_passes_on_scaffolded_model(project):
    from repro.gates import overfit

    v = overfit.run(_ctx(project, ["data.n_examples=300", "optim.lr=0.01"]))
    assert v.passed, v.reason
    m = v.metrics
    assert m.final_loss <= 0.01 * m.initial_loss
    assert m.batch_size == 32
    assert m.passed_at_step == m.steps - 1  # stopped as soon as it passed


def test_train_on_batch_is_deterministic(project):
    ctx = _ctx(project, ["data.n_examples=300"])
    dm = ctx.build_datamodule()
    dm.setup("fit")
    runs = []
    for _ in range(2):
        batch = dm.fixed_batch("train", 32)
        model = ctx.build_model(dm, seed=0)
        disable_dropout(model)
        runs.append(
            train_on_batch(
                model, batch, steps=40, lr=3e-3, loss_ratio=0.0, accept_full_accuracy=False
            )
        )
    assert len(runs[0]["losses"]) == 40
    assert runs[0]["losses"] == runs[1]["losses"]
    assert runs[0]["accs"] == runs[1]["accs"]


def test_disable_dropout_zeroes_p_and_returns_old_values():
    from torch import nn

    m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.3), nn.Sequential(nn.Dropout2d(0.5)))
    old = disable_dropout(m)
    assert old == {"1": 0.3, "2.0": 0.5}
    assert m[1].p == 0.0 and m[2][0].p == 0.0
