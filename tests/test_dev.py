"""Tests for repro/dev/ (`repro dev`, the warm worker): real worker processes on the toy paper,
real `repro stage` clients, records read back from runs/.

Workers start as subprocesses (~5-10 s each here: torch + Lightning) and are always stopped by
pid in teardown. One worker is shared by the tests that leave the project as they found it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repro.dev.protocol import Channel, short_address, socket_path
from repro.project import Project
from repro.records import list_runs
from repro.scaffold import scaffold_paper
from tests.configs import set_paper_tests

REPO = Path(__file__).resolve().parents[1]
READY_S = 240  # a worker imports torch and Lightning before it listens: seconds under load
RUN_S = 240


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(COLUMNS="250", OMP_WAIT_POLICY="PASSIVE", **extra)
    return env


def _new_project(root: Path) -> Project:
    """What tests/conftest.py's `project` fixture lays out, in a directory of our choosing."""
    conf = root / "conf"
    conf.mkdir(parents=True)
    for name in ("config.yaml", "defaults.yaml"):
        shutil.copy(REPO / "conf" / name, conf / name)
    for name in ("stage", "logger", "launcher"):
        shutil.copytree(REPO / "conf" / name, conf / name)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    set_paper_tests(root, False)  # the paper's tests: tests/test_paper_tests.py
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    project = Project(root)
    scaffold_paper(project, "toy", "Toy", "0000.00000")
    return project


class DevWorker:
    """`repro dev ARGS` as a subprocess of the test, its output in a log file."""

    def __init__(self, project: Project, *args: str):
        self.project = project
        self.log = project.root / f"worker-{time.monotonic_ns()}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "repro", "dev", *args],
                cwd=project.root,
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.proc.pid

    def wait_ready(self) -> dict:
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"repro dev exited {self.proc.returncode}: {self.output()}")
            try:
                return self.ping()
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"repro dev never listened: {self.output()}")

    def ping(self) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            with short_address(socket_path(self.project, "toy")) as address:
                s.connect(address)
            s.settimeout(10)
            channel = Channel(s)
            channel.send({"op": "ping"})
            msg, _ = channel.recv()
        assert msg is not None
        return msg

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def stage(project: Project, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`repro stage ARGS` as its own process, the way a researcher types it."""
    return subprocess.run(
        [sys.executable, "-m", "repro", "stage", *args],
        cwd=project.root,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=RUN_S,
    )


def newest(project: Project, stage_name: str) -> dict:
    return list_runs(project.runs_dir, "toy", stage_name)[0].data  # as record.json holds it


def _wait_for(predicate, what: str, timeout: float = RUN_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A toy project whose data already passed (cold), and a warm worker serving it."""
    project = _new_project(tmp_path_factory.mktemp("dev") / "proj")
    assert stage(project, "data").returncode == 0
    worker = DevWorker(project)
    try:
        worker.wait_ready()
        yield project, worker
    finally:
        worker.stop()


@pytest.fixture
def model_py(shared):
    """papers/toy/model.py, restored after the test whatever it wrote there."""
    project, _ = shared
    path = project.paper_dir("toy") / "model.py"
    original = path.read_text()
    yield path
    path.write_text(original)


# ---- Done when (issue 12) ------------------------------------------------------------------------
def test_code_change_between_two_warm_runs_records_both_with_different_fingerprints(
    shared, model_py
):
    project, worker = shared
    first = stage(project, "shapes")
    assert first.returncode == 0, first.stderr
    a = newest(project, "shapes")
    deeper = "            nn.Linear(cfg.hidden, cfg.hidden),\n            nn.ReLU(),\n"
    text = model_py.read_text()
    model_py.write_text(
        text.replace("            nn.Dropout(", deeper + "            nn.Dropout(", 1)
    )
    second = stage(project, "shapes")
    assert second.returncode == 0, second.stderr
    b = newest(project, "shapes")
    assert a["id"] != b["id"]
    for rec in (a, b):
        assert rec["status"] == "passed"
        assert rec["worker"]["warm"] is True and rec["worker"]["pid"] == worker.pid
        assert rec["worker"]["warm_data"] is True
    assert a["fingerprint"]["stages"]["shapes"] != b["fingerprint"]["stages"]["shapes"]
    assert a["fingerprint"]["stages"]["data"] == b["fingerprint"]["stages"]["data"]
    # the child imported the edited model: one more hidden layer
    assert b["metrics"]["trainable_params"] == a["metrics"]["trainable_params"] + 64 * 64 + 64
    assert "shapes: PASS" in first.stdout and "shapes: PASS" in second.stdout


def test_overrides_that_change_the_data_config_run_warm_with_data_built_in_the_child(shared):
    project, worker = shared
    proc = stage(project, "shapes", "data.n_examples=300")
    assert proc.returncode == 0, proc.stderr
    rec = newest(project, "shapes")
    assert rec["overrides"] == ["data.n_examples=300"]
    assert rec["worker"]["warm"] is True and rec["worker"]["warm_data"] is False
    assert rec["evidence"]["batch_size"] == 32


def test_a_model_that_fails_to_import_is_one_clear_line_and_the_worker_survives(shared, model_py):
    project, worker = shared
    model_py.write_text(model_py.read_text() + "\ndef broken(:\n")
    proc = stage(project, "shapes")
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    assert "SyntaxError" in errors[0] and "papers/toy/model.py, line" in errors[0]
    assert "warm worker is still up" in errors[0]
    assert "Traceback" not in proc.stderr
    rec = newest(project, "shapes")
    assert rec["status"] == "error" and rec["worker"]["warm"] is True
    assert rec["id"] in errors[0]
    assert "SyntaxError" in rec["error"]  # the record keeps the traceback
    assert worker.ping()["pid"] == worker.pid


def test_a_crashing_gate_is_recorded_as_error_and_the_worker_survives(shared, model_py):
    project, worker = shared
    model_py.write_text(
        model_py.read_text().replace(
            '    """What repro calls:',
            '    raise RuntimeError("boom in build")\n    """What repro calls:',
        )
    )
    proc = stage(project, "shapes")
    assert proc.returncode == 1
    assert "RuntimeError: boom in build (papers/toy/model.py, line" in proc.stderr
    rec = newest(project, "shapes")
    assert rec["status"] == "error"
    assert "boom in build" in rec["status_reason"]
    model_py.write_text(
        model_py.read_text().replace('    raise RuntimeError("boom in build")\n', "")
    )
    again = stage(project, "shapes")
    assert again.returncode == 0, again.stderr  # same worker, next run fine
    assert newest(project, "shapes")["worker"]["pid"] == worker.pid


def test_ctrl_c_in_the_client_interrupts_the_run_in_the_worker(shared):
    project, worker = shared
    long_overfit = [
        "overfit",
        "--force",
        "stage.overfit.max_steps=1000000",
        "stage.overfit.loss_ratio=1e-30",
    ]
    before = {r.id for r in list_runs(project.runs_dir, "toy", "overfit")}
    client = subprocess.Popen(
        [sys.executable, "-c", _CLIENT.format(args=long_overfit)],
        cwd=project.root,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def started():
        runs = [r for r in list_runs(project.runs_dir, "toy", "overfit") if r.id not in before]
        return runs[0] if runs else None

    run = _wait_for(started, "the warm overfit run to start")
    time.sleep(1.0)  # inside the training loop by now
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=RUN_S)
    assert client.returncode == 130, err
    assert "Interrupted" in err
    rec = json.loads((run.dir / "record.json").read_text())
    assert rec["status"] == "interrupted"
    assert "SIGINT" in rec["status_reason"]
    assert rec["worker"]["warm"] is True
    assert worker.ping()["pid"] == worker.pid


_CLIENT = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a test's child may inherit SIG_IGN
sys.argv = ['repro', 'stage', *{args!r}]
from repro.cli import main
main()
"""


def test_two_clients_at_once_both_get_their_verdicts(shared):
    project, worker = shared
    before = {r.id for r in list_runs(project.runs_dir, "toy", "shapes")}
    clients = [
        subprocess.Popen(
            [sys.executable, "-m", "repro", "stage", "shapes"],
            cwd=project.root,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [c.communicate(timeout=RUN_S) for c in clients]
    assert [c.returncode for c in clients] == [0, 0], outs
    for out, _ in outs:
        assert "shapes: PASS" in out
    new = [r for r in list_runs(project.runs_dir, "toy", "shapes") if r.id not in before]
    assert len(new) == 2
    assert {r.record.extra["worker"]["pid"] for r in new} == {worker.pid}
    assert len({r.record.pid for r in new}) == 2  # two children
    printed = {re.search(r"run record: runs/toy/shapes/(\S+)", out).group(1) for out, _ in outs}
    assert printed == {r.id for r in new}  # each client printed its own run


def test_the_worker_stays_small_cuda_free_and_single_threaded_run_after_run(shared):
    project, worker = shared
    assert stage(project, "shapes").returncode == 0
    start = worker.ping()
    for _ in range(6):
        assert stage(project, "shapes").returncode == 0
    end = worker.ping()
    assert end["pid"] == start["pid"]
    assert end["rss_mb"] - start["rss_mb"] < 8, (start, end)
    assert end["cuda_initialized"] is False  # the children may use CUDA; the parent never does
    assert end["threads"] == 1  # no OpenMP team in the parent: forked children cannot deadlock
    _wait_for(lambda: worker.ping()["children"] == [], "the worker to reap its children", 10)


def test_stage_with_and_without_a_worker_gives_the_same_verdict_and_an_equivalent_record(shared):
    project, worker = shared
    cold = stage(project, "shapes", "--cold")  # exactly the path taken when no worker is up
    assert cold.returncode == 0, cold.stderr
    a = newest(project, "shapes")
    warm = stage(project, "shapes")
    assert warm.returncode == 0, warm.stderr
    b = newest(project, "shapes")
    assert "worker" not in a and b["worker"] == {
        "warm": True,
        "pid": worker.pid,
        "trigger": "repro stage",
        "warm_data": True,
    }
    assert set(b) - set(a) == {"worker"}
    same = ("status", "verdict", "evidence", "metrics", "fingerprint", "config", "overrides")
    same += ("provenance", "defaults", "forced", "skipped_prerequisites", "init", "model")
    for key in same:
        assert a[key] == b[key], key
    assert a["env"]["device"] == b["env"]["device"]  # same thread count, deterministic flags
    assert {k: a["git"][k] for k in ("commit", "branch", "dirty")} == {
        k: b["git"][k] for k in ("commit", "branch", "dirty")
    }  # (untracked differs only by the first run's own files: this project ignores nothing)
    assert not [p for p in b["git"]["untracked"] if p.startswith(".repro")]  # self-ignored
    assert _normalised(cold.stdout, a) == _normalised(warm.stdout, b)
    notes = (project.notes_dir / "toy.md").read_text().splitlines()
    assert a["id"] in notes[-2] and b["id"] in notes[-1]


def _normalised(out: str, rec: dict) -> str:
    out = out.replace(rec["id"], "<run>")
    return re.sub(r"\d\d-\d\d \d\d:\d\d", "<when>", out)


@pytest.mark.slow  # ~21 s: two warm workers
def test_a_killed_workers_socket_blocks_neither_the_next_client_nor_the_next_worker(tmp_path):
    project = _new_project(tmp_path / "proj")
    worker = DevWorker(project)
    try:
        worker.wait_ready()
        os.kill(worker.pid, signal.SIGKILL)
        worker.proc.wait(timeout=30)
    finally:
        worker.stop()
    assert socket_path(project, "toy").exists()  # left behind: nothing listens on it
    cold = stage(project, "shapes")  # no worker: the cold path, not a hang
    assert cold.returncode == 0, cold.stderr
    a = newest(project, "shapes")
    assert "worker" not in a
    second = DevWorker(project)
    try:
        second.wait_ready()
        third = DevWorker(project)  # one worker per project and paper
        assert third.proc.wait(timeout=READY_S) == 1
        assert f"already runs in this project (pid {second.pid})" in third.output()
        warm = stage(project, "shapes")
        assert warm.returncode == 0, warm.stderr
        b = newest(project, "shapes")
        assert b["worker"]["pid"] == second.pid
        assert (a["verdict"], a["fingerprint"]) == (b["verdict"], b["fingerprint"])
    finally:
        second.stop()
    assert not socket_path(project, "toy").exists()  # a stopped worker removes its socket


def test_watch_reruns_shapes_on_a_model_edit_and_rebuilds_data_on_a_data_edit(tmp_path):
    project = _new_project(tmp_path / "proj")
    worker = DevWorker(project, "--watch", "--stage", "shapes")
    paper = project.paper_dir("toy")
    try:
        worker.wait_ready()
        time.sleep(0.3)
        model = paper / "model.py"
        model.write_text(model.read_text() + "\n# a harmless edit\n")
        rec = _wait_for(lambda: _newest_or_none(project, "shapes"), "a shapes run after the edit")
        assert rec["worker"]["trigger"] == "watch" and rec["status"] == "passed"
        _wait_for(lambda: "shapes: PASS" in worker.output(), "the verdict in the worker's output")
        data = paper / "data.py"
        data.write_text(data.read_text() + "\n# a harmless edit to the data code\n")
        _wait_for(lambda: "rebuilding the warm data" in worker.output(), "a data rebuild")
        _wait_for(lambda: len(list_runs(project.runs_dir, "toy", "shapes")) >= 2, "a second run")
        out = worker.output()
        assert "papers/toy/model.py changed → shapes" in out
    finally:
        worker.stop()


HANGING_BUILD = """

def build_model(cfg: dict, *, n_features: int, num_classes: int):
    import time

    while True:  # a construction that never ends
        time.sleep(0.05)
"""


@pytest.mark.slow  # ~10 s: a warm worker and a hanging run
def test_watch_reports_a_run_that_never_ends_and_the_next_save_replaces_it(tmp_path):
    """Issue 20: --watch never re-ran after a model whose construction never ends, even after
    the fix was saved, and said nothing."""
    project = _new_project(tmp_path / "proj")
    defaults = project.conf_dir / "defaults.yaml"
    text = defaults.read_text()
    assert "  report_after_s: 60" in text
    defaults.write_text(text.replace("  report_after_s: 60", "  report_after_s: 3"))
    worker = DevWorker(project, "--watch", "--stage", "shapes")
    model = project.paper_dir("toy") / "model.py"
    fixed = model.read_text()
    try:
        worker.wait_ready()
        time.sleep(0.3)
        model.write_text(fixed + HANGING_BUILD)
        _wait_for(lambda: "has run for" in worker.output(), "the report of the run that hangs")
        out = worker.output()
        assert re.search(
            r"shapes \(watch, pid \d+\) has run for \d+ s without a verdict "
            r"\(dev\.report_after_s=3\): the paper's code may never return",
            out,
        ), out
        assert "save a fix: the next change stops it and runs again" in out
        # the report is timed from the child's start: on a loaded machine the run may not have
        # made its record yet (a run stopped before that leaves nothing to mark, rightly)
        _wait_for(lambda: list_runs(project.runs_dir, "toy", "shapes"), "the hanging run's record")
        model.write_text(fixed + "\n# fixed\n")
        passed = _wait_for(
            lambda: [r for r in list_runs(project.runs_dir, "toy", "shapes")
                     if r.record.status == "passed"],
            "a shapes run that passes on the fix",
        )  # fmt: skip
        assert "stopped the overdue run (pid" in worker.output()
        runs = list_runs(project.runs_dir, "toy", "shapes")
        hung = [r for r in runs if r.id != passed[0].id]
        assert len(hung) == 1 and hung[0].effective_status == "interrupted"
        assert hung[0].record.status_reason == "interrupted by SIGTERM"
        assert passed[0].path("code/model.py").read_text() == fixed + "\n# fixed\n"
    finally:
        worker.stop()


def _newest_or_none(project: Project, stage_name: str) -> dict | None:
    runs = list_runs(project.runs_dir, "toy", stage_name)
    if not runs or runs[0].record.status == "running":
        return None
    return runs[0].data


# ---- the command line ------------------------------------------------------------------------
def test_dev_help_and_stage_without_watch(cli, project):
    code, out, _ = cli("dev", "--help")
    assert code == 0 and "Keep a warm worker" in out and "--watch" in out
    code, _, err = cli("dev", "--stage", "shapes")
    assert code == 1
    assert err.strip() == "Error: --stage chooses what --watch re-runs on a change: add --watch"
    code, out, _ = cli("stage", "--help")
    assert "--cold" in out


@pytest.mark.slow
def test_the_warm_iteration_benchmark_runs_and_prints_every_figure(tmp_path):
    source = _new_project(tmp_path / "source")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "warm_iteration.py"),
            "--source",
            str(source.root),
        ]
        + ["--paper", "toy", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=900,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for row in ("repro stage shapes", "repro stage overfit", "repro dev --watch shapes"):
        assert row in proc.stdout
    assert "worker set-up (paid once)" in proc.stdout and "worker RSS" in proc.stdout
