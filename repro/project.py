"""Where things are: the project root, the papers in it, and which paper a command is about."""

from __future__ import annotations

import functools
import importlib
import keyword
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.errors import PaperError, ProjectError


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def papers_dir(self) -> Path:
        return self.root / "papers"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def notes_dir(self) -> Path:
        return self.root / "notes"

    def papers(self) -> list[str]:
        """Papers that have both a config and a code folder."""
        confs = {p.stem for p in (self.conf_dir / "paper").glob("*.yaml")}
        return sorted(n for n in confs if self.paper_dir(n).is_dir())

    def code_of(self, paper: str) -> str:
        """The folder under papers/ that holds `paper`'s code: its own name, or `paper.code` in
        its config when it shares another paper's code (BiMPM's answer selection, bimpm_wikiqa,
        runs papers/bimpm/ with a task and data of its own)."""
        return _code_name(self.conf_dir / "paper" / f"{paper}.yaml") or paper

    def paper_dir(self, paper: str) -> Path:
        return self.papers_dir / self.code_of(paper)

    def package(self, paper: str) -> str:
        """The import name of the paper's code: papers.<folder>."""
        return f"papers.{self.code_of(paper)}"

    def resolve_paper(self, paper: str | None) -> str:
        """--paper, else the current paper (`repro new --use`), else [tool.repro] paper in
        pyproject.toml, else the only paper."""
        known = self.papers()
        if paper:
            if not _is_paper_name(paper):
                raise PaperError(
                    f"--paper {paper!r}: expected the name of a paper here ({', '.join(known) or 'none yet'}), "
                    "a lower-case Python identifier, found a name no paper can have; see `repro status --all`"
                )
            if paper not in known:
                raise PaperError(
                    f"no paper '{paper}': expected conf/paper/{paper}.yaml and papers/{paper}/ "
                    f"(papers here: {', '.join(known) or 'none'}); create it with `repro new {paper}`"
                )
            return paper
        current = self.current_paper()
        if current and current in known:
            return current
        configured = self.configured_paper()
        if configured and configured in known:
            return configured
        if len(known) == 1:
            return known[0]
        if not known:
            raise PaperError("no papers yet: create one with `repro new <paper>`")
        raise PaperError(
            f"several papers ({', '.join(known)}): pass --paper or set [tool.repro] paper in pyproject.toml"
        )

    @property
    def current_paper_file(self) -> Path:
        """This checkout's current paper (`repro new --use`): state, not config (git-ignored)."""
        return self.root / ".repro" / "paper"

    def current_paper(self) -> str | None:
        try:
            return self.current_paper_file.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None
        except UnicodeDecodeError:
            raise ProjectError(
                f"{self.current_paper_file}: expected a paper's name, found bytes that are not "
                "UTF-8; run `repro new <paper> --use` or delete the file"
            ) from None

    def use_paper(self, paper: str) -> None:
        """Make `paper` the current one for commands without --paper."""
        self.current_paper_file.parent.mkdir(parents=True, exist_ok=True)
        from repro.storage import atomic_write  # replaces a link there, never writes through it

        atomic_write(self.current_paper_file, paper + "\n", "the current paper")

    def configured_paper(self) -> str | None:
        pyproject = self.root / "pyproject.toml"
        if not pyproject.exists():
            return None
        with pyproject.open("rb") as f:
            return tomllib.load(f).get("tool", {}).get("repro", {}).get("paper")

    def activate(self) -> None:
        """Make `papers.<name>` importable."""
        if str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))


def import_paper_module(project: Project, paper: str, module: str, attr: str | None) -> Any:
    """papers.<paper>.<module>.<attr> (the module itself when attr is None)."""
    project.activate()
    path = project.paper_dir(paper) / f"{module}.py"
    try:
        mod = importlib.import_module(f"{project.package(paper)}.{module}")
    except ModuleNotFoundError as e:
        if not path.exists():
            raise PaperError(
                f"{path}: expected {module}.py defining {attr}(), found no file"
            ) from e
        raise
    if attr is None:
        return mod
    if not hasattr(mod, attr):
        raise PaperError(f"{path}: expected a function {attr}() (repro calls it), found none")
    return getattr(mod, attr)


def find_project(start: Path | None = None) -> Project:
    """The nearest folder at or above `start` holding conf/config.yaml."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "conf" / "config.yaml").is_file():
            return Project(d)
    raise ProjectError(
        f"no repro project found in {here} or its parents (looked for conf/config.yaml); "
        "run `repro init` to make this directory one"
    )


def enter_project(start: Path | None = None) -> Project:
    """find_project, then make its root the current directory, so that every relative path in the
    config or on the command line (data files, vectors, caches) means the same file from any
    folder below the root: `cd papers && repro stage data` reads papers/bimpm/sample as the
    config says, not papers/papers/bimpm/sample (issue 14)."""
    project = find_project(start)
    os.chdir(project.root)
    return project


def _is_paper_name(name: str) -> bool:
    """A paper name becomes a Python package and directory names: ASCII lower-case identifier."""
    return bool(re.fullmatch(r"[a-z_][a-z0-9_]*", name or "")) and not keyword.iskeyword(name)


def check_paper_name(name: str) -> None:
    if not _is_paper_name(name):
        raise PaperError(
            f"paper name {name!r}: expected a lower-case ASCII Python identifier (a-z, 0-9, _; "
            "not starting with a digit, not a Python keyword), e.g. resnet or bimpm"
        )


def _code_name(config: Path) -> str | None:
    """`paper.code` of a paper config (None when unset, unreadable or not a name: the paper's own
    folder then; a bad config is reported when it is composed)."""
    try:
        stat = config.stat()
    except OSError:
        return None
    return _read_code_name(str(config), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _read_code_name(path: str, mtime_ns: int, size: int) -> str | None:
    import yaml

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=loader)
        code = data["paper"]["code"]
    except Exception:  # no such key, or a file compose will report in its own words
        return None
    return code if isinstance(code, str) and _is_paper_name(code) else None
