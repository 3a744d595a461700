"""Forecast the full stage's wall time and peak memory from what earlier stages measured.

Inputs come from the milestone records on the current fingerprint: the overfit gate's speed
sample (training and evaluation steps timed through Lightning on the real loaders, with their
spread and the machine's load, repro/speed.py), the data gate's split sizes, the model's
parameter count and the overfit process's peak RSS. It is arithmetic, not a simulation: see
`forecast_full` for every assumption. A measurement on other code, config or data is not used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from repro.config.schema import RunConfig
from repro.records.record import RecordedActual
from repro.speed_sample import NOISY_SPREAD

BYTES_PER_WEIGHT = 4  # fp32, every parameter
# fp32 gradient + Adam's two moments: trainable parameters only (issue 21: BiMPM's 32M frozen
# embedding weights were counted at 16 bytes, 504 MB of state that is really 11 MB)
BYTES_PER_TRAINABLE = 12
MARGIN = 1.5  # the bound's step time is the p90 step x this; x 2 when the sample was noisy
# A sample in CPU seconds that ran this much slower on the wall clock (under a quarter of a
# core): how long training takes depends on the other jobs more than on the code; the forecast
# refuses (issue 21). Below it, the slowdown is counted into the forecast.
MAX_SLOWDOWN = 4.0
# What to do when the CPUs are shared (issue 21; measured in benchmarks/threads_contention.py)
SHARED_ADVICE = (
    "on a shared machine start repro with OMP_WAIT_POLICY=PASSIVE (waiting threads sleep "
    "instead of spinning) or OMP_NUM_THREADS=1"
)
# Not measured: each seed's plots (matplotlib), result files and checkpoint writes. Measured on
# the toy paper (2 epochs): ~0.3-0.5 s per seed; the bound allows this much.
PER_SEED_SLACK_S = 1.0


@dataclass
class ForecastInputs:
    train_step_s: float  # median training step at `measured_batch`
    train_p90_s: float
    eval_step_s: float  # median evaluation step at `measured_eval_batch`
    eval_p90_s: float
    fit_overhead_s: float  # a fit call's time outside its batches (Trainer set-up, teardown)
    eval_overhead_s: float  # a validate or test call's (also charged to each epoch's validation)
    build_s: float  # a fresh datamodule and model, as each seed builds them
    measured_batch: int
    measured_eval_batch: int
    n_train: int
    n_val: int
    n_test: int
    batch_size: int
    eval_batch_size: int
    max_epochs: int
    seeds: int = 1
    lr_finder_steps: int = 0  # 0 when optim.lr is set (no finder)
    limit_train_batches: float | int | None = None
    params: int | None = None
    trainable_params: int | None = None  # None (an older record): all of `params` counted
    overfit_peak_rss_mb: float | None = None
    device: str = "cpu"
    load_avg: float | None = None  # while the speed was measured
    cpus: int | None = None
    clock: str = "wall"  # "cpu": measured on one thread in CPU seconds, the CPUs being busy
    busy: str = ""  # why the CPUs counted as busy
    slowdown: float = 1.0  # "cpu": how much slower than its CPU time the sample ran (how busy)
    # full's preflight (repro/gates/preflight.py), once before the first seed: its training steps
    # (0: off), their time cap, the val examples it evaluates twice (the model, the baseline)
    preflight_steps: int = 0
    preflight_max_s: float = 0.0
    preflight_val: int = 0
    preflight_only: bool = False  # --preflight-only: nothing after it


def scaled(step_s: float, measured_batch: int, batch: int) -> float:
    """A step at `batch` from one measured at `measured_batch`: scaled up linearly when larger
    (never scaled down: small steps are overhead-bound)."""
    return step_s * max(1.0, batch / max(1, measured_batch))


def train_batches(n_train: int, batch: int, limit: float | int | None) -> int:
    n = math.ceil(n_train / batch)
    if limit is None:
        return n
    if isinstance(limit, float) and limit <= 1.0:
        return max(1, int(n * limit))
    return min(n, int(limit))


def margin(i: ForecastInputs) -> tuple[float, bool]:
    """(the bound's factor on the p90 step, whether the measurement was noisy)."""
    spread = i.train_p90_s / i.train_step_s if i.train_step_s else 1.0
    # CPU seconds on one thread do not count the time other jobs hold the cores
    loaded = (
        i.clock == "wall" and i.load_avg is not None and i.cpus is not None and i.load_avg > i.cpus
    )
    noisy = spread > NOISY_SPREAD or loaded
    return (2 * MARGIN if noisy else MARGIN), noisy


def _seconds(
    i: ForecastInputs, train_s: float, eval_s: float, k: float, bound: bool
) -> dict[str, float]:
    """Epoch, finder and total seconds for one training-step and one eval-step time; `k`
    scales the fixed costs (the slowdown for the likely time, times the margin for the bound);
    the bound also allows what is not measured (PER_SEED_SLACK_S)."""
    step = scaled(train_s, i.measured_batch, i.batch_size)
    ev = scaled(eval_s, i.measured_eval_batch, i.eval_batch_size)
    n_steps = train_batches(i.n_train, i.batch_size, i.limit_train_batches)
    val = math.ceil(i.n_val / i.eval_batch_size) * ev
    test = math.ceil(i.n_test / i.eval_batch_size) * ev
    epoch = n_steps * step + val + k * i.eval_overhead_s  # each epoch validates (and checkpoints)
    finder = i.lr_finder_steps * step + (k * i.fit_overhead_s if i.lr_finder_steps else 0.0)
    # per seed: build data and model, the finder, every epoch (early stopping can only shorten
    # it), then the best checkpoint validated and tested again
    fixed = k * (i.build_s + i.fit_overhead_s + 2 * i.eval_overhead_s) + (
        PER_SEED_SLACK_S if bound else 0.0
    )
    per_seed = fixed + finder + i.max_epochs * epoch + val + test
    preflight = _preflight_s(i, step, ev)
    # the preflight's datamodule goes on to the first seed: --preflight-only pays one build
    total = preflight + (k * i.build_s if i.preflight_only else i.seeds * per_seed)
    return {
        "step_s": step,
        "steps": n_steps,
        "epoch_s": epoch,
        "finder_s": finder,
        "preflight_s": preflight,
        "total_s": total,
    }


def _preflight_s(i: ForecastInputs, step: float, ev: float) -> float:
    """The preflight's plain training loop (its steps, capped by its time budget) and its two
    passes over the drawn val examples."""
    if not i.preflight_steps:
        return 0.0
    train = min(i.preflight_steps * step, i.preflight_max_s)
    return train + 2 * math.ceil(min(i.preflight_val, i.n_val) / i.eval_batch_size) * ev


def forecast_full(i: ForecastInputs) -> dict[str, Any]:
    """A likely time (median steps) and an upper bound (p90 steps x margin), and a rough memory
    figure; the note says every assumption."""
    factor, noisy = margin(i)
    # a sample in CPU seconds is the quiet machine's time: the machine is counted as busy as it
    # was while measured (its slowdown), in the likely time and the bound alike
    k = i.slowdown if i.clock == "cpu" else 1.0
    likely = _seconds(i, i.train_step_s * k, i.eval_step_s * k, k, bound=False)
    bound = _seconds(i, i.train_p90_s * factor * k, i.eval_p90_s * factor * k, factor * k, True)
    params = i.params or 0
    trainable = params if i.trainable_params is None else i.trainable_params
    state_mb = (params * BYTES_PER_WEIGHT + trainable * BYTES_PER_TRAINABLE) / 2**20
    # The overfit process held the same model, Adam state and the dataset; activations at a larger
    # batch are not measured, hence the wide band.
    peak_mb = (i.overfit_peak_rss_mb + state_mb) if i.overfit_peak_rss_mb is not None else None
    return {
        "inputs": asdict(i),
        "train_steps_per_epoch": likely["steps"],
        "s_per_epoch": likely["epoch_s"],
        "s_per_epoch_bound": bound["epoch_s"],
        "lr_finder_s": likely["finder_s"],
        "preflight_s": likely["preflight_s"],
        "preflight_only": i.preflight_only,
        "epochs": i.max_epochs,
        "seeds": i.seeds,
        "likely_s": likely["total_s"],
        "total_s": bound["total_s"],
        "margin": factor,
        "noisy": noisy,
        "param_state_mb": state_mb,
        "peak_rss_mb": peak_mb,
        "note": f"bound: every epoch runs (no early stopping) at the p90 step x {factor:g}, fixed costs "
        f"(builds, Lightning set-up, validation) x {factor:g}"
        + (" (noisy measurement: doubled margin)" if noisy else "")
        + "; steps scaled linearly to larger batches; the machine no busier than when measured; memory ±50%"
        + "; not counted: the paper's tests marked slow, which full runs first (a pass on the same "
        "files is reused)",
    }


def _minutes(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def format_forecast(fc: dict[str, Any]) -> str:
    i = fc["inputs"]
    seeds = f" × {fc['seeds']} seeds" if fc["seeds"] > 1 else ""
    load = (
        f", load {i['load_avg']:.1f} on {i['cpus']} CPUs" if i.get("load_avg") is not None else ""
    )
    how = ""
    if i.get("clock") == "cpu":  # older records have no clock: wall
        how = (
            f" on one thread in CPU seconds, the CPUs being busy ({i.get('busy') or '?'}; "
            f"{i.get('slowdown', 1.0):.2g}x slower on the wall clock, counted in)"
        )
    text = (
        f"forecast: ≈ {_minutes(fc['likely_s'])}, ≤ {_minutes(fc['total_s'])} for {fc['epochs']} epochs{seeds} "
        f"(≈ {fc['s_per_epoch']:.2f} s/epoch: {fc['train_steps_per_epoch']} steps of batch {i['batch_size']}; "
        f"steps measured through Lightning by overfit at batch {i['measured_batch']}{how}: median "
        f"{1000 * i['train_step_s']:.0f} ms, p90 {1000 * i['train_p90_s']:.0f} ms{load}"
        + ("; noisy: the bound's margin is doubled" if fc.get("noisy") else "")
        + ")"
    )
    if fc.get("preflight_only"):  # the preflight alone: no epochs
        text = (
            f"forecast: ≈ {_minutes(fc['likely_s'])}, ≤ {_minutes(fc['total_s'])} for the preflight "
            f"alone ({i['preflight_steps']} steps of batch {i['batch_size']}, at most "
            f"{i['preflight_max_s']:g} s, then val twice; steps measured by overfit at batch "
            f"{i['measured_batch']}{how}: median {1000 * i['train_step_s']:.0f} ms)"
        )
    elif fc.get("preflight_s"):  # older records have none
        text += f"; the preflight first ≈ {_minutes(fc['preflight_s'])}"
    if fc["lr_finder_s"]:
        text += f"; LR finder ≈ {fc['lr_finder_s']:.0f} s per seed"
    if fc["peak_rss_mb"] is not None:
        text += f"; peak memory ≈ {fc['peak_rss_mb']:.0f} MB (overfit's peak RSS + {fc['param_state_mb']:.1f} MB"
        text += " weights, grads and Adam state of the trainable ones; ±50%)"
    text += f"; device {i['device']}"
    if how:
        text += f"; a busier machine trains slower: {SHARED_ADVICE}"
    return text


def _measured_runs(runs_dir: Path, paper: str, current: dict, milestones: bool):
    """The data and overfit runs the forecast reads: by the milestone rule on the base config's
    fingerprint (`milestones`), else the newest passed unforced run of each stage on `current`
    (a config with overrides: its runs have those overrides). A reason (str) when one is missing."""
    from repro.progression import stage_states
    from repro.records import list_runs, load_run

    if milestones:
        rows = {r.stage: r for r in stage_states(runs_dir, paper, current)}
        for stage in ("data", "overfit"):
            if not rows[stage].passed:
                what = f"{stage} is {rows[stage].state}" + (
                    f" ({rows[stage].reason})" if rows[stage].changed else ""
                )
                return f"{what}: no measurement on the current code, config and data"
        return load_run(runs_dir, rows["data"].run_id), load_run(runs_dir, rows["overfit"].run_id)
    found = []
    for stage in ("data", "overfit"):
        want = current["stages"][stage]
        runs = [
            r
            for r in list_runs(runs_dir, paper=paper, stage=stage)
            if r.corrupt is None
            and r.effective_status == "passed"
            and not r.record.forced
            and r.record.fingerprint_of(stage) == want
        ]
        if not runs:
            return f"{stage} has not passed with this config on the current code and data"
        found.append(runs[0])
    return tuple(found)


def inputs_from_records(
    runs_dir: Path, paper: str, cfg: RunConfig, current: dict, milestones: bool = True
) -> ForecastInputs | str:
    """The forecast inputs from the data and overfit runs on `current` (the fingerprint of `cfg`;
    with `milestones`, the base config's milestones), or the reason there are none."""
    from repro.gates.metrics import DataMetrics, OverfitMetrics, load_metrics

    runs = _measured_runs(runs_dir, paper, current, milestones)
    if isinstance(runs, str):
        return runs
    data, overfit = runs
    sizes, speed = (
        load_metrics(DataMetrics, data.record),
        load_metrics(OverfitMetrics, overfit.record),
    )
    if sizes is None or speed is None or speed.speed is None:
        return f"overfit run {overfit.id} recorded no speed sample (recorded by an older repro?)"
    s = speed.speed
    rec = overfit.record
    device = rec.env.device.get("device", "?") if rec.env else "?"
    return from_sample(
        s,
        sizes.sizes,
        cfg,
        overfit.id,
        params=rec.model.total if rec.model else None,
        trainable_params=rec.model.trainable if rec.model else None,
        overfit_peak_rss_mb=rec.peak_rss_mb,
        device=str(device),
    )


def from_sample(s, sizes: dict[str, int], cfg: RunConfig, run_id: str = "", **extra: Any):
    """ForecastInputs from a speed sample (repro.speed_sample.SpeedSample), the data's split
    sizes and the config to forecast, or the reason there are none (an unstable sample).
    `extra`: params, trainable_params, overfit_peak_rss_mb, device."""
    run = f"overfit run {run_id}" if run_id else "overfit"
    if s.unstable:
        return (
            f"{run} could not time training steps steadily: the CPUs were busy "
            f"({s.busy}) and {s.unstable}; run overfit again when the machine is quieter, or "
            + SHARED_ADVICE
        )
    if s.clock == "cpu" and s.slowdown > MAX_SLOWDOWN:
        return (
            f"the CPUs were too busy while {run} timed training ({s.busy}): its "
            f"steps ran {s.slowdown:.1f}x slower than their CPU time (above {MAX_SLOWDOWN:g}x), "
            "so how long training takes depends on the other jobs; run overfit again when the "
            "machine is quieter, or " + SHARED_ADVICE
        )
    pre = cfg.stage.full.preflight
    return ForecastInputs(
        train_step_s=s.train_median_s, train_p90_s=s.train_p90_s, eval_step_s=s.eval_median_s,
        eval_p90_s=s.eval_p90_s, fit_overhead_s=s.fit_overhead_s, eval_overhead_s=s.eval_overhead_s,
        build_s=s.build_s, measured_batch=s.batch_size,
        measured_eval_batch=s.eval_batch_size, n_train=sizes.get("train", 0),
        n_val=sizes.get("val", 0), n_test=sizes.get("test", 0),
        batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch,
        max_epochs=cfg.trainer.max_epochs, seeds=cfg.seeds,
        lr_finder_steps=0 if cfg.optim.lr is not None else cfg.lr_finder.num_training,
        limit_train_batches=cfg.trainer.limit_train_batches,
        load_avg=s.load_avg, cpus=s.cpus, clock=s.clock, busy=s.busy, slowdown=s.slowdown,
        preflight_steps=pre.steps if pre.enabled else 0, preflight_max_s=pre.max_seconds,
        preflight_val=pre.val_examples, preflight_only=pre.only,
        **extra,
    )  # fmt: skip


def _data_steps(runs_dir: Path, paper: str, cfg: RunConfig, current: dict) -> str:
    """' (N training steps per epoch of batch B)' from a passed data run on `current`, or ''."""
    from repro.gates.metrics import DataMetrics, load_metrics
    from repro.progression import passed_on
    from repro.records import list_runs

    if not passed_on(runs_dir, paper, "data", current):
        return ""
    want = current["stages"]["data"]
    for run in list_runs(runs_dir, paper=paper, stage="data"):
        fp = run.record.fingerprint_of("data")
        sizes = load_metrics(DataMetrics, run.record) if fp == want else None
        if sizes is not None and run.effective_status == "passed":
            n = train_batches(
                sizes.sizes.get("train", 0), cfg.data.batch_size, cfg.trainer.limit_train_batches
            )
            return f" (its data: {n} training steps per epoch of batch {cfg.data.batch_size})"
    return ""


def print_forecast(
    runs_dir: Path,
    paper: str,
    cfg: RunConfig,
    current: dict,
    milestones: bool,
    console,
    overrides: list[str] | None = None,
) -> dict[str, Any] | None:
    """Estimate the full stage's time and memory for `cfg` from the records of the data and
    overfit runs on `current`, its fingerprint (`milestones`: `cfg` is the paper's base config,
    so the milestone runs count); print it. `overrides`: the command-line overrides that made
    `cfg` (named in the advice)."""
    from repro.progression import stage_command

    inputs = inputs_from_records(runs_dir, paper, cfg, current, milestones)
    if isinstance(inputs, str):
        if not milestones:
            steps = _data_steps(runs_dir, paper, cfg, current)
            command = stage_command("overfit", paper, list(overrides or []))
            inputs += f"{steps}; run first: {command}"
        console.print(f"forecast: unavailable: {inputs}", markup=False, highlight=False)
        return None
    fc = forecast_full(inputs)
    console.print(format_forecast(fc), highlight=False)
    return fc


def compare(forecast: dict[str, Any] | None, actual: RecordedActual | None) -> str | None:
    """One line: forecast vs actual per-epoch time and total, for `repro show`."""
    if not forecast or actual is None or "likely_s" not in forecast:
        return None
    wall = actual.wall_s or 0
    held = "held" if wall <= forecast["total_s"] else "BROKEN"
    parts = [
        f"forecast ≈ {_minutes(forecast['likely_s'])}, ≤ {_minutes(forecast['total_s'])} vs actual "
        f"{_minutes(wall)} wall (bound {held})"
    ]
    if actual.s_per_epoch is not None:
        parts.append(
            f"{forecast['s_per_epoch']:.2f} vs {actual.s_per_epoch:.2f} s/epoch "
            f"({actual.epochs} epochs run of {forecast['epochs'] * forecast['seeds']} forecast)"
        )
    if forecast.get("peak_rss_mb") is not None and actual.peak_rss_mb is not None:
        parts.append(f"peak memory ≈ {forecast['peak_rss_mb']:.0f} vs {actual.peak_rss_mb:.0f} MB")
    return "; ".join(parts)


def describe(forecast: dict[str, Any]) -> str:
    """Any recorded forecast in one line: full's (format_forecast), experiments' (jobs), or one
    recorded by an older repro (its total only)."""
    try:
        if "likely_s" in forecast:
            return format_forecast(forecast)
        if "jobs" in forecast:
            return (
                f"forecast: ≤ {_minutes(float(forecast['total_s']))} for {forecast['jobs']} jobs "
                f"(≤ {forecast.get('epochs')} epochs each at {float(forecast['s_per_epoch']):.2f} s/epoch "
                f"of full run {forecast.get('from_run')})"
            )
        return f"forecast: ≤ {_minutes(float(forecast['total_s']))} (recorded by an older repro)"
    except (KeyError, TypeError, ValueError):
        return "forecast: recorded in a shape this repro cannot read"
