"""One writer per run (issue 20): the process writing a run folder holds an advisory lock (flock) on
its `.lock` file, which names that process (pid, host, command). The kernel drops the lock when the
process dies, however it dies."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.storage import is_storage_error, storage_error, symlink_refused

LOCK_FILE = ".lock"


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
    own = sys.argv and Path(sys.argv[0]).name in ("repro", "__main__.py")  # the CLI, python -m
    argv = ["repro", *sys.argv[1:]] if own else sys.argv
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
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


def take_lock(run_dir: Path, run_id: str) -> int:
    """Lock run `run_id` (in `run_dir`) for this process; the open descriptor holds the lock until
    closed. Raises RunLocked naming the holder when another process writes the run."""
    fd = _open_lock(run_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunLocked(
            f"run {run_id}: expected no other process writing it, found {holder}; wait for "
            "that process to end (`repro log` shows the run) or stop it"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_holder_info()).encode(), 0)
    return fd
