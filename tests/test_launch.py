"""Tests for repro/launch.py through submitit's LocalExecutor (real processes; Slurm's side is in
test_launch_slurm.py): results, exception lines, names, the parallel bound, the bounded wait."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from repro.errors import LaunchError
from repro.launch import JobSpec, SlurmOptions, array_name, launch
from tests import launch_jobs as jobs

REPO = Path(__file__).resolve().parents[1]
CPU = SlurmOptions(partition=None, cpus_per_task=1, mem_gb=None, gpus_per_node=None)


@pytest.fixture
def importable(monkeypatch):
    """Workers import tests.launch_jobs by name: put the repository on their path."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def run_local(specs, folder, **kw):
    args = dict(
        launcher="local",
        folder=folder,
        timeout_min=5,
        max_parallel=2,
        poll_s=0.1,
        unknown_after_s=1.0,
    )
    return launch(specs, **{**args, **kw})


def test_local_jobs_record_result_exception_line_and_names(tmp_path, importable):
    done = []
    specs = [
        JobSpec("toy-add-s0", jobs.add, (2, 3)),
        JobSpec("toy-fail-s1", jobs.fail, ("boom 7",)),
        JobSpec("toy-where-s0", jobs.where),
    ]
    outcomes = run_local(specs, tmp_path / "sub", on_done=done.append)

    assert [o.name for o in outcomes] == ["toy-add-s0", "toy-fail-s1", "toy-where-s0"]
    add, fail, where = outcomes
    assert (add.state, add.result, add.error, add.ok) == ("COMPLETED", 5, None, True)
    assert (fail.state, fail.result, fail.error) == ("FAILED", None, "ValueError: boom 7")
    assert not fail.ok
    assert where.state == "COMPLETED" and str(REPO) in where.result["sys_path"]
    ids = [o.job_id for o in outcomes]
    assert all(i and i.isdigit() for i in ids) and len(set(ids)) == 3  # local job ids are pids
    assert sorted(o.name for o in done) == sorted(o.name for o in outcomes)
    assert json.loads((tmp_path / "sub" / "jobs.json").read_text()) == {
        "toy-add-s0": add.job_id,
        "toy-fail-s1": fail.job_id,
        "toy-where-s0": where.job_id,
    }


def test_local_runs_at_most_max_parallel_jobs_at_once(tmp_path, importable):
    specs = [JobSpec(f"toy-nap-s{i}", jobs.nap, (1.0,)) for i in range(3)]
    outcomes = run_local(specs, tmp_path, max_parallel=2)

    spans = [o.result for o in outcomes]
    assert all(o.state == "COMPLETED" for o in outcomes)
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most == 2  # two ran together, the third waited for one of them


def test_local_job_without_a_result_is_unknown_after_the_bound(tmp_path, importable):
    t0 = time.monotonic()
    [outcome] = run_local([JobSpec("toy-vanish-s0", jobs.vanish)], tmp_path, unknown_after_s=1.5)
    took = time.monotonic() - t0

    assert outcome.state == "UNKNOWN" and outcome.result is None
    assert outcome.error.startswith(
        "no result 1.5 s after the job's process ended; submitit: "
        "has not produced any output (state: FINISHED)"
    )
    assert 1.5 <= took < 10  # waited the bound, then gave up (process start ~1 s)


def test_unknown_launcher_and_repeated_names_are_refused(tmp_path):
    with pytest.raises(LaunchError, match="launcher 'pbs' unknown; valid: local, slurm"):
        run_local([JobSpec("a", jobs.add, (1, 1))], tmp_path, launcher="pbs")
    twice = [JobSpec("toy-x-s0", jobs.add, (1, 1)), JobSpec("toy-x-s0", jobs.add, (2, 2))]
    with pytest.raises(LaunchError, match="job names must be unique; repeated: toy-x-s0"):
        run_local(twice, tmp_path)


def test_slurm_launcher_without_slurm_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun on PATH
    with pytest.raises(LaunchError, match="launcher=slurm but this machine has no Slurm client"):
        run_local([JobSpec("a", jobs.add, (1, 1))], tmp_path, launcher="slurm", slurm=CPU)


@pytest.mark.parametrize(
    "names, expected",
    [
        (["bimpm-full-s0", "bimpm-narrow-s0"], "bimpm"),
        (["bimpm-full-s0", "bimpm-full-s1"], "bimpm-full"),
        (["bimpm-full-s0"], "bimpm-full-s0"),
        (["bimpm-full", "bimpm-full-s1"], "bimpm"),
        (["a-x", "b-x"], "repro"),
    ],
)
def test_array_name_is_what_the_names_share(names, expected):
    assert array_name(names) == expected


def test_a_slurm_time_limit_too_short_for_the_pre_timeout_signal_is_refused(tmp_path):
    with pytest.raises(LaunchError) as e:
        run_local([JobSpec("a", jobs.add, (1, 1))], tmp_path, launcher="slurm", slurm=CPU,
                  timeout_min=1)  # fmt: skip
    assert str(e.value) == (
        "stage.experiments.timeout_min=1: expected at least 2 minutes with launcher=slurm: Slurm "
        "may send its pre-timeout signal up to 60 s before the time asked for (sbatch --signal), "
        "which would stop a 1-minute job at once; raise stage.experiments.timeout_min"
    )


@pytest.mark.parametrize(
    ("timeout_min", "delay_s"), [(2, 6), (10, 30), (30, 90), (120, 90)]
)  # fmt: skip
def test_the_pre_timeout_signal_fits_the_time_limit(timeout_min, delay_s):
    from repro.launch import SIGNAL_EARLY_S, signal_delay_s

    assert signal_delay_s(timeout_min) == delay_s
    # the earliest Slurm may send it still leaves the job most of a 2-minute limit
    assert timeout_min * 60 - delay_s - SIGNAL_EARLY_S >= 0.45 * timeout_min * 60
