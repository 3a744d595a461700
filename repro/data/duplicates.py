"""Near-duplicate examples across splits, which exact hashes miss.

Text inputs (strings, lists of tokens, integer ids): two examples are near-duplicates when their
input fields are equal after lower-casing, dropping punctuation and collapsing whitespace.
Numeric inputs (floats of a fixed size): a held-out example is a near copy when its nearest
training example is closer than `ratio` times the median nearest-neighbour distance between
training examples. Training examples are that close to each other at some rate too; only the
excess over that rate counts (the rate at which held-out examples are near copies, less the rate at
which training examples are near copies of other training examples).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from repro.data.digest import sample_indices

_PUNCTUATION = re.compile(r"[^\w\s]|_")  # punctuation and symbols, in any script


@dataclass
class NearDuplicates:
    method: str  # "normalised text" | "nearest neighbour" | "" (not measured)
    counts: dict[str, int] = field(default_factory=dict)  # "train&test" -> held-out examples
    rates: dict[str, float] = field(default_factory=dict)  # that count / held-out examples measured
    expected: dict[str, float] = field(default_factory=dict)  # chance rate (nearest neighbour)
    tail_p: dict[str, float] = field(default_factory=dict)  # P(count this high by chance)
    pair: tuple[str, str] | None = None  # one near-duplicate pair, as text
    note: str = ""


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return value.reshape(-1).tolist()
    if type(value).__module__ == "numpy":
        return list(value.reshape(-1).tolist()) if hasattr(value, "reshape") else [value.item()]
    if isinstance(value, list | tuple):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def input_kind(example: dict, fields: tuple[str, ...]) -> str:
    """ "text" (strings, ints, bools), "numbers" (any float among them) or "other"."""
    leaves = [leaf for f in fields for leaf in _leaves(example[f])]
    if all(isinstance(v, str | int | bool) for v in leaves):
        return "text"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in leaves):
        return "numbers"
    return "other"


# ASCII text (nearly all of Quora, SNLI) goes through one byte table that lower-cases and blanks
# what _PUNCTUATION matches: the same result, ~2x cheaper than lower() and the regex (808k
# questions at Quora's size, issue 21).
_ASCII_TABLE = bytes(
    c | 0x20 if chr(c).isupper() else c if chr(c).isalnum() or chr(c).isspace() else 0x20
    for c in range(128)
) + bytes(range(128, 256))


def normalise(value: Any) -> str:
    """Lower-cased, punctuation and symbols dropped, whitespace collapsed; token lists joined."""
    if type(value) is str:
        text = value
    else:
        try:
            text = " ".join(value)  # a list of tokens: no walk over its leaves
        except TypeError:
            text = " ".join(str(v) for v in _leaves(value))
    if text.isascii():
        text = text.encode("ascii").translate(_ASCII_TABLE).decode("ascii")
    else:
        text = _PUNCTUATION.sub(" ", text.lower())
    return " ".join(text.split())


def normalise_all(values: list[Any]) -> list[str]:
    """[normalise(v) for v in values], a split's field at once where it is ASCII text (strings or
    lists of string tokens, no newline inside): joined by newlines, translated in one call and
    split again, which gives each value's normalise() (the table maps a newline to itself and
    acts per character). Otherwise one normalise() per value."""
    try:
        texts = [v if type(v) is str else " ".join(v) for v in values]
    except TypeError:  # a list holding something other than strings, or another kind of value
        return [normalise(v) for v in values]
    whole = "\n".join(texts)
    if not whole.isascii() or whole.count("\n") != max(0, len(texts) - 1):
        return [normalise(v) for v in values]
    lines = whole.encode("ascii").translate(_ASCII_TABLE).decode("ascii").split("\n")
    return [" ".join(line.split()) for line in lines] if texts else []


def _show(example: dict, fields: tuple[str, ...]) -> str:
    """An example's input fields, short: text as text, numbers as their first four (3 digits)."""
    parts = []
    for f in fields:
        leaves = _leaves(example[f])
        if leaves and all(isinstance(v, float) for v in leaves):
            head = ", ".join(f"{v:.3g}" for v in leaves[:4])
            text = f"[{head}{', ...' if len(leaves) > 4 else ''}]"
        else:
            text = " ".join(map(str, leaves))
            text = text if len(text) <= 80 else text[:77] + "..."
        parts.append(f"{f}: {text}")
    return " | ".join(parts)


def text_near_duplicates(
    splits: dict[str, list[dict]], fields: tuple[str, ...], exact: dict[str, list[str]]
) -> NearDuplicates:
    """Held-out examples whose normalised inputs equal those of an example of an earlier split
    (train for val and test, val for test), exact duplicates left out (counted elsewhere).

    The training split's normalised inputs are kept as Python hashes (first index per hash), not
    as text: at Quora's size the text took ~100 MB. A hit is confirmed on the text itself, so a
    hash collision can only hide a near-duplicate (odds ~n^2/2^64), never invent one."""

    def key(ex: dict) -> tuple[str, ...]:
        return tuple(normalise(ex[f]) for f in fields)

    def keys(examples: list[dict]) -> list[tuple[str, ...]]:  # key() of each, a field at a time
        return list(zip(*(normalise_all([ex[f] for ex in examples]) for f in fields), strict=True))

    held = {s: keys(splits[s]) for s in ("val", "test")}
    first_train: dict[int, int] = {}
    for i, k in enumerate(keys(splits["train"])):
        first_train.setdefault(hash(k), i)
    out = NearDuplicates("normalised text")
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        if a == "train":
            first = first_train
        else:
            first = {}
            for i, k in enumerate(held[a]):
                first.setdefault(hash(k), i)
        exact_a = set(exact[a])
        hits = []
        for j, k in enumerate(held[b]):
            i = first.get(hash(k))
            if i is None or exact[b][j] in exact_a:
                continue
            if (key(splits[a][i]) if a == "train" else held[a][i]) == k:
                hits.append((i, j))
        out.counts[f"{a}&{b}"] = len(hits)
        out.rates[f"{a}&{b}"] = len(hits) / max(1, len(held[b]))
        if hits and out.pair is None:
            i, j = hits[0]
            out.pair = (
                f"{a}: {_show(splits[a][i], fields)}",
                f"{b}: {_show(splits[b][j], fields)}",
            )
    return out


def _vectors(examples: list[dict], fields: tuple[str, ...]) -> torch.Tensor | None:
    rows = [[float(v) for f in fields for v in _leaves(ex[f])] for ex in examples]
    if len({len(r) for r in rows}) > 1:
        return None
    return torch.tensor(rows, dtype=torch.float64)  # (n, D)


def _nearest(
    queries: torch.Tensor, refs: torch.Tensor, skip_self: list[int] | None
) -> torch.Tensor:
    """Distance from each query row to its nearest ref row (skipping ref skip_self[i] for row i)."""
    out = []
    for start in range(0, len(queries), 512):
        d = torch.cdist(queries[start : start + 512], refs)  # (q, n_ref)
        if skip_self is not None:
            rows = torch.arange(d.shape[0])
            d[rows, torch.tensor(skip_self[start : start + 512])] = float("inf")
        out.append(d.amin(1))
    return torch.cat(out) if out else torch.zeros(0)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    total = 0.0
    for i in range(k, n + 1):
        log_pmf = (
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * math.log(p)
            + (n - i) * math.log1p(-p)
        )
        total += math.exp(log_pmf)
    return min(1.0, total)


def neighbour_near_duplicates(
    splits: dict[str, list[dict]], fields: tuple[str, ...], ratio: float, max_examples: int
) -> NearDuplicates:
    """Held-out examples (up to max_examples per split) closer to a training example than ratio ×
    the median train-to-train nearest-neighbour distance, against the rate among training examples."""
    train = _vectors(splits["train"], fields)
    if train is None or len(train) < 2:
        return NearDuplicates("", note="numeric inputs of varying size: no distances")
    own = sample_indices(len(train), max_examples)
    d_train = _nearest(train[own], train, own)  # leave-one-out within train
    nonzero = d_train[d_train > 0]
    if not len(nonzero):
        return NearDuplicates("", note="training examples all identical: no distances")
    radius = ratio * float(nonzero.median())
    expected = float(((d_train > 0) & (d_train < radius)).double().mean())
    out = NearDuplicates("nearest neighbour", expected={})
    for b in ("val", "test"):
        held = _vectors(splits[b], fields)
        if held is None or not len(held) or held.shape[1] != train.shape[1]:
            continue
        idx = sample_indices(len(held), max_examples)
        d = _nearest(held[idx], train, None)
        close = ((d > 0) & (d < radius)).nonzero().flatten().tolist()
        key = f"train&{b}"
        out.counts[key] = len(close)
        out.rates[key] = len(close) / len(idx)
        out.expected[key] = expected
        out.tail_p[key] = binomial_tail(len(close), len(idx), expected)
        if close and out.pair is None:
            j = idx[close[0]]
            i = int(torch.cdist(held[j : j + 1], train).argmin())
            out.pair = (
                f"train #{i}: {_show(splits['train'][i], fields)}",
                f"{b} #{j}: {_show(splits[b][j], fields)} (distance {float(d[close[0]]):.3g} vs "
                f"median neighbour {float(nonzero.median()):.3g})",
            )
    return out
