"""Tests for repro/data/served.py: loader rows matched to split items whatever their padding."""

from __future__ import annotations

import torch

from repro.data.served import row_keys, trimmed_lengths


def _pad(items, T, K):
    words = torch.zeros(len(items), T, dtype=torch.long)  # (B, T)
    chars = torch.zeros(len(items), T, K, dtype=torch.long)  # (B, T, K)
    for b, (w, c) in enumerate(items):
        words[b, : len(w)] = w
        chars[b, : c.shape[0], : c.shape[1]] = c
    return {"w": words, "c": chars, "label": torch.zeros(len(items), dtype=torch.long)}


def test_a_row_has_the_same_key_whatever_its_batch_padding():
    a = (torch.tensor([3, 4]), torch.tensor([[1, 2], [5, 0]]))
    b = (torch.tensor([7, 8, 9, 2]), torch.tensor([[1, 2, 3], [4, 0, 0], [6, 6, 6], [1, 0, 0]]))
    alone = row_keys(_pad([a], 2, 2))
    together = row_keys(_pad([a, b], 4, 3))
    assert together[0] == alone[0]
    assert together[1] != alone[0]


def test_trimmed_lengths_per_dimension():
    x = torch.zeros(2, 4, 3, dtype=torch.long)
    x[0, :2, :1] = 1
    x[1, 2, 2] = 5
    assert trimmed_lengths(x.numpy()).tolist() == [[2, 1], [3, 3]]
    assert trimmed_lengths(torch.zeros(2, 0, 3).numpy()).tolist() == [[0, 0], [0, 0]]


def test_keys_are_those_of_each_row_cut_to_its_last_nonzero():
    """The keys equal a sha1 written out per row: 1-d, 2-d (an all-padding row), 3-d and 4-d
    inputs, float -0.0 counted as padding as 0 is."""
    import hashlib

    batch = {
        "a": torch.tensor([[1, 2, 0], [0, 0, 0]]),
        "b": torch.tensor([[[1.0, -0.0], [0.0, 0.0]], [[0.0, 2.0], [3.0, 0.0]]]),
        "c": torch.ones(2, 1, 2, 2, dtype=torch.long),
        "d": torch.tensor([5, 6]),
        "label": torch.tensor([0, 1]),
    }
    rows = {
        0: [("a", [1, 2], (2,)), ("b", [[1.0]], (1, 1)), ("c", None, (1, 2, 2)), ("d", 5, (1,))],
        1: [
            ("a", [], (0,)),
            ("b", [[0.0, 2.0], [3.0, 0.0]], (2, 2)),
            ("c", None, (1, 2, 2)),
            ("d", 6, (1,)),
        ],
    }
    for i, fields in rows.items():
        h = hashlib.sha1()
        for name, values, shape in fields:
            x = batch[name]
            v = (
                torch.ones(1, 2, 2, dtype=torch.long)
                if values is None
                else torch.tensor(values, dtype=x.dtype)
            )
            h.update(f"{name}:{x.dtype}:{shape}:".encode() + v.reshape(shape).numpy().tobytes())
        assert row_keys(batch)[i] == h.hexdigest(), i


def test_label_is_not_part_of_the_key():
    batch = {"x": torch.ones(2, 3), "label": torch.tensor([0, 1])}
    keys = row_keys(batch)
    assert keys[0] == keys[1]
