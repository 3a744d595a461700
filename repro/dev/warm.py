"""The slow state a warm worker (and `repro.lab`) pays for once: torch, Lightning and the gates
imported, and the paper's datamodule built and set up, with what it was built from."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.config.compose import Resolved
from repro.dev.fresh import forget_paper_modules, paper_modules, pin_bytecode_to_source
from repro.project import Project

# What a shapes or overfit run would import on its way; measured: torch + Lightning are most of
# the ~8 s a cold `repro stage shapes` spends before its gate here, matplotlib's pyplot ~0.4 s.
HEAVY_MODULES = (
    "torch",
    "pytorch_lightning",
    "matplotlib.pyplot",
    "resource",
    "rich.progress",
    "rich.rule",
    "repro.stage",
    "repro.records",
    "repro.runner",
    "repro.display",
    "repro.envinfo",
    "repro.gitstate",
    "repro.notebook",
    "repro.train.init",
    "repro.train.seeding",
    "repro.gates.data",
    "repro.gates.shapes",
    "repro.gates.overfit",
)
DATA_SECTIONS = ("seed", "data")  # what a built datamodule depends on in the composed config


def import_heavy() -> int:
    """Import what the gates need, with torch held to one thread; returns the thread count a
    fresh process would have used (a forked child sets it back, see child.py).

    One thread because GNU OpenMP is not fork-safe: a parent that ever ran a parallel region
    leaves a child whose first parallel region waits forever for threads that were not copied
    (measured here: a matmul in the parent, then any matmul in the child, hangs).
    """
    import matplotlib

    matplotlib.use("Agg")  # what the overfit gate selects before plotting; no display needed
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for name in HEAVY_MODULES:
        importlib.import_module(name)
    _render_once()
    return threads


def _render_once() -> None:
    """Rich loads its emoji and character-width tables on first use: load them here, once."""
    import io

    from rich.console import Console
    from rich.table import Table

    console = Console(file=io.StringIO(), width=80, force_terminal=True)
    table = Table("check", "measured")
    table.add_row("ok", "max |Δlogits| ≤ 1e-06 — :white_check_mark:")
    console.rule("warm")
    console.print(table)


@dataclass
class WarmData:
    """A datamodule built and set up for the composed `seed` and `data` config it matches."""

    datamodule: Any
    config: dict[str, Any]  # the composed DATA_SECTIONS it was built with
    seed: int
    modules: frozenset[str]  # papers.<p>.* modules the data code imported: kept in a child
    code_files: list[Path]  # their files: an edit to one rebuilds the data
    code_digests: dict[str, str]  # {file name: digest} of those the paper's code pins (a run's)
    data_files: list[Path]  # the datamodule's data_files(): an edit to one rebuilds the data
    key: str  # digest of all of the above, see data_key()
    seconds: float
    built_at: float = field(default_factory=time.time)

    def matches(self, config: dict[str, Any]) -> bool:
        """Whether a run composed as `config` (the plain dict) can use this datamodule."""
        return data_sections(config) == self.config


def data_sections(config: dict[str, Any]) -> dict[str, Any]:
    return {k: config.get(k) for k in DATA_SECTIONS}


def data_key(config: dict[str, Any], code_files: list[Path], data_files: list[Path]) -> str:
    """What the warm data was built from: the data config, the data code's content, and the data
    files' size and mtime (hashing a multi-GB dataset per request would cost more than it saves;
    the run's own fingerprint still hashes them)."""

    def stat(p: Path) -> list[int] | None:
        try:
            st = p.stat()
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def content(p: Path) -> str | None:
        try:
            return hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError:
            return None

    blob = {
        "config": data_sections(config),
        "code": {str(p): content(p) for p in code_files},
        "data": {str(p): stat(p) for p in data_files},
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def build_warm_data(project: Project, paper: str, resolved: Resolved) -> WarmData:
    """Import the paper's data code afresh, build its datamodule for the composed config and set it
    up (vocabulary, vectors, encoded splits): the work every gate run would otherwise repeat."""
    from repro.paper_code import PaperCode
    from repro.project import import_paper_module
    from repro.tasks import load_task_class

    t0 = time.perf_counter()
    forget_paper_modules(project.package(paper))
    pin_bytecode_to_source(project.paper_dir(paper))
    project.activate()
    pin = PaperCode.read(project.paper_dir(paper))
    pin.install()  # the data code runs from these bytes: a run checks them against its own
    importlib.import_module(project.package(paper))  # first: the difference below is data.py's
    package = set(paper_modules(project.package(paper)))
    build = import_paper_module(project, paper, "data", "build_datamodule")
    dm = build(resolved.cfg.data, resolved.cfg.seed)
    dm.task_class = load_task_class(resolved.cfg.paper.task, project, paper)
    dm.setup("fit")
    modules = frozenset(paper_modules(project.package(paper)))
    code = sorted(
        {Path(f) for m in modules - package if (f := getattr(sys.modules[m], "__file__", None))}
    )
    files = [Path(p) for p in dm.data_files()]
    pinned = pin.digests()
    return WarmData(
        datamodule=dm,
        config=data_sections(resolved.config),
        seed=resolved.cfg.seed,
        modules=modules,
        code_files=code,
        code_digests={p.name: pinned[p.name] for p in code if p.name in pinned},
        data_files=files,
        key=data_key(resolved.config, code, files),
        seconds=time.perf_counter() - t0,
    )
