"""The data gate's checks on what a datamodule kept, padded, looked up and shuffled (issue 22).

Each reads an optional piece of the datamodule contract (repro/data/datamodule.py: read_counts,
padded_inputs, vocabulary + raw_tokens, the train loader) and is not measured without it. They
catch what passed every gate before: a train split silently cut to 10%, unknown words mapped to
the pad id (the OOV rate read from ids said 0), a train split sorted by label and not shuffled.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from repro.config.schema import DataSizes
from repro.data.digest import sample_indices
from repro.data.split import SPLITS
from repro.data.text import PAD_ID, UNK_ID  # repro's convention for integer inputs
from repro.verdict import Check

TOKEN_IDS = "tokens encoded as their ids"


# ---- judgements (pure) ----------------------------------------------------------------------
def check_read_counts(counts: dict[str, dict[str, Any]] | None, sizes: dict[str, int]) -> Check:
    """Per split: examples kept + records skipped (by reason) = records read."""
    name = "examples + skipped = read"
    if counts is None:
        return Check.not_measured(name, "the datamodule reports no read_counts()")
    kept = dict(sizes) if set(counts) != {"all"} else {"all": sum(sizes.values())}
    ev: dict[str, Any] = {"counts": counts, "kept": kept}
    if set(counts) != set(kept):
        return Check(
            name,
            False,
            f"read_counts() names {sorted(counts)}, the splits are {sorted(kept)}: report one "
            "entry per split (or 'all' when repro splits the examples)",
            ev,
        )
    rows, lost = [], []
    for s, c in counts.items():
        skipped = sum(c["skipped"].values())
        rows.append(f"{s} {c['read']} read = {kept[s]} + {skipped} skipped")
        if kept[s] + skipped != c["read"]:
            lost.append(f"{s}: {kept[s]} examples + {skipped} skipped != {c['read']} read")
    reasons = _skip_reasons(counts)
    if lost:
        return Check(
            name,
            False,
            f"{'; '.join(lost)} (skipped: {reasons}): examples were dropped (or added) without a "
            "reason between reading and the split, e.g. a slice or a filter; count what is left "
            "out as skipped with its reason, or keep it",
            ev,
        )
    return Check(name, True, f"{', '.join(rows)} (skipped: {reasons})", ev)


def _skip_reasons(counts: dict[str, dict[str, Any]]) -> str:
    total: Counter[str] = Counter()
    for c in counts.values():
        total.update({k: int(v) for k, v in c["skipped"].items()})
    return ", ".join(f"{k} {v}" for k, v in total.items() if v) or "none"


def check_expected_sizes(
    sizes: dict[str, int], stated: DataSizes | None, dataset: str | None
) -> Check:
    """The splits have the sizes paper.data_sizes states for this dataset (the paper's, or a
    sample's own: its `where` says which)."""
    name = "split sizes as stated"
    if stated is None:
        return Check.not_measured(
            name, f"paper.data_sizes states none for dataset {dataset!r} (data.dataset)"
        )
    want = {s: getattr(stated, s) for s in SPLITS if getattr(stated, s) is not None}
    ev = {"sizes": sizes, "stated": want, "where": stated.where}
    off = {s: (sizes[s], n) for s, n in want.items() if sizes[s] != n}
    where = f" ({stated.where})" if stated.where else ""
    if off:
        desc = ", ".join(
            f"{s} has {got}, paper.data_sizes states {n}" for s, (got, n) in off.items()
        )
        return Check(
            name,
            False,
            f"{desc}{where}: a split cut, filtered or read from other files (data.limit? an "
            "older release?)",
            ev,
        )
    desc = ", ".join(f"{s} {n}" for s, n in want.items())
    return Check(name, True, f"{desc} as stated{where}", ev)


def check_padding(problems: list[str] | None, rows: int, why_not: str = "") -> Check:
    """Pad ids only at the padded end of each row of the declared padded inputs."""
    name = "padding at the end of rows"
    if problems is None:
        return Check.not_measured(name, why_not)
    ev = {"rows": rows, "problems": problems[:10], "count": len(problems)}
    if problems:
        return Check(
            name,
            False,
            f"{len(problems)} of {rows} rows hold the pad id (0) inside the row, e.g. "
            f"{problems[0]}: a token encoded as padding (unknown words looked up with default "
            "0?) or padding on the other side than padded_inputs says",
            ev,
        )
    return Check(name, True, f"{rows} padded rows: pad id 0 only at their end", ev)


def check_oov_from_tokens(rates: dict[str, float] | None, limit: float, why_not: str = "") -> Check:
    """Tokens missing from the vocabulary, counted from the tokens (not from the ids)."""
    name = "OOV rate"
    if rates is None:
        return Check.not_measured(name, why_not)
    desc = ", ".join(f"{s} {v:.3g}" for s, v in rates.items())
    ev = {"values": rates, "limit": limit, "counted_from": "tokens"}
    over = {s: v for s, v in rates.items() if v > limit}
    if over:
        worst = max(over, key=over.get)
        return Check(
            name,
            False,
            f"{over[worst]:.3g} of {worst}'s tokens are not in the vocabulary > {limit:g} "
            f"({desc}; counted from the tokens): a case or tokenizer mismatch between building "
            "the vocabulary and looking tokens up; use the same tokenization for both",
            ev,
        )
    return Check(name, True, f"oov_rate {desc} (max {limit:g}; counted from the tokens)", ev)


def check_token_ids(found: dict[str, Any] | None, why_not: str = "") -> Check:
    """Each token is encoded as its vocabulary id (unknown ones as 1), none as the pad id."""
    name = TOKEN_IDS
    if found is None:
        return Check.not_measured(name, why_not)
    ev = {k: v for k, v in found.items() if k != "examples"} | {"examples": found["examples"][:5]}
    n, pad, wrong = found["tokens"], found["as_pad"], found["wrong"]
    if pad or wrong:
        what = []
        if pad:
            what.append(f"{pad} tokens encoded as the pad id 0")
        if wrong:
            what.append(f"{wrong} tokens as another id than the vocabulary's")
        return Check(
            name,
            False,
            f"{' and '.join(what)} of {n} compared, e.g. {found['examples'][0]}: unknown words "
            "must map to the unknown id 1 (a lookup with default 0 hides them as padding, and "
            "the OOV rate read from ids says 0)",
            ev,
        )
    return Check(name, True, f"{n} tokens encoded as their vocabulary ids, none as the pad id", ev)


def check_shuffled(
    served: list[int] | None,
    split_counts: dict[int, int],
    chance_p: float,
    runs_p: float | None,
    why_not: str = "",
) -> Check:
    """The train loader's first examples are not one label (or few label runs) where a shuffled
    loader would mix the labels: p-values under a random order below chance_p fail."""
    name = "train loader shuffled"
    if served is None:
        return Check.not_measured(name, why_not)
    first = Counter(served)
    ev = {"first": len(served), "first_labels": dict(first), "split_labels": split_counts}
    if len(split_counts) < 2:
        return Check.not_measured(name, f"the training split has one label {split_counts}", ev)
    p_one = _p_one_label(len(served), split_counts) if len(first) == 1 else None
    ev |= {"p_one_label": p_one, "p_few_runs": runs_p}
    if p_one is not None and p_one < chance_p:
        (label,) = first
        return Check(
            name,
            False,
            f"the first {len(served)} training examples served all have label {label} while the "
            f"split has {dict(sorted(split_counts.items()))} (chance under shuffling "
            f"{_p(p_one)} < {chance_p:g}): the train loader is not shuffled (sorted by label?)",
            ev,
        )
    if runs_p is not None and runs_p < chance_p:
        return Check(
            name,
            False,
            f"the first {len(served)} training examples served come in "
            f"{_runs(served)} runs of one label (fewer in a random order with chance "
            f"{runs_p:.2g} < {chance_p:g}): the train loader is not shuffled (sorted by label?)",
            ev,
        )
    return Check(
        name,
        True,
        f"the first {len(served)} training examples served hold labels "
        f"{dict(sorted(first.items()))} in {_runs(served)} runs, as a shuffled loader would",
        ev,
    )


def _p(p: float) -> str:
    return f"{p:.2g}" if p > 0 else "< 1e-300"  # a product of n factors below 1 underflows


def _p_one_label(n: int, counts: dict[int, int]) -> float:
    """Chance that the first n of a random order of the split are all of one label."""
    total = sum(counts.values())
    p = 0.0
    for c in counts.values():
        q = 1.0
        for i in range(n):
            q *= max(c - i, 0) / (total - i)
            if q == 0.0:
                break
        p += q
    return p


def _runs(labels: list[int]) -> int:
    return 1 + sum(a != b for a, b in zip(labels, labels[1:], strict=False))


def runs_p_value(labels: list[int], chance_p: float, seed: int = 0) -> float | None:
    """Chance that a random order of these labels has as few runs of one label (a permutation
    test with enough draws to go below chance_p); None with a single label."""
    if len(set(labels)) < 2:
        return None
    draws = int(2 / chance_p)
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)
    order = torch.argsort(torch.rand(draws, len(y), generator=g), dim=1)  # (draws, n)
    perm = y[order]
    runs = 1 + (perm[:, 1:] != perm[:, :-1]).sum(1)  # (draws,)
    return float(((runs <= _runs(labels)).sum() + 1) / (draws + 1))


# ---- measurement ----------------------------------------------------------------------------
def content_checks(dm, items: dict[str, list[dict]], st, data_sizes, options) -> list[Check]:
    """The checks above on a set-up datamodule; `items`: per split, the encoded items at
    sample_indices (the gate's sample); `options`: the paper's data keys (data.dataset)."""
    dataset = options.get("dataset")
    sizes = {s: len(dm.splits[s]) for s in SPLITS}
    stated = next((d for d in data_sizes if d.dataset in (None, dataset)), None)
    checks = [
        check_read_counts(dm.read_counts(), sizes),
        check_expected_sizes(sizes, stated, dataset),
    ]
    checks.append(_padding(dm, items))
    checks += _tokens(dm, items, st.max_oov_rate)
    checks.append(_shuffled(dm, st))
    return checks


def _padding(dm, items: dict[str, list[dict]]) -> Check:
    padded = dict(dm.padded_inputs)
    if not padded:
        return check_padding(None, 0, "the datamodule declares no padded_inputs")
    batch_size = dm.cfg.batch_size
    problems, rows = [], 0
    for s, its in items.items():
        idx = sample_indices(len(dm.splits[s]), len(its)) if its else []
        for a in range(0, len(its), batch_size):
            batch = dm.collate(its[a : a + batch_size])
            for key, side in padded.items():
                if key not in batch:
                    return check_padding([f"padded_inputs names {key!r}, no batch key"], 0)
                bad = pad_inside(batch[key], side)  # (B,)
                rows += len(bad)
                for b in bad.nonzero().flatten().tolist():
                    problems.append(_name(dm, s, idx[a + b], key))
    return check_padding(problems, rows)


def pad_inside(x: torch.Tensor, side: str) -> torch.Tensor:
    """(B,) bool: rows of x (B, ..., T) with a pad id before a non-pad one along T ("right"
    padding; mirrored for "left")."""
    real = x != PAD_ID
    if side == "left":
        real = real.flip(-1)
    inside = ~real[..., :-1] & real[..., 1:]  # a pad followed by a real id
    return inside.reshape(len(x), -1).any(1)


def _name(dm, split: str, i: int, key: str) -> str:
    ex_id = dm.splits[split][i].get("id") if isinstance(dm.splits[split][i], dict) else None
    return f"{split} example #{i}" + (f" (id {ex_id!r})" if ex_id is not None else "") + f" {key}"


def _tokens(dm, items: dict[str, list[dict]], limit: float) -> list[Check]:
    vocab = dm.vocabulary()
    splits = dm.splits
    first = next((splits[s][0] for s in SPLITS if splits[s]), None)
    if vocab is None or first is None or dm.raw_tokens(first) is None:
        why = "the datamodule gives no vocabulary() and raw_tokens()"
        return [check_oov_from_tokens(None, limit, why), check_token_ids(None, why)]
    stoi = {w: i for i, w in enumerate(vocab)}
    rates: dict[str, float] = {}
    found: dict[str, Any] = {"tokens": 0, "as_pad": 0, "wrong": 0, "examples": []}
    for s, its in items.items():
        idx = sample_indices(len(splits[s]), len(its)) if its else []
        unknown = total = 0
        for i, item in zip(idx, its, strict=True):
            for key, toks in dm.raw_tokens(splits[s][i]).items():
                if key not in item:  # a wiring error of the paper's: fails, never hidden
                    bad = f"raw_tokens() names {key!r}, which encode() does not give"
                    return [
                        check_oov_from_tokens(None, limit, bad),
                        Check(TOKEN_IDS, False, f"{bad}: name the keys of encode()'s items"),
                    ]
                unknown += sum(t not in stoi for t in toks)
                total += len(toks)
                bad = _compare_ids(item[key], [stoi.get(t, UNK_ID) for t in toks], toks, found)
                if bad and len(found["examples"]) < 5:
                    found["examples"].append(f"{_name(dm, s, i, key)}: {bad}")
        rates[s] = unknown / total if total else 0.0
    return [check_oov_from_tokens(rates, limit), check_token_ids(found)]


def _compare_ids(ids: torch.Tensor, want: list[int], toks: list[str], found: dict) -> str:
    """Count the tokens of one field encoded otherwise than the vocabulary says; the first one
    as "'word' -> 0 (want 1)" ("" when all agree)."""
    got = ids.flatten().tolist()
    found["tokens"] += len(want)
    first = ""
    if len(got) < len(want):
        found["wrong"] += len(want) - len(got)
        first = f"{len(got)} ids for {len(want)} tokens"
    for t, g, w in zip(toks, got, want, strict=False):
        if g != w:
            found["as_pad" if g == PAD_ID else "wrong"] += 1
            first = first or f"{t!r} -> {g} (its vocabulary id: {w})"
    return first


def _shuffled(dm, st) -> Check:
    task = dm.task
    if task.label_classes() is None:
        why = f"the {task.name} task has no discrete label per example"
        return check_shuffled(None, {}, st.chance_p, None, why)
    split_counts = dict(Counter(int(ex["label"]) for ex in dm.splits["train"]))
    served: list[int] = []
    if not split_counts:
        return check_shuffled(None, {}, st.chance_p, None, "the training split is empty")
    for batch in dm.train_dataloader():  # a fresh loader: the first batches an epoch serves
        served += batch["label"].flatten().tolist()
        if len(served) >= st.sample_examples:
            break
    served = [int(y) for y in served[: st.sample_examples]]
    return check_shuffled(served, split_counts, st.chance_p, runs_p_value(served, st.chance_p))
