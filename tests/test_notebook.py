"""The lab notebook: entries are appended one line each; what people wrote stays as it was."""

from __future__ import annotations

from repro.notebook import append_entry
from repro.notebook import format_entry as _format_entry
from repro.records.record import parse_record

RECORD = {
    "id": "20261122-054012-ab12",
    "paper": "toy",
    "stage": "overfit",
    "status": "passed",
    "started": "2026-11-22T05:40:12.000001+00:00",
    "ended": "2026-11-22T05:41:30.5+00:00",
    "verdict": {"stage": "overfit", "passed": True, "reason": "train loss 0.003 < 0.05"},
}


def format_entry(record: dict) -> str:
    """The line of a record given as record.json's JSON (read as repro reads it)."""
    return _format_entry(parse_record(record))


def test_format_entry_pass():
    assert format_entry(RECORD) == (
        "- 2026-11-22 05:41 UTC · overfit · PASS · 20261122-054012-ab12 · train loss 0.003 < 0.05"
    )


def test_format_entry_fail_forced_and_long_reason_truncated():
    reason = "loss " + "x" * 400 + "\nsecond line"
    rec = dict(RECORD, status="failed", forced=True, verdict={"passed": False, "reason": reason})
    entry = format_entry(rec)
    assert " · FAIL (forced) · " in entry
    assert entry.endswith("…") and "\n" not in entry
    assert len(entry.split(" · ")[-1]) == 160


def test_format_entry_error_uses_last_traceback_line():
    rec = dict(RECORD, status="error", verdict=None)
    rec["error"] = (
        'Traceback (most recent call last):\n  File "x"\nZeroDivisionError: division by zero\n'
    )
    assert format_entry(rec).endswith(
        "· ERROR · 20261122-054012-ab12 · ZeroDivisionError: division by zero"
    )


def test_format_entry_interrupted_converts_to_utc():
    rec = dict(RECORD, status="interrupted", verdict=None, ended="2026-11-22T07:41:00+02:00")
    rec["status_reason"] = "interrupted by SIGTERM"
    assert format_entry(rec) == (
        "- 2026-11-22 05:41 UTC · overfit · INTERRUPTED · 20261122-054012-ab12 · interrupted by SIGTERM"
    )


def test_append_creates_file_with_header(tmp_path):
    path = append_entry(tmp_path / "notes", "bimpm", "- first")
    assert path == tmp_path / "notes" / "bimpm.md"
    assert path.read_text(encoding="utf-8") == "# bimpm — lab notebook\n\n- first\n"


def test_append_keeps_what_people_wrote(tmp_path):
    append_entry(tmp_path, "bimpm", "- first")
    path = tmp_path / "bimpm.md"
    human = path.read_text(encoding="utf-8") + "\nTried lr=1e-2: diverged.\n  indented — ünïcode\n"
    path.write_text(human, encoding="utf-8")
    append_entry(tmp_path, "bimpm", "- second")
    assert path.read_text(encoding="utf-8") == human + "- second\n"


def test_append_after_note_without_final_newline(tmp_path):
    path = tmp_path / "bimpm.md"
    path.write_text("# my own header\nno newline at end", encoding="utf-8")
    append_entry(tmp_path, "bimpm", "- entry\nwith a newline")
    assert path.read_text(encoding="utf-8") == (
        "# my own header\nno newline at end\n- entry with a newline\n"
    )
