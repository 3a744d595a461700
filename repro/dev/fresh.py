"""Fresh paper code in a long-lived process: forget the paper's imported modules, and make the
next import compile what is on disk now."""

from __future__ import annotations

import importlib
import importlib.util
import py_compile
import sys
from collections.abc import Collection
from pathlib import Path

_HASH_BASED = 0b1  # PEP 552: bit 0 of the pyc's flags word


def paper_modules(package: str) -> list[str]:
    """Names of the paper's modules imported in this process (its package, papers.<folder>
    (Project.package), and below)."""
    return [m for m in sys.modules if m == package or m.startswith(package + ".")]


def forget_paper_modules(package: str, keep: Collection[str] = ()) -> list[str]:
    """Drop the paper's imported modules except `keep`, so the next import reads the files; returns
    the names dropped."""
    gone = [m for m in paper_modules(package) if m not in keep]
    for name in gone:
        del sys.modules[name]
    importlib.invalidate_caches()  # a module file added since the last import is found
    return gone


def pin_bytecode_to_source(paper_dir: Path) -> None:
    """Make the paper's cached .pyc files check their source's content, not its mtime.

    Python reuses `__pycache__/x.pyc` when the source's mtime (whole seconds) and size match the
    pyc's: two saves of the same length within one second, easy in a sub-second edit loop, would
    run the older code while the fingerprint hashes the newer. A hash-checked pyc (PEP 552) is
    validated against the source's bytes at every import, and Python keeps writing hash-checked
    pycs for that file when it recompiles, so each file is converted once. Only pycs that exist
    are converted: without one, the import compiles the source anyway.
    """
    for src in sorted(paper_dir.rglob("*.py")):
        pyc = Path(importlib.util.cache_from_source(src))
        if "__pycache__" in src.parts or not pyc.exists() or _is_hash_checked(pyc):
            continue
        try:
            py_compile.compile(
                str(src),
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )
        except (py_compile.PyCompileError, OSError):
            pyc.unlink(missing_ok=True)  # it fails at its import, where the run records it


def _is_hash_checked(pyc: Path) -> bool:
    try:
        with pyc.open("rb") as f:
            header = f.read(8)
    except OSError:
        return False
    return len(header) == 8 and bool(int.from_bytes(header[4:8], "little") & _HASH_BASED)
