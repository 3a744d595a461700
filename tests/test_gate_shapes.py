"""Tests for repro/gates/shapes.py: each check passes on a good model and fails for its reason."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repro.errors import ConfigError
from repro.gates.shapes import (
    check_batch_independence,
    check_dummy_batch,
    check_finite,
    check_grad_flow,
    check_init_loss,
    check_logits,
    check_output_shape,
    check_param_count,
    check_zero_input,
    make_dummy_batch,
    probability_floor,
    run_shapes,
    trim_padding,
    zeroed_batch,
)
from repro.tasks.base import InitLoss
from repro.tasks.classification import Classification
from tests.configs import stage_config


def ln_c(c: int) -> InitLoss:
    """What a C-way classifier expects at init (its task's InitLoss)."""
    return Classification(c).init_loss({})


C = 3  # classes of the float-input models


# ---- models -----------------------------------------------------------------------------------
class MLP(nn.Module):
    """A good model on float inputs: x (B, 10) -> logits (B, C)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, C))

    def forward(self, x):
        return self.net(x) * self.scale  # (B, C)


class BagOfWords(nn.Module):
    """A good text model: ids (B, T) with 0 = pad -> mean of non-pad embeddings -> logits (B, 2)."""

    def __init__(self, vocab: int = 50):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16, padding_idx=0)
        self.out = nn.Linear(16, 2)

    def forward(self, ids):
        mask = (ids != 0).float().unsqueeze(-1)  # (B, T, 1)
        h = (self.emb(ids) * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, 16)
        return self.out(h)  # (B, 2)


class Unused(MLP):
    def __init__(self):
        super().__init__()
        self.never_called = nn.Linear(4, 4)


class BatchMean(MLP):
    def forward(self, x):
        h = self.net[1](self.net[0](x))  # (B, 32)
        h = h - h.mean(0, keepdim=True)  # mixes the examples
        return self.net[3](h)


class BatchStats(MLP):
    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(10, track_running_stats=False)  # batch statistics even in eval

    def forward(self, x):
        return self.net(self.norm(x))


class IgnoresInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(C))

    def forward(self, x):
        return self.bias.expand(x.shape[0], C)  # (B, C)


class Batch32(MLP):
    def forward(self, x):
        return self.net(x.reshape(32, -1))  # hard-codes the batch size


class NaNs(MLP):
    def forward(self, x):
        return self.net(x) * torch.tensor(float("nan"))


class WrongShape(MLP):
    def forward(self, x):
        return self.net(x)[:, :2]  # (B, 2) instead of (B, 3)


class Crashes(MLP):
    def forward(self, x):
        return self.net(x.t())  # (10, B) into Linear(10, ...)


# ---- batches ----------------------------------------------------------------------------------
def float_batch(size: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(size, 10, generator=g),
        "label": torch.randint(0, C, (size,), generator=g),
    }


def text_batch(size: int = 8, length: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 50, (size, length), generator=g)
    lengths = torch.randint(3, length + 1, (size,), generator=g)
    ids[torch.arange(length) >= lengths[:, None]] = 0  # pad the tail of each row
    ids[0, 1] = 1  # an unknown word
    return {"ids": ids, "label": torch.randint(0, 2, (size,), generator=g)}


def run(
    model: nn.Module, batch: dict | None = None, num_classes: int = C, expected_params=None, **cfg
):
    torch.manual_seed(0)
    batch = float_batch() if batch is None else batch
    task = Classification(num_classes)
    return run_shapes(model, batch, task, stage_config("shapes", **cfg), expected_params)


def check(verdict, name: str):
    (found,) = [c for c in verdict.checks if c.name == name]
    return found


# ---- the gate on good models ------------------------------------------------------------------
def test_good_mlp_passes_every_check():
    torch.manual_seed(0)
    v = run(MLP())
    assert v.stage == "shapes"
    assert v.passed, v.reason
    names = {c.name for c in v.checks}
    assert names == {
        "param_count",
        "output_shape",
        "init_loss",
        "grad_flow",
        "grad_values",
        "confident_outputs",
        "batch_independence",
        "zero_input",
        "dummy_batch",
        "finite",
        "logits",
        "eval_deterministic",
        "alone_vs_batch",
        "frozen_params",
    }
    ev = v.evidence
    assert ev["output_shape"] == [16, C]
    m = v.metrics  # the gate's typed summary: what the record keeps as `metrics`
    assert m.ln_c == pytest.approx(math.log(C))
    assert m.trainable_params == m.total_params == 10 * 32 + 32 + 32 * C + C
    assert m.init_loss == pytest.approx(check(v, "init_loss").evidence["loss"])
    assert ev["no_grad_params"] == []
    assert ev["max_leak"] == 0.0
    assert ev["zero_input_change"] > 0 and math.isfinite(ev["zero_input_loss"])
    assert ev["dummy_output_shape"] == [3, C]
    assert f"ln({C}) = {math.log(C):.4g}" in v.reason  # the reason carries the numbers


def test_good_text_model_passes_and_sees_the_embedding():
    torch.manual_seed(0)
    v = run(BagOfWords(), text_batch(), num_classes=2)
    assert v.passed, v.reason
    assert v.evidence["independence_inputs"] == ["emb output"]
    assert (
        "max |d loss_i / d input_j| (j != i) = 0 <= 1e-10" in check(v, "batch_independence").reason
    )


def test_gate_restores_modes_requires_grad_and_grads():
    torch.manual_seed(0)
    model = MLP()
    model.train()
    model.net[2].eval()
    model.net[0].bias.requires_grad_(False)
    run(model)
    assert model.training and model.net[0].training and not model.net[2].training
    assert not model.net[0].bias.requires_grad and model.net[0].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_unknown_cfg_key_is_a_config_error(project):
    from repro.config.compose import compose

    with pytest.raises(ConfigError, match=r"stage\.shapes\.leak_tol .*unknown key.*'leak_atol'"):
        compose(project, "toy", ["+stage.shapes.leak_tol=1.0"])


# ---- each check fails for its own reason ------------------------------------------------------
def test_unused_parameter_fails_grad_flow_naming_it():
    v = run(Unused())
    c = check(v, "grad_flow")
    assert not c.passed and not v.passed
    assert "2 of 6 parameters get no gradient: never_called.weight, never_called.bias" in c.reason
    assert v.evidence["no_grad_params"] == ["never_called.weight", "never_called.bias"]


def test_no_parameter_used_fails_grad_flow_without_raising():
    class UsesNone(MLP):
        def forward(self, x):
            return x[:, :C]  # (B, C), no parameter on the path

    c = check(run(UsesNone()), "grad_flow")
    assert not c.passed and c.reason.startswith("4 of 4 parameters get no gradient")
    c = check(run(MLP().requires_grad_(False)), "grad_flow")
    assert not c.passed and c.reason == "the model has no trainable parameters"


@pytest.mark.parametrize("model_cls", [BatchMean, BatchStats])
def test_mixing_examples_fails_batch_independence(model_cls):
    v = run(model_cls())
    c = check(v, "batch_independence")
    assert not c.passed
    assert "examples in the batch mix" in c.reason
    assert v.evidence["max_leak"] > 1e-6


class BagOfWordsBatchMean(BagOfWords):
    def forward(self, ids):
        h = self.emb(ids).mean(1)  # (B, 16)
        return self.out(h - h.mean(0))  # mixes the examples


class BagOfWordsPositions(BagOfWords):
    def __init__(self):
        super().__init__()
        self.pos = nn.Embedding(12, 16)

    def forward(self, ids):
        h = self.emb(ids) + self.pos(torch.arange(ids.shape[1]))  # (B, T, 16)
        return self.out(h.mean(1))  # (B, 2)


def test_mixing_examples_after_an_embedding_fails_batch_independence():
    v = run(BagOfWordsBatchMean(), text_batch(), num_classes=2)
    assert "examples in the batch mix" in check(v, "batch_independence").reason


def test_position_embedding_is_not_taken_for_an_input():
    v = run(BagOfWordsPositions(), text_batch(size=12), num_classes=2)  # T == B: a trap
    assert check(v, "batch_independence").passed, v.reason
    assert v.evidence["independence_inputs"] == ["emb output"]
    assert v.evidence["independence_ignored"] == ["pos (output (12, 16))"]


def test_frozen_model_on_ids_cannot_be_seen():
    model = BagOfWords().requires_grad_(False)
    c = check(run(model, text_batch(), num_classes=2), "batch_independence")
    assert c.passed  # the embedding output is still a representation we differentiate against
    c = check(run(IgnoresInput().requires_grad_(False)), "batch_independence")
    assert not c.passed and "could not see the input" in c.reason


def test_batchnorm_with_running_stats_is_independent_in_eval():
    class WithBN(MLP):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm1d(10)

        def forward(self, x):
            return self.net(self.norm(x))

    assert check(run(WithBN()), "batch_independence").passed


def test_scaled_logits_fail_init_loss():
    c = check(run(MLP(scale=50.0)), "init_loss")
    assert not c.passed
    assert f"vs ln({C}) = 1.099" in c.reason and "> tol 0.5493 (0.5 x ln(3))" in c.reason


def test_model_ignoring_its_input_fails_zero_input():
    v = run(IgnoresInput())
    c = check(v, "zero_input")
    assert not c.passed
    assert "= 0 <= 1e-06: the output ignores the input" in c.reason
    assert "could not see the input" in check(v, "batch_independence").reason


def test_hard_coded_batch_size_fails_dummy_batch():
    v = run(Batch32(), float_batch(size=32))
    assert check(v, "output_shape").passed
    c = check(v, "dummy_batch")
    assert not c.passed
    assert c.reason.startswith("dummy batch of 3 raised RuntimeError: shape '[32, -1]' is invalid")


def test_nan_model_fails_finite_naming_what():
    v = run(NaNs())
    c = check(v, "finite")
    assert not c.passed
    assert "non-finite values in logits (48), loss at init (1), dummy logits (9)" == c.reason
    assert not check(v, "init_loss").passed
    assert "non-finite gradient" in check(v, "grad_flow").reason
    assert "non-finite input gradients" in check(v, "batch_independence").reason


def test_expected_params_mismatch_fails_param_count():
    v = run(MLP(), expected_params=1000)
    c = check(v, "param_count")
    assert not c.passed
    assert (
        "451 trainable / 451 total parameters vs the paper's 1,000: off by 54.9% > 5.0%" == c.reason
    )
    assert check(run(MLP(), expected_params=460), "param_count").passed


def test_wrong_output_shape_fails_and_stops():
    v = run(WrongShape())
    assert not v.passed
    assert "logits shape (16, 2) != expected (B, C) = (16, 3)" in v.reason
    assert "grad_flow" not in {c.name for c in v.checks}


def test_model_that_raises_fails_forward_with_the_error():
    v = run(Crashes())
    c = check(v, "forward")
    assert not c.passed and c.reason.startswith("the model raised RuntimeError")
    assert "Traceback" in v.evidence["forward_traceback"]


# ---- the judgements on synthetic numbers ------------------------------------------------------
def test_check_init_loss_boundaries():
    ln2 = math.log(2)
    assert check_init_loss(ln2 * 1.2, ln_c(2), 0.25).passed
    assert not check_init_loss(ln2 * 0.7, ln_c(2), 0.25).passed
    assert not check_init_loss(float("nan"), ln_c(2), 0.25).passed
    c = check_init_loss(0.3, None, 0.25)  # a task that states no loss at init
    assert not c.measured and not c.passed and c.reason.startswith("not measured")


def test_check_grad_flow_lists_first_few_and_count():
    grads = {f"p{i}": 0.0 for i in range(8)} | {"ok": 1.0}
    c = check_grad_flow(grads, atol=0.0)
    assert not c.passed
    assert "8 of 9 parameters get no gradient: p0, p1, p2, p3, p4 ... and 3 more" in c.reason
    assert check_grad_flow({"a": 1e-3}, atol=0.0).passed
    assert not check_grad_flow({"a": 1e-3}, atol=1e-2).passed
    assert not check_grad_flow({}, atol=0.0).passed


def test_check_batch_independence_numbers():
    assert check_batch_independence(0.0, 1e-10, max_self=0.5).passed
    assert not check_batch_independence(1e-3, 1e-10, max_self=0.5).passed
    assert "could not see the input" in check_batch_independence(0.0, 1e-10, max_self=0.0).reason
    assert not check_batch_independence(float("nan"), 1e-10).passed
    assert "non-finite" in check_batch_independence(0.0, 1e-10, max_self=float("nan")).reason


def test_check_zero_input_dummy_shape_finite_and_count():
    assert check_zero_input(0.5, 1e-6).passed and not check_zero_input(1e-7, 1e-6).passed
    assert check_dummy_batch((3, 2), 3).passed
    wrong = "logits shape (3, 1) != expected (B, C) = (3, 2)"
    assert wrong in check_dummy_batch((3, 1), 3, wrong).reason
    assert "2 non-finite outputs" in check_dummy_batch((3, 2), 3, nonfinite=2).reason
    assert check_output_shape((4, 2), None, "classification").passed
    assert not check_output_shape((4,), "output shape (4,)", "classification").passed
    assert check_finite({"logits": 0}).passed and not check_finite({"logits": 1}).passed
    assert check_param_count(100, 120, None).passed
    assert check_param_count(104, 120, 100, 0.05).passed


# ---- the batches the gate makes ---------------------------------------------------------------
def test_zeroed_batch_keeps_pad_and_maps_ids_to_unk():
    b = text_batch() | {"x": torch.randn(8, 3)}
    z = zeroed_batch(b)
    assert torch.equal(z["ids"] == 0, b["ids"] == 0)
    assert set(z["ids"].unique().tolist()) == {0, 1}
    assert torch.count_nonzero(z["x"]) == 0
    assert torch.equal(z["label"], b["label"])


def test_dummy_batch_follows_the_templates():
    b = text_batch() | {"x": torch.randn(8, 3), "lengths": torch.arange(8)}
    d = make_dummy_batch(b, size=3)
    assert set(d) == set(b)
    assert {k: (v.dtype, v.shape[1:]) for k, v in d.items()} == {
        k: (v.dtype, v.shape[1:]) for k, v in b.items()
    }
    assert d["ids"].shape[0] == 3
    assert torch.equal(d["ids"] == 0, b["ids"][:3] == 0)  # same padding as rows 0..2
    nonpad = d["ids"][d["ids"] != 0]
    assert nonpad.min() >= 2 and nonpad.max() <= b["ids"].max()
    assert torch.equal(d["lengths"], b["lengths"][:3])
    assert torch.equal(d["label"], b["label"][:3])  # the targets are copied from the templates


# ---- through the runner: the record keeps the gate's typed metrics -----------------------------
def test_every_shapes_record_has_its_metrics(project):
    import json

    from rich.console import Console

    from repro.gates.metrics import ShapesMetrics, load_metrics
    from repro.runner import run_stage

    run = run_stage(project, "toy", "shapes", ["data.n_examples=300"], console=Console(quiet=True))
    record = json.loads((run.dir / "record.json").read_text())
    m = load_metrics(ShapesMetrics, run.record)
    assert m is not None, record["metrics"]
    assert m.trainable_params == m.total_params == 16 * 64 + 64 + 64 * 3 + 3  # the toy MLP
    assert m.init_loss == pytest.approx(check_of(record, "init_loss")["evidence"]["loss"])
    assert m.ln_c == pytest.approx(math.log(3))


def check_of(record: dict, name: str) -> dict:
    (found,) = [c for c in record["verdict"]["checks"] if c["name"] == name]
    return found


def test_the_runner_has_no_per_stage_branches():
    import ast
    from pathlib import Path

    import repro.runner

    tree = ast.parse(Path(repro.runner.__file__).read_text())
    stage_literals = {"data", "shapes", "overfit", "full", "experiments"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            consts = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)}
            assert not consts & stage_literals, ast.unparse(node)


# ---- issue 13: what the bug zoo got through ---------------------------------------------------
# Each bug in its smallest form beside the correct model: the check fails for its own reason on
# the bug and passes on the correct one.
class LSTMText(nn.Module):
    """ids (B, T), 0 = pad -> final LSTM state -> logits (B, 2). masked: the state at each row's
    length (packed); not masked: the state after the last column, padding included."""

    def __init__(self, masked: bool = True):
        super().__init__()
        self.masked = masked
        self.emb = nn.Embedding(50, 8, padding_idx=0)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.out = nn.Linear(8, 2)

    def forward(self, ids):
        x = self.emb(ids)  # (B, T, 8)
        if self.masked:
            lengths = (ids != 0).sum(1).clamp(min=1)  # (B,)
            x = nn.utils.rnn.pack_padded_sequence(x, lengths, True, enforce_sorted=False)
        _, (h, _) = self.lstm(x)  # h (1, B, 8)
        return self.out(h[0])  # (B, 2)


class MaxPoolText(nn.Module):
    """ids (B, T) -> Linear per token -> max over time -> logits (B, 2); masked: pads get -inf."""

    def __init__(self, masked: bool = True, relu: bool = False):
        super().__init__()
        self.masked, self.relu = masked, relu
        self.emb = nn.Embedding(50, 8, padding_idx=0)
        self.proj = nn.Linear(8, 16)
        self.out = nn.Linear(16, 2)

    def forward(self, ids):
        h = self.proj(self.emb(ids))  # (B, T, 16)
        h = torch.relu(h) if self.relu else h
        if self.masked:
            h = h.masked_fill((ids == 0).unsqueeze(-1), float("-inf"))
        return self.out(h.max(1).values)  # (B, 2)


class DetachedBatchMean(MLP):
    """Mixes examples without a gradient path: the gradient-leak check cannot see it."""

    def forward(self, x):
        h = self.net[1](self.net[0](x))  # (B, 32)
        return self.net[3](h - h.detach().mean(0))  # (B, C)


class DropoutAtEval(MLP):
    def forward(self, x):
        h = self.net[1](self.net[0](x))  # (B, 32)
        return self.net[3](F.dropout(h, 0.1, training=True))  # on whatever the mode


class DoubleSoftmax(MLP):
    def forward(self, x):
        return self.net(x).softmax(-1)  # probabilities where cross-entropy expects logits


@pytest.mark.parametrize("model_cls", [LSTMText, MaxPoolText])
def test_unmasked_padding_fails_alone_vs_batch_naming_the_cause(model_cls):
    torch.manual_seed(0)
    good = run(model_cls(masked=True), text_batch(), num_classes=2)
    assert check(good, "alone_vs_batch").passed, good.reason
    torch.manual_seed(0)
    v = run(model_cls(masked=False), text_batch(), num_classes=2)
    c = check(v, "alone_vs_batch")
    assert not c.passed and not v.passed
    assert "trimmed to its own length (ids " in c.reason
    assert "depends on its batch-mates' padding, so padding is not masked" in c.reason
    assert c.evidence["pad_gap"] > 1e-6 and c.evidence["dtype"] == "float64"
    assert check(v, "batch_independence").passed  # the gradient-leak check cannot see a pad


def test_alone_vs_batch_passes_on_padded_text_and_says_what_it_measured():
    torch.manual_seed(0)
    c = check(run(BagOfWords(), text_batch(), num_classes=2), "alone_vs_batch")
    assert c.passed
    assert c.reason.startswith("8 examples alone, trimmed to their own length (8 of them padded")
    assert c.evidence["gap"] < 1e-12  # float64: rounding is ~1e-16


def test_mixing_examples_without_a_gradient_fails_alone_vs_batch():
    v = run(DetachedBatchMean())
    assert check(v, "batch_independence").passed  # detach() hides it from the gradient check
    c = check(v, "alone_vs_batch")
    assert not c.passed
    assert "logits alone (a batch of 1) differ from inside the batch by" in c.reason
    assert "depends on its batch-mates" in c.reason


def test_float_model_alone_equals_in_batch_and_padding_is_said_untested():
    c = check(run(MLP()), "alone_vs_batch")
    assert c.passed and c.reason.endswith(": padding was not tested")
    assert c.evidence["padded_rows"] == 0


def test_model_that_needs_the_batch_length_is_not_failed_by_trimming():
    class FixedLength(BagOfWords):
        def forward(self, ids):
            return self.out(self.emb(ids).reshape(ids.shape[0], 12, 16).mean(1))  # T fixed at 12

    c = check(run(FixedLength(), text_batch(), num_classes=2), "alone_vs_batch")
    assert c.passed
    assert "trimming raised RuntimeError" in c.reason and "padding was not tested" in c.reason


def test_model_with_float32_constants_is_measured_in_float32_and_says_so():
    class Float32Inside(MLP):
        def forward(self, x):
            return self.net(x) @ torch.eye(C)  # float32 constant: a float64 copy fails

    c = check(run(Float32Inside()), "alone_vs_batch")
    assert c.passed
    assert (
        "float64 copy failed (RuntimeError" in c.reason and "measured in torch.float32" in c.reason
    )


def test_model_that_refuses_float64_is_measured_in_its_own_precision():
    class NoDouble(MLP):
        def double(self):
            raise TypeError("this model stays in float32")

    c = check(run(NoDouble()), "alone_vs_batch")
    assert c.passed
    assert "float64 copy failed (TypeError: this model stays in float32)" in c.reason
    assert "measured in torch.float32" in c.reason


def test_trim_padding_cuts_words_and_characters_together():
    one = {
        "words": torch.tensor([[5, 7, 0, 0]]),  # (1, T=4): 2 words
        "chars": torch.tensor([[[3, 4, 0], [2, 0, 0], [0, 0, 0], [0, 0, 0]]]),  # (1, T, K=3)
        "x": torch.randn(1, 4),  # float: kept
        "lengths": torch.tensor([2]),  # per-example scalar: kept
        "label": torch.tensor([1]),
    }
    t = trim_padding(one)
    assert t["words"].tolist() == [[5, 7]]
    assert t["chars"].tolist() == [[[3, 4], [2, 0]]]
    assert t["x"].shape == (1, 4) and t["lengths"].tolist() == [2]
    empty = trim_padding({"ids": torch.zeros(1, 5, dtype=torch.long)})
    assert empty["ids"].shape == (1, 1)  # an all-pad row keeps one position


def test_dropout_at_eval_fails_eval_deterministic():
    v = run(DropoutAtEval())
    c = check(v, "eval_deterministic")
    assert not c.passed
    assert "two eval-mode forwards of the same batch differ by" in c.reason
    assert "something random stays on in eval mode" in c.reason
    assert "alone_vs_batch" not in {c.name for c in v.checks}  # not judged: eval is random
    assert v.evidence["alone_vs_batch"].startswith("not judged")
    assert check(run(MLP()), "eval_deterministic").reason.startswith(
        "two eval-mode forwards of the same batch differ by 0 <= "
    )


def test_frozen_layer_fails_naming_it_unless_declared():
    model = MLP()
    model.net[0].requires_grad_(False)
    c = check(run(model), "frozen_params")
    assert not c.passed
    assert c.reason.startswith(
        "2 frozen parameters (requires_grad False: never trained) that are not embeddings: "
        "net.0.weight (Linear, 320), net.0.bias (Linear, 32); if the paper fixes them, list them "
        "in stage.shapes.frozen_ok"
    )
    assert check(run(model, frozen_ok=["net.0.*"]), "frozen_params").passed
    assert check(run(MLP()), "frozen_params").reason == "no frozen parameters"


def test_frozen_embedding_passes_and_is_named():
    model = BagOfWords()
    model.emb.requires_grad_(False)
    c = check(run(model, text_batch(), num_classes=2), "frozen_params")
    assert c.passed
    assert c.reason.startswith("frozen, never trained: emb.weight (Embedding, 800); intended only")
    assert "from_pretrained freezes unless freeze=False" in c.reason


def test_probability_outputs_fail_the_logits_check_with_the_floor():
    v = run(DoubleSoftmax())
    c = check(v, "logits")
    assert not c.passed
    assert "each row sums to 1" in c.reason and "drop the softmax" in c.reason
    assert "cross-entropy floor of probabilities, 0.5514" in c.reason  # -ln(e/(e+2)), C = 3
    assert check(v, "init_loss").passed  # the init loss alone cannot see it (~ln C)
    assert check(run(MLP()), "logits").passed


def test_outputs_inside_0_1_that_do_not_sum_to_1_are_not_taken_for_probabilities():
    class SmallPositive(MLP):  # like BiMPM's small-init logits, but all positive
        def forward(self, x):
            return 0.2 + 0.01 * torch.tanh(self.net(x))  # (B, C) in [0.19, 0.21]

    assert check(run(SmallPositive()), "logits").passed
    assert check_logits({"min": 0.0, "max": 1.0, "row_sum_gap": 0.0, "spread": 0.4}, 3, 1e-4).reason
    assert probability_floor(2) == pytest.approx(0.3133, abs=1e-4)


def test_too_confident_init_loss_says_why_and_what_to_change():
    c = check(run(MLP(scale=50.0)), "init_loss")
    assert "the initial outputs are large (each row's logits spread by" in c.reason
    assert "start the output layer small" in c.reason
    c = check_init_loss(2.13, ln_c(3), 0.5, spread=1.4, output_layer="net.3")
    assert "repro's init started the output layer net.3 small (Xavier x 0.1)" in c.reason
    assert "un-normalised inputs?" in c.reason and "init_nonlinearity = 'output'" in c.reason
    c = check_init_loss(0.05, ln_c(3), 0.5)
    assert "below ln(3), the model knows the labels before training" in c.reason


def _toy_batch_and_model(project, overrides=()):
    from rich.console import Console

    from repro.config.compose import compose
    from repro.context import StageContext

    ctx = StageContext(
        project, "toy", compose(project, "toy", ["data.n_examples=300", *overrides]), Console()
    )
    dm = ctx.build_datamodule()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    return ctx, dm, batch, ctx.build_model(dm)


def test_standardised_toy_inputs_pass_init_loss_with_repros_init(project):
    """Issue 13: standardising the toy's inputs (a correct change) failed shapes at 2.13 vs ln 3
    when the output layer started at a hidden layer's scale."""
    ctx, dm, batch, model = _toy_batch_and_model(project)
    x = torch.tensor([ex["x"] for ex in dm.splits["train"]])  # the training split
    batch = batch | {"x": (batch["x"] - x.mean(0)) / x.std(0)}  # standardised with its statistics
    init = ctx.model_info.init
    assert init["net.3.weight"].startswith("output: xavier_uniform_(gain=0.1)")
    v = run_shapes(model, batch, dm.task, stage_config("shapes"), None, init)
    assert v.passed, v.reason
    assert abs(v.metrics.init_loss - math.log(3)) < 0.05
    assert check(v, "grad_flow").passed  # small, not zero: every parameter gets a gradient
    # the head at a hidden layer's scale (gain 1): the failure the issue met, now explained
    model.net[3].init_nonlinearity = "linear"
    from repro.train.init import apply_init

    torch.manual_seed(0)
    init = apply_init(model)
    v = run_shapes(model, batch, Classification(3), stage_config("shapes"), None, init)
    c = check(v, "init_loss")
    assert not c.passed and "the initial outputs are large" in c.reason
    assert "start the output layer small" in c.reason


def test_model_that_cannot_take_a_batch_of_one_fails_alone_vs_batch_saying_so():
    class Squeezes(MLP):
        def forward(self, x):
            h = self.net[1](self.net[0](x)).squeeze()  # (B, 32), but (32,) when B = 1
            return self.net[3](h - h.mean(1, keepdim=True))  # (B, C); raises when B = 1

    v = run(Squeezes())
    c = check(v, "alone_vs_batch")
    assert not c.passed
    assert c.reason.startswith("example 0 alone (a batch of 1) raised IndexError")
    assert c.reason.endswith(
        "a model must take any batch size (a squeeze() that drops the batch dim?)"
    )
    assert check(v, "dummy_batch").passed  # a batch of 3 does not show it


# ---- alone-vs-batch in a thread of its own (issue 12) -----------------------------------------
@pytest.mark.parametrize("masked", [True, False])
def test_alone_forwards_in_a_thread_measure_exactly_what_they_measure_in_line(masked):
    from repro.gates.shapes import measure_alone_vs_batch, start_alone_vs_batch

    torch.manual_seed(0)
    model, batch = MaxPoolText(masked=masked), text_batch()
    in_line = measure_alone_vs_batch(model, batch, 8)
    pending = start_alone_vs_batch(model, batch, 8)  # background=True: a thread
    assert pending._thread is not None  # it did run in a thread
    in_thread = pending.result()
    assert in_thread == in_line  # every number equal, not close: one example, one thread, float64
    assert (in_line["gap"] > 1e-6) is (not masked)


def test_a_model_error_in_the_alone_thread_fails_the_check_with_its_traceback():
    class Squeezes(MLP):
        def forward(self, x):
            h = self.net[1](self.net[0](x)).squeeze()  # (32,) when B = 1
            return self.net[3](h - h.mean(1, keepdim=True))

    v = run(Squeezes())
    assert "IndexError" in v.evidence["alone_vs_batch_traceback"]
    assert "squeeze()" in v.evidence["alone_vs_batch_traceback"]  # the model's own line


def test_an_interrupt_during_the_gradient_checks_stops_the_alone_thread():
    import threading

    class InterruptedInTraining(LSTMText):
        def forward(self, ids):
            if self.training:  # grad_flow runs in train mode, after the alone forwards began
                raise KeyboardInterrupt
            return super().forward(ids)

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        run(InterruptedInTraining(), text_batch(size=64), num_classes=2, alone_examples=64)
    assert not [t for t in threading.enumerate() if t.name == "repro-alone-vs-batch"]


def test_checks_keep_their_order_with_the_alone_forwards_in_a_thread():
    names = [c.name for c in run(LSTMText(), text_batch(), num_classes=2).checks]
    at = names.index
    assert at("grad_flow") < at("batch_independence") < at("eval_deterministic")
    assert at("eval_deterministic") < at("alone_vs_batch") < at("frozen_params")


def test_same_seed_same_shapes_evidence_with_the_threaded_alone_forwards():
    def once():
        torch.manual_seed(0)
        v = run(LSTMText(masked=False), text_batch(size=16), num_classes=2)
        ev = {k: v for k, v in v.evidence.items() if not k.endswith("_traceback")}
        return [(c.name, c.passed, c.reason) for c in v.checks], ev

    first, second = once(), once()
    assert first == second  # every reason and number, the gradient checks' too
    assert first[1]["max_leak"] == 0.0 and first[1]["alone_vs_batch"]["pad_gap"] > 1e-6
