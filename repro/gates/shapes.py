"""The shapes gate: a real and a dummy batch through the model, measured, then judged.

Measurements (`measure_*`, `count_params`) run the model and return numbers; judgements
(`check_*`) are small pure functions from those numbers to a Check; `run_shapes` gathers one
from the other into a Verdict. Every measurement restores the model's train/eval modes,
requires_grad flags and .grad tensors, so the gate leaves the model as it found it.

A batch is a dict of tensors with "label"; the other keys are the model's keyword arguments
(repro/data/datamodule.py). Integer inputs use id 0 for padding and 1 for "unknown".
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from repro.config.schema import ShapesStage
from repro.data.batch import Batch, split_batch
from repro.errors import PaperError
from repro.gates.metrics import ShapesMetrics
from repro.train.params import count_params
from repro.verdict import Check, Verdict

STAGE = "shapes"

_SHOW = 5  # how many parameter names a reason lists before "... and N more"


# ---- plumbing ---------------------------------------------------------------------------------
@contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval mode, requires_grad and .grad on exit."""
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad, grad in params:
            p.requires_grad_(requires_grad)
            p.grad = grad


def _nonfinite(t: torch.Tensor) -> int:
    return int((~torch.isfinite(t)).sum()) if t.is_floating_point() else 0


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" ... and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def _max(a: float, b: float) -> float:
    """max that keeps a NaN (Python's max(0.0, nan) is 0.0)."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


# ---- measurements -----------------------------------------------------------------------------
def measure_forward(model: nn.Module, batch: Batch, num_classes: int) -> dict[str, Any]:
    """Eval mode, no grad: logits on the real batch, their shape, non-finites, and the loss at
    init (CE) when the logits have the shape (B, C) that the loss needs."""
    inputs, labels = split_batch(batch)
    with preserved(model), torch.no_grad():
        model.eval()
        logits = model(**inputs)  # (B, C)
        out: dict[str, Any] = {"logits": logits, "shape": tuple(logits.shape)}
        out["logits_nonfinite"] = _nonfinite(logits)
        if tuple(logits.shape) == (labels.shape[0], num_classes):
            loss = F.cross_entropy(logits, labels)
            out["loss"] = float(loss)
    return out


def measure_grad_flow(model: nn.Module, batch: Batch) -> dict[str, float]:
    """Train mode, CE on the real batch, backward: {trainable param: max |grad|} (None -> 0)."""
    inputs, labels = split_batch(batch)
    with preserved(model):
        model.train()
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        for _, p in trainable:
            p.grad = None
        loss = F.cross_entropy(model(**inputs), labels)
        if loss.requires_grad:  # else no parameter is used: every one is reported as 0
            loss.backward()
        return {
            n: 0.0 if p.grad is None else float(p.grad.detach().abs().max()) for n, p in trainable
        }


def measure_batch_independence(model: nn.Module, batch: Batch, examples: int = 4) -> dict[str, Any]:
    """Karpathy's trick: does example i's loss depend on example j's input (j != i)?

    Eval mode (norm layers use running statistics, dropout off). The *input representations*
    are the float inputs themselves and the outputs of every nn.Embedding / nn.EmbeddingBag
    called on batch-shaped ids (dim 0 = batch; an embedding of e.g. positions, whose ids are
    not batch-shaped, is not an input). For each of the first `examples` examples i,
    loss_i = CE(logits[i], label[i]) is differentiated w.r.t. every representation.
    Returns max_leak = max |d loss_i / d rep_j| over j != i, max_self = max |d loss_i / d rep_i|
    (0 means the check could not see the input), and which representations were used.
    """
    inputs, labels = split_batch(batch)
    size = labels.shape[0]
    with preserved(model):
        model.eval()
        logits, reps, skipped = _forward_with_input_leaves(model, inputs, size)
        max_leak, max_self = _cross_example_grads(logits, labels, [t for _, t in reps], examples)
    return {
        "max_leak": max_leak,
        "max_self": max_self,
        "examples": min(examples, size),
        "representations": [n for n, _ in reps],
        "ignored_embedding_calls": skipped,
    }


def _forward_with_input_leaves(model: nn.Module, inputs: Batch, size: int):
    """One forward pass in which every input representation (float inputs, outputs of embeddings
    called on batch-shaped ids) is a leaf tensor: (logits, [(name, leaf)], [skipped embeddings])."""
    reps: list[tuple[str, torch.Tensor]] = []
    skipped: list[str] = []
    int_storages = {
        v.untyped_storage().data_ptr() for v in inputs.values() if not v.is_floating_point()
    }
    module_names = {id(m): n for n, m in model.named_modules()}

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        ids = args[0] if args else None
        name = module_names.get(id(module), type(module).__name__)
        from_batch = ids is not None and (
            ids.dim() >= 2 or ids.untyped_storage().data_ptr() in int_storages
        )
        if output.dim() == 0 or output.shape[0] != size or not from_batch:
            skipped.append(f"{name} (output {tuple(output.shape)})")
            return output
        rep = output.detach().requires_grad_(True)  # a leaf we can differentiate against
        reps.append((f"{name} output", rep))
        return rep

    fed = {}
    for k, v in inputs.items():
        fed[k] = v.detach().clone().requires_grad_(True) if v.is_floating_point() else v
        if v.is_floating_point():
            reps.append((k, fed[k]))
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)]
    handles = [m.register_forward_hook(hook) for m in embeddings]
    try:
        logits = model(**fed)  # (B, C)
    finally:
        for h in handles:
            h.remove()
    return logits, reps, skipped


def _cross_example_grads(
    logits: torch.Tensor, labels: torch.Tensor, leaves: list[torch.Tensor], examples: int
) -> tuple[float, float]:
    """(max |d loss_i / d leaf_j| over j != i, max |d loss_i / d leaf_i|) for the first examples."""
    size = labels.shape[0]
    max_leak, max_self = 0.0, 0.0
    seen = bool(leaves) and logits.requires_grad  # else max_self stays 0: nothing to see
    for i in range(min(examples, size) if seen else 0):
        loss_i = F.cross_entropy(logits[i : i + 1], labels[i : i + 1])
        for g in torch.autograd.grad(loss_i, leaves, retain_graph=True, allow_unused=True):
            if g is None:
                continue
            g = g.abs().reshape(size, -1)  # (B, rest)
            max_self = _max(max_self, float(g[i].max()))
            others = torch.cat([g[:i], g[i + 1 :]])  # (B - 1, rest)
            if others.numel():
                max_leak = _max(max_leak, float(others.max()))
    return max_leak, max_self


def zeroed_batch(batch: Batch) -> Batch:
    """Float inputs -> 0; integer inputs keep their 0 (pad) and every other id becomes 1 (unk)."""
    out = {}
    for k, v in batch.items():
        if k == "label" or v.dtype == torch.bool:
            out[k] = v
        elif v.is_floating_point():
            out[k] = torch.zeros_like(v)
        else:
            out[k] = torch.where(v == 0, v, torch.ones_like(v))
    return out


def measure_zero_input(model: nn.Module, batch: Batch, logits: torch.Tensor) -> dict[str, float]:
    """Eval mode: max |logits(real) - logits(zeroed inputs)| and the CE loss on zeroed inputs."""
    zeroed = zeroed_batch(batch)
    inputs, labels = split_batch(zeroed)
    with preserved(model), torch.no_grad():
        model.eval()
        zero_logits = model(**inputs)  # (B, C)
        return {
            "max_change": float((logits - zero_logits).abs().max()),
            "loss": float(F.cross_entropy(zero_logits, labels)),
        }


def make_dummy_batch(batch: Batch, num_classes: int, size: int = 3, seed: int = 0) -> Batch:
    """A random batch with the real batch's keys, dtypes and per-example shapes, `size` rows.

    Row d takes real row d % B as its template: floats are N(0, 1); integer ids are random in
    [2, max id in that tensor] where the template is non-zero and 0 (pad) where it is zero, so
    padding patterns stay plausible. Per-example integer scalars (lengths, category ids) and bool
    masks are copied from the template, since random values there need not match the ids.
    Labels are random in [0, num_classes).
    """
    g = torch.Generator().manual_seed(seed)
    n = next(iter(batch.values())).shape[0]
    rows = torch.arange(size) % n
    out = {}
    for k, v in batch.items():
        template = v[rows]  # (size, ...)
        if k == "label":
            out[k] = torch.randint(0, num_classes, (size,), generator=g, dtype=v.dtype)
        elif v.is_floating_point():
            out[k] = torch.randn(template.shape, generator=g, dtype=v.dtype)
        elif v.dtype == torch.bool or v.dim() == 1 or int(v.max()) < 2:
            out[k] = template.clone()
        else:
            ids = torch.randint(2, int(v.max()) + 1, template.shape, generator=g, dtype=v.dtype)
            out[k] = torch.where(template == 0, template, ids)
    return out


def measure_dummy_batch(
    model: nn.Module, batch: Batch, num_classes: int, size: int = 3
) -> dict[str, Any]:
    """Eval mode: the dummy batch through the model; its output shape, non-finites, or the error."""
    inputs, _ = split_batch(make_dummy_batch(batch, num_classes, size))
    with preserved(model), torch.no_grad():
        model.eval()
        try:
            logits = model(**inputs)  # (size, C)
        except Exception as exc:  # a model that cannot take this batch size is what we look for
            return {"shape": None, "nonfinite": 0, "error": _error(exc)}
    return {"shape": tuple(logits.shape), "nonfinite": _nonfinite(logits), "error": None}


# ---- judgements -------------------------------------------------------------------------------
def check_output_shape(shape: tuple[int, ...], batch_size: int, num_classes: int) -> Check:
    expected = (batch_size, num_classes)
    ok = tuple(shape) == expected
    return Check(
        "output_shape",
        ok,
        f"logits shape {tuple(shape)} {'==' if ok else '!='} expected (B, C) = {expected}",
        {"shape": list(shape), "expected": list(expected)},
    )


def check_init_loss(loss: float, num_classes: int, rel_tol: float) -> Check:
    """At init a classifier should be unsure: CE ≈ -ln(1/C) = ln C, within rel_tol * ln C."""
    ln_c = math.log(num_classes)
    tol = rel_tol * ln_c
    gap = abs(loss - ln_c)
    ok = gap <= tol  # False for NaN
    return Check(
        "init_loss",
        ok,
        f"loss at init {loss:.4g} vs ln({num_classes}) = {ln_c:.4g}: "
        f"|gap| {gap:.4g} {'<=' if ok else '>'} tol {tol:.4g} ({rel_tol:g} x ln C)",
        {"loss": loss, "ln_c": ln_c, "tol": tol},
    )


def check_grad_flow(grad_max: dict[str, float], atol: float) -> Check:
    """Every trainable parameter gets max |grad| > atol, and every gradient is finite."""
    dead = [n for n, g in grad_max.items() if math.isfinite(g) and g <= atol]
    bad = [n for n, g in grad_max.items() if not math.isfinite(g)]
    ok = not dead and not bad and bool(grad_max)
    if not grad_max:
        reason = "the model has no trainable parameters"
    elif ok:
        reason = f"all {len(grad_max)} trainable parameters get max |grad| > {atol:g}"
    else:
        parts = []
        if dead:
            parts.append(
                f"{len(dead)} of {len(grad_max)} parameters get no gradient: {_names(dead)}"
            )
        if bad:
            parts.append(f"{len(bad)} parameters get a non-finite gradient: {_names(bad)}")
        reason = "; ".join(parts) + (f" (max |grad| <= {atol:g} counts as none)" if dead else "")
    return Check("grad_flow", ok, reason, {"no_grad": dead, "nonfinite_grad": bad})


def check_batch_independence(max_leak: float, atol: float, max_self: float | None = None) -> Check:
    """d loss_i / d input_j must be 0 for j != i; if max_self is 0 the check saw no input."""
    if math.isnan(max_leak) or (max_self is not None and math.isnan(max_self)):
        return Check(
            "batch_independence",
            False,
            f"non-finite input gradients (max leak {max_leak:g}, max self {max_self})",
            {"max_leak": max_leak, "max_self": max_self},
        )
    if max_self is not None and not max_self > 0:
        return Check(
            "batch_independence",
            False,
            f"could not see the input: d loss_i / d input_i = {max_self:g} for every input "
            "representation (float inputs, nn.Embedding outputs), so leaks cannot be measured",
            {"max_leak": max_leak, "max_self": max_self},
        )
    ok = max_leak <= atol
    return Check(
        "batch_independence",
        ok,
        f"max |d loss_i / d input_j| (j != i) = {max_leak:.3g} {'<=' if ok else '>'} {atol:g}"
        + ("" if ok else ": examples in the batch mix (batch statistics? a reshape across B?)"),
        {"max_leak": max_leak, "max_self": max_self},
    )


def check_zero_input(max_change: float, min_change: float) -> Check:
    """Outputs on zeroed inputs must differ from outputs on the real batch."""
    ok = max_change > min_change
    return Check(
        "zero_input",
        ok,
        f"max |Δlogits| real vs zeroed inputs = {max_change:.3g} {'>' if ok else '<='} {min_change:g}"
        + ("" if ok else ": the output ignores the input"),
        {"max_change": max_change},
    )


def check_dummy_batch(
    shape: tuple[int, ...] | None,
    batch_size: int,
    num_classes: int,
    nonfinite: int = 0,
    error: str | None = None,
) -> Check:
    """A batch of an unusual size must give (size, C) finite logits."""
    expected = (batch_size, num_classes)
    if error is not None:
        ok, reason = False, f"dummy batch of {batch_size} raised {error}"
    elif tuple(shape or ()) != expected:
        ok, reason = False, f"dummy batch of {batch_size}: logits shape {shape} != {expected}"
    elif nonfinite:
        ok, reason = False, f"dummy batch of {batch_size}: {nonfinite} non-finite logits"
    else:
        ok, reason = True, f"dummy batch of {batch_size} -> finite logits {expected}"
    return Check("dummy_batch", ok, reason, {"shape": shape and list(shape), "error": error})


def check_finite(nonfinite: dict[str, int]) -> Check:
    """{what: number of NaN/Inf entries}; fails naming each that has any."""
    bad = {k: n for k, n in nonfinite.items() if n}
    if bad:
        reason = "non-finite values in " + ", ".join(f"{k} ({n})" for k, n in bad.items())
    else:
        reason = f"{', '.join(nonfinite)} all finite"
    return Check("finite", not bad, reason, {"nonfinite": nonfinite})


def check_param_count(
    trainable: int, total: int, expected: int | None, rel_tol: float = 0.05
) -> Check:
    """The trainable count vs the paper's, when the paper states one; otherwise only reported."""
    counts = f"{trainable:,} trainable / {total:,} total parameters"
    if expected is None:
        return Check("param_count", True, f"{counts} (the paper states no count)")
    gap = abs(trainable - expected) / expected
    ok = gap <= rel_tol
    return Check(
        "param_count",
        ok,
        f"{counts} vs the paper's {expected:,}: off by {gap:.1%} "
        f"{'<=' if ok else '>'} {rel_tol:.1%}",
        {"expected": expected, "rel_gap": gap},
    )


# ---- the gate ---------------------------------------------------------------------------------
def run(ctx) -> Verdict:
    """The paper's model on its first training batch: measured and judged."""
    dm = ctx.build_datamodule()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    model = ctx.build_model(dm)
    return run_shapes(
        model, batch, dm.num_classes, ctx.cfg.stage.shapes, ctx.cfg.paper.expected_params
    )


def run_shapes(
    model: nn.Module,
    batch: Batch,
    num_classes: int,
    c: ShapesStage,
    expected_params: int | None = None,
) -> Verdict:
    """Measure the model on `batch` (and a dummy batch), judge each measurement, one Verdict."""
    if num_classes < 2:
        raise PaperError(
            f"num_classes: expected a classifier (C >= 2) for the shapes gate, found {num_classes}"
        )
    _, labels = split_batch(batch)
    size = labels.shape[0]
    params = count_params(model)
    evidence: dict[str, Any] = {"batch_size": size, "num_classes": num_classes}
    checks = [
        check_param_count(params["trainable"], params["total"], expected_params, c.params_rel_tol)
    ]
    measure = _Attempts(checks, evidence, size)

    def verdict(init_loss: float | None = None) -> Verdict:
        metrics = ShapesMetrics(
            init_loss, math.log(num_classes), params["trainable"], params["total"]
        )
        return Verdict.from_checks(STAGE, checks, evidence, metrics)

    fwd = measure("forward", lambda: measure_forward(model, batch, num_classes))
    if fwd is None:
        return verdict()
    evidence["output_shape"] = list(fwd["shape"])
    checks.append(check_output_shape(fwd["shape"], size, num_classes))
    if not checks[-1].passed:  # the other measurements need (B, C) logits
        evidence["not_run"] = "the other checks need logits of shape (B, C)"
        return verdict()
    checks.append(check_init_loss(fwd["loss"], num_classes, c.init_loss_rel_tol))
    nonfinite = {
        "logits": fwd["logits_nonfinite"],
        "loss at init": int(not math.isfinite(fwd["loss"])),
    }
    _gradient_checks(model, batch, c, measure, checks, evidence)
    zero = measure("zero_input", lambda: measure_zero_input(model, batch, fwd["logits"]))
    if zero is not None:
        checks.append(check_zero_input(zero["max_change"], c.zero_input_min_change))
        evidence["zero_input_change"], evidence["zero_input_loss"] = (
            zero["max_change"],
            zero["loss"],
        )
    dummy = measure_dummy_batch(model, batch, num_classes, c.dummy_batch_size)
    checks.append(
        check_dummy_batch(
            dummy["shape"], c.dummy_batch_size, num_classes, dummy["nonfinite"], dummy["error"]
        )
    )
    evidence["dummy_output_shape"] = dummy["shape"] and list(dummy["shape"])
    nonfinite["dummy logits"] = dummy["nonfinite"]
    checks.append(check_finite(nonfinite))
    return verdict(fwd["loss"])


def _gradient_checks(model, batch, c: ShapesStage, measure, checks, evidence) -> None:
    """Gradient flow to every parameter, and no gradient from one example's loss to another's input."""
    grads = measure("grad_flow", lambda: measure_grad_flow(model, batch))
    if grads is not None:
        checks.append(check_grad_flow(grads, c.grad_atol))
        evidence["no_grad_params"] = checks[-1].evidence["no_grad"]
    leak = measure(
        "batch_independence",
        lambda: measure_batch_independence(model, batch, c.independence_examples),
    )
    if leak is not None:
        checks.append(check_batch_independence(leak["max_leak"], c.leak_atol, leak["max_self"]))
        evidence["max_leak"] = leak["max_leak"]
        evidence["independence_inputs"] = leak["representations"]
        if leak["ignored_embedding_calls"]:
            evidence["independence_ignored"] = leak["ignored_embedding_calls"]


class _Attempts:
    """Run one measurement; a model that raises fails the check of that name with the error."""

    def __init__(self, checks: list[Check], evidence: dict[str, Any], size: int):
        self.checks, self.evidence, self.size = checks, evidence, size

    def __call__(self, name: str, measure: Callable[[], Any]) -> Any:
        try:
            return measure()
        except Exception as exc:
            where = f"on the real batch of {self.size}"
            self.checks.append(Check(name, False, f"the model raised {_error(exc)} {where}"))
            self.evidence[f"{name}_traceback"] = traceback.format_exc()
            return None
