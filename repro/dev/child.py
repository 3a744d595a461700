"""One request in a forked child of the warm worker: take over the client's terminal, environment
and working directory, import the paper's model code afresh, and run the stage through the same
library call as `repro stage` in its own process (repro.stage.run_and_report), handing it the warm
datamodule and the record's `worker` field as parameters."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, NoReturn

from repro.dev.fresh import forget_paper_modules, pin_bytecode_to_source
from repro.dev.protocol import Channel
from repro.dev.warm import WarmData
from repro.errors import ReproError
from repro.oneline import one_line
from repro.paper_code import PaperCode
from repro.project import Project


@dataclass
class Job:
    """What a child runs: the stages in order (it stops at the first that does not pass)."""

    stages: list[str]
    overrides: list[str] = field(default_factory=list)
    force: bool = False
    trigger: str = "watch"  # "repro stage" when a client sent it
    conn: socket.socket | None = None  # the client's connection
    fds: list[int] = field(default_factory=list)  # the client's stdin, stdout, stderr
    env: dict[str, str] | None = None
    cwd: str | None = None
    argv: list[str] | None = None


@dataclass
class Warm:
    """The worker's state a child starts from (a copy, by fork)."""

    project: Project
    paper: str
    data: WarmData | None
    threads: int  # torch's thread count in a fresh process (the worker itself runs on one)
    worker_pid: int


def run_child(job: Job, warm: Warm) -> NoReturn:
    """The child's whole life. It ends with os._exit: the worker's stack frames and exit handlers,
    copied by fork, must not run a second time here (they would remove the worker's socket)."""
    code = 1
    channel = Channel(job.conn) if job.conn is not None else None
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the worker's are not ours
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if job.conn is not None:
            _adopt_client(job)
            try:
                channel.send({"started": os.getpid()})
            except OSError:  # the client went away before the run began: run nothing
                os._exit(1)
        code = _run(job, warm, channel)
    except BaseException:  # a bug here must still end the client's wait with an exit code
        traceback.print_exc()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a late Ctrl-C cannot lose the result
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        if channel is not None:
            try:
                channel.send({"exit": code})
            except OSError:
                pass
        os._exit(code)


def _run(job: Job, warm: Warm, channel: Channel | None) -> int:
    _set_threads(job.env, warm.threads)
    package = warm.project.package(warm.paper)
    forget_paper_modules(package, keep=warm.data.modules if warm.data else ())
    pin_bytecode_to_source(warm.project.paper_dir(warm.paper))
    os.chdir(warm.project.root)  # as `repro stage` enters its project (issue 14: relative paths)
    start = FromWorker(warm, job.trigger)
    done = _forward_interrupts(channel) if channel is not None else None
    code = 0
    try:
        for stage in job.stages:
            code = stage_exit_code(warm.project, warm.paper, stage, job.overrides, job.force, start)
            if code:
                break
    finally:
        if done is not None:
            done.set()
    return code


def _adopt_client(job: Job) -> None:
    """Print to the client's terminal, with its environment, working directory and argv, so Rich
    sees the same terminal (width, colours) and the run the same settings as a cold command."""
    for target, fd in zip((0, 1, 2), job.fds, strict=False):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(job.env or {})
    if job.cwd:
        os.chdir(job.cwd)
    if job.argv:
        sys.argv = list(job.argv)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=stream.isatty())


def _set_threads(env: dict[str, str] | None, default: int) -> None:
    """The thread count a cold command would get: OMP_NUM_THREADS / MKL_NUM_THREADS from the
    client's environment (what torch reads at start-up), else the worker's start-up default."""
    import torch

    threads = default
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = (env if env is not None else os.environ).get(var, "")
        if value.isdigit() and int(value) > 0:
            threads = int(value)
            break
    torch.set_num_threads(threads)


class FromWorker:
    """What the worker gives every run its child makes (repro.runner.WarmStart): its set-up
    datamodule, when the run's composed `seed` and `data` match what it was built with and the
    run imports the same data code; and the record's `worker` field: the run ran warm, from which
    worker, on what trigger, and whether the warm datamodule was used."""

    def __init__(self, warm: Warm, trigger: str) -> None:
        self.warm = warm
        self.trigger = trigger

    def datamodules(self, config: dict[str, Any], code: PaperCode) -> dict[int, Any]:
        data = self.warm.data
        if data is None or not data.matches(config) or not self._same_code(code):
            return {}
        return {data.seed: data.datamodule}

    def worker(self, config: dict[str, Any], code: PaperCode) -> dict[str, Any]:
        used = bool(self.datamodules(config, code))
        return {
            "warm": True,
            "pid": self.warm.worker_pid,
            "trigger": self.trigger,
            "warm_data": used,
        }

    def _same_code(self, code: PaperCode) -> bool:
        """Whether the run imports the data code the warm datamodule was built with (a file
        saved since: the run builds its own, from the bytes it records)."""
        now = code.digests()
        return all(now.get(name) == d for name, d in self.warm.data.code_digests.items())


def _forward_interrupts(channel: Channel) -> threading.Event:
    """Ctrl-C in the client (it sends "interrupt") or a client that went away interrupts the run
    here as Ctrl-C would interrupt a cold one: SIGINT, so the record says interrupted."""
    done = threading.Event()

    def listen() -> None:
        while True:
            try:
                msg, _ = channel.recv()
            except (OSError, ValueError):
                msg = None
            if done.is_set():
                return
            if msg is None or msg.get("op") == "interrupt":
                os.kill(os.getpid(), signal.SIGINT)
            if msg is None:
                return

    threading.Thread(target=listen, name="repro-dev-interrupts", daemon=True).start()
    return done


def stage_exit_code(
    project: Project,
    paper: str,
    stage: str,
    overrides: list[str],
    force: bool,
    start: FromWorker | None = None,
) -> int:
    """Run `repro stage` here and return its exit code; an error is printed as the command prints
    it, a crash of the paper's code or a gate as one line naming the file, line and run."""
    from repro.stage import run_and_report

    console, err_console = _consoles()
    try:  # the command's own library call: the same code prints the same output
        return run_and_report(project, paper, stage, overrides, force, console, err_console, start)
    except KeyboardInterrupt:  # outside the run (it catches its own): nothing was recorded
        err_console.print("Interrupted.")
        return 130
    except ReproError as e:
        err_console.print(f"Error: {e}", markup=False, highlight=False)
        return 1
    except Exception as e:
        err_console.print(crash_line(e, project, paper, stage), markup=False, highlight=False)
        return 1


def _consoles():
    from repro.terminal import SafeConsole

    return SafeConsole(), SafeConsole(stderr=True)  # made here: they see the client's terminal


def crash_line(exc: BaseException, project: Project, paper: str, stage: str) -> str:
    """`Error: <stage> crashed: <exception> (papers/<p>/model.py, line N); run <id> ...`."""
    where = _paper_location(exc, project)
    run = _own_run(project, paper)  # the crashed run: `stage`'s or a prerequisite run before it
    text = f"{run.stage if run else stage} crashed: {type(exc).__name__}: {exc}"
    if where:
        text += f" ({where})"
    if run is not None:
        text += f"; recorded as {run.status} in run {run.id} (`repro show {run.id}`: the traceback)"
    return "Error: " + one_line(text, 400) + "; the warm worker is still up"


def _paper_location(exc: BaseException, project: Project) -> str | None:
    """The innermost place in the project's papers/ the exception came from."""
    papers = str(project.papers_dir.resolve()) + os.sep
    if isinstance(exc, SyntaxError) and exc.filename and str(exc.filename).startswith(papers):
        return f"{os.path.relpath(exc.filename, project.root)}, line {exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(papers)]
    if not frames:
        return None
    return f"{os.path.relpath(frames[-1].filename, project.root)}, line {frames[-1].lineno}"


def _own_run(project: Project, paper: str):
    """The newest run this process recorded, if any."""
    from repro.records import list_runs

    pid = os.getpid()
    return next((r for r in list_runs(project.runs_dir, paper) if r.record.pid == pid), None)
