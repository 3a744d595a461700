"""GloVe loader: coverage, header line, words with spaces, the malformed-input corpus, cache."""

from __future__ import annotations

import contextlib
import os
import pickle
import shlex
import time
import warnings
from pathlib import Path

import pytest
import torch

from repro.data.cache import pack_strings
from repro.data.glove import cache_key, load_glove
from repro.errors import DataError, ReproError


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
    with pytest.raises(
        DataError, match=r"w2v\.txt:1: expected 300-d vectors, found a header saying 3-d"
    ):
        load_glove(f, ["dog"], dim=300, cache_dir=None)


def test_words_with_spaces_take_the_last_dim_fields(tmp_path):
    # GloVe 840B has lines like ". . . 0.1 ..." whose "word" contains spaces.
    f = write(
        tmp_path / "g.txt", ["a 0 0 1", ". . . 1 2 3", "at name@ domain.com 4 5 6", ". 7 8 9"]
    )
    wv = load_glove(f, [".", ". . .", "at", "at name@ domain.com"], dim=3, cache_dir=None)
    assert wv.vectors.tolist() == [[7, 8, 9], [1, 2, 3], [0, 0, 0], [4, 5, 6]]
    assert wv.found.tolist() == [True, True, False, True]


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
    other = load_glove(tmp_path / "g.txt", [*vocab[:10], "w1"], dim=50, cache_dir=tmp_path / "c")
    assert not other.from_cache  # a word the cached vocabulary lacks: the file is read


def test_a_vocabulary_the_cache_covers_is_served_as_parsing_gives_it(tmp_path):
    """A smaller vocabulary (another order, a repeated word, words the file lacks, a word whose
    line repeats) comes from the cache of a larger one: the same rows, found flags and counts as
    parsing the file for it, and no new cache file (issue 21: the data gate's sampled builds)."""
    f = write(
        tmp_path / "g.txt",
        ["the 1 2 3", "cat 4 5 6", "", "dog 7 8 9", "cat 9 9 9", "cat 8 8 8", "emu 3 3 3"],
    )
    big = ["<pad>", "<unk>", "the", "cat", "dog", "emu", "yak", "owl"]
    cache = tmp_path / "c"
    load_glove(f, big, dim=3, cache_dir=cache)
    files = sorted((cache / "glove").iterdir())
    for small in (["<pad>", "cat", "yak", "the"], ["dog", "dog", "<unk>"], ["emu"], []):
        served = load_glove(f, small, dim=3, cache_dir=cache)
        parsed = load_glove(f, small, dim=3, cache_dir=None)
        assert served.from_cache and not parsed.from_cache
        assert torch.equal(served.vectors, parsed.vectors), small
        assert torch.equal(served.found, parsed.found), small
        assert served.duplicates_dropped == parsed.duplicates_dropped, small
        assert served.blank_lines == parsed.blank_lines == 1
    assert sorted((cache / "glove").iterdir()) == files  # nothing written for them
    assert load_glove(f, ["cat", "dog"], dim=3, cache_dir=cache).duplicates_dropped == 2
    assert load_glove(f, ["dog"], dim=3, cache_dir=cache).duplicates_dropped == 0
    # another dimension, or a changed file, is not served from it
    assert not load_glove(f, ["cat"], dim=None, cache_dir=cache).from_cache
    time.sleep(0.01)
    write(f, ["cat 0 0 0"])
    changed = load_glove(f, ["cat"], dim=3, cache_dir=cache)
    assert not changed.from_cache and changed.vectors.tolist() == [[0, 0, 0]]


# ---- the malformed-input corpus (issue 14): tests/fixtures/bad/glove, one case per file --------
BAD = Path(__file__).resolve().parents[1] / "fixtures" / "bad" / "glove"
VOCAB = ["the", "cat", "dog"]  # every word the fixtures use but "zebra"
FIX = "fix or remove that line"
BAD_GLOVE = {  # file -> (":line" or "" for the whole file, the message after "<file><line>: ")
    "empty.txt": (
        "",
        "expected GloVe text (a word and its numbers per line), found an empty file; "
        "re-download or re-extract the file",
    ),
    "only_blank_lines.txt": (
        "",
        "expected GloVe text (a word and its numbers per line), found 2 blank lines and no "
        "vectors; re-download or re-extract the file",
    ),
    "directory.txt": (
        "",
        "expected a GloVe text file, found a directory; point at the .txt file inside it",
    ),
    "gzipped.txt.gz": (
        "",
        "expected an uncompressed GloVe text file, found gzip data; gunzip it first",
    ),
    "zipped.zip": ("", "expected an uncompressed GloVe text file, found zip data; unzip it first"),
    "header_mismatch.txt": (
        ":1",
        "expected 3-d vectors, found a header saying 300-d; set the expected dimension to 300 "
        "or use a 3-d file",
    ),
    "first_line_too_few.txt": (
        ":1",
        "expected a word and 3 numbers, found 2 numbers; a 2-d file? set the expected "
        "dimension to 2",
    ),
    "first_line_too_many.txt": (
        ":1",
        "expected a word and 3 numbers, found 'the' and 4 numbers; a 4-d file? set the expected "
        "dimension to 4",
    ),
    "too_few_numbers.txt": (":3", f"expected a word and 3 numbers, found 2 numbers; {FIX}"),
    "word_only.txt": (":2", f"expected a word and 3 numbers, found 0 numbers; {FIX}"),
    "too_many_numbers.txt": (
        ":2",
        f"expected a word and 3 numbers, found 'cat' and 4 numbers; {FIX}",
    ),
    # Shape is checked on every line, not only on the vocabulary's.
    "too_many_numbers_unused_word.txt": (
        ":2",
        f"expected a word and 3 numbers, found 'zebra' and 4 numbers; {FIX}",
    ),
    "not_a_number.txt": (":2", f"expected 3 numbers after 'cat', found 'x' at number 2; {FIX}"),
    "comma_decimal.txt": (
        ":2",
        f"expected 3 numbers after 'cat', found '0,4' at number 1; {FIX}",
    ),
    "nan_value.txt": (
        ":2",
        f"expected 3 finite numbers after 'cat', found 'nan' at number 2; {FIX}",
    ),
    "inf_value.txt": (
        ":3",
        f"expected 3 finite numbers after 'dog', found '-inf' at number 1; {FIX}",
    ),
    "overflow.txt": (
        ":1",
        f"expected 3 finite numbers after 'the', found '1e50' at number 3; {FIX}",
    ),
}


def test_every_glove_fixture_has_its_expected_message():
    assert sorted(p.name for p in BAD.iterdir()) == sorted(BAD_GLOVE)


@pytest.mark.parametrize("name", sorted(BAD_GLOVE))
def test_bad_glove_file_is_a_one_line_data_error_naming_file_and_line(name):
    where, rest = BAD_GLOVE[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. numpy's overflow warning would be a second line
        with pytest.raises(DataError) as err:
            load_glove(BAD / name, VOCAB, dim=3, cache_dir=None)
    assert isinstance(err.value, ReproError)
    assert str(err.value) == f"{BAD / name}{where}: {rest}"


# ---- what is accepted, and how -----------------------------------------------------------------
@pytest.mark.parametrize("dim", [3, None])
def test_a_first_line_word_with_spaces_is_read(tmp_path, dim):
    f = write(tmp_path / "g.txt", [". . . 1 2 3", "cat 4 5 6"])
    wv = load_glove(f, [". . .", "cat"], dim=dim, cache_dir=None)
    assert wv.dim == 3 and wv.vectors.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_duplicates_keep_the_first_vector_and_are_counted(tmp_path):
    f = write(tmp_path / "g.txt", ["cat 1 2 3", "the 4 5 6", "cat 7 8 9", "cat 0 0 0", "x 1 1 1"])
    for _ in range(2):  # parsed, then from the cache: the same count
        wv = load_glove(f, ["cat", "the"], dim=3, cache_dir=tmp_path / "c")
        assert wv.vectors[0].tolist() == [1, 2, 3] and wv.duplicates_dropped == 2
    assert wv.from_cache


def test_blank_lines_are_skipped_and_counted(tmp_path):
    f = write(tmp_path / "g.txt", ["", "cat 1 2 3", "   ", "the 4 5 6", ""])
    wv = load_glove(f, ["cat", "the"], dim=3, cache_dir=None)
    assert wv.blank_lines == 3 and wv.coverage == 1.0


def test_trailing_spaces_tabs_and_crlf_are_read(tmp_path):
    (tmp_path / "g.txt").write_bytes(b"cat 1 2 3 \nthe\t4\t5\t6\r\ndog  7 8  9\n")
    wv = load_glove(tmp_path / "g.txt", ["cat", "the", "dog"], dim=3, cache_dir=None)
    assert wv.vectors.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_values_are_parsed_only_for_vocabulary_words(tmp_path):
    # The documented trade-off (module docstring): an unused line's values never reach the model.
    f = write(tmp_path / "g.txt", ["cat 1 2 3", "zebra nan x 1e50"])
    assert load_glove(f, ["cat"], dim=3, cache_dir=None).vectors.tolist() == [[1, 2, 3]]


# ---- the cache: weights-only, and a tampered file is re-parsed over, never executed ------------
class Payload:
    """Pickles as a call to os.system: what a planted cache file would run under a full unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo executed > {shlex.quote(str(self.marker))}",))


def plant(kind: str, target: Path, marker: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "pickle":
        target.write_bytes(pickle.dumps({"vectors": Payload(marker)}))
    else:
        torch.save({"vectors": Payload(marker)}, target)  # the zip format torch.save writes


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_tampered_cache_is_refused_not_executed_and_parsed_over(tmp_path, kind):
    f = write(tmp_path / "g.txt", ["cat 1 2 3", "the 4 5 6"])
    cache = tmp_path / "c"
    target = cache / "glove" / f"g-{cache_key(f, ['cat'], 3)}.pt"
    plant(kind, tmp_path / "probe.pt", tmp_path / "probe-ran")
    with contextlib.suppress(RuntimeError):  # a bare pickle runs, then fails torch's magic check
        torch.load(tmp_path / "probe.pt", weights_only=False)  # the payload is live: it runs here
    assert (tmp_path / "probe-ran").is_file()

    marker = tmp_path / "executed"
    plant(kind, target, marker)
    with pytest.warns(UserWarning, match=r"expected a GloVe cache written by repro, found an"):
        wv = load_glove(f, ["cat"], dim=3, cache_dir=cache)
    assert not marker.exists()
    assert not wv.from_cache and wv.vectors.tolist() == [[1, 2, 3]]
    again = load_glove(f, ["cat"], dim=3, cache_dir=cache)  # the planted file was replaced
    assert again.from_cache and again.vectors.tolist() == [[1, 2, 3]] and not marker.exists()


def test_a_cache_with_the_wrong_shape_is_parsed_over(tmp_path):
    f = write(tmp_path / "g.txt", ["cat 1 2 3"])
    target = tmp_path / "c" / "glove" / f"g-{cache_key(f, ['cat'], 3)}.pt"
    target.parent.mkdir(parents=True)
    bad = {"vectors": torch.zeros(5, 3), "found": torch.ones(5, dtype=torch.bool), "dim": 3}
    rows = {"vocab": pack_strings(["cat"]), "duplicates": torch.zeros(1, dtype=torch.int32)}
    torch.save(bad | rows | {"blank_lines": 0}, target)
    with pytest.warns(UserWarning, match="unexpected contents"):
        wv = load_glove(f, ["cat"], dim=3, cache_dir=tmp_path / "c")
    assert not wv.from_cache and wv.vectors.tolist() == [[1, 2, 3]]
