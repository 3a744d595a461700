"""The data gate's comparison builds made cheaply: items encoded when first read, and the examples
one build parsed handed to another instead of reading and tokenizing the files again.

The gate compares builds through a bounded sample of encoded items, the first training batch and
model_kwargs (repro/data/digest.py), so a comparison build need not encode every example: at
Quora's size encoding the whole of every split was a fifth of each rebuild (issue 21). Encoding
one example at a time is the same as encoding the split whole when encode_split treats examples
one by one (PaperDataModule's default, BiMPM's); one that uses the whole split (statistics per
split) gives other items, so wherever a lazily encoded build differs from the one it is compared
with, the caller encodes it whole (`encode_whole`) and compares again: only that comparison counts.
"""

from __future__ import annotations

import ctypes
import gc
import weakref
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from repro.data.split import sample_splits

Encoder = Callable[[str, list[dict]], Dataset]


class LazySplit(Dataset):
    """One split's examples, each encoded by the datamodule's own encode_split when first read."""

    def __init__(self, encode_split: Encoder, name: str, examples: list[dict]):
        self.encode_split, self.name, self.examples = encode_split, name, examples
        self._items: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Any:
        if i not in self._items:
            self._items[i] = self.encode_split(self.name, [self.examples[i]])[0]
        return self._items[i]

    def fetch(self, indices: list[int]) -> list[Any]:
        """The items at `indices`, those not read before encoded by one encode_split call: the
        same items as one call each where examples are encoded one by one (the premise above),
        at a fraction of the cost (a call per item was ~0.2 ms of BiMPM's, tensors made for one
        example; 4000 items per data gate, issue 21)."""
        todo = [i for i in dict.fromkeys(indices) if i not in self._items]
        if todo:
            encoded = self.encode_split(self.name, [self.examples[i] for i in todo])
            self._items.update((i, encoded[n]) for n, i in enumerate(todo))
        return [self._items[i] for i in indices]


def items_at(ds: Dataset, indices: list[int]) -> list[Any]:
    """ds[i] for each of `indices`; a LazySplit's not yet encoded ones in one call."""
    return ds.fetch(indices) if isinstance(ds, LazySplit) else [ds[i] for i in indices]


def encode_lazily(dm) -> Encoder:
    """Make dm's setup() give LazySplit datasets; returns its real encode_split (for
    `encode_whole`)."""
    real = dm.encode_split
    dm.encode_split = lambda name, examples: LazySplit(real, name, examples)
    return real


def encode_whole(dm, real: Encoder) -> None:
    """Encode every split dm has set up with its real encode_split, as setup() would have."""
    dm.encode_split = real
    dm.datasets = {s: real(s, dm.splits[s]) for s in dm.datasets}


def release(dm) -> None:
    """Undo the patches above and drop dm's encoded splits: the references they make from dm to
    itself (dm -> its datasets -> their encode_split -> dm) would keep a dropped build alive
    until a cyclic collection, one that walks every container of the process."""
    for name in ("encode_split", "_load_and_split"):
        dm.__dict__.pop(name, None)
    dm.datasets = {}


def keep_parsed(dm, k: int, splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, Any]:
    """Make dm's loading keep a sample of what it parsed (before build() runs): the returned dict
    is filled with `official_split`, each split's size (`of`) and shallow copies of at most k
    examples of each of `splits` (split.sample_splits: seeded, in order; a build() that
    reassigns an example's fields in place then changes dm's copy only). Only the sample is
    copied: the comparison builds start from it, and a copy of every example was ~100 MB held
    through the first build at Quora's size (issue 21)."""
    kept: dict[str, Any] = {}
    load = dm._load_and_split

    def load_and_keep() -> None:
        load()
        kept["official_split"] = dm.official_split
        kept["of"] = {s: len(dm.splits[s]) for s in splits}
        sample = sample_splits({s: dm.splits[s] for s in splits}, k)
        kept["splits"] = {s: [dict(ex) for ex in exs] for s, exs in sample.items()}

    dm._load_and_split = load_and_keep
    return kept


def reuse_parsed(dm, kept: dict[str, Any]) -> None:
    """Make dm's loading take the examples `keep_parsed` kept from another build of the same
    data and config (the same files, the same split; or a sample of them), not read and tokenize
    the files again: shallow copies, as more than one build may start from them."""

    def load() -> None:
        dm.official_split = kept["official_split"]
        dm.splits = {s: [dict(ex) for ex in v] for s, v in kept["splits"].items()}

    dm._load_and_split = load


def collect_if_alive(build: weakref.ref) -> None:
    """One cyclic collection where a dropped build is still alive (a reference cycle holds it),
    none where reference counting freed it already: each collection walks every container of
    the process, also when it finds nothing (0.4-0.5 s of the data gate at 100k pairs, 1.2 s at
    400k, where BiMPM's released build is freed without one)."""
    if build() is not None:
        gc.collect()


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc (Linux); absent on macOS, musl, Windows
    except (AttributeError, OSError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def return_freed_memory() -> bool:
    """Hand the heap memory that dropped builds freed back to the system (glibc's malloc_trim),
    where the allocator would keep it for this process's later use: the data gate's fresh process
    builds while this one waits, and at 100k pairs ~100 MB kept here was on top of its peak
    (issue 21). False where the C library has no malloc_trim (nothing to do there)."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


def free_dropped(build: weakref.ref) -> None:
    """A build the data gate dropped, gone: collected where a cycle keeps it (collect_if_alive),
    and the memory it freed handed back (return_freed_memory), as the fresh process will build
    beside this one while it waits."""
    collect_if_alive(build)
    return_freed_memory()
