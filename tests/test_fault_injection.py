"""Kill runs at every stage, fill and lock their disks, and check that nothing is lost (issue 14).

A run is killed (SIGINT, as Ctrl-C sends, and SIGKILL) at a known point of each stage: data,
shapes and overfit paused inside the paper's own code (hooks appended to the toy paper of a
throwaway project), full mid-epoch, during the LR finder and while a checkpoint is being
written. After each: the record says interrupted (a SIGKILLed one reads as interrupted, with a
reason and a duration), earlier records, checkpoints and notebook lines are untouched, no run
directory lacks its record, no temporary file is left (after --resume for a SIGKILLed full run),
and `--resume` of full gives exactly the uninterrupted run's metrics. Disks that are full
(a small tmpfs, as root) or read-only give one `Error:` line naming the path and leave no
record-less run directory; a read-only notebook is a warning that prints the lost line.

The subprocess runs of full are `slow` (CI runs them); the rest keeps to ~1 minute.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from repro.records import RUN_ID_RE, Run, create_run, list_runs
from tests.configs import set_paper_tests, shrink_toy

PAUSE_AT, PAUSED = "REPRO_TEST_PAUSE_AT", "REPRO_TEST_PAUSED"

# Appended to the toy paper's model.py and data.py: `REPRO_TEST_PAUSE_AT=<point>:<n>` makes the
# n-th call of that point write the REPRO_TEST_PAUSED file and sleep until the test kills it.
HOOK = """

# ---- fault injection (tests/test_fault_injection.py) ----------------------------------------
import os as _os, pathlib as _pathlib, time as _time  # noqa: E401,E402

_CALLS: dict = {}


def _pause_point(name):
    _CALLS[name] = _CALLS.get(name, 0) + 1
    if _os.environ.get("REPRO_TEST_PAUSE_AT") == f"{name}:{_CALLS[name]}":
        _pathlib.Path(_os.environ["REPRO_TEST_PAUSED"]).write_text(str(_os.getpid()))
        _time.sleep(300)
"""
MODEL_HOOK = (
    HOOK
    + """

_forward = Classifier.forward


def _paused_forward(self, x):
    _pause_point("forward")
    return _forward(self, x)


Classifier.forward = _paused_forward
"""
)
DATA_HOOK = (
    HOOK
    + """

_load = ToyDataModule.load_examples


def _paused_load(self):
    _pause_point("load_examples")
    if _os.environ.get("REPRO_TEST_FILL_DISK"):  # something else fills the disk mid-run
        _fill(_pathlib.Path(_os.environ["REPRO_TEST_FILL_DISK"]))
    return _load(self)


def _fill(path, keep=8192):
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
                f.flush()
        except OSError:
            pass
    os_size = path.stat().st_size
    _os.truncate(path, max(0, os_size - keep))  # room for a short record, not for a new copy


ToyDataModule.load_examples = _paused_load
"""
)

# The child: Ctrl-C as a terminal delivers it (a child of a non-interactive shell may inherit
# SIGINT ignored), and, for the "checkpoint" point, torch.save paused after writing the temp
# file of epoch 1's last.ckpt (.last.ckpt.<random>.tmp, opened by descriptor: its name is read
# from /proc), before AtomicCheckpointIO renames it into place.
CHILD = """
import os, pathlib, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
if os.environ.get("REPRO_TEST_PAUSE_AT") == "checkpoint":
    import torch
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        try:
            name = os.readlink(f"/proc/self/fd/{f.fileno()}")
        except (AttributeError, OSError, ValueError):  # a path, or a buffer (the LR finder's)
            name = str(f)
        if "/.last.ckpt." in name and name.endswith(".tmp") and obj.get("epoch", 0) >= 1:
            f.flush()
            pathlib.Path(os.environ["REPRO_TEST_PAUSED"]).write_text(str(os.getpid()))
            time.sleep(300)
    torch.save = save
sys.argv = ["repro", *sys.argv[1:]]
from repro.cli import main
main()
"""

TEMP_PATTERNS = (".lr_find_*.ckpt", "*.tmp*", ".creating-*")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REPRO_DEBUG")}
    return env | {"COLUMNS": "250"} | extra


def add_hooks(root: Path) -> None:
    for name, hook in (("model.py", MODEL_HOOK), ("data.py", DATA_HOOK)):
        path = root / "papers" / "toy" / name
        path.write_text(path.read_text() + hook)


def repro(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        cwd=root,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def files(root: Path) -> dict[str, bytes]:
    """Every file under runs/ and notes/ with its bytes."""
    out = {}
    for top in ("runs", "notes"):
        for p in sorted((root / top).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = p.read_bytes()
    return out


def kill_at(
    root: Path, stage: str, sig: signal.Signals, ready: Callable[[], bool] | None = None,
    pause: str | None = None,
) -> subprocess.CompletedProcess:  # fmt: skip
    """Start `repro stage <stage>`, send `sig` once it pauses at `pause` (or `ready()` holds),
    and wait for it to end."""
    paused = root / ".paused"
    paused.unlink(missing_ok=True)
    env = _env(**({PAUSE_AT: pause, PAUSED: str(paused)} if pause else {}))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, "stage", stage],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    ready = ready or paused.exists
    deadline = time.monotonic() + 300
    try:
        while not ready():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"repro ended ({proc.returncode}) before the kill point:\n{out}\n{err}")
            if time.monotonic() > deadline:
                pytest.fail(f"repro never reached the kill point ({pause or 'ready()'})")
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def the_new_run(root: Path, before: dict[str, bytes], stage: str) -> Run:
    known = {Path(p).parts[3] for p in before if p.startswith(f"runs/toy/{stage}/")}
    (run,) = [r for r in list_runs(root / "runs", "toy", stage) if r.id not in known]
    return run


def check_nothing_else_changed(root: Path, before: dict[str, bytes], run: Run, sig) -> None:
    after = files(root)
    mine = str(run.dir.relative_to(root))
    for path, data in before.items():
        if path.startswith(mine) or path == "notes/toy.md":
            continue
        assert after.get(path) == data, f"{path} changed"  # earlier records and checkpoints
    notes_before = before.get("notes/toy.md", b"").decode()
    notes_after = after["notes/toy.md"].decode()
    assert notes_after.startswith(notes_before)  # every earlier notebook line intact
    added = notes_after[len(notes_before) :].splitlines()
    if sig == signal.SIGINT:
        assert len(added) == 1 and "INTERRUPTED" in added[0] and run.id in added[0], added
    else:
        assert added == []  # nothing can write after a SIGKILL; --resume adds the line


def check_no_debris(root: Path, allow_temp: bool = False) -> None:
    """Every run directory holds its record; no temporary file or half-made run is left."""
    for stage_dir in (root / "runs" / "toy").iterdir():
        for d in stage_dir.iterdir():
            if RUN_ID_RE.match(d.name):
                assert (d / "record.json").is_file(), f"{d} has no record.json"
    debris = [p for pat in TEMP_PATTERNS for p in (root / "runs").rglob(pat)]
    if not allow_temp:
        assert debris == [], debris


def check_interrupted(run: Run, sig, root: Path) -> None:
    on_disk = json.loads(run.record_file.read_text())
    assert run.effective_status == "interrupted"
    if sig == signal.SIGINT:
        assert on_disk["status"] == "interrupted" and "SIGINT" in on_disk["status_reason"]
        assert on_disk["ended"] is not None and on_disk["duration_s"] > 0
    else:
        assert on_disk["status"] == "running"  # nothing could write the end...
        assert "died without finishing" in run.status_reason  # ...readers say why
        seconds, estimated = run.took()  # from its start to the last file it wrote
        assert estimated and seconds is not None


# ---- projects ------------------------------------------------------------------------------------
def toy_project(root: Path):
    """A repro project at `root` (like conftest's `project`, but at any path and without a
    chdir, for module-scoped templates) holding the toy paper with the pause hooks."""
    from repro.project import Project
    from repro.scaffold import scaffold_paper

    repo = Path(__file__).resolve().parents[1]
    (root / "conf").mkdir(parents=True)
    for name in ("config.yaml", "defaults.yaml"):
        shutil.copy(repo / "conf" / name, root / "conf" / name)
    for name in ("stage", "logger", "launcher"):
        shutil.copytree(repo / "conf" / name, root / "conf" / name)
    shutil.copy(repo / "pyproject.toml", root / "pyproject.toml")
    set_paper_tests(root, False)  # the paper's tests: tests/test_paper_tests.py
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    project = Project(root)
    scaffold_paper(project, "toy", "Toy", "0000.00000")
    add_hooks(root)
    return project


def full_ready(root: Path) -> Path:
    """A toy project whose data, shapes and overfit passed: full runs with dropout (the RNG
    state matters on resume), 4 epochs, no early stop, and no optim.lr, so the LR finder runs."""
    project = toy_project(root)
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    text = paper_yaml.read_text()
    for old, new in (("  n_examples: 1200", "  n_examples: 800"), ("  dropout: 0.0", "  dropout: 0.2"),
                     ("  max_epochs: 15", "  max_epochs: 4"), ("      value: 95.0", "      value: 40.0")):  # fmt: skip
        assert old in text, old
        text = text.replace(old, new)
    text = text.replace("  max_epochs: 4", "  max_epochs: 4\n  early_stopping:\n    patience: 10")
    paper_yaml.write_text(text)
    r = repro(root, "stage", "overfit")
    assert r.returncode == 0, r.stdout + r.stderr
    return root


@pytest.fixture(scope="module")
def full_template(tmp_path_factory) -> Path:
    return full_ready(tmp_path_factory.mktemp("full-template") / "p")


@pytest.fixture(scope="module")
def uninterrupted(full_template, tmp_path_factory) -> dict:
    """The metrics of a full run that nobody interrupted, on the same code and config."""
    root = tmp_path_factory.mktemp("uninterrupted") / "p"
    shutil.copytree(full_template, root)
    r = repro(root, "stage", "full")
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = list_runs(root / "runs", "toy", "full")
    return run.record.metrics["mean"]


@pytest.fixture
def copy_of(tmp_path) -> Callable[[Path], Path]:
    def copy(template: Path) -> Path:
        root = tmp_path / "p"
        shutil.copytree(template, root)
        return root

    return copy


# ---- data, shapes, overfit: paused inside the paper's code ---------------------------------------
STAGE_POINTS = {"data": "load_examples:1", "shapes": "forward:1", "overfit": "forward:40"}


def _kill_stage(root: Path, stage: str, sig) -> None:
    before = files(root)
    result = kill_at(root, stage, sig, pause=STAGE_POINTS[stage])
    assert result.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), result.stderr
    if sig == signal.SIGINT:
        assert "Traceback" not in result.stderr
        assert "Interrupted: the run is recorded as interrupted" in result.stderr
    run = the_new_run(root, before, stage)
    check_interrupted(run, sig, root)
    check_nothing_else_changed(root, before, run, sig)
    check_no_debris(root)
    log = repro(root, "log", "-s", stage)
    row = next(line for line in log.stdout.splitlines() if run.id in line)
    assert "interrupted" in row and ("SIGINT" in row or "died without finishing" in row)
    if sig == signal.SIGKILL:
        check_the_next_run_notes_the_killed_one(root, run)


def check_the_next_run_notes_the_killed_one(root: Path, run: Run) -> None:
    """The next `repro stage` writes what the SIGKILLed process could not: interrupted in its
    record and its notebook line; once (a second run finds nothing to add)."""
    notes = (root / "notes" / "toy.md").read_text()
    after = repro(root, "stage", "data")
    assert after.returncode == 0, after.stdout + after.stderr
    said = f"run {run.id} ({run.stage}) process"
    assert said in " ".join(after.stdout.split())
    on_disk = json.loads(run.record_file.read_text())
    assert on_disk["status"] == "interrupted"
    assert "died without finishing" in on_disk["status_reason"]
    added = (root / "notes" / "toy.md").read_text()[len(notes) :].splitlines()
    mine = [line for line in added if run.id in line]
    assert len(mine) == 1 and "INTERRUPTED" in mine[0] and "died without finishing" in mine[0]
    assert added.index(mine[0]) == 0  # before the new data run's own line
    again = repro(root, "stage", "data", "--force")
    assert said not in " ".join(again.stdout.split())
    assert (root / "notes" / "toy.md").read_text().count(run.id) == 1


@pytest.mark.parametrize(
    "sig",
    [signal.SIGINT, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],  # SIGKILL: ~25 s
    ids=["SIGINT", "SIGKILL"],
)
def test_killed_during_data(tmp_path, sig):
    root = tmp_path / "p"
    shrink_toy(toy_project(root))
    _kill_stage(root, "data", sig)


@pytest.fixture(scope="module")
def overfit_ready(tmp_path_factory) -> Path:
    """A toy project whose data and shapes passed."""
    root = tmp_path_factory.mktemp("overfit-template") / "p"
    # an overfit that cannot end early (the kill comes at its 40th step)
    shrink_toy(toy_project(root), stage="  overfit:\n    max_steps: 400\n    loss_ratio: 1.0e-30\n")
    r = repro(root, "stage", "shapes")
    assert r.returncode == 0, r.stdout + r.stderr
    return root


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["shapes", "overfit"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_during_shapes_or_overfit(overfit_ready, copy_of, stage, sig):
    _kill_stage(copy_of(overfit_ready), stage, sig)


# ---- full: mid-epoch, in the LR finder, while writing a checkpoint; then --resume -----------------
def _last_epoch(root: Path) -> int | None:
    import torch

    for last in (root / "runs" / "toy" / "full").glob("*/checkpoints/last.ckpt"):
        try:
            return int(torch.load(last, map_location="cpu", weights_only=True)["epoch"])
        except Exception:  # being written
            return None
    return None


FULL_POINTS = {
    "mid-epoch": lambda root: _last_epoch(root) is not None,  # epoch 0 checkpointed: in epoch 1
    "lr-finder": lambda root: any((root / "runs" / "toy" / "full").glob("*/.lr_find_*.ckpt")),
    "checkpoint": None,  # CHILD pauses torch.save inside epoch 1's last.ckpt temp file
}


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(FULL_POINTS))
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_full_run_resumes_to_the_uninterrupted_metrics(
    full_template, uninterrupted, copy_of, point, sig
):
    root = copy_of(full_template)
    before = files(root)
    ready = FULL_POINTS[point]
    result = kill_at(
        root, "full", sig, ready=(lambda: ready(root)) if ready else None,
        pause="checkpoint" if ready is None else None,
    )  # fmt: skip
    assert result.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), result.stderr
    run = the_new_run(root, before, "full")
    check_interrupted(run, sig, root)
    check_nothing_else_changed(root, before, run, sig)
    check_no_debris(root, allow_temp=sig == signal.SIGKILL)  # a kill -9 cannot clean up...
    if point == "checkpoint" and sig == signal.SIGKILL:
        assert list(run.dir.glob("checkpoints/.last.ckpt.*.tmp")), "the kill missed the write"
    if point == "checkpoint":
        assert _last_epoch(root) == 0  # the checkpoint being replaced is intact
    if sig == signal.SIGKILL:
        status = repro(root, "status")
        row = next(line for line in status.stdout.splitlines() if "│ full" in line)
        assert "INTERRUPTED" in row and "died without finishing" in row, status.stdout
        log = repro(root, "log", "-s", "full")
        assert "≥" in next(line for line in log.stdout.splitlines() if run.id in line)
        took, estimated = run.took()
        assert estimated
        if point == "lr-finder":  # killed at the finder's first checkpoint: up to that write
            started = datetime.fromisoformat(run.record.started).timestamp()
            (ckpt,) = run.dir.glob(".lr_find_*.ckpt")
            assert took >= ckpt.stat().st_mtime - started > 0
        else:
            assert took > 0.1  # not "took 0.0s": it trained, checkpointed, plotted

    resumed = repro(root, "stage", "full", "--resume", run.id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check_no_debris(root)  # ...the resume removes what it left
    rec = json.loads(run.record_file.read_text())
    assert rec["status"] == "passed" and len(rec["resumed"]) == 1
    assert rec["resumed"][0]["previous_duration_s"] > 0  # the killed attempt's time counts
    for k, v in uninterrupted.items():
        assert rec["metrics"]["mean"][k] == pytest.approx(v, abs=1e-6), k
    notes = (root / "notes" / "toy.md").read_text().splitlines()
    assert run.id in notes[-1] and "full · PASS" in notes[-1]


# ---- Ctrl-C at the seams, in-process (no subprocess: fast) -------------------------------------
@contextmanager
def sigint_escapes_fail() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        pytest.fail("a KeyboardInterrupt escaped repro's handling")


def test_ctrl_c_between_the_new_record_and_its_guard_is_recorded(project, cli, monkeypatch):
    """The record says running from create_run on; a Ctrl-C before the guard is entered is held
    and acted on inside it, so the run ends 'interrupted', never 'running' with no owner."""
    from repro import runner

    shrink_toy(project)
    real = runner._create

    def create_then_ctrl_c(*args, **kwargs):
        run = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # the signal arrives while we are still outside the guard
        return run

    monkeypatch.setattr(runner, "_create", create_then_ctrl_c)
    with sigint_escapes_fail():
        code, out, err = cli("stage", "data")
    assert code == 130 and "Interrupted" in err
    (run,) = list_runs(project.runs_dir, "toy", "data")
    rec = json.loads(run.record_file.read_text())
    assert rec["status"] == "interrupted" and "SIGINT" in rec["status_reason"]
    assert (project.notes_dir / "toy.md").read_text().splitlines()[-1].count("INTERRUPTED") == 1


def test_ctrl_c_after_reopening_a_run_for_resume_leaves_it_interrupted(project, cli, monkeypatch):
    """--resume reopens the run in memory; only its guard writes 'running'."""
    from repro.config.compose import compose

    shrink_toy(project)
    resolved = compose(project, "toy", [])
    run = create_run(project.runs_dir, "toy", "full", config=resolved.config)
    run.update(status_reason="interrupted by SIGINT (Ctrl-C)")
    run.finish(None, "interrupted")
    before = run.record_file.read_bytes()
    real = Run.reopen

    def reopen_then_ctrl_c(self, changed):
        real(self, changed)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)

    monkeypatch.setattr(Run, "reopen", reopen_then_ctrl_c)
    with sigint_escapes_fail():
        code, out, err = cli("stage", "full", "--resume", run.id)
    assert code == 130
    assert run.record_file.read_bytes() == before


def test_ctrl_c_inside_a_gate_records_interrupted_and_keeps_earlier_runs(project, cli, monkeypatch):
    from repro.gates import data

    shrink_toy(project)
    assert cli("stage", "data")[0] == 0
    before = files(project.root)

    def ctrl_c(ctx):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)

    monkeypatch.setattr(data, "run", ctrl_c)
    with sigint_escapes_fail():
        code, out, err = cli("stage", "data", "--force")
    assert code == 130
    run = the_new_run(project.root, before, "data")
    assert json.loads(run.record_file.read_text())["status"] == "interrupted"
    check_nothing_else_changed(project.root, before, run, signal.SIGINT)
    check_no_debris(project.root)


# ---- temporary files of the LR finder and of killed checkpoint writes --------------------------
def test_the_lr_finders_checkpoint_is_removed_when_it_is_interrupted(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from pytorch_lightning.tuner import Tuner

    from repro.config.schema import LRFinderConfig
    from repro.train.lr_finder import find_lr

    def lr_find(self, *args, **kwargs):
        (tmp_path / ".lr_find_1234.ckpt").write_bytes(b"weights")  # as Lightning 2.6.6 does
        raise KeyboardInterrupt

    monkeypatch.setattr(Tuner, "lr_find", lr_find)
    cfg = LRFinderConfig(min_lr=1e-6, max_lr=1.0, num_training=10, fallback_lr=1e-3)
    with pytest.raises(KeyboardInterrupt):
        find_lr(None, None, tmp_path, cfg, SimpleNamespace(accelerator="cpu"))
    assert list(tmp_path.iterdir()) == []


def test_what_a_killed_attempt_left_is_removed_by_the_next(tmp_path):
    from repro.train.fit import remove_leftovers

    (tmp_path / "checkpoints").mkdir()
    left = [".lr_find_0a1b.ckpt", "checkpoints/.last.ckpt.tmp4242", ".record.json.x1y2.tmp",
            ".lr.json.abcd.tmp", "checkpoints/.best.ckpt.k2j4_x.tmp"]  # fmt: skip
    kept = ["record.json", "lr.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt"]
    for name in left + kept:
        (tmp_path / name).write_text("x")
    assert sorted(remove_leftovers(tmp_path)) == sorted(left)
    assert sorted(
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
    ) == sorted(kept)


# ---- a pickle payload in a checkpoint is refused, not executed ----------------------------------
class Payload:
    """Unpickling this runs `touch <marker>` (what an attacker's checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("planted", ["last.ckpt", "best.ckpt"])
def test_a_pickle_payload_in_a_checkpoint_is_refused_on_resume(project, cli, tmp_path, planted):
    """Refused in one line that never advises loading it anyway (torch's own message says to retry
    with weights_only=False; issue 20: a planted best.ckpt was a 94-line traceback saying so)."""
    import torch

    from repro.config.compose import compose

    shrink_toy(project)
    resolved = compose(project, "toy", [])
    run = create_run(project.runs_dir, "toy", "full", config=resolved.config,
                     overrides=[], provenance=resolved.provenance)  # fmt: skip
    run.update(status_reason="interrupted by SIGINT (Ctrl-C)")
    run.finish(None, "interrupted")
    marker = tmp_path / "payload-ran"
    (run.dir / "checkpoints").mkdir()
    if planted == "best.ckpt":  # a plain last.ckpt to resume from, a planted best.ckpt
        torch.save({"epoch": 1, "state_dict": {}}, run.dir / "checkpoints" / "last.ckpt")
    torch.save({"epoch": 1, "state_dict": Payload(marker)}, run.dir / "checkpoints" / planted)

    code, out, err = cli("stage", "full", "--resume", run.id)
    assert not marker.exists(), "the pickle payload ran"
    assert code == 1
    line = err.strip()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err, err
    assert line == (
        f"Error: {run.dir}/checkpoints/{planted}: refused to load: not a plain checkpoint "
        "(expected tensors and plain values, found the Python object posix.system, which loading "
        "would run); delete it to train that seed from its start, or run the stage again "
        "without --resume"
    )
    assert "weights_only" not in out + err
    rec = json.loads(run.record_file.read_text())
    assert (
        rec["status"] == "error"
        and "refused to load: not a plain checkpoint" in rec["status_reason"]
    )


def test_a_key_twice_in_a_config_file_is_one_line_when_hydra_reads_it(project, cli):
    """With overrides Hydra reads the YAML, and refuses a key given twice: was a ConstructorError
    traceback."""
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    text = paper_yaml.read_text()
    paper_yaml.write_text(text + "trainer:\n  max_epochs: 3\n")
    line = text.count("\n") + 1
    expected = f"Error: {paper_yaml}:{line}: expected valid YAML, found duplicate key trainer; fix the file"
    for args in (["stage", "data", "seed=1"], ["stage", "data"], ["status"]):  # Hydra, plain
        code, out, err = cli(*args)
        assert code == 1 and "Traceback" not in out + err
        assert err.strip() == expected, args


def test_a_config_file_that_is_not_utf8_is_one_line_from_status_and_stage(project, cli):
    """Was a UnicodeDecodeError traceback from every command (issue 20)."""
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    lines = paper_yaml.read_bytes().splitlines(keepends=True)
    paper_yaml.write_bytes(b"".join(lines[:3]) + b"# caf\xe9\n" + b"".join(lines[3:]))
    expected = (
        f"Error: {paper_yaml}:4: expected UTF-8 text, found the byte 0xe9 (invalid continuation "
        "byte); save the file as UTF-8"
    )
    for args in (["status"], ["stage", "data"], ["stage", "data", "seed=1"]):  # seed=1: Hydra
        code, out, err = cli(*args)
        assert code == 1 and err.strip() == expected and "Traceback" not in out, (args, err)
    assert list_runs(project.runs_dir) == []


# ---- full and read-only disks -----------------------------------------------------------------
def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@contextmanager
def read_only(path: Path) -> Iterator[str]:
    """`path` read-only for this process: a read-only bind mount as root (root ignores modes),
    else chmod a-w. Yields the errno name to expect."""
    if _as_root():
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
            yield "EROFS"
        finally:
            subprocess.run(["umount", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield "EACCES"
        finally:
            path.chmod(mode)


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


needs_root = pytest.mark.skipif(not _as_root(), reason="mounting a tmpfs needs root")


def test_read_only_runs_folder_is_one_error_line_and_no_run_directory(project, cli):
    shrink_toy(project)
    stage_dir = project.runs_dir / "toy" / "data"
    stage_dir.mkdir(parents=True)
    with read_only(stage_dir) as errno_name:
        code, out, err = cli("stage", "data")
    assert code == 1 and "Traceback" not in out + err
    assert err.strip() == (
        f"Error: runs/toy/data: expected to write a new run's record there, found "
        f"{os.strerror(13 if errno_name == 'EACCES' else 30).lower()} ({errno_name}); "
        + ("make it writable (chmod u+w) or run as its owner" if errno_name == "EACCES"
           else "run from a writable copy of the project, or remount it read-write")
    )  # fmt: skip
    assert list(stage_dir.iterdir()) == []


def test_read_only_notebook_is_a_warning_with_the_line_and_the_verdict_stands(project, cli):
    shrink_toy(project)
    notes = project.notes_dir / "toy.md"
    before = notes.read_bytes()
    with read_only(project.notes_dir if _as_root() else notes):
        code, out, err = cli("stage", "data")
    assert code == 0 and "Traceback" not in out + err
    (run,) = list_runs(project.runs_dir, "toy", "data")
    assert run.record.status == "passed"
    (warning,) = err.strip().splitlines()
    assert warning.startswith(
        "Warning: notes/toy.md: expected to write the lab notebook line there"
    )
    assert "this is its notebook line: - " in warning and f"data · PASS · {run.id}" in warning
    assert notes.read_bytes() == before


@needs_root
def test_a_disk_too_full_for_the_record_leaves_no_run_directory(project, cli):
    shrink_toy(project)
    with small_disk(project.runs_dir, "8k"):
        code, out, err = cli("stage", "data")
        assert code == 1 and "Traceback" not in out + err
        assert err.strip() == (
            "Error: runs/toy/data: expected to write a new run's record there, found no space "
            "left on device (ENOSPC); free some space and run the command again"
        )
        assert [p.name for p in (project.runs_dir / "toy" / "data").iterdir()] == []


@needs_root
def test_a_disk_that_fills_during_the_run_records_error_naming_the_path(project, cli, monkeypatch):
    shrink_toy(project)
    add_hooks(project.root)
    with small_disk(project.runs_dir, "1m"):
        monkeypatch.setenv("REPRO_TEST_FILL_DISK", str(project.runs_dir / ".filler"))
        code, out, err = cli("stage", "data")
        assert code == 1 and "Traceback" not in out + err
        (run,) = list_runs(project.runs_dir, "toy", "data")
        line = err.strip()
        assert len(line.splitlines()) == 1
        assert line.startswith(f"Error: runs/toy/data/{run.id}/") and "(ENOSPC)" in line, line
        rec = json.loads(run.record_file.read_text())
        assert rec["status"] == "error" and "no space left on device" in rec["status_reason"]
        check_no_debris(project.root)
    notes = (project.notes_dir / "toy.md").read_text().splitlines()
    assert f"data · ERROR · {run.id}" in notes[-1]
