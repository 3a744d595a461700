"""Load the rows of a GloVe-format text file that a vocabulary needs, streaming, with a cache.

Format: one `word v1 ... vD` per line, no header (GloVe); a word2vec-style first line
`<count> <dim>` is recognised and skipped. Some GloVe 840B "words" contain spaces
(e.g. ". . ."): the vector is always the last D fields and the word is everything before.
Only lines whose first token could start a vocabulary word are parsed into floats, which makes
a pass over the 5.6 GB 840B file mostly I/O (see benchmarks/glove_load.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from repro.data.progress import start_byte_progress
from repro.errors import DataError

CACHE_VERSION = 1
PROGRESS_MIN_BYTES = 64 * 2**20  # show a progress bar only on files this large
_BAR_EVERY_LINES = 4096


@dataclass
class WordVectors:
    """Rows aligned with the vocabulary given to load_glove; rows not found are zero."""

    vectors: torch.Tensor  # (V, D) float32
    found: torch.Tensor  # (V,) bool
    dim: int
    path: Path
    from_cache: bool = False

    @property
    def coverage(self) -> float:
        """Fraction of the vocabulary that has a vector in the file."""
        return float(self.found.float().mean()) if len(self.found) else 0.0

    @property
    def missing(self) -> int:
        return int((~self.found).sum())


def _vocab_hash(vocab: Sequence[str]) -> str:
    h = hashlib.sha256()
    for w in vocab:
        h.update(w.encode("utf-8") + b"\n")
    return h.hexdigest()


def cache_key(path: Path, vocab: Sequence[str], dim: int | None) -> str:
    """File identity (absolute path, size, mtime) + vocabulary + dim: a changed file re-parses."""
    st = path.stat()
    ident = f"v{CACHE_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{dim}|{_vocab_hash(vocab)}"
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()[:24]


def _is_header(fields: list[bytes]) -> bool:
    return len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit()


def load_glove(
    path: str | os.PathLike,
    vocab: Sequence[str],
    dim: int | None = None,
    cache_dir: str | os.PathLike | None = ".cache/repro",
    progress: bool = True,
) -> WordVectors:
    """Vectors for `vocab` (a list of words, row i = vocab[i]) from the GloVe file at `path`.

    dim: the expected vector size; None infers it from the first line. cache_dir: where the
    result is kept (keyed by file path+size+mtime, vocabulary and dim); None disables caching.
    The first occurrence of a word wins (840B repeats a few).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"word vectors file not found: {path} (expected a GloVe-format text file)")
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / "glove" / f"{path.stem}-{cache_key(path, vocab, dim)}.pt"
        if cache_file.is_file():
            saved = torch.load(cache_file, weights_only=True)
            return WordVectors(saved["vectors"], saved["found"], int(saved["dim"]), path, True)

    result = _parse(path, vocab, dim, progress)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        torch.save({"vectors": result.vectors, "found": result.found, "dim": result.dim}, tmp)
        os.replace(tmp, cache_file)  # atomic: a concurrent reader never sees half a file
    return result


def _parse(path: Path, vocab: Sequence[str], dim: int | None, progress: bool) -> WordVectors:
    index: dict[bytes, int] = {}
    for i, w in enumerate(vocab):
        index.setdefault(w.encode("utf-8"), i)
    # A line can only hold a vocabulary word if its first token starts one (words with spaces).
    first_tokens = {w.split(b" ", 1)[0] for w in index}
    rows: dict[int, np.ndarray] = {}
    size = path.stat().st_size
    bar = None
    if progress and size >= PROGRESS_MIN_BYTES:
        bar, task = start_byte_progress(f"reading {path.name}", size)
    try:
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                if bar is not None and lineno % _BAR_EVERY_LINES == 0:
                    bar.update(task, completed=fh.tell())
                if lineno == 1:
                    fields = line.split()
                    if _is_header(fields):
                        header_dim = int(fields[1])
                        if dim is not None and header_dim != dim:
                            raise DataError(
                                f"{path}:1: header says {header_dim}-d vectors, expected {dim}-d"
                            )
                        dim = header_dim
                        continue
                    if dim is None:
                        dim = len(fields) - 1
                        if dim < 1:
                            raise DataError(
                                f"{path}:1: expected a word and its vector, found {line[:80]!r}"
                            )
                    elif len(fields) - 1 != dim:
                        # The first line is an ordinary word in every GloVe release: a mismatch here
                        # is a file of another dimension, not a word with spaces.
                        raise DataError(
                            f"{path}:1: expected a word and {dim} numbers, found {len(fields) - 1} "
                            f"numbers (a {len(fields) - 1}-d file? set the expected dim to match)"
                        )
                # Cheap check on every line (C-speed count): fewer than `dim` separators = too few
                # fields. More is allowed: a word with spaces.
                if line.count(b" ") < dim:
                    if not line.strip():
                        continue  # a blank line (e.g. at the end) carries nothing
                    n = len(line.split()) - 1
                    raise DataError(
                        f"{path}:{lineno}: expected a word and {dim} numbers, found {n} numbers"
                    )
                word = line[: line.find(b" ")]
                if word not in first_tokens:
                    continue
                fields = line.rstrip().split(b" ")
                if len(fields) - 1 != dim:  # a word with spaces, or trailing/double spaces
                    fields = line.split()
                    word = b" ".join(fields[:-dim])
                    if len(fields) <= dim:
                        raise DataError(
                            f"{path}:{lineno}: expected a word and {dim} numbers, "
                            f"found {len(fields) - 1} numbers"
                        )
                    fields = [word] + fields[-dim:]
                i = index.get(fields[0])
                if i is None or i in rows:
                    continue
                try:
                    rows[i] = np.array(fields[1:], dtype=np.float32)
                except ValueError as e:
                    raise DataError(
                        f"{path}:{lineno}: expected {dim} numbers after the word: {e}"
                    ) from None
    finally:
        if bar is not None:
            bar.update(task, completed=size)
            bar.stop()
    dim = dim or 0
    vectors = torch.zeros(len(vocab), dim)
    found = torch.zeros(len(vocab), dtype=torch.bool)
    for i, v in rows.items():
        vectors[i] = torch.from_numpy(v)
        found[i] = True
    return WordVectors(vectors, found, dim, path, False)
