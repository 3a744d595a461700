"""The built wheel, installed into a fresh venv, runs `repro init`, `new` and three gates in an empty
directory: what a user who does `pip install repro` gets (run by .ci/wheel-tests, ~3 minutes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from repro import __version__

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.wheel


def _run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: int = 900):
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    print(f"$ {' '.join(map(str, args))} -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


def _source_tree(dest: Path) -> Path:
    """The working tree as git sees it (tracked and untracked, minus ignored): no stale build/."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file():  # a deleted but still tracked file is listed too
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_tree(tmp / "src")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp / "dist", src],
        tmp,
        _clean_env(),
    )
    assert built.returncode == 0, built.stderr
    (whl,) = (tmp / "dist").glob("repro-*.whl")
    return whl


def _clean_env(venv: Path | None = None) -> dict[str, str]:
    """This process's environment without its venv; `venv`'s bin/ first on PATH when given."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
        env["VIRTUAL_ENV"] = str(venv)
    env["COLUMNS"] = "250"  # status tables unwrapped
    return env


def test_wheel_holds_the_package_the_defaults_and_the_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        f"repro/{p.relative_to(REPO / 'repro').as_posix()}"
        for p in (REPO / "repro").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sources <= names, sorted(sources - names)  # modules and templates/
    conf = {
        f"repro/_conf/{p.relative_to(REPO / 'conf').as_posix()}"
        for p in (REPO / "conf").rglob("*.yaml")
        if p.parts[-2] != "paper"
    }
    assert conf <= names, sorted(conf - names)
    assert "repro/_conf/config.yaml" in names and "repro/_conf/stage/overfit.yaml" in names
    assert not [n for n in names if n.startswith("repro/_conf/paper")]  # BiMPM is not a default
    assert not [n for n in names if not n.startswith(("repro/", "repro-"))]  # nothing top-level
    assert f"repro-{__version__}.dist-info/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"repro-{__version__}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata


def test_installed_wheel_runs_init_new_and_three_gates(wheel, tmp_path):
    venv = tmp_path / "venv"
    env = _clean_env(venv)
    assert _run([sys.executable, "-m", "venv", venv], tmp_path, _clean_env()).returncode == 0
    py = venv / "bin" / "python"
    torch = _run(["bash", REPO / "scripts" / "install_torch.sh", py], tmp_path, env)
    assert torch.returncode == 0, torch.stdout + torch.stderr
    installed = _run([py, "-m", "pip", "install", "-q", wheel], tmp_path, env)
    assert installed.returncode == 0, installed.stderr

    work = tmp_path / "work"
    work.mkdir()
    where = _run([py, "-c", "import repro; print(repro.__file__)"], work, env)
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel's copy, not this checkout
    repro = venv / "bin" / "repro"

    version = _run([repro, "--version"], work, env)
    assert (version.returncode, version.stdout) == (0, f"repro {__version__}\n")
    init = _run([repro, "init"], work, env)
    assert init.returncode == 0, init.stderr
    assert (work / "conf" / "config.yaml").is_file() and (work / "papers" / "__init__.py").is_file()
    assert not (work / "conf" / "paper" / "bimpm.yaml").exists()
    new = _run([repro, "new", "x"], work, env)
    assert new.returncode == 0, new.stderr
    for stage in ("data", "shapes", "overfit"):
        ran = _run([repro, "stage", stage, "--paper", "x"], work, env)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert f"{stage}: PASS" in ran.stdout
    (shapes,) = (work / "runs" / "x" / "shapes").glob("*/record.json")
    (tests,) = [
        c for c in json.loads(shapes.read_text())["verdict"]["checks"] if c["name"] == "paper_tests"
    ]
    assert (
        tests["passed"] and tests["evidence"]["passed"] == 2
    )  # the scaffold's, through the wheel's plugin
    status = _run([repro, "status", "--paper", "x"], work, env)
    assert status.returncode == 0, status.stderr
    for stage in ("data", "shapes", "overfit"):
        assert re.search(rf"│ {stage} +│ PASS ", status.stdout), status.stdout
    again = _run([repro, "init"], work, env)
    assert again.returncode == 1
    assert again.stderr.startswith(f"Error: {work}: expected none of the files `repro init` writes")
