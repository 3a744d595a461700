"""The benchmark scripts still run end to end (tiny sizes; their figures are not checked here:
speed targets live in the scripts' output, not in timed tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bimpm_throughput_benchmark_runs_both_workers_and_prints_the_comparison():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bimpm_throughput.py"), "--rounds", "1",
           "--fast-steps", "1", "--naive-steps", "1", "--warmup", "0", "--batch", "2",
           "--vocab", "50"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "fast/naive: speed" in out and "peak RSS" in out
    assert "matching layer alone" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["fast"], ["naive"])}
    assert set(rows) == {"fast", "naive"}
    assert float(rows["fast"][1]) > 0 and float(rows["naive"][1]) > 0  # pairs/s measured
    assert "fewer than 5 timed baseline steps" in proc.stderr  # 1 round x 1 step warns
