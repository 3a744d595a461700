"""The datamodule built again in a fresh Python process under another PYTHONHASHSEED, digested:
preprocessing that follows the iteration order of a set (or a dict filled from one) of strings,
as in a vocabulary or a split, comes out different there.

`start` launches the build (`python -m repro.data.hashseed SPEC`) and returns at once, so the data
gate measures everything else meanwhile; `collect` waits for it and reads its digest back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.config.schema import DataConfig


def other_hashseed() -> str:
    """A PYTHONHASHSEED that differs from this process's (random unless the user set one)."""
    return "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"


@dataclass
class Build:
    """A build running in another process: its process, where it writes, its hash seed."""

    process: subprocess.Popen
    out: Path
    err: Path
    hashseed: str


def start(root: Path, paper: str, data: DataConfig, seed: int, max_items: int, task: str) -> Build:
    """Start building `paper`'s datamodule (the same data config, seed and task) in a fresh
    process."""
    tmp = Path(tempfile.mkdtemp(prefix="repro-hashseed-"))
    options = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    flat = {**{k: v for k, v in options.items() if k != "options"}, **data.options}
    spec = {
        "root": str(root),
        "paper": paper,
        "data": flat,
        "seed": seed,
        "task": task,
        "max_items": max_items,
        "out": str(tmp / "digest.json"),
    }
    hashseed = other_hashseed()
    err = tmp / "stderr.txt"
    with err.open("wb") as err_fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "repro.data.hashseed", json.dumps(spec)],
            env={**os.environ, "PYTHONHASHSEED": hashseed},
            stdout=subprocess.DEVNULL,
            stderr=err_fh,
        )
    return Build(process, tmp / "digest.json", err, hashseed)


def collect(build: Build, timeout_s: float) -> tuple[dict[str, Any] | None, str]:
    """(the digest, "") when the build finished within timeout_s, else (None, why not)."""
    try:
        try:
            code = build.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            build.process.kill()
            build.process.wait()
            return None, (
                f"the build in a fresh process took more than {timeout_s:g} s "
                "(stage.data.hashseed_timeout_s)"
            )
        if code != 0 or not build.out.is_file():
            lines = build.err.read_text(errors="replace").strip().splitlines()
            last = lines[-1] if lines else f"exit code {code}"
            return None, f"the datamodule could not be built in a fresh process ({last})"
        return json.loads(build.out.read_text()), ""
    finally:
        shutil.rmtree(build.out.parent, ignore_errors=True)


class _LightningDataModule:
    """Stand-in for pytorch_lightning.LightningDataModule: building the splits, the vocabulary
    and the loaders needs nothing of Lightning but its base class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


def _build(spec: dict[str, Any]) -> dict[str, Any]:
    from repro.config.typed import from_dict
    from repro.context import import_paper_module
    from repro.data.digest import build_digest, sample_items
    from repro.project import Project
    from repro.tasks import load_task_class

    project = Project(Path(spec["root"]))
    build = import_paper_module(project, spec["paper"], "data", "build_datamodule")
    dm = build(from_dict(DataConfig, spec["data"], "data"), spec["seed"])
    dm.task_class = load_task_class(spec["task"], project, spec["paper"])
    dm.bypass_cache = True  # computed from the files, not read back from a cache of this process
    dm.setup("fit")
    return build_digest(dm, sample_items(dm, spec["max_items"]))


def stop(build: Build) -> None:
    """End the build if it still runs and remove its files (the gate ended early)."""
    if build.process.poll() is None:
        build.process.kill()
        build.process.wait()
    shutil.rmtree(build.out.parent, ignore_errors=True)


def main(argv: list[str]) -> None:
    """In the fresh process: build the datamodule from SPEC (bypassing caches), write its digest.

    Importing Lightning is ~3 s of this process's ~4.5 s (measured on BiMPM's sample), so the
    build first runs with a stand-in for its LightningDataModule; a data module that needs more
    of Lightning fails there and is built again with the real one.
    """
    spec = json.loads(argv[0])
    stand_in = types.ModuleType("pytorch_lightning")
    stand_in.LightningDataModule = _LightningDataModule  # type: ignore[attr-defined]
    sys.modules.setdefault("pytorch_lightning", stand_in)
    try:
        digest = _build(spec)
    except Exception:
        for name in [m for m in sys.modules if m.split(".")[0] in ("papers", "pytorch_lightning")]:
            del sys.modules[name]
        sys.modules.pop("repro.data.datamodule", None)
        digest = _build(spec)
    Path(spec["out"]).write_text(json.dumps(digest))


if __name__ == "__main__":
    main(sys.argv[1:])
