"""The runs folder: a new run's id reserved and its folder created atomically; runs listed, found
by id and read, a record.json that cannot be read shown as 'corrupt' with the reason; runs whose
process died marked interrupted.

Layout: `<runs_root>/<paper>/<stage>/<run-id>/record.json`, run-id `YYYYMMDD-HHMMSS-xxxx` (UTC
time + 4 random hex chars). Reading never writes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from repro.errors import ReproError, StorageError
from repro.oneline import one_line
from repro.records.formats import upgrade
from repro.records.liveness import pid_alive, pid_start
from repro.records.lock import RunLocked
from repro.records.run import RECORD_FILE, Run, utcnow
from repro.storage import is_storage_error, storage_error

# A run directory is made under this hidden prefix and renamed into place once its record.json
# is in it: readers never see a run directory without a record (create_run).
CREATING = ".creating-"
ABANDONED_S = 600  # a .creating- directory without a record this old was left by a killed process
RUN_ID_RE = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")
_ID_PREFIX_RE = re.compile(r"^[0-9][0-9a-f-]{0,19}$")  # what `show`/`diff`/`--resume` accept
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # paper and stage become directory names
_MAX_ID_TRIES = 1000  # 65536 suffixes per second: running out means something else is wrong


def _suffix() -> str:
    return secrets.token_hex(2)


def _check_name(kind: str, value: str) -> None:
    if not _NAME_RE.match(value or ""):
        raise ReproError(
            f"{kind} name {value!r} is not usable as a directory name: "
            "expected letters, digits, '_', '-' or '.', starting with a letter or digit"
        )


def create_run(runs_root: Path, paper: str, stage: str, **initial: Any) -> Run:
    """Create `<runs_root>/<paper>/<stage>/<run-id>/` and its record.json with status 'running'.

    `initial` overrides or extends the record fields (config=..., git=..., env=..., links=...).
    A git dict with a non-empty "diff" has that text moved to `git.diff` next to the record.

    No reader ever sees the run directory without its record: it is filled under a hidden name
    (.creating-<run-id>) and renamed into place. A disk that is full or not writable raises
    StorageError naming the path, and leaves nothing behind.
    """
    _check_name("paper", paper)
    _check_name("stage", stage)
    stage_dir = Path(runs_root) / paper / stage
    try:
        stage_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise (
            storage_error(stage_dir, e, "a new run's record") if is_storage_error(e) else e
        ) from e
    _remove_abandoned(stage_dir)
    run_id, now = _reserve_id(stage_dir)
    t0 = time.monotonic()
    making = stage_dir / f"{CREATING}{run_id}"
    run = Run(making, _initial_record(run_id, paper, stage, now) | initial)
    try:
        run.lock()  # this process writes the run until it ends it (execute: unlock)
        git = run.data.get("git")
        if isinstance(git, dict) and git.get("diff"):
            git = dict(git)
            run.write_text("git.diff", git.pop("diff"))
            git["diff_file"] = "git.diff"
            run.update(git=git)
        run.save()
        os.rename(making, stage_dir / run_id)
    except BaseException as e:
        run.unlock()
        shutil.rmtree(making, ignore_errors=True)
        cause = e.__cause__ if isinstance(e, StorageError) else e
        if cause is not None and is_storage_error(cause):  # name the folder, not the hidden name
            raise storage_error(stage_dir, cause, "a new run's record") from cause
        raise
    run.dir = stage_dir / run_id
    run._t0 = t0
    return run


def _reserve_id(stage_dir: Path) -> tuple[str, datetime]:
    """A run id nobody else has or is creating: the hidden .creating-<id> directory is made with
    mkdir (atomic: one creator wins an id), and the id is ours if no finished run has it. The
    rename into place then cannot collide either: rename(2) only replaces an empty directory, and
    every run directory holds its record."""
    for _ in range(_MAX_ID_TRIES):
        now = utcnow()
        run_id = f"{now:%Y%m%d-%H%M%S}-{_suffix()}"
        try:
            os.mkdir(stage_dir / f"{CREATING}{run_id}")
        except FileExistsError:
            continue
        except OSError as e:
            raise (
                storage_error(stage_dir, e, "a new run's record") if is_storage_error(e) else e
            ) from e
        if not (stage_dir / run_id).exists():
            return run_id, now
        os.rmdir(stage_dir / f"{CREATING}{run_id}")
    raise RuntimeError(f"could not create a unique run directory under {stage_dir}")


def _initial_record(run_id: str, paper: str, stage: str, now: datetime) -> dict[str, Any]:
    from repro.records.record import SCHEMA

    pid = os.getpid()
    return {
        "id": run_id,
        "paper": paper,
        "stage": stage,
        "status": "running",
        "schema": SCHEMA,
        "verdict": None,
        "evidence": {},
        "metrics": {},
        "fingerprint": {},
        "config": {},
        "overrides": [],
        "provenance": {},
        "forced": False,
        "git": {},
        "env": {},
        "pid": pid,
        "host": socket.gethostname(),
        "pid_start": pid_start(pid),
        "started": now.isoformat(),
        "ended": None,
        "duration_s": None,
        "error": None,
        "links": {},
    }


def _remove_abandoned(stage_dir: Path) -> None:
    """Remove .creating- directories whose creator died before renaming them into place (a kill
    -9 inside create_run): their record names the process; one with no record yet is abandoned
    after ABANDONED_S. Never a live creator's."""
    try:
        making = [p for p in stage_dir.iterdir() if p.name.startswith(CREATING)]
    except OSError:
        return
    for d in making:
        try:
            record = json.loads((d / RECORD_FILE).read_text(encoding="utf-8"))
            alive = pid_alive(int(record["pid"]), record.get("pid_start"))
        except (OSError, ValueError, TypeError, KeyError):
            try:
                alive = time.time() - d.stat().st_mtime < ABANDONED_S
            except OSError:
                continue
        if not alive:
            shutil.rmtree(d, ignore_errors=True)


def open_joined(run_dir: Path) -> Run:
    """Rank 0's run, as another DDP rank sees it: readable, never written from this process."""
    run = _read_run(Path(run_dir))
    if run.corrupt is not None:
        raise ReproError(f"{run_dir}: expected rank 0's run record to join, found {run.corrupt}")
    run.readonly = True
    return run


def read_run(run_dir: Path) -> Run:
    """The run in `run_dir` as its record.json says now (status 'corrupt' when unreadable)."""
    return _read_run(Path(run_dir))


def _read_run(run_dir: Path) -> Run:
    """A Run from its directory; a record.json that is missing, not JSON, or not shaped like a
    run record (repro/records/record.py) gives a Run with status 'corrupt' and the reason."""
    from repro.records.record import Record  # imports the config's types: only when reading

    path = run_dir / RECORD_FILE
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except FileNotFoundError:
        return _corrupt(run_dir, "record.json is missing")
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _corrupt(
            run_dir, f"record.json: expected a JSON object, found {_why_unreadable(exc)}"
        )
    record = _parsed(text)
    if isinstance(record, Record):
        expected = {
            "id": run_dir.name,
            "paper": run_dir.parent.parent.name,
            "stage": run_dir.parent.name,
        }
        wrong = [k for k, v in expected.items() if getattr(record, k) != v]
        if wrong:
            k = wrong[0]
            found = getattr(record, k)
            record = f"{k!r}: expected {expected[k]!r} (the name of its folder), found {found!r}"
    if not isinstance(record, Record):
        return _corrupt(run_dir, f"record.json: {one_line(record, 300)}")
    return Run(run_dir, upgrade(data), record)


def _parsed(text: str) -> Any:
    """A record.json's text as a Record (or why it is not one), parsed once per text in a process:
    one command lists the runs many times (plan, progression, status), and a record only changes
    by being rewritten, i.e. as a new text. A Record is immutable, so runs read from the same text
    share it; it is parsed from its own copy of the JSON, never from a run's data that its writer
    may change."""
    from repro.records.record import UnreadableRecord, parse_record

    record = _PARSED.get(text)
    if record is None:
        try:
            # a record of an earlier repro, read in the current shape (formats.py)
            record = parse_record(upgrade(json.loads(text)))
        except UnreadableRecord as e:
            record = str(e)
        if len(_PARSED) >= 4096:  # a bound for a long-lived process (the warm worker)
            _PARSED.clear()
        _PARSED[text] = record
    return record


_PARSED: dict[str, Any] = {}  # text -> Record, or why it is not one


def _why_unreadable(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"a byte that is not UTF-8 ({exc.object[exc.start]:#04x} at offset {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return (
            "an empty file"
            if not exc.doc.strip()
            else f"invalid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}: cut off or edited by hand?)"
        )
    return f"an unreadable file ({exc.strerror or exc})" if isinstance(exc, OSError) else str(exc)


def _corrupt(run_dir: Path, why: str) -> Run:
    from repro.records.record import unreadable_stub

    stub = unreadable_stub(run_dir.name, run_dir.parent.parent.name, run_dir.parent.name)
    data = {"id": stub.id, "paper": stub.paper, "stage": stub.stage, "status": stub.status}
    return Run(run_dir, data, stub, corrupt=why)


def _run_dirs(runs_root: Path, paper: str | None = None, stage: str | None = None) -> list[Path]:
    for kind, name in (("paper", paper), ("stage", stage)):
        if name is not None:
            _check_name(kind, name)  # `--paper ../..` must not list folders outside runs/
    root = Path(runs_root)
    papers = [root / paper] if paper else _subdirs(root)
    dirs = []
    for paper_dir in papers:
        stages = [paper_dir / stage] if stage else _subdirs(paper_dir)
        for stage_dir in stages:
            dirs += [d for d in _subdirs(stage_dir) if RUN_ID_RE.match(d.name)]
    return dirs


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _newest_first_key(run: Run) -> tuple[str, str, str]:
    # The id starts with the UTC second; `started` (microseconds) orders runs within a second.
    return (run.id[:15], run.record.started or "", run.id)


def list_runs(runs_root: Path, paper: str | None = None, stage: str | None = None) -> list[Run]:
    """All runs under `runs_root` (optionally one paper / one stage), newest first. Never writes."""
    runs = [_read_run(d) for d in _run_dirs(runs_root, paper, stage)]
    return sorted(runs, key=_newest_first_key, reverse=True)


def load_run(runs_root: Path, run_id: str) -> Run:
    """The run with this id, or the only one whose id starts with it. An id that is not (the
    start of) one, or a run whose record cannot be read, is a ReproError naming it."""
    if not _ID_PREFIX_RE.match(run_id or ""):
        raise ReproError(
            f"no run with id {run_id!r}: expected a run id like 20261122-054012-ab12 or its first "
            "characters (digits, '-', a-f); run `repro log` to list the runs"
        )
    dirs = _run_dirs(runs_root)
    exact = [d for d in dirs if d.name == run_id]
    matches = exact or [d for d in dirs if d.name.startswith(run_id)]
    if len(matches) == 1:
        run = _read_run(matches[0])
        if run.corrupt is not None:
            raise ReproError(f"{run.unreadable}; repair or remove the file")
        return run
    if not matches:
        raise ReproError(
            f"no run with id {run_id!r} under {runs_root}; run `repro log` to list the runs"
        )
    names = ", ".join(sorted(d.name for d in matches)[:10])
    raise ReproError(
        f"run id prefix {run_id!r} matches {len(matches)} runs ({names}); "
        "give more characters of the id (see `repro log`)"
    )


def latest_run(runs_root: Path, paper: str, stage: str, status: str | None = None) -> Run | None:
    """The newest run of `paper`/`stage`, optionally only among those with this effective status."""
    for run in list_runs(runs_root, paper, stage):
        if status is None or run.effective_status == status:
            return run
    return None


def mark_dead_runs(runs_root: Path, paper: str | None = None) -> list[Run]:
    """Persist 'interrupted' for running records of this host whose process is gone (killed with
    -9, or the machine went down); returns those runs. Only this host's: a run on another host
    that fell silent may yet finish, so it stays a reading (effective_status), not a record.
    A run another process writes (its lock is held: a --resume taking it over) is left to it;
    a run is marked once, by whichever process claims it first (O_EXCL on `died.txt`)."""
    marked = []
    for run in list_runs(runs_root, paper):
        if run.status != "running" or run.record.host not in (None, socket.gethostname()):
            continue
        if run._dead_reason() is None:
            continue
        try:
            run.lock()
        except RunLocked:
            continue
        except StorageError:  # a run folder we cannot write: it stays a reading
            continue
        try:
            now = _read_run(run.dir)  # as it is now that no one else can write it
            reason = now._dead_reason() if now.status == "running" else None
            if reason is None or not _claim(run.path("died.txt"), reason):
                continue
            run.adopt(now)
            run.update(status="interrupted", status_reason=reason)
            run.save()
            marked.append(run)
        finally:
            run.unlock()
    return marked


def _claim(path: Path, reason: str) -> bool:
    """Create `path` (only if absent) saying who found the run dead and when."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError:  # claimed already, or a run folder we cannot write: it stays a reading
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{reason}; found by process {os.getpid()} at {utcnow().isoformat()}\n")
    return True
