"""Load the rows of a GloVe-format text file that a vocabulary needs, streaming, with a cache.

Format: one `word v1 ... vD` per line, no header (GloVe); a word2vec-style first line
`<count> <dim>` is recognised and skipped. Some GloVe 840B "words" contain spaces
(e.g. ". . .", "at name@domain.com"): the vector is always the last D fields and the word is
everything before. A line with more than D + 1 fields is therefore read as a word with spaces,
unless the field just before the last D is itself a number: then it is a line with too many
numbers (51 in a 50-d file), an error naming the line, not a word "the 0.12" silently dropped.
The rule's price: a word with spaces whose last part is a number ("page 2") is refused too; the
840B words with spaces reported by other loaders' users end in punctuation or an address.

What is checked where (issue 14): every line's shape (a word and D numbers) is checked, cheaply,
by counting separators; the values are parsed, and must be finite, only on the lines whose word
is in the vocabulary: parsing all 2.2M lines of 840B is what makes a loader CPU-bound, and a
value on an unused line never reaches the model. A word that occurs twice keeps its first
vector; later ones are counted (`duplicates_dropped`) for the data gate to report. Empty files,
directories and compressed files (gzip, zip) are refused with what to do: reading .gz
transparently would hide a slower pass over 840B behind the cache, and a release unzips once.

The cache (one file per vectors file, dimension and vocabulary) holds its vocabulary and each
row's dropped duplicates too, so a vocabulary it covers is served from it, row by row, as parsing
the file would give it: the data gate's comparison builds fit smaller vocabularies from a bounded
sample of the training split, and each would otherwise read the whole file again (4.4 s for a
1.5 GB file here, ~20 s for 840B; issue 21). What is served is not written: the cache it came
from holds it.
"""

from __future__ import annotations

import glob
import hashlib
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path

import numpy as np
import torch

from repro.data.cache import (
    BAD_CACHE,
    bad_cache_reason,
    load_cache,
    pack_strings,
    save_cache,
    unpack_strings,
)
from repro.data.download import compressed_format
from repro.data.progress import start_byte_progress
from repro.errors import DataError

# 2: the cache also holds duplicates_dropped and blank_lines; 3: its vocabulary and each row's
# dropped duplicates (a vocabulary it covers is served from it)
CACHE_VERSION = 3
SUPERSETS_TRIED = 3  # cache files of the same vectors file looked into for a covering vocabulary
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
    duplicates_dropped: int = 0  # later lines for a vocabulary word that already had a vector
    blank_lines: int = 0  # skipped: they carry nothing
    row_duplicates: torch.Tensor | None = None  # (V,) int32: duplicates_dropped per row (parsed)

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


def _file_key(path: Path, dim: int | None) -> str:
    """File identity (absolute path, size, mtime) + dim: a changed file re-parses."""
    st = path.stat()
    ident = f"v{CACHE_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{dim}"
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()[:16]


def cache_key(path: Path, vocab: Sequence[str], dim: int | None) -> str:
    """`<file>-<vocabulary>`: the vectors file's identity and dim, then the vocabulary; the
    caches of one file share the first part (where a covering vocabulary is looked for)."""
    return f"{_file_key(path, dim)}-{_vocab_hash(vocab)[:16]}"


def _is_header(fields: list[bytes]) -> bool:
    return len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit()


def _is_number(field: bytes) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _show(b: bytes, limit: int = 40) -> str:
    return repr(b[:limit].decode("utf-8", errors="replace"))


def _what_to_do(lineno: int, numbers: int, dim_setting: str) -> str:
    # On line 1 a wrong count is a file of another dimension; further down, one damaged line.
    if lineno == 1:
        return f"a {numbers}-d file? set {dim_setting} to {numbers}"
    return "fix or remove that line"


def load_glove(
    path: str | os.PathLike,
    vocab: Sequence[str],
    dim: int | None = None,
    cache_dir: str | os.PathLike | None = ".cache/repro",
    progress: bool = True,
    dim_setting: str = "the expected dimension",
) -> WordVectors:
    """Vectors for `vocab` (a list of words, row i = vocab[i]) from the GloVe file at `path`.

    dim: the expected vector size; None infers it from the first line. cache_dir: where the
    result is kept (keyed by file path+size+mtime, vocabulary and dim); None disables caching.
    The first occurrence of a word wins (840B repeats a few); later ones are counted.
    dim_setting: what an error tells the user to change when the file has another dimension
    (a paper passes its config key, e.g. "data.word_dim").
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(
            f"{path}: expected a GloVe text file, found a directory; "
            "point at the .txt file inside it"
        )
    if not path.is_file():
        raise DataError(f"word vectors file not found: {path} (expected a GloVe-format text file)")
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / "glove" / f"{path.stem}-{cache_key(path, vocab, dim)}.pt"
        if cache_file.is_file():
            saved = _load_cache(cache_file, path, dim)
            if saved is not None and saved.vocab == list(vocab):
                return saved.serve(vocab, path)
            if saved is not None:
                _refused(cache_file, path, "unexpected contents: another vocabulary")
        served = _from_covering_cache(cache_file, path, vocab, dim)
        if served is not None:
            return served

    result = _parse(path, vocab, dim, progress, dim_setting)
    if cache_file is not None:
        payload = {
            "vectors": result.vectors,
            "found": result.found,
            "dim": result.dim,
            "vocab": pack_strings(list(vocab)),
            "duplicates": result.row_duplicates,
            "blank_lines": result.blank_lines,
        }
        save_cache(cache_file, payload, "the vectors' cache")
    return result


@dataclass
class _Saved:
    """A cache file's contents, checked: rows aligned with its own vocabulary."""

    vocab: list[str]
    vectors: torch.Tensor  # (V, D) float32
    found: torch.Tensor  # (V,) bool
    duplicates: torch.Tensor  # (V,) int32: later lines dropped for each row's word
    dim: int
    blank_lines: int
    mapped: bool  # the tensors are mapped from the file: served as copies, never as they are

    def serve(self, vocab: Sequence[str], path: Path) -> WordVectors:
        """The rows of `vocab` (every word of it in self.vocab), as parsing the file for `vocab`
        gives them: a word's first row in either vocabulary holds its vector, a repeated word's
        later rows are zero and not found (as _parse's index keeps a word's first row)."""
        if not self.mapped and list(vocab) == self.vocab:
            dups = int(self.duplicates.sum())
            return WordVectors(
                self.vectors, self.found, self.dim, path, True, dups, self.blank_lines
            )
        mine: dict[str, int] = {}
        for i, w in enumerate(self.vocab):
            mine.setdefault(w, i)
        first: dict[str, int] = {}
        for i, w in enumerate(vocab):
            first.setdefault(w, i)
        at = torch.tensor(list(first.values()), dtype=torch.long)  # rows of `vocab`
        src = torch.tensor([mine[w] for w in first], dtype=torch.long)  # their rows here
        vectors = torch.zeros(len(vocab), self.dim)
        found = torch.zeros(len(vocab), dtype=torch.bool)
        vectors[at] = self.vectors[src]
        found[at] = self.found[src]
        dups = int(self.duplicates[src].sum())
        return WordVectors(vectors, found, self.dim, path, True, dups, self.blank_lines)


def _from_covering_cache(
    cache_file: Path, path: Path, vocab: Sequence[str], dim: int | None
) -> WordVectors | None:
    """`vocab`'s rows from a cache of the same file and dim whose vocabulary holds every word of
    it (the largest first, SUPERSETS_TRIED at most), or None. Memory-mapped: only the rows
    served are read."""
    prefix = cache_file.name[: cache_file.name.rindex("-") + 1]
    try:
        others = [
            (p.stat().st_size, p)
            for p in cache_file.parent.glob(f"{glob.escape(prefix)}*.pt")
            if p != cache_file
        ]
    except OSError:
        return None
    words = set(vocab)
    for _, other in sorted(others, reverse=True)[:SUPERSETS_TRIED]:
        saved = _load_cache(other, path, dim, mmap=True)
        if saved is not None and words.issubset(saved.vocab):
            return saved.serve(vocab, path)
    return None


def _refused(cache_file: Path, path: Path, reason: str) -> None:
    warnings.warn(
        f"{cache_file}: expected a GloVe cache written by repro, found an unreadable file "
        f"({reason}); re-reading {path}",
        stacklevel=4,
    )


def _load_cache(cache_file: Path, path: Path, dim: int | None, mmap: bool = False) -> _Saved | None:
    """The cached result, or None (with a warning) when the file is not one we wrote.

    weights_only=True: cache folders are copied between machines, and a full unpickler would
    run whatever a planted file holds (issue 14). A file that fails is re-parsed over, not an
    error: the text file is the source of truth and nothing in the cache was executed.
    """
    try:
        saved = load_cache(cache_file, mmap=mmap)
        vectors, found, d = saved["vectors"], saved["found"], int(saved["dim"])
        vocab, dups = unpack_strings(saved["vocab"]), saved["duplicates"]
        n = len(vocab)
        ok = (
            isinstance(vectors, torch.Tensor)
            and isinstance(found, torch.Tensor)
            and isinstance(dups, torch.Tensor)
            and vectors.dtype == torch.float32
            and found.dtype == torch.bool
            and dups.dtype == torch.int32
            and tuple(vectors.shape) == (n, d)
            and tuple(found.shape) == (n,)
            and tuple(dups.shape) == (n,)
            and (dim is None or d == dim)
        )
        if not ok:
            raise ValueError("unexpected contents")
        blank = int(saved["blank_lines"])
    except BAD_CACHE as e:
        _refused(cache_file, path, bad_cache_reason(e))
        return None
    return _Saved(vocab, vectors, found, dups, d, blank, mmap)


def _first_word_line(fh: Iterable[bytes], path: Path) -> tuple[int, bytes, int]:
    """(line number, line, blank lines before it) of the first non-blank line; errors if none."""
    blank = 0
    for lineno, line in enumerate(fh, start=1):
        if lineno == 1 and (kind := compressed_format(line[:4])):
            raise DataError(
                f"{path}: expected an uncompressed GloVe text file, found {kind} data; "
                f"{'gunzip' if kind == 'gzip' else 'unzip'} it first"
            )
        if line.strip():
            return lineno, line, blank
        blank += 1
    found = "an empty file" if blank == 0 else f"{blank} blank lines and no vectors"
    raise DataError(
        f"{path}: expected GloVe text (a word and its numbers per line), found {found}; "
        "re-download or re-extract the file"
    )


def _infer_dim(fields: list[bytes], path: Path, lineno: int) -> int:
    """The vector size of a first line: its trailing run of numbers (the word may have spaces)."""
    n = 0
    while n < len(fields) - 1 and _is_number(fields[-1 - n]):
        n += 1
    if n < 1:
        raise DataError(
            f"{path}:{lineno}: expected a word and its vector, found {_show(b' '.join(fields))}; "
            "is this a GloVe-format text file?"
        )
    return n


def _irregular_fields(
    line: bytes, dim: int, path: Path, lineno: int, dim_setting: str
) -> list[bytes] | None:
    """[word, v1..vD] of a line whose spaces do not count `dim`; None for a blank line.

    Trailing or doubled spaces, tabs, and words with spaces end up here (rare in GloVe files).
    """
    fields = line.split()
    if not fields:
        return None
    if len(fields) == dim + 1:
        return fields
    if len(fields) < dim + 1:
        n = len(fields) - 1
        raise DataError(
            f"{path}:{lineno}: expected a word and {dim} numbers, found {n} numbers; "
            + _what_to_do(lineno, n, dim_setting)
        )
    if _is_number(fields[-dim - 1]):
        # The field before the vector is a number: too many numbers, not a word with spaces.
        n = 1
        while n < len(fields) - 1 and _is_number(fields[-1 - n]):
            n += 1
        if n > dim:
            raise DataError(
                f"{path}:{lineno}: expected a word and {dim} numbers, found "
                f"{_show(b' '.join(fields[:-n]))} and {n} numbers; "
                + _what_to_do(lineno, n, dim_setting)
            )
        raise DataError(
            f"{path}:{lineno}: expected a word and {dim} numbers, found {len(fields) - 1} "
            f"fields after {_show(fields[0])}; fix or remove that line"
        )
    return [b" ".join(fields[:-dim]), *fields[-dim:]]


def _vector(fields: list[bytes], dim: int, path: Path, lineno: int, dim_setting: str) -> np.ndarray:
    """The numbers of a vocabulary word's line as float32 (finiteness is checked in bulk later)."""
    if len(fields) != dim + 1:  # a line with `dim` spaces but a doubled one: too few numbers
        n = len(fields) - 1
        raise DataError(
            f"{path}:{lineno}: expected a word and {dim} numbers, found {n} numbers; "
            + _what_to_do(lineno, n, dim_setting)
        )
    try:
        return np.array(fields[1:], dtype=np.float32)
    except ValueError:
        j, bad = next((j, f) for j, f in enumerate(fields[1:], 1) if not _is_number(f))
        raise DataError(
            f"{path}:{lineno}: expected {dim} numbers after {_show(fields[0])}, found "
            f"{_show(bad)} at number {j}; fix or remove that line"
        ) from None


def _open(path: Path):
    try:
        return open(path, "rb")
    except OSError as e:  # a directory is refused earlier; this is permissions and the like
        raise DataError(
            f"{path}: expected a readable GloVe text file, found {e.strerror or e}; "
            "check its permissions"
        ) from None


def _parse(
    path: Path, vocab: Sequence[str], dim: int | None, progress: bool, dim_setting: str
) -> WordVectors:
    index: dict[bytes, int] = {}
    for i, w in enumerate(vocab):
        index.setdefault(w.encode("utf-8"), i)
    size = path.stat().st_size
    bar = (
        start_byte_progress(f"reading {path.name}", size)
        if progress and size >= PROGRESS_MIN_BYTES
        else None
    )
    try:
        with _open(path) as fh, np.errstate(over="ignore"):  # 1e50 -> inf, reported below
            dim, start, lines, blank = _header(fh, path, dim, dim_setting)
            found = _scan(lines, start, index, dim, path, dim_setting, fh, bar)
    finally:
        if bar is not None:
            bar[0].update(bar[1], completed=size)
            bar[0].stop()
    vectors, mask = _assemble(found, vocab, dim, path)
    dups = torch.zeros(len(vocab), dtype=torch.int32)  # (V,)
    for i, n in found.duplicates.items():
        dups[i] = n
    n_dups = sum(found.duplicates.values())
    return WordVectors(vectors, mask, dim, path, False, n_dups, blank + found.blank, dups)


def _header(
    fh, path: Path, dim: int | None, dim_setting: str
) -> tuple[int, int, Iterable[bytes], int]:
    """(dim, number of the first vector line, the lines from there on, blank lines before it):
    a word2vec-style `<count> <dim>` first line is read and skipped; else dim is inferred."""
    start, first, blank = _first_word_line(fh, path)
    fields = first.split()
    if start == 1 and _is_header(fields):
        header_dim = int(fields[1])
        if dim is not None and header_dim != dim:
            raise DataError(
                f"{path}:1: expected {dim}-d vectors, found a header saying "
                f"{header_dim}-d; set {dim_setting} to {header_dim} or use a {dim}-d file"
            )
        return header_dim, 2, fh, blank
    return (
        (dim if dim is not None else _infer_dim(fields, path, start)),
        start,
        chain([first], fh),
        blank,
    )


@dataclass
class _Found:
    rows: dict[int, np.ndarray]  # vocabulary row -> its vector
    linenos: dict[int, int]  # vocabulary row -> the line it came from (to name a bad value)
    duplicates: dict[int, int]  # vocabulary row -> later lines of its word, dropped
    blank: int = 0


def _scan(
    lines, start: int, index: dict[bytes, int], dim: int, path: Path, dim_setting: str, fh, bar
) -> _Found:
    """The vectors of the vocabulary's words (the hot loop: kept in one function)."""
    found = _Found({}, {}, {})
    rows, linenos = found.rows, found.linenos
    for lineno, line in enumerate(lines, start=start):
        if bar is not None and lineno % _BAR_EVERY_LINES == 0:
            bar[0].update(bar[1], completed=fh.tell())
        # Fast path, nearly every line: `dim` spaces, the word before the first one.
        # Only a vocabulary word's line is split and parsed (module docstring).
        # A trailing space on every line (fastText-style .vec) stays on the fast path.
        spaces = line.count(b" ")
        if spaces == dim or (spaces == dim + 1 and line.endswith(b" \n")):
            word = line[: line.find(b" ")]
            if word not in index:
                if not word and not line.strip():
                    found.blank += 1  # `dim` spaces and nothing else
                continue
            fields = line.split()
        else:
            fields = _irregular_fields(line, dim, path, lineno, dim_setting)
            if fields is None:
                found.blank += 1  # a blank line (e.g. at the end) carries nothing
                continue
            word = fields[0]
            if word not in index:
                continue
        i = index[word]
        if i in rows:
            found.duplicates[i] = found.duplicates.get(i, 0) + 1
            continue
        rows[i] = _vector(fields, dim, path, lineno, dim_setting)
        linenos[i] = lineno
    return found


def _assemble(
    found: _Found, vocab: Sequence[str], dim: int, path: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """(vectors (V, D), found (V,)): rows in vocabulary order; a non-finite value is an error
    naming its line (checked here in one pass, not once per line)."""
    vectors = torch.zeros(len(vocab), dim)
    mask = torch.zeros(len(vocab), dtype=torch.bool)
    if not found.rows:
        return vectors, mask
    idx = torch.tensor(list(found.rows), dtype=torch.long)
    matrix = np.stack(list(found.rows.values()))  # (n found, D)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        lineno, r = min((found.linenos[int(idx[r])], r) for r in np.flatnonzero(~finite))
        j = int(np.flatnonzero(~np.isfinite(matrix[r]))[0])
        # The text as written (nan, -inf, or 1e50 beyond float32): re-read that one line.
        with open(path, "rb") as fh:
            line = next(islice(fh, lineno - 1, None))
        raise DataError(
            f"{path}:{lineno}: expected {dim} finite numbers after {vocab[int(idx[r])]!r}, "
            f"found {_show(line.split()[-dim:][j])} at number {j + 1}; "
            "fix or remove that line"
        )
    vectors[idx] = torch.from_numpy(matrix)
    mask[idx] = True
    return vectors, mask
