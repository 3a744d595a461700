"""CLI start-up: wall time of the commands that do not train, beside `python -c "import torch"`.

Each command runs in a fresh process, in a throwaway project (conf/ with a `repro new` paper and
one recorded run); we print the median and min over --repeats runs (default 7). With
`--before REV`, repro's code and conf/ as they are at git revision REV are timed too, each command
alternating between the two in the same run (a busy 2-core machine drifts: compare the columns).
Target (issue 10): every non-training command under 0.3 s here (the issue's bar), not slower than before.

    python benchmarks/cli_startup.py
    python benchmarks/cli_startup.py --before 039d4c6 --repeats 9
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {  # name -> repro arguments ("RUN": the recorded run's id; "NEW": a fresh paper name)
    "repro --help": ["--help"],
    "repro status": ["status", "--paper", "toy"],
    "repro log": ["log"],
    "repro show <id>": ["show", "RUN"],
    "repro new <paper>": ["new", "NEW"],
}


class Side:
    """One version of repro: where its package lives and a project made with its own conf/."""

    def __init__(self, name: str, code: Path, conf: Path, tmp: Path):
        self.name, self.code = name, code
        self.env = {**os.environ, "PYTHONPATH": str(code)}  # ahead of any installed repro
        self.project = tmp / f"project-{name}"
        self.project.mkdir()
        shutil.copytree(
            conf, self.project / "conf", ignore=shutil.ignore_patterns("paper", "__init__.py")
        )
        (self.project / "conf" / "paper").mkdir()
        shutil.copy(ROOT / "pyproject.toml", self.project / "pyproject.toml")
        subprocess.run(["git", "init", "-q"], cwd=self.project, check=True)
        self.run(["new", "toy"])
        code_line = (
            "from pathlib import Path; from repro.records import create_run; "
            "r = create_run(Path('runs'), 'toy', 'data'); r.finish(None, 'failed'); print(r.id)"
        )
        out = subprocess.run([sys.executable, "-c", code_line], cwd=self.project, env=self.env,
                             check=True, capture_output=True, text=True)  # fmt: skip
        self.run_id = out.stdout.strip()
        self.fresh = 0

    def run(self, args: list[str]) -> float:
        args = [self.run_id if a == "RUN" else a for a in args]
        if "NEW" in args:
            self.fresh += 1
            args = [f"bench{self.fresh}" if a == "NEW" else a for a in args]
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "repro", *args], cwd=self.project, env=self.env,
                           capture_output=True, text=True)  # fmt: skip
        took = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(
                f"{self.name}: repro {' '.join(args)} failed: {p.stderr.strip()[-500:]}"
            )
        return took


def extract(rev: str, dest: Path) -> tuple[Path, Path]:
    """repro/ and conf/ as they are at `rev` (git archive), under dest."""
    blob = subprocess.run(["git", "archive", "--format=tar", rev, "repro", "conf"], cwd=ROOT,
                          check=True, capture_output=True).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest, dest / "conf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--before", metavar="REV", help="also time repro as it is at this git revision")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sides = [Side("now", ROOT, ROOT / "conf", tmp)]
        if args.before:
            sides.append(Side("before", *extract(args.before, tmp / "before"), tmp))
        torch = [0.0] * args.repeats
        times = {(n, s.name): [] for n in COMMANDS for s in sides}
        for i in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import torch"], check=True)
            torch[i] = time.perf_counter() - t0
            for name, cmd in COMMANDS.items():
                for side in sides if i % 2 else sides[::-1]:  # alternate which goes first
                    times[name, side.name].append(side.run(cmd))
    report(times, sides, statistics.median(torch), args)


def report(times, sides, torch_med: float, args) -> None:
    print(
        f"CLI start-up, median of {args.repeats} fresh processes (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']});"
    )
    print(f'python -c "import torch": {torch_med:.3f} s')
    head = f"{'command':20s}" + "".join(f" {s.name + ' median':>13s} {'min':>6s}" for s in sides)
    print(head + ("  now/before" if len(sides) > 1 else "") + "  vs torch  target < 0.3 s")
    for name in COMMANDS:
        meds = [statistics.median(times[name, s.name]) for s in sides]
        row = f"{name:20s}" + "".join(
            f" {m:13.3f} {min(times[name, s.name]):6.3f}" for s, m in zip(sides, meds, strict=True)
        )
        if len(sides) > 1:
            row += f"  {meds[0] / meds[1]:10.2f}"
        print(row + f"  {meds[0] / torch_med:7.2f}x  {'ok' if meds[0] < 0.3 else 'MISSED'}")


if __name__ == "__main__":
    main()
