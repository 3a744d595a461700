"""BiMPM data: Quora (authors' partition), SNLI 1.0, WikiQA or the shipped samples -> word + char id
batches.

A batch (padding id 0, unknown id 1):
    p_words (B, Tp) long, p_chars (B, Tp, K) long, q_words (B, Tq), q_chars (B, Tq, K), label (B,)
    and, for answer selection (WikiQA, the ranking task: P is the question, Q a candidate
    sentence), group (B,) long: the question each pair belongs to.
with K the characters of the longest word in the batch, capped at max_word_len. Word and
character vocabularies come from the training split only; the word vectors are GloVe rows for the
vocabulary, random (or zero) for vocabulary words the file lacks. Tokenized, numericalized splits are cached under
cache_dir, keyed by the data files' sha256, the settings that shape them and the code that reads
them (this file, repro/data/text.py, repro's version). The cache holds only tensors and plain
values and loads with weights_only=True: a file planted there is re-built over, never executed.

Malformed input is a DataError `<file>:<line>: expected ..., found ...; what to do`; lines that
are skipped on purpose (blank, SNLI no-consensus "-", empty pairs with data.empty=drop) are
counted per reason and split, and the data gate prints them (stats()).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate, chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

import repro.data.text
from repro import __version__ as repro_version
from repro.config.schema import DataConfig
from repro.config.typed import bound, from_dict
from repro.data.datamodule import PaperDataModule, group_id
from repro.data.download import compressed_format, how_to_get, sha256_of
from repro.data.glove import load_glove
from repro.data.split import SPLITS
from repro.data.text import PAD_ID, UNK, UNK_ID, Vocab, make_tokenizer
from repro.errors import DataError

CACHE_VERSION = (
    3  # 2: tensors and plain values only (weights_only load), code in the key; 3: groups
)
# The code whose edits must invalidate the cache: editing how the vocabulary is built once
# passed the data gate on a stale cached vocabulary (issue 14).
CODE_FILES = (Path(__file__).resolve(), Path(repro.data.text.__file__).resolve())
# What a damaged, foreign or tampered cache file raises from a weights-only load or from
# decoding its fields: each means "build again", never "run what is inside".
_BAD_CACHE = (
    pickle.UnpicklingError,
    EOFError,
    RuntimeError,
    KeyError,
    TypeError,
    ValueError,
    IndexError,
    AttributeError,
    UnicodeDecodeError,
)
SNLI_LABELS = ("entailment", "neutral", "contradiction")
QUORA_LABELS = ("not paraphrase", "paraphrase")  # the TSV's label column: 0, 1
WIKIQA_LABELS = ("not an answer", "answer")  # the TSV's Label column: 0, 1
WIKIQA_FILES = {"train": "WikiQA-train.tsv", "val": "WikiQA-dev.tsv", "test": "WikiQA-test.tsv"}
WIKIQA_COLUMNS = ("QuestionID", "Question", "Sentence", "Label")  # of the release's 7 columns
FILES = {  # dataset -> (config key of its folder, file per split)
    "quora": ("quora_dir", {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}),
    "sample": ("sample_dir", {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}),
    "snli": (
        "snli_dir",
        {s: f"snli_1.0_{f}.jsonl" for s, f in zip(SPLITS, ("train", "dev", "test"), strict=True)},
    ),
    "wikiqa": ("wikiqa_dir", WIKIQA_FILES),
    "wikiqa_sample": ("wikiqa_sample_dir", WIKIQA_FILES),
}


@dataclass
class BiMPMDataConfig:
    """The `data:` section of the BiMPM config. The paper states none of these but the vectors."""

    dataset: Literal["quora", "snli", "sample", "wikiqa", "wikiqa_sample"] = "sample"
    sample_dir: str = "papers/bimpm/sample"
    quora_dir: str = "data/Quora_question_pair_partition"  # as the authors' zip unpacks
    snli_dir: str = "data/snli_1.0"  # as snli_1.0.zip unpacks
    wikiqa_dir: str = "data/WikiQACorpus"  # as WikiQACorpus.zip unpacks
    wikiqa_sample_dir: str = "papers/bimpm/sample/wikiqa"
    vectors: str | None = None  # GloVe-format file (paper: 840B 300-d); None -> random vectors
    word_dim: int = field(default=300, metadata=bound(ge=1))  # paper: 300-d GloVe
    # auto: whitespace for quora/sample (pre-tokenized), spacy for snli and wikiqa (raw text)
    tokenizer: Literal["auto", "whitespace", "spacy"] = "auto"
    lowercase: bool = False  # 840B vectors are cased; lower-casing would lose coverage there
    # Quora's 95th percentile is 25 tokens, its max 146: 50 truncates well under 1%; None: no cap
    max_len: int | None = field(default=50, metadata=bound(ge=1))
    max_word_len: int = field(default=20, metadata=bound(ge=1))  # Quora tokens ~4 chars (max 37)
    # every training word gets an id: the vectors are fixed, so no overfit risk
    min_freq: int = field(default=1, metadata=bound(ge=1))
    oov_vectors: Literal["random", "zero"] = "random"  # vocab words missing from the file
    # std of those random vectors (GloVe components are of this order)
    oov_std: float = field(default=0.1, metadata=bound(ge=0))
    empty: Literal["error", "drop"] = "error"  # an empty sentence: fail, or drop the pair
    # keep the first N examples of each split (quick runs); None: all
    limit: int | None = field(default=None, metadata=bound(ge=1))
    cache: bool = True
    cache_dir: str = ".cache/repro"

    @property
    def resolved_tokenizer(self) -> str:
        if self.tokenizer != "auto":
            return self.tokenizer
        return "spacy" if self.dataset in ("snli", "wikiqa", "wikiqa_sample") else "whitespace"


DATA_CONFIG = BiMPMDataConfig  # repro checks the `data:` keys against it before a run starts


# ---- reading ------------------------------------------------------------------------------------
def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 text file; unreadable, compressed, undecodable or NUL
    bytes -> DataError naming the file and line."""
    try:
        fh = open(path, "rb")
    except IsADirectoryError:
        raise DataError(
            f"{path}: expected a text file, found a directory; point at the file inside it"
        ) from None
    except OSError as e:
        raise DataError(
            f"{path}: expected a readable text file, found {e.strerror or e}; "
            "check the path and its permissions"
        ) from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and (kind := compressed_format(raw[:4])):
                raise DataError(
                    f"{path}: expected a UTF-8 text file, found {kind} data; "
                    f"{'gunzip' if kind == 'gzip' else 'unzip'} it first"
                )
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:  # before the NUL check: UTF-16 fails here, clearer
                raise DataError(
                    f"{path}:{lineno}: expected UTF-8 text, found byte {raw[e.start]:#04x} at "
                    f"column {e.start + 1}; re-save the file as UTF-8"
                ) from None
            if "\x00" in text:  # valid UTF-8, but no text has it: a binary or damaged file
                column = raw.find(b"\x00") + 1
                raise DataError(
                    f"{path}:{lineno}: expected text, found a NUL byte at column {column}; "
                    "the file is binary or damaged: re-extract or re-download it"
                )
            if lineno == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
            yield lineno, text


def _json_kind(v: Any) -> str:
    """A JSON value as a message names it: null, true, the number 4, a list, 'text'."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return f"the number {v}"
    if isinstance(v, str):
        return repr(v[:40])
    return "a list" if isinstance(v, list) else "an object"


def _tokenize_rows(path, rows, tokenize, empty: str) -> tuple[list[dict], int]:
    """rows: (lineno, label, s1, s2, id[, group]) -> (examples, pairs dropped for an empty
    sentence)."""
    p_toks = tokenize([r[2] for r in rows])
    q_toks = tokenize([r[3] for r in rows])
    out, dropped = [], 0
    for (lineno, label, _, _, ex_id, *group), p, q in zip(rows, p_toks, q_toks, strict=True):
        if not p or not q:
            if empty == "drop":
                dropped += 1
                continue
            which = "first" if not p else "second"
            raise DataError(
                f"{path}:{lineno}: expected text in both sentences, found an empty {which} "
                "sentence; fix the line or set data.empty=drop to skip such pairs"
            )
        out.append({"p": p, "q": q, "label": label, "id": ex_id, **_group(group)})
    return out, dropped


def _group(group: list[str]) -> dict[str, str]:
    return {"group": group[0]} if group else {}


def _require_pairs(path: Path, examples: list[dict], skipped: dict[str, int]) -> None:
    """An empty split would only fail later, inside a data loader (StopIteration, issue 14)."""
    if examples:
        return
    n = sum(skipped.values())
    reasons = ", ".join(f"{k} {v}" for k, v in skipped.items() if v)
    found = "an empty file" if n == 0 else f"no pairs ({n} lines skipped: {reasons})"
    raise DataError(
        f"{path}: expected at least one pair, found {found}; "
        "check that the file was copied or extracted completely"
    )


def read_quora(path: Path, tokenize, empty: str = "error") -> tuple[list[dict], dict[str, int]]:
    """Headerless TSV `label \\t sentence1 \\t sentence2 \\t id` (the authors' Quora partition).

    Returns the examples and the lines skipped per reason (blank, empty_pair)."""
    rows, skipped = [], {"blank": 0, "empty_pair": 0}
    for lineno, line in _lines(path):
        if not line.strip():
            skipped["blank"] += 1  # blank (e.g. trailing) lines hold no pair
            continue
        cols = line.split("\t")
        if len(cols) != 4:
            raise DataError(
                f"{path}:{lineno}: expected 4 tab-separated columns (label, sentence1, sentence2, "
                f"id), found {len(cols)}; fix or remove the line"
            )
        if cols[0] not in ("0", "1"):
            raise DataError(
                f"{path}:{lineno}: expected label 0 or 1 in column 1, found {cols[0][:40]!r}; "
                "fix the label"
            )
        rows.append((lineno, int(cols[0]), cols[1], cols[2], cols[3]))
    examples, skipped["empty_pair"] = _tokenize_rows(path, rows, tokenize, empty)
    _require_pairs(path, examples, skipped)
    return examples, skipped


def read_snli(path: Path, tokenize, empty: str = "error") -> tuple[list[dict], dict[str, int]]:
    """SNLI 1.0 JSON lines; pairs whose gold_label is "-" (no consensus) are dropped.

    Returns the examples and the lines skipped per reason (blank, no_consensus, empty_pair)."""
    rows, skipped = [], {"blank": 0, "no_consensus": 0, "empty_pair": 0}
    for lineno, line in _lines(path):
        if not line.strip():
            skipped["blank"] += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: expected a JSON object per line, found invalid JSON "
                f"({e.msg} at column {e.colno}); fix or remove the line"
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{path}:{lineno}: expected a JSON object per line, found {_json_kind(obj)}; "
                "fix or remove the line"
            )
        missing = [k for k in ("gold_label", "sentence1", "sentence2") if k not in obj]
        if missing:
            raise DataError(
                f"{path}:{lineno}: expected keys gold_label, sentence1, sentence2, found an "
                f"object without {', '.join(missing)}; fix or remove the line"
            )
        gold = obj["gold_label"]
        if gold == "-":
            skipped["no_consensus"] += 1
            continue
        if not isinstance(gold, str) or gold not in SNLI_LABELS:
            raise DataError(
                f"{path}:{lineno}: expected gold_label {', '.join(SNLI_LABELS)} or '-', found "
                f"{_json_kind(gold)}; fix the label"
            )
        for key in ("sentence1", "sentence2"):
            text = obj[key]
            if not isinstance(text, str):
                raise DataError(
                    f"{path}:{lineno}: expected {key} to be a string, found {_json_kind(text)}; "
                    "fix or remove the line"
                )
            if "\x00" in text:  # JSON "\u0000": the raw-byte check in _lines misses it
                raise DataError(
                    f"{path}:{lineno}: expected text in {key}, found a NUL character; "
                    "fix or remove the line"
                )
        ex_id = str(obj.get("pairID", lineno))
        rows.append((lineno, SNLI_LABELS.index(gold), obj["sentence1"], obj["sentence2"], ex_id))
    examples, skipped["empty_pair"] = _tokenize_rows(path, rows, tokenize, empty)
    _require_pairs(path, examples, skipped)
    return examples, skipped


def read_wikiqa(path: Path, tokenize, empty: str = "error") -> tuple[list[dict], dict[str, int]]:
    """The WikiQA release's TSV (a header naming QuestionID, Question, ..., Sentence, Label); one
    example per (question, candidate sentence), its "group" the QuestionID. Questions without a
    correct answer are dropped, as the standard WikiQA evaluation drops them (MAP and MRR cannot
    score them).

    Returns the examples and the lines skipped per reason (blank, no_answer, empty_pair)."""
    rows, skipped = [], {"blank": 0, "no_answer": 0, "empty_pair": 0}
    where: dict[str, int] = {}
    for lineno, line in _lines(path):
        cols = line.split("\t")
        if lineno == 1:
            missing = [c for c in WIKIQA_COLUMNS if c not in cols]
            if missing:
                raise DataError(
                    f"{path}:1: expected a header naming {', '.join(WIKIQA_COLUMNS)} (the WikiQA "
                    f"release's TSV), found no column {', '.join(missing)}; use the files of "
                    "WikiQACorpus.zip"
                )
            where = {c: cols.index(c) for c in (*WIKIQA_COLUMNS, "SentenceID") if c in cols}
            continue
        if not line.strip():
            skipped["blank"] += 1
            continue
        if len(cols) < len(where) or len(cols) <= max(where.values()):
            raise DataError(
                f"{path}:{lineno}: expected {max(where.values()) + 1} tab-separated columns as "
                f"the header names, found {len(cols)}; fix or remove the line"
            )
        label = cols[where["Label"]]
        if label not in ("0", "1"):
            raise DataError(
                f"{path}:{lineno}: expected Label 0 or 1, found {label[:40]!r}; fix the label"
            )
        ex_id = cols[where["SentenceID"]] if "SentenceID" in where else str(lineno)
        q, s = cols[where["Question"]], cols[where["Sentence"]]
        rows.append((lineno, int(label), q, s, ex_id, cols[where["QuestionID"]]))
    answered = {r[5] for r in rows if r[1] == 1}
    skipped["no_answer"] = sum(r[5] not in answered for r in rows)
    rows = [r for r in rows if r[5] in answered]
    examples, skipped["empty_pair"] = _tokenize_rows(path, rows, tokenize, empty)
    _require_pairs(path, examples, skipped)
    return examples, skipped


READERS = {"quora": read_quora, "sample": read_quora, "snli": read_snli}
READERS |= {"wikiqa": read_wikiqa, "wikiqa_sample": read_wikiqa}


# ---- encoded splits -----------------------------------------------------------------------------
class PairDataset(Dataset):
    """One split as flat id tensors; item i -> {p_words (T,), p_chars (T, w), q_..., label}."""

    def __init__(
        self, enc: dict[str, torch.Tensor], char_table: torch.Tensor, type_len: torch.Tensor
    ):
        self.enc, self.char_table, self.type_len = enc, char_table, type_len

    def __len__(self) -> int:
        return len(self.enc["label"])

    def _side(self, s: str, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.enc[f"{s}_off"][i], self.enc[f"{s}_off"][i + 1]
        words = self.enc[f"{s}_words"][a:b].long()  # (T,)
        types = self.enc[f"{s}_types"][a:b].long()  # (T,) rows of the char table
        return words, self.char_table[types, : int(self.type_len[types].max())]  # (T, w)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        pw, pc = self._side("p", i)
        qw, qc = self._side("q", i)
        item = {
            "p_words": pw,
            "p_chars": pc,
            "q_words": qw,
            "q_chars": qc,
            "label": self.enc["label"][i],
        }
        if "group" in self.enc:  # answer selection: the question of this pair
            item["group"] = self.enc["group"][i]
        return item


def _pad(
    seqs: list[torch.Tensor], chars: list[torch.Tensor], K: int
) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(s) for s in seqs)
    words = torch.full((len(seqs), T), PAD_ID, dtype=torch.long)  # (B, T)
    out_chars = torch.full((len(seqs), T, K), PAD_ID, dtype=torch.long)  # (B, T, K)
    for b, (s, c) in enumerate(zip(seqs, chars, strict=True)):
        words[b, : len(s)] = s
        out_chars[b, : c.shape[0], : c.shape[1]] = c
    return words, out_chars


# ---- the preprocessing cache: tensors and plain values only ------------------------------------
# torch.load(weights_only=True) refuses anything but tensors and plain containers, so a pickle
# payload planted in the cache is never executed (issue 14). Strings travel as one UTF-8 byte
# tensor plus offsets: the weights-only unpickler is pure Python, and loading 1.2M pickled
# str objects through it measured 3.5 s against 0.6 s for the full unpickler (torch 2.13).
def _pack_strings(strings: list[str]) -> dict[str, torch.Tensor]:
    utf8 = np.frombuffer("".join(strings).encode("utf-8"), dtype=np.uint8).copy()
    ends = torch.tensor(list(accumulate(map(len, strings))), dtype=torch.long)  # char offsets
    return {"utf8": torch.from_numpy(utf8), "ends": ends}


def _spans(ends: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each item from the running ends [e1, e2, ...]."""
    e = ends.tolist()
    return list(zip([0, *e[:-1]], e, strict=True)) if e else []


def _unpack_strings(packed: dict[str, torch.Tensor]) -> list[str]:
    text = packed["utf8"].numpy().tobytes().decode("utf-8")
    return [text[a:b] for a, b in _spans(packed["ends"])]


def _pack_split(examples: list[dict], type_index: dict[str, int]) -> dict[str, Any]:
    """A split's examples as token rows of the type table + offsets, labels and ids."""
    out: dict[str, Any] = {}
    for s in ("p", "q"):
        ids = [type_index[w] for ex in examples for w in ex[s]]
        out[f"{s}_tokens"] = torch.tensor(ids, dtype=torch.int32)  # (sum T,)
        ends = list(accumulate(len(ex[s]) for ex in examples))
        out[f"{s}_ends"] = torch.tensor(ends, dtype=torch.long)  # (N,)
    out["label"] = torch.tensor([int(ex["label"]) for ex in examples], dtype=torch.long)  # (N,)
    out["ids"] = _pack_strings([str(ex["id"]) for ex in examples])
    if examples and "group" in examples[0]:
        out["groups"] = _pack_strings([str(ex["group"]) for ex in examples])
    return out


def _unpack_split(packed: dict[str, Any], types: list[str]) -> list[dict]:
    sides = {}
    for s in ("p", "q"):
        words = [types[i] for i in packed[f"{s}_tokens"].tolist()]
        sides[s] = [words[a:b] for a, b in _spans(packed[f"{s}_ends"])]
    labels, ids = packed["label"].tolist(), _unpack_strings(packed["ids"])
    groups = _unpack_strings(packed["groups"]) if "groups" in packed else None
    return [
        {"p": p, "q": q, "label": y, "id": i, **({"group": groups[n]} if groups else {})}
        for n, (p, q, y, i) in enumerate(zip(sides["p"], sides["q"], labels, ids, strict=True))
    ]


def read_cache(cache_file: Path) -> dict[str, Any]:
    """A cache file -> splits, vocab, chars, types, encoded, skipped; raises one of _BAD_CACHE."""
    saved = torch.load(cache_file, weights_only=True)  # never weights_only=False: issue 14
    if saved["version"] != CACHE_VERSION:
        raise ValueError(f"cache format {saved['version']!r}, expected {CACHE_VERSION}")
    types = _unpack_strings(saved["types"])
    encoded = saved["encoded"]
    if not all(isinstance(t, torch.Tensor) for enc in encoded.values() for t in enc.values()):
        raise TypeError("encoded splits hold something other than tensors")
    return {
        "splits": {s: _unpack_split(saved["splits"][s], types) for s in SPLITS},
        "vocab": _unpack_strings(saved["vocab"]),
        "chars": _unpack_strings(saved["chars"]),
        "types": types,
        "encoded": {s: dict(encoded[s]) for s in SPLITS},
        "skipped": {s: {str(k): int(v) for k, v in saved["skipped"][s].items()} for s in SPLITS},
    }


class BiMPMDataModule(PaperDataModule):
    input_fields = ("p", "q")

    def __init__(self, cfg: DataConfig, seed: int):
        super().__init__(cfg, seed)
        self.config = from_dict(BiMPMDataConfig, cfg.options, "data")
        c = self.config
        self.num_classes = 3 if c.dataset == "snli" else 2
        labels = {"snli": SNLI_LABELS, "wikiqa": WIKIQA_LABELS, "wikiqa_sample": WIKIQA_LABELS}
        self.class_names = list(labels.get(c.dataset, QUORA_LABELS))
        folder_key, names = FILES[c.dataset]
        self.folder = Path(getattr(c, folder_key))
        self.files = {s: self.folder / names[s] for s in SPLITS}
        self.vocab: Vocab | None = None
        self.chars: Vocab | None = None
        self.word_vectors: torch.Tensor | None = None
        self.skipped: dict[str, dict[str, int]] = {}  # split -> reason -> lines skipped
        self.loaded_from_cache = False
        self.cache_rejected: str | None = None  # why a cache file was built over, if one was
        self._vector_stats: dict[str, Any] = {}
        self._cached: dict | None = None
        self._encoded: dict[str, dict[str, torch.Tensor]] = {}

    # ---- files and cache ------------------------------------------------------------------------
    def _check_files(self) -> None:
        c = self.config
        folder_key = FILES[c.dataset][0]
        names = ", ".join(p.name for p in self.files.values())
        if self.folder.is_file():
            raise DataError(
                f"{self.folder}: expected a folder holding {names}, found a file; point "
                f"data.{folder_key} at the folder that holds them"
            )
        for path in self.files.values():
            self._refuse_directory(path, self._folder_hint())
            if not path.is_file():
                hint = {
                    "quora": how_to_get("quora"),
                    "snli": how_to_get("snli", str(self.folder.parent)),
                    "sample": "regenerate it: python -m papers.bimpm.sample.make_sample",
                    "wikiqa": how_to_get("wikiqa", str(self.folder.parent)),
                    "wikiqa_sample": "regenerate it: python -m papers.bimpm.sample.make_wikiqa",
                }[c.dataset]
                raise DataError(
                    f"{c.dataset} data file not found: {path} (from data.{folder_key}={str(self.folder)!r}). "
                    f"To get it: {hint}; or point data.{folder_key} at the folder that holds "
                    f"{names}"
                )

    def _folder_hint(self) -> str:
        names = ", ".join(p.name for p in self.files.values())
        return f"data.{FILES[self.config.dataset][0]} at the folder that holds {names}"

    @staticmethod
    def _refuse_directory(path: Path, point: str) -> None:
        if path.is_dir():
            raise DataError(f"{path}: expected a file, found a directory; point {point}")

    def _cache_file(self) -> Path:
        c = self.config
        settings = {
            "version": CACHE_VERSION,
            "code": {p.name: sha256_of(p) for p in CODE_FILES},
            "repro": repro_version,
            "dataset": c.dataset,
            "files": {s: sha256_of(p) for s, p in self.files.items()},
            "tokenizer": c.resolved_tokenizer,
            **{
                k: getattr(c, k)
                for k in ("lowercase", "max_len", "max_word_len", "min_freq", "empty", "limit")
            },
        }
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
        return Path(c.cache_dir) / "bimpm" / f"{c.dataset}-{key}.pt"

    # ---- PaperDataModule hooks ------------------------------------------------------------------
    def load_examples(self) -> dict[str, list[dict]]:
        c = self.config
        self._check_files()
        if c.cache and not self.bypass_cache:  # the data gate's comparison builds bypass it
            cache_file = self._cache_file()
            if cache_file.is_file():
                try:
                    self._cached = read_cache(cache_file)
                except _BAD_CACHE as e:
                    # Built over rather than an error: the cache is derived from the data files
                    # and code alone, nothing in it ran, and a refusal would only make the user
                    # delete the file by hand. The warning and stats() say it happened.
                    reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
                    self.cache_rejected = f"{cache_file.name}: {reason}"
                    warnings.warn(
                        f"{cache_file}: expected a preprocessing cache written by repro, found "
                        f"an unreadable file ({reason}); building it again",
                        stacklevel=2,
                    )
                else:
                    self.loaded_from_cache = True
                    self.skipped = self._cached["skipped"]
                    return self._cached["splits"]
        tokenize = make_tokenizer(c.resolved_tokenizer, c.lowercase)
        out = {}
        for split, path in self.files.items():
            out[split], self.skipped[split] = READERS[c.dataset](path, tokenize, c.empty)
            if c.limit is not None:
                out[split] = out[split][: c.limit]
        return out

    def build(self, splits: dict[str, list[dict]]) -> None:
        c = self.config
        if self._cached is not None:
            self.vocab = Vocab(self._cached["vocab"])
            self.chars = Vocab(self._cached["chars"])
            self._types = self._cached["types"]
        else:
            train = splits["train"]
            words = Counter(chain.from_iterable(ex[s] for ex in train for s in ("p", "q")))
            self.vocab = Vocab.from_counts(words, c.min_freq)
            # Characters counted from the word counts: a step per character of each distinct
            # word, not of each token (88M steps at Quora's size, issue 21); the same counts.
            chars: Counter[str] = Counter()
            for w, n in words.items():
                for ch in w:
                    chars[ch] += n
            self.chars = Vocab.from_counts(chars)
            # Every distinct token of every split gets a row of character ids (a lookup cache,
            # not a vocabulary: unseen words of dev/test still have their characters), in order
            # of first appearance.
            self._types = list(
                dict.fromkeys(
                    chain(
                        ("",),
                        chain.from_iterable(
                            ex[s] for exs in splits.values() for ex in exs for s in ("p", "q")
                        ),
                    )
                )
            )
        self._type_index = {w: i for i, w in enumerate(self._types)}
        rows = [self.chars.lookup(w[: c.max_word_len]) for w in self._types]
        lens = torch.tensor([len(r) for r in rows], dtype=torch.long)  # (types,)
        self.char_table = torch.zeros(len(rows), c.max_word_len, dtype=torch.long)  # (types, L)
        filled = torch.arange(c.max_word_len) < lens[:, None]  # (types, L)
        self.char_table[filled] = torch.tensor(list(chain.from_iterable(rows)), dtype=torch.long)
        self.type_len = lens.clamp(min=1)  # >= 1: K is never 0
        self._build_vectors()

    def _build_vectors(self) -> None:
        c = self.config
        V = len(self.vocab)
        g = torch.Generator().manual_seed(self.seed)
        random_rows = torch.randn(V, c.word_dim, generator=g) * c.oov_std  # (V, D)
        if c.vectors is None:
            vectors, found = random_rows, torch.zeros(V, dtype=torch.bool)
        else:
            path = Path(c.vectors)
            self._refuse_directory(path, "data.vectors at the GloVe .txt file inside it")
            if not path.is_file():
                raise DataError(
                    f"word vectors file not found: {path} (data.vectors). To get GloVe: "
                    f"{how_to_get('glove-840b', 'data/glove')}; or set data.vectors=null for "
                    "random vectors"
                )
            # The vectors' cache is read even by the data gate's builds that bypass the
            # preprocessing cache: it is keyed by what it is derived from (the file's path, size
            # and mtime, the vocabulary, the dimension), so a changed vocabulary or file misses
            # it, and re-reading 1.5-5.6 GB per comparison build was a third of the gate at
            # Quora's size (issue 21). What the stale-cache check guards is the cache below.
            wv = load_glove(
                path,
                self.vocab.itos,
                dim=c.word_dim,
                cache_dir=c.cache_dir if c.cache else None,
                dim_setting="data.word_dim",
            )
            found = wv.found.clone()
            found[:2] = False  # <pad>, <unk> never take a row from the file
            fill = random_rows if c.oov_vectors == "random" else torch.zeros_like(random_rows)
            vectors = torch.where(found[:, None], wv.vectors, fill)  # (V, D)
        vectors[PAD_ID] = 0.0
        if c.oov_vectors == "zero":
            vectors[UNK_ID] = 0.0
        self.word_vectors = vectors.float().contiguous()
        n_words = V - 2
        n_found = int(found.sum())
        self._vector_stats = {
            "vector_coverage": n_found / n_words if n_words else 0.0,
            "vectors_missing": n_words - n_found,
            "vectors_missing_filled_with": c.oov_vectors
            if c.vectors
            else "random (no vectors file)",
        }
        if c.vectors is not None:
            self._vector_stats["vectors_duplicates_dropped"] = wv.duplicates_dropped
            self._vector_stats["vectors_skipped_blank"] = wv.blank_lines

    def _encode_examples(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        c = self.config
        enc: dict[str, torch.Tensor] = {}
        for s in ("p", "q"):
            toks = [ex[s][: c.max_len] if c.max_len else ex[s] for ex in examples]
            lens = torch.tensor([0] + [len(t) for t in toks])
            flat = [w for t in toks for w in t]
            enc[f"{s}_off"] = torch.cumsum(lens, 0)  # (N+1,)
            enc[f"{s}_words"] = torch.tensor(self.vocab.lookup(flat), dtype=torch.int32)  # (sum T,)
            enc[f"{s}_types"] = torch.tensor([self._type_index[w] for w in flat], dtype=torch.int32)
        enc["label"] = torch.tensor([int(ex["label"]) for ex in examples], dtype=torch.long)  # (N,)
        if examples and "group" in examples[0]:
            enc["group"] = torch.tensor([group_id(ex["group"]) for ex in examples])  # (N,)
        return enc

    def encode_split(self, name: str, examples: list[dict]) -> Dataset:
        if self._cached is not None:
            enc = self._cached["encoded"][name]
        else:
            enc = self._encoded[name] = self._encode_examples(examples)
        return PairDataset(enc, self.char_table, self.type_len)

    def setup(self, stage: str | None = None) -> None:
        if self._is_setup:
            return
        super().setup(stage)
        if self.config.cache and not self.bypass_cache and self._cached is None:
            cache_file = self._cache_file()
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            payload = {
                "version": CACHE_VERSION,
                "splits": {s: _pack_split(self.splits[s], self._type_index) for s in SPLITS},
                "vocab": _pack_strings(self.vocab.itos),
                "chars": _pack_strings(self.chars.itos),
                "types": _pack_strings(self._types),
                "encoded": self._encoded,
                "skipped": self.skipped,
            }
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
            torch.save(payload, tmp)
            os.replace(tmp, cache_file)  # atomic: a concurrent run never reads half a file
        self._cached = None  # free the loaded copy; the datasets hold the tensors
        self._encoded = {}

    def encode(self, example: dict) -> dict[str, torch.Tensor]:
        c = self.config
        item: dict[str, torch.Tensor] = {"label": torch.tensor(int(example["label"]))}
        if "group" in example:
            item["group"] = torch.tensor(group_id(example["group"]))
        for s in ("p", "q"):
            toks = example[s][: c.max_len] if c.max_len else example[s]
            item[f"{s}_words"] = torch.tensor(self.vocab.lookup(toks), dtype=torch.long)  # (T,)
            K = max(1, min(c.max_word_len, max(len(w) for w in toks)))
            chars = torch.zeros(len(toks), K, dtype=torch.long)  # (T, K)
            for t, w in enumerate(toks):
                ids = self.chars.lookup(w[:K])
                chars[t, : len(ids)] = torch.tensor(ids)
            item[f"{s}_chars"] = chars
        return item

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        K = max(it[key].shape[1] for it in items for key in ("p_chars", "q_chars"))
        p_words, p_chars = _pad([it["p_words"] for it in items], [it["p_chars"] for it in items], K)
        q_words, q_chars = _pad([it["q_words"] for it in items], [it["q_chars"] for it in items], K)
        label = torch.stack([torch.as_tensor(it["label"]) for it in items]).long()  # (B,)
        batch = {
            "p_words": p_words,
            "p_chars": p_chars,
            "q_words": q_words,
            "q_chars": q_chars,
            "label": label,
        }
        if "group" in items[0]:  # (B,) the question of each pair (answer selection)
            batch["group"] = torch.stack([torch.as_tensor(it["group"]) for it in items]).long()
        return batch

    def decode(self, batch: dict[str, torch.Tensor], i: int) -> str:
        def side(s: str) -> str:
            words = []
            for t, wid in enumerate(batch[f"{s}_words"][i].tolist()):
                if wid == PAD_ID:
                    continue
                if wid == UNK_ID:
                    # The characters the model still sees; an unknown character shows as "?".
                    ids = [ch for ch in batch[f"{s}_chars"][i, t].tolist() if ch != PAD_ID]
                    spelled = "".join("?" if ch == UNK_ID else self.chars.itos[ch] for ch in ids)
                    words.append(f"{UNK}[{spelled}]")
                else:
                    words.append(self.vocab.itos[wid])
            return " ".join(words)

        y = int(batch["label"][i])
        return f"p: {side('p')}\nq: {side('q')}\nlabel: {y} ({self.class_names[y]})"

    # ---- using the trained model (repro predict, repro eval, invariances) ------------------------
    def fitted_state(self) -> dict[str, Any]:
        """The word and character vocabularies and the word vectors fitted in build(): with them,
        encode() and model_kwargs() need no data files (repro saves this with a full run)."""
        return {
            "vocab": _pack_strings(self.vocab.itos),
            "chars": _pack_strings(self.chars.itos),
            "word_vectors": self.word_vectors,  # (V, D): GloVe rows, seeded random rows for the rest
        }

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        self.vocab = Vocab(_unpack_strings(state["vocab"]))
        self.chars = Vocab(_unpack_strings(state["chars"]))
        self.word_vectors = state["word_vectors"].float().contiguous()

    def read_inputs(self, path: Path) -> list[dict]:
        """Sentence pairs to predict, labels optional, tokenized as the training data was:
        - a TSV as the training files: Quora's `label, sentence1, sentence2, id` (read by the
          training reader itself), or unlabelled `sentence1, sentence2[, id]`; WikiQA's release
          TSV with its header (Label optional: without it, no question is dropped);
        - JSON lines: SNLI's (read by the training reader when every line has a gold_label), or
          {"sentence1", "sentence2"} with optional "label" (an index or a class name) and "id"
          (and "group" for answer selection)."""
        c = self.config
        tokenize = make_tokenizer(c.resolved_tokenizer, c.lowercase)
        first = next((line for _, line in _lines(path) if line.strip()), None)
        if first is None:
            raise DataError(f"{path}: expected sentence pairs to predict, found an empty file")
        if first.lstrip().startswith("{"):
            return self._read_json_inputs(path, tokenize)
        if c.dataset in ("wikiqa", "wikiqa_sample"):
            if "Label" in first.split("\t"):
                return read_wikiqa(path, tokenize, c.empty)[0]
            return _read_unlabelled_wikiqa(path, tokenize, c.empty)
        rows = [(n, line.split("\t")) for n, line in _lines(path) if line.strip()]
        if all(len(cols) == 4 and cols[0] in ("0", "1") for _, cols in rows):
            return read_quora(path, tokenize, c.empty)[0]  # the training reader, as it is
        unlabelled = []
        for lineno, cols in rows:
            if len(cols) not in (2, 3):
                raise DataError(
                    f"{path}:{lineno}: expected sentence1, sentence2[, id] (tab-separated) or "
                    f"label, sentence1, sentence2, id on every line, found {len(cols)} columns; "
                    "fix or remove the line"
                )
            unlabelled.append(
                (lineno, None, cols[0], cols[1], cols[2] if len(cols) == 3 else str(lineno))
            )
        return _tokenize_rows(path, unlabelled, tokenize, c.empty)[0]

    def _read_json_inputs(self, path: Path, tokenize) -> list[dict]:
        c = self.config
        objects = []
        for lineno, line in _lines(path):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object per line, found invalid JSON "
                    f"({e.msg} at column {e.colno}); fix or remove the line"
                ) from None
            if not isinstance(obj, dict) or not all(
                isinstance(obj.get(k), str) for k in ("sentence1", "sentence2")
            ):
                raise DataError(
                    f"{path}:{lineno}: expected an object with the strings sentence1 and "
                    f"sentence2, found {_json_kind(obj)}; fix or remove the line"
                )
            objects.append((lineno, obj))
        if c.dataset == "snli" and all("gold_label" in o for _, o in objects):
            return read_snli(path, tokenize, c.empty)[0]  # the training reader, as it is
        rows = []
        for lineno, obj in objects:
            label = obj.get("label")
            if isinstance(label, str):
                if label not in self.class_names:
                    raise DataError(
                        f"{path}:{lineno}: expected label to be one of {self.class_names} (or "
                        f"its index), found {label[:40]!r}; fix the label"
                    )
                label = self.class_names.index(label)
            group = [str(obj["group"])] if obj.get("group") is not None else []
            rows.append(
                (
                    lineno,
                    label,
                    obj["sentence1"],
                    obj["sentence2"],
                    str(obj.get("id", lineno)),
                    *group,
                )
            )
        return _tokenize_rows(path, rows, tokenize, c.empty)[0]

    def transformations(self) -> dict[str, Any]:
        """swap_questions: the pair (P, Q) read as (Q, P). Paraphrase identification does not
        depend on the order of the two questions (conf/paper/bimpm.yaml declares it for Quora);
        entailment does (SNLI), and answer selection reads P as the question."""
        return {"swap_questions": swap_questions}

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "vocab_size": len(self.vocab),
            "num_chars": len(self.chars),
            "num_classes": self.num_classes,
            "word_vectors": self.word_vectors,
        }

    def data_files(self) -> list[Path]:
        files = [self.files[s] for s in SPLITS]
        vectors = [Path(self.config.vectors)] if self.config.vectors else []
        # The run's fingerprint hashes these files before the data gate runs, and reading a
        # directory there was an IsADirectoryError traceback (issue 14): refuse it here.
        for path in files:
            self._refuse_directory(path, self._folder_hint())
        for path in vectors:
            self._refuse_directory(path, "data.vectors at the GloVe .txt file inside it")
        return files + vectors

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"vocab_size": len(self.vocab), "num_chars": len(self.chars)}
        out.update(self._vector_stats)
        if self.cache_rejected is not None:
            out["cache_rejected"] = self.cache_rejected
        for split, ds in self.datasets.items():
            words = torch.cat([ds.enc["p_words"], ds.enc["q_words"]])
            out[f"oov_rate/{split}"] = (
                float((words == UNK_ID).float().mean()) if len(words) else 0.0
            )
            lens = torch.tensor(
                [len(ex[s]) for ex in self.splits[split] for s in ("p", "q")], dtype=torch.float
            )
            if len(lens):
                for q in (50, 95):
                    out[f"len_p{q}/{split}"] = float(torch.quantile(lens, q / 100))
                out[f"len_max/{split}"] = int(lens.max())
                if self.config.max_len:
                    out[f"truncated/{split}"] = float((lens > self.config.max_len).float().mean())
            for reason, n in self.skipped.get(split, {}).items():
                out[f"skipped_{reason}/{split}"] = n
        return out


def swap_questions(example: dict) -> dict:
    """A raw pair with its two sentences swapped."""
    return {**example, "p": example["q"], "q": example["p"]}


def _read_unlabelled_wikiqa(path: Path, tokenize, empty: str) -> list[dict]:
    """WikiQA-format TSV without the Label column: every (question, sentence) pair, none dropped."""
    rows: list[tuple] = []
    where: dict[str, int] = {}
    for lineno, line in _lines(path):
        cols = line.split("\t")
        if lineno == 1:
            missing = [c for c in ("QuestionID", "Question", "Sentence") if c not in cols]
            if missing:
                raise DataError(
                    f"{path}:1: expected a header naming QuestionID, Question, Sentence (the "
                    f"WikiQA release's TSV), found no column {', '.join(missing)}"
                )
            where = {
                c: cols.index(c)
                for c in ("QuestionID", "Question", "Sentence", "SentenceID")
                if c in cols
            }
            continue
        if not line.strip():
            continue
        if len(cols) <= max(where.values()):
            raise DataError(
                f"{path}:{lineno}: expected {max(where.values()) + 1} tab-separated columns as "
                f"the header names, found {len(cols)}; fix or remove the line"
            )
        ex_id = cols[where["SentenceID"]] if "SentenceID" in where else str(lineno)
        rows.append(
            (
                lineno,
                None,
                cols[where["Question"]],
                cols[where["Sentence"]],
                ex_id,
                cols[where["QuestionID"]],
            )
        )
    return _tokenize_rows(path, rows, tokenize, empty)[0]


def build_datamodule(cfg: DataConfig, seed: int) -> BiMPMDataModule:
    """What repro calls: cfg is the typed `data:` section (BiMPM's own keys in cfg.options)."""
    return BiMPMDataModule(cfg, seed)
