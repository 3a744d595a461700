"""Whether the process that wrote a run record still runs: a pid and its start time, read from /proc."""

from __future__ import annotations

import os
from pathlib import Path


def pid_start(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22), None if unknown.

    Together with the pid it names one process: a recycled pid has a different start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may contain spaces: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # fields[0] is field 3 (state), so field 22 is fields[19]
    except (IndexError, ValueError):
        return None


def process_state(pid: int) -> str | None:
    """One-letter state from /proc/<pid>/stat ('Z' for a zombie), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0] if fields else None


def pid_alive(pid: int, started: int | None) -> bool:
    """Whether the process that wrote a record (pid + its start time) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    if process_state(pid) == "Z":  # killed but not yet reaped by its parent: it will never finish
        return False
    if started is not None:
        now_start = pid_start(pid)
        if now_start is not None and now_start != started:
            return False  # the pid was reused by another process
    return True
