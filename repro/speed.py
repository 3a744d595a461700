"""How fast training really steps: a few steps through Lightning on the real training loader.

The full stage's forecast extrapolates from this. A bare loop on one fixed batch (what overfit
times) misses Lightning's per-step overhead, data loading and the batches' real lengths: on the
toy paper its steps took ~1 ms while Lightning's took several. So this runs a short fit (no
logger, no checkpoint, no validation) and a short validation with a callback that times every
batch, and records the spread, the machine's load and what each Lightning call costs around its batches (Trainer set-up,
loaders, teardown) so that the forecast can say how sure it is and leave out no fixed cost.
"""

from __future__ import annotations

import os
import statistics
import time

import pytorch_lightning as pl

from repro.gates.metrics import SpeedSample


def measure_speed(module, dm, steps: int, accelerator: str, build_s: float) -> SpeedSample:
    """Time `steps` training steps and as many validation batches of `module` on `dm`'s loaders
    (the first two of each are warm-up and not counted), and what each Lightning call costs
    around its batches. Changes the module's weights. build_s: the caller's timing of a fresh
    datamodule and model build (each seed of the full stage pays it)."""
    timer = _Timer()
    common = dict(
        accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    load_before = _load()
    t0 = time.perf_counter()
    fit = pl.Trainer(max_steps=steps + 2, limit_val_batches=0, num_sanity_val_steps=0, **common)
    fit.fit(module, datamodule=dm)
    t1 = time.perf_counter()
    pl.Trainer(limit_val_batches=steps + 2, **common).validate(module, datamodule=dm, verbose=False)
    t2 = time.perf_counter()
    load_after = _load()
    train, evals = timer.train[2:] or timer.train, timer.eval[2:] or timer.eval
    return SpeedSample(
        batch_size=dm.cfg.batch_size,
        eval_batch_size=dm.cfg.eval_batch,
        train_steps=len(train),
        train_median_s=statistics.median(train),
        train_p90_s=_p90(train),
        eval_median_s=statistics.median(evals),
        eval_p90_s=_p90(evals),
        fit_overhead_s=max(0.0, (t1 - t0) - sum(timer.train)),
        eval_overhead_s=max(0.0, (t2 - t1) - sum(timer.eval)),
        build_s=build_s,
        load_avg=max(load_before, load_after)
        if load_before is not None and load_after is not None
        else None,
        cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    )


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


class _Timer(pl.Callback):
    """Seconds per batch, start to next start: the loader's fetch and every hook are inside."""

    def __init__(self):
        self.train: list[float] = []
        self.eval: list[float] = []
        self._last: float | None = None

    def _tick(self, times: list[float]) -> None:
        now = time.perf_counter()
        if self._last is not None:
            times.append(now - self._last)
        self._last = now

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._tick(self.train)

    def on_train_end(self, trainer, pl_module):
        self._tick(self.train)
        self._last = None

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._tick(self.eval)

    def on_validation_end(self, trainer, pl_module):
        self._tick(self.eval)
        self._last = None
