"""The data gate: splits non-empty and disjoint, every class everywhere, the split policy, a batch draws."""

from __future__ import annotations

from collections import Counter
from typing import Any

from repro.data.datamodule import PaperDataModule
from repro.gates.metrics import DataMetrics
from repro.verdict import Check, Verdict


# ---- judgements (pure) ----------------------------------------------------------------------
def check_nonempty(sizes: dict[str, int]) -> Check:
    empty = [s for s, n in sizes.items() if n == 0]
    desc = ", ".join(f"{s}={n}" for s, n in sizes.items())
    if empty:
        return Check(
            "splits non-empty", False, f"empty split(s) {empty} ({desc})", {"sizes": sizes}
        )
    return Check("splits non-empty", True, f"sizes {desc}", {"sizes": sizes})


def check_disjoint(hashes: dict[str, list[str]]) -> Check:
    """No example (hash of its input fields) may sit in two splits."""
    sets = {s: set(h) for s, h in hashes.items()}
    names = list(sets)
    overlaps = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            n = len(sets[a] & sets[b])
            if n:
                overlaps[f"{a}&{b}"] = n
    if overlaps:
        desc = ", ".join(f"{k}: {v}" for k, v in overlaps.items())
        return Check(
            "splits disjoint",
            False,
            f"examples shared between splits ({desc})",
            {"overlaps": overlaps},
        )
    return Check("splits disjoint", True, "0 examples shared between splits", {"overlaps": {}})


def check_classes(label_counts: dict[str, dict[int, int]], num_classes: int) -> Check:
    missing = {
        s: sorted(set(range(num_classes)) - {c for c, n in counts.items() if n > 0})
        for s, counts in label_counts.items()
    }
    missing = {s: m for s, m in missing.items() if m}
    bad = {
        s: sorted(c for c in counts if not 0 <= c < num_classes)
        for s, counts in label_counts.items()
    }
    bad = {s: b for s, b in bad.items() if b}
    if bad:
        return Check(
            "every class in every split",
            False,
            f"labels outside 0..{num_classes - 1}: {bad}",
            {"bad_labels": bad},
        )
    if missing:
        desc = "; ".join(f"{s} lacks class {m}" for s, m in missing.items())
        return Check("every class in every split", False, desc, {"missing": missing})
    return Check(
        "every class in every split", True, f"all {num_classes} classes in every split", {}
    )


def check_split_policy(
    official: bool, sizes: dict[str, int], fractions: tuple[float, ...], idempotent: bool
) -> Check:
    """Official split kept as is; otherwise the seeded 80/10/10 (fractions within 1 example per class)."""
    if official:
        return Check(
            "split policy",
            True,
            "the dataset's official train/val/test split is used",
            {"official": True},
        )
    total = sum(sizes.values())
    got = {s: sizes[s] / total for s in sizes}
    off = {
        s: round(got[s] - f, 3) for s, f in zip(("train", "val", "test"), fractions, strict=True)
    }
    ok_frac = all(abs(v) <= 0.02 for v in off.values())
    desc = "/".join(f"{100 * got[s]:.1f}" for s in ("train", "val", "test"))
    want = "/".join(f"{100 * f:g}" for f in fractions)
    if not idempotent:
        return Check(
            "split policy",
            False,
            f"splitting twice with the same seed gave different splits ({desc})",
            {"official": False, "idempotent": False},
        )
    if not ok_frac:
        return Check(
            "split policy",
            False,
            f"split {desc}% differs from the configured {want}% by {off}",
            {"official": False, "fractions": got},
        )
    return Check(
        "split policy",
        True,
        f"no official split: seeded {want} split applied ({desc}%), idempotent",
        {"official": False, "fractions": got},
    )


def check_loader_determinism(same_first_batch: bool) -> Check:
    if not same_first_batch:
        return Check(
            "loader determinism",
            False,
            "two train loaders with the same seed gave different first batches",
            {},
        )
    return Check("loader determinism", True, "same seed -> same first training batch", {})


# ---- measurement ----------------------------------------------------------------------------
def _batches_equal(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run(ctx) -> Verdict:
    """Build the datamodule twice (same seed), measure its splits, draw batches, show examples."""
    dm = ctx.build_datamodule(fresh=True)
    dm.setup("fit")
    sizes = {s: len(dm.splits[s]) for s in ("train", "val", "test")}
    hashes = {s: [dm.example_hash(ex) for ex in dm.splits[s]] for s in dm.splits}
    label_counts = {s: dict(Counter(int(ex["label"]) for ex in dm.splits[s])) for s in dm.splits}

    dm2 = ctx.build_datamodule(fresh=True)
    dm2.setup("fit")
    idempotent = all([dm2.example_hash(ex) for ex in dm2.splits[s]] == hashes[s] for s in hashes)
    first = next(iter(dm.train_dataloader()))
    same_first = _batches_equal(first, next(iter(dm2.train_dataloader())))

    checks = [
        check_nonempty(sizes),
        check_disjoint(hashes),
        check_classes(label_counts, dm.num_classes),
        check_split_policy(bool(dm.official_split), sizes, ctx.cfg.data.split, idempotent),
        check_loader_determinism(same_first),
    ]
    examples = _show(ctx.console, dm, first, ctx.cfg.stage.data.show_examples, checks[2].passed)
    metrics = DataMetrics(
        sizes=sizes,
        num_classes=dm.num_classes,
        official_split=bool(dm.official_split),
        data_files=[str(p) for p in dm.data_files()],
    )
    evidence: dict[str, Any] = {
        "label_counts": {
            s: {str(k): v for k, v in sorted(c.items())} for s, c in label_counts.items()
        },
        "batch_shapes": {k: list(v.shape) for k, v in first.items()},
        "examples": examples,
        "stats": dm.stats(),
    }
    return Verdict.from_checks("data", checks, evidence, metrics)


def _show(console, dm, batch: dict, n: int, labels_ok: bool) -> list[str]:
    """Print (and return) n decoded examples and the data statistics. Decoding needs labels in
    range: with bad labels the examples are shown as raw tensors (the verdict names the labels)."""
    n = min(n, len(batch["label"]))
    decode = dm.decode if labels_ok else PaperDataModule.decode.__get__(dm)
    examples = [decode(batch, i) for i in range(n)]
    console.print(
        "[bold]Examples just before the net[/bold] (decoded from the first training batch):"
    )
    for e in examples:
        console.print(f"  {e}", markup=False, highlight=False)
    stats = dm.stats()
    if stats:
        console.print("[bold]Data statistics[/bold]: ", end="")
        console.print(
            ", ".join(f"{k}={v}" for k, v in stats.items()), markup=False, highlight=False
        )
    return examples
