"""The shapes gate's orchestration: measure the model on one real batch (and a dummy batch), judge
each measurement, and return one Verdict.

Each step below returns its checks (and the evidence a reader may want); a measurement that
raises becomes a failed check of its name (`Attempt`), never a crash of the gate. The steps, in
order: the output fits the task; loss at init and logits; gradients, their values and the
confidence stress (with the alone-vs-batch forwards in a thread beside them: alone.py); frozen
parameters; zeroed inputs; an odd batch size; everything finite; and from run(ctx), the model
built under the next seed against the model (the seed reaches it).
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from repro.config.schema import ShapesStage
from repro.context import StageContext
from repro.data.batch import Batch
from repro.errors import PaperError
from repro.gates.invariance import with_shapes_checks
from repro.gates.metrics import ShapesMetrics
from repro.gates.paper_tests import start_stage_tests, with_paper_tests
from repro.gates.shapes.alone import AloneError, start_alone_vs_batch
from repro.gates.shapes.judge import (
    check_alone_vs_batch,
    check_batch_independence,
    check_confidence_stress,
    check_dummy_batch,
    check_eval_repeat,
    check_finite,
    check_frozen,
    check_grad_flow,
    check_grad_values,
    check_init_loss,
    check_logits,
    check_output_shape,
    check_param_count,
    check_seed_reaches_model,
    check_zero_input,
    roundoff_tol,
)
from repro.gates.shapes.measure import (
    Float64Refused,
    _error,
    measure_batch_independence,
    measure_confidence_stress,
    measure_dummy_batch,
    measure_eval_repeat,
    measure_forward,
    measure_frozen,
    measure_grad_flow,
    measure_grad_values,
    measure_output_range,
    measure_seed_effect,
    measure_zero_input,
    torch_threads,
)
from repro.gates.shapes.vectors import loaded_vectors_check
from repro.tasks.base import InitLoss, Task
from repro.train.params import count_params
from repro.verdict import Check, Verdict

STAGE = "shapes"
Evidence = dict[str, Any]


def run(ctx: StageContext) -> Verdict:
    """The paper's model on its first training batch: measured and judged; the paper's own tests
    (those not marked slow) run meanwhile in a subprocess, their outcome one more check."""
    tests = start_stage_tests(ctx, STAGE)
    try:
        verdict = _measure(ctx)
    except BaseException:
        tests.cancel()
        raise
    return with_paper_tests(verdict, tests.result())


def _measure(ctx: StageContext) -> Verdict:
    dm = ctx.build_datamodule()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    model, seeded = _build_twice(ctx, dm)  # the model, and whether the seed reaches it
    # before any forward: the model as built (and initialised), with the vectors the data loaded
    vectors = loaded_vectors_check(dm, model, ctx.cfg.stage.shapes.roundoff_eps)
    init = ctx.model_info.init if ctx.model_info is not None else None
    verdict = run_shapes(
        model, batch, dm.task, ctx.cfg.stage.shapes, ctx.cfg.paper.expected_params, init
    )
    verdict = with_shapes_checks(verdict, ctx, dm, model, batch)  # inputs used, invariances
    return with_checks(verdict, [seeded, vectors])


def _build_twice(ctx: StageContext, dm) -> tuple[nn.Module, Check]:
    """The model built under seed s+1, then under s (the gate's model, seeded as before), and the
    check that they differ; a model handed to `repro.lab.check` has no second build."""
    if ctx.given_model is not None:
        why = "repro.lab.check was given a built model: there is no build under another seed"
        return ctx.build_model(dm), Check.not_measured("seed_reaches_model", why)
    other = ctx.build_model(dm, ctx.seed + 1)
    rng = torch.get_rng_state()
    model = ctx.build_model(dm)
    return model, _seed_check(model, other, (ctx.seed, ctx.seed + 1), rng)


def _seed_check(model: nn.Module, other: nn.Module, seeds: tuple[int, int], rng) -> Check:
    """The model against its build under the next seed (`rng`: torch's RNG state after that
    build); a model whose tensors cannot be compared (lazy modules) is not measured."""
    same_rng = torch.equal(rng, torch.get_rng_state())
    try:
        effect = measure_seed_effect(model, other)
    except Exception as exc:
        why = f"comparing the builds under seeds {seeds[0]} and {seeds[1]} raised {_error(exc)}"
        return Check.not_measured("seed_reaches_model", why)
    return check_seed_reaches_model(effect, seeds, same_rng)


def with_checks(verdict: Verdict, checks: list[Check]) -> Verdict:
    """The verdict with `checks` added after its own."""
    return Verdict.from_checks(
        verdict.stage, verdict.checks + checks, dict(verdict.evidence), verdict.metrics
    )


def run_shapes(
    model: nn.Module,
    batch: Batch,
    task: Task,
    c: ShapesStage,
    expected_params: int | None = None,
    init: dict[str, str] | None = None,
) -> Verdict:
    """Measure the model on `batch` (and a dummy batch), judge each measurement, one Verdict.

    task: the paper's task (repro/tasks), which says what the output and the loss at init must
    be. init: what repro's init applied ({parameter: how}, as ModelInfo.init records it), so the
    init-loss reason can name the output layer it started small."""
    _check_classes(task)
    size = int(batch["label"].shape[0])
    params = count_params(model)
    expected = task.init_loss(batch)
    attempt = Attempt(size)
    evidence: Evidence = {"batch_size": size, "task": task.name}
    if task.num_classes is not None:
        evidence["num_classes"] = task.num_classes
    checks = [
        check_param_count(params["trainable"], params["total"], expected_params, c.params_rel_tol)
    ]

    def verdict(init_loss: float | None = None) -> Verdict:
        metrics = _metrics(task, expected, init_loss, params)
        evidence.update(attempt.tracebacks)
        return Verdict.from_checks(STAGE, checks + attempt.failed, evidence, metrics)

    fwd = attempt("forward", lambda: measure_forward(model, batch, task))
    if fwd is None:
        return verdict()
    evidence["output_shape"] = list(fwd["shape"]) if fwd["shape"] is not None else None
    checks.append(check_output_shape(fwd["shape"], fwd["problem"], task.name))
    if not checks[-1].passed:  # the other measurements need an output that fits the task
        evidence["not_run"] = f"the other checks need {task.output_contract}"
        return verdict()
    checks += _output_checks(fwd, task, expected, c, _output_layer(init), evidence)
    checks += _gradient_and_row_checks(model, batch, task, fwd, c, attempt, evidence)
    checks.append(check_frozen(measure_frozen(model), list(c.frozen_ok)))
    evidence["frozen_params"] = checks[-1].evidence["frozen"]
    checks += _zero_input_checks(model, batch, task, fwd, c, attempt, evidence)
    dummy = measure_dummy_batch(model, batch, task, c.dummy_batch_size)
    checks.append(_dummy_check(dummy, c, evidence))
    nonfinite = {
        "logits": fwd["logits_nonfinite"],
        "loss at init": int(not math.isfinite(fwd["loss"])),
        "dummy logits": dummy["nonfinite"],
    }
    checks.append(check_finite(nonfinite))
    return verdict(fwd["loss"])


class Attempt:
    """Run one measurement; a model that raises fails the check of that name with the error, and
    its traceback goes into the evidence."""

    def __init__(self, size: int):
        self.size = size
        self.failed: list[Check] = []
        self.tracebacks: Evidence = {}

    def __call__(self, name: str, measure: Callable[[], Any]) -> Any:
        try:
            return measure()
        except Exception as exc:
            where = f"on the real batch of {self.size}"
            reason = (
                str(exc)
                if isinstance(exc, AloneError)
                else f"the model raised {_error(exc)} {where}"
            )
            self.failed.append(Check(name, False, reason))
            self.tracebacks[f"{name}_traceback"] = traceback.format_exc()
            return None


def _check_classes(task: Task) -> None:
    if task.name == "classification" and not (task.num_classes or 0) >= 2:
        raise PaperError(
            f"num_classes: expected at least 2 classes for the classification task, found "
            f"{task.num_classes}; set the datamodule's num_classes (or choose another paper.task)"
        )


def _metrics(task: Task, expected: InitLoss | None, init_loss, params) -> ShapesMetrics:
    return ShapesMetrics(
        init_loss,
        math.log(task.num_classes) if task.name == "classification" else None,
        params["trainable"],
        params["total"],
        expected_loss=expected.value if expected is not None else None,
        task=task.name,
    )


def _output_layer(init: dict[str, str] | None) -> str | None:
    """The layer repro's init started small ("" when it started none; None: init unknown)."""
    if init is None:
        return None
    names = [n.rsplit(".", 1)[0] for n, how in init.items() if how.startswith("output:")]
    return ", ".join(names)


def _output_checks(
    fwd, task: Task, expected: InitLoss | None, c: ShapesStage, output_layer, evidence
) -> list[Check]:
    """Loss at init vs the task's expectation, and outputs that are logits (not probabilities)
    where the task's loss applies a softmax."""
    logits = fwd["logits"]
    out = measure_output_range(logits) if not fwd["logits_nonfinite"] else None
    spread = out["spread"] if out and task.outputs_logits(logits) else None
    checks = [check_init_loss(fwd["loss"], expected, c.init_loss_rel_tol, spread, output_layer)]
    if out is not None:
        evidence["output_range"] = [out["min"], out["max"]]
        if task.outputs_logits(logits):
            dtype = str(logits.dtype).removeprefix("torch.")
            tol = roundoff_tol(dtype, 1.0, c.roundoff_eps)
            checks.append(check_logits(out, logits.shape[-1], tol))
    return checks


def _confidence_check(model, batch, task: Task, fwd, c: ShapesStage, attempt) -> list[Check]:
    """Where the loss squashes the output (task.saturates: a softmax, a sigmoid), the output
    layer scaled to a confident model keeps the loss and gradients finite."""
    if fwd["logits_nonfinite"] or not task.saturates(fwd["logits"]):
        return []
    r, raised = c.confidence_logit_range, len(attempt.failed)
    n = c.confidence_examples
    m = attempt("confident_outputs", lambda: measure_confidence_stress(model, batch, task, r, n))
    return [] if len(attempt.failed) > raised else [check_confidence_stress(m, r)]


def _gradient_and_row_checks(model, batch, task, fwd, c: ShapesStage, attempt, evidence):
    """Two eval forwards agree (measured first: when they do not, alone-vs-batch is not judged);
    then the gradient checks on the model while the alone-vs-batch forwards run in a thread on a
    float64 copy, the thread on one CPU thread and the gradient checks on the others."""
    repeat = _eval_repeat(model, batch, fwd, c, attempt)
    pending = None
    if repeat is not None and repeat.passed:
        start = lambda: start_alone_vs_batch(model, batch, c.alone_examples)  # noqa: E731
        pending = attempt("alone_vs_batch", start)
    try:
        busy = 1 if pending is not None and pending.threaded else 0  # not "still running":
        # the thread count, hence the last bits of the gradients, must not depend on timing
        with torch_threads(torch.get_num_threads() - busy):
            checks = _gradient_checks(model, batch, task, c, attempt, evidence)
            checks += _confidence_check(model, batch, task, fwd, c, attempt)
    except BaseException:
        if pending is not None:
            pending.cancel()
        raise
    if repeat is None:
        return checks
    checks.append(repeat)
    if not repeat.passed:
        evidence["alone_vs_batch"] = "not judged: two eval forwards of one batch already differ"
        return checks
    rows = attempt("alone_vs_batch", pending.result) if pending is not None else None
    if rows is not None:
        checks.append(check_alone_vs_batch(rows, c.roundoff_eps))
        evidence["alone_vs_batch"] = checks[-1].evidence
    return checks


def _eval_repeat(model, batch, fwd, c: ShapesStage, attempt) -> Check | None:
    """Two eval-mode forwards of the batch agree to rounding (None: not measurable, the logits
    are not finite or the forward raised)."""
    if fwd["logits_nonfinite"]:
        return None
    rep = attempt("eval_deterministic", lambda: measure_eval_repeat(model, batch, fwd["logits"]))
    if rep is None:
        return None
    tol = roundoff_tol(rep["dtype"], rep["scale"], c.roundoff_eps)
    return check_eval_repeat(rep["max_change"], tol)


def _gradient_checks(model, batch, task, c: ShapesStage, attempt, evidence) -> list[Check]:
    """Gradient flow to every parameter, and no gradient from one example's loss to another's input."""
    checks = []
    grads = attempt("grad_flow", lambda: measure_grad_flow(model, batch, task))
    if grads is not None:
        checks.append(check_grad_flow(grads, c.grad_atol))
        evidence["no_grad_params"] = checks[-1].evidence["no_grad"]
    values = attempt("grad_values", lambda: _grad_values(model, batch, task, c))
    if values is not None:
        checks.append(values)
    leak = attempt(
        "batch_independence",
        lambda: measure_batch_independence(model, batch, task, c.independence_examples),
    )
    if leak is not None:
        checks.append(check_batch_independence(leak["max_leak"], c.leak_atol, leak["max_self"]))
        evidence["max_leak"] = leak["max_leak"]
        evidence["independence_inputs"] = leak["representations"]
        if leak["ignored_embedding_calls"]:
            evidence["independence_ignored"] = leak["ignored_embedding_calls"]
    return checks


def _grad_values(model, batch, task: Task, c: ShapesStage) -> Check:
    """Gradient values against float64 central differences (not measured where the model will
    not run in float64)."""
    try:
        m = measure_grad_values(model, batch, task, c)
    except Float64Refused as exc:
        return Check.not_measured("grad_values", str(exc))
    return check_grad_values(m, c.grad_check_rtol, c.grad_check_eps)


def _zero_input_checks(model, batch, task, fwd, c: ShapesStage, attempt, evidence) -> list[Check]:
    """Zeroed inputs (ids to unknown, floats to 0) change the output."""
    zero = attempt("zero_input", lambda: measure_zero_input(model, batch, fwd["logits"], task))
    if zero is None:
        return []
    evidence["zero_input_change"], evidence["zero_input_loss"] = zero["max_change"], zero["loss"]
    return [check_zero_input(zero["max_change"], c.zero_input_min_change)]


def _dummy_check(dummy: dict[str, Any], c: ShapesStage, evidence) -> Check:
    """A batch of an unusual size through the model: outputs that fit the task, finite."""
    evidence["dummy_output_shape"] = dummy["shape"] and list(dummy["shape"])
    return check_dummy_batch(
        dummy["shape"], c.dummy_batch_size, dummy["problem"], dummy["nonfinite"], dummy["error"]
    )
