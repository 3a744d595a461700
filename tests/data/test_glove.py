"""GloVe loader: coverage, header line, words with spaces, malformed lines, cache."""

from __future__ import annotations

import time

import pytest
import torch

from repro.data.glove import load_glove
from repro.errors import DataError


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_keeps_vocabulary_rows_and_reports_coverage(tmp_path):
    f = write(tmp_path / "g.txt", ["the 1 2 3", "cat 4 5 6", "dog 7 8 9"])
    wv = load_glove(f, ["cat", "the", "zebra"], dim=3, cache_dir=None)
    assert torch.equal(wv.vectors, torch.tensor([[4.0, 5, 6], [1, 2, 3], [0, 0, 0]]))
    assert wv.found.tolist() == [True, True, False]
    assert wv.coverage == pytest.approx(2 / 3) and wv.missing == 1 and wv.dim == 3


def test_infers_dim_and_skips_a_word2vec_header(tmp_path):
    f = write(tmp_path / "w2v.txt", ["2 3", "cat 4 5 6", "dog 7 8 9"])
    wv = load_glove(f, ["dog"], cache_dir=None)
    assert wv.dim == 3 and wv.vectors[0].tolist() == [7, 8, 9]
    with pytest.raises(DataError, match=r"w2v\.txt:1: header says 3-d vectors, expected 300-d"):
        load_glove(f, ["dog"], dim=300, cache_dir=None)


def test_words_with_spaces_take_the_last_dim_fields(tmp_path):
    # GloVe 840B has lines like ". . . 0.1 ..." whose "word" contains spaces.
    f = write(
        tmp_path / "g.txt", ["a 0 0 1", ". . . 1 2 3", "at name@ domain.com 4 5 6", ". 7 8 9"]
    )
    wv = load_glove(f, [".", ". . .", "at", "at name@ domain.com"], dim=3, cache_dir=None)
    assert wv.vectors.tolist() == [[7, 8, 9], [1, 2, 3], [0, 0, 0], [4, 5, 6]]
    assert wv.found.tolist() == [True, True, False, True]


@pytest.mark.parametrize(
    "lines, expected",
    [
        (["a 1 2 3", "b 1 2"], r"g\.txt:2: expected a word and 3 numbers, found 2 numbers"),
        (["a 1 2 3", "b 1 x 3"], r"g\.txt:2: expected 3 numbers after the word"),
        (["a 1 2 3 4 5"], r"g\.txt:1: expected a word and 3 numbers, found 5 numbers"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, lines, expected):
    f = write(tmp_path / "g.txt", lines)
    with pytest.raises(DataError, match=expected):
        load_glove(f, ["a", "b"], dim=3, cache_dir=None)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="word vectors file not found: .*absent.txt"):
        load_glove(tmp_path / "absent.txt", ["a"], dim=3)


def test_cache_reload_is_faster_and_identical(tmp_path):
    words = [f"w{i}" for i in range(20000)]
    row = " ".join(["0.123456"] * 50)
    write(tmp_path / "g.txt", [f"{w} {row}" for w in words])
    vocab = words[::4]
    t0 = time.perf_counter()
    first = load_glove(tmp_path / "g.txt", vocab, dim=50, cache_dir=tmp_path / "c")
    t1 = time.perf_counter()
    second = load_glove(tmp_path / "g.txt", vocab, dim=50, cache_dir=tmp_path / "c")
    t2 = time.perf_counter()
    assert not first.from_cache and second.from_cache
    assert torch.equal(first.vectors, second.vectors) and second.coverage == 1.0
    assert t2 - t1 < t1 - t0
    other = load_glove(tmp_path / "g.txt", vocab[:10], dim=50, cache_dir=tmp_path / "c")
    assert not other.from_cache  # another vocabulary is another cache entry
