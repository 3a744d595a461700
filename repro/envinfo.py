"""The software and machine a run used, read without importing the heavy libraries."""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata
from typing import Any

# Distribution names as pip knows them (importlib.metadata looks up distributions, not modules).
PACKAGES = (
    "torch",
    "pytorch-lightning",
    "lightning",
    "hydra-core",
    "omegaconf",
    "spacy",
    "wandb",
    "numpy",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None when it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpus_available() -> int | None:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use, e.g. under taskset/cgroups
    except (AttributeError, OSError):
        return os.cpu_count()


def _device_info(torch: Any) -> dict[str, Any]:
    """What torch sees; only called when the run already imported torch."""
    info: dict[str, Any] = {}
    try:
        info["cuda_available"] = bool(torch.cuda.is_available())
        info["cuda_version"] = torch.version.cuda
        if info["cuda_available"]:
            info["device"] = "cuda"
            info["device_name"] = torch.cuda.get_device_name(0)
            info["device_count"] = torch.cuda.device_count()
        else:
            mps = getattr(torch.backends, "mps", None)
            info["device"] = "mps" if mps is not None and mps.is_available() else "cpu"
            info["device_name"] = platform.processor() or platform.machine()
        info["num_threads"] = torch.get_num_threads()
        info["deterministic_algorithms"] = bool(torch.are_deterministic_algorithms_enabled())
    except Exception as exc:  # a broken CUDA setup must not stop the run from being recorded
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def env_info() -> dict[str, Any]:
    """Python, platform, host, CPUs, library versions, and the torch device if torch is loaded."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "cpus_available": _cpus_available(),
        "packages": package_versions(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        env["device"] = _device_info(torch)
    from repro.train.threads import chosen

    if (threads := chosen()) is not None:  # training's thread count and why (repro.train.threads)
        env["threads"] = threads
    return env


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return None
