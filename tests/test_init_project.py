"""Tests for repro/init_project.py, `repro init` and `repro --version`; the package list in pyproject."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from repro import __version__, cli
from repro.errors import ProjectError
from repro.init_project import default_conf, init_project
from repro.project import Project, find_project

REPO = Path(__file__).resolve().parents[1]
CONF_FILES = [
    "conf/config.yaml",
    "conf/defaults.yaml",
    "conf/launcher/local.yaml",
    "conf/launcher/slurm.yaml",
    "conf/logger/csv.yaml",
    "conf/logger/wandb.yaml",
    "conf/stage/data.yaml",
    "conf/stage/experiments.yaml",
    "conf/stage/full.yaml",
    "conf/stage/overfit.yaml",
    "conf/stage/shapes.yaml",
]


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`repro ARGS` in-process through main(), with wide consoles so messages do not wrap."""
    monkeypatch.setattr(cli, "console", Console(width=1000))
    monkeypatch.setattr(cli, "err_console", Console(width=1000, stderr=True))
    monkeypatch.setattr(sys, "argv", ["repro", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


# ---- the defaults: one copy, our conf/ -----------------------------------------------------------
def test_defaults_are_our_conf_without_the_paper():
    files = default_conf()
    assert sorted(files) == CONF_FILES  # conf/paper/bimpm.yaml is ours, not a default
    for rel, content in files.items():
        assert content == (REPO / rel).read_bytes(), rel


def test_pyproject_lists_every_package_folder():
    """setuptools takes the listed packages only: a new folder under repro/ or conf/ must be added."""
    with (REPO / "pyproject.toml").open("rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"repro._conf": "conf"}
    on_disk = {"repro", "repro._conf"}
    for top, name in ((REPO / "repro", "repro"), (REPO / "conf", "repro._conf")):
        for d in top.rglob("*"):
            if d.is_dir() and d.name != "__pycache__" and d.relative_to(top).parts[0] != "paper":
                on_disk.add(".".join([name, *d.relative_to(top).parts]))
    assert sorted(setuptools["packages"]) == sorted(on_disk)


# ---- init_project -------------------------------------------------------------------------------
def test_init_in_an_empty_directory_writes_the_project(tmp_path):
    result = init_project(tmp_path)
    written = [str(p.relative_to(tmp_path)) for p in result.created]
    assert written == [*CONF_FILES, "papers/__init__.py", "conf/paper", "notes"]
    assert (tmp_path / "conf" / "paper").is_dir() and not any(
        (tmp_path / "conf" / "paper").iterdir()
    )
    assert (tmp_path / "notes").is_dir() and not any((tmp_path / "notes").iterdir())
    assert (tmp_path / "papers" / "__init__.py").read_bytes() == b""
    assert (tmp_path / ".gitignore").read_text() == "runs/\n.cache/\n.repro/\n"
    assert result.gitignore_added == ["runs/", ".cache/", ".repro/"]
    assert not (tmp_path / "conf" / "__init__.py").exists()
    assert find_project(tmp_path) == Project(tmp_path)


def test_init_creates_a_missing_directory(tmp_path):
    init_project(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / "conf" / "config.yaml").is_file()


def test_init_in_a_git_repo_keeps_its_files_and_appends_to_gitignore(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".gitignore").write_text("*.pyc\n/runs")  # no final newline; runs/ as /runs
    (tmp_path / "train.py").write_text("print('mine')\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "ideas.md").write_text("mine\n")
    result = init_project(tmp_path)
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\n/runs\n.cache/\n.repro/\n"
    assert result.gitignore_added == [".cache/", ".repro/"]
    assert (tmp_path / "train.py").read_text() == "print('mine')\n"
    assert (tmp_path / "notes" / "ideas.md").read_text() == "mine\n"
    assert "notes" not in [str(p.relative_to(tmp_path)) for p in result.created]
    ignored = subprocess.run(
        ["git", "check-ignore", "runs/x/record.json", ".cache/repro/a.pt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ignored.stdout.split() == ["runs/x/record.json", ".cache/repro/a.pt"]


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path):
    (tmp_path / "conf" / "stage").mkdir(parents=True)
    (tmp_path / "conf" / "stage" / "full.yaml").write_text("mine\n")
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "__init__.py").write_text("# mine\n")
    with pytest.raises(ProjectError) as e:
        init_project(tmp_path)
    assert str(e.value) == (
        f"{tmp_path}: expected none of the files `repro init` writes, found conf/stage/full.yaml, "
        "papers/__init__.py; nothing was written: move them aside and run `repro init` again"
    )
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "conf",
        "conf/stage",
        "conf/stage/full.yaml",
        "papers",
        "papers/__init__.py",
    ]
    assert (tmp_path / "conf" / "stage" / "full.yaml").read_text() == "mine\n"


def test_init_refuses_a_file_where_a_folder_goes(tmp_path):
    (tmp_path / "notes").write_text("a file\n")
    with pytest.raises(ProjectError, match=r"found notes \(not a directory\); nothing was written"):
        init_project(tmp_path)
    assert not (tmp_path / "conf").exists()


def test_init_on_a_file_is_an_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ProjectError) as e:
        init_project(tmp_path / "f")
    assert str(e.value) == (
        f"{tmp_path / 'f'}: expected a directory, found a file; pass a directory to `repro init`"
    )


# ---- the CLI --------------------------------------------------------------------------------------
def test_version(monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "--version")
    assert (code, out, err) == (0, f"repro {__version__}\n", "")


def test_init_help():
    result = CliRunner().invoke(cli.app, ["init", "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "Make a folder a repro project" in result.output
    assert "init" in CliRunner().invoke(cli.app, ["--help"]).output


def test_cli_init_then_new_then_a_second_init_refuses(tmp_path, monkeypatch, capsys, purge_papers):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(monkeypatch, capsys, "init")
    assert code == 0, err
    assert "  created conf/config.yaml\n" in out and "  created conf/paper/\n" in out
    assert "  added runs/ .cache/ .repro/ to .gitignore\n" in out
    assert out.endswith(
        "Next: repro new <paper> (a tiny working example to replace with the paper).\n"
    )
    code, out, err = _cli(monkeypatch, capsys, "new", "toy")
    assert code == 0, err
    assert Project(tmp_path).papers() == ["toy"]
    code, out, err = _cli(monkeypatch, capsys, "init")
    assert code == 1
    assert err.startswith(
        f"Error: {tmp_path}: expected none of the files `repro init` writes, found "
        "conf/config.yaml, conf/defaults.yaml, "
    )
    assert err.endswith(
        "papers/__init__.py (already a repro project); nothing was written: move them "
        "aside and run `repro init` again\n"
    )


def test_cli_init_elsewhere_says_cd(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(monkeypatch, capsys, "init", "proj")
    assert code == 0, err
    assert (tmp_path / "proj" / "conf" / "config.yaml").is_file()
    assert "Next: cd proj && repro new <paper>" in out


def test_outside_a_project_the_error_says_repro_init(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(monkeypatch, capsys, "status")
    assert code == 1
    assert err == (
        f"Error: no repro project found in {tmp_path} or its parents (looked for "
        "conf/config.yaml); run `repro init` to make this directory one\n"
    )


@pytest.mark.parametrize("args", [["--version"], ["init"]])
def test_init_and_version_import_neither_torch_nor_lightning(tmp_path, args):
    code = (
        f"import sys; sys.argv = ['repro', *{args!r}]\n"
        "from repro.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', 'torch' in sys.modules, 'pytorch_lightning' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY False False", proc.stdout + proc.stderr
