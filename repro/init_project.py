"""`repro init`: make a directory a repro project (repro's default conf/, papers/, notes/, .gitignore)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from repro.errors import ProjectError
from repro.storage import append_text

# Our own top-level conf/, installed as package data (pyproject.toml maps it to repro._conf): the
# one copy of the defaults. Its paper/ folder holds our paper (BiMPM), which is not a default and
# is not in the wheel; an editable install still sees it, so it is skipped here too.
DEFAULTS_PACKAGE = "repro._conf"
NOT_DEFAULTS = ("paper", "__pycache__")
EMPTY_DIRS = ("conf/paper", "notes")  # `repro new` fills them
GITIGNORE = ("runs/", ".cache/", ".repro/")  # run records; data caches; this checkout's state


@dataclass
class InitResult:
    """What `init_project` wrote: new files and empty folders, and the lines added to .gitignore."""

    created: list[Path] = field(default_factory=list)
    gitignore_added: list[str] = field(default_factory=list)


def default_conf() -> dict[str, bytes]:
    """repro's default conf/ files as {path relative to the project root: content}."""
    files: dict[str, bytes] = {}

    def walk(node: Traversable, rel: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir() and child.name not in NOT_DEFAULTS:
                walk(child, f"{rel}/{child.name}")
            elif child.is_file() and child.name.endswith(".yaml"):
                files[f"{rel}/{child.name}"] = child.read_bytes()

    walk(resources.files(DEFAULTS_PACKAGE), "conf")
    return files


def init_project(directory: Path) -> InitResult:
    """Write repro's defaults into `directory` (created if absent); refuse before writing anything
    if one of the files exists already."""
    root = Path(directory).absolute()
    files = {**default_conf(), "papers/__init__.py": b""}
    dirs = sorted({str(Path(rel).parent) for rel in files} | set(EMPTY_DIRS))
    if root.exists() and not root.is_dir():
        raise ProjectError(
            f"{root}: expected a directory, found a file; pass a directory to `repro init`"
        )
    clashes = [rel for rel in files if (root / rel).exists() or (root / rel).is_symlink()]
    clashes += [f"{d} (not a directory)" for d in dirs if _exists_not_dir(root / d)]
    if (root / ".gitignore").is_symlink():  # appending would write to the link's target
        clashes.append(".gitignore (a symbolic link)")
    elif _exists_not_file(root / ".gitignore"):
        clashes.append(".gitignore (not a file)")
    if clashes:
        hint = " (already a repro project)" if "conf/config.yaml" in clashes else ""
        raise ProjectError(
            f"{root}: expected none of the files `repro init` writes, found {', '.join(clashes)}"
            f"{hint}; nothing was written: move them aside and run `repro init` again"
        )

    result = InitResult()
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(root / rel, "xb") as f:  # exclusive: never replaces a file created meanwhile
            f.write(content)
        result.created.append(root / rel)
    for d in EMPTY_DIRS:
        if not (root / d).is_dir():
            (root / d).mkdir(parents=True)
            result.created.append(root / d)
    result.gitignore_added = _ignore(root / ".gitignore", GITIGNORE)
    return result


def _exists_not_dir(path: Path) -> bool:
    return (path.exists() or path.is_symlink()) and not path.is_dir()


def _exists_not_file(path: Path) -> bool:
    return (path.exists() or path.is_symlink()) and not path.is_file()


def _ignore(gitignore: Path, patterns: tuple[str, ...]) -> list[str]:
    """Append each pattern that .gitignore lacks (creating the file); return those added."""
    text = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    present = {line.strip().strip("/") for line in text.splitlines()}
    missing = [p for p in patterns if p.strip("/") not in present]
    if missing:
        lead = "\n" if text and not text.endswith("\n") else ""
        append_text(gitignore, lead + "".join(f"{p}\n" for p in missing), "ignore patterns")
    return missing
