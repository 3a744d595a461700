"""The lab notebook `notes/<paper>.md`: one appended line per gate run, people's notes between."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from repro.oneline import one_line
from repro.storage import append_text, is_storage_error, storage_error, symlink_refused

if TYPE_CHECKING:
    from repro.records.record import Record

MAX_REASON_CHARS = 160


def notebook_path(notes_dir: Path, paper: str) -> Path:
    return Path(notes_dir) / f"{paper}.md"


def append_entry(notes_dir: Path, paper: str, line: str) -> Path:
    """Append one line to `notes/<paper>.md`, creating it with a header; never rewrites the file.

    A notebook (or notes/) that is read-only, or a full disk, raises StorageError naming it; so
    does a notebook that is a symbolic link (it could aim at any file: issue 20).
    """
    path = notebook_path(notes_dir, paper)
    try:
        return _append(path, paper, line)
    except OSError as e:
        if is_storage_error(e):
            raise storage_error(path, e, "the lab notebook line") from e
        raise


def _append(path: Path, paper: str, line: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = one_line(line, 100_000)  # one entry is one line, whatever the reason text held
    if path.is_symlink():
        raise symlink_refused(path, "the lab notebook line")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"# {paper} — lab notebook\n\n")
    needs_newline = False
    with open(
        os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb"
    ) as f:  # a hand-edited file may lack its final newline
        if f.seek(0, 2) > 0:
            f.seek(-1, 2)
            needs_newline = f.read(1) != b"\n"
    append_text(path, ("\n" if needs_newline else "") + line + "\n", "the lab notebook line")
    return path


def _label(record: Record) -> str:
    verdict = record.verdict
    status = record.status or "unknown"
    if verdict is not None and verdict.passed is not None and status in ("passed", "failed"):
        label = "PASS" if verdict.passed else "FAIL"
    else:
        label = {"passed": "PASS", "failed": "FAIL"}.get(status, status.upper())
    return label + (" (forced)" if record.forced else "")


def _reason(record: Record) -> str:
    if record.reason:
        return record.reason
    if record.status_reason:
        return record.status_reason
    if record.error:  # a traceback: its last line names the exception
        lines = [ln for ln in record.error.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else ""
    return ""


def format_entry(record: Record) -> str:
    """`- 2026-11-22 05:40 UTC · overfit · PASS · 20261122-054012-ab12 · [overrides: ...] · <reason>`."""
    when = record.ended or record.started
    try:
        moment = datetime.fromisoformat(when)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
        stamp = moment.strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        stamp = "????-??-?? ??:?? UTC"
    parts = [stamp, record.stage, _label(record), record.id]
    if record.overrides:  # an experiment around the milestone: say which
        parts.append("overrides: " + " ".join(record.overrides))
    judged = (record.links or {}).get("judged")
    if judged:
        parts.append(f"judged again: {judged}")
    reason = one_line(_reason(record), MAX_REASON_CHARS)
    if reason:
        parts.append(reason)
    return "- " + " · ".join(parts)
