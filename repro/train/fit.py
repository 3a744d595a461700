"""One training run as a plain function: choose the LR, fit with early stopping and checkpoints,
then validate and test the best checkpoint. Every file it writes lives in `out_dir`."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from repro.config.schema import RunConfig
from repro.config.typed import from_dict
from repro.errors import ReproError
from repro.storage import atomic_write
from repro.tasks import monitor_mode
from repro.train.distributed import is_rank_zero
from repro.train.lr_finder import LRFinderResult
from repro.train.seeding import seed_everything

RESULT_FILE = "fit_result.json"  # a seed that finished: read back on --resume
TEST_OUTPUTS_FILE = "test_outputs.pt"  # the test phase's raw outputs (save_test_outputs)
LR_FILE = "lr.json"  # the LR chosen before training: reused on --resume and by DDP ranks > 0


@dataclass(frozen=True)
class FitResult:
    seed: int
    lr: float
    lr_source: str  # "optim.lr" | "LR finder: <rule>" | "read from lr.json"
    metrics: dict[str, float]  # val/* and test/* of the best checkpoint
    epochs: int
    global_steps: int
    stopped_early: bool
    best_checkpoint: str | None
    train_seconds: float
    train_examples: int
    min_epochs: int
    resumed_from_epoch: int | None = None
    lr_finder: LRFinderResult | None = None
    stopped_epoch: int | None = None  # the epoch EarlyStopping stopped at; None when it did not

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self), indent=2), "the seed's result")

    @classmethod
    def load(cls, path: Path) -> FitResult:
        try:
            return from_dict(cls, json.loads(path.read_text()), path.name)
        except (ValueError, ReproError) as e:  # JSONDecodeError is a ValueError
            raise ReproError(
                f"{path}: expected the result of a finished seed, found an unreadable file "
                f"({str(e)[:200]}); delete it to train that seed again with --resume"
            ) from e


def quiet_lightning() -> None:
    """Lightning's banners (GPU available, tips) drown the gate's own output."""
    import logging
    import warnings

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # CSVLogger warns that it will delete "previous log files" in the run directory: it only
    # rewrites its own metrics.csv (kept across resumes by keep_rows_before_resume), never our files
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*")


def fit_and_test(
    cfg: RunConfig,
    dm,
    model,
    out_dir: Path,
    *,
    seed: int,
    resume: bool = False,
    progress: bool = True,
    loggers: tuple = (),
) -> FitResult:
    """Train `model` on `dm` with `cfg`, test the best checkpoint, write fit_result.json.

    resume: a seed that finished is read back from fit_result.json, an interrupted one continues
    from out_dir/checkpoints/last.ckpt. loggers: Lightning loggers beside metrics.csv (W&B).
    """
    from repro.train.module import TaskModule
    from repro.train.threads import apply as apply_threads

    finished = _prepare(out_dir, resume)
    if finished is not None:
        return finished
    apply_threads()  # one thread per usable CPU (affinity, cgroup quota); recorded in env.threads
    quiet_lightning()
    dm.setup("fit")
    task = dm.task
    lr, lr_source, finder = choose_lr(cfg, model, dm, out_dir, seed)
    module = TaskModule(model, task, cfg.optim, cfg.schedule, lr, seed=seed)
    last, resumed_from = _resume_point(out_dir, resume)
    mode = monitor_mode(cfg, task.metric_specs())
    trainer, best_cb, stopper = make_trainer(cfg, out_dir, progress, loggers, mode)
    t0 = time.perf_counter()
    ckpt = str(last) if resumed_from is not None else None
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=True)
    train_seconds = time.perf_counter() - t0
    # read before _test_best: validate(ckpt_path="best") restores the callbacks' state from the
    # best checkpoint, saved before the stopper fired (it would always read "did not stop")
    stopped_epoch = int(stopper.stopped_epoch) or None
    metrics = _test_best(trainer, module, dm, best_cb)
    _save_outputs(trainer, module, out_dir, f"val/{task.primary}")
    result = FitResult(
        seed=seed,
        lr=lr,
        lr_source=lr_source,
        metrics=metrics,
        epochs=int(trainer.current_epoch),
        global_steps=int(trainer.global_step),
        stopped_early=stopped_epoch is not None,
        best_checkpoint=_relative(best_cb.best_model_path, out_dir),
        train_seconds=train_seconds,
        train_examples=len(dm.splits["train"]),
        min_epochs=min_epochs(cfg),
        resumed_from_epoch=resumed_from,
        lr_finder=finder,
        stopped_epoch=stopped_epoch,
    )
    if is_rank_zero():
        result.save(out_dir / RESULT_FILE)
    return result


def _save_outputs(trainer, module, out_dir: Path, monitor: str) -> None:
    """Rank 0 only: the curves' plot, the test outputs (one process), the resumed rows merged."""
    if not is_rank_zero():
        return
    _plot_fit_curves(trainer, out_dir, monitor)
    if trainer.world_size == 1:
        save_test_outputs(module.test_outputs, out_dir)
    from repro.train.curves import merge_resumed_rows

    merge_resumed_rows(out_dir)


def _prepare(out_dir: Path, resume: bool) -> FitResult | None:
    """Make out_dir, clear what a killed attempt left there; on --resume, a seed that finished."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():
        remove_leftovers(out_dir)
    if resume and (out_dir / RESULT_FILE).exists():
        return FitResult.load(out_dir / RESULT_FILE)
    return None


def _resume_point(out_dir: Path, resume: bool) -> tuple[Path, int | None]:
    """(last.ckpt, the epoch it holds) to continue from on --resume; None: train from the start."""
    from repro.train.curves import keep_rows_before_resume

    last = out_dir / "checkpoints" / "last.ckpt"
    resumed_from = checkpoint_epoch(last) if resume and last.exists() else None
    best = out_dir / "checkpoints" / "best.ckpt"
    if resumed_from is not None and best.exists():
        load_plain_checkpoint(best)  # tested at the end of training: refuse a planted one now
    if resumed_from is not None and is_rank_zero():
        keep_rows_before_resume(out_dir, resumed_from)
    return last, resumed_from


def _relative(path: str, out_dir: Path) -> str | None:
    return os.path.relpath(path, out_dir) if path else None


def remove_leftovers(out_dir: Path) -> list[str]:
    """Temporary files an earlier attempt in this directory left when it was killed (kill -9, a
    lost node): the LR finder's checkpoint, a checkpoint or LR file cut off mid-write. Whoever
    wrote them is gone (a resumed run owns its directory), so they are removed; their names are
    returned."""
    from repro.train.lr_finder import remove_finder_checkpoints

    removed = remove_finder_checkpoints(out_dir)
    # atomic_write's and AtomicCheckpointIO's temp files (.<name>.<random>.tmp), and the latter's
    # before issue 20 (.<name>.tmp<pid>)
    for pattern in (".*.tmp", "checkpoints/.*.tmp", "checkpoints/.*.ckpt.tmp*"):
        for path in sorted(out_dir.glob(pattern)):
            path.unlink(missing_ok=True)
            removed.append(str(path.relative_to(out_dir)))
    return removed


def _test_best(trainer, module, dm, best_cb) -> dict[str, float]:
    """val/* and test/* of the best checkpoint (of the last weights when none was saved)."""
    import pickle

    best = "best" if best_cb.best_model_path else None
    try:
        val = trainer.validate(
            module, datamodule=dm, ckpt_path=best, verbose=False, weights_only=True
        )
        test = trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False, weights_only=True)
    except pickle.UnpicklingError as e:
        raise not_plain_checkpoint(best_cb.best_model_path, e) from None
    for lg in trainer.loggers:
        lg.save()
    return {k: float(v) for k, v in {**val[0], **test[0]}.items()}


def save_test_outputs(outputs: list | None, out_dir: Path) -> Path | None:
    """The test phase's raw outputs of the best checkpoint, batch by batch in the test split's
    order (test_outputs.pt, tensors only: weights_only loads it), what `repro predict` on the
    test split must reproduce; none when the module kept none (too large)."""
    import io

    import torch

    if outputs is None:
        return None
    buf = io.BytesIO()
    torch.save({"batches": outputs}, buf)
    path = out_dir / TEST_OUTPUTS_FILE
    atomic_write(path, buf.getvalue(), "the test phase's outputs")
    return path


def choose_lr(cfg: RunConfig, model, dm, out_dir: Path, seed: int) -> tuple[float, str, Any]:
    """The paper's optim.lr, else the LR chosen earlier for this directory (lr.json: a resumed run,
    or DDP ranks > 0 reading rank 0's choice), else the LR finder (which then writes lr.json)."""
    from repro.train.lr_finder import find_lr
    from repro.train.module import TaskModule

    if cfg.optim.lr is not None:
        return cfg.optim.lr, "optim.lr", None
    saved = out_dir / LR_FILE
    if not is_rank_zero():  # rank 0 runs the finder before it starts training, then writes the file
        _wait_for(saved)
    if saved.exists():
        data = json.loads(saved.read_text())
        finder = from_dict(LRFinderResult, data["finder"], LR_FILE) if data.get("finder") else None
        return (
            float(data["lr"]),
            f"read from {LR_FILE} (chosen before this process started)",
            finder,
        )
    probe = TaskModule(model, dm.task, cfg.optim, cfg.schedule, cfg.lr_finder.min_lr, seed=None)
    finder = find_lr(probe, dm, out_dir, cfg.lr_finder, cfg.trainer)
    atomic_write(saved, json.dumps({"lr": finder.lr, "finder": asdict(finder)}), "the chosen LR")
    seed_everything(seed, cfg.deterministic)  # the finder drew random numbers: start afresh
    return finder.lr, f"LR finder: {finder.note}", finder


def _wait_for(path: Path, poll_s: float = 0.5, limit_s: float = 6 * 3600) -> None:
    """Rank > 0: wait for rank 0's file (the LR finder of a later seed may still run there; if
    rank 0 dies, repro.train.distributed.exit_with_parent ends this process)."""
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise ReproError(
                f"{path}: expected the LR that rank 0 chose, found no file after {limit_s:.0f} s"
            )
        time.sleep(poll_s)


def min_epochs(cfg: RunConfig) -> int:
    """1cycle raises the LR for its first 30% (pct_start): val loss rises there by design, so early
    stopping may not end the run before the peak (measured on the toy paper: stopped at 6/15)."""
    n = math.ceil(0.3 * cfg.trainer.max_epochs) + 1 if cfg.schedule.name == "onecycle" else 1
    return min(n, cfg.trainer.max_epochs)


def make_trainer(cfg: RunConfig, out_dir: Path, progress: bool, loggers: tuple, mode: str):
    """(trainer, the best-checkpoint callback, the early-stopping callback); `mode`: "min" or
    "max" for the monitored metric (its task's direction unless the config says)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from repro.train.checkpoint_io import AtomicCheckpointIO
    from repro.train.loggers import csv_logger

    t, es = cfg.trainer, cfg.trainer.early_stopping
    ckpt_dir = str(out_dir / "checkpoints")
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        monitor=es.monitor,
        mode=mode,
        filename="best",
        enable_version_counter=False,
    )
    # last.ckpt after every epoch (a monitored checkpoint's save_last only follows improvements in
    # Lightning 2.6.6): what `repro stage full --resume` continues from
    last = ModelCheckpoint(
        dirpath=ckpt_dir, monitor=None, filename="last", save_top_k=1, enable_version_counter=False
    )
    stopper = EarlyStopping(monitor=es.monitor, patience=es.patience, mode=mode, check_finite=True)
    trainer = pl.Trainer(
        max_epochs=t.max_epochs,
        min_epochs=min_epochs(cfg),
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        gradient_clip_val=t.gradient_clip_val,
        limit_train_batches=t.limit_train_batches or 1.0,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=cfg.deterministic,
        callbacks=[best, last, stopper],
        logger=[csv_logger(out_dir, t.log_every_n_steps), *loggers],
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # the datamodule shards itself (repro/data/datamodule.py)
        enable_progress_bar=progress,
        enable_model_summary=False,
        default_root_dir=str(out_dir),
    )
    return trainer, best, stopper


def _plot_fit_curves(trainer, out_dir: Path, metric: str) -> None:
    from repro.train.curves import ASIDE, plot_curves, read_rows

    for lg in trainer.loggers:
        lg.save()
    rows = read_rows(out_dir / ASIDE) + read_rows(out_dir / "metrics.csv")
    plot_curves(rows, out_dir / "curves.png", metric)


def checkpoint_epoch(path: Path) -> int:
    """The epoch stored in a Lightning checkpoint, read with weights_only=True; a clear error if the
    file is unreadable (cut off while written) or holds more than tensors and plain values."""
    return int(load_plain_checkpoint(path)["epoch"])


def load_plain_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint of tensors and plain values (weights_only=True: nothing in it is run). A file
    holding other Python objects is refused in one line that names what it holds and never
    suggests loading it anyway (issue 20); an unreadable one names why."""
    import pickle

    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        checkpoint["epoch"]  # noqa: B018 (a Lightning checkpoint has one)
        return checkpoint
    except pickle.UnpicklingError as e:
        raise not_plain_checkpoint(path, e) from None
    except Exception as e:  # truncated zip, missing key: all mean "not usable"
        detail = str(e).strip().splitlines()[0] if str(e).strip() else "no detail"
        raise ReproError(
            f"{path}: expected a Lightning checkpoint of tensors and plain values, found an "
            f"unreadable file ({type(e).__name__}: {detail[:200]}); delete it to train that seed "
            "from its start, or run the stage again without --resume"
        ) from e


def not_plain_checkpoint(path: Path | str, e: BaseException) -> ReproError:
    """`<path>: refused to load: not a plain checkpoint (...)`: torch's weights-only unpickler
    met a Python object (its message names it; its advice to load the file with
    weights_only=False is what a planted file wants, so it is not passed on)."""
    import re

    found = re.search(r"GLOBAL (\S+)", str(e))
    what = f"the Python object {found.group(1)}" if found else "Python objects"
    return ReproError(
        f"{path}: refused to load: not a plain checkpoint (expected tensors and plain values, "
        f"found {what}, which loading would run); delete it to train that seed from its start, "
        "or run the stage again without --resume"
    )
