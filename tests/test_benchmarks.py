"""The benchmark scripts still run end to end (tiny sizes; their figures are not checked here:
speed targets live in the scripts' output, not in timed tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# each starts the scripts in subprocesses (~2.5 min together): CI runs them with the slow tests
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--rounds", "1", "--fast-steps", "1", "--naive-steps", "1", "--warmup", "0"]
TINY += ["--batch", "2", "--vocab", "50"]


def run_throughput(*extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bimpm_throughput.py"), *TINY, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def table_rows(out: str) -> dict[str, list[str]]:
    names = ("before", "fast", "plain", "naive")
    return {line.split()[0]: line.split() for line in out.splitlines() if line[:6].strip() in names}


def test_bimpm_throughput_benchmark_runs_every_worker_and_prints_the_comparisons():
    proc = run_throughput()
    out = proc.stdout
    assert "fast/naive: speed" in out and "fast/plain: speed" in out and "peak RSS" in out
    assert "matching layer alone" in out
    rows = table_rows(out)
    assert set(rows) == {"fast", "plain", "naive"}
    assert all(float(r[1]) > 0 for r in rows.values())  # pairs/s measured
    assert "fewer than 5 timed baseline steps" in proc.stderr  # 1 round x 1 step warns


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="--before reads git history")
def test_bimpm_throughput_benchmark_times_another_revision_as_before():
    out = run_throughput("--impls", "fast", "--before", "HEAD").stdout
    assert set(table_rows(out)) == {"before", "fast"}
    assert "fast/before: speed" in out and "before=HEAD (" in out


def test_data_gate_scale_benchmark_prints_gate_beside_plain_build(tmp_path):
    """Tiny data (400 pairs, a 2 MB vectors file): every row and the growth exponents print."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "data_gate_scale.py"), "--sizes", "300"]
    cmd += ["400", "--runs", "1", "--vectors-mb", "2", "--dir", str(tmp_path / "scale")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = [line for line in proc.stdout.splitlines() if "pairs run" not in line]
    rows = [line.split() for line in table if line[:7].strip() in ("300", "400")]
    kinds = {" ".join(r[1 : len(r) - 9]) for r in rows}  # 3 figures with ranges, 2 ratios
    assert kinds == {"plain", "plain warm", "gate", "gate warm"}, proc.stdout
    assert "growth exponent" in proc.stdout and "300->400:" in proc.stdout
    assert not (tmp_path / "scale").exists()  # the data it generated is removed


def test_threads_contention_benchmark_runs_every_configuration():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "threads_contention.py"), "--rounds", "1"]
    cmd += ["--steps", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("quiet ", "loaded "))]
    assert len(rows) == 8, proc.stdout  # 4 configurations, quiet and loaded
    assert "training's choice here:" in proc.stdout
