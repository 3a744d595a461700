"""How many CPU threads training uses: one per CPU this process may run on (its affinity mask,
lowered to a cgroup CPU quota when one is set), unless OMP_NUM_THREADS says otherwise.

torch starts with one thread per CPU it sees, and it does not see a container's CPU quota: on a
64-core host with a 4-CPU quota it would run 64 threads that the quota throttles, and with
OpenMP's spinning waits a step can then take 100x longer (issue 21 measured 0.42-19 s for a
0.16 s step with one other job on 2 cores). The count depends on the machine only, never on its
load at the moment: the thread count can change a float reduction's order, and so the numbers,
and a run must give the same numbers on the same machine. The record says which count was used
and why (`env.threads`); benchmarks/threads_contention.py measures the choice, quiet and loaded.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CGROUP = Path("/sys/fs/cgroup")
LOADAVG = Path("/proc/loadavg")
SET_BY_REPRO = "REPRO_WAIT_POLICY_WHY"  # why repro set OMP_WAIT_POLICY (for the record)
_chosen: Threads | None = None  # what apply() set in this process, for the record


@dataclass(frozen=True)
class Threads:
    threads: int
    source: str  # "OMP_NUM_THREADS" | "cgroup quota" | "CPU affinity" | "cpu_count"
    detail: str  # in words, with the numbers
    wait_policy: str = ""  # OMP_WAIT_POLICY as OpenMP started, and who set it


def cgroup_quota(
    root: Path = CGROUP, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """CPUs this process's cgroup may use (quota / period), the smallest along its path; None
    when no quota is set or none can be read. cgroup v2 `cpu.max` ("max 100000" or "150000
    100000"), v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota -1: none)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    found: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2, unified
            base = root if not (root / "unified").is_dir() else root / "unified"
            for d in _ancestors(base, path):
                found += _v2_quota(d / "cpu.max")
        elif "cpu" in controllers.split(","):
            for d in _ancestors(root / "cpu", path) + _ancestors(root / controllers, path):
                found += _v1_quota(d)
    return min(found) if found else None


def _ancestors(base: Path, path: str) -> list[Path]:
    parts = [p for p in path.strip("/").split("/") if p]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_quota(cpu_max: Path) -> list[float]:
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return []
    return [] if quota == "max" else [int(quota) / int(period)]


def _v1_quota(d: Path) -> list[float]:
    try:
        quota = int((d / "cpu.cfs_quota_us").read_text())
        period = int((d / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []


def usable_cpus() -> Threads:
    """One thread per CPU this process may use: its affinity mask, lowered to a whole number of
    CPUs of its cgroup quota (at least 1)."""
    try:
        cpus, source = len(os.sched_getaffinity(0)), "CPU affinity"
        detail = f"{cpus} CPUs in this process's affinity mask"
    except (AttributeError, OSError):
        cpus, source = os.cpu_count() or 1, "cpu_count"
        detail = f"{cpus} CPUs (os.cpu_count(); no affinity mask on this platform)"
    quota = cgroup_quota()
    if quota is not None and int(quota) < cpus:
        return Threads(
            max(1, int(quota)),
            "cgroup quota",
            f"a cgroup CPU quota of {quota:g} CPUs ({detail})",
        )
    return Threads(cpus, source, detail)


def choose() -> Threads:
    """OMP_NUM_THREADS when the user set it (a positive integer), else usable_cpus()."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        chosen = Threads(int(value), "OMP_NUM_THREADS", f"OMP_NUM_THREADS={value} (set by you)")
    else:
        chosen = usable_cpus()
    policy = os.environ.get("OMP_WAIT_POLICY")
    why = os.environ.get(SET_BY_REPRO)
    wait = "unset" if policy is None else f"{policy} ({f'set by repro: {why}' if why else 'yours'})"
    return Threads(chosen.threads, chosen.source, chosen.detail, wait)


def busy_cpus(threads: int, cpus: int | None, samples: int = 5, path: Path = LOADAVG) -> str:
    """Why the CPUs are too busy for `threads` threads of ours, or "": other runnable threads
    (from /proc/loadavg, the fewest of `samples` readings 50 ms apart, less this one) leave
    fewer than `threads` of the `cpus` free."""
    counts = []
    for i in range(samples):
        if i:
            time.sleep(0.05)
        try:
            counts.append(int(path.read_text().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            return ""
    others = max(0, min(counts) - 1)
    if cpus is None or cpus - others >= threads:
        return ""
    return f"{others} other runnable threads on {cpus} CPUs"


def quiet_waits_when_busy(
    environ: MutableMapping[str, str] = os.environ, torch_loaded: bool | None = None
) -> str:
    """Before torch starts OpenMP: set OMP_WAIT_POLICY=PASSIVE when the user left it unset and
    other jobs leave fewer free CPUs than training's threads; returns why ("" when not set).

    OpenMP's threads spin while they wait for each other, and one of them descheduled by another
    job makes the rest spin through its time slice: BiMPM's 0.2 s step took a median 6.8 s and
    up to 19 s on 2 threads beside one busy loop, 0.11 s with PASSIVE (benchmarks/
    threads_contention.py). On a quiet machine spinning is faster for small models, so it is
    left alone there. The policy changes speed only, never a result; OpenMP reads it once, when
    torch is first imported, so this runs before that (`repro stage`)."""
    if torch_loaded is None:
        torch_loaded = "torch" in sys.modules
    if "OMP_WAIT_POLICY" in environ or torch_loaded:
        return ""
    chosen = choose()
    cpus = usable_cpus().threads
    busy = busy_cpus(chosen.threads, cpus, samples=3)
    if busy:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
        environ[SET_BY_REPRO] = f"{busy} when it started"
    return busy


def apply() -> Threads:
    """Set torch's intra-op thread count to choose()'s and remember it for the run's record."""
    import torch

    global _chosen
    _chosen = choose()
    torch.set_num_threads(_chosen.threads)
    return _chosen


def chosen() -> dict[str, Any] | None:
    """What apply() chose in this process (for env_info), None when it was not called."""
    return asdict(_chosen) if _chosen is not None else None
