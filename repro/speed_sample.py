"""What timing training steps records (repro/speed.py measures it, the overfit gate records it in
its metrics, the full stage's forecast reads it): a plain dataclass, cheap to import."""

from __future__ import annotations

from dataclasses import dataclass

NOISY_SPREAD = 1.5  # p90 / median above this, or a load above the CPUs: a noisy measurement


@dataclass(frozen=True)
class SpeedSample:
    """Step times of training (forward + backward + optimizer) and of evaluation (forward),
    measured through Lightning on the real loaders (repro/speed.py)."""

    batch_size: int
    eval_batch_size: int
    train_steps: int  # how many training steps were timed
    train_median_s: float
    train_p90_s: float
    eval_median_s: float
    eval_p90_s: float
    fit_overhead_s: float  # a Trainer.fit call's time outside its batches (set-up, teardown)
    eval_overhead_s: float  # the same for a validate or test call
    build_s: float  # building the datamodule (set up) and the model afresh, as each seed does
    load_avg: float | None  # 1-minute load average while measuring
    cpus: int | None
    # issue 21: on busy CPUs the sample is taken again on one thread in CPU seconds ("cpu"),
    # which other jobs barely change; "wall": wall-clock seconds on `threads` threads
    clock: str = "wall"
    threads: int | None = None  # torch threads while timing
    busy: str = ""  # why the CPUs counted as busy ("" when they did not)
    slowdown: float = 1.0  # "cpu": wall / CPU seconds of the one-thread sample (how busy)
    unstable: str = ""  # why even the stable way was not stable: the forecast refuses
