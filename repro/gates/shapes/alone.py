"""Each example alone vs inside its padded batch: the forwards, run in a thread of their own.

The 32 batch-of-1 forwards in float64 are the slowest part of the shapes gate; run beside the
gradient checks (one CPU thread each) they hid ~0.2 s of BiMPM's ~0.6 s gate on 2 cores
(README, "What made shapes fast enough": 0.60 -> 0.41 s in-process, measured with
benchmarks/warm_iteration.py). The numbers are the same either way (tested: equal, not close).
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn

from repro.data.batch import Batch, model_inputs
from repro.gates.shapes.measure import (
    _as_float64,
    _error,
    _padding_per_row,
    one_thread,
    preserved,
    trim_padding,
)


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
