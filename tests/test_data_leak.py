"""Tests for repro/data/leak.py: inputs that are a function of the label."""

from __future__ import annotations

import torch

from repro.data.leak import constant_columns, label_functions, present_tokens


def test_constant_columns_finds_a_copied_label_only():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3  # (60,)
    x = torch.randn(60, 4, generator=g)  # (60, 4)
    x[:, 2] = y.float() * 2  # the label, scaled
    x[:, 3] = 1.0  # constant everywhere: not a function of the label that tells anything
    assert constant_columns(x, y) == [2]


def test_predictive_but_noisy_feature_is_not_flagged():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 2
    x = (y.float() * 5 + 0.1 * torch.randn(60, generator=g))[:, None]  # separable, not constant
    assert constant_columns(x, y) == []


def test_present_tokens_finds_a_label_token_at_any_position():
    y = torch.tensor([0, 0, 1, 1])
    ids = torch.tensor(
        [[5, 9, 0, 0], [6, 5, 9, 0], [5, 7, 0, 0], [8, 5, 0, 0]]
    )  # 9 only in class 0
    assert present_tokens(ids, y) == {9: {0: True, 1: False}}


def test_label_functions_names_key_and_position():
    y = torch.tensor([0, 1, 2] * 10)
    batch = {"x": torch.randn(30, 2, 3), "label": y}
    batch["x"][:, 1, 2] = y.float()
    (found,) = label_functions(batch)
    assert (found.key, found.where) == ("x", "column 5 (index (1, 2))")
    assert found.per_class == {0: "0", 1: "1", 2: "2"}
