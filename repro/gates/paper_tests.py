"""The paper's own tests (papers/<code>/tests) as a check of a gate: shapes runs those not marked
`slow`, full runs the `slow` ones before it trains (issue 22: BiMPM's tests caught four bugs that
every gate passed, and nothing ran them).

pytest runs in a subprocess of the same Python (imports isolated, nothing of the gate's state
leaks in or out), from the project root with the root first on PYTHONPATH, with its own `-m`, no
cache, and repro's plugin (repro/gates/pytest_report.py), which writes each outcome as a JSON
line: the check reads the failing tests' node ids and assertion messages from there. pytest's own
output is kept beside the record (<name>.log). The subprocess is started before the gate measures
anything and waited for at the end, so the tests run while the gate works.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.storage import shown_path
from repro.verdict import Check

SHOWN = 3  # failing tests a reason names before "and N more"
KEPT = 20  # failing node ids kept in the evidence
NO_TESTS = 5  # pytest's exit code when it collected nothing (or deselected everything)
OK_EXIT = (0, 1, NO_TESTS)  # 1: some tests failed (the report says which)
SHAPES_TESTS, SLOW_TESTS = "paper_tests", "paper_tests_slow"  # the checks' names


@dataclass(frozen=True)
class Where:
    """What a run of the paper's tests is: its check's name, the folder (as shown, relative to
    the project root), the pytest marker expression and the timeout with the key that sets it."""

    name: str
    folder: str
    marker: str
    timeout_s: float
    timeout_key: str


@dataclass
class PaperTests:
    """The paper's tests, running (or not: no folder); `result()` waits and judges them."""

    where: Where
    proc: subprocess.Popen | None
    report: Path
    log: Path
    started: float = field(default_factory=time.perf_counter)
    seconds: float | None = None
    off: str | None = None  # why they were not run (the config turned them off)
    reuse: Reuse | None = None  # where a pass on these same files is remembered

    def result(self) -> Check:
        if self.off is not None:
            return Check.not_measured(self.where.name, self.off)
        if self.reuse is not None and self.reuse.earlier is not None:
            return self.reuse.check(self.where)
        if self.proc is None:
            return _no_tests(self.where, {"folder": self.where.folder, "marker": self.where.marker})
        left = self.where.timeout_s - (time.perf_counter() - self.started)
        try:
            rc = self.proc.wait(timeout=max(left, 0.0))
        except subprocess.TimeoutExpired:
            self.cancel()
            rc = None
        finally:
            self.cancel()  # an interrupt (Ctrl-C) while waiting leaves no pytest behind
        self.seconds = time.perf_counter() - self.started
        check = judge_paper_tests(_read_lines(self.report), rc, self.seconds, self.where, self.log)
        if check.passed and self.reuse is not None:
            self.reuse.remember(check)
        return check

    def cancel(self) -> None:
        """Stop pytest and whatever it started (its own session: the whole group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


@dataclass
class Reuse:
    """A pass of the paper's tests, remembered by the digest of every file they can read here:
    the paper's folder (code, tests, samples), repro's own code, the project's conf/, its tests/
    helpers and fixtures, the Python and pytest versions and the marker. The same digest again reuses the pass
    (the check says so and names the run that measured it); any change runs them again."""

    path: Path  # .cache/paper_tests/<digest>.json
    run_id: str | None  # the run measuring now
    earlier: dict[str, Any] | None = None  # the remembered pass, when there is one

    @classmethod
    def open(cls, project, paper: str, marker: str, run_id: str | None) -> Reuse:
        key = tests_digest(project, paper, marker)
        path = project.root / ".cache" / "paper_tests" / f"{key}.json"
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = None
        return cls(path, run_id, earlier if isinstance(earlier, dict) else None)

    def check(self, where: Where) -> Check:
        e = self.earlier or {}
        ev = dict(e.get("evidence") or {}) | {
            "reused_from_run": e.get("run"),
            "digest": self.path.stem,
            "seconds": 0.0,
            "measured_seconds": (e.get("evidence") or {}).get("seconds"),
        }
        return Check(
            where.name,
            True,
            f"{e.get('reason', 'passed')}; reused: run {e.get('run')} passed them on these same "
            f"files (digest {self.path.stem[:12]} of papers/, conf/, repro's code, tests/); "
            "stage.shapes.paper_tests_reuse=false runs them again",
            ev,
        )

    def remember(self, check: Check) -> None:
        from repro.storage import atomic_write

        entry = {"run": self.run_id, "reason": check.reason, "evidence": check.evidence}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(entry, indent=1), "the paper tests' pass")
        except OSError:
            pass  # a read-only project measures them every time: nothing is wrong with the pass


def tests_digest(project, paper: str, marker: str) -> str:
    """sha256 of every file the paper's tests can read here (see Reuse), names and contents."""
    import hashlib
    from importlib.metadata import version

    import repro

    h = hashlib.sha256(f"{marker}|{sys.version}|pytest {version('pytest')}".encode())
    package = Path(repro.__file__).resolve().parent
    files = [p for p in project.paper_dir(paper).rglob("*") if "__pycache__" not in p.parts]
    files += list(package.rglob("*.py")) + list(project.conf_dir.rglob("*.yaml"))
    files += list((project.root / "tests").glob("*.py"))
    files += list((project.root / "tests" / "fixtures").rglob("*"))  # BiMPM's read the bad inputs
    for path in sorted(p for p in files if p.is_file()):
        h.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def start_paper_tests(project, paper: str, where: Where, out_dir: Path | None) -> PaperTests:
    """Start pytest on the paper's tests folder (`where.marker` selects them); its report and log
    go into `out_dir` (the run's directory; a temporary one when None)."""
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="repro-tests-"))
    report, log = out / f"{where.name}.jsonl", out / f"{where.name}.log"
    folder = project.paper_dir(paper) / "tests"
    if not folder.is_dir():
        return PaperTests(where, None, report, log)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(project.root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    cmd = [sys.executable, "-m", "pytest", str(folder.relative_to(project.root))]
    cmd += ["-m", where.marker, "-p", "no:cacheprovider", "-p", "repro.gates.pytest_report"]
    cmd += [f"--repro-report={report}", f"--rootdir={project.root}"]
    cmd += ["--continue-on-collection-errors", "-q", "--tb=short"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            cmd,
            cwd=project.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches repro, which stops the whole group
        )
    return PaperTests(where, proc, report, log)


def _read_lines(path: Path) -> list[dict[str, Any]] | None:
    """The plugin's JSON lines (a line cut short by a kill is dropped); None when pytest never
    loaded the plugin (no pytest installed, a conftest.py that fails, a bad option)."""
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# ---- judgement (pure) -------------------------------------------------------------------------
def tally(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Each test's outcome over its phases (a failed setup or teardown is an error, a failed call
    a failure; failures win over skips, skips over passes), the collection errors and the number
    of tests the marker deselected."""
    state: dict[str, str] = {}
    messages: dict[str, str] = {}
    rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 2}
    collect, deselected = [], 0
    for ln in lines:
        if ln.get("kind") == "collect":
            collect.append((ln["nodeid"], ln.get("message", "")))
        elif ln.get("kind") == "deselected":
            deselected += int(ln.get("count", 0))
        elif ln.get("kind") == "test":
            node, outcome = ln["nodeid"], ln["outcome"]
            if outcome == "failed":
                outcome = "failed" if ln.get("when") == "call" else "error"
                messages.setdefault(node, ln.get("message", ""))
            if node not in state or rank[outcome] > rank[state[node]]:
                state[node] = outcome
    counts = {k: sum(1 for s in state.values() if s == k) for k in rank}
    failing = [n for n, s in state.items() if s in ("failed", "error")]
    return {
        "counts": counts,
        "failing": failing,
        "messages": messages,
        "collect": collect,
        "deselected": deselected,
    }


def judge_paper_tests(
    lines: list[dict[str, Any]] | None, rc: int | None, seconds: float, where: Where, log: Path
) -> Check:
    """The paper's tests' outcomes as a Check: any failing test, collection error, crash of pytest
    or a run past the timeout fails it, naming the tests and their assertions; none to run is not
    measured; else passed, with the counts and the time. lines: the plugin's report (None: pytest
    never started it)."""
    started = lines is not None
    t = tally(lines or [])
    counts, failing, collect = t["counts"], t["failing"], t["collect"]
    ev: dict[str, Any] = {
        "folder": where.folder,
        "marker": where.marker,
        **counts,
        "deselected": t["deselected"],
        "collect_errors": [n for n, _ in collect],
        "failing": failing[:KEPT],
        "seconds": round(seconds, 2),
        "exit_code": rc,
        "log": shown_path(log),
    }
    ran = sum(counts.values())
    see = f"(pytest's output: {shown_path(log)})"
    if rc is None:
        done = f"{ran} finished, {len(failing)} of them failing"
        return Check(
            where.name,
            False,
            f"the tests in {where.folder} ({where.marker}) ran past {where.timeout_key} = "
            f"{where.timeout_s:g} s ({done}): raise it, or mark the slowest tests slow (they run "
            f"in the full stage's preflight) {see}",
            ev,
        )
    if failing or collect:
        return Check(where.name, False, _failures(t, ran, where) + f" {see}", ev)
    if rc not in OK_EXIT or not started:
        return Check(
            where.name,
            False,
            f"pytest could not run the tests in {where.folder} (exit code {rc}): "
            f"{_last_line(log)} {see}",
            ev,
        )
    if counts["passed"] == 0:
        return _no_tests(where, ev, counts["skipped"], t["deselected"])
    skipped = f", {counts['skipped']} skipped" if counts["skipped"] else ""
    return Check(
        where.name,
        True,
        f"{counts['passed']} tests in {where.folder} passed ({_selection(where)}{skipped}) "
        f"in {seconds:.1f} s",
        ev,
    )


def _failures(t: dict[str, Any], ran: int, where: Where) -> str:
    """ "2 of 146 tests in papers/x/tests failed: a.py::t: assert 1 == 2; ... and 1 more"."""
    items = [f"{n} could not be collected: {m}" for n, m in t["collect"]]
    items += [f"{n}: {t['messages'].get(n) or 'failed'}" for n in t["failing"]]
    shown = "; ".join(items[:SHOWN])
    more = f"; and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    head = f"{len(t['failing'])} of {ran} tests in {where.folder} failed"
    if t["collect"]:
        files = len(t["collect"])
        head += f", {files} file{'s' if files > 1 else ''} could not be collected"
    return f"{head} ({_selection(where)}): {shown}{more}"


def _selection(where: Where) -> str:
    return "those marked slow" if where.marker == "slow" else f"-m '{where.marker}'"


def _no_tests(where: Where, ev: dict[str, Any], skipped: int = 0, deselected: int = 0) -> Check:
    if skipped:
        why = f"all {skipped} tests in {where.folder} ({_selection(where)}) were skipped"
    elif where.marker == "slow":
        why = f"no test in {where.folder} is marked slow"
    elif deselected:
        why = (
            f"{where.folder} has no tests outside the {deselected} marked slow (they run in the "
            "full stage's preflight): add a fast one"
        )
    else:
        why = f"{where.folder} has no tests: add one (repro new scaffolds one)"
    return Check.not_measured(where.name, why, ev)


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1].strip() if lines else "no output"


# ---- the gates' calls -------------------------------------------------------------------------
def start_stage_tests(ctx, stage: str) -> PaperTests:
    """Start the paper's tests that `stage` runs: shapes those not marked slow, full the slow
    ones (its preflight), into the run's directory."""
    cfg = ctx.cfg.stage
    where = {
        "shapes": (SHAPES_TESTS, "not slow", cfg.shapes.paper_tests_timeout_s, "paper_tests"),
        "full": (SLOW_TESTS, "slow", cfg.full.slow_tests_timeout_s, "slow_tests"),
    }
    name, marker, timeout, key = where[stage]
    folder = f"papers/{ctx.project.code_of(ctx.paper)}/tests"
    w = Where(name, folder, marker, float(timeout), f"stage.{stage}.{key}_timeout_s")
    if not cfg.shapes.paper_tests:
        return PaperTests(w, None, Path(), Path(), off="stage.shapes.paper_tests is false")
    out = ctx.run.dir if ctx.run is not None else None
    reuse = None
    if cfg.shapes.paper_tests_reuse:
        run_id = ctx.run.id if ctx.run is not None else None
        reuse = Reuse.open(ctx.project, ctx.paper, marker, run_id)
        if reuse.earlier is not None:
            return PaperTests(w, None, Path(), Path(), reuse=reuse)
    tests = start_paper_tests(ctx.project, ctx.paper, w, out)
    tests.reuse = reuse
    return tests


def with_paper_tests(verdict, check: Check):
    """The gate's verdict with the paper's tests' check added (their seconds in the evidence)."""
    from repro.verdict import Verdict

    evidence = dict(verdict.evidence) | {f"{check.name}_s": check.evidence.get("seconds")}
    return Verdict.from_checks(verdict.stage, verdict.checks + [check], evidence, verdict.metrics)


def slow_tests_first(ctx) -> list[Check]:
    """The full stage's preflight: the paper's tests marked slow, run before any training (on rank
    0 only: other DDP ranks start after it). [] when none is marked slow."""
    from repro.train.distributed import is_rank_zero

    if not is_rank_zero():
        return []
    tests = start_stage_tests(ctx, "full")
    check = tests.result()
    return [check] if check.measured or tests.off else []
