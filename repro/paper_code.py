"""A run is pinned to the code it ran: the paper's files are read once, hashed, and imported from
those very bytes, so a run's fingerprint and `code/` snapshot are the code its gate executed
(issue 20: hash what you import, import what you hashed).

Before, the fingerprint and the snapshot were read from disk after the model had been imported:
a model.py replaced while a prerequisite stage ran made the record name code that never ran. Now
one command reads the paper's top-level `.py` files once (`PaperCode.read`), every stage it runs
imports them from that copy (`PaperCode.install`: a meta-path finder for `papers.<paper>.<name>`),
and the fingerprint and snapshot are computed from the same copy. Modules loaded from other bytes
(from disk, or another copy) are dropped when a copy is installed, so each stage imports afresh
the code it records; identical bytes are kept (the warm worker's data code).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import linecache
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

FINGERPRINTED = "__init__.py"  # excluded from the fingerprint (repro/fingerprint.py: code_files)


def digest(data: bytes) -> str:
    """What repro/fingerprint.py records for a file: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class PaperCode:
    """The paper's top-level .py files as read once: {file name: bytes}. `paper` is the folder
    under papers/ (the package `papers.<paper>`), which a paper sharing another's code
    (paper.code) shares too."""

    paper: str
    paper_dir: Path
    sources: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def read(cls, paper_dir: Path) -> PaperCode:
        """Read every top-level .py file of `paper_dir` once (a file that vanishes meanwhile is
        left out, as if it had not been there)."""
        paper_dir = Path(paper_dir)
        sources = {}
        for path in sorted(paper_dir.glob("*.py")):
            try:
                sources[path.name] = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                continue
        return cls(paper_dir.name, paper_dir, sources)  # papers.<folder> (paper.code may share it)

    @classmethod
    def from_snapshot(cls, code_dir: Path, paper_dir: Path) -> PaperCode:
        """The code a recorded run ran (its `code/` folder), to import as if it were the paper's
        own files (a DDP rank joining rank 0's run, a job of the experiments stage)."""
        sources = {p.name: p.read_bytes() for p in sorted(Path(code_dir).glob("*.py"))}
        return cls(Path(paper_dir).name, Path(paper_dir), sources)

    def digests(self) -> dict[str, str]:
        """{file name: digest} of the fingerprinted files (all but __init__.py)."""
        return {n: digest(b) for n, b in self.sources.items() if n != FINGERPRINTED}

    def text(self, name: str) -> str:
        return self.sources[name].decode("utf-8", errors="replace")

    def module_name(self, file_name: str) -> str:
        return f"papers.{self.paper}.{file_name.removesuffix('.py')}"

    def install(self) -> list[str]:
        """Import the paper's modules from these bytes from now on, in this process; drop the
        paper's modules loaded from anything else. Returns the names dropped."""
        _FINDER.pinned[self.paper] = self
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
        prefix = f"papers.{self.paper}."
        gone = []
        for name, module in list(sys.modules.items()):
            if not name.startswith(prefix) or name.count(".") != 2:
                continue  # the package itself, or a module of a sub-package: not pinned
            want = self._digest_of(name)  # None: a file this copy does not hold (deleted)
            same_file = getattr(module, "__file__", None) == str(self.paper_dir / _file(name))
            if want is None or _loaded_from(module) != want or not same_file:
                del sys.modules[name]
                gone.append(name)
        importlib.invalidate_caches()
        return gone

    def _digest_of(self, module_name: str) -> str | None:
        file_name = _file(module_name)
        if file_name not in self.sources or file_name == FINGERPRINTED:
            return None
        return digest(self.sources[file_name])


def uninstall(paper: str) -> None:
    """Import the paper's modules from disk again (a test, or a long-lived process done)."""
    _FINDER.pinned.pop(paper, None)


def pinned(paper: str) -> PaperCode | None:
    """The copy the paper's modules are imported from in this process, if any."""
    return _FINDER.pinned.get(paper)


def _file(module_name: str) -> str:
    """papers.<paper>.model -> model.py"""
    return module_name.rsplit(".", 1)[-1] + ".py"


def _loaded_from(module: ModuleType) -> str | None:
    """The digest of the bytes a module was executed from, when a PaperCode loaded it."""
    spec = getattr(module, "__spec__", None)
    state = getattr(spec, "loader_state", None)
    return state.get("repro_digest") if isinstance(state, dict) else None


class _PinnedLoader(importlib.abc.InspectLoader):
    """Executes a module from the bytes it was given, never from the file."""

    def __init__(self, source: bytes, path: Path):
        self.source, self.path = source, path

    def get_source(self, fullname: str) -> str:
        return self.source.decode("utf-8", errors="replace")

    def get_code(self, fullname: str):
        return compile(self.source, str(self.path), "exec", dont_inherit=True)

    def exec_module(self, module: ModuleType) -> None:
        # Tracebacks and inspect show the lines that ran, not the file as it is now.
        text = self.get_source(module.__name__)
        linecache.cache[str(self.path)] = (len(text), None, text.splitlines(True), str(self.path))
        exec(self.get_code(module.__name__), module.__dict__)  # noqa: S102 (the paper's own code)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds `papers.<paper>.<name>` in the installed copies; anything else is left to Python."""

    def __init__(self) -> None:
        self.pinned: dict[str, PaperCode] = {}

    def find_spec(self, fullname, path, target=None):
        parts = fullname.split(".")
        if len(parts) != 3 or parts[0] != "papers" or parts[1] not in self.pinned:
            return None
        code = self.pinned[parts[1]]
        file_name = parts[2] + ".py"
        if file_name not in code.sources or file_name == FINGERPRINTED:
            return None
        here = os.path.realpath(code.paper_dir)
        if path is not None and here not in [os.path.realpath(p) for p in path]:
            return None  # `papers.<paper>` of another project (a test, a notebook): not this copy
        origin = code.paper_dir / file_name
        loader = _PinnedLoader(code.sources[file_name], origin)
        spec = importlib.machinery.ModuleSpec(
            fullname,
            loader,
            origin=str(origin),
            loader_state={"repro_digest": digest(code.sources[file_name])},
        )
        spec.has_location = True  # __file__ names the paper's file
        return spec


_FINDER = _Finder()
