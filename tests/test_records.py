"""Run records: unique ids, atomic saves, the guard, dead-process detection, reading; git and env."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from repro.envinfo import env_info
from repro.errors import ReproError
from repro.gitstate import git_state
from repro.records import (
    RUN_ID_RE,
    create_run,
    latest_run,
    list_runs,
    liveness,
    load_run,
    mark_dead_runs,
    store,
)
from repro.verdict import Check, Verdict

REPO_ROOT = Path(__file__).resolve().parents[1]


def _read(run) -> dict:
    return json.loads(run.path("record.json").read_text())


def _spawn(script: str, runs_root: Path) -> subprocess.Popen:
    """A python child that runs `script` (with RUNS bound) and prints 'ready <id>' when set up."""
    code = textwrap.dedent(
        """
        import signal, sys, time
        from pathlib import Path
        from repro.records import create_run
        # A child started from a non-interactive shell may inherit SIGINT ignored; Ctrl-C isn't.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        RUNS = Path(sys.argv[1])
        """
    ) + textwrap.dedent(script)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", code, str(runs_root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_ready(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    assert line.startswith("ready "), f"child did not start: {line!r} {proc.stderr.read()}"
    return line.split()[1]


# --- creating runs ---------------------------------------------------------------------------


def test_create_run_writes_a_running_record(tmp_path):
    run = create_run(tmp_path, "bimpm", "overfit", config={"lr": 1e-3}, overrides=["lr=1e-3"])
    assert RUN_ID_RE.match(run.id)
    assert run.dir == tmp_path / "bimpm" / "overfit" / run.id
    rec = _read(run)
    assert rec["status"] == "running"
    assert rec["config"] == {"lr": 1e-3} and rec["overrides"] == ["lr=1e-3"]
    assert rec["pid"] == os.getpid()
    assert rec["pid_start"] == liveness.pid_start(os.getpid()) is not None
    assert datetime.fromisoformat(rec["started"]).tzinfo is not None
    assert run.id.startswith(datetime.fromisoformat(rec["started"]).strftime("%Y%m%d-%H%M%S"))
    for field in ("verdict", "evidence", "metrics", "fingerprint", "provenance", "forced"):
        assert field in rec
    assert rec["links"] == {} and rec["error"] is None and rec["ended"] is None


def test_git_diff_moves_to_its_own_file(tmp_path):
    git = {"commit": "abc", "dirty": True, "diff": "diff --git a/x b/x\n"}
    run = create_run(tmp_path, "bimpm", "data", git=git)
    assert run.path("git.diff").read_text() == "diff --git a/x b/x\n"
    assert _read(run)["git"] == {"commit": "abc", "dirty": True, "diff_file": "git.diff"}


def test_bad_paper_name_is_refused(tmp_path):
    with pytest.raises(ReproError, match="'../x'"):
        create_run(tmp_path, "../x", "data")


def test_ids_unique_in_a_tight_loop(tmp_path):
    runs = [create_run(tmp_path, "p", "data") for _ in range(50)]
    assert len({r.id for r in runs}) == 50
    assert len(list(Path(tmp_path, "p", "data").iterdir())) == 50


def test_id_collision_retries_with_a_new_suffix(tmp_path, monkeypatch):
    frozen = datetime(2026, 11, 22, 5, 40, 12, tzinfo=UTC)
    suffixes = iter(["abcd", "abcd", "abcd", "beef"])
    monkeypatch.setattr(store, "utcnow", lambda: frozen)
    monkeypatch.setattr(store, "_suffix", lambda: next(suffixes))
    a = create_run(tmp_path, "p", "data")
    b = create_run(tmp_path, "p", "data")
    assert (a.id, b.id) == ("20261122-054012-abcd", "20261122-054012-beef")


def _create_many(runs_root: str, n: int, start) -> None:
    start.wait()
    for _ in range(n):
        create_run(Path(runs_root), "p", "data")


def test_ids_unique_across_two_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_create_many, args=(str(tmp_path), 20, start)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    runs = list_runs(tmp_path)
    assert len(runs) == 40 and len({r.id for r in runs}) == 40
    assert {r.status for r in runs} == {"running"}


# --- saving ----------------------------------------------------------------------------------


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    run = create_run(tmp_path, "p", "full")
    for i in range(30):
        run.update(metrics={"step": i, "loss": 1.0 / (i + 1)})
        run.save()
        assert json.loads(run.path("record.json").read_text())["metrics"]["step"] == i
    run.write_text("notes.txt", "hello")
    run.write_yaml("config.yaml", {"model": {"hidden": 100}, "lr": 0.001})
    names = sorted(p.name for p in run.dir.iterdir())
    assert names == [
        ".lock",
        "config.yaml",
        "notes.txt",
        "record.json",
    ]  # .lock: one writer per run
    assert run.path("config.yaml").read_text() == "model:\n  hidden: 100\nlr: 0.001\n"


def test_failed_save_keeps_the_old_record(tmp_path):
    run = create_run(tmp_path, "p", "full")
    run.update(boom=_Unwritable())
    with pytest.raises(RuntimeError):
        run.save()
    assert _read(run)["status"] == "running"
    assert sorted(p.name for p in run.dir.iterdir()) == [".lock", "record.json"]


class _Unwritable:
    def __str__(self):
        raise RuntimeError("cannot serialise")


def test_finish_records_verdict_metrics_and_duration(tmp_path):
    run = create_run(tmp_path, "p", "overfit")
    verdict = Verdict.from_checks("overfit", [Check("loss", True, "loss 0.01 < 0.05")])
    run.finish(verdict, "passed", metrics={"loss": 0.01})
    rec = _read(run)
    assert rec["status"] == "passed" and rec["verdict"]["passed"] is True
    assert rec["metrics"] == {"loss": 0.01} and rec["duration_s"] >= 0
    assert datetime.fromisoformat(rec["ended"]) >= datetime.fromisoformat(rec["started"])
    with pytest.raises(ValueError, match="'done'"):
        run.finish(None, "done")


# --- the guard -------------------------------------------------------------------------------


def test_guard_keyboard_interrupt_marks_interrupted(tmp_path):
    run = create_run(tmp_path, "p", "full")
    with pytest.raises(KeyboardInterrupt):
        with run.guard():
            raise KeyboardInterrupt
    rec = _read(run)
    assert rec["status"] == "interrupted" and rec["ended"] is not None
    assert "SIGINT" in rec["status_reason"]


def test_guard_an_error_after_ctrl_c_is_an_interruption(tmp_path):
    """Under DDP a Ctrl-C reaches every rank; rank 0 can fail in a collective because its peer
    exited first, before its own KeyboardInterrupt is raised. The run was interrupted."""
    import signal

    run = create_run(tmp_path, "p", "full")
    with pytest.raises(KeyboardInterrupt):
        with run.guard():
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # swallowed somewhere below (a library's own Ctrl-C handling)
            raise RuntimeError("Connection closed by peer [127.0.0.1]:1234")
    rec = _read(run)
    assert rec["status"] == "interrupted", rec["status_reason"]
    assert rec["status_reason"].startswith("interrupted by SIGINT (Ctrl-C); then RuntimeError")
    assert "Connection closed by peer" in rec["error"]  # the traceback is kept
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_guard_an_error_without_an_interrupt_stays_an_error(tmp_path):
    run = create_run(tmp_path, "p", "full")
    with pytest.raises(RuntimeError):
        with run.guard():
            raise RuntimeError("Connection closed by peer")
    assert _read(run)["status"] == "error"


def test_guard_exception_marks_error_with_traceback(tmp_path):
    run = create_run(tmp_path, "p", "full")
    with pytest.raises(ZeroDivisionError):
        with run.guard():
            1 / 0  # noqa: B018
    rec = _read(run)
    assert rec["status"] == "error"
    assert "Traceback" in rec["error"] and "ZeroDivisionError" in rec["error"]


def test_guard_without_verdict_is_error_and_keeps_a_set_status(tmp_path):
    run = create_run(tmp_path, "p", "full")
    with run.guard():
        pass
    assert _read(run)["status"] == "error"
    assert _read(run)["error"] == "run ended without a verdict"
    done = create_run(tmp_path, "p", "full")
    with done.guard():
        done.finish({"passed": False, "reason": "x"}, "failed")
    assert _read(done)["status"] == "failed"


def test_guard_restores_the_sigterm_handler(tmp_path):
    def mine(signum, frame):
        pass

    old = signal.signal(signal.SIGTERM, mine)
    try:
        run = create_run(tmp_path, "p", "full")
        with run.guard():
            assert signal.getsignal(signal.SIGTERM) != mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, old)


@pytest.mark.parametrize("sig, name", [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_signal_inside_guard_records_interrupted(tmp_path, sig, name):
    proc = _spawn(
        """
        run = create_run(RUNS, "p", "full")
        with run.guard():
            print("ready", run.id, flush=True)
            time.sleep(30)
        """,
        tmp_path,
    )
    run_id = _wait_ready(proc)
    proc.send_signal(sig)
    proc.wait(10)
    assert proc.returncode != 0
    run = load_run(tmp_path, run_id)
    assert run.status == "interrupted" and run.effective_status == "interrupted"
    assert name in run.record.status_reason


# --- dead processes --------------------------------------------------------------------------


def test_sigkilled_run_reads_as_interrupted(tmp_path):
    proc = _spawn(
        """
        run = create_run(RUNS, "p", "full")
        print("ready", run.id, flush=True)
        time.sleep(30)
        """,
        tmp_path,
    )
    run_id = _wait_ready(proc)
    alive = load_run(tmp_path, run_id)
    assert alive.effective_status == "running" and alive.status_reason is None
    proc.kill()
    proc.wait(10)
    [run] = list_runs(tmp_path)
    assert run.status == "running"  # reading does not rewrite the file
    assert run.effective_status == "interrupted"
    assert run.status_reason == f"process {proc.pid} died without finishing"
    assert _read(run)["status"] == "running"
    assert [r.id for r in mark_dead_runs(tmp_path)] == [run_id]
    assert _read(run)["status"] == "interrupted"
    assert mark_dead_runs(tmp_path) == []


def test_reused_pid_reads_as_interrupted(tmp_path):
    run = create_run(tmp_path, "p", "full")
    assert load_run(tmp_path, run.id).effective_status == "running"  # this very process
    run.update(pid_start=run.record.pid_start - 1)  # same pid, another process's start
    run.save()
    assert load_run(tmp_path, run.id).effective_status == "interrupted"


def test_zombie_child_reads_as_interrupted(tmp_path):
    proc = _spawn(
        """
        run = create_run(RUNS, "p", "full")
        print("ready", run.id, flush=True)
        time.sleep(30)
        """,
        tmp_path,
    )
    run_id = _wait_ready(proc)
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while liveness.process_state(proc.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.005)  # the kernel makes it a zombie (dead, not yet reaped) asynchronously
    assert liveness.process_state(proc.pid) == "Z"
    assert load_run(tmp_path, run_id).effective_status == "interrupted"
    proc.wait(10)


# --- reading ---------------------------------------------------------------------------------


def _fake_run(root: Path, paper: str, stage: str, run_id: str, status: str) -> None:
    d = root / paper / stage / run_id
    d.mkdir(parents=True)
    rec = {"id": run_id, "paper": paper, "stage": stage, "status": status,
           "started": datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").isoformat()}  # fmt: skip
    (d / "record.json").write_text(json.dumps(rec))


@pytest.fixture
def some_runs(tmp_path):
    _fake_run(tmp_path, "bimpm", "data", "20260101-000000-aaaa", "passed")
    _fake_run(tmp_path, "bimpm", "overfit", "20260102-000000-bbbb", "failed")
    _fake_run(tmp_path, "bimpm", "overfit", "20260103-000000-cccc", "passed")
    _fake_run(tmp_path, "other", "overfit", "20260104-000000-dddd", "error")
    _fake_run(tmp_path, "bimpm", "overfit", "20260103-000000-cccd", "failed")
    return tmp_path


def test_list_runs_newest_first_and_filtered(some_runs):
    ids = [r.id for r in list_runs(some_runs)]
    assert ids == [
        "20260104-000000-dddd",
        "20260103-000000-cccd",
        "20260103-000000-cccc",
        "20260102-000000-bbbb",
        "20260101-000000-aaaa",
    ]
    assert [r.id[-4:] for r in list_runs(some_runs, paper="bimpm", stage="overfit")] == [
        "cccd",
        "cccc",
        "bbbb",
    ]
    assert [r.paper for r in list_runs(some_runs, stage="overfit")].count("other") == 1
    assert list_runs(some_runs, paper="nope") == []
    assert list_runs(some_runs / "missing") == []


def test_latest_run_by_status(some_runs):
    assert latest_run(some_runs, "bimpm", "overfit").id.endswith("cccd")
    assert latest_run(some_runs, "bimpm", "overfit", status="passed").id.endswith("cccc")
    assert latest_run(some_runs, "bimpm", "full") is None


def test_load_run_exact_and_prefix(some_runs):
    assert load_run(some_runs, "20260101-000000-aaaa").stage == "data"
    assert load_run(some_runs, "20260102").id == "20260102-000000-bbbb"
    with pytest.raises(ReproError, match="matches 2 runs"):
        load_run(some_runs, "20260103")


def test_load_run_unknown_id_names_it_and_suggests_log(some_runs):
    with pytest.raises(ReproError) as err:
        load_run(some_runs, "20991231")
    assert "'20991231'" in str(err.value) and "repro log" in str(err.value)


@pytest.mark.parametrize("content", ["", '{"id": "20260105-0', "[1, 2]"])
def test_corrupt_record_is_listed_not_fatal(some_runs, content):
    d = some_runs / "bimpm" / "full" / "20260105-000000-eeee"
    d.mkdir(parents=True)
    (d / "record.json").write_text(content)
    runs = list_runs(some_runs)
    assert runs[0].id == "20260105-000000-eeee"
    assert runs[0].effective_status == "corrupt" and runs[0].stage == "full"
    assert "record.json" in runs[0].status_reason
    with pytest.raises(ReproError, match=r"20260105-000000-eeee/record\.json.*repair or remove"):
        load_run(some_runs, "20260105")  # show, diff, rerun: a one-line error naming the file
    assert mark_dead_runs(some_runs) == []


def test_read_commands_do_not_import_heavy_libraries():
    code = (
        "import sys, repro.records, repro.notebook, repro.gitstate, repro.envinfo;"
        "repro.envinfo.env_info();"
        "heavy = {'torch', 'lightning', 'pytorch_lightning', 'hydra', 'wandb', 'yaml'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        check=True,
    )
    assert out.stdout.strip() == "[]"


# --- git and env -----------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, "init", "-q", "-b", "main")
    return tmp_path


def test_git_state_no_commits(repo):
    (repo / "a.py").write_text("x = 1\n")
    state = git_state(repo)
    assert state["commit"] is None and state["branch"] == "main"
    assert "no commits" in state["note"]
    assert state["dirty"] is True and state["untracked"] == ["a.py"]


def test_git_state_clean_then_dirty(repo):
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "first")
    clean = git_state(repo)
    assert len(clean["commit"]) == 40 and clean["branch"] == "main"
    assert clean["dirty"] is False and clean["diff"] == "" and clean["note"] is None

    (repo / "a.py").write_text("x = 2\n")
    (repo / "new.py").write_text("y = 1\n")
    dirty = git_state(repo)
    assert dirty["dirty"] is True and dirty["commit"] == clean["commit"]
    assert "-x = 1\n+x = 2" in dirty["diff"]
    assert "new.py" in dirty["diff"] and dirty["untracked"] == ["new.py"]


def test_git_state_outside_a_repo(tmp_path):
    state = git_state(tmp_path)
    assert state["commit"] is None and state["dirty"] is False
    assert "not inside a git work tree" in state["note"]


def test_env_info_reads_versions_without_importing():
    env = env_info()
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["hostname"] and env["cpu_count"] >= 1
    assert set(env["packages"]) >= {"torch", "pytorch-lightning", "hydra-core", "numpy", "wandb"}
    assert ("device" in env) == ("torch" in sys.modules)


def test_guard_marks_lightning_style_interrupt_as_interrupted(tmp_path):
    """Lightning catches Ctrl-C and calls sys.exit(1): the run is interrupted, not an error."""
    run = create_run(tmp_path, "p", "full")
    with pytest.raises(KeyboardInterrupt):
        with run.guard():
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                sys.exit(1)
    assert load_run(tmp_path, run.id).record.status == "interrupted"


def test_guard_marks_plain_nonzero_exit_as_error(tmp_path):
    run = create_run(tmp_path, "p", "full")
    with pytest.raises(SystemExit):
        with run.guard():
            sys.exit(3)
    rec = load_run(tmp_path, run.id).record
    assert rec.status == "error" and "SystemExit: 3" in rec.status_reason


# ---- runs on another host: judged by their heartbeat, not by a local pid -----------------------
def test_a_run_on_another_host_is_alive_while_its_heartbeat_is_fresh_and_dead_after(tmp_path):
    import os
    import time as _time

    from repro.records import HEARTBEAT_DEAD_S, RECORD_FILE, list_runs

    run = create_run(tmp_path, "toy", "full", host="node-17", pid=123456)
    (fresh,) = list_runs(tmp_path)
    assert fresh.effective_status == "running" and fresh.status_reason is None
    old = _time.time() - HEARTBEAT_DEAD_S - 5
    os.utime(run.path(RECORD_FILE), (old, old))
    (dead,) = list_runs(tmp_path)
    assert dead.effective_status == "interrupted"
    assert dead.status_reason.startswith("no heartbeat from host node-17 for ")
    assert mark_dead_runs(tmp_path) == []  # it may yet finish: a reading, not a rewrite
    assert _read(run)["status"] == "running" and not run.path("died.txt").exists()


def test_a_dead_run_is_marked_once_and_says_who_found_it(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True)  # fmt: skip
    run = create_run(tmp_path, "p", "shapes", pid=int(proc.stdout))  # a process now gone
    run.unlock()  # ...and its lock with it (the kernel drops a dead process's flock)
    (marked,) = mark_dead_runs(tmp_path, "p")
    assert marked.id == run.id and _read(run)["status"] == "interrupted"
    found = run.path("died.txt").read_text()
    assert found.startswith(f"process {proc.stdout.strip()} died without finishing; found by ")
    record = _read(run) | {"status": "running"}  # as if another process read it before us
    run.path("record.json").write_text(json.dumps(record))
    assert mark_dead_runs(tmp_path, "p") == []  # died.txt is the claim: never a second time
    assert mark_dead_runs(tmp_path, "other") == []


def test_a_running_guard_keeps_the_heartbeat(tmp_path, monkeypatch):
    import os
    import time as _time

    from repro.records import run as records

    monkeypatch.setattr(records, "HEARTBEAT_S", 0.05)
    run = create_run(tmp_path, "toy", "full")
    past = _time.time() - 1000
    os.utime(run.path(records.RECORD_FILE), (past, past))
    with run.guard():
        _time.sleep(0.3)
        beat = run.path(records.RECORD_FILE).stat().st_mtime
        assert beat > past + 900  # touched while running
        run.finish(None, "passed")
