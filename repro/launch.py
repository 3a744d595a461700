"""Launch functions as submitit jobs (local processes, or one Slurm job array) and collect what
became of each: its result, or submitit's reason why there is none.

Each job's state comes from submitit: the result file it writes, and for Slurm the state its
watcher reads from `sacct` for all jobs of the array in one call per poll. Waiting never hangs:
a job that the scheduler has lost track of (no accounting, gone from squeue, no result file) is
recorded UNKNOWN after `unknown_after_s`, with a reason that says so.

Names: Slurm gives a job array one `--job-name`; repro names the array after what its jobs'
names share (e.g. `bimpm`) and then renames each task to its own name with `scontrol update`
(measured on Slurm 22.05: squeue and sacct then show `bimpm-full-s0`, `bimpm-narrow-s1`, ...,
and the array keeps its `%max_parallel` throttle). `jobs.json` in the folder maps names to ids.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.errors import LaunchError
from repro.storage import atomic_write

log = logging.getLogger(__name__)

LAUNCHERS = ("local", "slurm")
# Slurm's words for a job that has ended (squeue -t all; sacct). Anything else is still alive.
_ENDED = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT",
}  # fmt: skip
# The line of a traceback that names the exception (submitit ends its message with a log path).
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt|Exit)\b.*")
# slurmstepd's own line in a job's stderr: "*** JOB 14 ON localhost CANCELLED AT ... ***".
_STEPD_LINE = re.compile(r"\*\*\* (JOB|STEP) .* \*\*\*")
# sbatch --signal: "the signal may be sent up to 60 seconds earlier than specified" (slurmctld
# checks time limits every 30 s). submitit's own default asks for USR2 90 s before the limit, and
# its handler ends a job that cannot checkpoint: a 2-minute job was recorded TIMEOUT after ~30 s.
SIGNAL_EARLY_S = 60
SIGNAL_MIN_S = 5  # what submitit needs to write the job's "timed out" result after USR2
SLURM_MIN_TIMEOUT_MIN = 2  # below it the signal may come at once


@dataclass(frozen=True)
class JobSpec:
    """One job: `fn(*args)` in a submitit worker. `fn` must be importable there (submitit
    pickles functions by reference). `name` reads like `<paper>-<variant>-s<seed>`."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass
class JobOutcome:
    """What became of one job. `state` is COMPLETED (with `result`), FAILED, TIMEOUT, CANCELLED,
    UNKNOWN, or another word of Slurm's (OUT_OF_MEMORY, NODE_FAIL, ...); `error` says why in one
    line for every state but COMPLETED."""

    name: str
    job_id: str | None
    state: str
    result: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED"


@dataclass(frozen=True)
class SlurmOptions:
    """What each job of the array asks Slurm for."""

    partition: str | None  # None: the cluster's default partition
    cpus_per_task: int
    mem_gb: float | None  # None: the cluster's default memory
    gpus_per_node: int | None  # None or 0: no GPU request at all (CPU clusters reject --gres)
    sbatch: dict[str, Any] = field(default_factory=dict)  # other sbatch options: {"qos": "low"}


@dataclass
class _Watched:
    spec: JobSpec
    job: Any  # a submitit Job
    ended_at: float | None = None  # when the scheduler first said it ended with no result file
    silent_since: float | None = None  # when the scheduler stopped knowing anything about it
    squeue_seen: tuple[str, str] | None = None  # (state, UTC time) of squeue's last listing
    sacct_seen: tuple[str, str] | None = None  # (state, UTC time) of sacct's last word

    def last_known(self, squeue_answers: bool) -> tuple[str, str]:
        """(state, where it comes from) as last known: squeue's while it answers; when it does
        not, sacct's (slurmdbd may still answer, with what slurmctld last told it)."""
        first = (self.squeue_seen, "squeue") if squeue_answers else (self.sacct_seen, "sacct")
        second = (self.sacct_seen, "sacct") if squeue_answers else (self.squeue_seen, "squeue")
        (seen, who), (other, other_who) = (first, second) if first[0] else (second, first)
        if seen is None:
            return "UNKNOWN", "neither squeue nor sacct ever listed it"
        where = f"{who} at {seen[1]}"
        if other is not None and other[0] != seen[0]:
            where += f"; {other_who} last said {other[0]}, at {other[1]}"
        return seen[0], where


def launch(
    specs: Sequence[JobSpec],
    *,
    launcher: str,
    folder: Path,
    timeout_min: int,
    max_parallel: int,
    poll_s: float,
    unknown_after_s: float,
    slurm: SlurmOptions | None = None,
    on_done: Callable[[JobOutcome], None] | None = None,
    give_up_after_s: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> list[JobOutcome]:
    """Run every spec as a submitit job, at most `max_parallel` at once, and return their
    outcomes in the order of `specs`; `on_done` is called as each job finishes.

    `unknown_after_s` bounds every wait for evidence: a job that ended without a result file
    gets that long for the file to appear (a shared filesystem shows it late; submitit itself
    allows 15 s) before it is recorded by the scheduler's word (CANCELLED, TIMEOUT, ...) or
    UNKNOWN when there is none; a job the scheduler knows nothing about is UNKNOWN after it.
    Interrupting the wait (Ctrl-C) cancels the jobs that have not finished.

    Waiting says what it waits for and ends (issue 20): when squeue or sacct stop answering,
    `on_wait` hears it (and again when they answer again); when squeue has not answered for
    `give_up_after_s` (Slurm only; None: no bound), the wait ends and every unfinished job is
    recorded with the last state Slurm gave for it. Nothing waits for those jobs afterwards: a
    new run of the stage (or `squeue`, `scancel`) is the user's call.
    Raises LaunchError when the jobs cannot be submitted, or when a Slurm time limit is too
    short for Slurm's pre-timeout signal.
    """
    _check_args(specs, launcher, slurm, max_parallel, timeout_min)
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    if launcher == "slurm":
        assert slurm is not None
        poller = _Poller(
            _submit_slurm_array(specs, folder, timeout_min, max_parallel, slurm), [], None
        )
    else:
        poller = _Poller([], list(specs), _local_executor(folder, timeout_min))
    poller.on_wait = on_wait or (lambda message: log.warning("%s", message))
    poller.give_up_after_s = give_up_after_s
    outcomes: dict[str, JobOutcome] = {}
    try:
        while poller.waiting or poller.queue:
            ended = poller.poll(folder, max_parallel, unknown_after_s)
            if poller.waiting and give_up_after_s is not None:
                ended += poller.give_up(give_up_after_s)
            for outcome in ended:
                outcomes[outcome.name] = outcome
                if on_done is not None:
                    on_done(outcome)
            if poller.waiting:
                time.sleep(poll_s)
    except BaseException:
        for w in poller.waiting:  # Ctrl-C or a bug: leave nothing running on the cluster
            w.job.cancel(check=False)
        raise
    return [outcomes[s.name] for s in specs]


def _check_args(
    specs: Sequence[JobSpec],
    launcher: str,
    slurm: SlurmOptions | None,
    max_parallel: int,
    timeout_min: int,
) -> None:
    if launcher == "slurm" and timeout_min < SLURM_MIN_TIMEOUT_MIN:
        raise LaunchError(
            f"stage.experiments.timeout_min={timeout_min}: expected at least "
            f"{SLURM_MIN_TIMEOUT_MIN} minutes with launcher=slurm: Slurm may send its pre-timeout "
            f"signal up to {SIGNAL_EARLY_S} s before the time asked for (sbatch --signal), which "
            f"would stop a {timeout_min}-minute job at once; raise stage.experiments.timeout_min"
        )
    if launcher not in LAUNCHERS:
        raise LaunchError(f"launcher '{launcher}' unknown; valid: {', '.join(LAUNCHERS)}")
    if launcher == "slurm" and slurm is None:
        raise LaunchError("launcher 'slurm' needs SlurmOptions (partition, cpus_per_task, ...)")
    if max_parallel < 1:
        raise LaunchError(f"max_parallel must be at least 1, got {max_parallel}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise LaunchError(f"job names must be unique; repeated: {', '.join(dupes)}")


SLURM_CLIENT_TIMEOUT_S = 60.0  # a Slurm client that has not answered in a minute has failed


class _Poller:
    """The jobs still running (`waiting`) and, for the local executor, those not yet submitted
    (`queue`: it has no arrays, so at most max_parallel are submitted at a time)."""

    def __init__(self, waiting: list[_Watched], queue: list[JobSpec], executor: Any):
        self.waiting, self.queue, self.executor = waiting, queue, executor
        self.slurm = executor is None
        self.sacct_error = _sacct_error(waiting) if self.slurm else None
        self.on_wait: Callable[[str], None] = lambda message: None
        self.squeue_silent_since: float | None = None  # when squeue last failed to answer, first
        self.squeue_error: str | None = None
        self.sacct_broke = False  # sacct answered at first, then stopped (reported once)
        self.give_up_after_s: float | None = None  # set by the caller (Slurm only)

    def poll(self, folder: Path, max_parallel: int, unknown_after_s: float) -> list[JobOutcome]:
        """Submit what may start, ask the scheduler once, and return the jobs that ended."""
        while not self.slurm and self.queue and len(self.waiting) < max_parallel:
            spec = self.queue.pop(0)
            self.waiting.append(_Watched(spec, self.executor.submit(spec.fn, *spec.args)))
            _write_ids(folder, self.waiting)
        listed = None
        if self.slurm:
            if self.sacct_error is None:
                # One sacct call for every unfinished job of the array (submitit's watcher).
                self._sacct_update(self.waiting[0].job.watcher)
            else:  # ask again (slurmdbd may be back), without submitit's warning per poll
                self.sacct_error = _sacct_error(self.waiting)
            listed = self._squeue()
        now, ended = time.monotonic(), []
        for w in list(self.waiting):
            if self.slurm:
                outcome = _settle_slurm(w, now, listed, self.sacct_error, unknown_after_s)
            else:
                outcome = _settle_local(w, now, unknown_after_s)
            if outcome is not None:
                self.waiting.remove(w)
                ended.append(outcome)
        return ended

    def _sacct_update(self, watcher: Any) -> None:
        """submitit's sacct call; when it fails, submitit keeps its last answer (and logs a
        warning per call): say once that the states from sacct may be stale, and when it
        answers again. (submitit stores a successful call's output as a new object.)"""
        before = watcher._output
        watcher.update()
        answered = watcher._output is not before
        if not answered and not self.sacct_broke:
            self.sacct_broke = True
            self.on_wait("sacct does not answer (slurmdbd down?): job states may be out of date")
        elif answered and self.sacct_broke:
            self.sacct_broke = False
            self.on_wait("sacct answers again")

    def _squeue(self) -> dict[str, str] | None:
        """squeue's listing, saying when it stops answering and when it answers again."""
        asked = time.monotonic()  # a call that fails found the controller gone from here on
        listed, error = _squeue(self.waiting, self._squeue_timeout(asked))
        now = time.monotonic()
        if listed is None:
            self.squeue_error = error
            if self.squeue_silent_since is None:
                self.squeue_silent_since = asked
                self.on_wait(
                    f"squeue does not answer ({error}): slurmctld may be down; waiting for "
                    f"{len(self.waiting)} job{'s' if len(self.waiting) != 1 else ''} all the same"
                )
        elif self.squeue_silent_since is not None:
            self.on_wait(
                f"squeue answers again after {now - self.squeue_silent_since:.0f} s: waiting as before"
            )
            self.squeue_silent_since = None
        return listed

    def _squeue_timeout(self, now: float) -> float:
        """squeue's own wait: at most what is left of give_up_after_s once it stopped answering
        (its client retries for ~a minute when slurmctld is down: the bound overshot by that)."""
        if self.give_up_after_s is None or self.squeue_silent_since is None:
            return SLURM_CLIENT_TIMEOUT_S
        left = self.give_up_after_s - (now - self.squeue_silent_since)
        return min(SLURM_CLIENT_TIMEOUT_S, max(1.0, left))

    def give_up(self, after_s: float) -> list[JobOutcome]:
        """When squeue has not answered for `after_s`: every job still waited for, ended here
        with the last state Slurm gave for it (it may still run: nobody can say)."""
        if self.squeue_silent_since is None:
            return []
        silent = time.monotonic() - self.squeue_silent_since
        if silent < after_s:
            return []
        ended = []
        for w in self.waiting:
            state, where = w.last_known(squeue_answers=False)
            seen = f" ({where})"
            ended.append(
                JobOutcome(
                    w.spec.name,
                    w.job.job_id,
                    state,
                    error=f"gave up waiting: squeue has not answered for {silent:.0f} s "
                    f"(launcher.give_up_after_s={after_s:g}; {self.squeue_error}); its last known "
                    f"state: {state}{seen}; it may still run: `squeue -j {w.job.job_id}` once "
                    f"Slurm answers, `scancel {w.job.job_id}` to stop it",
                )
            )
        self.on_wait(
            f"gave up waiting for {len(ended)} job{'s' if len(ended) != 1 else ''} after squeue "
            f"had not answered for {silent:.0f} s; their last known states are recorded"
        )
        self.waiting = []
        return ended


# ---- submission ---------------------------------------------------------------------------------
def array_name(names: Sequence[str]) -> str:
    """The dash-separated words every name starts with: bimpm-full-s0, bimpm-narrow-s0 -> bimpm."""
    words = [n.split("-") for n in names]
    common = []
    for parts in zip(*words, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    if len(names) > 1 and len(common) == min(len(w) for w in words):
        common = common[:-1]  # one name is a prefix of the others: keep it readable
    return "-".join(common) or "repro"


def _slurm_mem(mem_gb: float) -> str:
    return f"{int(mem_gb)}G" if float(mem_gb).is_integer() else f"{round(mem_gb * 1024)}M"


def _submit_slurm_array(
    specs: Sequence[JobSpec], folder: Path, timeout_min: int, max_parallel: int, opts: SlurmOptions
) -> list[_Watched]:
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError as e:  # 'Could not detect "srun", are you indeed on a slurm cluster?'
        raise LaunchError(f"launcher=slurm but this machine has no Slurm client: {e}") from e
    params: dict[str, Any] = {
        "job_name": array_name([s.name for s in specs]),
        "time": timeout_min,
        "signal_delay_s": signal_delay_s(timeout_min),
        "cpus_per_task": opts.cpus_per_task,
        "array_parallelism": max_parallel,  # the array's %N throttle
    }
    if opts.partition:
        params["partition"] = opts.partition
    if opts.mem_gb:
        params["mem"] = _slurm_mem(opts.mem_gb)
    if opts.gpus_per_node:
        params["gpus_per_node"] = opts.gpus_per_node
    if opts.sbatch:
        params["additional_parameters"] = dict(opts.sbatch)
    executor.update_parameters(**params)
    try:
        with executor.batch():
            jobs = [executor.submit(s.fn, *s.args) for s in specs]
    except submitit.core.utils.FailedJobError as e:  # sbatch's own stderr
        raise LaunchError(f"sbatch refused the job array: {str(e).strip()}") from e
    watched = [_Watched(s, j) for s, j in zip(specs, jobs, strict=True)]
    _name_tasks(watched)
    _write_ids(folder, watched)
    return watched


def signal_delay_s(timeout_min: int) -> int:
    """How long before its time limit a job hears USR2 (submitit then records it TIMEOUT): 5% of
    the limit, at least SIGNAL_MIN_S, at most submitit's 90 s. With Slurm's up to 60 s of
    earliness, a 2-minute job runs at least 54 s, a 2-hour one at least 1 h 57 min."""
    return int(min(90, max(SIGNAL_MIN_S, 0.05 * timeout_min * 60)))


def _name_tasks(watched: list[_Watched]) -> None:
    """Give each array task its own name; a task that ends first keeps the array's name."""
    for w in watched:
        out = _ask(["scontrol", "update", f"JobId={w.job.job_id}", f"JobName={w.spec.name}"])
        if out.returncode:
            log.info("could not rename %s: %s", w.job.job_id, _last_line(out))


def _local_executor(folder: Path, timeout_min: int):
    import submitit

    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=timeout_min)
    return executor


def _write_ids(folder: Path, watched: list[_Watched]) -> None:
    """jobs.json: which of submitit's files (named by job id) belong to which job name."""
    path = folder / "jobs.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    known.update({w.spec.name: w.job.job_id for w in watched})
    atomic_write(path, json.dumps(known, indent=1), "the jobs' ids")


# ---- what became of a job ----------------------------------------------------------------------
def _from_result(w: _Watched) -> JobOutcome:
    """The job wrote its result file: its return value, or the error it raised."""
    job_id = w.job.job_id
    try:
        return JobOutcome(w.spec.name, job_id, "COMPLETED", result=w.job.result())
    except Exception as e:  # submitit's FailedJobError carries the job's traceback
        line = _exception_line(str(e)) or str(e).strip().splitlines()[-1]
        # submitit's handler of Slurm's pre-timeout signal (USR2) raises
        # "UncompletedJobError: Job not requeued because: timed-out and not checkpointable."
        state = "TIMEOUT" if "UncompletedJobError" in line and "timed-out" in line else "FAILED"
        return JobOutcome(w.spec.name, job_id, state, error=line)


def _no_result_reason(job: Any) -> str:
    """submitit's own account of a job that ended without a result file: its state, and the
    line of its error stream that names the cause (slurmstepd's or an exception's)."""
    job._results_timeout_s = 0  # we already waited unknown_after_s; submitit would block 15 s more
    text = str(job.exception())
    found = re.search(r"has not produced any output \(state: [^)]*\)", text)
    parts = [found.group(0) if found else text.strip().splitlines()[0]]
    stream = text.split("Error stream produced:", 1)[-1] if "Error stream" in text else ""
    cause = _stepd_line(stream) or _exception_line(stream)
    if cause:
        parts.append(cause)
    status = _exit_status(job)
    if status:
        parts.append(status)
    return "; ".join(parts)


def _exit_status(job: Any) -> str | None:
    """How a job's process ended: `killed by signal 11 (SIGSEGV)` or `exit code 1` (issue 20: a
    crashed job said only "has not produced any output"). Slurm's from sacct (the job and its
    steps) or, without accounting, scontrol while slurmctld remembers the job. None for a local
    job: submitit's local controller does not keep its task's exit status."""
    from submitit.local.local import LocalJob

    if isinstance(job, LocalJob):
        return None
    out = _ask(["sacct", "-n", "-P", "-j", job.job_id, "-o", "ExitCode"])
    codes = out.stdout.split() if out.returncode == 0 else []
    if not codes:
        out = _ask(["scontrol", "show", "job", job.job_id])
        codes = re.findall(r"\bExitCode=(\d+:\d+)", out.stdout) if out.returncode == 0 else []
    pairs = []
    for code in codes:
        exit_code, _, sig = code.partition(":")
        if exit_code.isdigit() and sig.isdigit():
            pairs.append((int(exit_code), int(sig)))
    return _describe_exit(pairs)


def _describe_exit(pairs: list[tuple[int, int]]) -> str | None:
    """(exit code, signal) pairs of a job and its steps, as one phrase; None when all are 0."""
    import signal

    for _, sig in pairs:
        if sig:
            try:
                return f"killed by signal {sig} ({signal.Signals(sig).name})"
            except ValueError:
                return f"killed by signal {sig}"
    for code, _ in pairs:
        if code > 128:  # a shell's report of its child's signal
            return _describe_exit([(0, code - 128)]).replace("killed", f"exit code {code}: killed")
        if code:
            return f"exit code {code}"
    return None


def _settle_local(w: _Watched, now: float, unknown_after_s: float) -> JobOutcome | None:
    job = w.job
    if job.state == "RUNNING":  # LocalJob's state is its process's (result() would block on it)
        return None
    if job.paths.result_pickle.exists():
        return _from_result(w)
    # The process ended and left no result (killed, or os._exit): nothing can say why.
    w.silent_since = w.silent_since or now
    if now - w.silent_since < unknown_after_s:
        return None
    return JobOutcome(
        w.spec.name,
        job.job_id,
        "UNKNOWN",
        error=f"no result {unknown_after_s:g} s after the job's process ended; submitit: "
        + _no_result_reason(job),
    )


def _settle_slurm(
    w: _Watched,
    now: float,
    listed: dict[str, str] | None,
    sacct_error: str | None,
    unknown_after_s: float,
) -> JobOutcome | None:
    job = w.job
    if job.paths.result_pickle.exists():
        return _from_result(w)
    # What submitit's watcher learnt from the last sacct call (no new call here); without sacct
    # it knows nothing (and its cache may hold another cluster's job of the same id).
    state = "UNKNOWN" if sacct_error else job.watcher.get_state(job.job_id, mode="cache")
    word = state.split()[0].upper()  # "CANCELLED by 0" -> CANCELLED
    squeue_word = None if listed is None else listed.get(job.job_id)
    when = time.strftime("%H:%M:%S UTC", time.gmtime())
    if squeue_word:
        w.squeue_seen = (squeue_word, when)
    if word != "UNKNOWN":
        w.sacct_seen = (word, when)
    if word in _ENDED:
        w.ended_at = w.ended_at or now
        if now - w.ended_at < unknown_after_s:
            return None  # its result file may still be on its way
        if word == "COMPLETED":  # ended well by Slurm's account, yet no result: say so
            reason = f"Slurm says COMPLETED but no result file appeared in {unknown_after_s:g} s"
            return JobOutcome(w.spec.name, job.job_id, "UNKNOWN", error=reason)
        return JobOutcome(w.spec.name, job.job_id, word, error=_no_result_reason(job))
    alive = squeue_word is not None and squeue_word not in _ENDED
    if word != "UNKNOWN" or alive:  # pending or running, by sacct's or squeue's account
        w.silent_since = None
        return None
    w.silent_since = w.silent_since or now
    if now - w.silent_since < unknown_after_s:
        return None
    sacct_said = f"sacct: {sacct_error}" if sacct_error else "sacct has no record of it"
    if listed is None:
        squeue_said = "squeue does not answer"
    elif squeue_word:
        squeue_said = f"squeue last listed it {squeue_word}"  # kept MinJobAge (300 s) after the end
    else:
        squeue_said = "squeue no longer lists it"
    reason = (
        f"Slurm cannot say what became of job {job.job_id} ({sacct_said}; {squeue_said}) "
        f"and it wrote no result file in {unknown_after_s:g} s"
    )
    return JobOutcome(w.spec.name, job.job_id, "UNKNOWN", error=reason)


def _sacct_error(watched: list[_Watched]) -> str | None:
    """Whether sacct answers here, asked once: without accounting it fails on every call
    ("Slurm accounting storage is disabled", measured), and submitit then knows no state."""
    out = _ask(["sacct", "-n", "-j", _array_ids(watched)])
    return None if out.returncode == 0 else _last_line(out)


def _squeue(watched: list[_Watched], timeout: float) -> tuple[dict[str, str] | None, str | None]:
    """Every task of our arrays that slurmctld still knows, with its state (one call), and None;
    (None, squeue's error) when squeue cannot answer (controller down)."""
    out = _ask(
        ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", _array_ids(watched)], timeout
    )
    if out.returncode and "Invalid job id" not in out.stderr:  # all of them forgotten: fine
        return None, _last_line(out)
    listed = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        listed[job_id] = state
    return listed, None


def _array_ids(watched: list[_Watched]) -> str:
    return ",".join(sorted({w.job.job_id.split("_")[0] for w in watched}))


def _ask(cmd: list[str], timeout: float = SLURM_CLIENT_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a Slurm client; a missing one answers like a failing one (exit 127)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(cmd, 127, "", str(e))


def _last_line(out: subprocess.CompletedProcess) -> str:
    lines = (out.stderr or out.stdout).strip().splitlines()
    return lines[-1] if lines else f"{out.args[0]} exited with {out.returncode}"


def _exception_line(text: str) -> str | None:
    named = [ln.strip() for ln in text.splitlines() if _EXCEPTION_LINE.match(ln.strip())]
    return named[-1] if named else None


def _stepd_line(text: str) -> str | None:
    """slurmstepd's verdict, the job's line before its step's ("*** JOB 9 ... CANCELLED ...")."""
    found = sorted(
        (m.group(0) for m in map(_STEPD_LINE.search, text.splitlines()) if m),
        key=lambda line: not line.startswith("*** JOB"),
    )
    return found[0] if found else None
