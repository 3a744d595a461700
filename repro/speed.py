"""How fast training really steps: a few steps through Lightning on the real training loader.

The full stage's forecast extrapolates from this. A bare loop on one fixed batch (what overfit
times) misses Lightning's per-step overhead, data loading and the batches' real lengths: on the
toy paper its steps took ~1 ms while Lightning's took several. So this runs a short fit (no
logger, no checkpoint, no validation) and a short validation with a callback that times every
batch, and records the spread, the machine's load and what each Lightning call costs around its
batches (Trainer set-up, loaders, teardown) so that the forecast can say how sure it is and leave
out no fixed cost.

On a shared machine wall-clock steps are not a measurement of the code (issue 21: with one
other job on 2 cores, OpenMP's spinning waits made a 0.16 s step take 0.42-19 s and the forecast
24x too wide). So when the CPUs are busy (more runnable threads than free CPUs before timing,
or a step p90/median spread above NOISY_SPREAD after), the sample is taken again on one thread
and timed in this process's CPU seconds: one thread waits for no other, and CPU time does not
count the time other jobs hold the cores. That is the step time on a quiet machine at one
thread, what the forecast then says; if even that spreads, the sample is marked unstable and the
forecast refuses, saying what to do.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field, replace

import pytorch_lightning as pl

from repro.speed_sample import NOISY_SPREAD, SpeedSample
from repro.train.threads import busy_cpus


def measure_speed(module, dm, steps: int, accelerator: str, build_s: float) -> SpeedSample:
    """Time `steps` training steps and as many validation batches of `module` on `dm`'s loaders
    (the first two of each are warm-up and not counted), and what each Lightning call costs
    around its batches, with the thread count training uses (repro.train.threads). Changes the
    module's weights. build_s: the caller's timing of a fresh datamodule and model build (each
    seed of the full stage pays it)."""
    import torch

    from repro.train.threads import apply as apply_threads

    threads = apply_threads().threads
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    on_cpu = accelerator in ("cpu", "auto") and not torch.cuda.is_available()
    load_before = _load()
    busy = busy_cpus(threads, cpus) if on_cpu else ""
    if not busy:
        timed = _time(module, dm, steps, accelerator)
        spread = timed.spread()
        if not on_cpu or spread <= NOISY_SPREAD:
            return timed.sample(dm, build_s, load_before, cpus, threads, "wall")
        busy = f"step p90/median {spread:.1f}x on {threads} threads"
    torch.set_num_threads(1)
    try:
        timed = _time(module, dm, steps, accelerator)
    finally:
        torch.set_num_threads(threads)
    # how much slower the wall clock ran than this process's CPU time: the share of a core it
    # got (the build was timed on the wall clock, as busy: counted back to CPU seconds)
    slowdown = max(1.0, timed.wall_s / timed.cpu_s) if timed.cpu_s > 0 else 1.0
    sample = timed.sample(dm, build_s / slowdown, load_before, cpus, 1, "cpu")
    spread = timed.spread("cpu")
    unstable = ""
    if spread > NOISY_SPREAD:
        unstable = f"step p90/median {spread:.1f}x even on one thread in CPU seconds"
    return replace(sample, busy=busy, unstable=unstable, slowdown=round(slowdown, 3))


@dataclass
class _Timed:
    """One timed fit and validation: per batch and per call, wall and CPU seconds."""

    train: dict[str, list[float]] = field(default_factory=dict)
    evals: dict[str, list[float]] = field(default_factory=dict)
    fit: dict[str, float] = field(default_factory=dict)  # the fit call, start to end
    validate: dict[str, float] = field(default_factory=dict)
    load_after: float | None = None

    @property
    def wall_s(self) -> float:
        return sum(self.train["wall"]) + sum(self.evals["wall"])

    @property
    def cpu_s(self) -> float:
        return sum(self.train["cpu"]) + sum(self.evals["cpu"])

    def counted(self, times: list[float]) -> list[float]:
        return times[2:] or times  # the first two are warm-up

    def spread(self, clock: str = "wall") -> float:
        train = self.counted(self.train[clock])
        median = statistics.median(train)
        return _p90(train) / median if median > 0 else 1.0

    def sample(self, dm, build_s, load_before, cpus, threads: int, clock: str) -> SpeedSample:
        """The sample in `clock` seconds ("wall" or "cpu") on `threads` threads."""
        train, evals = self.counted(self.train[clock]), self.counted(self.evals[clock])
        load_after = self.load_after
        return SpeedSample(
            batch_size=dm.cfg.batch_size,
            eval_batch_size=dm.cfg.eval_batch,
            train_steps=len(train),
            train_median_s=statistics.median(train),
            train_p90_s=_p90(train),
            eval_median_s=statistics.median(evals),
            eval_p90_s=_p90(evals),
            fit_overhead_s=max(0.0, self.fit[clock] - sum(self.train[clock])),
            eval_overhead_s=max(0.0, self.validate[clock] - sum(self.evals[clock])),
            build_s=build_s,
            load_avg=max(load_before, load_after)
            if load_before is not None and load_after is not None
            else None,
            cpus=cpus,
            clock=clock,
            threads=threads,
        )


def _time(module, dm, steps: int, accelerator: str) -> _Timed:
    timer = _Timer()
    common = dict(
        accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    out = _Timed()
    t0 = _now()
    fit = pl.Trainer(max_steps=steps + 2, limit_val_batches=0, num_sanity_val_steps=0, **common)
    fit.fit(module, datamodule=dm)
    t1 = _now()
    pl.Trainer(limit_val_batches=steps + 2, **common).validate(module, datamodule=dm, verbose=False)
    t2 = _now()
    out.load_after = _load()
    out.train, out.evals = timer.train, timer.eval
    out.fit = {k: t1[k] - t0[k] for k in t0}
    out.validate = {k: t2[k] - t1[k] for k in t1}
    return out


def _now() -> dict[str, float]:
    return {"wall": time.perf_counter(), "cpu": time.process_time()}


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


class _Timer(pl.Callback):
    """Seconds per batch, start to next start (wall clock and this process's CPU time): the
    loader's fetch and every hook are inside."""

    def __init__(self):
        self.train: dict[str, list[float]] = {"wall": [], "cpu": []}
        self.eval: dict[str, list[float]] = {"wall": [], "cpu": []}
        self._last: dict[str, float] | None = None

    def _tick(self, times: dict[str, list[float]]) -> None:
        now = _now()
        if self._last is not None:
            for k in times:
                times[k].append(now[k] - self._last[k])
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
