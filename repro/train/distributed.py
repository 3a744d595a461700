"""Several processes, one run: which process records it (rank 0), and how the others join it.

Lightning's `ddp` launcher re-runs the whole command line for every other rank with LOCAL_RANK /
NODE_RANK set (SLURM_PROCID under srun). Rank 0 puts its run directory in REPRO_RUN_DIR before
it trains; the other ranks read it and join that run instead of creating their own.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

JOIN_ENV = "REPRO_RUN_DIR"


def is_rank_zero() -> bool:
    """Whether this process is rank 0 (readable before the process group exists, which is when
    repro decides who records the run)."""
    return all(
        int(os.environ.get(k) or 0) == 0 for k in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    )


def joined_run_dir() -> Path | None:
    """The run directory of rank 0, when this process is another rank re-running the command."""
    run_dir = os.environ.get(JOIN_ENV)
    return Path(run_dir) if run_dir and not is_rank_zero() else None


def exit_with_parent(poll_s: float = 1.0) -> None:
    """Rank > 0 processes of the subprocess launcher are rank 0's children: if rank 0 dies
    (kill -9), exit instead of waiting forever in a collective for a peer that is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="repro-exit-with-parent").start()


# ---- a peer that died ---------------------------------------------------------------------------
RANKS_DIR = ".ranks"  # in rank 0's run folder: one file per joined rank, {"rank", "pid", "host"}


def rank_name() -> str:
    """This process as a peer names it: `rank 1`, or `rank 1 on node 2` beyond the first node."""
    if os.environ.get("SLURM_PROCID"):
        return f"rank {int(os.environ['SLURM_PROCID'])}"
    local, node = int(os.environ.get("LOCAL_RANK") or 0), int(os.environ.get("NODE_RANK") or 0)
    return f"rank {local}" + (f" on node {node}" if node else "")


def note_joined_rank(run_dir: Path) -> None:
    """A rank > 0 leaves its pid in rank 0's run folder, so that rank 0 can say which peer died
    and how when a collective fails (peer_deaths). Bookkeeping only: no record of its own."""
    import json
    import socket

    from repro.storage import atomic_write

    ranks = Path(run_dir) / RANKS_DIR
    try:
        ranks.mkdir(exist_ok=True)
        info = {"rank": rank_name(), "pid": os.getpid(), "host": socket.gethostname()}
        name = info["rank"].replace(" ", "-")
        atomic_write(ranks / f"{name}.json", json.dumps(info), "the rank's pid")
    except OSError:  # rank 0 then names no rank: its own error still stands
        pass


def peer_deaths(run_dir: Path) -> list[str]:
    """The ranks of this run that died (this host's; their end is known for this process's
    children): `rank 1 (pid 4242) was killed by SIGKILL`, `rank 2 (pid 4243) exited with code 1`. The child is left for
    Lightning to reap (WNOWAIT)."""
    import json
    import socket

    found = []
    for path in sorted((Path(run_dir) / RANKS_DIR).glob("*.json")):
        try:
            info = json.loads(path.read_text())
            rank, pid = str(info["rank"]), int(info["pid"])
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if info.get("host") != socket.gethostname():
            continue  # another node's process: its pid means nothing here
        how = _how_it_ended(pid)
        if how is None:
            continue
        found.append(f"{rank} (pid {pid}) {how}")
    return found


def _how_it_ended(pid: int) -> str | None:
    """How a child process ended, None while it runs (or when it is not our child)."""
    import signal

    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    try:
        info = os.waitid(os.P_PID, pid, flags)
    except ChildProcessError:  # reaped already, or not our child: alive or not, we cannot tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "died (its exit status was collected already)"
        except PermissionError:
            return None
        return None
    if info is None:
        return None  # still running
    if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
        try:
            name = signal.Signals(info.si_status).name
        except ValueError:
            name = f"signal {info.si_status}"
        core = " (core dumped)" if info.si_code == os.CLD_DUMPED else ""
        return f"was killed by {name}{core}"
    return f"exited with code {info.si_status}"
