"""A split's example hashes at once (repro.data.split.example_hashes) equal one example_hash per
example, on text and on every input that leaves its fast path."""

from __future__ import annotations

import pytest

from repro.data.split import example_hash, example_hashes

CASES = {
    "tokens and strings": [
        {"p": ["what", "is", "it", "?"], "q": "a whole sentence"},
        {"p": [], "q": ""},
        {"p": ["ünïcode", "\ud800"], "q": "x"},  # a lone surrogate: encoded with surrogatepass
    ],
    "a token holding a separator": [
        {"p": ["a", "b"], "q": "c"},
        {"p": ["a\x1fb"], "q": "c"},  # one token whose text is that of two
        {"p": ["a\x1eb"], "q": "c"},
    ],
    "a string holding a separator": [{"p": ["a"], "q": "b\x1ec"}, {"p": ["a"], "q": "b"}],
    "a list of numbers": [{"p": [1, 2], "q": "x"}, {"p": ["1", "2"], "q": "x"}],
    "numbers and dicts": [{"p": 3.5, "q": {"b": 1, "a": 2}}, {"p": 3.5, "q": {"a": 2, "b": 1}}],
}


@pytest.mark.parametrize("case", CASES)
def test_a_split_at_once_hashes_as_each_example_alone(case):
    examples = CASES[case]
    assert example_hashes(examples, ("p", "q")) == [example_hash(e, ("p", "q")) for e in examples]


def test_texts_that_differ_only_by_where_a_separator_falls_hash_differently():
    a, b = CASES["a token holding a separator"][:2]
    assert example_hashes([a, b], ("p", "q"))[0] != example_hashes([a, b], ("p", "q"))[1]
