"""`repro eval`: a full run's checkpoint evaluated again with the current code, on one of its
splits or on other data, recorded as its own run (stage `eval`, linked to the run) with its
metrics beside the ones the run recorded. Re-evaluating after a fix to the evaluation code shows
what the fix changed; an unchanged code base gives the recorded numbers exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from repro.errors import DataError, ReproError
from repro.project import Project
from repro.verdict import Check, Verdict

if TYPE_CHECKING:
    from repro.records.record import Record

STAGE = "eval"  # runs/<paper>/eval/<run-id>/: not a gate, never a milestone
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class EvalMetrics:
    evaluated: str  # the full run whose checkpoints were evaluated
    split: str  # the split evaluated (of the run's data, or of the data the overrides name)
    input: str | None  # a file of examples evaluated instead of a split
    overrides: list[str]  # data.* overrides
    checkpoint: str  # best | last
    code: str  # current | recorded
    seeds: list[int]
    examples: int
    per_seed: list[dict[str, float]]  # <split>/<metric> of each seed's checkpoint
    recorded: list[dict[str, float]] | None = None  # the run's own numbers (None: other data)
    code_changed: list[str] = field(default_factory=list)  # the paper's files changed since


def as_logged(value: float) -> float:
    """A metric as Lightning logged the run's (a float32 tensor): the recorded numbers went
    through that rounding, so a comparison must too."""
    import torch

    return float(torch.tensor(value, dtype=torch.float32))


def evaluate(trained, examples: list[dict], split: str, console=None) -> dict[str, float]:
    """The task's metrics of the trained model on raw examples (encoded as training did), in
    batches of the evaluation batch size, named <split>/<metric>, rounded as logged."""
    from repro.predict import progress_bar
    from repro.train.evaluate import encoded_loader, model_forward, outputs

    bar = progress_bar(console, len(examples))
    try:
        task = bar.add_task(f"evaluating {split}", total=len(examples)) if bar else None
        items = []
        for ex in examples:
            items.append(trained.dm.encode(ex))
            if bar:
                bar.advance(task)
        loader = encoded_loader(trained.dm, items)
        _, metrics = outputs(model_forward(trained.model), loader, trained.task, True)
    finally:
        if bar:
            bar.stop()
    return {f"{split}/{k}": as_logged(v) for k, v in metrics.items()}


def check_as_recorded(
    run_id: str, seed: int, mine: dict[str, float], recorded: dict[str, float], changed: list[str]
) -> Check:
    """The evaluation gives the run's recorded numbers exactly (same checkpoint, same data)."""
    name = f"as recorded (seed {seed})"
    keys = sorted(k for k in mine if k in recorded)
    if not keys:
        return Check.not_measured(name, f"run {run_id} recorded none of {sorted(mine)}")
    differ = [k for k in keys if mine[k] != recorded[k]]
    ev = {"keys": keys, "differ": differ, "changed_since": changed}
    if not differ:
        shown = ", ".join(f"{k} {mine[k]:.6g}" for k in keys)
        return Check(name, True, f"{shown}: identical to run {run_id}'s recorded numbers", ev)
    shown = ", ".join(
        f"{k} {mine[k]:.6g} vs {recorded[k]:.6g} recorded ({mine[k] - recorded[k]:+.3g})"
        for k in differ
    )
    why = (
        f"changed since run {run_id}: {', '.join(changed)}"
        if changed
        else "the paper's code and data files are as the run recorded them (repro's or a "
        "library's code changed?)"
    )
    return Check(name, False, f"{shown}: the numbers changed; {why}", ev)


def check_finite(metrics: list[dict[str, float]], n: int) -> Check:
    bad = sorted({k for m in metrics for k, v in m.items() if not math.isfinite(v)})
    if bad:
        return Check("metrics finite", False, f"not finite: {', '.join(bad)} on {n} examples")
    return Check("metrics finite", True, f"{len(metrics[0])} metrics on {n} examples", {"n": n})


def eval_run(
    project: Project,
    run_id: str,
    split: str = "test",
    overrides: list[str] | None = None,
    input_file: str | None = None,
    code: str = "current",
    checkpoint: str = "best",
    console: Console | None = None,
):
    """Evaluate every seed's checkpoint of full run `run_id`; returns the new eval Run."""
    from repro.inference import full_run, load_trained, seeds_of

    console = console or Console()
    overrides = list(overrides or [])
    if split not in SPLITS:
        raise ReproError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    run = full_run(project, run_id)
    per_seed, n, trained = [], 0, None
    for seed in seeds_of(run):
        trained = load_trained(project, run, seed, code, checkpoint)
        examples = _examples(project, trained, split, overrides, input_file)
        n = len(examples)
        per_seed.append(evaluate(trained, examples, split, console))
    # the run recorded its best checkpoint's numbers on its own data: nothing else compares
    comparable = not (overrides or input_file) and checkpoint == "best"
    recorded = _recorded(run, split) if comparable else None
    changed = _changes(project, run, trained) if trained else []
    metrics = EvalMetrics(
        run.id,
        split,
        input_file,
        overrides,
        checkpoint,
        code,
        seeds_of(run),
        n,
        per_seed,
        recorded,
        changed,
    )
    checks = [check_finite(per_seed, n)]
    if recorded is not None:
        seeds = metrics.seeds
        checks += [
            check_as_recorded(run.id, s, m, r, changed)
            for s, m, r in zip(seeds, per_seed, recorded, strict=True)
        ]
    evidence = {"evaluated_run": run.id, "fitted_state": trained.fitted if trained else None}
    verdict = Verdict.from_checks(STAGE, checks, evidence, metrics)
    new = _record(project, run, trained, verdict, metrics)
    return new


def _examples(project, trained, split, overrides, input_file) -> list[dict]:
    """The raw examples to evaluate: a file (labels required), or a split of the run's data (or
    of the data its overrides name)."""
    from repro.inference import build_datamodule, data_overrides
    from repro.predict import read_examples

    if input_file is not None:
        if overrides:
            raise ReproError("--input replaces the data: drop the overrides, or the --input")
        examples = read_examples(trained.dm, input_file)
        for i, ex in enumerate(examples):
            trained.task.check_example(ex, f"{input_file}: example {i + 1}")
        return examples
    dm = trained.dm
    if overrides:
        config = data_overrides(trained.config, overrides)
        dm = build_datamodule(
            project, trained.run, trained.package, trained.code, config, trained.seed
        )
    examples = dm.load_splits()[split]
    if not examples:
        raise DataError(f"split {split}: expected examples to evaluate, found none")
    return examples


def _recorded(run, split: str) -> list[dict[str, float]] | None:
    """The run's own numbers of `split` per seed (val and test are recorded; train is not)."""
    from repro.gates.metrics import FullMetrics, load_metrics

    m = load_metrics(FullMetrics, run.record)
    if m is None or split == "train":
        return None
    return [{k: v for k, v in s.items() if k.startswith(f"{split}/")} for s in m.per_seed]


def _changes(project, run, trained) -> list[str]:
    """The paper's code files and data files that differ from what the run's fingerprint holds."""
    from repro.fingerprint import file_digest
    from repro.inference import code_changes, is_code_file

    changed = [] if trained.code == "recorded" else code_changes(project, run, trained.package)
    files = run.record.fingerprint.files if run.record.fingerprint else {}
    for f, h in sorted(files.items()):
        if not is_code_file(f) and file_digest(project.root / f) != h:
            changed.append(f)
    return changed


def _record(project: Project, run, trained, verdict: Verdict, metrics: EvalMetrics):
    """The eval run: its record (linked to the evaluated run), config, code and notebook line."""
    from repro.envinfo import env_info
    from repro.fingerprint import code_files, file_digest
    from repro.gates.metrics import to_record
    from repro.gitstate import git_state
    from repro.inference import data_overrides, is_code_file
    from repro.notebook import append_entry, format_entry
    from repro.records import create_run

    config = data_overrides(trained.config, metrics.overrides)
    code_dir = _code_dir(project, trained)
    code = code_files(code_dir)  # the paper's code as fingerprints name it (no __init__.py)
    folder = trained.package.replace(".", "/")
    files = {f"{folder}/{p.name}": file_digest(p) for p in code["data"] + code["model"]}
    recorded = run.record.fingerprint.files if run.record.fingerprint else {}
    files |= {f: file_digest(project.root / f) for f in recorded if not is_code_file(f)}
    new = create_run(
        project.runs_dir,
        run.paper,
        STAGE,
        config=config,
        overrides=list(metrics.overrides),
        provenance=dict(run.record.provenance or {}),
        fingerprint={"files": files},
        git=git_state(project.root),
        env=env_info(),
        links={"evaluated": run.id},
    )
    try:
        with new.guard():
            new.write_yaml("config.yaml", config)
            for path in sorted(code_dir.glob("*.py")):
                new.write_text(f"code/{path.name}", path.read_text(encoding="utf-8"))
            status = "passed" if verdict.passed else "failed"
            new.finish(verdict.to_dict(), status, metrics=to_record(metrics))
    finally:
        append_entry(project.notes_dir, run.paper, format_entry(new.record))
    return new


def _code_dir(project: Project, trained) -> Path:
    if trained.code == "recorded":
        return trained.run.dir / "code"
    return project.root / trained.package.replace(".", "/")


def print_comparison(console: Console, record: Record) -> None:
    """The eval's metrics per seed beside the run's recorded ones, and the difference."""
    from repro.gates.metrics import load_metrics

    m = load_metrics(EvalMetrics, record)
    if m is None:
        return
    t = Table(title=f"run {m.evaluated} evaluated again ({m.checkpoint} checkpoint, {m.code} code)")
    for name in ("metric", "seed", "now", "recorded", "difference"):
        t.add_column(name)
    for i, seed in enumerate(m.seeds):
        mine = m.per_seed[i]
        theirs = m.recorded[i] if m.recorded else {}
        for k in sorted(mine):
            r = theirs.get(k)
            diff = "" if r is None else ("same" if r == mine[k] else f"{mine[k] - r:+.4g}")
            t.add_row(escape(k), str(seed), f"{mine[k]:.6g}", "" if r is None else f"{r:.6g}", diff)
    console.print(t)
