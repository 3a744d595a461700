"""The paper contract: everything a paper's code may use from repro, in one place.

A paper is three files and a config (`repro new <paper> --task <task>` writes a working example):

conf/paper/<paper>.yaml
    title, arXiv id, `task`, the paper's numbers as targets (a metric the task measures, its
    value, tolerance and where in the paper), the paper's hyperparameters with provenance,
    experiments, invariances (a transformation the datamodule defines that must not change the
    prediction: exact, by construction, or learned; `exact`, `where`, `dataset`, `max_changed`). Every `model:` and `data:` key has its one value here; the command line
    overrides any of them (`data.quora_dir=...`, `model.hidden=8`).

papers/<paper>/model.py -- pure torch; imports nothing from repro.
    MODEL_CONFIG = a dataclass of the `model:` keys (types, and bounds as field metadata:
        `field(metadata={"ge": 1})`); repro checks the config against it before a run.
    build_model(cfg: ModelConfig, **data_kwargs) -> nn.Module
        cfg is the typed `model:` section (a plain dict when build_model's first parameter is
        not annotated with MODEL_CONFIG: papers written before); data_kwargs are the
        datamodule's model_kwargs() (vocabulary size, vectors, number of classes ...).
    The model's forward takes the batch's inputs as keyword arguments and returns what the task
    expects: logits (B, C) (classification), (B, T, V) (sequence), a value per example
    (regression), a score per item or two-class logits (ranking). No softmax: the loss applies it.

papers/<paper>/data.py
    DATA_CONFIG = a dataclass of the paper's own `data:` keys (repro's own, batch_size etc.,
        are in repro.config.schema.DataConfig).
    build_datamodule(cfg: DataConfig, seed: int) -> PaperDataModule subclass, implementing
        load_examples() -> {"train", "val", "test"} or {"all"} (repro splits it) of examples:
            dicts of the paper's input fields, plus what the task needs of a raw example
            (an integer "label" for classification, a number or list of numbers for
            regression, a 0/1 "label" and a "group" (the query id) for ranking; nothing for a
            sequence task, whose labels encode() may make);
        build(splits) -- fit vocabularies and statistics on splits["train"] alone;
        encode(example) -> dict of tensors with "label" (and "group": group_id(example["group"])
            for ranking); collate(items) -> a padded batch; decode(batch, i) -> readable text;
        model_kwargs(), data_files(), stats() (oov_rate/<split>, truncated/<split>).
        Optional, for using the trained model (`repro predict`, `repro eval`, invariances):
        fitted_state() -> what build() fitted, as plain data (saved with a full run; {} when
            nothing is fitted) and load_fitted_state(state) to restore it without the data;
        read_inputs(path) -> raw examples from a file in the paper's input format, labels
            optional (default: JSON lines of raw examples); present_prediction(prediction,
            example) -> the task's prediction as the paper's users read it (default: as is);
        transformations() -> {name: raw example -> raw example} that paper.invariances name.
        Optional, for the gates' meaning checks (issue 22; without them "not measured"):
        read_counts() -> {split: {"read": n, "skipped": {reason: n}}} (examples + skipped =
            read); padded_inputs = {batch key: "right" | "left"} (pad ids only at that end);
            vocabulary() -> the id -> token table and raw_tokens(example) -> {batch key: tokens
            as looked up} (OOV counted from tokens; each token encoded as its id, none as pad);
            loaded_vectors() -> (ids, vectors) loaded from a file (shapes: the embedding keeps
            them). The paper's YAML may state split sizes: paper.data_sizes.
    Integer inputs use id 0 for padding (at the end of a row) and 1 for unknown; a sequence
    task's labels use IGNORE_INDEX (-100) where nothing is predicted.

papers/<paper>/task.py (optional) -- the paper's own task, when no built-in one fits: subclass
    Task or a built-in task and name it in the config, `paper.task: papers.<paper>.task:<Class>`.
    Override `metrics` (MetricSpec: name, direction), `loss`, `make_metrics`/`update_metrics`/
    `finish_metrics` (torchmetrics), `collect`/`unit_scores` and `fit_baseline` (the trivial
    baseline the full gate compares with, unit by unit), `init_loss` (what a fresh model should
    score), `describe` (a prediction in the task's terms: what `repro predict` writes),
    `placeholder_label` (an unlabelled input's neutral label) and `prediction_change` (how much
    a prediction moved under an invariance's transformation). tests/test_tasks.py has a quantile (pinball-loss) regression written that way.

papers/<paper>/tests/ -- the paper's own checks (pytest).
"""

from repro.config.schema import DataConfig
from repro.data.datamodule import PaperDataModule, group_id
from repro.tasks import LOSS, MetricSpec
from repro.tasks.base import Baseline, InitLoss, Task
from repro.tasks.classification import Classification
from repro.tasks.ranking import Ranking
from repro.tasks.regression import Regression
from repro.tasks.sequence import IGNORE_INDEX, Sequence

__all__ = [
    "IGNORE_INDEX",
    "LOSS",
    "Baseline",
    "Classification",
    "DataConfig",
    "InitLoss",
    "MetricSpec",
    "PaperDataModule",
    "Ranking",
    "Regression",
    "Sequence",
    "Task",
    "group_id",
]
