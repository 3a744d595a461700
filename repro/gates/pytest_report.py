"""A pytest plugin that repro loads into the paper's own tests (`-p repro.gates.pytest_report`, in
the subprocess repro/gates/paper_tests.py starts): it registers the `slow` marker (a project made
by `repro init` has no pytest configuration of its own) and writes one JSON line per test phase
and per collection error to the file `--repro-report` names. Imports nothing heavy."""

from __future__ import annotations

import json
from typing import IO, Any

_out: IO[str] | None = None
MESSAGE_LINES = 2  # the first lines of a failure's message (the assertion, its first explanation)
MESSAGE_CHARS = 300


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--repro-report", default=None, help="repro: write each test's outcome there (JSON lines)"
    )


def pytest_configure(config) -> None:
    global _out
    config.addinivalue_line(
        "markers", "slow: a paper test that runs in the full stage's preflight, not in shapes"
    )
    path = config.getoption("--repro-report")
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: its controller writes the reports
        return
    if path and _out is None:
        _out = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed in pytest_unconfigure)


def pytest_unconfigure(config) -> None:
    global _out
    if _out is not None:
        _out.close()
        _out = None


def pytest_collectreport(report) -> None:
    if report.failed:
        _write({"kind": "collect", "nodeid": report.nodeid, "message": message(report)})


def pytest_deselected(items) -> None:
    _write({"kind": "deselected", "count": len(items)})


def pytest_runtest_logreport(report) -> None:
    line: dict[str, Any] = {
        "kind": "test",
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "seconds": round(float(report.duration), 4),
    }
    if report.failed:
        line["message"] = message(report)
    _write(line)


def _write(line: dict[str, Any]) -> None:
    if _out is not None:
        _out.write(json.dumps(line) + "\n")
        _out.flush()  # a run killed at its timeout keeps what finished


def message(report) -> str:
    """A failure's first lines: the exception and its message (pytest's "E   " lines), else the
    report's last line."""
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = crash.message if crash is not None else ""
    if not text:
        full = report.longreprtext or ""
        errors = [ln[1:].strip() for ln in full.splitlines() if ln.startswith("E ")]
        text = "\n".join(errors) or (full.strip().splitlines() or [""])[-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()][:MESSAGE_LINES]
    short = " / ".join(lines)
    return short if len(short) <= MESSAGE_CHARS else short[: MESSAGE_CHARS - 3] + "..."
