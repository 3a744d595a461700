"""The run record: one directory per stage run, with a `record.json` that is always valid JSON.

run.py: one run's lifecycle (save, lock, guard, finish); store.py: the runs folder (create,
list, load, mark the dead); lock.py: one writer per run; liveness.py: whether a process still runs.
"""

from repro.records.lock import RunLocked
from repro.records.run import HEARTBEAT_DEAD_S, RECORD_FILE, HeldInterrupts, Run
from repro.records.store import (
    RUN_ID_RE,
    create_run,
    latest_run,
    list_runs,
    load_run,
    mark_dead_runs,
    open_joined,
    read_run,
)

__all__ = [
    "HEARTBEAT_DEAD_S",
    "RECORD_FILE",
    "RUN_ID_RE",
    "HeldInterrupts",
    "Run",
    "RunLocked",
    "create_run",
    "latest_run",
    "list_runs",
    "load_run",
    "mark_dead_runs",
    "open_joined",
    "read_run",
]
