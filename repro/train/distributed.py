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
