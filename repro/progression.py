"""Which stages have passed on the current code, which are STALE, and what must run first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repro.gates import STAGES


@dataclass
class StageState:
    stage: str
    state: str  # PASS | FAIL | STALE | RUNNING | INTERRUPTED | ERROR | not run
    run_id: str | None = None
    when: str | None = None
    reason: str = ""
    current_pass: bool = False  # a passed run exists on the current fingerprint


def known_data_files(runs_dir: Path, paper: str, parts: dict[str, str]) -> list[str]:
    """The data files that the newest data run with the same data code and data config read (so
    `status` need not import the paper's code); [] when no such run recorded them."""
    from repro.gates.metrics import DataMetrics, load_metrics
    from repro.records import list_runs

    for run in list_runs(runs_dir, paper=paper, stage="data"):
        theirs = (run.record.get("fingerprint") or {}).get("parts") or {}
        if any(theirs.get(k) != parts.get(k) for k in ("code.data", "config.data")):
            continue
        metrics = load_metrics(DataMetrics, run.record)
        if metrics is not None:
            return list(metrics.data_files)
    return []


def stage_states(runs_dir: Path, paper: str, current: dict) -> list[StageState]:
    """One row per stage: the newest run's outcome, STALE if it passed on another fingerprint."""
    from repro.records import list_runs

    rows = []
    for stage in STAGES:
        runs = list_runs(runs_dir, paper=paper, stage=stage)
        if not runs:
            rows.append(StageState(stage, "not run"))
            continue
        newest = runs[0]
        rec = newest.record
        status = newest.effective_status
        fp_now = current["stages"][stage]
        current_pass = any(
            r.effective_status == "passed"
            and r.record.get("fingerprint", {}).get("stages", {}).get(stage) == fp_now
            for r in runs
        )
        reason = (rec.get("verdict") or {}).get("reason") or rec.get("status_reason") or ""
        if status == "passed":
            state = (
                "PASS"
                if rec.get("fingerprint", {}).get("stages", {}).get(stage) == fp_now
                else "STALE"
            )
            if state == "STALE":
                reason = "passed on other code/config/data; re-run it. " + reason
        elif status == "failed":
            state = "FAIL"
        elif status == "error":
            state = "ERROR"
            lines = (rec.get("error") or "").strip().splitlines()
            reason = lines[-1] if lines else ""  # the exception line of the traceback
        else:
            state = status.upper()
        rows.append(StageState(stage, state, newest.id, rec.get("started"), reason, current_pass))
    return rows


def missing_prerequisites(rows: list[StageState], stage: str) -> list[str]:
    """Earlier stages without a passed run on the current fingerprint."""
    earlier = STAGES[: STAGES.index(stage)]
    by_stage = {r.stage: r for r in rows}
    return [s for s in earlier if not by_stage[s].current_pass]
