"""Toy job functions for the launcher tests, in a module a submitit worker can import by name."""

from __future__ import annotations

import os
import signal
import sys
import time


def add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def nap(seconds: float) -> tuple[float, float]:
    """Sleep; return when the nap started and ended (to check how many jobs ran at once)."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def vanish() -> None:
    """End the job's process without a word: no result file, no exception."""
    os._exit(0)


def where() -> dict[str, object]:
    """Where the job runs: its import path and working directory."""
    return {"sys_path": list(sys.path), "cwd": os.getcwd()}


def stubborn(seconds: float) -> None:
    """Sleep through Slurm's pre-timeout signal (USR2), so only the time limit stops the job."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    time.sleep(seconds)


def segfault() -> None:
    """Crash as a broken extension would: the process dies of SIGSEGV, with no Python error."""
    import faulthandler

    faulthandler.disable()  # the default action, as in a job without Python's handler
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)
