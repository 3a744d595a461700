"""PaperDataModule: the LightningDataModule base every paper's data.py subclasses.

A paper implements how to read and encode its examples; this base owns the split (official, or
the seeded 80/10/10 when there is none), the seeded loaders, and what the data gate inspects.

An *example* is a dict of the paper's input fields (strings, lists) and what the paper's task
needs of a raw example (repro/tasks: an integer "label" for classification, a number for
regression, a relevance "label" and its query's "group" for ranking; nothing for a sequence
task, whose labels encode() may make). Every example is checked against the task when loaded.
A *batch* is a dict of tensors with a "label" key (and "group" for ranking); every other key is
passed to the model as a keyword argument (repro.data.batch.model_inputs).
Convention for integer inputs: id 0 is padding, id 1 is "unknown".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from repro.config.schema import DataConfig
from repro.data.batch import NON_INPUT_FIELDS
from repro.data.collector import paused_build
from repro.data.split import SPLITS, example_hash, split_indices
from repro.errors import PaperError
from repro.tasks.base import Task


class ListDataset(Dataset):
    def __init__(self, items: list[Any]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


def _shard() -> tuple[int, int]:
    """(rank, world size) of the distributed process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSeededSampler(torch.utils.data.Sampler[int]):
    """A shuffling sampler whose order depends only on (seed, epoch), sharded across processes.

    Lightning calls set_epoch() each epoch, so a run resumed from a checkpoint at epoch k sees the
    same order for epoch k as an uninterrupted run (a generator seeded once would restart). With
    several processes (DDP), every process draws the same permutation, pads it by wrapping around
    to a multiple of the world size (each process must take the same number of steps) and takes
    every world-th index from its rank: one epoch sees each example once, a few twice.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.epoch, self.rank, self.world = n, seed, 0, rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1  # callers that never call set_epoch still get a new order each pass
        order = torch.randperm(self.n, generator=g).tolist()
        if self.world > 1:
            order += order[: len(self) * self.world - self.n]
        return iter(order[self.rank :: self.world])

    def __len__(self) -> int:
        return -(-self.n // self.world)


class ShardSampler(torch.utils.data.Sampler[int]):
    """Evaluation order: every world-th example from this rank, no padding (shards may differ by
    one example), so that no example is counted twice; the module sums over processes."""

    def __init__(self, n: int, rank: int = 0, world: int = 1):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class PaperDataModule(pl.LightningDataModule):
    """Subclass and implement load_examples, encode, collate, decode, model_kwargs, data_files."""

    num_classes: int | None = 2  # classes (classification), vocabulary (sequence); None: neither
    class_names: list[str] = []
    input_fields: tuple[str, ...] = ()  # the fields that identify an example (overlap hashing)
    # The paper's task (paper.task), set by repro when it builds the datamodule; a datamodule
    # built by hand (a paper's own test) is a classifier's.
    task_class: type[Task] | None = None
    # Batch keys holding id sequences padded with id 0, and on which side ("right": the pads end
    # each row, "left": they start it), along the last dimension. The data gate checks that no
    # pad id sits inside a row (issue 22). {}: the paper pads nothing (or does not say).
    padded_inputs: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A paper's own setup() (one that caches its preprocessing) runs with Python's cyclic
        collector paused too, as the base's does (repro/data/collector.py)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("setup")
        if own is not None and not getattr(own, "__wrapped_paused__", False):
            cls.setup = paused_build(own)

    def __init__(self, cfg: DataConfig, seed: int):
        super().__init__()
        self.cfg = cfg
        self.options = cfg.options  # the paper's own data keys (dataset, paths, lengths ...)
        self.seed = seed  # the training seed: shuffling order (and whatever the paper seeds)
        self.official_split: bool | None = None
        self.splits: dict[str, list[dict]] = {}
        self.datasets: dict[str, Dataset] = {}
        self._is_setup = False
        # Set by the data gate on the builds it compares with this one (train-only, another
        # PYTHONHASHSEED): a paper that caches its preprocessing must then neither read nor write
        # its cache, else the comparison is between a cache and itself.
        self.bypass_cache = False
        # Set by a paper that caches its preprocessing: True when setup() read its cache, False
        # when it built from the files. The data gate compares a build of a sample from the files
        # with a first build that read no cache (nothing of it can be stale), a whole one
        # otherwise; None (the paper does not say) counts as a cache read.
        self.loaded_from_cache: bool | None = None

    # ---- what a paper implements -------------------------------------------------------
    def load_examples(self) -> dict[str, list[dict]]:
        """{"train","val","test"} when the dataset has an official split, else {"all": [...]}."""
        raise NotImplementedError

    def build(self, splits: dict[str, list[dict]]) -> None:
        """Fit what comes from the training split (vocabulary, vectors, statistics). Optional.

        Fit from splits["train"] only: the data gate builds again with val and test empty and
        requires the same model_kwargs() and encoded training items. Lookup tables that need
        every split (e.g. characters of every word) may read all of them as long as what the
        model sees of the training split does not change."""

    def encode(self, example: dict) -> dict[str, torch.Tensor]:
        """One example -> tensors (including "label")."""
        raise NotImplementedError

    def encode_split(self, name: str, examples: list[dict]) -> Dataset:
        """All examples of one split -> a Dataset of encoded items. Override to cache."""
        return ListDataset([self.encode(ex) for ex in examples])

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """Encoded items -> a padded batch dict with "label"."""
        return torch.utils.data.default_collate(items)

    def decode(self, batch: dict[str, torch.Tensor], i: int) -> str:
        """Example i of a batch as a human reads it, decoded from the tensors the model sees."""
        return str({k: v[i].tolist() for k, v in batch.items()})

    def model_kwargs(self) -> dict[str, Any]:
        """What build_model needs from the data (vocabulary size, vectors, number of classes)."""
        return {"num_classes": self.num_classes}

    def data_files(self) -> list[Path]:
        """Files the data comes from; their content is part of the run's fingerprint."""
        return []

    def stats(self) -> dict[str, Any]:
        """Extra numbers for the data gate (OOV rate, vector coverage, lengths), printed as given.

        The gate judges the ones named `oov_rate/<split>` (fraction of input tokens mapped to
        unknown) and `truncated/<split>` (fraction of sequences cut by a length cap), both in
        [0, 1], against stage.data.max_oov_rate and stage.data.max_truncated; a paper without them
        has no such check.
        """
        return {}

    # ---- what the data and shapes gates check when the paper provides it: optional ----------
    # Each returns None by default, and the check that needs it is then "not measured" (issue 22:
    # a train split cut to 10%, unknown words mapped to the pad id, word vectors re-initialised
    # after loading all passed every gate).
    def read_counts(self) -> dict[str, dict[str, Any]] | None:
        """What the readers read and skipped, per split: {"train": {"read": 4002, "skipped":
        {"blank": 2}}, ...} ("all" instead of the three splits when repro splits the examples).
        "read" counts the records of the files (lines, JSON objects), "skipped" those left out
        on purpose, by reason (a declared cut such as data.limit is a reason too). The data gate
        checks that the split's examples + the skipped = the read: a split cut silently fails."""
        return None

    def vocabulary(self) -> list[str] | None:
        """The id -> token table the inputs are encoded with (id 0 padding, id 1 unknown): with
        raw_tokens(), the data gate counts unknown words from the tokens themselves and checks
        that each token is encoded as its vocabulary id (none as the pad id)."""
        return None

    def raw_tokens(self, example: dict) -> dict[str, list[str]] | None:
        """The tokens each id field of encode(example) encodes, as they are looked up (tokenized,
        cased and truncated as encode() does): {"p_words": ["how", "do", ...], ...}."""
        return None

    def loaded_vectors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(ids (n,), vectors (n, D)): vocabulary rows whose vectors were loaded from a file (GloVe
        rows found, not filled in). The shapes gate checks that the built model's embedding still
        holds them (an init applied after loading would replace them). None: nothing loaded."""
        return None

    # ---- using the trained model (repro predict, repro eval, invariances): optional ----------
    def fitted_state(self) -> dict[str, Any] | None:
        """What build() fitted on the training split (vocabulary, character table, statistics),
        as plain data: tensors, strings, numbers, and lists and dicts of them. The full stage
        saves it beside the checkpoint (loaded back with weights_only=True: no pickle), so a run
        directory alone can encode new inputs exactly as training did. {}: nothing is fitted.
        None (the default): the paper does not say, and `repro predict` builds the datamodule
        again from the training data (which must then be at hand)."""
        return None

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        """Restore what fitted_state() returned, in place of load_examples() and build(): after it,
        encode(), collate(), decode() and model_kwargs() work without the data files."""
        raise NotImplementedError(
            f"{type(self).__name__}.load_fitted_state: fitted_state() returned a state, so this "
            "method must restore it"
        )

    def read_inputs(self, path: Path) -> list[dict]:
        """Raw examples from a file in the paper's own input format, labels optional: what
        `repro predict --input` (and `repro eval --input`, which needs the labels) reads; the
        examples then go through encode() as training's did. Default: JSON lines, each one raw
        example as load_examples() returns it (the paper's input fields)."""
        import json

        from repro.errors import DataError

        examples = []
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(
                f"{path}: expected a UTF-8 text file of JSON lines, found {e}; check the path"
            ) from None
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                ex = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object per line (one raw example), found "
                    f"invalid JSON ({e.msg} at column {e.colno}); fix or remove the line"
                ) from None
            if not isinstance(ex, dict):
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object per line (one raw example), found "
                    f"{type(ex).__name__}; fix or remove the line"
                )
            examples.append(ex)
        if not examples:
            raise DataError(f"{path}: expected at least one example, found none")
        return examples

    def present_prediction(self, prediction: dict[str, Any], example: dict) -> dict[str, Any]:
        """A prediction in the task's terms (Task.describe) as the paper's users read it: e.g. a
        standardised regression value back in the target's units. Default: as given."""
        return prediction

    def transformations(self) -> dict[str, Any]:
        """Named transformations of a raw example (example -> example) that the paper's declared
        invariances (paper.invariances) refer to: {"swap_questions": swap}. Default: none."""
        return {}

    # ---- what the base provides ---------------------------------------------------------
    @property
    def task(self) -> Task:
        """The paper's task, knowing this datamodule's classes (num_classes may be set by build())."""
        if self.task_class is None:
            from repro.tasks.classification import Classification

            return Classification(self.num_classes, self.class_names)
        return self.task_class(self.num_classes, self.class_names)

    def example_hash(self, example: dict) -> str:
        fields = self.input_fields or tuple(k for k in example if k not in NON_INPUT_FIELDS)
        return example_hash(example, fields)

    @paused_build  # millions of containers, none garbage: see repro/data/collector.py
    def setup(self, stage: str | None = None) -> None:
        if self._is_setup:
            return
        self._load_and_split()
        self.build(self.splits)
        self.datasets = {s: self.encode_split(s, self.splits[s]) for s in SPLITS}
        self._is_setup = True

    @paused_build
    def setup_train_only(self) -> None:
        """Load and split as setup() does, then let build() see the training split alone (val and
        test empty) and encode only the training split; caches are bypassed.

        The data gate compares this build with a normal one: a vocabulary or statistics fitted on
        train alone come out the same, one fitted on train+val+test does not. A paper needs no
        code for it; setup() overrides are not called (nothing is cached from this build). What
        is fitted outside build() (in load_examples, before repro's split, or per split in
        encode_split) is not seen by this comparison.
        """
        self.bypass_cache = True
        self._load_and_split()
        self.build({"train": self.splits["train"], "val": [], "test": []})
        self.datasets = {"train": self.encode_split("train", self.splits["train"])}

    @paused_build
    def load_splits(self) -> dict[str, list[dict]]:
        """The raw examples of every split, loaded and split as setup() does, nothing fitted or
        encoded (`repro eval` encodes them with a run's fitted state)."""
        self._load_and_split()
        return self.splits

    def _load_and_split(self) -> None:
        loaded = self.load_examples()
        if not isinstance(loaded, dict) or set(loaded) not in (set(SPLITS), {"all"}):
            found = sorted(loaded) if isinstance(loaded, dict) else type(loaded).__name__
            raise PaperError(
                f"{type(self).__name__}.load_examples(): expected keys {list(SPLITS)} (an official "
                f"split) or ['all'] (repro splits it), found {found}"
            )
        task = self.task
        for name, examples in loaded.items():
            for i, ex in enumerate(examples):
                task.check_example(ex, f"{type(self).__name__}.load_examples(): {name} example {i}")
        if set(loaded) == set(SPLITS):
            self.official_split = True
            self.splits = {s: list(loaded[s]) for s in SPLITS}
        else:
            self.official_split = False
            examples = list(loaded["all"])
            idx = split_indices(
                len(examples),
                self.cfg.split,
                self.cfg.split_seed,
                strata=_keys(examples, task.stratum),
                groups=_keys(examples, task.group),
            )
            self.splits = {s: [examples[i] for i in idx[s]] for s in SPLITS}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.datasets[split]
        rank, world = _shard()
        n = len(ds)
        sampler = (
            EpochSeededSampler(n, self.seed, rank, world)
            if shuffle
            else ShardSampler(n, rank, world)
        )
        return DataLoader(
            ds,
            batch_size=self.cfg.batch_size if split == "train" else self.cfg.eval_batch,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def fixed_batch(self, split: str = "train", size: int = 32) -> dict[str, torch.Tensor]:
        """A seeded random `size` examples of a split as one batch: the same every call."""
        import random

        ds = self.datasets[split]
        idx = sorted(random.Random(self.seed).sample(range(len(ds)), min(size, len(ds))))
        return self.collate([ds[i] for i in idx])


def group_id(group: str | int) -> int:
    """A ranking example's query id (its "group": a string or an integer) as the integer tensor
    value a batch carries: a stable 60-bit hash, the same in every process and run (Python's own
    hash of a string is not), so it needs no table fitted on any split."""
    import hashlib

    digest = hashlib.sha1(f"{type(group).__name__}:{group}".encode()).hexdigest()
    return int(digest[:15], 16)


def _keys(examples: list[dict], key) -> list | None:
    """key(example) for every example, or None when the task has no such key (returns None)."""
    if not examples or key(examples[0]) is None:
        return None
    return [key(ex) for ex in examples]
