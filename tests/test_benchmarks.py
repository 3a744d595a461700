"""The benchmark scripts still run end to end (tiny sizes; their figures are not checked here:
speed targets live in the scripts' output, not in timed tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
