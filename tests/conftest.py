"""Shared test scaffolding: a throwaway repro project in tmp_path, and a clean `papers` import state."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from repro.project import Project
from repro.scaffold import scaffold_paper
from tests.configs import set_paper_tests

REPO = Path(__file__).resolve().parents[1]


def _forget_papers() -> None:
    """Drop `papers` and `papers.*` from sys.modules so the next import reads the current project."""
    for name in [m for m in sys.modules if m == "papers" or m.startswith("papers.")]:
        del sys.modules[name]


@pytest.fixture
def purge_papers() -> Iterator[None]:
    """Forget imported `papers` modules before the test and again after it."""
    _forget_papers()
    yield
    _forget_papers()


@pytest.fixture
def make_project(tmp_path, monkeypatch, purge_papers) -> Callable[..., Project]:
    """Factory: lay out a throwaway project in tmp_path, chdir there, scaffold `paper` unless None."""

    def make(
        paper: str | None = "toy",
        title: str = "Toy",
        arxiv: str = "0000.00000",
        task: str = "classification",
        paper_tests: bool = False,
    ) -> Project:
        conf = tmp_path / "conf"
        conf.mkdir()
        for name in ("config.yaml", "defaults.yaml"):
            shutil.copy(REPO / "conf" / name, conf / name)
        for name in ("stage", "logger", "launcher"):
            shutil.copytree(REPO / "conf" / name, conf / name)
        if not paper_tests:  # the paper's tests in a subprocess cost ~3 s of CPU a shapes run
            set_paper_tests(tmp_path, False)
        shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
        subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", list(sys.path))
        proj = Project(tmp_path)
        if paper is not None:
            scaffold_paper(proj, paper, title, arxiv, task)
        return proj

    return make


@pytest.fixture
def project(make_project) -> Project:
    """A throwaway repro project holding repro's conf/ (without papers) and the scaffolded paper 'toy'."""
    return make_project()


@pytest.fixture
def cli(monkeypatch, capsys) -> Callable[..., tuple[int, str, str]]:
    """`repro ARGS` in-process through main() (as the console script runs it: ReproError becomes
    one `Error:` line and exit 1), with wide consoles; returns (exit code, stdout, stderr)."""
    from repro import cli as cli_module
    from repro.terminal import SafeConsole

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(cli_module, "console", SafeConsole(width=250))
        monkeypatch.setattr(cli_module, "err_console", SafeConsole(width=250, stderr=True))
        monkeypatch.setattr(sys, "argv", ["repro", *args])
        try:
            cli_module.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run
