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
        "from papers.resnet.model import ModelConfig, build_model"
        in (root / "papers" / "resnet" / "tests" / "test_resnet_model.py").read_text()
    )
    assert Project(root).papers() == ["resnet"]


def test_new_refuses_to_overwrite_and_writes_nothing(root, monkeypatch, capsys):
    existing = root / "papers" / "resnet" / "model.py"
    existing.parent.mkdir(parents=True)
    existing.write_text("# my model\n")
    code, out, err = _cli(monkeypatch, capsys, "new", "resnet")
    assert code == 1
    assert err.startswith(
        "Error: papers/resnet/model.py: expected no such file, found one; refusing to overwrite"
    )
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
    assert err.startswith(
        f"Error: paper name {name!r}: expected a lower-case ASCII Python identifier"
    )
    assert "lower-case ASCII Python identifier" in err
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


# ---- issue 14: titles through a serializer, exclusive files, names checked in full ------------
@pytest.mark.parametrize(
    "title", ['He said "hi"', "back\\slash \\d", "a: b # c", "café — 'quotes'"]
)
def test_any_title_gives_a_paper_config_that_parses(root, title):
    import py_compile

    from repro.config.compose import compose

    scaffold_paper(Project(root), "odd", title, "1234.56789")
    assert compose(Project(root), "odd").cfg.paper.title == title
    for name in ("model.py", "data.py"):
        py_compile.compile(str(root / "papers" / "odd" / name), doraise=True)


def test_a_title_with_a_newline_is_refused_before_anything_is_written(root):
    with pytest.raises(PaperError, match=r"--title: expected one line of text"):
        scaffold_paper(Project(root), "odd", "two\nlines")
    assert (
        not (root / "papers" / "odd").exists()
        and not (root / "conf" / "paper" / "odd.yaml").exists()
    )


def test_a_non_ascii_name_is_refused_before_anything_is_written(root, monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "new", "café")
    assert code == 1 and err.startswith("Error: paper name 'café': expected a lower-case ASCII")
    assert (
        not (root / "conf" / "paper" / "café.yaml").exists()
        and not (root / "papers" / "café").exists()
    )


def test_two_scaffolds_at_once_never_overwrite_each_other(root):
    import threading

    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def scaffold(title: str) -> None:
        barrier.wait()
        try:
            scaffold_paper(Project(root), "race", title)
            outcomes.append(title)
        except PaperError:
            outcomes.append("refused")

    threads = [threading.Thread(target=scaffold, args=(t,)) for t in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o != "refused"]
    assert sorted(outcomes).count("refused") == 1 and len(winners) == 1
    text = (root / "conf" / "paper" / "race.yaml").read_text()
    model = (root / "papers" / "race" / "model.py").read_text()
    assert f'"{winners[0]}"' in text and model.startswith(
        f'"""{winners[0]}:'
    )  # one writer's files only


def test_new_with_use_makes_the_paper_current(root, monkeypatch, capsys):
    assert _cli(monkeypatch, capsys, "new", "first")[0] == 0
    code, out, err = _cli(monkeypatch, capsys, "new", "second")
    assert code == 0 and "There is no current paper: pass --paper second" in out
    code, out, err = _cli(monkeypatch, capsys, "new", "third", "--use")
    assert code == 0 and "third is the current paper" in out
    assert Project(root).resolve_paper(None) == "third"
    assert (root / ".repro" / "paper").read_text().strip() == "third"
