"""PaperDataModule: the LightningDataModule base every paper's data.py subclasses.

A paper implements how to read and encode its examples; this base owns the split (official, or
the seeded 80/10/10 when there is none), the seeded loaders, and what the data gate inspects.

An *example* is a dict with an integer "label" and the paper's input fields (strings, lists).
A *batch* is a dict of tensors with a "label" key; every other key is passed to the model as a
keyword argument: `logits = model(**{k: v for k, v in batch.items() if k != "label"})`.
Convention for integer inputs: id 0 is padding, id 1 is "unknown".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from repro.data.split import SPLITS, example_hash, split_indices


class ListDataset(Dataset):
    def __init__(self, items: list[Any]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class EpochSeededSampler(torch.utils.data.Sampler[int]):
    """A shuffling sampler whose order depends only on (seed, epoch).

    Lightning calls set_epoch() each epoch, so a run resumed from a checkpoint at epoch k sees the
    same order for epoch k as an uninterrupted run (a generator seeded once would restart).
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1  # callers that never call set_epoch still get a new order each pass
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class PaperDataModule(pl.LightningDataModule):
    """Subclass and implement load_examples, encode, collate, decode, model_kwargs, data_files."""

    num_classes: int = 2
    class_names: list[str] = []
    input_fields: tuple[str, ...] = ()  # the fields that identify an example (overlap hashing)

    def __init__(self, cfg: dict, seed: int = 0):
        super().__init__()
        self.cfg = dict(cfg)
        self.seed = seed
        self.batch_size = int(self.cfg.get("batch_size", 32))
        self.eval_batch_size = int(self.cfg.get("eval_batch_size") or self.batch_size)
        self.num_workers = int(self.cfg.get("num_workers", 0))
        self.split_fractions = tuple(self.cfg.get("split", (0.8, 0.1, 0.1)))
        self.official_split: bool | None = None
        self.splits: dict[str, list[dict]] = {}
        self.datasets: dict[str, Dataset] = {}
        self._is_setup = False

    # ---- what a paper implements -------------------------------------------------------
    def load_examples(self) -> dict[str, list[dict]]:
        """{"train","val","test"} when the dataset has an official split, else {"all": [...]}."""
        raise NotImplementedError

    def build(self, splits: dict[str, list[dict]]) -> None:
        """Fit what comes from the training split (vocabulary, vectors). Optional."""

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
        """Extra numbers for the data gate (OOV rate, vector coverage, lengths)."""
        return {}

    # ---- what the base provides ---------------------------------------------------------
    def example_hash(self, example: dict) -> str:
        fields = self.input_fields or tuple(k for k in example if k not in ("label", "id"))
        return example_hash(example, fields)

    def setup(self, stage: str | None = None) -> None:
        if self._is_setup:
            return
        loaded = self.load_examples()
        if set(loaded) == set(SPLITS):
            self.official_split = True
            self.splits = {s: list(loaded[s]) for s in SPLITS}
        elif set(loaded) == {"all"}:
            self.official_split = False
            examples = list(loaded["all"])
            idx = split_indices([ex["label"] for ex in examples], self.split_fractions, self.seed)
            self.splits = {s: [examples[i] for i in idx[s]] for s in SPLITS}
        else:
            raise ValueError(
                f"{type(self).__name__}.load_examples() returned keys {sorted(loaded)}; "
                f"expected {list(SPLITS)} (official split) or ['all'] (repro splits 80/10/10)"
            )
        self.build(self.splits)
        self.datasets = {s: self.encode_split(s, self.splits[s]) for s in SPLITS}
        self._is_setup = True

    def _loader(self, split: str, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        ds = self.datasets[split]
        return DataLoader(
            ds,
            batch_size=batch_size or (self.batch_size if split == "train" else self.eval_batch_size),
            sampler=EpochSeededSampler(len(ds), self.seed) if shuffle else None,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
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
