"""Tests for repro/scaffold.py and `repro new`: all files written, nothing overwritten, names checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro.errors import PaperError
from repro.project import Project
from repro.scaffold import LAYOUT, scaffold_paper


@pytest.fixture
def root(tmp_path, make_project):
    """A throwaway repro project with repro's conf/ and no papers yet."""
    make_project(paper=None)
    return tmp_path


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `repro ARGS` in-process through main() (which turns ReproError into `Error: ...`)."""
    from repro.cli import main

    monkeypatch.setattr(sys, "argv", ["repro", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def _expected(root: Path, paper: str) -> list[Path]:
    return [root / dst.format(paper=paper) for dst in LAYOUT.values()]


def test_new_writes_every_file(root, monkeypatch, capsys):
    code, out, err = _cli(
        monkeypatch,
        capsys,
        "new",
        "resnet",
        "--title",
        "Deep Residual Learning",
        "--arxiv",
        "1512.03385",
    )
    assert code == 0, err
    for p in _expected(root, "resnet"):
        assert p.is_file(), p
        assert f"created {p.relative_to(root)}" in out
    assert (root / "papers" / "__init__.py").is_file()
    conf = (root / "conf" / "paper" / "resnet.yaml").read_text()
    assert 'title: "Deep Residual Learning"' in conf and '"1512.03385"' in conf
    assert "{{" not in conf
    assert "Deep Residual Learning" in (root / "papers" / "resnet" / "README.md").read_text()
    assert (
        "from papers.resnet.model import build_model"
        in (root / "papers" / "resnet" / "tests" / "test_resnet_model.py").read_text()
    )
    assert Project(root).papers() == ["resnet"]


def test_new_refuses_to_overwrite_and_writes_nothing(root, monkeypatch, capsys):
    existing = root / "papers" / "resnet" / "model.py"
    existing.parent.mkdir(parents=True)
    existing.write_text("# my model\n")
    code, out, err = _cli(monkeypatch, capsys, "new", "resnet")
    assert code == 1
    assert err.startswith("Error: refusing to overwrite")
    assert "papers/resnet/model.py" in err
    assert existing.read_text() == "# my model\n"
    others = [p for p in _expected(root, "resnet") if p != existing]
    assert not [p for p in others if p.exists()]


def test_scaffold_twice_refuses(root):
    project = Project(root)
    scaffold_paper(project, "toy")
    before = {p: p.read_text() for p in _expected(root, "toy")}
    with pytest.raises(PaperError, match="refusing to overwrite"):
        scaffold_paper(project, "toy", "Another title")
    assert {p: p.read_text() for p in _expected(root, "toy")} == before


@pytest.mark.parametrize("name", ["my-paper", "1abc", "class", "MyPaper", ""])
def test_new_rejects_names_that_are_not_identifiers(root, monkeypatch, capsys, name):
    code, out, err = _cli(monkeypatch, capsys, "new", name)
    assert code == 1
    assert err.startswith(f"Error: '{name}' is not a valid paper name")
    assert "lower-case Python identifier" in err
    assert not (root / "papers").exists()
    assert not (root / "conf" / "paper").exists()


def test_generated_paper_tests_pass(root):
    scaffold_paper(Project(root), "toy", "Toy", "0000.00000")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "papers/toy/tests", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
