"""BiMPM data: readers, malformed input, vocabulary, batches, cache, sample set and baseline."""

from __future__ import annotations

import contextlib
import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch

import papers.bimpm.data as bimpm_data
import papers.bimpm.readers as bimpm_readers
import repro.data.text
from papers.bimpm.baseline import baseline
from papers.bimpm.data import BiMPMDataConfig, BiMPMDataModule
from papers.bimpm.readers import read_quora, read_snli
from papers.bimpm.sample import make_sample
from papers.bimpm.tests.configs import data_config
from repro.config.typed import from_dict
from repro.data.cache import pack_strings, unpack_strings
from repro.data.text import make_tokenizer
from repro.errors import ConfigError, DataError, ReproError

SAMPLE = Path(make_sample.__file__).resolve().parent
BAD = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "bad"  # malformed-input corpus
# the corpus is the repo's (tests/fixtures/bad): a project holding only conf/ and papers/bimpm
# (repro init + a copy of the paper) runs the other tests and skips these, saying why
needs_corpus = pytest.mark.skipif(not BAD.is_dir(), reason=f"{BAD}: the repo's corpus is not here")
WS = make_tokenizer("whitespace", lowercase=False)


def _dm(values: dict, seed: int = 0) -> BiMPMDataModule:
    """The datamodule for a data section given as a dict (repro's keys and BiMPM's mixed)."""
    return BiMPMDataModule(data_config(values), seed)


def sample_cfg(tmp_path: Path, **kw) -> dict:
    cfg = {
        "dataset": "sample",
        "sample_dir": str(SAMPLE),
        "vectors": str(SAMPLE / "vectors.txt"),
        "word_dim": 50,
        "cache_dir": str(tmp_path / "cache"),
    }
    return {**cfg, **kw}


@pytest.fixture(scope="module")
def dm(tmp_path_factory) -> BiMPMDataModule:
    m = _dm(sample_cfg(tmp_path_factory.mktemp("dm")), seed=0)
    m.setup()
    return m


def write_quora(
    folder: Path, train: str, dev: str = "1\ta b\ta c\tx\n", test: str = "0\ta\tb\ty\n"
):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("train.tsv", train), ("dev.tsv", dev), ("test.tsv", test)):
        (folder / name).write_text(text, encoding="utf-8")


def test_config_rejects_unknown_key_naming_valid_ones():
    with pytest.raises(ConfigError, match=r"data\.max_lenght: unknown key.*'max_len'"):
        from_dict(BiMPMDataConfig, {"max_lenght": 10}, "data")
    with pytest.raises(
        ConfigError, match=r"data\.tokenizer: expected one of \['auto', 'whitespace'"
    ):
        from_dict(BiMPMDataConfig, {"tokenizer": "nltk"}, "data")
    with pytest.raises(ConfigError, match=r"data\.max_len: expected an integer >= 1, found 0"):
        from_dict(BiMPMDataConfig, {"max_len": 0}, "data")


def test_quora_reader_reads_the_sample():
    exs, skipped, read = read_quora(SAMPLE / "train.tsv", WS)
    assert skipped == {"blank": 0, "empty_pair": 0}
    assert len(exs) == 4000 == read
    assert sum(ex["label"] for ex in exs) == 2000
    assert set(exs[0]) == {"p", "q", "label", "id"} and exs[0]["p"][-1] == "?"


def test_snli_reader_drops_no_consensus_and_has_three_classes():
    path = SAMPLE / "snli" / "snli_1.0_train.jsonl"
    n_dash = path.read_text().count('"gold_label": "-"')
    exs, skipped, read = read_snli(path, make_tokenizer("spacy", lowercase=False))
    assert skipped == {"blank": 0, "no_consensus": n_dash, "empty_pair": 0} and n_dash > 0
    assert len(exs) + n_dash == len(path.read_text().splitlines()) == read
    assert {ex["label"] for ex in exs} == {0, 1, 2}
    assert exs[0]["p"][-1] == "?"  # spaCy split the attached punctuation


def test_snli_datamodule_has_three_classes(tmp_path):
    m = _dm(
        {
            "dataset": "snli",
            "snli_dir": str(SAMPLE / "snli"),
            "word_dim": 8,
            "cache_dir": str(tmp_path),
        }
    )
    m.setup()
    assert m.num_classes == 3 and m.model_kwargs()["num_classes"] == 3
    n_dash = (SAMPLE / "snli" / "snli_1.0_dev.jsonl").read_text().count('"gold_label": "-"')
    assert m.stats()["skipped_no_consensus/val"] == n_dash > 0


# ---- the malformed-input corpus (issue 14): tests/fixtures/bad/{quora,snli}, one case per file --
FIX = "fix or remove the line"
EMPTY = "check that the file was copied or extracted completely"
COLUMNS = "expected 4 tab-separated columns (label, sentence1, sentence2, id), found"
BOTH = "expected text in both sentences, found an empty"
DROP = "fix the line or set data.empty=drop to skip such pairs"
OBJECT = "expected a JSON object per line, found"
GOLD = "expected gold_label entailment, neutral, contradiction or '-', found"
BAD_QUORA = {  # file -> (":line" or "" for the whole file, the message after "<file><line>: ")
    "empty.tsv": ("", f"expected at least one pair, found an empty file; {EMPTY}"),
    "only_blank_lines.tsv": (
        "",
        f"expected at least one pair, found no pairs (3 lines skipped: blank 3); {EMPTY}",
    ),
    "directory.tsv": ("", "expected a text file, found a directory; point at the file inside it"),
    "gzipped.tsv.gz": ("", "expected a UTF-8 text file, found gzip data; gunzip it first"),
    "utf16.tsv": (
        ":1",
        "expected UTF-8 text, found byte 0xff at column 1; re-save the file as UTF-8",
    ),
    "latin1.tsv": (
        ":2",
        "expected UTF-8 text, found byte 0xe9 at column 9; re-save the file as UTF-8",
    ),
    "nul_byte.tsv": (
        ":2",
        "expected text, found a NUL byte at column 16; the file is binary or damaged: "
        "re-extract or re-download it",
    ),
    "spaces_not_tabs.tsv": (":1", f"{COLUMNS} 1; {FIX}"),
    "three_columns.tsv": (":2", f"{COLUMNS} 3; {FIX}"),
    "five_columns.tsv": (":2", f"{COLUMNS} 5; {FIX}"),
    "truncated_last_line.tsv": (":3", f"{COLUMNS} 2; {FIX}"),
    "label_word.tsv": (":2", "expected label 0 or 1 in column 1, found 'yes'; fix the label"),
    "label_two.tsv": (":3", "expected label 0 or 1 in column 1, found '2'; fix the label"),
    "empty_first_sentence.tsv": (":2", f"{BOTH} first sentence; {DROP}"),
    "blank_second_sentence.tsv": (":2", f"{BOTH} second sentence; {DROP}"),
}
BAD_SNLI = {
    "empty.jsonl": ("", f"expected at least one pair, found an empty file; {EMPTY}"),
    "all_no_consensus.jsonl": (
        "",
        f"expected at least one pair, found no pairs (2 lines skipped: no_consensus 2); {EMPTY}",
    ),
    "directory.jsonl": (
        "",
        "expected a text file, found a directory; point at the file inside it",
    ),
    "gzipped.jsonl.gz": ("", "expected a UTF-8 text file, found gzip data; gunzip it first"),
    "number_line.jsonl": (":2", f"{OBJECT} the number 4; {FIX}"),
    "null_line.jsonl": (":2", f"{OBJECT} null; {FIX}"),
    "list_line.jsonl": (":2", f"{OBJECT} a list; {FIX}"),
    "string_line.jsonl": (":2", f"{OBJECT} 'A man plays a guitar.'; {FIX}"),
    "invalid_json.jsonl": (
        ":2",
        f"{OBJECT} invalid JSON (Expecting property name enclosed in double quotes at column 2); "
        f"{FIX}",
    ),
    "truncated_line.jsonl": (
        ":2",
        f"{OBJECT} invalid JSON (Expecting ':' delimiter at column 41); {FIX}",
    ),
    "missing_sentence2.jsonl": (
        ":2",
        f"expected keys gold_label, sentence1, sentence2, found an object without sentence2; {FIX}",
    ),
    "sentence1_null.jsonl": (":2", f"expected sentence1 to be a string, found null; {FIX}"),
    "sentence2_number.jsonl": (
        ":2",
        f"expected sentence2 to be a string, found the number 4; {FIX}",
    ),
    "sentence1_list.jsonl": (":2", f"expected sentence1 to be a string, found a list; {FIX}"),
    "unknown_gold_label.jsonl": (":2", f"{GOLD} 'maybe'; fix the label"),
    "gold_label_null.jsonl": (":2", f"{GOLD} null; fix the label"),
    "escaped_nul.jsonl": (":2", f"expected text in sentence1, found a NUL character; {FIX}"),
    "blank_sentence2.jsonl": (":2", f"{BOTH} second sentence; {DROP}"),
}
READERS = {"quora": (read_quora, BAD_QUORA), "snli": (read_snli, BAD_SNLI)}


@needs_corpus
@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_fixture_has_its_expected_message(reader):
    assert sorted(p.name for p in (BAD / reader).iterdir()) == sorted(READERS[reader][1])


def _bad_file_error(reader: str, name: str) -> tuple[DataError, str]:
    read, table = READERS[reader]
    where, rest = table[name]
    with pytest.raises(DataError) as err:
        read(BAD / reader / name, WS)
    assert isinstance(err.value, ReproError)
    return err.value, f"{BAD / reader / name}{where}: {rest}"


@needs_corpus
@pytest.mark.parametrize("name", sorted(BAD_QUORA))
def test_bad_quora_file_is_a_one_line_data_error_naming_file_and_line(name):
    error, expected = _bad_file_error("quora", name)
    assert str(error) == expected


@needs_corpus
@pytest.mark.parametrize("name", sorted(BAD_SNLI))
def test_bad_snli_file_is_a_one_line_data_error_naming_file_and_line(name):
    error, expected = _bad_file_error("snli", name)
    assert str(error) == expected


@needs_corpus
def test_a_malformed_file_stops_setup_with_the_readers_error(tmp_path):
    write_quora(tmp_path / "q", "0\ta b\tc d\t1\n")
    (tmp_path / "q" / "dev.tsv").write_bytes((BAD / "quora" / "latin1.tsv").read_bytes())
    m = _dm({"dataset": "quora", "quora_dir": str(tmp_path / "q"), "cache": False})
    with pytest.raises(DataError, match=r"dev\.tsv:2: expected UTF-8 text, found byte 0xe9"):
        m.setup()


def test_skipped_lines_are_counted_per_reason_and_split(tmp_path):
    write_quora(tmp_path / "q", "0\ta b\tc d\t1\n\n1\t\tb\t2\n1\ta\t \t3\n\n")
    m = _dm({"dataset": "quora", "quora_dir": str(tmp_path / "q"), "empty": "drop", "cache": False})
    m.setup()
    assert len(m.splits["train"]) == 1
    s = m.stats()
    assert (s["skipped_blank/train"], s["skipped_empty_pair/train"]) == (2, 2)
    assert (s["skipped_blank/val"], s["skipped_empty_pair/test"]) == (0, 0)


def test_skipped_snli_lines_are_counted(tmp_path):
    folder = tmp_path / "snli"
    folder.mkdir()
    ok = '{"gold_label": "neutral", "sentence1": "A", "sentence2": "B"}\n'
    dash = '{"gold_label": "-", "sentence1": "A", "sentence2": "C"}\n'
    for split in ("train", "dev", "test"):
        (folder / f"snli_1.0_{split}.jsonl").write_text(ok + "\n" + dash + dash)
    m = _dm({"dataset": "snli", "snli_dir": str(folder), "tokenizer": "whitespace", "cache": False})
    m.setup()
    s = m.stats()
    assert [s[f"skipped_{r}/train"] for r in ("blank", "no_consensus", "empty_pair")] == [1, 2, 0]


def test_missing_files_say_which_path_and_how_to_get_it(tmp_path):
    m = _dm({"dataset": "snli", "snli_dir": str(tmp_path / "nope")})
    with pytest.raises(
        DataError, match=r"nope/snli_1\.0_train\.jsonl.*python -m repro\.data\.download snli"
    ):
        m.setup()
    m = _dm({"dataset": "quora", "quora_dir": str(tmp_path / "nope")})
    with pytest.raises(DataError, match=r"nope/train\.tsv.*drive\.google\.com"):
        m.setup()
    m = _dm(sample_cfg(tmp_path, vectors=str(tmp_path / "glove.txt"), cache=False))
    with pytest.raises(DataError, match=r"word vectors file not found: .*glove\.txt.*glove-840b"):
        m.setup()


def test_a_directory_where_a_file_belongs_is_a_data_error(tmp_path):
    # The fingerprint reads data_files() before the gate runs: a directory there was an
    # IsADirectoryError traceback (issue 14), so data_files() refuses it as setup() does.
    write_quora(tmp_path / "q", "0\ta b\tc d\t1\n")
    (tmp_path / "q" / "train.tsv").unlink()
    (tmp_path / "q" / "train.tsv").mkdir()
    cases = [
        (
            {"dataset": "quora", "quora_dir": str(tmp_path / "q"), "cache": False},
            f"{tmp_path / 'q' / 'train.tsv'}: expected a file, found a directory; point "
            "data.quora_dir at the folder that holds train.tsv, dev.tsv, test.tsv",
        ),
        (
            sample_cfg(tmp_path, vectors=str(tmp_path), cache=False),
            f"{tmp_path}: expected a file, found a directory; point data.vectors at the GloVe "
            ".txt file inside it",
        ),
    ]
    for cfg, expected in cases:
        for call in (_dm(cfg).setup, _dm(cfg).data_files):
            with pytest.raises(DataError) as err:
                call()
            assert str(err.value) == expected
    m = _dm({"dataset": "quora", "quora_dir": str(SAMPLE / "train.tsv")})
    with pytest.raises(DataError) as err:
        m.setup()
    assert str(err.value) == (
        f"{SAMPLE / 'train.tsv'}: expected a folder holding train.tsv, dev.tsv, test.tsv, found "
        "a file; point data.quora_dir at the folder that holds them"
    )


def test_vocabulary_comes_from_training_split_only(dm):
    train_words = {w for ex in dm.splits["train"] for s in ("p", "q") for w in ex[s]}
    assert set(dm.vocab.itos[2:]) == train_words
    assert dm.vocab.itos[:2] == ["<pad>", "<unk>"] and dm.chars.itos[:2] == ["<pad>", "<unk>"]
    assert "zelda" not in dm.vocab  # a name generated for dev/test only
    s = dm.stats()
    assert s["oov_rate/train"] == 0.0 and s["oov_rate/val"] > 0.0


def test_batch_shapes_padding_and_chars(tmp_path):
    m = _dm(sample_cfg(tmp_path, max_word_len=4, max_len=6, batch_size=8))
    m.setup()
    b = next(iter(m.train_dataloader()))
    B, Tp = b["p_words"].shape
    assert B == 8 and Tp <= 6 and b["p_chars"].shape == (8, Tp, 4)  # K capped at max_word_len
    assert b["q_chars"].shape[:2] == b["q_words"].shape and b["label"].shape == (8,)
    assert all(v.dtype == torch.long for v in b.values())
    # padding: id 0 in words <=> all-zero chars
    for side in ("p", "q"):
        assert torch.equal(b[f"{side}_words"] == 0, (b[f"{side}_chars"] == 0).all(-1))
    full = _dm(sample_cfg(tmp_path))
    full.setup()
    batch = full.fixed_batch("train", 16)
    longest = max(len(w) for ex in full.splits["train"] for s in ("p", "q") for w in ex[s])
    assert batch["p_chars"].shape[2] <= longest  # the longest word in the batch, not a fixed width


def test_decode_shows_unknown_words(dm):
    i = next(i for i, ex in enumerate(dm.splits["val"]) if "zelda" in ex["p"] + ex["q"])
    text = dm.decode(dm.collate([dm.datasets["val"][i]]), 0)
    # "z" never occurs in training words: an unknown character, shown as "?"
    assert "<unk>[?elda]" in text and "label:" in text


def test_model_kwargs_and_vectors(dm):
    kw = dm.model_kwargs()
    assert set(kw) == {"vocab_size", "num_chars", "num_classes", "word_vectors"}
    assert (
        kw["word_vectors"].shape == (kw["vocab_size"], 50)
        and kw["word_vectors"].dtype == torch.float32
    )
    assert torch.all(kw["word_vectors"][0] == 0)
    s = dm.stats()
    assert s["vectors_missing"] == len(make_sample.LEFT_OUT_OF_VECTORS)
    wv, ix = kw["word_vectors"], dm.vocab.stoi
    same = torch.dist(wv[ix["buy"]], wv[ix["purchase"]])
    other = torch.dist(wv[ix["buy"]], wv[ix["sell"]])
    assert same < other / 3  # synonyms are neighbours in the shipped vectors
    assert dm.data_files()[-1].name == "vectors.txt"


@pytest.mark.parametrize("fill", ["random", "zero"])
def test_each_vector_row_is_the_files_or_the_seeded_fill(tmp_path, fill):
    """Row by row: a word found in the file has the file's vector; a missing one (and <unk>) the
    seeded N(0, oov_std) row drawn for the whole table (or zeros); <pad> zeros; the same for the
    vectors read from the file and from its cache."""
    for attempt in ("parsed", "cached"):
        dm = _dm(sample_cfg(tmp_path, oov_vectors=fill), seed=3)
        dm.setup()
        got = dm.model_kwargs()["word_vectors"]
        itos = dm.vocab.itos
        V, D = got.shape
        file_rows = {}
        for line in (SAMPLE / "vectors.txt").read_text().splitlines():
            word, *values = line.split(" ")
            file_rows.setdefault(word, torch.tensor([float(v) for v in values]))
        drawn = torch.randn(V, D, generator=torch.Generator().manual_seed(3)) * dm.config.oov_std
        want = torch.zeros(V, D) if fill == "zero" else drawn
        for i, w in enumerate(itos[2:], start=2):
            if w in file_rows:
                want[i] = file_rows[w]
        want[0] = 0.0
        if fill == "zero":
            want[1] = 0.0
        assert torch.equal(got, want), attempt
        assert dm.stats()["vectors_missing"] == sum(w not in file_rows for w in itos[2:])


def test_second_setup_reads_the_cache(tmp_path):
    first = _dm(sample_cfg(tmp_path))
    first.setup()
    assert not first.loaded_from_cache
    second = _dm(sample_cfg(tmp_path))
    second.setup()
    assert second.loaded_from_cache
    assert second.vocab.itos == first.vocab.itos and second.chars.itos == first.chars.itos
    assert second.splits == first.splits and second.skipped == first.skipped
    assert second.stats() == first.stats()
    for split in first.datasets:
        enc1, enc2 = first.datasets[split].enc, second.datasets[split].enc
        assert enc1.keys() == enc2.keys() and all(torch.equal(enc1[k], enc2[k]) for k in enc1)
    assert torch.equal(second.fixed_batch()["p_chars"], first.fixed_batch()["p_chars"])
    changed = _dm(sample_cfg(tmp_path, max_len=5))  # other settings: other cache entry
    changed.setup()
    assert not changed.loaded_from_cache


def test_the_cache_codec_round_trips_unicode_empty_strings_and_empty_splits():
    for strings in ([], ["", "café", "日本", "", "a b"]):
        assert unpack_strings(pack_strings(strings)) == strings
    types = ["", "a", "café", "c"]
    index = {w: i for i, w in enumerate(types)}
    exs = [
        {"p": ["a", "café"], "q": ["c"], "label": 1, "id": "x"},
        {"p": ["c"], "q": ["a", "a"], "label": 0, "id": "é"},
    ]
    for split in (exs, []):
        assert bimpm_data._unpack_split(bimpm_data._pack_split(split, index), types) == split


def test_the_cache_key_covers_the_reading_code(tmp_path, monkeypatch):
    m = _dm(sample_cfg(tmp_path))
    before = m._cache_file()
    assert bimpm_data.CODE_FILES == (
        Path(bimpm_data.__file__).resolve(),
        Path(bimpm_readers.__file__).resolve(),
        Path(repro.data.text.__file__).resolve(),
    )
    edited = tmp_path / "data.py"  # data.py with an edit to how the vocabulary is built
    source = Path(bimpm_data.__file__).read_text(encoding="utf-8")
    edited.write_text(source.replace("c.min_freq", "c.min_freq + 1"), encoding="utf-8")
    monkeypatch.setattr(bimpm_data, "CODE_FILES", (edited, *bimpm_data.CODE_FILES[1:]))
    assert m._cache_file() != before
    monkeypatch.undo()
    assert m._cache_file() == before
    monkeypatch.setattr(bimpm_data, "repro_version", "0.0.0-other")
    assert m._cache_file() != before


class Payload:
    """Pickles as a call to os.system: what a planted cache file would run under a full unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo executed > {shlex.quote(str(self.marker))}",))


def plant(kind: str, target: Path, marker: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "pickle":
        target.write_bytes(pickle.dumps({"splits": Payload(marker)}))
    else:
        torch.save({"splits": Payload(marker)}, target)  # the zip format torch.save writes


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickle_payload_in_the_cache_is_refused_not_executed_and_built_over(tmp_path, kind):
    plant(kind, tmp_path / "probe.pt", tmp_path / "probe-ran")
    with contextlib.suppress(RuntimeError):  # a bare pickle runs, then fails torch's magic check
        torch.load(tmp_path / "probe.pt", weights_only=False)  # what the old cache load did
    assert (tmp_path / "probe-ran").is_file()  # so the payload is live

    marker = tmp_path / "executed"
    m = _dm(sample_cfg(tmp_path))
    cache_file = m._cache_file()
    plant(kind, cache_file, marker)
    with pytest.warns(UserWarning, match=r"expected a preprocessing cache written by repro"):
        m.setup()
    assert not marker.exists()
    assert not m.loaded_from_cache and len(m.splits["train"]) == 4000
    assert m.stats()["cache_rejected"].startswith(f"{cache_file.name}: ")
    again = _dm(sample_cfg(tmp_path))  # the planted file was replaced by a real cache
    again.setup()
    assert again.loaded_from_cache and again.splits == m.splits and not marker.exists()
    assert "cache_rejected" not in again.stats()


def test_duplicate_vectors_are_counted_in_the_stats(tmp_path):
    vectors = tmp_path / "vectors.txt"
    text = (SAMPLE / "vectors.txt").read_text(encoding="utf-8")
    buy = next(line for line in text.splitlines() if line.startswith("buy "))
    vectors.write_text(text + buy + "\n" + "sell" + " 0" * 50 + "\n\n", encoding="utf-8")
    m = _dm(sample_cfg(tmp_path, vectors=str(vectors)))
    m.setup()
    s = m.stats()
    assert (s["vectors_duplicates_dropped"], s["vectors_skipped_blank"]) == (2, 1)
    sell = m.word_vectors[m.vocab.stoi["sell"]]
    assert sell.abs().sum() > 0  # the first "sell" line won, not the later zeros


def test_word_overlap_baseline_is_far_from_solving_the_sample(dm):
    acc = baseline(dm)
    assert set(acc) == {"val/acc", "test/acc"}
    assert 50 < acc["val/acc"] < 80 and 50 < acc["test/acc"] < 80


def test_make_sample_is_deterministic_and_matches_the_shipped_files(tmp_path):
    from papers.bimpm.sample import make_wikiqa

    make_sample.main(tmp_path, verbose=False)
    make_wikiqa.main(tmp_path / "wikiqa")
    shipped = sorted(
        p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.suffix in (".tsv", ".txt", ".jsonl")
    )
    assert len(shipped) == 10  # Quora 3, vectors, SNLI 3, WikiQA 3
    for rel in shipped:
        assert (tmp_path / rel).read_bytes() == (SAMPLE / rel).read_bytes(), rel


def test_collate_pads_as_one_row_at_a_time_would():
    """_pad (pad_sequence) gives what filling a zero batch row by row gives: ragged words and
    characters, int32 and long inputs, a batch whose longest word is shorter than K."""
    g = torch.Generator().manual_seed(0)
    lengths, widths = [3, 1, 5, 2], [2, 4, 1, 3]
    seqs = [torch.randint(1, 50, (t,), generator=g) for t in lengths]
    seqs[1] = seqs[1].int()
    chars = [
        torch.randint(1, 30, (t, w), generator=g) for t, w in zip(lengths, widths, strict=True)
    ]
    K = 6
    words, out = bimpm_data._pad(seqs, chars, K)
    expected_words = torch.zeros(4, 5, dtype=torch.long)
    expected_chars = torch.zeros(4, 5, K, dtype=torch.long)
    for b, (s, c) in enumerate(zip(seqs, chars, strict=True)):
        expected_words[b, : len(s)] = s
        expected_chars[b, : c.shape[0], : c.shape[1]] = c
    assert words.dtype == out.dtype == torch.long
    assert torch.equal(words, expected_words) and torch.equal(out, expected_chars)


def test_items_are_what_encoding_one_example_gives_and_survive_pickling(dm):
    """PairDataset's numpy slicing gives the tensors encode() builds for that example alone, in
    every split; the type table lists each split's tokens by first appearance; a dataset pickled
    to a spawned loader worker serves the same items."""
    for split in ("train", "val", "test"):
        ds, examples = dm.datasets[split], dm.splits[split]
        for i in range(0, len(ds), max(1, len(ds) // 50)):
            item, expected = ds[i], dm.encode(examples[i])
            for key in ("p_words", "p_chars", "q_words", "q_chars", "label"):
                assert item[key].dtype == torch.long, (split, i, key)
                assert torch.equal(item[key], expected[key]), (split, i, key)
    tokens = [
        w for s in ("train", "val", "test") for ex in dm.splits[s] for f in "pq" for w in ex[f]
    ]
    assert dm._types == list(dict.fromkeys(["", *tokens]))
    ds = dm.datasets["val"]  # the state a spawned worker gets (the class is looked up by name)
    copy = type(ds).__new__(type(ds))
    copy.__setstate__(pickle.loads(pickle.dumps(ds.__getstate__())))
    assert all(torch.equal(copy[3][k], dm.datasets["val"][3][k]) for k in copy[3])
