"""One writer per run (issue 20): the process writing a run folder holds its lock; a second
`--resume` of the run, or the marking of a dead run that another process has taken over, is
refused naming the holder, and the run stays intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repro.errors import ReproError
from repro.records import RunLocked, create_run, list_runs, mark_dead_runs, read_run
from tests.configs import shrink_toy

# Holds the lock of the run folder argv[1] until the file argv[2] disappears (as a process that
# writes the run would).
HOLDER = """
import fcntl, os, sys, time
fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.pwrite(fd, b'{"pid": %d, "host": "h", "since": "t", "command": "holder"}' % os.getpid(), 0)
open(sys.argv[2] + ".held", "w").close()
while os.path.exists(sys.argv[2]):
    time.sleep(0.02)
"""

# Appended to the toy paper's model.py: forward waits while the file REPRO_TEST_HOLD names
# exists, so the test knows the resume is inside its run.
HOLD_HOOK = """

# ---- tests/test_run_lock.py ----
import os as _os, time as _time  # noqa: E401,E402

_forward = Classifier.forward


def _held_forward(self, x):
    hold = _os.environ.get("REPRO_TEST_HOLD")
    while hold and _os.path.exists(hold):
        _time.sleep(0.02)
    return _forward(self, x)


Classifier.forward = _held_forward
"""


def _hold(run_dir: Path, flag: Path) -> subprocess.Popen:
    flag.write_text("")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), str(flag)])
    deadline = time.monotonic() + 30
    while not Path(f"{flag}.held").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    return proc


def _gone_pid() -> int:
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return int(out.stdout)


def test_a_locked_run_refuses_a_second_writer_naming_the_holder(tmp_path):
    run = create_run(tmp_path, "p", "full")  # the creator holds the lock until the run ends
    other = read_run(run.dir)
    with pytest.raises(RunLocked) as e:
        other.lock()
    assert str(e.value).startswith(
        f"run {run.id}: expected no other process writing it, found process {os.getpid()} on host "
    )
    run.finish(None, "interrupted")  # a final record releases it
    other.lock()
    other.unlock()


def test_dead_run_marking_leaves_a_run_another_process_holds(tmp_path):
    run = create_run(tmp_path, "p", "shapes", pid=_gone_pid())
    run.unlock()  # the process that wrote it died, and its lock with it
    proc = _hold(run.dir, tmp_path / "hold")  # ...but another process took the run over
    try:
        assert mark_dead_runs(tmp_path, "p") == []
        assert not run.path("died.txt").exists()
        assert json.loads(run.record_file.read_text())["status"] == "running"
    finally:
        (tmp_path / "hold").unlink()
        proc.wait(timeout=30)
    (marked,) = mark_dead_runs(tmp_path, "p")  # the holder is gone: now it is marked
    assert marked.id == run.id and marked.record.status == "interrupted"


def test_a_resume_refuses_a_run_that_another_process_holds(project, cli, tmp_path):
    from repro.config.compose import compose

    shrink_toy(project)
    resolved = compose(project, "toy", [])
    run = create_run(project.runs_dir, "toy", "full", config=resolved.config)
    run.finish(None, "interrupted")
    proc = _hold(run.dir, tmp_path / "hold")
    try:
        code, out, err = cli("stage", "full", "--resume", run.id)
    finally:
        (tmp_path / "hold").unlink()
        proc.wait(timeout=30)
    assert code == 1
    assert err.strip() == (
        f"Error: run {run.id}: expected no other process writing it, found process {proc.pid} "
        "on host h (`holder`, since t UTC); wait for that process to end (`repro log` shows the "
        "run) or stop it"
    )
    assert json.loads(run.record_file.read_text())["status"] == "interrupted"


def _repro(root: Path, *args: str, **env: str) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REPRO_DEBUG")}
    return subprocess.Popen(
        [sys.executable, "-m", "repro", *args],
        cwd=root,
        env=environ | {"COLUMNS": "250"} | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_resumes_at_once_one_is_refused_and_the_run_is_intact(project, tmp_path):
    """The case of issue 20: both were accepted, both failed with ~100 traceback lines, and the
    record said error with no metrics."""
    from repro.config.compose import compose

    shrink_toy(project)
    model = project.paper_dir("toy") / "model.py"
    model.write_text(model.read_text() + HOLD_HOOK)
    resolved = compose(project, "toy", [])
    run = create_run(project.runs_dir, "toy", "full", config=resolved.config,
                     overrides=[], provenance=resolved.provenance)  # fmt: skip
    run.update(status_reason="interrupted by SIGINT (Ctrl-C)")
    run.finish(None, "interrupted")  # killed before its first checkpoint: resumes from the start
    notes = (project.notes_dir / "toy.md").read_text()
    hold = tmp_path / "hold"
    hold.write_text("")

    first = _repro(project.root, "stage", "full", "--resume", run.id, REPRO_TEST_HOLD=str(hold))
    deadline = time.monotonic() + 120
    while json.loads(run.record_file.read_text()).get("pid") != first.pid:  # inside its run
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second = _repro(project.root, "stage", "full", "--resume", run.id)
    out2, err2 = second.communicate(timeout=120)
    hold.unlink()
    out1, err1 = first.communicate(timeout=300)

    assert second.returncode == 1, out2 + err2
    assert "Traceback" not in out2 + err2
    assert err2.strip() == (
        f"Error: run {run.id}: expected no other process writing it, found process {first.pid} "
        f"on host {os.uname().nodename} (`repro stage full --resume {run.id}`, since "
        + err2.split("since ", 1)[-1].split(" UTC")[0]
        + " UTC); wait for that process to end (`repro log` shows the run) or stop it"
    )
    assert first.returncode == 0, out1 + err1
    record = json.loads(run.record_file.read_text())
    assert record["status"] == "passed" and record["metrics"]["seeds"] == [0]
    assert len(record["resumed"]) == 1 and record["error"] is None
    rows = (run.dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch") or "epoch" in rows[0]
    assert any(r.split(",")[0] for r in rows[1:])  # the curves are there
    added = (project.notes_dir / "toy.md").read_text()[len(notes) :].splitlines()
    assert len(added) == 1 and f"full · PASS · {run.id}" in added[0], added
    (again,) = list_runs(project.runs_dir, "toy", "full")
    assert again.id == run.id  # no other run was made


def test_lock_errors_are_repro_errors():
    assert issubclass(RunLocked, ReproError)  # one `Error:` line at the CLI
