"""Milestones: which stages have passed, which are STALE, and what must run before a stage.

One rule, used by `status`, the refusal and the report alike: a stage is PASSED when its latest
*milestone run* on the current fingerprint of the paper's base config passed. A milestone run is
an unforced run with no command-line overrides (a re-run or a `repro judge` of one counts).
Runs with overrides or `--force` are experiments around the milestone: listed and marked, never
replacing it. Every later stage requires all earlier ones.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from repro.config.compose import Resolved, compose
from repro.fingerprint import fingerprint
from repro.gates import STAGES
from repro.paper_code import PaperCode
from repro.project import Project

REJUDGE = "REJUDGE"  # passed, but the paper's targets changed since: `repro judge` re-applies them


@dataclass
class StageState:
    stage: str
    state: str  # PASS | FAIL | STALE | REJUDGE | RUNNING | INTERRUPTED | ERROR | CORRUPT | not run
    run_id: str | None = None
    when: str | None = None
    reason: str = ""
    changed: list[str] = field(default_factory=list)  # STALE: the fingerprint parts and files
    around: str = ""  # the runs with overrides or --force since the milestone, in a few words
    warnings: list[str] = field(default_factory=list)  # the run's verdict's (full: regression)

    @property
    def passed(self) -> bool:
        return self.state == "PASS"


def stage_command(stage: str, paper: str, overrides: list[str]) -> str:
    """The command line that runs `stage` again: `repro stage <stage> --paper <p> <overrides>`."""
    return " ".join(["repro stage", stage, "--paper", paper, *map(shlex.quote, overrides)])


def current_fingerprint(
    project: Project,
    paper: str,
    resolved: Resolved,
    data_files: list[str] | None = None,
    code: PaperCode | None = None,
) -> dict:
    """The fingerprint of the code, config and data now. Without `data_files`, the files the last
    data run read with the same data code and config (what `status` can know without importing
    the paper's code). `code`: the paper's files as this command imports them (else as on disk)."""
    files = data_files
    if files is None:
        probe = fingerprint(resolved, project.paper_dir(paper), [], code)
        files = known_data_files(project.runs_dir, paper, probe["parts"])
    return fingerprint(resolved, project.paper_dir(paper), files, code)


def milestones(project: Project, paper: str) -> list[StageState]:
    """The status rows of the paper's base config (no overrides): the milestone rule."""
    return stage_states(
        project.runs_dir, paper, current_fingerprint(project, paper, compose(project, paper, []))
    )


def is_milestone_run(run) -> bool:
    """An unforced run of the base config (no overrides), with a readable record."""
    rec = run.record
    return run.corrupt is None and not rec.forced and not rec.overrides


def _stage_fp(run, stage: str) -> str | None:
    return run.record.fingerprint_of(stage)


def known_data_files(runs_dir: Path, paper: str, parts: dict[str, str]) -> list[str]:
    """The data files that the newest data run with the same data code and data config read (so
    `status` need not import the paper's code); [] when no such run recorded them."""
    from repro.gates.metrics import DataMetrics, load_metrics
    from repro.records import list_runs

    for run in list_runs(runs_dir, paper=paper, stage="data"):
        fp = run.record.fingerprint
        theirs = fp.parts if fp else {}
        if any(theirs.get(k) != parts.get(k) for k in ("code.data", "config.data")):
            continue
        metrics = load_metrics(DataMetrics, run.record)
        if metrics is not None:
            return list(metrics.data_files)
    return []


def stage_states(runs_dir: Path, paper: str, current: dict) -> list[StageState]:
    """One row per stage, by the milestone rule, against `current` (the base config's fingerprint)."""
    from repro.records import list_runs

    return [
        stage_state(stage, list_runs(runs_dir, paper=paper, stage=stage), current)
        for stage in STAGES
    ]


def stage_state(stage: str, runs: list, current: dict) -> StageState:
    """The milestone state of one stage from its runs (newest first). Records that cannot be read
    are skipped, but when the newest run's is one of them the row is CORRUPT: what that run
    decided is unknown, so no older verdict can stand for the stage."""
    row = _milestone_state(stage, [r for r in runs if r.corrupt is None], current)
    newest = runs[0] if runs else None
    if newest is None or newest.corrupt is None or (row.run_id or "") > newest.id:
        return row
    return StageState(
        stage,
        "CORRUPT",
        newest.id,
        _id_time(newest.id),
        f"{newest.unreadable}: the newest run's verdict is unknown; repair or remove the file, "
        "or run the stage again",
        [],
        row.around,
    )


def _id_time(run_id: str) -> str | None:
    """The start time a run id begins with (YYYYMMDD-HHMMSS, UTC) as ISO text."""
    from datetime import datetime

    try:
        return datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").isoformat()
    except ValueError:
        return None


def _milestone_state(stage: str, runs: list, current: dict) -> StageState:
    from repro.fingerprint import changed_parts

    milestones = [r for r in runs if is_milestone_run(r)]
    on_current = [r for r in milestones if _stage_fp(r, stage) == current["stages"][stage]]
    around = _around(runs, (on_current or milestones or [None])[0])
    if on_current:
        row = _row(stage, on_current[0], around)
        fp = on_current[0].record.fingerprint
        judged = fp.judged.get(stage) if fp else None
        if (
            row.state == "PASS"
            and judged is not None
            and judged != (current.get("judged") or {}).get(stage)
        ):
            row.state = REJUDGE
            row.reason = (
                f"the paper's targets changed since this verdict: run `repro judge {row.run_id}`"
            )
        return row
    if not milestones:
        return StageState(stage, "not run", around=around)
    last = milestones[0]
    fp = last.record.fingerprint
    changed = changed_parts(fp.to_dict() if fp else {}, current, stage)
    what = ", ".join(changed) or "the fingerprint"
    verdict = _row(stage, last, "").state
    return StageState(
        stage,
        "STALE",
        last.id,
        last.record.started,
        f"{verdict} on other code/config/data; changed since: {what}; re-run it",
        changed,
        around,
    )


def _row(stage: str, run, around: str) -> StageState:
    rec, status = run.record, run.effective_status
    reason = rec.reason or run.status_reason or rec.status_reason or ""
    if status == "error":
        lines = (rec.error or "").strip().splitlines()
        reason = lines[-1] if lines else reason  # the exception line of the traceback
    state = {"passed": "PASS", "failed": "FAIL"}.get(status, status.upper())
    evidence = (rec.verdict.evidence if rec.verdict else None) or {}
    warnings = list(evidence.get("warnings") or [])
    return StageState(stage, state, run.id, rec.started, reason, [], around, warnings)


def _around(runs: list, milestone) -> str:
    """'2 runs with overrides or --force since (newest: FAIL 20261130-...)', or ''. Runs come
    newest first (start time to the microsecond): those before the milestone are newer than it."""
    newer = runs[: runs.index(milestone)] if milestone is not None else runs
    others = [r for r in newer if not is_milestone_run(r)]
    if not others:
        return ""
    newest = others[0]
    state = {"passed": "PASS", "failed": "FAIL"}.get(
        newest.effective_status, newest.effective_status
    )
    n = len(others)
    return f"{n} run{'s' if n > 1 else ''} with overrides or --force since (newest {newest.id}: {state})"


def missing_prerequisites(rows: list[StageState], stage: str) -> list[str]:
    """Earlier stages whose milestone has not passed on the current fingerprint."""
    earlier = STAGES[: STAGES.index(stage)]
    by_stage = {r.stage: r for r in rows}
    return [s for s in earlier if not by_stage[s].passed]


def passed_on(runs_dir: Path, paper: str, stage: str, fingerprint: dict) -> bool:
    """Whether an unforced run of `stage` passed on this fingerprint (with whatever overrides
    produced it): what a run with overrides needs of the earlier stages its overrides change."""
    from repro.records import list_runs

    want = fingerprint["stages"][stage]
    return any(
        r.effective_status == "passed" and not r.record.forced and _stage_fp(r, stage) == want
        for r in list_runs(runs_dir, paper=paper, stage=stage)
    )
