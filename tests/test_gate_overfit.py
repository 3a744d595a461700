"""Tests for repro/gates/overfit.py: the verdict on synthetic loss curves, and the gate on real models."""

from __future__ import annotations

from rich.console import Console

from repro.gates.overfit import check_overfit, disable_dropout, train_on_batch
from repro.tasks.classification import Classification


def dm_task(batch):
    """The classification task of a batch's labels (its classes: the largest label + 1)."""
    return Classification(int(batch["label"].max()) + 1)


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
    from repro.config.compose import compose
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
    assert run.record.status == "failed"
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
                model,
                dm_task(batch),
                batch,
                steps=40,
                lr=3e-3,
                loss_ratio=0.0,
                accept_full_accuracy=False,
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


# ---- issue 13: divergence, probability outputs, the partial curve -----------------------------
def _stops(**kw):
    from repro.gates.overfit import Stops
    from tests.configs import stage_config

    return Stops.of(stage_config("overfit", **kw))


# BiMPM's fixed subset, measured: at its paper LR (1e-3) one spike then down; at LR 0.1 (x100)
BIMPM_LR_1E3 = [0.701, 1.219, 0.733, 0.663, 0.78, 0.671, 0.553, 0.555, 0.574, 0.533, 0.459, 0.397]
BIMPM_LR_0_1 = [0.70, 7.0, 7.51, 2.7, 6.24, 8.91, 7.86, 4.11, 2.47, 4.29, 1.3, 3.41, 5.09]


def test_diverging_curve_fails_saying_lower_the_learning_rate_with_the_numbers():
    from repro.gates.overfit import diverging

    c = check_overfit(BIMPM_LR_0_1, [0.5] * 13, stops=_stops(), lr=0.1)
    assert not c.passed
    assert c.reason.startswith(
        "diverged: the median loss of steps 0-9 is 5.265, above 3 x the initial 0.7000 "
        "(max 8.91); training stopped at step 9: lower the learning rate (lr 0.1)"
    )
    assert diverging(BIMPM_LR_0_1[:10], 3.0, 10)
    assert not any(diverging(BIMPM_LR_1E3[:i], 3.0, 10) for i in range(len(BIMPM_LR_1E3) + 1))
    healthy = check_overfit(BIMPM_LR_1E3 + [0.005], [0.5] * 12 + [1.0], stops=_stops())
    assert healthy.passed, healthy.reason  # its 1.7x spike at step 1 is not a divergence


def test_non_finite_loss_says_diverged():
    c = check_overfit([1.0, 5.0, NAN], [0.3] * 3, stops=_stops(), lr=0.3)
    assert c.reason.startswith("diverged: loss became nan at step 2 (from 1.0000): lower the ")
    assert "learning rate (lr 0.3)" in c.reason


def test_loss_that_never_goes_below_its_start_is_stalled():
    losses = [0.7] + [0.9, 1.4, 1.1, 0.8] * 30  # like BiMPM at LR 0.1 after its first steps
    c = check_overfit(losses, [0.59] * len(losses), stops=_stops(), lr=0.1)
    assert not c.passed and "diverged" not in c.reason
    assert "no loss in the last 100 steps went below the initial 0.7000" in c.reason
    assert "learning rate (lr 0.1) is too high" in c.reason


def test_probability_outputs_fail_naming_the_softmax_and_the_floor():
    probs = {"min": 0.01, "max": 0.98, "row_sum_gap": 3e-8}
    losses = [1.0986, 0.8, 0.62, 0.58] + [0.5801] * 20
    c = check_overfit(losses, [1.0] * 24, stops=_stops(), num_classes=3, outputs=probs)
    assert not c.passed
    assert "the model outputs probabilities" in c.reason and "drop the softmax" in c.reason
    assert "cannot go below 0.5514 on probabilities (C = 3)" in c.reason
    assert "more capacity" not in c.reason


def test_bounded_outputs_or_a_loss_on_the_floor_are_diagnosed_too():
    sigmoid = {"min": 0.0001, "max": 0.9999, "row_sum_gap": 0.7}  # in [0, 1], rows not 1
    losses = [1.0986, 0.8, 0.62] + [0.5600] * 20
    for outputs in (sigmoid, None):  # None: only the loss is known, sitting on the floor
        c = check_overfit(
            losses, [1.0] * 23, 0.01, False, stops=_stops(), num_classes=3, outputs=outputs
        )
        assert not c.passed
        assert "stalled at the cross-entropy floor of outputs in [0, 1]" in c.reason
        assert "-ln(e/(e+C-1)) = 0.5514 for C = 3" in c.reason
    assert "the best loss 0.5600 sits on it" in c.reason
    c = check_overfit([1.0986, 0.8, 0.3], [1.0] * 3, 0.01, False, stops=_stops(), num_classes=3)
    assert "not far enough" in c.reason  # below the floor: logits, an ordinary slow curve


def _mlp(softmax: bool = False):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))

        def forward(self, x):
            return self.net(x).softmax(-1) if softmax else self.net(x)

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batch = {
        "x": torch.randn(32, 10, generator=g),
        "label": torch.randint(0, 3, (32,), generator=g),
    }
    return Net(), batch


def test_train_on_batch_stops_when_the_loss_diverges():
    from repro.gates.overfit import Curve

    model, batch = _mlp()
    curve = Curve()
    out = train_on_batch(
        model, dm_task(batch), batch, 500, 3.0, 0.01, False, stops=_stops(), curve=curve
    )
    assert out["stopped"] in ("diverged", "non-finite"), out["losses"]
    assert len(out["losses"]) <= 20  # not 500 steps
    c = check_overfit(out["losses"], out["accs"], stops=_stops(), lr=3.0)
    assert c.reason.startswith("diverged: ") and "lower the learning rate (lr 3)" in c.reason


def test_train_on_batch_stops_at_once_on_probability_outputs():
    from repro.gates.overfit import Curve

    model, batch = _mlp(softmax=True)
    curve = Curve()
    out = train_on_batch(
        model, dm_task(batch), batch, 500, 3e-3, 0.01, False, stops=_stops(), curve=curve
    )
    assert out["stopped"] == "probabilities" and len(out["losses"]) == 1
    assert curve.num_classes == 3 and curve.outputs["row_sum_gap"] < 1e-6
    model, batch = _mlp()  # the same model returning logits trains on
    out = train_on_batch(model, dm_task(batch), batch, 5, 3e-3, 0.01, False, stops=_stops())
    assert out["stopped"] is None and len(out["losses"]) == 5


DOUBLE_SOFTMAX_MODEL = """

class DoubleSoftmax(Classifier):
    def forward(self, x):
        return self.net(x).softmax(-1)  # probabilities: cross-entropy applies log-softmax again


def build_model(cfg, *, n_features, num_classes):
    return DoubleSoftmax(ModelConfig(**cfg), n_features, num_classes)
"""


def test_gate_names_probability_outputs(project):
    from repro.gates import overfit

    model_py = project.paper_dir("toy") / "model.py"
    model_py.write_text(model_py.read_text() + DOUBLE_SOFTMAX_MODEL)
    v = overfit.run(_ctx(project, ["data.n_examples=300"]))
    assert not v.passed
    assert "the model outputs probabilities" in v.reason and "drop the softmax" in v.reason
    assert "0.5514" in v.reason
    assert v.evidence["stopped"] == "probabilities" and v.evidence["steps"] == 1


INTERRUPTED_MODEL = """

class CtrlCAtStep5(Classifier):
    calls = 0

    def forward(self, x):
        CtrlCAtStep5.calls += 1
        if CtrlCAtStep5.calls == 6:
            raise KeyboardInterrupt  # as Ctrl-C would, in the middle of training
        return self.net(x)


def build_model(cfg, *, n_features, num_classes):
    return CtrlCAtStep5(ModelConfig(**cfg), n_features, num_classes)
"""


def test_interrupted_overfit_keeps_its_partial_curve(project):
    import json

    import pytest

    from repro.runner import run_stage

    model_py = project.paper_dir("toy") / "model.py"
    model_py.write_text(model_py.read_text() + INTERRUPTED_MODEL)
    with pytest.raises(KeyboardInterrupt):
        run_stage(
            project,
            "toy",
            "overfit",
            ["data.n_examples=300", "optim.lr=1e-4"],
            force=True,
            console=Console(quiet=True),
        )
    (run_dir,) = (project.runs_dir / "toy" / "overfit").iterdir()
    assert json.loads((run_dir / "record.json").read_text())["status"] == "interrupted"
    rows = (run_dir / "overfit_losses.csv").read_text().splitlines()
    assert rows[0] == "step,loss,acc" and [r.split(",")[0] for r in rows[1:]] == list("01234")
    assert (run_dir / "overfit_curve.png").is_file()


def test_trained_model_is_checked_alone_vs_batch(project):
    """A padding bug the zero-bias init hides (ReLU before an unmasked max: the pads give
    ReLU(0) = 0, which a max over ReLUs never notices) shows once training moved the biases."""
    from types import SimpleNamespace

    import torch

    from repro.gates.overfit import Curve, _trained_model_checks
    from repro.gates.shapes import check_alone_vs_batch, measure_alone_vs_batch
    from repro.train.init import apply_init
    from tests.configs import stage_config
    from tests.test_gate_shapes import MaxPoolText, text_batch

    shapes = stage_config("shapes")
    ctx = SimpleNamespace(cfg=SimpleNamespace(stage=SimpleNamespace(shapes=shapes)))
    for masked in (True, False):
        torch.manual_seed(0)
        model, batch = MaxPoolText(masked=masked, relu=True), text_batch()
        apply_init(model)
        at_init = measure_alone_vs_batch(model, batch, shapes.alone_examples)
        assert check_alone_vs_batch(at_init, shapes.roundoff_eps).passed  # hidden at init
        curve = Curve()
        train_on_batch(model, dm_task(batch), batch, 20, 1e-2, 0.0, False, curve=curve)
        (c,) = _trained_model_checks(ctx, model, batch, curve)
        assert c.name == "alone_vs_batch after training"
        assert c.passed == masked, c.reason
    assert "padding is not masked" in c.reason


def test_gate_passes_with_the_trained_model_check(project):
    from repro.gates import overfit

    v = overfit.run(_ctx(project, ["data.n_examples=300", "optim.lr=0.01"]))
    assert v.passed, v.reason
    assert [c.name for c in v.checks] == [
        "memorise a fixed subset",
        "alone_vs_batch after training",
    ]
    assert v.evidence["stopped"] == "passed"
