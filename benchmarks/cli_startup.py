"""CLI start-up: wall time of the commands that do not train, beside `python -c "import torch"`.

Each command runs in a fresh process, in a throwaway project (a copy of conf/ with a `repro new`
paper and one recorded run); we print the median and min over --repeats runs (default 7).
Target (issue #2): every non-training command < 0.5 s here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPRO = [sys.executable, "-m", "repro"]


def make_project(tmp: Path) -> str:
    """A project with the toy paper and one recorded (fake, instant) run; returns its run id."""
    (tmp / "conf").mkdir()
    for name in ("config.yaml", "defaults.yaml"):
        shutil.copy(ROOT / "conf" / name, tmp / "conf" / name)
    for d in ("stage", "logger", "launcher"):
        shutil.copytree(ROOT / "conf" / d, tmp / "conf" / d)
    (tmp / "conf" / "paper").mkdir()
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    subprocess.run(["git", "init", "-q"], cwd=tmp, check=True)
    subprocess.run([*REPRO, "new", "toy"], cwd=tmp, check=True, capture_output=True)
    code = (
        "from pathlib import Path; from repro.records import create_run; "
        "r = create_run(Path('runs'), 'toy', 'data'); r.finish(None, 'failed'); print(r.id)"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp, check=True, capture_output=True, text=True
    ).stdout.strip()


def time_cmd(cmd: list[str], cwd: Path, repeats: int, setup=None) -> list[float]:
    out = []
    for i in range(repeats):
        if setup:
            setup(i)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.strip()}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        run_id = make_project(tmp)
        cases = {
            'python -c "import torch"': ([sys.executable, "-c", "import torch"], None),
            "repro --help": ([*REPRO, "--help"], None),
            "repro status": ([*REPRO, "status", "--paper", "toy"], None),
            "repro log": ([*REPRO, "log"], None),
            "repro show <id>": ([*REPRO, "show", run_id], None),
            "repro new <paper>": (None, None),
        }
        rows = []
        for name, (cmd, _) in cases.items():
            if name == "repro new <paper>":
                times = []
                for i in range(args.repeats):
                    t0 = time.perf_counter()
                    subprocess.run(
                        [*REPRO, "new", f"bench{i}"], cwd=tmp, check=True, capture_output=True
                    )
                    times.append(time.perf_counter() - t0)
            else:
                time_cmd(cmd, tmp, 1)  # warm the file cache
                times = time_cmd(cmd, tmp, args.repeats)
            rows.append((name, statistics.median(times), min(times)))
    torch_med = rows[0][1]
    print(
        f"CLI start-up, median of {args.repeats} fresh processes (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']})"
    )
    print(
        f"{'command':28s} {'median s':>9s} {'min s':>7s} {'vs import torch':>16s}  target < 0.5 s"
    )
    for name, med, mn in rows:
        verdict = "" if name.startswith("python") else ("ok" if med < 0.5 else "MISSED")
        print(f"{name:28s} {med:9.3f} {mn:7.3f} {med / torch_med:15.2f}x  {verdict}")


if __name__ == "__main__":
    main()
