"""The shapes gate's check that the built model still holds the word vectors the data loaded
(issue 22: vectors re-initialised after loading, and still frozen, passed every gate).

The datamodule names the rows it loaded from a file (PaperDataModule.loaded_vectors: GloVe rows
found); right after build_model (and repro's init), before any forward or step, every
nn.Embedding with rows of that width is compared with them on a sample of those rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from repro.gates.shapes.judge import roundoff_tol
from repro.verdict import Check

NAME = "embedding holds the loaded vectors"
SAMPLE_ROWS = 1000  # rows compared: a re-initialisation changes nearly every row, so a sample tells


def measure_loaded_vectors(
    model: nn.Module, ids: torch.Tensor, vectors: torch.Tensor
) -> list[dict[str, Any]]:
    """For each nn.Embedding whose rows are as wide as `vectors` (n, D) and that has the rows
    `ids` (n,): how many of (a sample of) those rows differ from the loaded ones, and by how much."""
    step = max(1, len(ids) // SAMPLE_ROWS)
    ids, vectors = ids[::step][:SAMPLE_ROWS], vectors[::step][:SAMPLE_ROWS]
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Embedding) or module.embedding_dim != vectors.shape[1]:
            continue
        if len(ids) and int(ids.max()) >= module.num_embeddings:
            continue
        w = module.weight.detach()
        rows = w[ids].double()  # (n, D)
        diff = (rows - vectors.double()).abs().amax(1)  # (n,)
        scale = float(vectors.abs().max()) if len(vectors) else 0.0
        out.append(
            {
                "module": name,
                "dtype": str(w.dtype).removeprefix("torch."),
                "rows": len(ids),
                "max_diff": float(diff.max()) if len(diff) else 0.0,
                "diffs": diff.tolist(),
                "scale": scale,
            }
        )
    return out


def check_loaded_vectors(
    found: list[dict[str, Any]] | None, n_loaded: int, eps: float, why_not: str = ""
) -> Check:
    """Some embedding of the model equals the loaded rows to rounding; else FAIL naming them."""
    if found is None:
        return Check.not_measured(NAME, why_not)
    if not found:
        return Check.not_measured(
            NAME, "the model has no nn.Embedding with rows as wide as the loaded vectors"
        )
    judged = []
    for f in found:
        tol = roundoff_tol(f["dtype"], f["scale"], eps)
        differ = sum(d > tol for d in f["diffs"])
        judged.append({k: v for k, v in f.items() if k != "diffs"} | {"differ": differ, "tol": tol})
    ev = {"loaded": n_loaded, "embeddings": judged}
    holds = [j for j in judged if j["differ"] == 0]
    if holds:
        j = holds[0]
        return Check(
            NAME,
            True,
            f"{j['module']} holds the loaded vectors ({j['rows']} of {n_loaded} loaded rows "
            f"compared, max |diff| {j['max_diff']:.2g})",
            ev,
        )
    desc = "; ".join(
        f"{j['module']}: {j['differ']} of {j['rows']} rows differ (max |diff| {j['max_diff']:.3g})"
        for j in judged
    )
    return Check(
        NAME,
        False,
        f"no embedding holds the {n_loaded} loaded vectors ({desc}): they were replaced after "
        "loading (an init applied to the embedding, or a new nn.Embedding); copy the vectors in "
        "after initialising, or leave the embedding out of the init",
        ev,
    )


def loaded_vectors_check(dm, model: nn.Module, eps: float) -> Check:
    """The check on a built model, from what the datamodule says it loaded."""
    loaded = dm.loaded_vectors()
    if loaded is None:
        return check_loaded_vectors(None, 0, eps, "the datamodule loaded no vectors from a file")
    ids, vectors = loaded
    return check_loaded_vectors(measure_loaded_vectors(model, ids, vectors), len(ids), eps)
