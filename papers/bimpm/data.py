"""BiMPM data: Quora (authors' partition), SNLI 1.0 or the shipped sample -> word + char id batches.

A batch (padding id 0, unknown id 1):
    p_words (B, Tp) long, p_chars (B, Tp, K) long, q_words (B, Tq), q_chars (B, Tq, K), label (B,)
with K the characters of the longest word in the batch, capped at max_word_len. Word and
character vocabularies come from the training split only; the word vectors are GloVe rows for
the vocabulary, random (or zero) for vocabulary words the file lacks. Tokenized, numericalized
splits are cached under cache_dir, keyed by the data files' sha256 and the settings that shape
them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from repro.config.schema import DataConfig
from repro.config.typed import bound, from_dict
from repro.data.datamodule import PaperDataModule
from repro.data.download import how_to_get, sha256_of
from repro.data.glove import load_glove
from repro.data.split import SPLITS
from repro.data.text import PAD_ID, UNK, UNK_ID, Vocab, make_tokenizer
from repro.errors import DataError

CACHE_VERSION = 1
SNLI_LABELS = ("entailment", "neutral", "contradiction")
QUORA_LABELS = ("not paraphrase", "paraphrase")  # the TSV's label column: 0, 1
FILES = {  # dataset -> (config key of its folder, file per split)
    "quora": ("quora_dir", {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}),
    "sample": ("sample_dir", {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}),
    "snli": (
        "snli_dir",
        {s: f"snli_1.0_{f}.jsonl" for s, f in zip(SPLITS, ("train", "dev", "test"), strict=True)},
    ),
}


@dataclass
class BiMPMDataConfig:
    """The `data:` section of the BiMPM config. The paper states none of these but the vectors."""

    dataset: Literal["quora", "snli", "sample"] = "sample"
    sample_dir: str = "papers/bimpm/sample"
    quora_dir: str = "data/Quora_question_pair_partition"  # as the authors' zip unpacks
    snli_dir: str = "data/snli_1.0"  # as snli_1.0.zip unpacks
    vectors: str | None = None  # GloVe-format file (paper: 840B 300-d); None -> random vectors
    word_dim: int = field(default=300, metadata=bound(ge=1))  # paper: 300-d GloVe
    # auto: whitespace for quora/sample (pre-tokenized), spacy for snli
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
        return "spacy" if self.dataset == "snli" else "whitespace"



DATA_CONFIG = BiMPMDataConfig  # repro checks the `data:` keys against it before a run starts

# ---- reading ------------------------------------------------------------------------------------
def _lines(path: Path):
    """(line number, text) of a UTF-8 file; undecodable bytes -> DataError naming the line."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: not valid UTF-8 (byte {raw[e.start]:#04x} at column "
                    f"{e.start + 1}); expected UTF-8 text"
                ) from None


def _tokenize_rows(path, rows, tokenize, empty: str) -> list[dict]:
    """rows: (lineno, label, s1, s2, id) -> examples; empty sentences -> error or dropped."""
    p_toks = tokenize([r[2] for r in rows])
    q_toks = tokenize([r[3] for r in rows])
    out = []
    for (lineno, label, _, _, ex_id), p, q in zip(rows, p_toks, q_toks, strict=True):
        if not p or not q:
            if empty == "drop":
                continue
            which = "first" if not p else "second"
            raise DataError(
                f"{path}:{lineno}: the {which} sentence is empty; expected text in both "
                "(or set data.empty=drop to skip such pairs)"
            )
        out.append({"p": p, "q": q, "label": label, "id": ex_id})
    return out


def read_quora(path: Path, tokenize, empty: str = "error") -> list[dict]:
    """Headerless TSV `label \\t sentence1 \\t sentence2 \\t id` (the authors' Quora partition)."""
    rows = []
    for lineno, line in _lines(path):
        if not line.strip():
            continue  # blank (e.g. trailing) lines hold no pair
        cols = line.split("\t")
        if len(cols) != 4:
            raise DataError(
                f"{path}:{lineno}: expected 4 tab-separated columns (label, sentence1, sentence2, "
                f"id), found {len(cols)}"
            )
        if cols[0] not in ("0", "1"):
            raise DataError(
                f"{path}:{lineno}: expected label 0 or 1 in column 1, found {cols[0]!r}"
            )
        rows.append((lineno, int(cols[0]), cols[1], cols[2], cols[3]))
    return _tokenize_rows(path, rows, tokenize, empty)


def read_snli(path: Path, tokenize, empty: str = "error") -> tuple[list[dict], int]:
    """SNLI 1.0 JSON lines; pairs whose gold_label is "-" (no consensus) are dropped and counted."""
    rows, dropped = [], 0
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: expected a JSON object per line ({e.msg})") from None
        missing = [k for k in ("gold_label", "sentence1", "sentence2") if k not in obj]
        if not isinstance(obj, dict) or missing:
            raise DataError(
                f"{path}:{lineno}: expected keys gold_label, sentence1, sentence2; missing {missing}"
            )
        gold = obj["gold_label"]
        if gold == "-":
            dropped += 1
            continue
        if gold not in SNLI_LABELS:
            raise DataError(
                f"{path}:{lineno}: expected gold_label in {list(SNLI_LABELS) + ['-']}, found {gold!r}"
            )
        ex_id = str(obj.get("pairID", lineno))
        rows.append((lineno, SNLI_LABELS.index(gold), obj["sentence1"], obj["sentence2"], ex_id))
    return _tokenize_rows(path, rows, tokenize, empty), dropped


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
        return {
            "p_words": pw,
            "p_chars": pc,
            "q_words": qw,
            "q_chars": qc,
            "label": self.enc["label"][i],
        }


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


class BiMPMDataModule(PaperDataModule):
    input_fields = ("p", "q")

    def __init__(self, cfg: DataConfig, seed: int):
        super().__init__(cfg, seed)
        self.config = from_dict(BiMPMDataConfig, cfg.options, "data")
        c = self.config
        self.num_classes = 3 if c.dataset == "snli" else 2
        self.class_names = list(SNLI_LABELS if c.dataset == "snli" else QUORA_LABELS)
        folder_key, names = FILES[c.dataset]
        self.folder = Path(getattr(c, folder_key))
        self.files = {s: self.folder / names[s] for s in SPLITS}
        self.vocab: Vocab | None = None
        self.chars: Vocab | None = None
        self.word_vectors: torch.Tensor | None = None
        self.dropped: dict[str, int] = {}
        self.loaded_from_cache = False
        self._vector_stats: dict[str, Any] = {}
        self._cached: dict | None = None
        self._encoded: dict[str, dict[str, torch.Tensor]] = {}

    # ---- files and cache ------------------------------------------------------------------------
    def _check_files(self) -> None:
        c = self.config
        folder_key = FILES[c.dataset][0]
        for path in self.files.values():
            if not path.is_file():
                hint = {
                    "quora": how_to_get("quora"),
                    "snli": how_to_get("snli", str(self.folder.parent)),
                    "sample": "regenerate it: python -m papers.bimpm.sample.make_sample",
                }[c.dataset]
                raise DataError(
                    f"{c.dataset} data file not found: {path} (from data.{folder_key}={str(self.folder)!r}). "
                    f"To get it: {hint}; or point data.{folder_key} at the folder that holds "
                    f"{', '.join(p.name for p in self.files.values())}"
                )

    def _cache_file(self) -> Path:
        c = self.config
        settings = {
            "version": CACHE_VERSION,
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
        if c.cache:
            cache_file = self._cache_file()
            if cache_file.is_file():
                self._cached = torch.load(cache_file, weights_only=False)  # our own file
                self.loaded_from_cache = True
                self.dropped = self._cached["dropped"]
                return self._cached["splits"]
        tokenize = make_tokenizer(c.resolved_tokenizer, c.lowercase)
        out = {}
        for split, path in self.files.items():
            if c.dataset == "snli":
                out[split], self.dropped[split] = read_snli(path, tokenize, c.empty)
            else:
                out[split] = read_quora(path, tokenize, c.empty)
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
            self.vocab = Vocab.build(
                (w for ex in train for s in ("p", "q") for w in ex[s]), c.min_freq
            )
            self.chars = Vocab.build(
                ch for ex in train for s in ("p", "q") for w in ex[s] for ch in w
            )
            # Every distinct token of every split gets a row of character ids (a lookup cache,
            # not a vocabulary: unseen words of dev/test still have their characters).
            seen = {"": 0}
            for exs in splits.values():
                for ex in exs:
                    for s in ("p", "q"):
                        for w in ex[s]:
                            seen.setdefault(w, len(seen))
            self._types = list(seen)
        self._type_index = {w: i for i, w in enumerate(self._types)}
        self.char_table = torch.zeros(len(self._types), c.max_word_len, dtype=torch.long)
        self.type_len = torch.ones(len(self._types), dtype=torch.long)  # >= 1: K is never 0
        for i, w in enumerate(self._types[1:], start=1):
            ids = self.chars.lookup(w[: c.max_word_len])
            self.char_table[i, : len(ids)] = torch.tensor(ids)
            self.type_len[i] = max(1, len(ids))
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
            if not path.is_file():
                raise DataError(
                    f"word vectors file not found: {path} (data.vectors). To get GloVe: "
                    f"{how_to_get('glove-840b', 'data/glove')}; or set data.vectors=null for "
                    "random vectors"
                )
            try:
                wv = load_glove(
                    path,
                    self.vocab.itos,
                    dim=c.word_dim,
                    cache_dir=c.cache_dir if c.cache else None,
                )
            except DataError as e:
                raise DataError(f"{e} [data.word_dim={c.word_dim}]") from None
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
        if self.config.cache and self._cached is None:
            cache_file = self._cache_file()
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            payload = {
                "splits": self.splits,
                "vocab": self.vocab.itos,
                "chars": self.chars.itos,
                "types": self._types,
                "encoded": self._encoded,
                "dropped": self.dropped,
            }
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
            torch.save(payload, tmp)
            os.replace(tmp, cache_file)  # atomic: a concurrent run never reads half a file
        self._cached = None  # free the loaded copy; the datasets hold the tensors
        self._encoded = {}

    def encode(self, example: dict) -> dict[str, torch.Tensor]:
        c = self.config
        item: dict[str, torch.Tensor] = {"label": torch.tensor(int(example["label"]))}
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
        return {
            "p_words": p_words,
            "p_chars": p_chars,
            "q_words": q_words,
            "q_chars": q_chars,
            "label": label,
        }

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

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "vocab_size": len(self.vocab),
            "num_chars": len(self.chars),
            "num_classes": self.num_classes,
            "word_vectors": self.word_vectors,
        }

    def data_files(self) -> list[Path]:
        files = [self.files[s] for s in SPLITS]
        return files + ([Path(self.config.vectors)] if self.config.vectors else [])

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"vocab_size": len(self.vocab), "num_chars": len(self.chars)}
        out.update(self._vector_stats)
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
            if split in self.dropped:
                out[f"dropped_no_consensus/{split}"] = self.dropped[split]
        return out


def build_datamodule(cfg: DataConfig, seed: int) -> BiMPMDataModule:
    """What repro calls: cfg is the typed `data:` section (BiMPM's own keys in cfg.options)."""
    return BiMPMDataModule(cfg, seed)
