"""BiMPM data: readers, malformed input, vocabulary, batches, cache, sample set and baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from papers.bimpm.baseline import baseline
from papers.bimpm.data import BiMPMDataConfig, BiMPMDataModule, read_quora, read_snli
from papers.bimpm.sample import make_sample
from repro.config.typed import from_dict
from repro.data.text import make_tokenizer
from repro.errors import ConfigError, DataError
from tests.configs import data_config

SAMPLE = Path(make_sample.__file__).resolve().parent
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
    with pytest.raises(ConfigError, match=r"data\.tokenizer: expected one of \['auto', 'whitespace'"):
        from_dict(BiMPMDataConfig, {"tokenizer": "nltk"}, "data")
    with pytest.raises(ConfigError, match=r"data\.max_len: expected an integer >= 1, found 0"):
        from_dict(BiMPMDataConfig, {"max_len": 0}, "data")


def test_quora_reader_reads_the_sample():
    exs = read_quora(SAMPLE / "train.tsv", WS)
    assert len(exs) == 4000
    assert sum(ex["label"] for ex in exs) == 2000
    assert set(exs[0]) == {"p", "q", "label", "id"} and exs[0]["p"][-1] == "?"


def test_snli_reader_drops_no_consensus_and_has_three_classes():
    path = SAMPLE / "snli" / "snli_1.0_train.jsonl"
    n_dash = path.read_text().count('"gold_label": "-"')
    exs, dropped = read_snli(path, make_tokenizer("spacy", lowercase=False))
    assert dropped == n_dash > 0
    assert len(exs) + dropped == len(path.read_text().splitlines())
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
    assert m.stats()["dropped_no_consensus/val"] > 0


@pytest.mark.parametrize(
    "line, expected",
    [
        ("1\tonly two\n", r"train\.tsv:2: expected 4 tab-separated columns .* found 2"),
        ("yes\ta\tb\tid\n", r"train\.tsv:2: expected label 0 or 1 in column 1, found 'yes'"),
        ("1\t  \tb\tid\n", r"train\.tsv:2: the first sentence is empty"),
    ],
)
def test_malformed_quora_lines_name_file_and_line(tmp_path, line, expected):
    write_quora(tmp_path / "q", "0\ta b\tc d\t1\n" + line)
    m = _dm({"dataset": "quora", "quora_dir": str(tmp_path / "q"), "cache": False})
    with pytest.raises(DataError, match=expected):
        m.setup()


def test_undecodable_bytes_name_file_and_line(tmp_path):
    write_quora(tmp_path / "q", "")
    (tmp_path / "q" / "dev.tsv").write_bytes(b"0\ta\tb\t1\n0\tcaf\xe9\tb\t2\n")
    m = _dm({"dataset": "quora", "quora_dir": str(tmp_path / "q"), "cache": False})
    with pytest.raises(DataError, match=r"dev\.tsv:2: not valid UTF-8 \(byte 0xe9 at column 6\)"):
        m.setup()


def test_empty_sentence_can_be_dropped(tmp_path):
    write_quora(tmp_path / "q", "0\ta b\tc d\t1\n1\t\tb\t2\n")
    m = _dm(
        {"dataset": "quora", "quora_dir": str(tmp_path / "q"), "empty": "drop", "cache": False}
    )
    m.setup()
    assert len(m.splits["train"]) == 1


@pytest.mark.parametrize(
    "line, expected",
    [
        ("{not json\n", r"snli_1\.0_dev\.jsonl:1: expected a JSON object per line"),
        (
            '{"gold_label": "maybe", "sentence1": "A", "sentence2": "B"}\n',
            r"jsonl:1: expected gold_label in .* found 'maybe'",
        ),
        (
            '{"gold_label": "neutral", "sentence1": "A"}\n',
            r"jsonl:1: expected keys .* missing \['sentence2'\]",
        ),
        (
            '{"gold_label": "neutral", "sentence1": "A", "sentence2": " "}\n',
            r"jsonl:1: the second sentence is empty",
        ),
    ],
)
def test_malformed_snli_lines_name_file_and_line(tmp_path, line, expected):
    folder = tmp_path / "snli"
    folder.mkdir()
    for split in ("train", "test"):
        (folder / f"snli_1.0_{split}.jsonl").write_text(
            '{"gold_label": "neutral", "sentence1": "A", "sentence2": "B"}\n'
        )
    (folder / "snli_1.0_dev.jsonl").write_text(line)
    m = _dm(
        {"dataset": "snli", "snli_dir": str(folder), "tokenizer": "whitespace", "cache": False}
    )
    with pytest.raises(DataError, match=expected):
        m.setup()


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


def test_second_setup_reads_the_cache(tmp_path):
    first = _dm(sample_cfg(tmp_path))
    first.setup()
    assert not first.loaded_from_cache
    second = _dm(sample_cfg(tmp_path))
    second.setup()
    assert second.loaded_from_cache
    assert second.vocab.itos == first.vocab.itos
    assert torch.equal(second.fixed_batch()["p_chars"], first.fixed_batch()["p_chars"])
    changed = _dm(sample_cfg(tmp_path, max_len=5))  # other settings: other cache entry
    changed.setup()
    assert not changed.loaded_from_cache


def test_word_overlap_baseline_is_far_from_solving_the_sample(dm):
    acc = baseline(dm)
    assert set(acc) == {"val/acc", "test/acc"}
    assert 50 < acc["val/acc"] < 80 and 50 < acc["test/acc"] < 80


def test_make_sample_is_deterministic_and_matches_the_shipped_files(tmp_path):
    make_sample.main(tmp_path, verbose=False)
    shipped = sorted(
        p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.suffix in (".tsv", ".txt", ".jsonl")
    )
    assert len(shipped) == 7
    for rel in shipped:
        assert (tmp_path / rel).read_bytes() == (SAMPLE / rel).read_bytes(), rel
