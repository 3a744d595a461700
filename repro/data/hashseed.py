"""The datamodule built again in a fresh Python process under another PYTHONHASHSEED, digested:
preprocessing that follows the iteration order of a set (or a dict filled from one) of strings,
as in a vocabulary or a split, comes out different there; so does unseeded randomness (torch is
reseeded there, Python's and numpy's generators start from fresh entropy) and a stale cache (the
build bypasses caches).

`start` launches the process (`python -m repro.data.hashseed SPEC`) at the gate's start: it
imports torch and the paper's data code meanwhile, then waits. `collect` hands it the digest of
the gate's first build (the reference) and waits for its own: every example's hash,
model_kwargs, the sampled items and the first batch, the same evidence as a whole build, with only
the sampled items encoded (repro/data/rebuild.py; the whole split when they differ from the
reference, so that a difference is confirmed on the real encoding). Where the gate's first build
read no cache, build() and encoding see a seeded sample of each split (split.sample_splits, the
examples still hashed whole), compared with the gate's own build of the same sample. It runs at
the lowest CPU priority on one thread, after the gate's process has freed its own builds, so it
neither slows the gate nor adds its memory to theirs (issue 21: it ran ~110 s beside the gate at
Quora's size, ~1.7 GB).
"""

from __future__ import annotations

import dataclasses
import gc
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
    """Start the fresh process for `paper`'s datamodule (the same data config, seed and task);
    it imports what it needs, then waits for `collect`."""
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
    # one thread: its work is Python, and OpenMP threads would wait on the gate's cores
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with err.open("wb") as err_fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "repro.data.hashseed", json.dumps(spec)],
            env={**os.environ, **threads, "PYTHONHASHSEED": hashseed},
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err_fh,
        )
    return Build(process, tmp / "digest.json", err, hashseed)


def collect(
    build: Build, reference: dict[str, Any], timeout_s: float, sample: int | None
) -> tuple[dict[str, Any] | None, str]:
    """Let the fresh process build, given this process's digest of a build from the files;
    (its digest, "") when it finished within timeout_s of that, else (None, why not).
    `sample`: build() and encode at most that many examples per split (split.sample_splits, as
    this process's build of `reference` did), the splits' examples digested whole; None: all."""
    try:
        try:
            message = {"reference": reference, "sample": sample}
            build.process.stdin.write(json.dumps(message).encode() + b"\n")
            build.process.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # it ended already: its exit code and stderr say why, below
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


def _import_build(spec: dict[str, Any]):
    from repro.project import Project, import_paper_module

    return import_paper_module(
        Project(Path(spec["root"])), spec["paper"], "data", "build_datamodule"
    )


def _digest(build, spec: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    from repro.config.typed import from_dict
    from repro.data.digest import build_digest, encoded_differ, example_hashes, sample_items
    from repro.data.rebuild import encode_lazily, encode_whole
    from repro.data.split import sample_splits
    from repro.project import Project
    from repro.tasks import load_task_class

    reference, sample = message["reference"], message["sample"]
    dm = build(from_dict(DataConfig, spec["data"], "data"), spec["seed"])
    dm.task_class = load_task_class(spec["task"], Project(Path(spec["root"])), spec["paper"])
    dm.bypass_cache = True  # computed from the files, not read back from a cache of this process
    whole: dict[str, list[str]] = {}
    if sample is not None:  # the splits hashed whole, then build() sees the sample
        load = dm._load_and_split

        def load_and_sample() -> None:
            load()
            whole.update(example_hashes(dm))
            dm.splits = sample_splits(dm.splits, sample)

        dm._load_and_split = load_and_sample
    real = encode_lazily(dm)
    dm.setup("fit")
    hashes = whole or example_hashes(dm)
    digest = build_digest(dm, sample_items(dm, spec["max_items"]), hashes)
    if encoded_differ(digest, reference):  # confirmed on the split encoded whole
        encode_whole(dm, real)
        digest = build_digest(dm, sample_items(dm, spec["max_items"]), hashes)
    return digest


def stop(build: Build) -> None:
    """End the build if it still runs and remove its files (the gate ended early)."""
    if build.process.poll() is None:
        build.process.kill()
        build.process.wait()
    if build.process.stdin is not None and not build.process.stdin.closed:
        build.process.stdin.close()
    shutil.rmtree(build.out.parent, ignore_errors=True)


def _forget_lightning() -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in ("papers", "pytorch_lightning")]:
        del sys.modules[name]
    sys.modules.pop("repro.data.datamodule", None)


def main(argv: list[str]) -> None:
    """In the fresh process: import the paper's data code, wait for the reference digest on
    stdin (EOF: the gate ended, exit), build from SPEC bypassing caches, write the digest.

    Importing Lightning is ~3 s of this process's ~4.5 s (measured on BiMPM's sample), so the
    build first runs with a stand-in for its LightningDataModule; a data module that needs more
    of Lightning fails there and is built again with the real one.
    """
    try:
        os.nice(19)  # the lowest priority: the gate's own process goes first
    except OSError:
        pass
    gc.disable()  # a short-lived build: cyclic collections only walk it (repro/data/collector.py)
    spec = json.loads(argv[0])
    stand_in = types.ModuleType("pytorch_lightning")
    stand_in.LightningDataModule = _LightningDataModule  # type: ignore[attr-defined]
    sys.modules.setdefault("pytorch_lightning", stand_in)
    try:
        build = _import_build(spec)
    except Exception:
        _forget_lightning()
        build, stand_in = _import_build(spec), None
    import torch

    torch.set_num_threads(1)
    # Unseeded torch draws come out as in the gate's process otherwise (torch starts from a
    # fixed seed); Python's and numpy's global generators start from fresh entropy anyway.
    torch.seed()
    line = sys.stdin.readline()
    if not line:
        return  # the gate ended early
    message = json.loads(line)
    try:
        digest = _digest(build, spec, message)
    except Exception:
        if stand_in is None:
            raise
        _forget_lightning()
        digest = _digest(_import_build(spec), spec, message)
    Path(spec["out"]).write_text(json.dumps(digest))


if __name__ == "__main__":
    main(sys.argv[1:])
