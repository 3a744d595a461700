"""Issue 22, gates that catch meaning bugs: the shapes gate's seed, gradient-value and
log-probability checks, and the full gate's identical seeds. Each fails for its reason on a
model with the bug and passes on a healthy one."""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from repro.gates.full import check_seeds_differ
from repro.gates.shapes.judge import (
    check_confidence_stress,
    check_grad_values,
    check_logits,
    check_seed_reaches_model,
)
from repro.gates.shapes.measure import (
    _no_grad_rows,
    measure_grad_values,
    measure_output_range,
    measure_seed_effect,
    parameter_groups,
)
from repro.tasks.classification import Classification
from repro.tasks.regression import Regression
from tests.configs import shrink_toy, stage_config
from tests.test_gate_shapes import MLP, BagOfWords, check, float_batch, run, text_batch

REPO = Path(__file__).resolve().parents[1]
SEEDED = "torch.manual_seed(0)  # the bug: the model seeds itself with a constant\n"


# ---- the seed reaches the model -----------------------------------------------------------------
def _seed_the_toy_model_with_a_constant(project) -> None:
    path = project.paper_dir("toy") / "model.py"
    text = path.read_text()
    anchor = "        super().__init__()\n"
    assert anchor in text, "the toy template's model changed: update this test's bug injection"
    path.write_text(text.replace(anchor, anchor + "        " + SEEDED, 1))
    for name in [m for m in sys.modules if m == "papers" or m.startswith("papers.")]:
        del sys.modules[name]  # the next build imports the edited model


def _shapes(project, overrides=()):
    """The shapes gate on the toy paper, in-process (its verdict; no run recorded)."""
    from repro.config.compose import compose
    from repro.context import StageContext
    from repro.gates.shapes import run as shapes

    resolved = compose(project, "toy", ["data.n_examples=300", *overrides])
    return shapes(StageContext(project, "toy", resolved, Console(quiet=True)))


def test_toy_seeded_with_a_constant_fails_shapes_and_healthy_passes(project):
    c = check(_shapes(project), "seed_reaches_model")
    assert c.passed, c.reason
    assert "2 of 2 non-constant trainable tensors differ between builds under seeds 0 and 1" in (
        c.reason
    )
    assert "2 constant by design" in c.reason  # the two biases repro's init zeroes

    _seed_the_toy_model_with_a_constant(project)
    v = _shapes(project, ["seed=3"])
    c = check(v, "seed_reaches_model")
    assert not v.passed and not c.passed
    assert (
        "every one of the 2 non-constant trainable tensors is identical in builds under seeds "
        "3 and 4 (net.0.weight, net.3.weight)" in c.reason
    )
    assert "torch.manual_seed(0) in __init__?" in c.reason  # the RNG state says it was reset
    assert c.evidence["rng_state_same"] is True
    assert [x.name for x in v.checks if x.measured and not x.passed] == ["seed_reaches_model"]


def test_seed_effect_leaves_constant_and_frozen_tensors_out():
    class Model(nn.Module):
        def __init__(self, seed: int | None):
            super().__init__()
            if seed is not None:
                torch.manual_seed(seed)
            self.lin = nn.Linear(3, 4)
            nn.init.zeros_(self.lin.bias)
            self.norm = nn.LayerNorm(4)  # ones and zeros: constant by design
            self.frozen = nn.Embedding(5, 4).requires_grad_(False)  # loaded, not drawn

    torch.manual_seed(0)
    a = Model(None)
    torch.manual_seed(1)
    m = measure_seed_effect(a, Model(None))
    assert m == {
        "differ": ["lin.weight"],
        "same": [],
        "constant": ["lin.bias", "norm.weight", "norm.bias"],
    }
    m = measure_seed_effect(Model(7), Model(7))
    assert m["same"] == ["lin.weight"] and m["differ"] == []
    c = check_seed_reaches_model(m, (0, 1), rng_same=False)
    assert not c.passed and "a generator seeded with a constant" in c.reason

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

    c = check_seed_reaches_model(measure_seed_effect(Constant(), Constant()), (0, 1), True)
    assert not c.measured and "no trainable tensor is random-initialised" in c.reason


@pytest.mark.slow  # 23 s on a busy 2-core machine (BiMPM's data and gate); the toy test above
def test_bimpm_seeded_with_a_constant_fails_shapes(monkeypatch):  # covers the check in 7 s
    """Issue 22's done-when: a BiMPM that seeds itself with a constant FAILs shapes."""
    from repro.config.compose import compose
    from repro.context import StageContext
    from repro.gates.shapes import run as shapes
    from repro.project import Project

    model_module = pytest.importorskip("papers.bimpm.model")
    project = Project(REPO)
    ctx = StageContext(project, "bimpm", compose(project, "bimpm", []), Console(quiet=True))
    build = model_module.build_model

    @functools.wraps(build)  # keeps the signature and module repro reads the config type from
    def seeded(cfg, **kwargs):
        torch.manual_seed(0)  # the bug: the model's build seeds itself with a constant
        return build(cfg, **kwargs)

    monkeypatch.setattr(model_module, "build_model", seeded)
    v = shapes(ctx)
    c = check(v, "seed_reaches_model")
    assert not v.passed and not c.passed
    assert "non-constant trainable tensors is identical in builds under seeds 0 and 1" in c.reason
    assert "word.char_emb.weight" in c.reason and "torch.manual_seed(0) in __init__?" in c.reason
    assert [x.name for x in v.checks if x.measured and not x.passed] == ["seed_reaches_model"]


# ---- gradient values: autograd vs float64 central differences --------------------------------
class StopGradient(nn.Module):
    """b's parameters feed the output on two paths; one of them is detached, so they get a
    gradient (grad_flow passes) that is not the loss's derivative."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(10, 16)
        self.b = nn.Linear(10, 16)
        self.out = nn.Linear(32, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x)) + torch.tanh(self.b(x)).detach()  # the bug
        return self.out(torch.cat([h, torch.tanh(self.b(x))], -1))  # (B, 3)


def test_stop_gradient_on_one_of_two_paths_fails_grad_values_naming_the_group():
    torch.manual_seed(0)
    v = run(StopGradient())
    assert check(v, "grad_flow").passed  # every parameter gets a gradient: not the one to see it
    c = check(v, "grad_values")
    assert not c.passed
    assert "1 of 3 parameter groups get a gradient that is not the loss's derivative" in c.reason
    assert "b: autograd " in c.reason and " vs numeric " in c.reason
    assert "(the tensors: b.weight, b.bias)" in c.reason
    (bad,) = [e for e in c.evidence["groups"] if e["group"] == "b"]
    a, x = bad["autograd"][0], bad["numeric"][0]
    assert abs(a - x) > 0.1 * abs(x)  # not rounding: a path's worth of gradient is missing


@pytest.mark.parametrize("make", [MLP, BagOfWords])
def test_healthy_models_pass_grad_values_with_margin(make):
    torch.manual_seed(0)
    batch = text_batch() if make is BagOfWords else float_batch()
    v = run(make(), batch, num_classes=2 if make is BagOfWords else 3)
    c = check(v, "grad_values")
    assert c.passed, c.reason
    assert c.evidence["worst_ratio"] < 0.05  # measured 0.0002-0.003: far inside the tolerance


def test_padding_row_is_held_still_and_frozen_parameters_are_skipped(monkeypatch):
    class PadSummed(BagOfWords):  # the pad's vector reaches the output: autograd gives it 0
        def __init__(self):
            super().__init__()
            self.frozen = nn.Linear(16, 16).requires_grad_(False)

        def forward(self, ids):
            return self.out(self.frozen(self.emb(ids).sum(1)))

    torch.manual_seed(0)
    model = PadSummed()
    c = stage_config("shapes")
    m = measure_grad_values(model, text_batch(), Classification(2), c)
    assert m["screen"]["params"] == ["emb.weight", "out.weight", "out.bias"]  # not frozen.*
    assert _no_grad_rows(model) == {"emb.weight": 0}  # the pad row: autograd leaves it at 0
    assert check_grad_values(m, c.grad_check_rtol, c.grad_check_eps).passed
    m["screen"] = None  # no trainable parameter
    assert not check_grad_values(m, c.grad_check_rtol, c.grad_check_eps).measured
    # the pad row moved too: the model sums the pads' vectors, autograd gives them 0 by design
    import repro.gates.shapes.measure as measure

    monkeypatch.setattr(measure, "_no_grad_rows", lambda probe: {})
    m = measure_grad_values(model, text_batch(), Classification(2), c)
    wrong = check_grad_values(m, c.grad_check_rtol, c.grad_check_eps)
    assert not wrong.passed and "emb: autograd" in wrong.reason


def test_parameter_groups_descend_through_a_single_wrapper():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = MLP()
            self.temperature = nn.Parameter(torch.ones(()))

    assert [g for g, _ in parameter_groups(MLP())] == ["net.0", "net.3"]
    groups = parameter_groups(Wrapped())
    assert groups == [
        ("temperature", ["temperature"]),
        (
            "model",
            ["model.net.0.weight", "model.net.0.bias", "model.net.3.weight", "model.net.3.bias"],
        ),
    ]


def test_model_that_refuses_float64_is_not_measured_saying_why():
    class Float32Constant(MLP):
        def forward(self, x):
            return self.net(x) @ torch.eye(3, dtype=torch.float32)

    torch.manual_seed(0)
    c = check(run(Float32Constant()), "grad_values")
    assert not c.measured and "a float64 copy of the model does not run" in c.reason


def test_one_direction_across_a_kink_does_not_fail_the_group():
    c = stage_config("shapes")
    bent = {"group": "g", "params": ["w"], "autograd": [1.0, 0.5], "numeric": [0.7, 0.5]}
    screen = {"group": "all groups", "params": ["w"], "autograd": [1.0, 1.0], "numeric": [0, 0]}
    m = {"screen": screen, "groups": [bent], "of": 1, "judged": 1, "loss": 1.0, "atol": 1e-8}
    assert check_grad_values(m, c.grad_check_rtol, c.grad_check_eps).passed
    bent["numeric"] = [0.7, 0.2]  # wrong in every direction: a stop-gradient
    assert not check_grad_values(m, c.grad_check_rtol, c.grad_check_eps).passed


# ---- log-probabilities and the confidence stress --------------------------------------------
class LogOfSoftmax(MLP):
    def forward(self, x):
        return torch.log(torch.softmax(self.net(x), -1))  # (B, C) log-probabilities, unstable


class LogSoftmax(MLP):
    def forward(self, x):
        return F.log_softmax(self.net(x), -1)  # (B, C) log-probabilities, stable


def test_log_probabilities_fail_the_logits_check_by_name():
    torch.manual_seed(0)
    v = run(LogOfSoftmax())
    c = check(v, "logits")
    assert not c.passed
    assert "the model returns log-probabilities: return logits" in c.reason
    assert "cross-entropy applies log-softmax itself" in c.reason
    assert check(v, "init_loss").passed and check(v, "grad_flow").passed  # blind to it
    assert not check(run(LogSoftmax()), "logits").passed
    healthy = check(run(MLP()), "logits")
    assert healthy.passed and "their logsumexp is 0 +- " in healthy.reason


def test_logits_whose_rows_do_not_logsumexp_to_0_are_logits():
    # BiMPM's small-init logits: all negative, in [-0.0731, -0.0001]: logsumexp ~0.69, not 0
    out = measure_output_range(torch.tensor([[-0.0731, -0.0001], [-0.05, -0.02]]))
    assert out["logsumexp_gap"] == pytest.approx(0.6583, abs=1e-3)
    assert check_logits(out, 2, 2.4e-4).passed
    # a record written before logsumexp_gap was measured is judged as before
    old = {"min": -0.7, "max": -0.6, "row_sum_gap": 0.7, "spread": 0.01}
    assert check_logits(old, 2, 2.4e-4).passed


def test_confidence_stress_catches_an_infinite_loss_and_passes_logits():
    torch.manual_seed(0)
    c = check(run(LogOfSoftmax()), "confident_outputs")
    assert not c.passed
    assert "the output layer net.3's outputs scaled x" in c.reason and "(to span 1000" in c.reason
    assert "loss inf" in c.reason or "loss nan" in c.reason
    assert "non-finite gradients in" in c.reason and "net.3.weight" in c.reason
    for healthy in (MLP(), LogSoftmax()):
        c = check(run(healthy), "confident_outputs")
        assert c.passed and "every gradient finite" in c.reason
        assert c.evidence["range"][1] - c.evidence["range"][0] > 100  # really made confident


def test_regression_takes_no_logits_check_and_no_confidence_stress():
    from repro.gates.shapes import run_shapes

    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(10, 1)

        def forward(self, x):
            return self.lin(x).squeeze(-1)  # (B,)

    torch.manual_seed(0)
    batch = float_batch() | {"label": torch.randn(16)}
    v = run_shapes(Regressor(), batch, Regression(), stage_config("shapes"))
    names = {c.name for c in v.checks}
    assert "grad_values" in names and check(v, "grad_values").passed
    assert not names & {"logits", "confident_outputs"}


def test_check_confidence_stress_not_measured_without_an_output_layer():
    c = check_confidence_stress(None, 1000.0)
    assert not c.measured and "no layer with parameters" in c.reason
    m = {"layer": "out", "factor": 10.0, "examples": 8, "loss": math.nan, "range": [0, 1]}
    assert not check_confidence_stress(m | {"nonfinite": []}, 1000.0).passed


# ---- full: identical seeds --------------------------------------------------------------------
def test_identical_per_seed_results_are_flagged():
    a = {"test/loss": 0.1234567, "test/acc": 98.4, "val/loss": 0.2}
    c = check_seeds_differ([a, dict(a)])
    assert not c.passed
    assert "seed runs 1 and 2 of 2 give bit-for-bit identical results" in c.reason
    assert "the seed does not reach the model or the data order" in c.reason
    assert "test/loss: 0.123457, 0.123457" in c.reason
    c = check_seeds_differ([a, a | {"test/loss": 0.1234568}, a | {"test/acc": 97.0}])
    assert c.passed and "the 3 seeds' results differ" in c.reason
    assert check_seeds_differ([a]) is None  # one seed: nothing to compare


def test_full_with_two_seeds_that_reach_nothing_is_flagged(project):
    """End to end on the toy: a model seeded with a constant, a datamodule that drops the seed
    (so the data order is the same too), no dropout: `full seeds=2` trains the same run twice."""
    from repro.runner import run_stage

    shrink_toy(project, max_epochs=1)
    _seed_the_toy_model_with_a_constant(project)
    data = project.paper_dir("toy") / "data.py"
    text = data.read_text()
    assert "        super().__init__(cfg, seed)\n" in text
    data.write_text(text.replace("super().__init__(cfg, seed)", "super().__init__(cfg, 0)"))
    run = run_stage(project, "toy", "full", ["seeds=2"], force=True, console=Console(quiet=True))
    per_seed = run.data["metrics"]["per_seed"]
    assert per_seed[0] == per_seed[1]
    (c,) = [c for c in run.data["verdict"]["checks"] if c["name"] == "seeds differ"]
    assert not c["passed"] and "bit-for-bit identical" in c["reason"]
    assert run.data["status"] == "failed"


def test_ranking_scores_take_the_confidence_stress():
    """A scorer whose scores pass through log(sigmoid(.)) before the loss's own sigmoid: fine at
    init, an infinite loss once it is confident; a plain scorer stays finite."""
    from repro.gates.shapes import run_shapes
    from repro.tasks.ranking import Ranking

    class Scorer(nn.Module):
        def __init__(self, log_sigmoid: bool):
            super().__init__()
            self.lin, self.log_sigmoid = nn.Linear(10, 1), log_sigmoid

        def forward(self, x):
            s = self.lin(x).squeeze(-1)  # (B,)
            return torch.log(torch.sigmoid(s)) if self.log_sigmoid else s

    batch = float_batch() | {
        "label": torch.arange(16) % 2,
        "group": torch.arange(16) // 4,
    }
    for log_sigmoid in (False, True):
        torch.manual_seed(0)
        v = run_shapes(Scorer(log_sigmoid), batch, Ranking(), stage_config("shapes"))
        c = check(v, "confident_outputs")
        assert c.passed is not log_sigmoid, c.reason
        assert "the output layer lin's outputs scaled" in c.reason
