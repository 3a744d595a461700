"""Tokenizers and vocabularies for text data (id 0 = padding, id 1 = unknown)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


def make_tokenizer(kind: str, lowercase: bool) -> Callable[[Sequence[str]], list[list[str]]]:
    """A batch tokenizer: "whitespace" (pre-tokenized data) or "spacy" (spacy.blank("en"))."""
    if kind == "whitespace":

        def tokenize(texts: Sequence[str]) -> list[list[str]]:
            return [(t.lower() if lowercase else t).split() for t in texts]

    elif kind == "spacy":
        import spacy  # ~2 s to import: only when asked for

        tok = spacy.blank("en").tokenizer

        def tokenize(texts: Sequence[str]) -> list[list[str]]:
            # One process: n_process=2 measured ~10x slower on 2 cores (design.md).
            out = []
            for doc in tok.pipe(texts, batch_size=2000):
                words = [t.text for t in doc if not t.is_space]
                out.append([w.lower() for w in words] if lowercase else words)
            return out

    else:
        raise ValueError(f"tokenizer must be 'whitespace' or 'spacy', got {kind!r}")
    return tokenize


class Vocab:
    """Index <-> string; 0 = <pad>, 1 = <unk>, then the kept items by frequency (ties: sorted)."""

    def __init__(self, itos: Sequence[str]):
        if list(itos[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {[PAD, UNK]}, got {list(itos[:2])}")
        self.itos = list(itos)
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    @classmethod
    def build(cls, items: Iterable[str], min_freq: int = 1) -> Vocab:
        return cls.from_counts(Counter(items), min_freq)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], min_freq: int = 1) -> Vocab:
        """The vocabulary of items counted already (item -> occurrences)."""
        kept = sorted(
            (w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w)
        )
        return cls([PAD, UNK] + [w for w in kept if w not in (PAD, UNK)])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, s: str) -> bool:
        return s in self.stoi

    def lookup(self, items: Iterable[str]) -> list[int]:
        get = self.stoi.get
        return [get(s, UNK_ID) for s in items]
