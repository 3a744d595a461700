"""The run record: one directory per stage run, with a `record.json` that is always valid JSON.

Layout: `<runs_root>/<paper>/<stage>/<run-id>/record.json`, run-id `YYYYMMDD-HHMMSS-xxxx` (UTC
time + 4 random hex chars). The directory is the source of truth; reading never writes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from repro.errors import ReproError, StorageError
from repro.oneline import one_line
from repro.storage import (
    atomic_write,
    is_storage_error,
    shown_path,
    storage_error,
    symlink_refused,
)

INTERRUPTS = (signal.SIGINT, signal.SIGTERM)  # what a run records as 'interrupted'

STATUSES = ("running", "passed", "failed", "error", "interrupted")
HEARTBEAT_S = 30  # a running run touches its record.json this often (Run.heartbeat)
HEARTBEAT_DEAD_S = 4 * HEARTBEAT_S  # silence after which a run on another host counts as dead
# What a gate may add to its record besides the verdict (Run.annex).
ANNEX_FIELDS = (
    "forecast",
    "actual",
    "init",
    "model",
    "peak_rss_mb",
    "env",
    "nondeterministic",
    "preflight",
)
RECORD_FILE = "record.json"
# One writer per run (issue 20): the process writing a run folder holds an advisory lock (flock) on
# this file, which names it (pid, host, command). The kernel drops the lock when that process dies.
LOCK_FILE = ".lock"
# A run directory is made under this hidden prefix and renamed into place once its record.json
# is in it: readers never see a run directory without a record (create_run).
CREATING = ".creating-"
ABANDONED_S = 600
# What a final save writes when nothing else fits on a full disk (Run._save_in_place).
FINAL_FIELDS = (
    "status",
    "status_reason",
    "error",
    "ended",
    "duration_s",
)  # a .creating- directory without a record this old was left by a killed process
RUN_ID_RE = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")
_ID_PREFIX_RE = re.compile(r"^[0-9][0-9a-f-]{0,19}$")  # what `show`/`diff`/`--resume` accept
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # paper and stage become directory names
_MAX_ID_TRIES = 1000  # 65536 suffixes per second: running out means something else is wrong


_UNSET = object()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _suffix() -> str:
    return secrets.token_hex(2)


def _pid_start(pid: int) -> int | None:
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


def _process_state(pid: int) -> str | None:
    """One-letter state from /proc/<pid>/stat ('Z' for a zombie), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0] if fields else None


def _pid_alive(pid: int, pid_start: int | None) -> bool:
    """Whether the process that wrote a record (pid + its start time) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    if _process_state(pid) == "Z":  # killed but not yet reaped by its parent: it will never finish
        return False
    if pid_start is not None:
        now_start = _pid_start(pid)
        if now_start is not None and now_start != pid_start:
            return False  # the pid was reused by another process
    return True


class RunLocked(ReproError):
    """Another process is writing this run (Run.lock): the message names it."""


def _open_lock(run_dir: Path) -> int:
    """The run's lock file, opened (created) without following a symbolic link."""
    path = Path(run_dir) / LOCK_FILE
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise symlink_refused(path, "the run's lock") from e
        raise (storage_error(path, e, "the run's lock") if is_storage_error(e) else e) from e


def _holder_info() -> dict[str, Any]:
    import sys

    own = sys.argv and Path(sys.argv[0]).name in ("repro", "__main__.py")  # the CLI, python -m
    argv = ["repro", *sys.argv[1:]] if own else sys.argv
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": _utcnow().isoformat(timespec="seconds"),
        "command": " ".join(argv)[:300],
    }


def _holder(fd: int) -> str:
    """Who holds a run's lock, from what it wrote in the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", errors="replace"))
        where = f"process {int(info['pid'])} on host {info.get('host')}"
    except (OSError, ValueError, TypeError, KeyError):
        return "another process (its lock file does not say which)"
    command = f"`{info['command']}`, " if info.get("command") else ""
    return f"{where} ({command}since {info.get('since')} UTC)"


def _json_default(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def _check_name(kind: str, value: str) -> None:
    if not _NAME_RE.match(value or ""):
        raise ReproError(
            f"{kind} name {value!r} is not usable as a directory name: "
            "expected letters, digits, '_', '-' or '.', starting with a letter or digit"
        )


class Run:
    """One stage run: its directory and its record (a plain dict saved as record.json)."""

    def __init__(
        self, dir: Path, record: dict[str, Any], corrupt: str | None = None, readonly: bool = False
    ):
        self.dir = Path(dir)
        self.record = record
        # Why record.json could not be read, starting "record.json" (see `unreadable`); None when it could.
        self.corrupt = corrupt
        # A DDP rank > 0 joins rank 0's run: same directory, but it writes nothing of its own.
        self.readonly = readonly
        self._t0: float | None = None  # monotonic start, set by create_run in this process
        self._lock_fd: int | None = None  # held while this process writes the run (lock())
        self._signal: str | None = None

    def __repr__(self) -> str:
        return f"Run({self.id!r}, paper={self.paper!r}, stage={self.stage!r}, status={self.effective_status!r})"

    @property
    def id(self) -> str:
        return self.record.get("id") or self.dir.name

    @property
    def paper(self) -> str:
        return self.record.get("paper") or self.dir.parent.parent.name

    @property
    def stage(self) -> str:
        return self.record.get("stage") or self.dir.parent.name

    @property
    def status(self) -> str:
        """The status as written in record.json ('corrupt' when it cannot be read)."""
        if self.corrupt is not None:
            return "corrupt"
        return self.record.get("status", "corrupt")

    @property
    def effective_status(self) -> str:
        """The status to show: a 'running' record whose process is gone is 'interrupted'."""
        status = self.status
        if status == "running" and self._dead_reason() is not None:
            return "interrupted"
        return status

    @property
    def status_reason(self) -> str | None:
        """Why the run has its effective status, when that is not plain from the record."""
        if self.corrupt is not None:
            return self.corrupt
        if self.status == "running":
            return self._dead_reason()
        return self.record.get("status_reason")

    def _dead_reason(self) -> str | None:
        pid = self.record.get("pid")
        if not isinstance(pid, int):
            return "record has no pid: the process that wrote it is unknown"
        host = self.record.get("host")
        if host not in (None, socket.gethostname()):
            # Another machine's process (a compute node): its pid means nothing here, so judge it
            # by the heartbeat the run keeps (record.json's mtime, refreshed every HEARTBEAT_S).
            try:
                silent = time.time() - self.path(RECORD_FILE).stat().st_mtime
            except OSError:
                return None
            if silent <= HEARTBEAT_DEAD_S:
                return None
            return f"no heartbeat from host {host} for {silent:.0f} s (the run refreshes it every {HEARTBEAT_S} s)"
        if _pid_alive(pid, self.record.get("pid_start")):
            return None
        return f"process {pid} died without finishing"

    @contextmanager
    def heartbeat(self) -> Iterator[None]:
        """While the block runs, touch record.json every HEARTBEAT_S seconds: how a process on
        another host tells that this run is alive (it cannot check our pid)."""
        if self.readonly:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                try:
                    os.utime(self.path(RECORD_FILE), follow_symlinks=False)
                except OSError:  # a full or read-only disk: the run itself will say so
                    pass

        thread = threading.Thread(target=beat, daemon=True, name="repro-heartbeat")
        thread.start()
        try:
            yield
        finally:
            stop.set()

    def lock(self) -> None:
        """Take the run folder for this process to write (one writer per run): an advisory lock
        that names this process, released by unlock() or when the process ends, however it ends.
        Raises RunLocked naming the holder when another process writes the run."""
        if self.readonly or self._lock_fd is not None:
            return
        fd = _open_lock(self.dir)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLocked(
                f"run {self.id}: expected no other process writing it, found {holder}; wait for "
                "that process to end (`repro log` shows the run) or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder_info()).encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the run folder (lock()); nothing when this process does not hold it."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    @contextmanager
    def writing(self) -> Iterator[Run]:
        """The block writes the run: locked for it, unless this process holds the lock already."""
        mine = self._lock_fd is None
        self.lock()
        try:
            yield self
        finally:
            if mine:
                self.unlock()

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def record_file(self) -> Path:
        return self.path(RECORD_FILE)

    @property
    def unreadable(self) -> str | None:
        """`runs/<paper>/<stage>/<id>/record.json: <why>` for a record that cannot be read."""
        if self.corrupt is None:
            return None
        return f"{shown_path(self.dir)}/{self.corrupt}"

    def took(self) -> tuple[float | None, bool]:
        """(seconds, estimated): the recorded duration; for a run whose process died without
        recording one, the time from its start to the last file it wrote (estimated=True)."""
        recorded = self.record.get("duration_s")
        if isinstance(recorded, int | float) and not isinstance(recorded, bool):
            return float(recorded), False
        if self.effective_status != "interrupted" or not isinstance(
            self.record.get("started"), str
        ):
            return None, False
        try:
            started = datetime.fromisoformat(self.record["started"])
        except ValueError:
            return None, False
        last = _last_write(self.dir)
        if last is None or started.tzinfo is None:
            return None, False
        return max(0.0, last - started.timestamp()), True

    def save(self) -> None:
        """Write record.json atomically (temp file in the same directory, fsync, rename); a full
        or read-only disk raises StorageError naming the file."""
        if self.readonly:
            return
        text = json.dumps(self.record, indent=2, default=_json_default, ensure_ascii=False)
        atomic_write(self.record_file, text + "\n", "the run record")

    def write_text(self, name: str, text: str) -> Path:
        path = self.path(name)
        if self.readonly:
            return path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise (storage_error(path.parent, e, "a folder") if is_storage_error(e) else e) from e
        atomic_write(path, text)
        return path

    def write_yaml(self, name: str, obj: Any) -> Path:
        import yaml  # ~40 ms to import: only pay it when a run writes YAML

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: ~5x faster
        return self.write_text(
            name, yaml.dump(obj, Dumper=dumper, sort_keys=False, allow_unicode=True)
        )

    def annex(self, **fields: Any) -> None:
        """Save fields beside the verdict that a gate measures on the way (forecast, actual, init,
        model, peak_rss_mb): only those names, so the record's shape stays owned here."""
        unknown = sorted(set(fields) - set(ANNEX_FIELDS))
        if unknown:
            raise ValueError(f"record fields {unknown} are not annex fields {ANNEX_FIELDS}")
        self.record.update(fields)
        self.save()

    @property
    def prior_duration_s(self) -> float:
        """Seconds this run spent in the attempts before its resumes."""
        return sum(
            float(r.get("previous_duration_s") or 0.0) for r in self.record.get("resumed") or []
        )

    def reopen(self, changed: list[str]) -> None:
        """Continue this (interrupted or errored) run in this process, in its own directory: the
        record goes back to running, owned by this process, and notes where it resumed from.

        Only in memory: `guard` saves it when it starts, so that a Ctrl-C before the guard
        leaves the record as it was (interrupted) rather than running without an owner.
        """
        pid = os.getpid()
        previous_s, _ = self.took()
        self.record.setdefault("resumed", []).append(
            {
                "at": _utcnow().isoformat(),
                "from_ckpt": sorted(
                    str(p.relative_to(self.dir)) for p in self.dir.rglob("last.ckpt")
                )
                or None,
                "previous_status": self.effective_status,
                "previous_duration_s": None if previous_s is None else round(previous_s, 3),
                "changed": list(changed),
            }
        )
        self.record.update(
            status="running",
            pid=pid,
            pid_start=_pid_start(pid),
            host=socket.gethostname(),
            ended=None,
            error=None,
            status_reason=None,
            verdict=None,
            evidence={},
            duration_s=None,
        )
        self.corrupt = None
        # who found the earlier attempt dead: a claim that must not stop the next death's marking
        self.path("died.txt").unlink(missing_ok=True)

    def finish(
        self,
        verdict: dict[str, Any] | Any | None,
        status: str,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        """Record the outcome: verdict (a dict, a Verdict or None), final status, summary metrics."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {STATUSES}")
        if verdict is not None and not isinstance(verdict, dict):
            verdict = verdict.to_dict()
        self.record["verdict"] = verdict
        if verdict is not None and not self.record.get("evidence"):
            self.record["evidence"] = verdict.get("evidence", {})
        if metrics is not None:
            self.record["metrics"] = dict(metrics)
        self.record["status"] = status
        ended = _utcnow()
        self.record["ended"] = ended.isoformat()
        if self._t0 is not None:
            self.record["duration_s"] = round(time.monotonic() - self._t0, 3)
        elif self.record.get("started"):
            started = datetime.fromisoformat(self.record["started"])
            self.record["duration_s"] = round((ended - started).total_seconds(), 3)
        self.save()
        self.unlock()  # the record is final: another process may mark, resume or judge it now

    @contextmanager
    def guard(self, held: HeldInterrupts | None = None) -> Iterator[Run]:
        """Make sure the record ends with a final status, whatever happens inside the block.

        Ctrl-C and SIGTERM -> 'interrupted' (KeyboardInterrupt re-raised); a full or read-only
        disk -> 'error' naming the path (StorageError re-raised); any other exception -> 'error'
        with its traceback (re-raised); a block that sets no status -> 'error'. The record is
        saved as it is on entry (running), and `held` interrupts (noted since the record was
        made, see HeldInterrupts) are released, and acted on, inside the guard.
        """
        in_main = threading.current_thread() is threading.main_thread()
        previous: Any = _UNSET
        try:
            pending = held.release() if held is not None else None
            if in_main:
                previous = {sig: signal.signal(sig, self._on_signal) for sig in INTERRUPTS}
            self.save()
            if pending is not None:
                self._on_signal(pending, None)
            with self.heartbeat():
                yield self
        except BaseException as exc:
            error = self._record_exception(exc, in_main)
            if error is exc:
                raise
            raise error from exc
        else:
            if self.record.get("status") == "running":
                self._finish_quietly("error", "run ended without a verdict", in_main)
        finally:
            if in_main and previous is not _UNSET:
                for sig, handler in previous.items():
                    signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def _record_exception(self, exc: BaseException, in_main: bool) -> BaseException:
        """Record how the guarded block ended; returns what the caller should see raised."""
        if isinstance(exc, KeyboardInterrupt):
            self._finish_quietly("interrupted", self._interrupt_reason(), in_main)
            return exc
        if isinstance(exc, SystemExit) and isinstance(exc.__context__, KeyboardInterrupt):
            # Lightning catches Ctrl-C / SIGTERM itself and calls sys.exit(1) from its
            # handler: the SystemExit carries the KeyboardInterrupt as its context.
            reason = self._interrupt_reason()
            self._finish_quietly("interrupted", reason, in_main)
            return KeyboardInterrupt(reason)
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            if self.status == "running":
                self._finish_quietly("error", "run ended without a verdict", in_main)
            return exc
        if self._signal is not None:
            # Interrupted, then failed on the way out: under DDP a Ctrl-C reaches every rank,
            # and the rank whose peer exited first can fail in a collective ("Connection closed
            # by peer") before its own KeyboardInterrupt is raised. The interrupt is the cause.
            self.record["error"] = "".join(traceback.format_exception(exc))
            reason = (
                f"{self._interrupt_reason()}; then {type(exc).__name__}: {one_line(str(exc), 200)}"
            )
            self._finish_quietly("interrupted", reason, in_main)
            return KeyboardInterrupt(reason)
        error = exc
        if is_storage_error(exc):  # the gate's own write: name the file, or the run's folder
            where = exc.filename if exc.filename is not None else self.dir
            error = storage_error(where, exc, "the run's files")
        self.record["error"] = "".join(traceback.format_exception(exc))
        self._finish_quietly("error", f"{type(error).__name__}: {error}", in_main)
        return error

    def _interrupt_reason(self) -> str:
        return f"interrupted by {self._signal or 'SIGINT (Ctrl-C)'}"

    def _on_signal(self, signum: int, frame: Any) -> None:
        """While the guard runs: note which interrupt came (for the reason), then raise."""
        self._signal = "SIGINT (Ctrl-C)" if signum == signal.SIGINT else signal.Signals(signum).name
        raise KeyboardInterrupt(f"received {self._signal}")

    def _finish_quietly(self, status: str, reason: str, in_main: bool) -> None:
        """Save the final status with SIGINT/SIGTERM held off, so a second Ctrl-C cannot lose it.

        A disk too full for the record with its traceback gets the record without it, written
        in place over the old one if need be; when even that cannot be written, the StorageError
        names record.json and says how the run ended (the record still says running: readers
        show the run as interrupted once this process has exited).
        """
        held = {}
        if in_main:
            for sig in INTERRUPTS:
                held[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            self.record["status_reason"] = reason
            if status == "error" and not self.record.get("error"):
                self.record["error"] = reason
            try:
                self.finish(self.record.get("verdict"), status)
            except StorageError:
                self.record["error"] = reason  # the traceback may be what does not fit
                try:
                    self.finish(self.record.get("verdict"), status)
                except StorageError:
                    if not self._save_in_place(FINAL_FIELDS):
                        raise
        except StorageError as e:
            if str(e) in reason:  # the run ended because this very file could not be written
                raise
            raise StorageError(f"{e} (the run ended: {one_line(reason, 300)})") from e
        finally:
            for sig, handler in held.items():
                if handler is not None:  # None: a handler set outside Python, cannot be restored
                    signal.signal(sig, handler)

    def _save_in_place(self, fields: tuple[str, ...]) -> bool:
        """Last resort on a full disk (an atomic save needs room for a second copy): the record
        on disk with these fields of ours, written over it inside the blocks it already holds.
        Not atomic, so only when the text fits those blocks (no allocation can fail half-way);
        False when it does not, or the file cannot be read or written."""
        try:
            fd = os.open(self.record_file, os.O_RDWR | os.O_NOFOLLOW)  # never through a link
            with open(fd, "r+b") as f:
                on_disk = json.loads(f.read())
                on_disk.update({k: self.record.get(k) for k in fields})
                text = json.dumps(on_disk, indent=2, default=_json_default, ensure_ascii=False)
                data = (text + "\n").encode()
                if len(data) > os.fstat(f.fileno()).st_blocks * 512:
                    return False
                f.seek(0)
                f.write(data)
                f.truncate()
                f.flush()
                os.fsync(f.fileno())
        except (OSError, ValueError, AttributeError):
            return False
        return True


class HeldInterrupts:
    """Ctrl-C and SIGTERM noted, not acted on, from the moment a run's record says running until
    its guard starts: an interrupt in that gap would otherwise leave 'running' with no process
    behind it. `Run.guard(held)` releases them and records a noted one as 'interrupted'.

    Python-level handlers (not a signal mask): Python runs them in the main thread whichever
    thread the kernel delivers the signal to.
    """

    SIGNALS = INTERRUPTS

    def __init__(self) -> None:
        self.pending: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> HeldInterrupts:
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._note) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        pending = self.release()
        if pending is not None:  # never reached a guard (an error on the way): act on it now
            signal.raise_signal(pending)

    def _note(self, signum: int, frame: Any) -> None:
        if self.pending is None:
            self.pending = signum

    def release(self) -> int | None:
        """Restore the handlers; the signal noted meanwhile (None if none), not yet acted on."""
        for sig, handler in self._old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._old = {}
        pending, self.pending = self.pending, None
        return pending


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
        git = run.record.get("git")
        if isinstance(git, dict) and git.get("diff"):
            git = dict(git)
            run.write_text("git.diff", git.pop("diff"))
            git["diff_file"] = "git.diff"
            run.record["git"] = git
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
        now = _utcnow()
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
    pid = os.getpid()
    return {
        "id": run_id,
        "paper": paper,
        "stage": stage,
        "status": "running",
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
        "pid_start": _pid_start(pid),
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
            alive = _pid_alive(int(record["pid"]), record.get("pid_start"))
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
    run record (repro/record_shape.py) gives a Run with status 'corrupt' and the reason."""
    from repro.record_formats import upgrade
    from repro.record_shape import record_problem

    path = run_dir / RECORD_FILE
    try:
        text = path.read_text(encoding="utf-8")
        record = json.loads(text)
    except FileNotFoundError:
        return _corrupt(run_dir, "record.json is missing")
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _corrupt(
            run_dir, f"record.json: expected a JSON object, found {_why_unreadable(exc)}"
        )
    record = upgrade(record)  # a record of an earlier repro, read in the current shape
    problem = _SHAPE_PROBLEMS.get(text, _UNCHECKED)
    if problem is _UNCHECKED:
        problem = record_problem(record)
        if len(_SHAPE_PROBLEMS) >= 4096:  # a bound for a long-lived process (the warm worker)
            _SHAPE_PROBLEMS.clear()
        _SHAPE_PROBLEMS[text] = problem
    if problem is None:
        expected = {
            "id": run_dir.name,
            "paper": run_dir.parent.parent.name,
            "stage": run_dir.parent.name,
        }
        wrong = [k for k, v in expected.items() if record[k] != v]
        if wrong:
            k = wrong[0]
            problem = (
                f"{k!r}: expected {expected[k]!r} (the name of its folder), found {record[k]!r}"
            )
    if problem is not None:
        return _corrupt(run_dir, f"record.json: {one_line(problem, 300)}")
    return Run(run_dir, record)


# record_problem of a record.json's text, checked once per text in a process: one command lists
# the runs many times (plan, progression, status), and a record only changes by being rewritten,
# i.e. as a new text.
_SHAPE_PROBLEMS: dict[str, str | None] = {}
_UNCHECKED = object()


def _last_write(run_dir: Path) -> float | None:
    """The newest modification time of any file in a run directory: when its process was last
    seen alive (checkpoints, metrics.csv and the record's heartbeat keep it fresh)."""
    newest = None
    for p in run_dir.rglob("*"):
        try:
            mtime = p.stat().st_mtime
        except OSError:
            continue
        newest = mtime if newest is None else max(newest, mtime)
    return newest


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
    record = {
        "id": run_dir.name,
        "paper": run_dir.parent.parent.name,
        "stage": run_dir.parent.name,
        "status": "corrupt",
    }
    return Run(run_dir, record, corrupt=why)


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
    started = run.record.get("started")
    return (run.id[:15], started if isinstance(started, str) else "", run.id)


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
        if run.status != "running" or run.record.get("host") not in (None, socket.gethostname()):
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
            run.record = now.record
            run.record["status"] = "interrupted"
            run.record["status_reason"] = reason
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
        f.write(f"{reason}; found by process {os.getpid()} at {_utcnow().isoformat()}\n")
    return True
