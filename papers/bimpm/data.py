"""BiMPM's datamodule: the readers' examples (papers/bimpm/readers.py) -> word + character id
batches, with the preprocessing cached.

A batch (padding id 0, unknown id 1):
    p_words (B, Tp) long, p_chars (B, Tp, K) long, q_words (B, Tq), q_chars (B, Tq, K), label (B,)
    and, for answer selection (WikiQA, the ranking task: P is the question, Q a candidate
    sentence), group (B,) long: the question each pair belongs to.
with K the characters of the longest word in the batch, capped at max_word_len. Word and
character vocabularies come from the training split only; the word vectors are GloVe rows for
the vocabulary, random (or zero) for vocabulary words the file lacks. Tokenized, numericalized
splits are cached under cache_dir, keyed by the data files' sha256, the settings that shape them
and the code that reads them (this file, readers.py, repro/data/text.py, repro's version). The
cache holds only tensors and plain values (repro/data/cache.py): a file planted there is built
over, never executed.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate, chain
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

import repro.data.text
from papers.bimpm import readers
from papers.bimpm.readers import (
    QUORA_LABELS,
    READERS,
    SNLI_LABELS,
    WIKIQA_FILES,
    WIKIQA_LABELS,
)
from repro import __version__ as repro_version
from repro.config.schema import DataConfig
from repro.config.typed import bound, from_dict
from repro.data.cache import (
    BAD_CACHE,
    bad_cache_reason,
    load_cache,
    pack_strings,
    save_cache,
    spans,
    unpack_strings,
)
from repro.data.datamodule import PaperDataModule, group_id
from repro.data.download import how_to_get, sha256_of
from repro.data.glove import load_glove
from repro.data.split import SPLITS
from repro.data.text import PAD_ID, UNK, UNK_ID, Vocab, make_tokenizer
from repro.errors import DataError

# 2: tensors and plain values only (weights_only load), code in the key; 3: groups; 4: lines read
CACHE_VERSION = 4
# The code whose edits must invalidate the cache: editing how the vocabulary is built once
# passed the data gate on a stale cached vocabulary (issue 14).
CODE_FILES = (
    Path(__file__).resolve(),
    Path(readers.__file__).resolve(),
    Path(repro.data.text.__file__).resolve(),
)
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


_p_and_q = itemgetter("p", "q")  # an example's two token lists


# ---- encoded splits -----------------------------------------------------------------------------
class PairDataset(Dataset):
    """One split as flat id tensors; item i -> {p_words (T,), p_chars (T, w), q_..., label}."""

    def __init__(
        self, enc: dict[str, torch.Tensor], char_table: torch.Tensor, type_len: torch.Tensor
    ):
        self.enc, self.char_table, self.type_len = enc, char_table, type_len
        # numpy views of the same memory: an item is sliced and gathered in numpy, each torch
        # call being several times the cost of a numpy one at this size (~60 -> ~15 us an item;
        # training fetches every item each epoch, the data gate every val/test item twice)
        self._sides = {
            s: tuple(enc[f"{s}_{k}"].numpy() for k in ("off", "words", "types")) for s in ("p", "q")
        }
        self._char_table, self._type_len = char_table.numpy(), type_len.numpy()

    def __getstate__(self) -> dict[str, Any]:  # to a spawned worker: the tensors, not views
        return {k: v for k, v in self.__dict__.items() if k in ("enc", "char_table", "type_len")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["enc"], state["char_table"], state["type_len"])

    def __len__(self) -> int:
        return len(self.enc["label"])

    def _side(self, s: str, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        off, words, types = self._sides[s]
        a, b = off[i], off[i + 1]
        rows = types[a:b]  # (T,) rows of the char table
        chars = self._char_table[rows, : self._type_len[rows].max()]  # (T, w), a copy
        return torch.from_numpy(words[a:b].astype(np.int64)), torch.from_numpy(chars)

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
    # pad_sequence, not a row assigned at a time: ~half the CPU of collate, which the data gate
    # pays for every val/test item twice (issue 21) and training for every batch
    words = pad_sequence([s.long() for s in seqs], batch_first=True, padding_value=PAD_ID)  # (B, T)
    widened = [F.pad(c.long(), (0, K - c.shape[1]), value=PAD_ID) for c in chars]  # (T_b, K) each
    out_chars = pad_sequence(widened, batch_first=True, padding_value=PAD_ID)  # (B, T', K)
    if out_chars.shape[1] < words.shape[1]:  # (B, T, K): as long as the longest word sequence
        out_chars = F.pad(out_chars, (0, 0, 0, words.shape[1] - out_chars.shape[1]), value=PAD_ID)
    return words, out_chars


# ---- the preprocessing cache: a split as tensors (repro/data/cache.py packs the strings) ------
def _pack_split(examples: list[dict], type_index: dict[str, int]) -> dict[str, Any]:
    """A split's examples as token rows of the type table + offsets, labels and ids."""
    out: dict[str, Any] = {}
    for s in ("p", "q"):
        ids = [type_index[w] for ex in examples for w in ex[s]]
        out[f"{s}_tokens"] = torch.tensor(ids, dtype=torch.int32)  # (sum T,)
        ends = list(accumulate(len(ex[s]) for ex in examples))
        out[f"{s}_ends"] = torch.tensor(ends, dtype=torch.long)  # (N,)
    out["label"] = torch.tensor([int(ex["label"]) for ex in examples], dtype=torch.long)  # (N,)
    out["ids"] = pack_strings([str(ex["id"]) for ex in examples])
    if examples and "group" in examples[0]:
        out["groups"] = pack_strings([str(ex["group"]) for ex in examples])
    return out


def _unpack_split(packed: dict[str, Any], types: list[str]) -> list[dict]:
    sides = {}
    for s in ("p", "q"):
        words = [types[i] for i in packed[f"{s}_tokens"].tolist()]
        sides[s] = [words[a:b] for a, b in spans(packed[f"{s}_ends"])]
    labels, ids = packed["label"].tolist(), unpack_strings(packed["ids"])
    groups = unpack_strings(packed["groups"]) if "groups" in packed else None
    return [
        {"p": p, "q": q, "label": y, "id": i, **({"group": groups[n]} if groups else {})}
        for n, (p, q, y, i) in enumerate(zip(sides["p"], sides["q"], labels, ids, strict=True))
    ]


def read_cache(cache_file: Path) -> dict[str, Any]:
    """A cache file -> splits, vocab, chars, types, encoded, skipped; raises one of BAD_CACHE."""
    saved = load_cache(cache_file)
    if saved["version"] != CACHE_VERSION:
        raise ValueError(f"cache format {saved['version']!r}, expected {CACHE_VERSION}")
    types = unpack_strings(saved["types"])
    encoded = saved["encoded"]
    if not all(isinstance(t, torch.Tensor) for enc in encoded.values() for t in enc.values()):
        raise TypeError("encoded splits hold something other than tensors")
    return {
        "splits": {s: _unpack_split(saved["splits"][s], types) for s in SPLITS},
        "vocab": unpack_strings(saved["vocab"]),
        "chars": unpack_strings(saved["chars"]),
        "types": types,
        "encoded": {s: dict(encoded[s]) for s in SPLITS},
        "skipped": {s: {str(k): int(v) for k, v in saved["skipped"][s].items()} for s in SPLITS},
        "read": {s: int(saved["read"][s]) for s in SPLITS},
    }


class BiMPMDataModule(PaperDataModule):
    input_fields = ("p", "q")
    padded_inputs = {k: "right" for k in ("p_words", "q_words", "p_chars", "q_chars")}  # _pad

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
        self.read: dict[str, int] = {}  # split -> lines (records) read
        self._found: torch.Tensor | None = None  # (V,) rows whose vector came from the file
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
                except BAD_CACHE as e:
                    # Built over rather than an error: the cache is derived from the data files
                    # and code alone, nothing in it ran, and a refusal would only make the user
                    # delete the file by hand. The warning and stats() say it happened.
                    reason = bad_cache_reason(e)
                    self.cache_rejected = f"{cache_file.name}: {reason}"
                    warnings.warn(
                        f"{cache_file}: expected a preprocessing cache written by repro, found "
                        f"an unreadable file ({reason}); building it again",
                        stacklevel=2,
                    )
                else:
                    self.loaded_from_cache = True
                    self.skipped = self._cached["skipped"]
                    self.read = self._cached["read"]
                    return self._cached["splits"]
        tokenize = make_tokenizer(c.resolved_tokenizer, c.lowercase)
        out = {}
        for split, path in self.files.items():
            read = READERS[c.dataset](path, tokenize, c.empty)
            out[split], self.skipped[split], self.read[split] = read
            if c.limit is not None:
                self.skipped[split]["limit"] = max(len(out[split]) - c.limit, 0)  # data.limit
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
            # p and q of each example by itemgetter, flattened in C: the same tokens in the same
            # order as a generator over the examples, without a Python step per example
            words = Counter(chain.from_iterable(chain.from_iterable(map(_p_and_q, train))))
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
            # The training split's distinct tokens are the counter's keys, already in order of
            # first appearance: only the other splits' tokens are walked again (the walk over
            # every token was ~2 s of each build at Quora's size, issue 21).
            self._types = list(
                dict.fromkeys(
                    chain(
                        ("",),
                        *(
                            words
                            if name == "train"
                            else chain.from_iterable(chain.from_iterable(map(_p_and_q, exs)))
                            for name, exs in splits.items()
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
        random_rows = torch.randn(V, c.word_dim, generator=g).mul_(c.oov_std)  # (V, D)
        if c.vectors is None:
            vectors, found = random_rows, None
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
            # The missing rows filled in place: wv.vectors is this build's own tensor (read or
            # parsed for this call), and a third (V, D) tensor was 120 MB more at the peak of
            # every build at Quora's size (issue 21). The same values as torch.where.
            vectors, missing = wv.vectors, ~found  # (V, D), (V,)
            vectors[missing] = random_rows[missing] if c.oov_vectors == "random" else 0.0
            del random_rows
        self._found = found
        vectors[PAD_ID] = 0.0
        if c.oov_vectors == "zero":
            vectors[UNK_ID] = 0.0
        self.word_vectors = vectors.float().contiguous()
        n_words = V - 2
        n_found = int(found.sum()) if found is not None else 0
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
            payload = {
                "version": CACHE_VERSION,
                "splits": {s: _pack_split(self.splits[s], self._type_index) for s in SPLITS},
                "vocab": pack_strings(self.vocab.itos),
                "chars": pack_strings(self.chars.itos),
                "types": pack_strings(self._types),
                "encoded": self._encoded,
                "skipped": self.skipped,
                "read": self.read,
            }
            save_cache(cache_file, payload)
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
        """The word and character vocabularies fitted in build(): with them, encode() and
        model_kwargs() need no data files (repro saves this with a full run). The word vectors'
        values are not kept, only their shape: every checkpoint holds them as the embedding's
        weight (frozen or trained), and loading one is strict, so a model restored from this
        state is the trained one (at Quora's size, 100k x 300 floats: 120 MB saved per run)."""
        return {
            "vocab": pack_strings(self.vocab.itos),
            "chars": pack_strings(self.chars.itos),
            "word_vectors_shape": list(self.word_vectors.shape),  # (V, D)
        }

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        self.vocab = Vocab(unpack_strings(state["vocab"]))
        self.chars = Vocab(unpack_strings(state["chars"]))
        if "word_vectors" in state:  # saved before the shape alone was
            self.word_vectors = state["word_vectors"].float().contiguous()
        else:  # a placeholder of the right shape: the checkpoint's weights replace it
            self.word_vectors = torch.zeros(*state["word_vectors_shape"])

    def read_inputs(self, path: Path) -> list[dict]:
        """Sentence pairs to predict, labels optional, tokenized as the training data was (the
        formats: papers/bimpm/readers.py read_inputs)."""
        c = self.config
        tokenize = make_tokenizer(c.resolved_tokenizer, c.lowercase)
        return readers.read_inputs(path, c.dataset, tokenize, c.empty, self.class_names)

    def transformations(self) -> dict[str, Any]:
        """swap_questions: the pair (P, Q) read as (Q, P). Paraphrase identification does not
        depend on the order of the two questions (conf/paper/bimpm.yaml declares it for Quora);
        entailment does (SNLI), and answer selection reads P as the question."""
        return {"swap_questions": swap_questions}

    # ---- what the data and shapes gates check (PaperDataModule: read_counts ...) ----------------
    def read_counts(self) -> dict[str, dict[str, Any]]:
        return {s: {"read": self.read[s], "skipped": dict(self.skipped[s])} for s in self.read}

    def vocabulary(self) -> list[str]:
        return self.vocab.itos

    def raw_tokens(self, example: dict) -> dict[str, list[str]]:
        n = self.config.max_len
        return {f"{s}_words": example[s][:n] if n else example[s] for s in ("p", "q")}

    def loaded_vectors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The GloVe rows found in data.vectors (None: random vectors, nothing loaded)."""
        if self._found is None:
            return None
        ids = self._found.nonzero().flatten()  # (n,)
        return ids, self.word_vectors[ids]  # (n,), (n, D)

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


def build_datamodule(cfg: DataConfig, seed: int) -> BiMPMDataModule:
    """What repro calls: cfg is the typed `data:` section (BiMPM's own keys in cfg.options)."""
    return BiMPMDataModule(cfg, seed)
