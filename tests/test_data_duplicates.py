"""Tests for repro/data/duplicates.py: normalised-text and nearest-neighbour near-duplicates."""

from __future__ import annotations

import random

from repro.data.duplicates import (
    binomial_tail,
    input_kind,
    neighbour_near_duplicates,
    normalise,
    normalise_all,
    text_near_duplicates,
)
from repro.data.split import example_hash


def test_normalise_drops_case_punctuation_and_spacing():
    assert normalise("What is  X?") == "what is x"
    assert normalise(["What", "is", "X", "?"]) == "what is x"
    assert normalise("don't") == "don t"


def test_a_field_normalised_at_once_is_each_value_normalised_alone():
    cases = [
        ["What is  X?", ["Don't", "stop", "_now_"], "", [], ("a", "B")],
        ["ünïcode Ωmega?", "plain"],  # not ASCII: one value at a time
        ["a\nb", "c"],  # a newline inside a value
        [3, "x"],  # not text
        [["a", 1]],  # a list holding a number
        [],
    ]
    for values in cases:
        assert normalise_all(values) == [normalise(v) for v in values], values


def test_input_kind():
    assert input_kind({"p": ["a", "b"], "n": 3}, ("p", "n")) == "text"
    assert input_kind({"x": [0.5, 1]}, ("x",)) == "numbers"
    assert input_kind({"p": "a", "x": [0.5]}, ("p", "x")) == "other"


def _text_splits(test):
    train = [{"p": f"question {i} ?", "label": i % 2} for i in range(20)]
    splits = {"train": train, "val": [{"p": "other one", "label": 0}], "test": test}
    exact = {s: [example_hash(e, ("p",)) for e in exs] for s, exs in splits.items()}
    return splits, exact


def test_text_near_duplicates_counts_variants_but_not_exact_copies():
    test = [
        {"p": "Question 3", "label": 1},  # a variant of train's "question 3 ?"
        {"p": "question 4 ?", "label": 0},  # exact: the disjointness check counts it
        {"p": "something new", "label": 0},
    ]
    splits, exact = _text_splits(test)
    nd = text_near_duplicates(splits, ("p",), exact)
    assert nd.counts == {"train&val": 0, "train&test": 1, "val&test": 0}
    assert nd.rates["train&test"] == 1 / 3
    assert nd.pair == ("train: p: question 3 ?", "test: p: Question 3")


def test_text_near_duplicates_none():
    splits, exact = _text_splits([{"p": "something new", "label": 0}])
    nd = text_near_duplicates(splits, ("p",), exact)
    assert sum(nd.counts.values()) == 0 and nd.pair is None


def _points(n, d, rng):
    return [{"x": [rng.gauss(0, 1) for _ in range(d)], "label": 0} for _ in range(n)]


def test_neighbour_near_duplicates_finds_noised_copies():
    rng = random.Random(0)
    train = _points(300, 8, rng)
    copies = [{"x": [v + 1e-4 for v in e["x"]], "label": 0} for e in train[:10]]
    splits = {"train": train, "val": _points(30, 8, rng), "test": copies + _points(20, 8, rng)}
    nd = neighbour_near_duplicates(splits, ("x",), 0.1, 2000)
    assert nd.counts == {"train&val": 0, "train&test": 10}
    assert nd.expected["train&test"] == 0.0
    assert nd.pair[0].startswith("train #0: x: [")


def test_neighbour_near_duplicates_in_one_dimension_are_chance():
    """In 1-D, fresh points often sit near a training point: the training split's own rate of such
    neighbours is the baseline, and the count stays within chance."""
    rng = random.Random(1)
    splits = {s: _points(n, 1, rng) for s, n in (("train", 400), ("val", 50), ("test", 50))}
    nd = neighbour_near_duplicates(splits, ("x",), 0.1, 2000)
    assert nd.expected["train&test"] > 0.03  # ~7% of 1-D neighbours are that close
    assert nd.tail_p["train&test"] > 0.001


def test_neighbour_near_duplicates_not_measured_for_ragged_inputs():
    splits = {"train": [{"x": [1.0]}, {"x": [1.0, 2.0]}], "val": [], "test": []}
    nd = neighbour_near_duplicates(splits, ("x",), 0.1, 100)
    assert nd.method == "" and "varying size" in nd.note


def test_binomial_tail():
    assert binomial_tail(0, 10, 0.5) == 1.0
    assert abs(binomial_tail(10, 10, 0.5) - 0.5**10) < 1e-12
    assert binomial_tail(1, 10, 0.0) == 0.0
