"""The data gate: splits non-empty, disjoint (exactly and nearly) and served by their own loaders,
the task's label checks (repro/tasks: every class everywhere for a classifier, targets alike in
every split for a regressor, queries disjoint for a ranker ...), the split policy, preprocessing
fitted on train and deterministic, no label in the inputs and labels that mean the same in every
split (for discrete labels), no feature shift, OOV/truncation within limits, a batch draws."""

from __future__ import annotations

import dataclasses
import weakref
from collections import Counter
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from repro.context import StageContext
from repro.data import hashseed
from repro.data.collector import collector_paused
from repro.data.datamodule import PaperDataModule
from repro.data.digest import (
    build_digest,
    digest_differences,
    encoded_differ,
    example_hashes,
    sample_indices,
    sample_items,
    value_digest,
)
from repro.data.duplicates import (
    NearDuplicates,
    input_kind,
    neighbour_near_duplicates,
    text_near_duplicates,
)
from repro.data.features import Features, featurize
from repro.data.leak import LabelFunction, label_functions
from repro.data.probe import odd_split, probe_views
from repro.data.rebuild import (
    encode_lazily,
    encode_whole,
    free_dropped,
    items_at,
    keep_parsed,
    release,
    return_freed_memory,
    reuse_parsed,
)
from repro.data.served import Served, audit_loaders
from repro.data.shift import chance_bound, mean_shift
from repro.gates.data_contents import content_checks
from repro.gates.metrics import DataMetrics
from repro.tasks.classification import check_classes  # noqa: F401 (its tests import it here)
from repro.verdict import Check, Verdict

BAG_BUCKETS = 1024  # hashed id buckets for the probe: collisions are rare below ~1000 frequent ids


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


def check_split_policy(
    official: bool,
    sizes: dict[str, int],
    fractions: tuple[float, ...],
    idempotent: bool,
    unit: str = "examples",
) -> Check:
    """Official split kept as is; otherwise the seeded 80/10/10 (fractions within 1 example per
    class), of examples or of the task's groups (`unit`: a ranking task splits queries)."""
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
    of = "" if unit == "examples" else f" of {unit}"
    return Check(
        "split policy",
        True,
        f"no official split: seeded {want} split{of} applied ({desc}%), idempotent",
        {"official": False, "fractions": got, "unit": unit},
    )


def check_loader_determinism(same_first_batch: bool, sample: dict[str, int] | None = None) -> Check:
    """Two builds' train loaders with the same seed give the same first batch (`sample`: the
    builds compared were of a seeded sample, {"train": n, "of": N})."""
    on = (
        f" (builds of {sample['train']:,} sampled training examples)" if _is_sampled(sample) else ""
    )
    if not same_first_batch:
        return Check(
            "loader determinism",
            False,
            f"two train loaders with the same seed gave different first batches{on}",
            {"sample": sample},
        )
    return Check(
        "loader determinism",
        True,
        f"same seed -> same first training batch{on}",
        {"sample": sample},
    )


def check_near_duplicates(near: NearDuplicates, max_rate: float, chance_p: float) -> Check:
    """Held-out examples that are near copies of earlier splits' (beyond chance) stay under max_rate."""
    name = "no near-duplicates across splits"
    ev = {
        "method": near.method,
        "counts": near.counts,
        "rates": {k: round(v, 4) for k, v in near.rates.items()},
        "expected": {k: round(v, 4) for k, v in near.expected.items()},
        "pair": list(near.pair) if near.pair else None,
    }
    if not near.method:
        return Check.not_measured(name, near.note, ev)
    bad = {}
    for k, rate in near.rates.items():
        excess = rate - near.expected.get(k, 0.0)
        if excess > max_rate and near.tail_p.get(k, 0.0) < chance_p:
            bad[k] = excess
    if near.method == "normalised text":
        how = "equal to examples of an earlier split once case, punctuation and spacing are normalised"
        dedup = "on normalised inputs"
    else:
        how = "nearer a training example than training examples are to each other"
        dedup = "by distance"
    if not bad:
        total = sum(near.counts.values())
        return Check(name, True, f"{total} held-out examples {how} (max {100 * max_rate:g}%)", ev)
    worst = max(bad, key=bad.get)
    b = worst.split("&")[1]
    pair = f" e.g. {near.pair[0]!r} ~ {near.pair[1]!r};" if near.pair else ""
    return Check(
        name,
        False,
        f"{near.counts[worst]} {b} examples ({100 * near.rates[worst]:.1f}%) are {how} "
        f"({worst}, max {100 * max_rate:g}% beyond chance);{pair} the same examples entered two "
        f"splits in different forms: deduplicate {dedup} before splitting",
        ev,
    )


def check_loaders_serve_splits(served: dict[str, Served]) -> Check:
    """Each loader serves its own split: val/test every example once and nothing else; train
    nothing of val/test."""
    name = "loaders serve their split"
    ev = {s: dataclasses.asdict(v) for s, v in served.items()}
    problems = []
    for s, v in served.items():
        wrong = ", ".join(f"{n} {o} examples" for o, n in v.others.items())
        if s == "train":
            if v.others:
                problems.append(f"the train loader's first {v.rows} rows include {wrong}")
            continue
        if v.others or v.unmatched or not v.complete:
            parts = [wrong] if wrong else []
            if v.unmatched:
                n_train = served["train"].split_size
                sampled = (
                    f" (train compared on {v.train_compared} of its {n_train})"
                    if v.train_compared < n_train
                    else ""
                )
                parts.append(f"{v.unmatched} rows matching no example{sampled}")
            got = f"{v.rows} rows ({', '.join(parts)}" + ("" if parts else "all its own") + ")"
            problems.append(
                f"the {s} loader serves {got} where its split has {v.split_size} examples, "
                f"{v.own} of them served"
            )
    if problems:
        return Check(
            name,
            False,
            "; ".join(problems) + ": a *_dataloader() returns another split's loader (e.g. "
            "test_dataloader() serving train); build each from its own split "
            "(self._loader(split, ...), or leave them to PaperDataModule)",
            ev,
        )
    v, t = served["val"], served["test"]
    return Check(
        name,
        True,
        f"val and test loaders serve each of their {v.split_size} and {t.split_size} examples "
        f"once; the train loader's first {served['train'].rows} rows are no val/test examples",
        ev,
    )


@dataclass
class TrainOnly:
    """A build whose build() saw the training split alone, compared with the normal build."""

    kwargs: list[str]  # model_kwargs() keys that differ
    items_differ: int  # training items (of those compared) that differ
    items_compared: int
    first_item: int | None
    error: str = ""
    # {"train": n, "of": N}: both builds saw n of the N training examples (a seeded sample, val
    # and test sampled alike: stage.data.compare_examples); {} when not said
    sample: dict[str, int] = dataclasses.field(default_factory=dict)


def _is_sampled(sample: dict[str, int] | None) -> bool:
    """Whether builds of `sample` ({"train": n, "of": N}) saw fewer training examples than the
    first build (compare_examples below a split's size)."""
    return bool(sample) and sample["train"] < sample["of"]


def _on_sample(sample: dict[str, int] | None) -> str:
    """' (on a seeded sample: n of N training examples ...)' where the builds saw a sample."""
    if not _is_sampled(sample):
        return ""
    return (
        f" (both built on a seeded sample: {sample['train']:,} of {sample['of']:,} training "
        "examples, val and test alike; stage.data.compare_examples)"
    )


def check_fit_on_train(t: TrainOnly | None, why_not: str = "") -> Check:
    """What build() fits comes from the training split alone."""
    name = "fitted on train only"
    if t is None:
        return Check.not_measured(name, why_not)
    ev = dataclasses.asdict(t)
    on = _on_sample(t.sample)
    if t.error:
        return Check(
            name,
            False,
            f"build() failed when val and test were empty ({t.error}){on}: what it fits must "
            "come from splits['train'] alone; fit the vocabulary/statistics on train only",
            ev,
        )
    if t.kwargs or t.items_differ:
        parts = []
        if t.kwargs:
            parts.append(f"model_kwargs() {t.kwargs}")
        if t.items_differ:
            parts.append(
                f"{t.items_differ} of {t.items_compared} encoded training items "
                f"(first: #{t.first_item})"
            )
        return Check(
            name,
            False,
            f"hiding val and test from build() changed {' and '.join(parts)}{on}: the "
            "vocabulary or statistics are fitted on val/test too; fit them on splits['train'] "
            "alone",
            ev,
        )
    return Check(
        name,
        True,
        f"build() on train alone gives the same model_kwargs() and {t.items_compared} "
        f"identical encoded training items{on}",
        ev,
    )


def check_deterministic(
    same_process: list[str] | None,
    other_hashseed: list[str] | None,
    hashseed: str,
    note: str = "",
    sample: dict[str, int] | None = None,
) -> Check:
    """Builds from the files agree with the first build: in a fresh process under another
    PYTHONHASHSEED (and other unseeded random states), and in this process (`same_process`
    None: not built, the fresh one agreed). `sample` ({"train": n, "of": N}): the fresh process
    compared its splits whole, build() and encoding on a seeded sample."""
    name = "preprocessing deterministic"
    ev = {"same_process": same_process, "other_hashseed": other_hashseed, "hashseed": hashseed}
    ev["sample"] = sample  # None: the fresh process built and encoded every example
    sampled = _is_sampled(sample)
    if same_process:
        return Check(
            name,
            False,
            f"two builds in one process (the second bypassing preprocessing caches) differ in "
            f"{', '.join(same_process)}: a stale cache (its key misses a change, e.g. to the "
            "code) or unseeded randomness (random/torch without a seeded generator); fix the "
            "cache key, or seed from the config",
            ev,
        )
    if other_hashseed:
        on = (
            f" (build() and encoding on {sample['train']:,} sampled training examples)"
            if sampled
            else ""
        )
        return Check(
            name,
            False,
            f"a build in a fresh process with PYTHONHASHSEED={hashseed} differs in "
            f"{', '.join(other_hashseed)}{on}: preprocessing follows the "
            "order of a set or dict of strings (a vocabulary, a split); sort before numbering "
            "(sorted(set(...)))",
            ev,
        )
    if other_hashseed is None:  # the half that decides: not measured, never counted as passed
        return Check.not_measured(
            name,
            f"a fresh process with PYTHONHASHSEED={hashseed}: {note} (two builds in this "
            "process are the same)",
            ev,
        )
    where = "in this process and " if same_process is not None else ""
    return Check(
        name,
        True,
        f"same splits, model_kwargs, items and first batch {where}in a fresh process built "
        f"from the files (PYTHONHASHSEED={hashseed}, other unseeded random states)"
        + (_compared_on(sample) if sampled else ""),
        ev,
    )


def _compared_on(sample: dict[str, int]) -> str:
    return (
        f"; splits compared whole, build() and encoding on a seeded sample ({sample['train']:,} "
        f"of {sample['of']:,} training examples, val and test alike: "
        "stage.data.compare_examples), the first build having read no cache"
    )


def check_label_leak(found: list[LabelFunction] | None, n: int, why_not: str = "") -> Check:
    """No input of the training batch is a function of the label."""
    name = "no label in the inputs"
    if found is None:
        return Check.not_measured(name, why_not)
    ev = {"examples": n, "found": [dataclasses.asdict(f) for f in found]}
    if found:
        f = found[0]
        per = ", ".join(f"class {c} -> {v}" for c, v in f.per_class.items())
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        return Check(
            name,
            False,
            f"input {f.key} {f.where} is a function of the label on {n} training examples "
            f"({per}){more}: the label reached the inputs (load_examples/encode/collate); "
            "remove it, or set stage.data.label_leak=false if the task is this rule by design",
            ev,
        )
    return Check(
        name,
        True,
        f"no input column or token is a function of the label on {n} training examples",
        ev,
    )


def check_labels_agree(
    matrices: dict[str, dict[str, dict[str, tuple[float, float]]]] | None,
    odd: dict | None,
    max_drop: float,
    num_classes: int,
    why_not: str = "",
) -> Check:
    """Nearest-centroid probes (one per view of the inputs) transfer between the splits alike:
    no split's labels are odd. `odd` is odd_split's finding for the first view that has one,
    with its "view"."""
    name = "labels mean the same in every split"
    if not matrices:
        return Check.not_measured(name, why_not or "no inputs to probe")
    ev = {
        "balanced_accuracy": {
            view: {a: {b: round(acc, 3) for b, (acc, _) in row.items()} for a, row in m.items()}
            for view, m in matrices.items()
        },
        "odd": odd,
    }
    if odd:
        s = odd["split"]
        desc = "; ".join(
            f"fitted on {x}: {d['acc_other']:.2f} on {d['on']} vs {d['acc_odd']:.2f} on {s}"
            for x, d in odd["drops"].items()
        )
        return Check(
            name,
            False,
            f"a nearest-centroid probe ({odd['view']}) loses more than {max_drop:g} balanced "
            f"accuracy on {s} ({desc}): {s}'s labels disagree with the other splits' (a label "
            "mapping of its own, or labels shuffled apart from their inputs); map labels in one "
            "place for every split",
            ev,
        )
    best_view, best = max(
        (
            (view, acc)
            for view, m in matrices.items()
            for row in m.values()
            for acc, _ in row.values()
        ),
        key=lambda va: va[1],
    )
    chance = 1 / num_classes
    if best - chance < max_drop:
        how = f"is within {max_drop:g} of chance ({chance:.2f}) everywhere: it cannot tell"
    else:
        how = "transfers between the splits alike"
    return Check(
        name,
        True,
        f"a nearest-centroid probe (best: {best:.2f} balanced accuracy, {best_view}) {how}",
        ev,
    )


def check_feature_shift(
    shifts: dict[str, tuple[float, str, float]], max_shift: float, chance: dict[str, float]
) -> Check:
    """val/test inputs are distributed as train's: mean KS over the dense inputs within
    max_shift, or within what chance gives splits this small (`chance`, per split)."""
    name = "no train/test feature shift"
    ev = {
        s: {
            "mean_ks": round(m, 3),
            "worst": c,
            "worst_ks": round(w, 3),
            "limit": round(max(max_shift, chance.get(s, 0.0)), 3),
        }
        for s, (m, c, w) in shifts.items()
    }
    if not shifts:
        return Check.not_measured(name, "no float or length inputs vary in train", ev)
    over = {s: v for s, v in shifts.items() if v[0] > max(max_shift, chance.get(s, 0.0))}
    if over:
        s = max(over, key=lambda k: over[k][0])
        m, col, w = over[s]
        limit = max(max_shift, chance.get(s, 0.0))
        return Check(
            name,
            False,
            f"{s} inputs are distributed unlike train's (mean KS {m:.2f} > {limit:.2g}; "
            f"{col}: {w:.2f}): likely preprocessed differently (scaling/normalisation applied "
            "to one split only); apply the same transform, fitted on train, to every split",
            ev,
        )
    desc = ", ".join(f"{k} {v[0]:.2f}" for k, v in shifts.items())
    limits = ", ".join(f"{k} {e['limit']:.2g}" for k, e in ev.items())
    return Check(name, True, f"mean KS vs train {desc} (max {limits})", ev)


STAT_LIMITS = {  # stats() name -> (check name, the likely cause and what to do)
    "oov_rate": (
        "OOV rate",
        "tokens the vocabulary does not know: a case or tokenizer mismatch between building the "
        "vocabulary and looking tokens up; use the same tokenization for both",
    ),
    "truncated": (
        "truncation",
        "sequences cut by the length cap: raise the cap (the paper's max length) or say why",
    ),
}


def check_stat_limit(stat: str, values: dict[str, float], limit: float) -> Check:
    """A fraction reported by the paper's stats() (`<stat>/<split>`) stays within limit."""
    label, cause = STAT_LIMITS[stat]
    desc = ", ".join(f"{s} {v:.3g}" for s, v in values.items())
    over = {s: v for s, v in values.items() if v > limit}
    if over:
        worst = max(over, key=over.get)
        return Check(
            label,
            False,
            f"{stat} {over[worst]:.3g} on {worst} > {limit:g} ({desc}): {cause}",
            {"values": values, "limit": limit},
        )
    return Check(label, True, f"{stat} {desc} (max {limit:g})", {"values": values, "limit": limit})


def stat_checks(stats: dict[str, Any], limits: dict[str, float]) -> list[Check]:
    """One check per limited stat the paper reports (`oov_rate/<split>` or `oov_rate`)."""
    out = []
    for stat, limit in limits.items():
        values = {
            (k.split("/", 1)[1] if "/" in k else "all"): float(v)
            for k, v in stats.items()
            if (k == stat or k.startswith(f"{stat}/")) and isinstance(v, int | float)
        }
        if values:
            out.append(check_stat_limit(stat, values, limit))
    return out


# ---- measurement ----------------------------------------------------------------------------
def run(ctx: StageContext) -> Verdict:
    """Build the datamodule and measure it; then build it again with only the training split
    seen by build(), and from the files in a fresh process under another PYTHONHASHSEED (and in
    this process too when that one differs), and compare those builds with it."""
    st = ctx.cfg.stage.data
    fresh_build = hashseed.start(
        ctx.project.root, ctx.paper, ctx.cfg.data, ctx.seed, st.sample_examples, ctx.cfg.paper.task
    )
    try:
        with collector_paused():
            return _run(ctx, st, fresh_build)
    finally:
        hashseed.stop(fresh_build)


def _run(ctx, st, fresh_build) -> Verdict:
    """One build measured whole and freed; the builds compared with it come after, one at a
    time (issue 21: three builds alive at once were 2.4x the memory of one at Quora's size)."""
    dm = ctx.build_datamodule(fresh=True)
    # a sample of its parsed examples: the comparison builds start from it
    kept = keep_parsed(dm, st.compare_examples)
    dm.setup("fit")
    sizes = {s: len(dm.splits[s]) for s in ("train", "val", "test")}
    hashes = example_hashes(dm)  # each example hashed once: every comparison reuses them
    task = dm.task
    nonempty = check_nonempty(sizes)
    labels = task.label_checks(dm, st) if nonempty.passed else []
    labels_ok = all(c.passed or not c.measured for c in labels)
    checks = [
        nonempty,
        check_disjoint(hashes),
        check_near_duplicates(
            _near_duplicates(dm, hashes, st), st.near_duplicate_max_rate, st.chance_p
        ),
        *labels,
    ]
    first = next(iter(dm.train_dataloader())) if sizes["train"] else {}
    items = sample_items(dm, st.sample_examples)  # fetched once: encoding can be slow
    contents = content_checks(dm, items, st, ctx.cfg.paper.data_sizes, ctx.cfg.data.options)
    reference = build_digest(dm, items, hashes)  # what the other builds are compared with
    # the checks below compare splits: each needs examples
    split = _split_checks(ctx, st, dm, items, labels_ok) if nonempty.passed else []
    stats = dm.stats()
    examples = _show(ctx.console, dm, first, st.show_examples, labels_ok, stats) if first else []
    metrics = DataMetrics(
        sizes=sizes,
        num_classes=dm.num_classes,
        official_split=bool(dm.official_split),
        data_files=[str(p) for p in dm.data_files()],
        task=task.name,
    )
    label_summary = {s: task.label_summary(dm.splits[s]) for s in dm.splits}
    policy = _split_policy(task, dm.splits, sizes)
    from_files = dm.loaded_from_cache is False  # it says it read no cache: nothing can be stale
    release(dm)
    dropped = weakref.ref(dm)
    del dm, items
    free_dropped(dropped)

    again = _compare_builds(ctx, st, hashes, reference, kept, fresh_build, split, from_files)
    checks.append(policy(metrics.official_split, ctx.cfg.data.split, again.idempotent))
    if first:
        checks.append(check_loader_determinism(again.same_first_batch, again.sample))
    if split:
        checks += [split[0], again.fit_on_train, again.deterministic, *split[1:]]
    checks += contents + stat_checks(stats, _stat_limits(st, contents))

    evidence: dict[str, Any] = {
        "labels": label_summary,
        "batch_shapes": {k: list(v.shape) for k, v in first.items()},
        "examples": examples,
        "stats": stats,
    }
    return Verdict.from_checks("data", checks, evidence, metrics)


def _stat_limits(st, contents: list[Check]) -> dict[str, float]:
    """The stats() fractions judged: the OOV rate counted from the tokens (data_contents.py)
    replaces the paper's own (counted from ids, blind to unknowns encoded as padding)."""
    limits = {"oov_rate": st.max_oov_rate, "truncated": st.max_truncated}
    if any(c.name == "OOV rate" and c.measured for c in contents):
        del limits["oov_rate"]
    return limits


def _split_policy(task, splits: dict[str, list], sizes: dict[str, int]):
    """check_split_policy on the task's units: examples, or a ranking task's queries (its split
    divides queries, not items), to call once the other builds are compared."""
    units = {s: task.split_units(splits[s]) for s in sizes}
    unit = "examples" if units == sizes else f"{task.unit} groups"
    return lambda official, fractions, idempotent: check_split_policy(
        official, units, fractions, idempotent, unit
    )


def _split_checks(ctx, st, dm, items, labels_ok: bool) -> list[Check]:
    """What the build training uses serves and holds: loaders, label leak, probes and shift."""
    every = {s: _every_item(dm, s, items[s]) for s in ("val", "test")}  # each must be served
    feats = {s: featurize(items[s], BAG_BUCKETS) for s in items}
    return [
        check_loaders_serve_splits(
            audit_loaders(dm, {"train": items["train"], **every}, st.sample_examples)
        ),
        _label_leak(dm, items["train"], st),
        _labels_agree(dm, items, feats, st, labels_ok),
        _feature_shift(feats, st),
    ]


@dataclass
class Compared:
    """What the builds compared with the first one found."""

    idempotent: bool  # the same examples in the same splits, in order
    same_first_batch: bool
    fit_on_train: Check | None = None
    deterministic: Check | None = None
    sample: dict[str, int] | None = None  # same_first_batch of builds of a sample (not None)


def _compare_builds(
    ctx, st, hashes, reference, kept, fresh_build, split: list[Check], from_files: bool
) -> Compared:
    """The builds compared with the first one (`reference`, its digest), one at a time:

    - with examples in every split (`split` non-empty): a build of a seeded sample of the
      examples the first build parsed (`kept`: keep_parsed's sample, stage.data.compare_examples
      per split, all of a smaller split), and the train-only build of the same sample compared
      with it; then the fresh process's build from the files (another PYTHONHASHSEED, other unseeded random
      states, caches bypassed), its splits compared whole with the first build's and, where the
      first build read no cache (`from_files`), build() and encoding on the same sample compared
      with the sample's build; else whole, compared with the first build (a stale cache shows);
    - a build from the files in this process only when that one differs, failed or was not
      run: it tells a stale cache or unseeded randomness (it differs too) from an order that
      follows string hashes (it does not). Where the fresh process agrees, every source of a
      difference this build would show differs in the fresh process as well.

    Issue 21: build() and encoding whole, three times over, were half the gate's extra CPU at
    Quora's size; on a sample they are what a vocabulary fitted on val/test, an order that follows
    string hashes, or unseeded randomness changes, at a bounded cost.
    """
    fit_on_train = other = on = None
    basis, note = reference, ""
    if split:
        mine = _sample_build(ctx, kept, st.sample_examples)
        fit_on_train = check_fit_on_train(_train_only(ctx, kept, mine, st.sample_examples))
        kept.clear()
        return_freed_memory()  # handed back before the fresh process builds beside this one
        if from_files:
            basis = {**mine.digest, "examples": reference["examples"]}
            on = {"train": mine.sizes["train"], "of": mine.of["train"]}
        fresh_sample = st.compare_examples if from_files else None
        other, note = hashseed.collect(fresh_build, basis, st.hashseed_timeout_s, fresh_sample)
        if other is not None and not digest_differences(basis, other):
            deterministic = check_deterministic(None, [], fresh_build.hashseed, sample=on)
            return Compared(True, True, fit_on_train, deterministic, on)
    kept.clear()
    digest, idempotent = _build_from_files(ctx, st, hashes, reference)
    out = Compared(idempotent, digest["first_batch"] == reference["first_batch"])
    if split:
        same_process = digest_differences(reference, digest)
        out.fit_on_train = fit_on_train
        if same_process:
            out.fit_on_train = check_fit_on_train(
                None, "two builds in this process differ already (see below)"
            )
        # the fresh build against this process's build of the same examples
        mine_here = basis if from_files else digest
        other_diffs = digest_differences(mine_here, other) if other is not None else None
        out.deterministic = check_deterministic(
            same_process, other_diffs, fresh_build.hashseed, note, on
        )
    return out


@dataclass
class SampleBuild:
    """A build of a sample of the parsed examples, set up, digested and freed."""

    digest: dict[str, Any]
    train_items: list[dict]  # its sampled encoded training items (sample_items)
    sizes: dict[str, int]  # its examples per split
    of: dict[str, int]  # the first build's, per split


def _sample_build(ctx, sample: dict[str, Any], max_items: int) -> SampleBuild:
    """Build and encode (whole: it is what the other builds are compared with) the sampled
    examples, bypassing caches; its digest (repro/data/digest.py)."""
    dm = ctx.build_datamodule(fresh=True)
    dm.bypass_cache = True  # nothing of it is read from or written to a cache
    if sample:  # else built from the files, whole (nothing was kept)
        reuse_parsed(dm, sample)
    dm.setup("fit")
    items = sample_items(dm, max_items)
    sizes = {s: len(dm.splits[s]) for s in dm.splits}
    digest = build_digest(dm, items, example_hashes(dm))
    release(dm)
    return SampleBuild(digest, items["train"], sizes, sample.get("of", sizes))


def _build_from_files(ctx, st, hashes, reference) -> tuple[dict[str, Any], bool]:
    """Build again in this process from the files (caches bypassed): its digest, and whether
    its splits hold the same examples in the same order as the first build's (`hashes`)."""
    dm2 = ctx.build_datamodule(fresh=True)
    dm2.bypass_cache = True  # computed from the files: a stale cache shows as a difference
    real = encode_lazily(dm2)  # only what the digest reads is encoded
    dm2.setup("fit")
    hashes2 = example_hashes(dm2)
    digest = build_digest(dm2, sample_items(dm2, st.sample_examples), hashes2)
    if encoded_differ(digest, reference):  # confirmed on the splits encoded whole
        encode_whole(dm2, real)
        digest = build_digest(dm2, sample_items(dm2, st.sample_examples), hashes2)
    release(dm2)
    return digest, all(hashes2[s] == hashes[s] for s in hashes)


def _every_item(dm, split: str, sample: list[dict]) -> list[dict]:
    ds = dm.datasets[split]
    return sample if len(sample) == len(ds) else [ds[i] for i in range(len(ds))]


def _near_duplicates(dm, hashes: dict[str, list[str]], st) -> NearDuplicates:
    splits = dm.splits
    if not splits["train"]:
        return NearDuplicates("", note="the training split is empty")
    ex = splits["train"][0]
    fields = dm.input_fields or tuple(k for k in ex if k not in ("label", "id"))
    kind = input_kind(ex, fields)
    if kind == "text":
        return text_near_duplicates(splits, fields, hashes)
    if kind == "numbers":
        return neighbour_near_duplicates(
            splits, fields, st.near_duplicate_ratio, st.sample_examples
        )
    return NearDuplicates("", note=f"inputs {list(fields)} mix text and numbers")


def _train_only(ctx, sample: dict[str, Any], mine: SampleBuild, max_items: int) -> TrainOnly:
    """Build the same sample again with val and test hidden from build() (the examples parsed
    once: no second reading and tokenizing of the files); compare what it fitted and encoded
    with the sample's build (`mine`: its digest and sampled training items)."""
    other = ctx.build_datamodule(fresh=True)
    if sample:  # else loaded from the files (nothing was kept)
        reuse_parsed(other, sample)
    real = encode_lazily(other)
    n_train = mine.sizes["train"]
    sampled = {"train": n_train, "of": mine.of["train"]}
    try:
        other.setup_train_only()
    except Exception as e:  # the paper's build() needs val/test: that is the finding
        release(other)
        return TrainOnly([], 0, 0, None, error=f"{type(e).__name__}: {e}", sample=sampled)
    try:
        ours = mine.digest["model_kwargs"]
        theirs = {k: value_digest(v) for k, v in other.model_kwargs().items()}
        kwargs = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        if len(other.datasets["train"]) != n_train:
            n = len(mine.train_items)
            return TrainOnly(kwargs, n, n, 0, sample=sampled)
        idx = sample_indices(n_train, max_items)
        reference = [value_digest(it) for it in mine.train_items]

        def differ() -> list[int]:
            theirs = items_at(other.datasets["train"], idx)
            pairs = zip(idx, reference, theirs, strict=True)
            return [i for i, d, it in pairs if d != value_digest(it)]

        differ_at = differ()
        if differ_at:  # confirmed on the split encoded whole
            encode_whole(other, real)
            differ_at = differ()
        first = differ_at[0] if differ_at else None
        return TrainOnly(kwargs, len(differ_at), len(idx), first, sample=sampled)
    finally:
        release(other)


def _label_leak(dm, train_items: list[dict], st) -> Check:
    if not st.label_leak:
        return check_label_leak(None, 0, "stage.data.label_leak=false")
    if dm.task.label_classes() is None:
        return check_label_leak(
            None, 0, f"the {dm.task.name} task has no discrete label per example"
        )
    batch = dm.collate(train_items)
    counts = Counter(batch["label"].tolist())
    if len(counts) < 2 or min(counts.values()) < st.leak_min_per_class:
        return check_label_leak(
            None,
            0,
            f"a class has fewer than {st.leak_min_per_class} training examples "
            f"(stage.data.leak_min_per_class): {dict(sorted(counts.items()))}",
        )
    return check_label_leak(label_functions(batch), len(batch["label"]))


def _labels_agree(dm, items, feats: dict[str, Features], st, labels_ok: bool) -> Check:
    import torch

    classes = dm.task.label_classes()
    name_args = (st.probe_max_drop, classes or 0)
    if classes is None:
        why = f"the {dm.task.name} task has no discrete label per example"
        return check_labels_agree(None, None, *name_args, why)
    if not labels_ok:
        why = "the task's label checks failed (a split lacks a class, or labels out of range)"
        return check_labels_agree(None, None, *name_args, why)
    labels = {s: torch.tensor([int(it["label"]) for it in items[s]]) for s in items}
    matrices = probe_views(feats, labels, classes)
    z = NormalDist().inv_cdf(1 - st.chance_p)
    odd = None
    for view, m in matrices.items():
        odd = odd_split(m, st.probe_max_drop, z)
        if odd:
            odd["view"] = view
            break
    return check_labels_agree(matrices, odd, *name_args)


def _feature_shift(feats: dict[str, Features], st) -> Check:
    z = NormalDist().inv_cdf(1 - st.chance_p)
    shifts, chance = {}, {}
    for s in ("val", "test"):
        m = mean_shift(feats["train"].dense, feats[s].dense)
        if m is not None:
            shifts[s] = (m[0], feats["train"].names[m[1]], m[2])
            chance[s] = chance_bound(len(feats["train"].dense), len(feats[s].dense), z)
    return check_feature_shift(shifts, st.max_feature_shift, chance)


def _show(console, dm, batch: dict, n: int, labels_ok: bool, stats: dict[str, Any]) -> list[str]:
    """Print (and return) n decoded examples and the data statistics (dm.stats()). Decoding needs
    labels in range: with bad labels the examples are shown as raw tensors (the verdict names the
    labels)."""
    n = min(n, len(batch["label"]))
    decode = dm.decode if labels_ok else PaperDataModule.decode.__get__(dm)
    examples = [decode(batch, i) for i in range(n)]
    console.print(
        "[bold]Examples just before the net[/bold] (decoded from the first training batch):"
    )
    for e in examples:
        console.print(f"  {e}", markup=False, highlight=False)
    if stats:
        console.print("[bold]Data statistics[/bold]: ", end="")
        console.print(
            ", ".join(f"{k}={v}" for k, v in stats.items()), markup=False, highlight=False
        )
    return examples
