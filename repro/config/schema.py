"""The typed shape of a composed run config: repro's own sections, checked once at compose time.

Every default lives in conf/ (conf/defaults.yaml, conf/stage/*.yaml, conf/logger, conf/launcher),
never here and never in the code that reads a value: a field without a default here must be set
there, and a missing one is an error naming the key. The exceptions are the paper's own
declarations (targets, experiments), whose optional fields default here because a paper config
is written by hand. `model` and the paper's own `data` keys belong to the paper: repro passes them
on as plain dicts and the paper's code checks them (`from_dict` in repro.config.typed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from repro.config.typed import Invalid, bound

GT0 = bound(gt=0)
GE0 = bound(ge=0)
GE1 = bound(ge=1)


@dataclass(frozen=True)
class InitConfig:
    scheme: Literal["he_xavier", "torch"]


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adamw", "adam", "sgd"]
    lr: float | None = field(metadata=GT0)  # None: the LR finder picks it
    weight_decay: float = field(metadata=GE0)
    betas: tuple[float, float]
    momentum: float = field(metadata=GE0)

    def __post_init__(self) -> None:
        if not all(0 <= b < 1 for b in self.betas):
            raise Invalid("betas", f"expected two numbers in [0, 1), found {list(self.betas)}")


@dataclass(frozen=True)
class ScheduleConfig:
    name: Literal["onecycle", "constant"]


@dataclass(frozen=True)
class LRFinderConfig:
    min_lr: float = field(metadata=GT0)
    max_lr: float = field(metadata=GT0)
    num_training: int = field(metadata=bound(ge=10))
    fallback_lr: float = field(metadata=GT0)

    def __post_init__(self) -> None:
        if self.max_lr <= self.min_lr:
            raise Invalid(
                "max_lr", f"expected a number above min_lr ({self.min_lr:g}), found {self.max_lr:g}"
            )


@dataclass(frozen=True)
class EarlyStoppingConfig:
    monitor: str  # a val metric of the paper's task (checked against it at compose)
    patience: int = field(metadata=GE0)
    mode: Literal["min", "max"] | None  # None: the monitored metric's own direction

    def __post_init__(self) -> None:
        if not re.fullmatch(r"val/\w+", self.monitor):
            raise Invalid(
                "monitor",
                f"expected a validation metric like val/loss or val/acc, found {self.monitor!r}",
            )


Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps"]
Strategy = Literal[
    "auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp", "deepspeed"
]
Precision = Literal["32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true"]


@dataclass(frozen=True)
class TrainerConfig:
    max_epochs: int = field(metadata=GE1)
    accelerator: Accelerator
    devices: int | Literal["auto"] = field(metadata=GE1)
    strategy: Strategy
    num_nodes: int = field(metadata=GE1)
    precision: Precision
    gradient_clip_val: float | None = field(metadata=GT0)
    limit_train_batches: int | float | None = field(metadata=GT0)  # float <= 1: a fraction
    log_every_n_steps: int = field(metadata=GE1)
    early_stopping: EarlyStoppingConfig

    def __post_init__(self) -> None:
        limit = self.limit_train_batches
        if isinstance(limit, float) and limit > 1 and not limit.is_integer():
            raise Invalid(
                "limit_train_batches",
                f"expected a fraction in (0, 1] or a whole number of batches, found {limit:g}",
            )


@dataclass(frozen=True)
class DataConfig:
    """repro's data keys; the paper's own (dataset, paths, lengths...) are kept in `options`."""

    EXTRA_FIELD = "options"
    # How the examples are served, not which: the data stage's verdict is about the examples, so
    # these are fingerprinted with shapes (repro/fingerprint.py), which feeds batches of this size
    LOADER_KEYS = ("batch_size", "eval_batch_size", "num_workers")

    batch_size: int = field(metadata=GE1)
    eval_batch_size: int | None = field(metadata=GE1)  # None: batch_size
    num_workers: int = field(metadata=GE0)
    split: tuple[float, float, float]  # applied only when the dataset has no official split
    split_seed: int  # the split's own seed: every training seed is tested on the same examples
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if any(f <= 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise Invalid(
                "split",
                "expected 3 positive fractions (train, val, test) summing to 1, "
                f"found {list(self.split)}",
            )

    @property
    def eval_batch(self) -> int:
        return self.eval_batch_size or self.batch_size


@dataclass(frozen=True)
class DataStage:
    """The data gate's thresholds (conf/stage/data.yaml says why each default)."""

    show_examples: int = field(metadata=GE0)
    sample_examples: int = field(metadata=GE1)
    near_duplicate_max_rate: float = field(metadata=bound(ge=0, le=1))
    near_duplicate_ratio: float = field(metadata=GE0)
    chance_p: float = field(metadata=bound(gt=0, lt=1))
    label_leak: bool
    leak_min_per_class: int = field(metadata=GE1)
    probe_max_drop: float = field(metadata=bound(gt=0, le=1))
    max_feature_shift: float = field(metadata=bound(gt=0, le=1))
    max_target_shift: float = field(metadata=bound(gt=0, le=1))
    max_oov_rate: float = field(metadata=bound(ge=0, le=1))
    max_truncated: float = field(metadata=bound(ge=0, le=1))
    hashseed_timeout_s: float = field(metadata=GT0)
    compare_examples: int = field(metadata=GE1)  # per split, in the builds compared with the first


@dataclass(frozen=True)
class ShapesStage:
    init_loss_rel_tol: float = field(metadata=GT0)
    dummy_batch_size: int = field(metadata=GE1)
    independence_examples: int = field(metadata=GE1)
    grad_atol: float = field(metadata=GE0)
    leak_atol: float = field(metadata=GE0)
    zero_input_min_change: float = field(metadata=GE0)
    params_rel_tol: float = field(metadata=GE0)
    alone_examples: int = field(metadata=GE1)
    roundoff_eps: float = field(metadata=GT0)
    frozen_ok: list[str]
    unused_inputs_ok: list[str]  # input fields the model may ignore (an ablation's)
    inputs_used_examples: int = field(metadata=bound(ge=2))
    invariance_examples: int = field(metadata=GE1)
    grad_check_examples: int = field(metadata=GE1)  # float64 finite differences: examples
    grad_check_directions: int = field(metadata=GE1)  # random directions per parameter group
    grad_check_groups: int = field(metadata=GE1)  # parameter groups checked, at most
    grad_check_eps: float = field(metadata=GT0)
    grad_check_rtol: float = field(metadata=GT0)
    grad_check_atol: float = field(metadata=GE0)
    confidence_logit_range: float = field(metadata=GT0)  # the confidence stress's output span
    confidence_examples: int = field(metadata=GE1)  # the confidence stress's examples
    paper_tests: bool  # run the paper's own tests (shapes: not slow; full: the slow ones)
    paper_tests_timeout_s: float = field(metadata=GT0)  # the paper's tests (not slow) in shapes
    paper_tests_reuse: bool  # a pass on the same files (digest) is reused, and says so


@dataclass(frozen=True)
class OverfitStage:
    examples: int = field(metadata=GE1)
    max_steps: int = field(metadata=GE1)
    lr: float = field(metadata=GT0)  # used when optim.lr (the paper's) is None
    loss_ratio: float = field(metadata=bound(gt=0, lt=1))
    accept_full_accuracy: bool
    disable_dropout: bool
    speed_steps: int = field(metadata=bound(ge=3))
    diverge_factor: float = field(metadata=bound(gt=1))
    diverge_window: int = field(metadata=GE1)
    stall_steps: int = field(metadata=GE1)
    probability_atol: float = field(metadata=GT0)
    floor_rtol: float = field(metadata=bound(gt=0, lt=1))


@dataclass(frozen=True)
class PreflightConfig:
    """The full stage's preflight (repro/gates/preflight.py): a short real training first."""

    enabled: bool
    only: bool  # the preflight alone (`repro stage full --preflight-only`): an experiment
    steps: int = field(metadata=GE1)
    max_seconds: float = field(metadata=GT0)
    lr: float = field(metadata=GT0)  # used when optim.lr (the paper's) is None
    val_examples: int = field(metadata=bound(ge=2))


@dataclass(frozen=True)
class FullStage:
    show_baseline: bool
    max_val_test_gap: float = field(metadata=GE0)
    chance_z: float = field(metadata=GE0)
    invariance_max_changed: float = field(metadata=bound(ge=0, le=1))
    slow_tests_timeout_s: float = field(metadata=GT0)  # the paper's slow tests, before training
    preflight: PreflightConfig
    regression_margin: float = field(metadata=GE0)

    def __post_init__(self) -> None:
        if self.preflight.only and not self.preflight.enabled:
            raise Invalid(
                "preflight.only",
                "expected preflight.enabled: true with preflight.only (the preflight alone), "
                "found enabled: false",
            )


@dataclass(frozen=True)
class ExperimentsStage:
    parallel: int = field(metadata=GE1)
    timeout_min: int = field(metadata=GE1)


@dataclass(frozen=True)
class StageConfigs:
    data: DataStage
    shapes: ShapesStage
    overfit: OverfitStage
    full: FullStage
    experiments: ExperimentsStage


@dataclass(frozen=True)
class LoggerConfig:
    name: Literal["csv", "wandb"]  # csv always; wandb adds Weights & Biases
    project: str


@dataclass(frozen=True)
class LauncherConfig:
    """Where the experiments stage's jobs run (repro/launch.py). The Slurm keys are set by
    conf/launcher/slurm.yaml and mean nothing to launcher=local."""

    name: Literal["local", "slurm"]
    poll_s: float = field(metadata=GT0)
    unknown_after_s: float = field(metadata=GT0)
    partition: str | None = None
    cpus_per_task: int | None = field(default=None, metadata=GE1)
    mem_gb: float | None = field(default=None, metadata=GT0)
    gpus_per_node: int | None = field(default=None, metadata=GE0)
    sbatch: dict[str, Any] = field(default_factory=dict)
    give_up_after_s: float | None = field(default=None, metadata=GT0)  # squeue silent this long

    def __post_init__(self) -> None:
        if self.name == "slurm" and self.cpus_per_task is None:
            raise Invalid(
                "cpus_per_task", "expected a number of CPUs per job for launcher=slurm, found none"
            )


@dataclass(frozen=True)
class DevConfig:
    """The warm worker (`repro dev`, repro/dev/worker.py)."""

    report_after_s: float = field(metadata=GT0)  # a run without a verdict this long is reported


@dataclass(frozen=True)
class Target:
    """A number the paper reports, which the full stage must reproduce."""

    name: str
    metric: str  # a val/test metric of the paper's task (checked against it at compose)
    value: float
    tolerance: float = field(default=0.0, metadata=GE0)
    # None: the metric's own direction (the task's); set, it must agree with it
    higher_is_better: bool | None = None
    where: str | None = None  # table or section of the paper
    dataset: str | None = None  # compared only when data.dataset is this
    spread: float | None = field(default=None, metadata=GE0)  # the paper's own ± or std


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: list[str] = field(default_factory=list)
    paper: float | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise Invalid("name", "expected a non-empty variant name, found an empty one")


@dataclass(frozen=True)
class Experiments:
    metric: str
    variants: list[Variant]
    where: str | None = None
    overrides: list[str] = field(default_factory=list)  # applied to every variant
    seeds: int = field(default=1, metadata=GE1)

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise Invalid("variants", f"expected unique variant names, found {dup} more than once")


@dataclass(frozen=True)
class Invariance:
    """A transformation of a raw example (one the paper's datamodule defines) that must not change
    the model's prediction: exact (by construction: checked on the untrained model in shapes, and
    in full) or learned (measured on the trained model in full)."""

    transform: str  # a name in the datamodule's transformations()
    exact: bool = False
    where: str | None = None  # why it holds: the paper, the task
    dataset: str | None = None  # measured only when data.dataset is this
    # the fraction of test predictions allowed to change; None: stage.full.invariance_max_changed
    max_changed: float | None = field(default=None, metadata=bound(ge=0, le=1))

    def __post_init__(self) -> None:
        if not self.transform.isidentifier():
            raise Invalid(
                "transform", f"expected the name of a transformation, found {self.transform!r}"
            )


@dataclass(frozen=True)
class DataSizes:
    """Split sizes the paper states (examples per split); the data gate compares the built splits
    with them. A split left out (None) is not stated."""

    dataset: str | None = None  # compared only when data.dataset is this
    train: int | None = field(default=None, metadata=GE0)
    val: int | None = field(default=None, metadata=GE0)
    test: int | None = field(default=None, metadata=GE0)
    where: str | None = None  # table or section of the paper


@dataclass(frozen=True)
class PaperMeta:
    name: str
    title: str
    arxiv: str | None = None
    # classification | regression | sequence | ranking, or "papers.<paper>.task:<Class>"
    # (repro/tasks; the paper's own Task subclass). Papers written before tasks existed were
    # classifiers, hence the default.
    task: str = "classification"
    # The folder under papers/ with the code, when the paper shares another's (None: its own name)
    code: str | None = None
    targets: list[Target] = field(default_factory=list)
    baseline: str | None = None  # "papers.<paper>.<module>:<function>"
    expected_params: int | None = field(default=None, metadata=GE1)
    experiments: Experiments | None = None
    invariances: list[Invariance] = field(default_factory=list)
    data_sizes: list[DataSizes] = field(default_factory=list)  # checked by the data gate
    provenance: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    """One run's whole config, typed. `model` (and data.options) are the paper's, as plain dicts."""

    seed: int
    seeds: int = field(metadata=GE1)
    deterministic: bool
    data: DataConfig
    model: dict[str, Any]
    init: InitConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    lr_finder: LRFinderConfig
    trainer: TrainerConfig
    stage: StageConfigs
    logger: LoggerConfig
    launcher: LauncherConfig
    dev: DevConfig
    paper: PaperMeta
