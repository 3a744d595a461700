"""Which split's examples each loader serves: every row of its batches matched, by content, to the
encoded items of the train, val and test splits (each item collated alone, padding trimmed)."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import torch

from repro.data.batch import is_input
from repro.data.split import SPLITS


def trimmed_lengths(x: np.ndarray) -> np.ndarray:
    """For a batch x (B, d1, d2, ...): per row, its extent along each dim once trailing zeros
    (padding) are cut, as a (B, x.ndim - 1) array. In numpy: ~4x cheaper than the same in torch
    at BiMPM's batch sizes (the data gate keys each of 20k val/test rows twice at Quora's size)."""
    nonzero = x != 0
    out = np.zeros((x.shape[0], x.ndim - 1), dtype=np.int64)
    for d in range(1, x.ndim):
        other = tuple(e for e in range(1, x.ndim) if e != d)
        along = nonzero.any(axis=other) if other else nonzero  # (B, size_d)
        if along.shape[1]:
            last = along.shape[1] - np.argmax(along[:, ::-1], axis=1)  # 1 + the last nonzero
            out[:, d - 1] = np.where(along.any(axis=1), last, 0)
    return out


def row_keys(batch: dict[str, torch.Tensor]) -> list[str]:
    """One key per row of a batch: its inputs (not the label), trimmed of padding, digested."""
    inputs = sorted(k for k in batch if is_input(k))
    n = len(batch["label"])
    parts: list[list[bytes]] = [[] for _ in range(n)]  # per row, what its sha1 reads, in order
    for k in inputs:
        x = batch[k].detach().cpu()
        xn = x.numpy()  # numpy slicing: ~20x cheaper per row than torch indexing
        head = f"{k}:{x.dtype}:"
        if x.dim() == 1:  # one value a row: its shape as a 1-element array, (1,)
            for i, row_parts in enumerate(parts):
                row = np.ascontiguousarray(xn[i])
                row_parts += (f"{head}{row.shape}:".encode(), row.tobytes())
            continue
        # each row trimmed to its extent: its shape (one header per distinct shape) and its
        # values; tobytes() is C order
        headers: dict[tuple[int, ...], bytes] = {}
        for i, (row_parts, extent) in enumerate(
            zip(parts, trimmed_lengths(xn).tolist(), strict=True)
        ):
            shape = tuple(extent)
            if (header := headers.get(shape)) is None:
                header = headers[shape] = f"{head}{shape}:".encode()
            if x.dim() == 2:
                row_parts += (header, xn[i, : shape[0]].tobytes())
            elif x.dim() == 3:
                row_parts += (header, xn[i, : shape[0], : shape[1]].tobytes())
            else:
                row_parts += (header, xn[(i, *map(slice, shape))].tobytes())
    # one sha1 over the joined parts: the same digest as one update per part, fewer calls
    return [hashlib.sha1(b"".join(p)).hexdigest() for p in parts]


def item_keys(dm, items: list[dict], chunk: int = 256) -> list[str]:
    """The keys of encoded items, collated `chunk` at a time (padding is trimmed, so a row's key
    does not depend on its batch-mates)."""
    return [
        k for i in range(0, len(items), chunk) for k in row_keys(dm.collate(items[i : i + chunk]))
    ]


@dataclass
class Served:
    """What one loader served: rows of its own split, of each other split, and of none."""

    rows: int
    own: int  # rows that are items of the loader's own split
    others: dict[str, int] = field(default_factory=dict)  # rows that are items of another split
    unmatched: int = 0
    complete: bool | None = None  # every item of its split served exactly once (eval loaders)
    split_size: int = 0
    train_compared: int = (
        0  # training items compared with (a sample: unmatched rows may be train's)
    )


def audit_loaders(dm, items: dict[str, list[dict]], train_rows: int) -> dict[str, Served]:
    """Iterate the val and test loaders to the end and the train loader for about `train_rows`
    rows; match each row to `items`: every item of val and test, a sample of train's (so `own`
    is a lower bound for the train loader)."""
    keys = {s: item_keys(dm, items[s]) for s in SPLITS}
    where = {}
    for s in reversed(SPLITS):  # a key in several splits (an overlap) is owned by the first
        where.update(dict.fromkeys(keys[s], s))
    loaders = {
        "train": dm.train_dataloader(),
        "val": dm.val_dataloader(),
        "test": dm.test_dataloader(),
    }
    out = {}
    for s, loader in loaders.items():
        if s == "train":
            batches = islice(loader, max(1, -(-train_rows // dm.cfg.batch_size)))
        else:
            batches = loader
        served = [k for b in batches for k in row_keys(b)]
        own_keys = set(keys[s])
        own = Counter(k for k in served if k in own_keys)
        elsewhere = [where.get(k) for k in served if k not in own_keys]
        result = Served(
            rows=len(served),
            own=sum(own.values()),
            others=dict(Counter(w for w in elsewhere if w is not None)),
            unmatched=sum(1 for w in elsewhere if w is None),
            split_size=len(dm.datasets[s]),
            train_compared=len(keys["train"]),
        )
        if s != "train":
            result.complete = own == Counter(keys[s])
        out[s] = result
    return out
