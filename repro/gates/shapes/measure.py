"""The shapes gate's measurements: each runs the model on a batch and returns numbers.

Every measurement restores the model's train/eval modes, requires_grad flags and .grad tensors
(`preserved`), so the gate leaves the model as it found it. The loss is the paper's task's
(repro/tasks), so the same measurements serve a classifier, a regressor, a tagger or a ranker.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from repro.data.batch import TARGET_KEYS, Batch, model_inputs, rows
from repro.tasks.base import Task


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


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread inside the block: batch-of-1 forwards gain nothing from two, and
    on a busy 2-core machine OpenMP's spin-waits made them 7-18x slower (measured on BiMPM:
    32 single examples in 0.55 s on one thread, 3.8-10 s on two; design.md, known pitfalls)."""
    with torch_threads(1):
        yield


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch on `n` CPU threads (at least one) inside the block, in the calling thread only (the
    setting is per thread under OpenMP)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _nonfinite(t: torch.Tensor) -> int:
    return int((~torch.isfinite(t)).sum()) if t.is_floating_point() else 0


def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def measure_forward(model: nn.Module, batch: Batch, task: Task) -> dict[str, Any]:
    """Eval mode, no grad: the output on the real batch, its shape, non-finites, what is wrong
    with it for the task (None: it fits), and the task's loss at init when it fits."""
    with preserved(model), torch.no_grad():
        model.eval()
        logits = model(**model_inputs(batch))
        out: dict[str, Any] = {"logits": logits, "problem": task.check_output(logits, batch)}
        out["shape"] = tuple(logits.shape) if isinstance(logits, torch.Tensor) else None
        if out["problem"] is None:
            out["logits_nonfinite"] = _nonfinite(logits)
            out["loss"] = float(task.loss(logits, batch))
    return out


def measure_grad_flow(model: nn.Module, batch: Batch, task: Task) -> dict[str, float]:
    """Train mode, the task's loss on the real batch, backward: {trainable param: max |grad|}
    (None -> 0)."""
    with preserved(model):
        model.train()
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        for _, p in trainable:
            p.grad = None
        loss = task.loss(model(**model_inputs(batch)), batch)
        if loss.requires_grad:  # else no parameter is used: every one is reported as 0
            loss.backward()
        return {
            n: 0.0 if p.grad is None else float(p.grad.detach().abs().max()) for n, p in trainable
        }


def measure_batch_independence(
    model: nn.Module, batch: Batch, task: Task, examples: int = 4
) -> dict[str, Any]:
    """Karpathy's trick: does example i's loss depend on example j's input (j != i)?

    Eval mode (norm layers use running statistics, dropout off). The *input representations*
    are the float inputs themselves and the outputs of every nn.Embedding / nn.EmbeddingBag
    called on batch-shaped ids (dim 0 = batch; an embedding of e.g. positions, whose ids are
    not batch-shaped, is not an input). For each of the first `examples` examples i, the task's
    loss of example i alone is differentiated w.r.t. every representation.
    Returns max_leak = max |d loss_i / d rep_j| over j != i, max_self = max |d loss_i / d rep_i|
    (0 means the check could not see the input), and which representations were used.
    """
    inputs = model_inputs(batch)
    size = batch["label"].shape[0]
    with preserved(model):
        model.eval()
        logits, reps, skipped = _forward_with_input_leaves(model, inputs, size)
        leaves = [t for _, t in reps]
        max_leak, max_self = _cross_example_grads(logits, batch, task, leaves, examples)
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
    logits: torch.Tensor, batch: Batch, task: Task, leaves: list[torch.Tensor], examples: int
) -> tuple[float, float]:
    """(max |d loss_i / d leaf_j| over j != i, max |d loss_i / d leaf_i|) for the first examples."""
    size = batch["label"].shape[0]
    max_leak, max_self = 0.0, 0.0
    seen = bool(leaves) and logits.requires_grad  # else max_self stays 0: nothing to see
    for i in range(min(examples, size) if seen else 0):
        loss_i = task.loss(logits[i : i + 1], rows(batch, slice(i, i + 1)))
        for g in torch.autograd.grad(loss_i, leaves, retain_graph=True, allow_unused=True):
            if g is None:
                continue
            g = g.abs().reshape(size, -1)  # (B, rest)
            max_self = _max(max_self, float(g[i].max()))
            others = torch.cat([g[:i], g[i + 1 :]])  # (B - 1, rest)
            if others.numel():
                max_leak = _max(max_leak, float(others.max()))
    return max_leak, max_self


def _max(a: float, b: float) -> float:
    """max that keeps a NaN (Python's max(0.0, nan) is 0.0)."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def zeroed_batch(batch: Batch) -> Batch:
    """Float inputs -> 0; integer inputs keep their 0 (pad) and every other id becomes 1 (unk)."""
    out = {}
    for k, v in batch.items():
        if k in TARGET_KEYS or v.dtype == torch.bool:
            out[k] = v
        elif v.is_floating_point():
            out[k] = torch.zeros_like(v)
        else:
            out[k] = torch.where(v == 0, v, torch.ones_like(v))
    return out


def measure_zero_input(
    model: nn.Module, batch: Batch, logits: torch.Tensor, task: Task
) -> dict[str, float]:
    """Eval mode: max |output(real) - output(zeroed inputs)| and the task's loss on zeroed inputs."""
    zeroed = zeroed_batch(batch)
    with preserved(model), torch.no_grad():
        model.eval()
        zero_logits = model(**model_inputs(zeroed))
        return {
            "max_change": float((logits - zero_logits).abs().max()),
            "loss": float(task.loss(zero_logits, zeroed)),
        }


def make_dummy_batch(batch: Batch, size: int = 3, seed: int = 0) -> Batch:
    """A random batch with the real batch's keys, dtypes and per-example shapes, `size` rows.

    Row d takes real row d % B as its template: floats are N(0, 1); integer ids are random in
    [2, max id in that tensor] where the template is non-zero and 0 (pad) where it is zero, so
    padding patterns stay plausible. Per-example integer scalars (lengths, category ids) and bool
    masks are copied from the template, since random values there need not match the ids; so
    are the targets (label, group), which are the task's and valid as they are.
    """
    g = torch.Generator().manual_seed(seed)
    n = next(iter(batch.values())).shape[0]
    rows = torch.arange(size) % n
    out = {}
    for k, v in batch.items():
        template = v[rows]  # (size, ...)
        if k in TARGET_KEYS:
            out[k] = template.clone()
        elif v.is_floating_point():
            out[k] = torch.randn(template.shape, generator=g, dtype=v.dtype)
        elif v.dtype == torch.bool or v.dim() == 1 or int(v.max()) < 2:
            out[k] = template.clone()
        else:
            ids = torch.randint(2, int(v.max()) + 1, template.shape, generator=g, dtype=v.dtype)
            out[k] = torch.where(template == 0, template, ids)
    return out


def measure_dummy_batch(
    model: nn.Module, batch: Batch, task: Task, size: int = 3
) -> dict[str, Any]:
    """Eval mode: the dummy batch through the model; its output shape, what is wrong with it for
    the task (None: it fits), non-finites, or the error."""
    dummy = make_dummy_batch(batch, size)
    with preserved(model), torch.no_grad():
        model.eval()
        try:
            logits = model(**model_inputs(dummy))
        except Exception as exc:  # a model that cannot take this batch size is what we look for
            return {"shape": None, "nonfinite": 0, "error": _error(exc), "problem": None}
    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else None
    problem = task.check_output(logits, dummy)
    nonfinite = _nonfinite(logits) if problem is None else 0
    return {"shape": shape, "nonfinite": nonfinite, "error": None, "problem": problem}


def measure_eval_repeat(model: nn.Module, batch: Batch, logits: torch.Tensor) -> dict[str, Any]:
    """Eval mode, no grad: the same batch a second time; max |Δlogits| against the first pass."""
    with preserved(model), torch.no_grad():
        model.eval()
        again = model(**model_inputs(batch))
    return {
        "max_change": float((again - logits).abs().max()),
        "scale": float(logits.abs().max()),
        "dtype": str(logits.dtype).removeprefix("torch."),
    }


def trim_padding(one: Batch) -> Batch:
    """One example's inputs (batch dim 1) cut to its own length: every dim after the batch dim of
    its integer and bool inputs ends after the last non-zero entry (id 0 is padding, README), at
    least 1 long. Dims that have the same size in the batch are cut together, to the longest of
    them, so tensors that share a length (words and their characters) stay aligned, as a collate
    of this one example would leave them. Float inputs and per-example scalars are kept."""
    extent: dict[int, int] = {}
    for v in one.values():
        if v.is_floating_point() or v.dim() < 2:
            continue
        nonpad = (v[0] != 0).to(torch.int8)  # (...): the example without its batch dim
        for d in range(nonpad.dim()):
            others = tuple(x for x in range(nonpad.dim()) if x != d)
            along = nonpad.amax(dim=others) if others else nonpad  # (size of dim d,)
            last = int(along.nonzero().max()) + 1 if bool(along.any()) else 1
            size = v.shape[d + 1]
            extent[size] = max(extent.get(size, 1), last)
    out = {}
    for k, v in one.items():
        keep = v.is_floating_point() or v.dim() < 2
        out[k] = v if keep else v[(slice(None), *(slice(0, extent[n]) for n in v.shape[1:]))]
    return out


def _padding_per_row(inputs: Batch) -> torch.Tensor:
    """(B,) number of padding ids (0) in each row's integer sequence inputs."""
    size = next(iter(inputs.values())).shape[0]
    pad = torch.zeros(size, dtype=torch.long)
    for v in inputs.values():
        if not v.is_floating_point() and v.dim() >= 2:
            pad += (v == 0).reshape(size, -1).sum(1)
    return pad


def _as_float64(inputs: Batch) -> Batch:
    return {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}


def measure_frozen(model: nn.Module) -> list[dict[str, Any]]:
    """Every parameter with requires_grad False: name, the type of the module that owns it, size."""
    owners = {id(p): type(m).__name__ for m in model.modules() for p in m.parameters(recurse=False)}
    return [
        {"name": n, "module": owners.get(id(p), "?"), "numel": p.numel()}
        for n, p in model.named_parameters()
        if not p.requires_grad
    ]


def measure_output_range(logits: torch.Tensor) -> dict[str, float]:
    """min and max of the outputs, how far the rows (over the last dim: the classes) are from
    summing to 1 (probabilities) and their logsumexp from 0 (log-probabilities)."""
    return {
        "min": float(logits.min()),
        "max": float(logits.max()),
        "row_sum_gap": float((logits.sum(-1) - 1).abs().max()),
        "logsumexp_gap": float(torch.logsumexp(logits.double(), -1).abs().max()),
        "spread": float(logits.std(-1).mean()) if logits.shape[-1] > 1 else 0.0,
    }


def measure_seed_effect(model: nn.Module, other: nn.Module) -> dict[str, list[str]]:
    """The model and a build of it under another seed, trainable tensor by tensor: those that
    differ, those identical, and those constant by design (every entry equal: a zero bias, a
    LayerNorm's ones, a scalar), which no seed can change and which are not compared. Frozen
    tensors (fixed pretrained vectors) are left out: loaded, not drawn."""
    theirs = dict(other.named_parameters())
    out: dict[str, list[str]] = {"differ": [], "same": [], "constant": []}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        q = theirs.get(n)
        flat = p.detach().reshape(-1)
        constant = flat.numel() <= 1 or bool((flat == flat[0]).all())
        if q is not None and q.shape == p.shape and constant:
            out["constant"].append(n)
        elif q is not None and q.shape == p.shape and torch.equal(p.detach(), q.detach()):
            out["same"].append(n)
        else:  # another value, or another shape: the seed reached it
            out["differ"].append(n)
    return out


def last_layer_called(model: nn.Module, inputs: Batch) -> tuple[str, nn.Module, float] | None:
    """Eval mode, no grad: the last module with parameters of its own that the forward calls and
    that returns a float tensor (the output layer, in call order, not registration order), as
    (name, module, max - min of its output); None when no such module is called."""
    names = {id(m): n for n, m in model.named_modules()}
    owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    called: list[tuple[nn.Module, float]] = []

    def hook(m: nn.Module, args: tuple, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel():
            called.append((m, float(out.max() - out.min())))

    handles = [m.register_forward_hook(hook) for m in owners]
    try:
        with preserved(model), torch.no_grad():
            model.eval()
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    if not called:
        return None
    layer, span = called[-1]
    return names[id(layer)] or type(layer).__name__, layer, span


def measure_confidence_stress(
    model: nn.Module, batch: Batch, task: Task, logit_range: float, examples: int
) -> dict[str, Any] | None:
    """Eval mode, the batch's first `examples` examples: the output layer's outputs
    (last_layer_called) scaled so that they span `logit_range` (a confident model), then the
    task's loss and a backward. Returns the layer, the factor, the loss, the scaled outputs'
    range and the parameters whose gradient is not finite; None when no layer with parameters
    feeds a float tensor or its outputs are constant."""
    batch = rows(batch, slice(0, examples))
    inputs = model_inputs(batch)
    found = last_layer_called(model, inputs)
    if found is None or not found[2] > 0:
        return None
    name, layer, span = found
    factor = logit_range / span
    scale = layer.register_forward_hook(lambda m, a, o: o * factor)
    try:
        with preserved(model):
            model.eval()
            trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            for _, p in trainable:
                p.grad = None
            out = model(**inputs)
            loss = task.loss(out, batch)
            if loss.requires_grad:
                loss.backward()
            bad = [n for n, p in trainable if p.grad is not None and _nonfinite(p.grad)]
    finally:
        scale.remove()
    out = out.detach()
    return {
        "layer": name,
        "factor": factor,
        "examples": int(out.shape[0]),
        "loss": float(loss.detach()),
        "range": [float(out.min()), float(out.max())],
        "nonfinite": bad,
    }


class Float64Refused(Exception):
    """The model will not run in float64 (float32 constants inside): the finite-difference
    gradient check needs it, so it is not measured."""


def parameter_groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """The trainable parameters grouped by top-level module (descending while one module holds
    them all), the root's own parameters each a group: [(group, [parameter names])]."""
    prefix, module = "", model
    while True:
        kids = [(n, m) for n, m in module.named_children() if _trainable(m)]
        own = [n for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if len(kids) != 1 or own:
            break
        prefix, module = f"{prefix}{kids[0][0]}.", kids[0][1]
    groups = [(f"{prefix}{n}", [f"{prefix}{n}"]) for n in own]
    for n, m in kids:
        names = [f"{prefix}{n}.{k}" for k, p in m.named_parameters() if p.requires_grad]
        groups.append((f"{prefix}{n}", names))
    return groups


def _trainable(m: nn.Module) -> bool:
    return any(p.requires_grad for p in m.parameters())


def _no_grad_rows(model: nn.Module) -> dict[str, int]:
    """{embedding weight name: its padding_idx}: autograd leaves that row's gradient at zero by
    design, so a direction must not move it."""
    return {
        f"{n}.weight" if n else "weight": m.padding_idx
        for n, m in model.named_modules()
        if isinstance(m, nn.Embedding) and m.padding_idx is not None
    }


def measure_grad_values(model: nn.Module, batch: Batch, task: Task, c) -> dict[str, Any]:
    """Autograd's gradient checked against the loss itself, on a float64 copy in eval mode and the
    batch's first c.grad_check_examples examples: along seeded random unit directions d, g.d from
    autograd vs the central difference (L(theta + eps d) - L(theta - eps d)) / 2 eps, a next
    direction only while they mismatch (grad_mismatch; at most c.grad_check_directions).

    First a screen: one direction across the parameter groups (parameter_groups, at most
    c.grad_check_groups), each group's part of equal length, so that a small group is not
    drowned by a large one; when it matches (2 forwards), that is all. Otherwise each group
    alone, and a group whose every direction mismatches tensor by tensor, to name them. The
    absolute tolerance is c.grad_check_atol x (1 + |L|): float64 rounding in L over 2 eps.
    Returns {"screen", "groups": [{"group", "params", "autograd": [...], "numeric": [...],
    "tensors": [...]}] (empty when the screen matched), "judged" and "of" (how many groups were
    judged, of how many), "loss", "atol"}. Raises Float64Refused when the float64 copy will not
    run. c: stage.shapes."""
    probe, sub, loss = _float64_probe(model, rows(batch, slice(0, c.grad_check_examples)), task)
    dirs = _Directions(probe, sub, loss, task, c)
    every = parameter_groups(probe)
    judged = every[: c.grad_check_groups]
    out: dict[str, Any] = {"groups": [], "of": len(every), "judged": len(judged)}
    out |= {"loss": float(loss.detach()), "atol": dirs.atol, "screen": None}
    names = [n for _, ns in judged for n in ns]
    if not names:
        return out
    with torch.no_grad():
        out["screen"] = dirs.measure("all groups", names, [ns for _, ns in judged])
        if not dirs.wrong(out["screen"]):
            return out
        for group, names in judged:
            entry = dirs.measure(group, names, [names])
            if len(names) > 1 and dirs.wrong(entry):
                entry["tensors"] = [
                    dirs.measure(n, [n], [[n]]) for n in names[: c.grad_check_groups]
                ]
            out["groups"].append(entry)
    return out


class _Directions:
    """Directional derivatives of the loss of a float64 probe: autograd's (one backward, here)
    against central differences (two forwards a direction)."""

    def __init__(self, probe: nn.Module, sub: Batch, loss: torch.Tensor, task: Task, c) -> None:
        self.probe, self.sub, self.task, self.c = probe, sub, task, c
        self.inputs = model_inputs(sub)
        self.params = {n: p for n, p in probe.named_parameters() if p.requires_grad}
        self.atol = c.grad_check_atol * (1.0 + abs(float(loss.detach())))  # rounding in L
        grads = torch.autograd.grad(loss, list(self.params.values()), allow_unused=True)
        self.grad = {
            n: torch.zeros_like(p) if g is None else g
            for (n, p), g in zip(self.params.items(), grads, strict=True)
        }
        self.pad_rows, self.gen = _no_grad_rows(probe), torch.Generator().manual_seed(0)

    def measure(self, group: str, names: list[str], parts: list[list[str]]) -> dict[str, Any]:
        """Directions until one matches, at most c.grad_check_directions; each of `parts` gets
        an equal share of a direction's length."""
        c = self.c
        entry: dict[str, Any] = {"group": group, "params": names, "autograd": [], "numeric": []}
        for _ in range(c.grad_check_directions):
            d: dict[str, torch.Tensor] = {}
            for part in parts:
                unit = _direction(self.params, part, self.pad_rows, self.gen)
                d |= {n: v / math.sqrt(len(parts)) for n, v in unit.items()}
            a = float(sum((self.grad[n] * d[n]).sum() for n in names))
            x = _central_difference(
                self.probe, self.params, d, c.grad_check_eps, self.inputs, self.sub, self.task
            )
            entry["autograd"].append(a)
            entry["numeric"].append(x)
            if not grad_mismatch(a, x, c.grad_check_rtol, self.atol):
                break
        return entry

    def wrong(self, e: dict[str, Any]) -> bool:
        """Every direction of the entry mismatched (it stops at the first that matches)."""
        a, x = e["autograd"][-1], e["numeric"][-1]
        return grad_mismatch(a, x, self.c.grad_check_rtol, self.atol)


def grad_mismatch(autograd: float, numeric: float, rtol: float, atol: float) -> bool:
    """Whether autograd's directional derivative and the central difference disagree beyond
    rtol of the larger plus atol (True for a NaN)."""
    return not abs(autograd - numeric) <= rtol * max(abs(autograd), abs(numeric)) + atol


def _float64_probe(model: nn.Module, sub: Batch, task: Task):
    """An eval-mode float64 copy of the model, the batch with its floats in float64, and the
    task's loss on it (with its graph); Float64Refused when the copy will not run (the model
    ran in its own precision already)."""
    import copy

    try:
        probe = copy.deepcopy(model).double().eval()
        sub = _as_float64(sub)
        for p in probe.parameters():
            p.grad = None
        return probe, sub, task.loss(probe(**model_inputs(sub)), sub)
    except Exception as exc:
        raise Float64Refused(f"a float64 copy of the model does not run ({_error(exc)})") from exc


def _direction(params, names, pad_rows, g: torch.Generator) -> dict[str, torch.Tensor]:
    """A random unit direction over the group's parameters (padding rows of embeddings held)."""
    d = {n: torch.randn(params[n].shape, generator=g, dtype=torch.float64) for n in names}
    for n, row in pad_rows.items():
        if n in d:
            d[n][row] = 0.0
    norm = math.sqrt(sum(float((v * v).sum()) for v in d.values())) or 1.0
    return {n: v / norm for n, v in d.items()}


def _central_difference(probe, params, d, eps: float, inputs, sub, task: Task) -> float:
    """(L(theta + eps d) - L(theta - eps d)) / 2 eps, the parameters restored exactly after."""
    saved = {n: params[n].detach().clone() for n in d}
    losses = []
    try:
        for sign in (1.0, -1.0):
            for n, v in d.items():
                params[n].copy_(saved[n] + sign * eps * v)
            losses.append(float(task.loss(probe(**inputs), sub)))
    finally:
        for n in d:
            params[n].copy_(saved[n])
    return (losses[0] - losses[1]) / (2 * eps)
