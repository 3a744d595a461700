"""Inputs that are a function of the label on the training data: a column of the encoded batch (a
feature, a token position) constant within each class and not the same for all, or a token id
present in every example of some classes and in none of the others.

A real input that predicts the label well still varies inside a class on a few dozen examples; a
label copied into the inputs does not. Noisy copies (label plus noise), labels spread over several
inputs (only a combination decides) and leaks in val/test only are not seen here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from repro.data.batch import is_input


@dataclass
class LabelFunction:
    """An input that is a function of the label: where it is and its value (or presence) per class."""

    key: str
    where: str  # "column 3 (index (3,))" or "token id 17"
    per_class: dict[int, str]  # class -> the column's value, or "present"/"absent"


def _column_index(shape: tuple[int, ...], j: int) -> tuple[int, ...]:
    out = []
    for d in reversed(shape):
        out.append(j % d)
        j //= d
    return tuple(reversed(out))


def constant_columns(x: torch.Tensor, y: torch.Tensor) -> list[int]:
    """Columns of x (n, F) that are constant within every class of y (n,) and differ between classes."""
    classes = y.unique().tolist()
    same = torch.ones(x.shape[1], dtype=torch.bool)
    values = []
    for c in classes:
        xc = x[y == c]  # (n_c, F)
        same &= (xc == xc[0]).all(0)
        values.append(xc[0])
    values = torch.stack(values)  # (C, F)
    differ = (values != values[0]).any(0)
    return (same & differ).nonzero().flatten().tolist()


def present_tokens(ids: torch.Tensor, y: torch.Tensor) -> dict[int, dict[int, bool]]:
    """Token ids (not padding 0) of ids (n, L) present in every example of some classes and in no
    example of the others: {id: {class: present}}."""
    classes = y.unique().tolist()
    every: dict[int, set[int]] = {}
    some: dict[int, set[int]] = {}
    for c in classes:
        rows = [set(r.tolist()) - {0} for r in ids[y == c]]
        every[c] = set.intersection(*rows) if rows else set()
        some[c] = set.union(*rows) if rows else set()
    candidates = set.union(*every.values()) if every else set()
    out = {}
    for t in sorted(candidates):
        if all(t in every[c] or t not in some[c] for c in classes):
            absent = [c for c in classes if t not in some[c]]
            if absent:
                out[t] = {c: t in every[c] for c in classes}
    return out


def label_functions(batch: dict[str, torch.Tensor], limit: int = 5) -> list[LabelFunction]:
    """Up to `limit` inputs of a collated training batch that are a function of its labels."""
    y = batch["label"]
    found: list[LabelFunction] = []
    for key in sorted(k for k in batch if is_input(k)):
        x = batch[key]
        flat = x.reshape(len(y), -1)  # (n, F)
        for j in constant_columns(flat, y)[:limit]:
            idx = _column_index(tuple(x.shape[1:]), j)
            per_class = {int(c): _fmt(flat[y == c][0, j]) for c in y.unique()}
            found.append(LabelFunction(key, f"column {j} (index {idx})", per_class))
        if not x.dtype.is_floating_point and x.dim() > 1:
            for t, per in list(present_tokens(flat, y).items())[:limit]:
                found.append(
                    LabelFunction(
                        key,
                        f"token id {t}",
                        {c: "present" if p else "absent" for c, p in per.items()},
                    )
                )
    return found[:limit]


def _fmt(v: torch.Tensor) -> str:
    value = v.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)
