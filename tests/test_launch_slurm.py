"""Tests for repro/launch.py on a real one-node Slurm cluster (scripts/slurm_cluster.py starts it):
one job array that passes, fails, is cancelled and times out; names in squeue/sacct; GPU requests;
what the launcher records when Slurm has no accounting. Run with .ci/slurm-tests or pytest -m slurm.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import submitit

from repro.errors import LaunchError
from repro.launch import JobSpec, SlurmOptions, launch
from scripts.slurm_cluster import Cluster, apt_command, missing_packages
from tests import launch_jobs as jobs

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
CPU = SlurmOptions(partition=None, cpus_per_task=1, mem_gb=1, gpus_per_node=0)


def _cluster(accounting: bool) -> Iterator[Cluster]:
    missing = missing_packages(accounting)
    if missing:
        pytest.skip(f"Slurm is not installed here; as root: {apt_command(missing)}")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's slurmd runs jobs as root: run as root (.ci/slurm-tests)")
    # Not pytest's tmp dirs: munged wants a socket directory that everyone can traverse (0700
    # fails), and .ci/slurm-tests stops what is left in $REPRO_SLURM_ROOT if pytest dies.
    base = os.environ.get("REPRO_SLURM_ROOT") or None
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="cluster-", dir=base)), accounting=accounting)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def accounted() -> Iterator[Cluster]:
    """A cluster with slurmdbd + MariaDB, so sacct (and submitit) learn every job's end."""
    yield from _cluster(accounting=True)


@pytest.fixture(scope="session")
def unaccounted() -> Iterator[Cluster]:
    """A cluster without accounting: sacct fails, submitit learns only from result files."""
    yield from _cluster(accounting=False)


def _use(cluster: Cluster, monkeypatch) -> None:
    for key, value in cluster.env().items():
        monkeypatch.setenv(key, value)
    # Jobs import tests.launch_jobs by name; sbatch passes the environment on (--export=ALL).
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def _cancel_when_running(name: str, log: list[str]) -> threading.Thread:
    """scancel the task called `name` as soon as squeue shows it RUNNING (as a user would)."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["squeue", "-h", "-r", "-o", "%i|%j|%T"], capture_output=True, text=True
            )
            for line in out.stdout.splitlines():
                job_id, job_name, state = line.split("|")
                if job_name == name and state == "RUNNING":
                    subprocess.run(["scancel", job_id], check=True)
                    log.append(job_id)
                    return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _slurm_launch(specs, folder, **kw):
    args = dict(
        launcher="slurm",
        folder=folder,
        timeout_min=2,  # repro's smallest for Slurm: USR2 comes 6 s before it, or up to 60 s earlier
        max_parallel=4,
        poll_s=1.0,
        unknown_after_s=5.0,
        slurm=CPU,
    )
    return launch(specs, **{**args, **kw})


def _sacct_names(array_id: str) -> dict[str, str]:
    cmd = ["sacct", "-n", "-X", "-j", array_id, "-o", "JobID%20,JobName%30", "--parsable2"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return dict(line.split("|") for line in out.splitlines())


def test_one_array_passes_fails_is_cancelled_and_times_out(accounted, monkeypatch, tmp_path):
    _use(accounted, monkeypatch)
    specs = [
        JobSpec("toy-pass-s0", jobs.add, (2, 3)),
        JobSpec("toy-raise-s0", jobs.fail, ("boom 7",)),
        JobSpec("toy-cancel-s0", jobs.stubborn, (300,)),  # deaf to USR2: only scancel ends it
        JobSpec("toy-timeout-s0", jobs.nap, (300,)),  # 300 s asked, 2 min allowed
        JobSpec("toy-45s-s0", jobs.nap, (45,)),  # fits its 2 minutes: not TIMEOUT (issue 20)
        JobSpec("toy-crash-s0", jobs.segfault),
    ]
    cancelled: list[str] = []
    canceller = _cancel_when_running("toy-cancel-s0", cancelled)
    done: list[str] = []
    watcher = submitit.SlurmJob.watcher
    calls_before = watcher.num_calls
    t0 = time.monotonic()
    outcomes = _slurm_launch(specs, tmp_path, on_done=lambda o: done.append(o.name))
    took = time.monotonic() - t0
    canceller.join(1)

    by = {o.name: o for o in outcomes}
    array_id = by["toy-pass-s0"].job_id.split("_")[0]
    assert [o.job_id for o in outcomes] == [f"{array_id}_{i}" for i in range(6)]
    assert (by["toy-pass-s0"].state, by["toy-pass-s0"].result) == ("COMPLETED", 5)
    assert (by["toy-raise-s0"].state, by["toy-raise-s0"].error) == ("FAILED", "ValueError: boom 7")
    assert cancelled == [f"{array_id}_2"]
    cancel = by["toy-cancel-s0"]
    assert cancel.state == "CANCELLED"
    assert cancel.error.startswith("has not produced any output (state: CANCELLED by 0); *** JOB ")
    assert " CANCELLED AT " in cancel.error
    timeout = by["toy-timeout-s0"]
    assert (timeout.state, timeout.error) == (
        "TIMEOUT",
        "submitit.core.utils.UncompletedJobError: "
        "Job not requeued because: timed-out and not checkpointable.",
    )
    nap = by["toy-45s-s0"]  # submitit's default USR2, 90 s before the limit, stopped it at ~30 s
    assert nap.state == "COMPLETED" and nap.result[1] - nap.result[0] >= 45
    crash = by["toy-crash-s0"]  # was only "has not produced any output (state: FAILED)"
    assert crash.state == "FAILED", crash
    assert crash.error.startswith("has not produced any output (state: FAILED)")
    assert "signal 11 (SIGSEGV)" in crash.error, crash.error
    assert sorted(done) == sorted(s.name for s in specs) and done[-1] == "toy-timeout-s0"
    assert 54 <= took < 150  # USR2 at most 60 s early (slurmctld's time checks), 6 s before 2 min
    # One sacct call per poll for the whole array (submitit's watcher), not one per job.
    assert watcher.num_calls - calls_before <= took / 1.0 + 3
    # Each task carries its own name in Slurm's records; the array's own name is what they share.
    assert _sacct_names(array_id) == {f"{array_id}_{i}": s.name for i, s in enumerate(specs)}
    script = (tmp_path / f"{array_id}_submission.sh").read_text()
    assert "#SBATCH --job-name=toy" in script and "#SBATCH --array=0-5%4" in script
    assert "#SBATCH --signal=USR2@6" in script and "#SBATCH --time=2" in script
    assert "gpus" not in script and "gres" not in script
    assert "#SBATCH --mem=1G" in script and "#SBATCH --cpus-per-task=1" in script


def test_a_gpu_request_on_a_cpu_cluster_is_refused_with_sbatchs_reason(
    accounted, monkeypatch, tmp_path
):
    _use(accounted, monkeypatch)
    specs = [JobSpec(f"toy-gpu-s{i}", jobs.add, (i, i)) for i in range(2)]
    gpu = SlurmOptions(partition=None, cpus_per_task=1, mem_gb=1, gpus_per_node=1)
    with pytest.raises(LaunchError) as err:
        _slurm_launch(specs, tmp_path, slurm=gpu)
    assert str(err.value) == (
        "sbatch refused the job array: sbatch: error: Invalid generic resource (gres) specification"
    )


def test_without_accounting_a_cancelled_job_is_unknown_after_the_bound(
    unaccounted, monkeypatch, tmp_path
):
    _use(unaccounted, monkeypatch)
    specs = [
        JobSpec("toy-pass-s0", jobs.add, (2, 3)),
        JobSpec("toy-raise-s0", jobs.fail, ("boom 7",)),
        JobSpec("toy-cancel-s0", jobs.stubborn, (300,)),
    ]
    cancelled: list[str] = []
    canceller = _cancel_when_running("toy-cancel-s0", cancelled)
    t0 = time.monotonic()
    outcomes = _slurm_launch(specs, tmp_path, unknown_after_s=3.0)
    took = time.monotonic() - t0
    canceller.join(1)

    passed, raised, cancel = outcomes
    # Result files still tell a pass from a failure; nothing tells what ended the third.
    assert (passed.state, passed.result) == ("COMPLETED", 5)
    assert (raised.state, raised.error) == ("FAILED", "ValueError: boom 7")
    assert cancelled == [cancel.job_id]
    assert cancel.state == "UNKNOWN"
    assert cancel.error == (
        f"Slurm cannot say what became of job {cancel.job_id} (sacct: Slurm accounting storage "
        "is disabled; squeue last listed it CANCELLED) and it wrote no result file in 3 s"
    )
    assert took < 30


# ---- the experiments stage of a `repro new` paper, through the real cluster -------------------
FAILING_MODEL = """

_build = build_model


def build_model(cfg: dict, *, n_features: int, num_classes: int):
    if cfg.get("dropout") == 0.75:  # the test's deliberately failing variant
        raise RuntimeError("deliberate failure of the dropout=0.75 variant")
    return _build(ModelConfig(**cfg), n_features=n_features, num_classes=num_classes)
"""


def test_experiments_stage_runs_the_toy_papers_variants_as_one_array(
    accounted, monkeypatch, project
):
    import json

    from rich.console import Console

    from repro.runner import run_stage

    _use(accounted, monkeypatch)
    model_py = project.paper_dir("toy") / "model.py"
    model_py.write_text(model_py.read_text() + FAILING_MODEL)
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    text = paper_yaml.read_text()
    text = text.replace(
        "      - name: narrow hidden layer\n",
        "      - name: always fails\n        overrides: [model.dropout=0.75]\n        paper: null\n"
        "      - name: narrow hidden layer\n",
    )
    paper_yaml.write_text(text)
    overrides = [
        "launcher=slurm",
        "launcher.cpus_per_task=1",
        "launcher.mem_gb=1",
        "launcher.poll_s=1",
        "data.n_examples=300",
        "trainer.max_epochs=2",
        "optim.lr=0.01",
        "stage.experiments.parallel=3",
    ]
    run = run_stage(
        project, "toy", "experiments", overrides, force=True, console=Console(quiet=True)
    )
    rec = json.loads((run.dir / "record.json").read_text())
    assert rec["status"] == "failed"
    results = {r["variant"]: r for r in rec["verdict"]["evidence"]["results"]}
    assert set(results) == {"full model", "always fails", "narrow hidden layer"}
    for name in ("full model", "narrow hidden layer"):
        assert (
            results[name]["state"] == "COMPLETED"
            and 0 <= results[name]["metrics"]["test/acc"] <= 100
        )
    bad = results["always fails"]
    assert bad["state"] == "FAILED"
    assert bad["error"] == "FAILED: RuntimeError: deliberate failure of the dropout=0.75 variant"
    ids = [results[n]["job_id"] for n in ("full model", "always fails", "narrow hidden layer")]
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_{i}" for i in range(3)]  # one array, the job ids recorded
    assert (
        "1 of 3 runs failed: always fails (seed 0): FAILED: RuntimeError: deliberate"
        in rec["verdict"]["reason"]
    )
    assert _sacct_names(array) == {
        f"{array}_0": "toy-full-model-s0",
        f"{array}_1": "toy-always-fails-s0",
        f"{array}_2": "toy-narrow-hidden-layer-s0",
    }


HANGING_MODEL = """

import time as _time

_build = build_model


def build_model(cfg: ModelConfig, *, n_features: int, num_classes: int):
    if cfg.dropout == 0.75:  # the variant that is still running when slurmctld goes
        _time.sleep(600)
    return _build(cfg, n_features=n_features, num_classes=num_classes)
"""


def test_a_controller_that_stops_answering_is_reported_and_the_wait_ends(
    accounted, monkeypatch, project
):
    """Issue 20: with slurmctld down, squeue stops answering while sacct keeps saying RUNNING,
    and the experiments stage waited silently and without bound."""
    import io
    import json

    from rich.console import Console

    from repro.runner import run_stage

    _use(accounted, monkeypatch)
    model_py = project.paper_dir("toy") / "model.py"
    model_py.write_text(model_py.read_text() + HANGING_MODEL)
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    text = paper_yaml.read_text().replace(
        "      - name: narrow hidden layer\n",
        "      - name: hangs\n        overrides: [model.dropout=0.75]\n        paper: null\n"
        "      - name: narrow hidden layer\n",
    )
    paper_yaml.write_text(text)
    bound = 20
    overrides = [
        "launcher=slurm",
        "launcher.cpus_per_task=1",
        "launcher.mem_gb=1",
        "launcher.poll_s=1",
        f"launcher.give_up_after_s={bound}",
        "data.n_examples=300",
        "trainer.max_epochs=2",
        "optim.lr=0.01",
        "stage.experiments.parallel=3",
        "stage.experiments.timeout_min=10",
    ]
    stopped: list[float] = []

    def stop_when_running() -> None:  # as slurmctld crashing would
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["squeue", "-h", "-r", "-o", "%j|%T"], capture_output=True, text=True
            )
            if "toy-hangs-s0|RUNNING" in out.stdout:
                time.sleep(3)  # a few of the stage's polls (1 s) see it running too
                accounted.stop_daemon("slurmctld")
                stopped.append(time.monotonic())
                return
            time.sleep(0.5)

    stopper = threading.Thread(target=stop_when_running, daemon=True)
    stopper.start()
    printed = io.StringIO()
    try:
        run = run_stage(
            project, "toy", "experiments", overrides, force=True,
            console=Console(file=printed, width=300),
        )  # fmt: skip
        ended = time.monotonic()
    finally:
        stopper.join(5)
        if stopped:
            accounted.restart_slurmctld()
        # this private cluster's jobs all run as us: cancel them, and let slurmd end their steps
        # before the next test (or the cluster's stop) comes
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            subprocess.run(["scancel", "--user", str(os.getuid())], check=False)
            left = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
            if left.returncode == 0 and not left.stdout.strip():
                break
            time.sleep(1)
    assert stopped, "the hanging variant never ran"
    out = printed.getvalue()
    print(out)  # what the user saw, in the test's log
    assert "squeue does not answer (" in out and "slurmctld may be down" in out
    # the variant still running, and the one queued behind it when the controller went (2 CPUs)
    assert re.search(r"gave up waiting for [12] jobs? after squeue had not answered for \d+ s", out)
    # reported, then ended within the bound: the first failing squeue starts the clock and the
    # calls after it wait at most what is left of it (+ a poll, the stage's own write-up)
    print(f"controller stopped -> stage ended: {ended - stopped[0]:.1f} s (bound {bound} s)")
    assert ended - stopped[0] < bound + 15
    rec = json.loads((run.dir / "record.json").read_text())
    assert rec["status"] == "failed"
    results = {r["variant"]: r for r in rec["verdict"]["evidence"]["results"]}
    hangs = results["hangs"]
    assert hangs["state"] == "RUNNING"  # its last known state
    assert hangs["error"].startswith("RUNNING: gave up waiting: squeue has not answered for ")
    assert f"launcher.give_up_after_s={bound}" in hangs["error"]
    assert "its last known state: RUNNING (sacct at " in hangs["error"]  # squeue is silent
    assert f"scancel {hangs['job_id']}" in hangs["error"]
    assert results["full model"]["state"] == "COMPLETED"  # its result file came all the same
    assert results["narrow hidden layer"]["state"] in ("COMPLETED", "PENDING")
