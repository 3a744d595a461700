"""Digests of a built datamodule (its splits, what build() fitted, its encoded items, its first
batch), so that two builds made in different ways or in different processes can be compared."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import torch

from repro.data.rebuild import items_at
from repro.data.split import SPLITS, sample_indices
from repro.data.split import example_hashes as split_hashes


def value_digest(value: Any) -> str:
    """sha1 of a tensor (dtype, shape, bytes) or of any other value's JSON (tensors inside
    lists and dicts included), so equal values give equal digests."""
    h = hashlib.sha1()
    _feed(h, value)
    return h.hexdigest()


def _feed(h, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"tensor:{t.dtype}:{tuple(t.shape)}:".encode())
        # the array's buffer itself: a copy of BiMPM's 180 MB word vectors cost as much as its sha1
        h.update((t if t.dtype != torch.bfloat16 else t.float()).numpy().data)
    elif isinstance(value, dict):
        h.update(b"{")
        for k in sorted(value, key=str):
            h.update(json.dumps(str(k)).encode())
            _feed(h, value[k])
        h.update(b"}")
    elif isinstance(value, list | tuple):
        h.update(b"[")
        for v in value:
            _feed(h, v)
        h.update(b"]")
    elif type(value).__module__ == "numpy":
        _feed(h, torch.as_tensor(value))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        _feed(h, dataclasses.asdict(value))
    else:
        h.update(json.dumps(value, default=_plain).encode())


def _plain(value: Any) -> str:
    """A JSON stand-in for other objects: their repr, unless it holds a memory address (which
    differs in every build), then their type alone."""
    text = repr(value)
    return type(value).__qualname__ if " at 0x" in text else text


def sample_items(dm, max_items: int) -> dict[str, list[dict]]:
    """Per split, the encoded items at sample_indices(len(split), max_items), fetched once."""
    out = {}
    for s in SPLITS:
        ds = dm.datasets[s]
        out[s] = items_at(ds, sample_indices(len(ds), max_items))
    return out


def hashes_digest(hashes: list[str]) -> str:
    """One digest of a list of example hashes (order included): one pass of sha1 over their
    text, where value_digest would JSON-encode each of 400k strings (issue 21)."""
    return hashlib.sha1("\n".join(hashes).encode()).hexdigest()


def example_hashes(dm) -> dict[str, list[str]]:
    """Every example's hash (repro.data.split.example_hash), per split: computed once a build,
    a split at a time where the paper keeps the default example_hash and names its input fields."""
    from repro.data.datamodule import PaperDataModule

    if dm.input_fields and type(dm).example_hash is PaperDataModule.example_hash:
        return {s: split_hashes(dm.splits[s], dm.input_fields) for s in SPLITS}
    return {s: [dm.example_hash(ex) for ex in dm.splits[s]] for s in SPLITS}


def build_digest(
    dm, items: dict[str, list[dict]], hashes: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """What a set-up datamodule is made of, as digests: per split the examples (which and in what
    order) and the sampled encoded items (`sample_items`: the cost stays bounded); what build()
    fitted (model_kwargs, one digest per key); the first training batch. Two builds that should be
    the same compare equal key by key. `hashes`: example_hashes(dm) when the caller has them."""
    hashes = example_hashes(dm) if hashes is None else hashes
    return {
        "examples": {s: hashes_digest(hashes[s]) for s in SPLITS},
        "items": {s: value_digest([value_digest(it) for it in items[s]]) for s in SPLITS},
        "model_kwargs": {k: value_digest(v) for k, v in dm.model_kwargs().items()},
        "first_batch": value_digest(next(iter(dm.train_dataloader()), None)),
    }


def encoded_differ(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two build digests differ in what encoding made (sampled items, first batch)."""
    return a.get("items") != b.get("items") or a.get("first_batch") != b.get("first_batch")


def digest_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The parts in which two build digests differ, named as `examples/val`, `model_kwargs/vocab_size`,
    `first_batch` (empty when they are the same)."""
    diffs = []
    for part in ("examples", "items", "model_kwargs"):
        mine, theirs = a.get(part, {}), b.get(part, {})
        for k in [*mine, *(k for k in theirs if k not in mine)]:  # splits in train/val/test order
            if mine.get(k) != theirs.get(k):
                diffs.append(f"{part}/{k}")
    if a.get("first_batch") != b.get("first_batch"):
        diffs.append("first_batch")
    return diffs
