"""The shapes gate: a real and a dummy batch through the model, measured, then judged.

Measurements (`measure_*`, `count_params`) run the model and return numbers; judgements
(`check_*`) are small pure functions from those numbers to a Check; `run_shapes` gathers one
from the other into a Verdict. Every measurement restores the model's train/eval modes,
requires_grad flags and .grad tensors, so the gate leaves the model as it found it.

What it judges: the output fits the paper's task (repro/tasks: logits (B, C) for a classifier,
(B, T, V) per position, a value or a score per example); the loss at init vs what the task
expects (ln C, ln V, mean(y²) ...); outputs that are logits, not probabilities, where the loss
applies a softmax; a gradient to every trainable parameter; no gradient from one example's loss
to another's input; two eval forwards identical (nothing random at eval); each example's output
alone, trimmed to its own length, equal to its output inside the padded batch (padding masked,
examples not mixed); frozen parameters named (and failed outside embeddings unless declared);
zeroed inputs change the output; an odd batch size works; everything finite; the parameter count
(issue 13 for the checks that came from its bug zoo).

A batch is a dict of tensors with "label" (and "group" for ranking); the other keys are the
model's keyword arguments (repro/data/batch.py). Integer inputs use id 0 for padding and 1 for
"unknown".
"""

from __future__ import annotations

import math
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from repro.config.schema import ShapesStage
from repro.data.batch import TARGET_KEYS, Batch, model_inputs, rows
from repro.errors import PaperError
from repro.gates.metrics import ShapesMetrics
from repro.tasks.base import InitLoss, Task
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


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" ... and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def _max(a: float, b: float) -> float:
    """max that keeps a NaN (Python's max(0.0, nan) is 0.0)."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


# ---- measurements -----------------------------------------------------------------------------
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


def measure_alone_vs_batch(model: nn.Module, batch: Batch, examples: int) -> dict[str, Any]:
    """Eval mode, no grad, float64 where the model allows it: each of `examples` examples (those
    with the most padding) alone in a batch of 1, trimmed to its own length (trim_padding), vs
    its logits inside the batch. Where they differ, the worst example also runs alone as padded
    in the batch, to tell the two causes apart: batch_gap = max |alone as padded - in batch|
    (its batch-mates change its output) and pad_gap = max |trimmed - alone as padded| (the amount
    of padding changes it: padding not masked). The gradient-leak check cannot see the second: a
    constant pad carries no gradient from one example to another."""
    return start_alone_vs_batch(model, batch, examples, background=False).result()


def start_alone_vs_batch(
    model: nn.Module, batch: Batch, examples: int, background: bool = True
) -> AloneRows:
    """measure_alone_vs_batch, begun: a copy of the model is taken here; the rest runs on that
    copy, in a thread of its own when `background`, while the caller goes on measuring the model
    itself. `.result()` waits for it and returns the measurement."""
    import copy

    inputs = model_inputs(batch)
    order = torch.argsort(_padding_per_row(inputs), descending=True, stable=True)
    pending = AloneRows(model, inputs, order[:examples].tolist())
    try:
        pending.probe = copy.deepcopy(model)
    except Exception as exc:  # measured on the model itself, after the caller is done with it
        pending.fallback = f"float64 copy failed ({_error(exc)})"
    if background and pending.probe is not None:
        pending.start()
    return pending


class AloneRows:
    """measure_alone_vs_batch's forwards: the model's logits on the whole batch and on each
    example alone, on `probe`, a float64 copy (rounding ~1e-16 can neither hide a real difference
    nor fake one). A model that will not run in float64 (float32 constants inside) is measured as
    it is, in its own precision, and the note says so; that runs in the caller's thread, as the
    model itself must not be shared with the caller's measurements.

    In a thread the forwards take one CPU thread and the caller's measurements the others: on
    2 cores this hid ~0.2 s of BiMPM's ~0.6 s shapes gate. The numbers are the same either way:
    one thread, float64, one example per forward."""

    def __init__(self, model: nn.Module, inputs: Batch, rows: list[int]) -> None:
        self.model, self.inputs, self.rows = model, inputs, rows
        self.probe: nn.Module | None = None
        self.fallback: str | None = None  # why the float64 copy could not be used
        self.out: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._in_thread, name="repro-alone-vs-batch")
        self._thread.daemon = True  # a Ctrl-C in the caller cancels it (result / cancel)
        self._thread.start()

    def _in_thread(self) -> None:
        try:
            with one_thread(), torch.no_grad():  # both per thread: the caller's are its own
                self._run_on_probe()
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def _run_on_probe(self) -> None:
        try:
            probe = self.probe.double().eval()
            in_batch = probe(**_as_float64(self.inputs))  # (B, C)
        except Exception as exc:  # float32 constants inside the model: the caller measures it
            self.fallback = f"float64 copy failed ({_error(exc)})"
            return
        self.out = self._rows(probe, _as_float64, in_batch, None)

    def _run_on_model(self) -> None:
        model = self.model
        dtype = next((p.dtype for p in model.parameters()), torch.float32)
        note = f"{self.fallback}: measured in {dtype}"
        with preserved(model), torch.no_grad(), one_thread():
            model.eval()
            self.out = self._rows(model, lambda b: b, model(**self.inputs), note)

    def _rows(self, probe, cast, in_batch: torch.Tensor, note: str | None) -> dict[str, Any]:
        inputs = self.inputs
        out = {"rows": self.rows, "dtype": str(in_batch.dtype).removeprefix("torch.")}
        out |= {"note": note, "scale": float(in_batch.abs().max())}
        out |= {"trim_error": None, "padded_rows": 0}
        worst, worst_gap, worst_one = None, -1.0, None
        for i in self.rows:
            if self._cancel.is_set():
                return out
            one = {k: v[i : i + 1] for k, v in inputs.items()}
            trimmed = trim_padding(one) if out["trim_error"] is None else one
            padded = any(trimmed[k].shape != one[k].shape for k in one)
            try:
                gap = row_gap(probe(**cast(trimmed))[0], in_batch[i])
            except Exception as exc:  # a model that needs the batch's length: padding untested
                if not padded:
                    raise AloneError(i, exc) from exc
                out["trim_error"], trimmed, padded = _error(exc), one, False
                try:
                    gap = row_gap(probe(**cast(one))[0], in_batch[i])
                except Exception as exc:
                    raise AloneError(i, exc) from exc
            out["padded_rows"] += padded
            if not gap <= worst_gap:  # NaN counts as the worst
                worst, worst_gap, worst_one = i, gap, (one, trimmed, padded)
        out |= {"gap": worst_gap, "row": worst}
        return out | _split_gap(probe, cast, in_batch, worst, worst_gap, worst_one)

    @property
    def threaded(self) -> bool:
        """Whether the forwards run in a thread of their own (started, maybe done by now)."""
        return self._thread is not None

    def result(self) -> dict[str, Any]:
        """The measurement: waits for the thread, or runs here what did not run in one (all of
        it when not started, or on the model itself when the float64 copy failed); an error of
        the model's is raised here."""
        if self._thread is not None:
            try:
                self._thread.join()
            except BaseException:
                self.cancel()
                raise
        elif self.probe is not None:
            with one_thread(), torch.no_grad():
                self._run_on_probe()
        if self._error is not None:
            raise self._error
        if self.out is None:
            self._run_on_model()
        return self.out

    def cancel(self) -> None:
        """Stop after the forward under way (a run interrupted or failed elsewhere)."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join()


class AloneError(Exception):
    """One example alone (a batch of 1) made the model raise: a bug of its own (a squeeze() that
    drops the batch dim, a shape hard-coded from the batch)."""

    def __init__(self, row: int, exc: BaseException):
        super().__init__(
            f"example {row} alone (a batch of 1) raised {_error(exc)}: a model must take any "
            "batch size (a squeeze() that drops the batch dim?)"
        )


def _split_gap(probe, cast, in_batch, row, gap, ones) -> dict[str, Any]:
    """The worst example's gap split into its two causes (one more forward, as padded, only
    when the example was trimmed and its gap is not zero)."""
    one, trimmed, padded = ones
    if not padded:
        return {"batch_gap": gap, "batch_row": row, "pad_gap": 0.0, "pad_row": None}
    if gap == 0.0:
        return {"batch_gap": 0.0, "batch_row": row, "pad_gap": 0.0, "pad_row": row}
    alone = probe(**cast(one))[0]  # (C,): alone, as padded in the batch
    return {
        "batch_gap": row_gap(alone, in_batch[row]),
        "batch_row": row,
        "pad_gap": row_gap(probe(**cast(trimmed))[0], alone),
        "pad_row": row,
        "pad_lengths": _lengths(one, trimmed),
    }


def row_gap(alone: torch.Tensor, in_batch: torch.Tensor) -> float:
    """max |alone - in_batch| over the positions both have: an output per position (a sequence
    task's (T, V)) of an example trimmed to its own length covers the first positions of its row
    in the padded batch; the padded positions after them carry no prediction."""
    if alone.shape != in_batch.shape and alone.dim() == in_batch.dim():
        in_batch = in_batch[tuple(slice(0, n) for n in alone.shape)]
    return float((alone - in_batch).abs().max()) if alone.numel() else 0.0


def _lengths(one: Batch, trimmed: Batch) -> str:
    """'p_words 9 of 16, q_words 8 of 15': each id sequence's own length vs the batch's."""
    seqs = [k for k, v in one.items() if not v.is_floating_point() and v.dim() == 2] or [
        k for k, v in one.items() if not v.is_floating_point() and v.dim() > 2
    ]
    return ", ".join(f"{k} {trimmed[k].shape[1]} of {one[k].shape[1]}" for k in seqs)


def measure_frozen(model: nn.Module) -> list[dict[str, Any]]:
    """Every parameter with requires_grad False: name, the type of the module that owns it, size."""
    owners = {id(p): type(m).__name__ for m in model.modules() for p in m.parameters(recurse=False)}
    return [
        {"name": n, "module": owners.get(id(p), "?"), "numel": p.numel()}
        for n, p in model.named_parameters()
        if not p.requires_grad
    ]


def measure_output_range(logits: torch.Tensor) -> dict[str, float]:
    """min and max of the outputs, and how far the rows (over the last dim: the classes) are from
    summing to 1 (probabilities)."""
    return {
        "min": float(logits.min()),
        "max": float(logits.max()),
        "row_sum_gap": float((logits.sum(-1) - 1).abs().max()),
        "spread": float(logits.std(-1).mean()) if logits.shape[-1] > 1 else 0.0,
    }


# ---- judgements -------------------------------------------------------------------------------
def check_output_shape(shape: tuple[int, ...] | None, problem: str | None, task: str) -> Check:
    """The model's output fits the task (`problem`: what is wrong with it, None when it fits)."""
    ev = {"shape": list(shape) if shape is not None else None, "task": task}
    if problem is not None:
        return Check("output_shape", False, f"{problem} ({task} task)", ev)
    return Check("output_shape", True, f"output shape {tuple(shape)} fits the {task} task", ev)


def check_init_loss(
    loss: float,
    expected: InitLoss | None,
    rel_tol: float,
    spread: float | None = None,
    output_layer: str | None = None,
) -> Check:
    """At init a model should be unsure: its loss near what the task expects (ln C for a
    classifier, mean(y²) for a regressor whose outputs start near 0 ...), within rel_tol times
    the expectation's scale. No expectation (a paper's own task states none): not measured.

    spread: the mean standard deviation of a row's logits (how confident the model starts);
    output_layer: the layer repro's init started small ("" when repro's init found none, None
    when unknown), so the reason can say what to change."""
    if expected is None:
        return Check.not_measured(
            "init_loss", f"the task states no loss expected at init (loss {loss:.4g})"
        )
    value, tol = expected.value, rel_tol * expected.scale
    gap = abs(loss - value)
    ok = gap <= tol  # False for NaN
    reason = (
        f"loss at init {loss:.4g} vs {expected.label} = {value:.4g} ({expected.why}): "
        f"|gap| {gap:.4g} {'<=' if ok else '>'} tol {tol:.4g} ({rel_tol:g} x {expected.label})"
    )
    if not ok and loss > value:
        reason += _init_too_confident(spread, output_layer)
    elif not ok and loss < value:
        reason += (
            f": below {expected.label}, the model knows the labels before training: a label "
            "leaked into the inputs, or the outputs and labels do not make the task's loss"
        )
    ev = {"loss": loss, "expected": value, "tol": tol, "spread": spread, "label": expected.label}
    return Check("init_loss", ok, reason, ev)


def _init_too_confident(spread: float | None, output_layer: str | None) -> str:
    """Why a loss at init far above the expectation, and what to change (Karpathy's Recipe: init
    well)."""
    why = ": the initial outputs are large"
    why += f" (each row's logits spread by {spread:.3g} on average)" if spread is not None else ""
    why += ", so the model is confidently wrong before it has learnt anything; "
    if output_layer:
        return why + (
            f"repro's init started the output layer {output_layer} small (Xavier x 0.1), so what "
            "feeds it is large (un-normalised inputs? a missing normalisation?), or the output "
            "layer is another one: mark that one with init_nonlinearity = 'output'"
        )
    return why + (
        "start the output layer small (repro's he_xavier init does it for the last "
        "Linear/Conv, or the one marked init_nonlinearity = 'output') or scale the logits down"
    )


def roundoff_tol(dtype: str, scale: float, eps_units: float) -> float:
    """What rounding alone can explain between two computations of logits of size `scale`:
    eps_units machine epsilons of `dtype`, times (1 + scale)."""
    return eps_units * torch.finfo(getattr(torch, dtype)).eps * (1.0 + scale)


def check_eval_repeat(max_change: float, tol: float) -> Check:
    """Two eval-mode forwards of one batch must agree to rounding: nothing random at eval."""
    ok = max_change <= tol  # False for NaN
    return Check(
        "eval_deterministic",
        ok,
        f"two eval-mode forwards of the same batch differ by {max_change:.3g} "
        f"{'<=' if ok else '>'} {tol:.2g}"
        + (
            ""
            if ok
            else ": something random stays on in eval mode (dropout called with training=True or "
            "without self.training, a noise layer): evaluation would not be reproducible"
        ),
        {"max_change": max_change, "tol": tol},
    )


def check_alone_vs_batch(m: dict[str, Any], eps_units: float) -> Check:
    """An example's logits alone (trimmed to its own length) must equal its logits inside the
    padded batch, to rounding (roundoff_tol in the measured dtype); a failure names the cause:
    its batch-mates (batch_gap) or the padding they make it carry (pad_gap)."""
    tol = roundoff_tol(m["dtype"], m["scale"], eps_units)
    keys = ("gap", "row", "batch_gap", "pad_gap", "padded_rows", "trim_error", "rows")
    ev = {k: m.get(k) for k in keys} | {"tol": tol, "dtype": m["dtype"]}
    where = f"({m['dtype']}{'; ' + m['note'] if m['note'] else ''})"
    if m["gap"] <= tol:
        padded = f"{m['padded_rows']} of them padded in the batch"
        reason = (
            f"{len(m['rows'])} examples alone, trimmed to their own length ({padded}), vs inside "
            f"the batch: max |Δlogits| {m['gap']:.2g} <= {tol:.2g} {where}"
        )
        if m["trim_error"]:
            reason += f"; trimming raised {m['trim_error']}, so padding was not tested"
        elif not m["padded_rows"]:
            reason += ": padding was not tested"
        return Check("alone_vs_batch", True, reason, ev)
    if not m["batch_gap"] <= tol:
        reason = (
            f"example {m['row']}'s logits alone (a batch of 1) differ from inside the batch by "
            f"{m['batch_gap']:.3g} > {tol:.2g} {where}: its output depends on its batch-mates, "
            "though nothing should mix examples in eval mode (statistics over the batch? a "
            "reshape or mean across dim 0?)"
        )
    else:
        reason = (
            f"example {m['row']} trimmed to its own length ({m.get('pad_lengths')}) gives logits "
            f"{m['pad_gap']:.3g} away from the same example padded as in its batch (> {tol:.2g} "
            f"{where}): its output depends on its batch-mates' padding, so padding is not masked: "
            "an LSTM/GRU run over the pads (lengths ignored: pack the sequence or take the state "
            "at each row's length), or a max/mean/attention over padded positions (mask them)"
        )
    return Check("alone_vs_batch", False, reason, ev)


_FIXED_OK = ("Embedding", "EmbeddingBag")  # fixed (pretrained) vectors are common and intended


def check_frozen(frozen: list[dict[str, Any]], allowed: list[str]) -> Check:
    """Frozen parameters are named. Frozen embeddings pass (fixed pretrained vectors, e.g. BiMPM's
    word vectors, are common and intended) and so do names matching stage.shapes.frozen_ok; any
    other frozen parameter fails: no gradient check can see it, and a layer frozen by mistake
    (a leftover requires_grad_(False), a loaded backbone left frozen) silently trains less."""
    from fnmatch import fnmatchcase

    def fixed(f: dict[str, Any]) -> bool:
        return f["module"] in _FIXED_OK or any(fnmatchcase(f["name"], a) for a in allowed)

    def show(fs: list[dict[str, Any]]) -> str:
        return _names([f"{f['name']} ({f['module']}, {f['numel']:,})" for f in fs])

    bad = [f for f in frozen if not fixed(f)]
    ev = {"frozen": [f["name"] for f in frozen], "unexpected": [f["name"] for f in bad]}
    if bad:
        reason = (
            f"{len(bad)} frozen parameters (requires_grad False: never trained) that are not "
            f"embeddings: {show(bad)}; if the paper fixes them, list them in stage.shapes."
            "frozen_ok, else make them trainable (requires_grad_(True))"
        )
        return Check("frozen_params", False, reason, ev)
    if not frozen:
        return Check("frozen_params", True, "no frozen parameters", ev)
    reason = (
        f"frozen, never trained: {show(frozen)}; intended only if the paper fixes them "
        "(nn.Embedding.from_pretrained freezes unless freeze=False)"
    )
    return Check("frozen_params", True, reason, ev)


def probability_floor(num_classes: int) -> float:
    """The lowest cross-entropy that outputs in [0, 1] fed as logits can reach: one-hot
    probabilities, -ln(e / (e + C - 1)) (0.5514 for C = 3, 0.3133 for C = 2)."""
    return -math.log(math.e / (math.e + num_classes - 1))


def check_logits(out: dict[str, float], num_classes: int, tol: float) -> Check:
    """Cross-entropy expects logits: outputs in [0, 1] whose rows sum to 1 are probabilities.

    Only rows summing to 1 are judged: outputs merely inside [0, 1] can be a correct model's at
    init (measured: BiMPM's small-init logits all lay in [-0.073, -0.0001], nearly the same for
    every example), so a sigmoid is left to the overfit gate, which sees the loss floor."""
    lo, hi, sum_gap = out["min"], out["max"], out["row_sum_gap"]
    probabilities = lo >= -tol and hi <= 1 + tol and sum_gap <= tol
    if probabilities:
        reason = (
            f"every output lies in [{lo:.3g}, {hi:.3g}] and each row sums to 1 (max |sum - 1| "
            f"{sum_gap:.2g}): the model outputs probabilities; cross-entropy expects logits (it "
            "applies log-softmax itself): drop the softmax (training would stall at the "
            f"cross-entropy floor of probabilities, {probability_floor(num_classes):.4f})"
        )
    else:
        reason = f"outputs span [{lo:.3g}, {hi:.3g}], rows sum to 1 +- {sum_gap:.3g}: logits"
    return Check("logits", not probabilities, reason, dict(out))


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
    problem: str | None = None,
    nonfinite: int = 0,
    error: str | None = None,
) -> Check:
    """A batch of an unusual size must give finite outputs that fit the task (`problem`: what is
    wrong with them, None when they fit)."""
    if error is not None:
        ok, reason = False, f"dummy batch of {batch_size} raised {error}"
    elif problem is not None:
        ok, reason = False, f"dummy batch of {batch_size}: {problem}"
    elif nonfinite:
        ok, reason = False, f"dummy batch of {batch_size}: {nonfinite} non-finite outputs"
    else:
        ok, reason = True, f"dummy batch of {batch_size} -> finite outputs {tuple(shape or ())}"
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
    init = ctx.model_info.init if ctx.model_info is not None else None
    return run_shapes(
        model, batch, dm.task, ctx.cfg.stage.shapes, ctx.cfg.paper.expected_params, init
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
    size = batch["label"].shape[0]
    params = count_params(model)
    evidence: dict[str, Any] = {"batch_size": size, "task": task.name}
    if task.num_classes is not None:
        evidence["num_classes"] = task.num_classes
    checks = [
        check_param_count(params["trainable"], params["total"], expected_params, c.params_rel_tol)
    ]
    measure = _Attempts(checks, evidence, size)
    expected = task.init_loss(batch)

    def verdict(init_loss: float | None = None) -> Verdict:
        metrics = _metrics(task, expected, init_loss, params)
        return Verdict.from_checks(STAGE, checks, evidence, metrics)

    fwd = measure("forward", lambda: measure_forward(model, batch, task))
    if fwd is None:
        return verdict()
    evidence["output_shape"] = list(fwd["shape"]) if fwd["shape"] is not None else None
    checks.append(check_output_shape(fwd["shape"], fwd["problem"], task.name))
    if not checks[-1].passed:  # the other measurements need an output that fits the task
        evidence["not_run"] = f"the other checks need {task.output_contract}"
        return verdict()
    _output_checks(fwd, task, expected, c, _output_layer(init), checks, evidence)
    nonfinite = {
        "logits": fwd["logits_nonfinite"],
        "loss at init": int(not math.isfinite(fwd["loss"])),
    }
    _gradient_and_row_checks(model, batch, task, fwd, c, measure, checks, evidence)
    checks.append(check_frozen(measure_frozen(model), list(c.frozen_ok)))
    evidence["frozen_params"] = checks[-1].evidence["frozen"]
    zero = measure("zero_input", lambda: measure_zero_input(model, batch, fwd["logits"], task))
    if zero is not None:
        checks.append(check_zero_input(zero["max_change"], c.zero_input_min_change))
        evidence["zero_input_change"], evidence["zero_input_loss"] = (
            zero["max_change"],
            zero["loss"],
        )
    nonfinite["dummy logits"] = _dummy_check(model, batch, task, c, checks, evidence)
    checks.append(check_finite(nonfinite))
    return verdict(fwd["loss"])


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
    fwd, task: Task, expected: InitLoss | None, c: ShapesStage, output_layer, checks, evidence
) -> None:
    """Loss at init vs the task's expectation, and outputs that are logits (not probabilities)
    where the task's loss applies a softmax."""
    logits = fwd["logits"]
    out = measure_output_range(logits) if not fwd["logits_nonfinite"] else None
    spread = out["spread"] if out and task.outputs_logits(logits) else None
    checks.append(check_init_loss(fwd["loss"], expected, c.init_loss_rel_tol, spread, output_layer))
    if out is not None:
        evidence["output_range"] = [out["min"], out["max"]]
        if task.outputs_logits(logits):
            dtype = str(logits.dtype).removeprefix("torch.")
            tol = roundoff_tol(dtype, 1.0, c.roundoff_eps)
            checks.append(check_logits(out, logits.shape[-1], tol))


def _gradient_and_row_checks(model, batch, task, fwd, c: ShapesStage, measure, checks, evidence):
    """The gradient checks on the model while the alone-vs-batch forwards run in a thread, on a
    float64 copy: the thread takes one CPU thread, the gradient checks the others."""
    finish_rows, pending = _row_checks(model, batch, fwd, c, measure, evidence)
    try:
        busy = 1 if pending is not None and pending.threaded else 0  # not "still running":
        # the thread count, hence the last bits of the gradients, must not depend on timing
        with torch_threads(torch.get_num_threads() - busy):
            _gradient_checks(model, batch, task, c, measure, checks, evidence)
    except BaseException:
        if pending is not None:
            pending.cancel()
        raise
    finish_rows(checks)


def _row_checks(model, batch, fwd, c: ShapesStage, measure, evidence):
    """Eval forwards repeat exactly, and each example's logits are the same alone as in the batch
    (judged only when eval is deterministic and the logits finite: else both differ anyway).
    Measured now, the alone forwards left running in a thread (start_alone_vs_batch); the
    returned function waits for them and appends both checks."""
    rep = None
    if not fwd["logits_nonfinite"]:
        rep = measure(
            "eval_deterministic", lambda: measure_eval_repeat(model, batch, fwd["logits"])
        )
    repeat_check = None
    if rep is not None:
        tol = roundoff_tol(rep["dtype"], rep["scale"], c.roundoff_eps)
        repeat_check = check_eval_repeat(rep["max_change"], tol)
    repeats = repeat_check is not None and repeat_check.passed
    pending = None
    if repeats:
        pending = measure(
            "alone_vs_batch", lambda: start_alone_vs_batch(model, batch, c.alone_examples)
        )

    def finish(checks: list[Check]) -> None:
        if repeat_check is None:
            return
        checks.append(repeat_check)
        if not repeats:
            evidence["alone_vs_batch"] = "not judged: two eval forwards of one batch already differ"
            return
        rows = measure("alone_vs_batch", pending.result) if pending is not None else None
        if rows is not None:
            checks.append(check_alone_vs_batch(rows, c.roundoff_eps))
            evidence["alone_vs_batch"] = checks[-1].evidence

    return finish, pending


def _dummy_check(model, batch, task: Task, c: ShapesStage, checks, evidence) -> int:
    """A batch of an unusual size through the model; returns its number of non-finite logits."""
    dummy = measure_dummy_batch(model, batch, task, c.dummy_batch_size)
    checks.append(
        check_dummy_batch(
            dummy["shape"],
            c.dummy_batch_size,
            dummy["problem"],
            dummy["nonfinite"],
            dummy["error"],
        )
    )
    evidence["dummy_output_shape"] = dummy["shape"] and list(dummy["shape"])
    return dummy["nonfinite"]


def _gradient_checks(model, batch, task, c: ShapesStage, measure, checks, evidence) -> None:
    """Gradient flow to every parameter, and no gradient from one example's loss to another's input."""
    grads = measure("grad_flow", lambda: measure_grad_flow(model, batch, task))
    if grads is not None:
        checks.append(check_grad_flow(grads, c.grad_atol))
        evidence["no_grad_params"] = checks[-1].evidence["no_grad"]
    leak = measure(
        "batch_independence",
        lambda: measure_batch_independence(model, batch, task, c.independence_examples),
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
            reason = (
                str(exc)
                if isinstance(exc, AloneError)
                else f"the model raised {_error(exc)} {where}"
            )
            self.checks.append(Check(name, False, reason))
            self.evidence[f"{name}_traceback"] = traceback.format_exc()
            return None
