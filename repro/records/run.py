"""One stage run's lifecycle: its record.json, saved atomically; the lock of its one writer; the
guard that gives every run a final status (passed, failed, error, interrupted), whatever ends it.

Layout: `<runs_root>/<paper>/<stage>/<run-id>/record.json` (repro/records/store.py makes and
finds the folders). The directory is the source of truth; reading never writes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repro.errors import StorageError
from repro.oneline import one_line
from repro.records.liveness import pid_alive, pid_start
from repro.records.lock import take_lock
from repro.records.record import json_default
from repro.storage import atomic_write, is_storage_error, shown_path, storage_error

if TYPE_CHECKING:
    from repro.records.record import Record

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
# What a final save writes when nothing else fits on a full disk (Run._save_in_place).
FINAL_FIELDS = ("status", "status_reason", "error", "ended", "duration_s")

_UNSET = object()


def utcnow() -> datetime:
    return datetime.now(UTC)


class Run:
    """One stage run: its directory and its record.

    `record` is the typed record every reader uses (repro/records/record.py); `data` is the same
    record as the JSON saved in record.json, which this run's writer changes (update, finish,
    annex, reopen) and which readers leave alone.
    """

    def __init__(
        self,
        dir: Path,
        data: dict[str, Any],
        record: Record | None = None,
        corrupt: str | None = None,
        readonly: bool = False,
    ):
        self.dir = Path(dir)
        self.data = data
        self._record = record  # parsed from data when first read after a change (record)
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
        return self.data.get("id") or self.dir.name

    @property
    def paper(self) -> str:
        return self.data.get("paper") or self.dir.parent.parent.name

    @property
    def stage(self) -> str:
        return self.data.get("stage") or self.dir.parent.name

    @property
    def status(self) -> str:
        """The status as written in record.json ('corrupt' when it cannot be read)."""
        if self.corrupt is not None:
            return "corrupt"
        return self.data.get("status", "corrupt")

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
        return self.data.get("status_reason")

    def _dead_reason(self) -> str | None:
        pid = self.data.get("pid")
        if not isinstance(pid, int):
            return "record has no pid: the process that wrote it is unknown"
        host = self.data.get("host")
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
        if pid_alive(pid, self.data.get("pid_start")):
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
        self._lock_fd = take_lock(self.dir, self.id)

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

    @property
    def record(self) -> Record:
        """The record, typed: as read from record.json, or as this process has written it since."""
        if self._record is None:
            from repro.records.record import parse_record

            # through JSON, as a reader would see it: a gate may hand over numpy scalars
            text = json.dumps(self.data, default=json_default, ensure_ascii=False)
            self._record = parse_record(json.loads(text))
        return self._record

    def update(self, **fields: Any) -> None:
        """Set record fields (in memory: save() writes them)."""
        self.data.update(fields)
        self._record = None

    def adopt(self, now: Run) -> None:
        """Take the record of `now`, this run read again (after this process locked it)."""
        self.data, self._record = now.data, now._record

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
        recorded = self.data.get("duration_s")
        if isinstance(recorded, int | float) and not isinstance(recorded, bool):
            return float(recorded), False
        if self.effective_status != "interrupted" or not isinstance(self.data.get("started"), str):
            return None, False
        try:
            started = datetime.fromisoformat(self.data["started"])
        except ValueError:
            return None, False
        last = _last_write(self.dir)
        if last is None or started.tzinfo is None:
            return None, False
        return max(0.0, last - started.timestamp()), True

    def save(self) -> None:
        """Write record.json atomically (temp file in the same directory, fsync, rename); a full
        or read-only disk raises StorageError naming the file."""
        self._record = None  # the fields may have been changed in place (finish, guard)
        if self.readonly:
            return
        text = json.dumps(self.data, indent=2, default=json_default, ensure_ascii=False)
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
        self.data.update(fields)
        self.save()

    @property
    def prior_duration_s(self) -> float:
        """Seconds this run spent in the attempts before its resumes."""
        return sum(
            float(r.get("previous_duration_s") or 0.0) for r in self.data.get("resumed") or []
        )

    def reopen(self, changed: list[str]) -> None:
        """Continue this (interrupted or errored) run in this process, in its own directory: the
        record goes back to running, owned by this process, and notes where it resumed from.

        Only in memory: `guard` saves it when it starts, so that a Ctrl-C before the guard
        leaves the record as it was (interrupted) rather than running without an owner.
        """
        pid = os.getpid()
        previous_s, _ = self.took()
        self.data.setdefault("resumed", []).append(
            {
                "at": utcnow().isoformat(),
                "from_ckpt": sorted(
                    str(p.relative_to(self.dir)) for p in self.dir.rglob("last.ckpt")
                )
                or None,
                "previous_status": self.effective_status,
                "previous_duration_s": None if previous_s is None else round(previous_s, 3),
                "changed": list(changed),
            }
        )
        self.data.update(
            status="running",
            pid=pid,
            pid_start=pid_start(pid),
            host=socket.gethostname(),
            ended=None,
            error=None,
            status_reason=None,
            verdict=None,
            evidence={},
            duration_s=None,
        )
        self.corrupt = None
        self._record = None
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
        self.data["verdict"] = verdict
        if verdict is not None and not self.data.get("evidence"):
            self.data["evidence"] = verdict.get("evidence", {})
        if metrics is not None:
            self.data["metrics"] = dict(metrics)
        self.data["status"] = status
        ended = utcnow()
        self.data["ended"] = ended.isoformat()
        if self._t0 is not None:
            self.data["duration_s"] = round(time.monotonic() - self._t0, 3)
        elif self.data.get("started"):
            started = datetime.fromisoformat(self.data["started"])
            self.data["duration_s"] = round((ended - started).total_seconds(), 3)
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
            if self.data.get("status") == "running":
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
            self.data["error"] = "".join(traceback.format_exception(exc))
            reason = (
                f"{self._interrupt_reason()}; then {type(exc).__name__}: {one_line(str(exc), 200)}"
            )
            self._finish_quietly("interrupted", reason, in_main)
            return KeyboardInterrupt(reason)
        error = exc
        if is_storage_error(exc):  # the gate's own write: name the file, or the run's folder
            where = exc.filename if exc.filename is not None else self.dir
            error = storage_error(where, exc, "the run's files")
        self.data["error"] = "".join(traceback.format_exception(exc))
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
            self.data["status_reason"] = reason
            if status == "error" and not self.data.get("error"):
                self.data["error"] = reason
            try:
                self.finish(self.data.get("verdict"), status)
            except StorageError:
                self.data["error"] = reason  # the traceback may be what does not fit
                try:
                    self.finish(self.data.get("verdict"), status)
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
                on_disk.update({k: self.data.get(k) for k in fields})
                room = os.fstat(f.fileno()).st_blocks * 512
                data = b""
                for indent, seps in ((2, None), (None, (",", ":"))):  # compact when it must
                    text = json.dumps(
                        on_disk, indent=indent, separators=seps, default=json_default,
                        ensure_ascii=False,
                    )  # fmt: skip
                    data = (text + "\n").encode()
                    if len(data) <= room:
                        break
                if len(data) > room:
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
