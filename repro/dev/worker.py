"""The warm worker (`repro dev`): one long-lived parent per project and paper that holds the slow
state and forks a child for every gate run, serving `repro stage` over a Unix socket and, with
--watch, re-running gates when the paper's files change.

The parent stays small and single-threaded: it never builds a model, never runs a gate, never
touches CUDA and never starts an OpenMP team, so every fork starts from the same clean state and
nothing one run does reaches the next (see child.py).
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

import repro
from repro.config.compose import compose
from repro.dev.child import Job, Warm, run_child
from repro.dev.protocol import (
    SERVED_STAGES,
    STD_FDS,
    Channel,
    lock_path,
    peer_uid,
    short_address,
    socket_path,
    state_dir,
)
from repro.dev.warm import WarmData, build_warm_data, data_key, import_heavy
from repro.dev.watch import POLL_S, Watcher
from repro.errors import ReproError
from repro.oneline import one_line
from repro.project import Project
from repro.storage import atomic_write, symlink_refused

REQUEST_TIMEOUT_S = 5.0  # a client sends its request as soon as it connects
STOP_GRACE_S = 10.0  # children still running when the worker stops get this long to record it
REPLACE_GRACE_S = 3.0  # an overdue --watch run, stopped for a new change, gets this long per signal


class DevError(ReproError):
    """The warm worker cannot start (another one runs, or the warm state would be unsafe)."""


def rss_mb(pid: int | None = None) -> float | None:
    """Resident memory now (VmRSS), not the peak: what a long-lived process must keep flat."""
    try:
        status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    except OSError:
        return None
    line = next((ln for ln in status.splitlines() if ln.startswith("VmRSS:")), None)
    return round(int(line.split()[1]) / 1024, 1) if line else None


class Worker:
    """One warm worker for a project and paper: `run()` warms up, serves, and cleans up."""

    def __init__(
        self, project: Project, paper: str, console: Console, watch: list[str] | None = None
    ):
        self.project, self.paper, self.console = project, paper, console
        self.watch_stages = watch
        self.data: WarmData | None = None
        self.threads = 1
        self.children: dict[int, tuple[Job, float]] = {}
        self.report_after_s: float | None = None  # dev.report_after_s, from the composed config
        self._overdue: set[int] = set()  # children reported as running too long
        self._failed_key: str | None = None  # data that failed to build: not retried unchanged
        self._repro_files = _repro_sources()
        self._listener: socket.socket | None = None
        self._lock_fd: int | None = None
        self._watcher: Watcher | None = None
        self._watch_pid: int | None = None
        self._pending: list[Path] = []

    # ---- life cycle -------------------------------------------------------------------------
    def run(self) -> None:
        """Warm up, then serve until Ctrl-C or SIGTERM; always removes its socket."""
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            with self._locked(), self._listening():
                self._loop()
        except KeyboardInterrupt:
            self.console.print(f"repro dev · {self.paper}: stopped")
        finally:
            self._stop_children()
            signal.signal(signal.SIGTERM, previous)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One worker per project and paper: an flock that dies with its process, so a worker
        killed with -9 leaves a lock the next one takes and a socket file it replaces."""
        directory = state_dir(self.project)
        directory.mkdir(mode=0o700, exist_ok=True)
        ignore = directory / ".gitignore"
        if not ignore.exists() and not ignore.is_symlink():  # no code: git state skips them
            atomic_write(ignore, "# this checkout's state (repro dev's lock and socket)\n*\n")
        fd = _open_lock(lock_path(self.project, self.paper))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DevError(
                f"a warm worker for {self.paper} already runs in this project (pid {holder}); "
                f"stop it first (Ctrl-C in its terminal, or kill {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        try:
            yield
        finally:
            self._lock_fd = None
            os.close(fd)

    @contextmanager
    def _listening(self) -> Iterator[None]:
        t0 = time.perf_counter()
        self._warm_up()
        path = socket_path(self.project, self.paper)
        path.unlink(missing_ok=True)  # we hold the lock: a socket here is a dead worker's
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # created 0600: only this user may connect
        try:
            with short_address(path) as address:
                listener.bind(address)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        listener.listen(16)
        self._listener = listener
        self._announce(time.perf_counter() - t0, path)
        try:
            yield
        finally:
            self._listener = None
            listener.close()
            path.unlink(missing_ok=True)

    def _warm_up(self) -> None:
        # torch.cuda.is_available() through NVML does not initialise CUDA in this process, so
        # Lightning's checks leave a GPU usable by the forked children
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        self.threads = import_heavy()
        self._refresh_data(initial=True)
        if self.watch_stages is not None:
            self._watcher = Watcher(self.project, self.paper, self._data_files())
        _check_cuda_untouched()

    def _announce(self, seconds: float, path: Path) -> None:
        rel = path.relative_to(self.project.root)
        data = f"data {self.data.seconds:.1f} s" if self.data else "no warm data"
        self.console.print(
            f"repro dev · {self.paper}: warm in {seconds:.1f} s ({data}), pid {os.getpid()}, "
            f"socket {rel}. `repro stage {'|'.join(SERVED_STAGES)}` runs here now; Ctrl-C stops."
        )
        if self.watch_stages is not None:
            self.console.print(
                f"watching papers/{self.paper}/ and conf/: {', '.join(self.watch_stages)} "
                "re-run on each change"
            )

    # ---- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            while True:
                for _key, _ in sel.select(timeout=POLL_S if self._watcher else 0.5):
                    conn, _ = self._listener.accept()
                    self._on_connection(conn)
                self._reap()
                self._report_overdue()
                if self._watcher is not None:
                    self._watch_step()

    def _on_connection(self, conn: socket.socket) -> None:
        channel, fds = Channel(conn), []
        try:
            conn.settimeout(REQUEST_TIMEOUT_S)
            msg, fds = channel.recv(maxfds=STD_FDS)
            if msg is None:
                return
            if msg.get("op") == "ping":
                channel.send(self.status())
                return
            why = self._refusal(msg, conn, fds)
            if why:
                self._log(f"declined {msg.get('stage')}: {why}")
                channel.send({"refused": why})
                return
            channel.send({"accepted": True})  # the client waits without a deadline from now
            conn.settimeout(None)
            self._refresh_data()
            self._fork(_client_job(msg, conn, fds))
        except (OSError, ValueError) as e:
            self._log(f"dropped a request: {type(e).__name__}: {e}")
        finally:
            conn.close()  # the child has its own copies of the connection and the descriptors
            for fd in fds:
                os.close(fd)

    def _refusal(self, msg: dict[str, Any], conn: socket.socket, fds: list[int]) -> str | None:
        """Why this request must run in the client's own process (None: it runs here)."""
        if peer_uid(conn) != os.getuid():
            return "the request comes from another user"
        if msg.get("op") != "stage" or len(fds) != STD_FDS:
            return f"not a stage request ({msg.get('op')!r} with {len(fds)} descriptors)"
        if msg.get("paper") != self.paper:
            return f"this worker serves {self.paper}, not {msg.get('paper')}"
        if msg.get("stage") not in SERVED_STAGES:
            return f"{msg.get('stage')} runs in its own process"
        if msg.get("version") != repro.__version__:
            return f"repro {msg.get('version')} asked, the worker runs {repro.__version__}"
        if msg.get("python") != _python():
            return f"the worker runs Python in {_python()}, this command in {msg.get('python')}"
        changed = [str(p) for p, m in self._repro_files.items() if _mtime(p) != m]
        if changed:
            return f"repro's own code changed since the worker started ({changed[0]}): restart it"
        return None

    def _fork(self, job: Job) -> int:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # else the child would print the worker's buffered text again
        pid = os.fork()
        if pid == 0:  # the child: drop what is the worker's, then run and _exit
            try:
                if self._listener is not None:
                    self._listener.close()
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # the lock stays the worker's (it holds its own fd)
                run_child(
                    job, Warm(self.project, self.paper, self.data, self.threads, os.getppid())
                )
            finally:
                os._exit(1)  # run_child never returns; nothing of the worker's may run here
        self.children[pid] = (job, time.monotonic())
        self._log(f"{' → '.join(job.stages)} ({job.trigger}): pid {pid}")
        return pid

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            job, t0 = self.children.pop(pid, (None, time.monotonic()))
            self._overdue.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if pid == self._watch_pid:
                self._watch_pid = None
            what = " → ".join(job.stages) if job else "?"
            self._log(f"{what}: pid {pid} exited {code} after {time.monotonic() - t0:.2f} s")

    def _report_overdue(self) -> None:
        """Say once of each run that has gone on for dev.report_after_s without a verdict: a model
        whose construction never ends would otherwise leave --watch silent for ever (issue 20)."""
        if self.report_after_s is None:
            return
        now = time.monotonic()
        for pid, (job, t0) in self.children.items():
            if pid in self._overdue or now - t0 < self.report_after_s:
                continue
            self._overdue.add(pid)
            what = " → ".join(job.stages)
            then = (
                "save a fix: the next change stops it and runs again"
                if job.trigger == "watch"
                else "Ctrl-C in the terminal that asked for it stops it"
            )
            self.console.print(
                f"[yellow]{escape(what)} ({escape(job.trigger)}, pid {pid}) has run for "
                f"{now - t0:.0f} s without a verdict (dev.report_after_s={self.report_after_s:g}): "
                f"the paper's code may never return (a model whose construction never ends?); "
                f"{then}[/yellow]",
                highlight=False,
            )

    def _stop_overdue_watch_run(self) -> None:
        """The --watch run reported overdue, stopped for the change that came since: SIGTERM (its
        record says interrupted), SIGKILL when it does not end in REPLACE_GRACE_S (its record
        then reads as interrupted, and the next run writes that down)."""
        pid = self._watch_pid
        assert pid is not None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + REPLACE_GRACE_S
            while pid in self.children and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.05)
            if pid not in self.children:
                break
        self._log(
            f"stopped the overdue run (pid {pid}, {signal.Signals(sig).name}) for the new change"
        )
        self._watch_pid = None

    def _stop_children(self) -> None:
        """SIGTERM to runs still going (their records say interrupted), then wait for them."""
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)

    # ---- warm data and --watch -------------------------------------------------------------
    def _data_files(self) -> list[Path]:
        return self.data.data_files if self.data else []

    def _refresh_data(self, initial: bool = False) -> None:
        """Rebuild the warm datamodule when the data code, the data config or a data file changed
        since it was built. A build that fails leaves none: each child then builds its own, and
        the data gate reports the failure as it would in a cold command."""
        try:
            resolved = compose(self.project, self.paper, [])
        except ReproError as e:  # the child meets the same error and prints it to its client
            self._log(f"config: {e}")
            return
        self.report_after_s = resolved.cfg.dev.report_after_s
        data_py = self.project.paper_dir(self.paper) / "data.py"
        code = self.data.code_files if self.data else [data_py]
        key = data_key(resolved.config, code, self._data_files())
        if (self.data and key == self.data.key) or (not self.data and key == self._failed_key):
            return
        if not initial:
            self._log("the data code, config or files changed: rebuilding the warm data")
        self.data = None
        gc.unfreeze()
        gc.collect()  # the previous datamodule goes now, not at some later collection
        try:
            self.data = build_warm_data(self.project, self.paper, resolved)
            self._failed_key = None
        except (Exception, SystemExit) as e:
            self._failed_key = key
            self._log(f"[red]no warm data[/]: {escape(one_line(f'{type(e).__name__}: {e}', 300))}")
        # Objects alive now are the warm state: keep the collector from touching (and so
        # copying) their pages in every child, and from scanning them in the parent.
        gc.freeze()

    def _watch_step(self) -> None:
        assert self._watcher is not None and self.watch_stages is not None
        changed = self._watcher.poll(self._data_files())
        if changed:
            self._pending = sorted(set(self._pending) | set(changed))
        if self._pending and self._watch_pid in self._overdue:
            self._stop_overdue_watch_run()  # it may never end: the change replaces it
        if not self._pending or self._watch_pid is not None:
            return  # a run is going: the next one starts when it ends, on the latest files
        names = ", ".join(os.path.relpath(p, self.project.root) for p in self._pending)
        self._pending = []
        self._refresh_data()
        self.console.rule(f"[bold]{escape(names)}[/bold] changed → {' → '.join(self.watch_stages)}")
        self._watch_pid = self._fork(Job(stages=list(self.watch_stages), trigger="watch"))

    # ---- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        import torch

        return {
            "pid": os.getpid(),
            "paper": self.paper,
            "rss_mb": rss_mb(),
            "cuda_initialized": bool(torch.cuda.is_initialized()),
            "warm_data": self.data is not None,
            "children": sorted(self.children),
            "threads": torch.get_num_threads(),
        }

    def _log(self, text: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')} {text}[/dim]")


def _client_job(msg: dict[str, Any], conn: socket.socket, fds: list[int]) -> Job:
    return Job(
        stages=[str(msg["stage"])],
        overrides=[str(o) for o in msg.get("overrides") or []],
        force=bool(msg.get("force")),
        trigger="repro stage",
        conn=conn,
        fds=list(fds),
        env={str(k): str(v) for k, v in (msg.get("env") or {}).items()},
        cwd=msg.get("cwd"),
        argv=msg.get("argv"),
    )


def _open_lock(path: Path) -> int:
    """The worker's lock file, never opened through a symbolic link (it is written: issue 20)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise symlink_refused(path, "the warm worker's lock") from e
        raise


def _python() -> str:
    """The environment (venv) and Python version: the same libraries on both sides."""
    return f"{os.path.realpath(sys.prefix)} (Python {sys.version.split()[0]})"


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _check_cuda_untouched() -> None:
    import torch

    if torch.cuda.is_initialized():
        raise DevError(
            "the warm set-up initialised CUDA (does the paper's data.py move tensors to the GPU?): "
            "a forked child could not use the GPU then; keep the datamodule's tensors on the CPU"
        )


def _mtime(p: Path) -> int | None:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return None


def _repro_sources() -> dict[Path, int | None]:
    """repro's own modules and when they changed: a worker running older repro code declines."""
    root = Path(repro.__file__).parent
    return {p: _mtime(p) for p in root.rglob("*.py") if "templates" not in p.parts}
