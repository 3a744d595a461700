"""Tests for repro/data/digest.py and the datamodule's train-only build."""

from __future__ import annotations

import torch

from repro.data.digest import digest_differences, value_digest


def test_value_digest_sees_values_dtypes_and_shapes():
    t = torch.arange(4)
    assert value_digest(t) == value_digest(torch.arange(4))
    assert value_digest(t) != value_digest(t.float())
    assert value_digest(t) != value_digest(t.reshape(2, 2))
    assert value_digest({"a": [t, 3]}) == value_digest({"a": [torch.arange(4), 3]})


def test_value_digest_of_objects_ignores_their_address():
    class Vocab:
        pass

    assert value_digest(Vocab()) == value_digest(Vocab())


def test_digest_differences_names_parts_in_split_order():
    a = {
        "examples": {"train": "1", "val": "2", "test": "3"},
        "model_kwargs": {"v": "x"},
        "first_batch": "f",
    }
    b = {
        "examples": {"train": "1", "val": "9", "test": "8"},
        "model_kwargs": {"v": "y"},
        "first_batch": "f",
    }
    assert digest_differences(a, b) == ["examples/val", "examples/test", "model_kwargs/v"]
    assert digest_differences(a, a) == []


def test_setup_train_only_hides_val_and_test_from_build(project):
    from repro.config.schema import DataConfig
    from repro.data.datamodule import PaperDataModule

    seen = {}

    class Recorder(PaperDataModule):
        def load_examples(self):
            return {"all": [{"x": [float(i)], "label": i % 2} for i in range(40)]}

        def build(self, splits):
            seen.update({s: len(v) for s, v in splits.items()})

        def encode(self, ex):
            return {"x": torch.tensor(ex["x"]), "label": torch.tensor(ex["label"])}

    cfg = DataConfig(
        batch_size=4, eval_batch_size=None, num_workers=0, split=(0.8, 0.1, 0.1), split_seed=0
    )
    dm = Recorder(cfg, 0)
    dm.setup_train_only()
    assert seen == {"train": 32, "val": 0, "test": 0}
    assert list(dm.datasets) == ["train"] and dm.bypass_cache
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [32, 4, 4]
