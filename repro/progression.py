"""Which stages have passed on the current code, which are STALE, and what must run first."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from repro.fingerprint import STAGES

CHEAP_STAGES = ("data", "shapes")  # re-run automatically when stale; the others are named


@dataclass
class StageState:
    stage: str
    state: str  # PASS | FAIL | STALE | RUNNING | INTERRUPTED | ERROR | not run
    run_id: str | None = None
    when: str | None = None
    reason: str = ""
    current_pass: bool = False  # a passed run exists on the current fingerprint


def data_files_cache(runs_dir: Path, paper: str) -> Path:
    return runs_dir / paper / "data_files.json"


def known_data_files(runs_dir: Path, paper: str) -> list[str]:
    """The data files the last data stage read (so `status` need not import the paper's code)."""
    path = data_files_cache(runs_dir, paper)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
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
            r.effective_status == "passed" and r.record.get("fingerprint", {}).get("stages", {}).get(stage) == fp_now
            for r in runs
        )
        reason = (rec.get("verdict") or {}).get("reason") or rec.get("status_reason") or ""
        if status == "passed":
            state = "PASS" if rec.get("fingerprint", {}).get("stages", {}).get(stage) == fp_now else "STALE"
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
