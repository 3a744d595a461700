"""Tests for repro/data/probe.py, features.py and shift.py: label agreement and feature shift."""

from __future__ import annotations

import torch

from repro.data.features import featurize
from repro.data.probe import balanced_accuracy, odd_split, probe_views
from repro.data.shift import chance_bound, ks_statistics, mean_shift


def _matrix(acc_into_test: float) -> dict:
    se = 0.02
    return {
        "train": {"val": (0.9, se), "test": (acc_into_test, se)},
        "val": {"train": (0.9, se), "test": (acc_into_test, se)},
        "test": {"train": (0.9, se), "val": (0.9, se)},
    }


def test_odd_split_names_the_split_whose_labels_disagree():
    odd = odd_split(_matrix(0.1), max_drop=0.25)
    assert odd["split"] == "test"
    assert odd["drops"]["train"] == {"on": "val", "acc_other": 0.9, "acc_odd": 0.1}


def test_odd_split_none_when_the_drop_is_small_or_noisy():
    assert odd_split(_matrix(0.8), max_drop=0.25) is None
    noisy = {a: {b: (acc, 0.2) for b, (acc, _) in row.items()} for a, row in _matrix(0.6).items()}
    assert odd_split(noisy, max_drop=0.25) is None  # a 0.3 drop, but 3 SE is 0.85


def test_balanced_accuracy_ignores_class_balance():
    y = torch.tensor([0] * 90 + [1] * 10)
    always_zero = torch.zeros(100, dtype=torch.long)
    acc, se = balanced_accuracy(always_zero, y, 2)
    assert acc == 0.5 and se == 0.0


def _items(n, shift, gen, flip=False):
    y = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=gen) + shift + 3 * y[:, None].float()
    labels = 1 - y if flip else y
    return [{"x": x[i], "label": labels[i]} for i in range(n)]


def test_probe_views_catch_a_flipped_split():
    gen = torch.Generator().manual_seed(0)
    items = {
        "train": _items(200, 0, gen),
        "val": _items(50, 0, gen),
        "test": _items(50, 0, gen, True),
    }
    feats = {s: featurize(v, 64) for s, v in items.items()}
    labels = {s: torch.stack([it["label"] for it in v]) for s, v in items.items()}
    views = probe_views(feats, labels, 2)
    assert list(views) == ["inputs"]  # float inputs only: no bags or overlaps
    assert odd_split(views["inputs"], 0.25)["split"] == "test"


def test_features_of_id_inputs_lengths_bags_and_overlaps():
    items = [
        {"p": torch.tensor([3, 4, 0]), "q": torch.tensor([4, 5, 6]), "label": torch.tensor(0)},
        {"p": torch.tensor([7, 0, 0]), "q": torch.tensor([7, 0, 0]), "label": torch.tensor(1)},
    ]
    f = featurize(items, 8)
    assert f.names == ["len(p)", "len(q)"]
    assert f.dense.tolist() == [[2.0, 3.0], [1.0, 1.0]]
    assert f.bags.shape == (2, 16) and f.bags[0, 3] == 0.5
    assert f.overlaps.flatten().tolist() == [0.25, 1.0]  # |{4}|/|{3,4,5,6}|, |{7}|/|{7}|


def test_ks_statistics():
    a = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    assert ks_statistics(a, a).item() == 0.0
    assert ks_statistics(a, a + 10).item() == 1.0


def test_mean_shift_skips_constant_columns():
    gen = torch.Generator().manual_seed(0)
    train = torch.cat([torch.randn(100, 1, generator=gen), torch.ones(100, 1)], 1)
    other = torch.cat([torch.randn(50, 1, generator=gen) + 5, torch.ones(50, 1)], 1)
    mean, column, worst = mean_shift(train, other)
    assert column == 0 and mean == worst and mean > 0.9


def test_chance_bound_grows_for_small_splits():
    assert chance_bound(240, 30, 3.09) < 0.35 < chance_bound(240, 5, 3.09)
