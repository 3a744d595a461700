"""Edit -> verdict: the cold CLI against the warm worker (`repro dev`), shapes and overfit.

In a throwaway copy of the project (the real papers/<paper>/model.py is never touched), each
round appends a harmless comment to model.py (a new fingerprint: shapes and overfit turn STALE)
and times, in the same run and alternating which goes first:
  cold   `repro stage <stage> --cold`    a fresh process: imports, data, gate, record
  warm   `repro stage <stage>`           the same command, handed to the running worker
  watch  `repro dev --watch`             no command at all: edit -> the verdict line printed
For overfit the stale shapes runs first in every path (the progression rule). Each time runs
until the command exits (verdict and status printed), or for --watch until the verdict line
appears; the --watch rounds alternate with cold commands on a second copy (the watcher would
see edits to its own). Also printed: the worker's set-up time and its memory run after run.
Targets (issue 12): warm shapes p50 < 1 s and >= 5x faster than cold; warm overfit faster
than cold by at least the worker's set-up time. OMP_WAIT_POLICY stays as the shell has it
unless --omp-wait-policy says otherwise; the figures depend on it (README, warm iteration).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPRO = [sys.executable, "-m", "repro"]
sys.path.insert(0, str(ROOT))

from repro.dev.protocol import Channel, short_address, socket_path  # noqa: E402
from repro.project import Project  # noqa: E402
from repro.records import list_runs  # noqa: E402


def run_ids(project: Project) -> set[str]:
    return {r.id for r in list_runs(project.runs_dir)}


def in_runs(project: Project, before: set[str]) -> float:
    """Seconds spent inside the runs recorded since `before` (record.json duration_s: from the
    run's creation to its verdict, gate included): the part the worker cannot make faster."""
    return sum(r.record.duration_s or 0 for r in list_runs(project.runs_dir) if r.id not in before)


def copy_project(source: Path, paper: str, dest: Path) -> Project:
    """conf/, papers/<paper>/ and pyproject.toml, committed to a fresh git repository."""
    shutil.copytree(source / "conf", dest / "conf")
    ignore = shutil.ignore_patterns("__pycache__", ".cache")
    shutil.copytree(source / "papers" / paper, dest / "papers" / paper, ignore=ignore)
    if (source / "papers" / "__init__.py").exists():
        shutil.copy(source / "papers" / "__init__.py", dest / "papers" / "__init__.py")
    shutil.copy(source / "pyproject.toml", dest / "pyproject.toml")
    (dest / ".gitignore").write_text("runs/\n.cache/\n__pycache__/\nnotes/\n")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "benchmark copy"], cwd=dest, check=True)
    return Project(dest)


def repro(project: Project, *args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([*REPRO, *args], cwd=project.root, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"repro {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return seconds


class Worker:
    """`repro dev ARGS`, its output read line by line with the time each line arrived."""

    def __init__(self, project: Project, paper: str, *args: str):
        self.project, self.paper = project, paper
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [*REPRO, "dev", "--paper", paper, *args],
            cwd=project.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"repro dev exited: {self.text()}")
            try:
                self.ping()
                break
            except OSError:
                time.sleep(0.1)
        self.setup_s = time.perf_counter() - t0

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.perf_counter(), line))

    def text(self) -> str:
        return "".join(line for _, line in self.lines)

    def ping(self) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            with short_address(socket_path(self.project, self.paper)) as address:
                s.connect(address)
            channel = Channel(s)
            channel.send({"op": "ping"})
            return channel.recv()[0]

    def first_line_after(self, t0: float, text: str, timeout: float = 600) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for t, line in list(self.lines):
                if t >= t0 and text in line:
                    return t
            time.sleep(0.005)
        raise SystemExit(f"no {text!r} within {timeout} s:\n{self.text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def edit(model: Path, original: str, tag: str) -> float:
    """A harmless change (a comment), written the way an editor saves; returns when."""
    model.write_text(original + f"\n# warm-iteration benchmark edit {tag}\n")
    return time.perf_counter()


def client_rounds(project, paper, model, original, worker, stages, repeats):
    """{(path, stage): [seconds]} for cold and warm `repro stage`, alternating which goes first,
    and the seconds inside the recorded runs."""
    times: dict[tuple[str, str], list[float]] = {}
    inside: dict[tuple[str, str], list[float]] = {}
    rss = [worker.ping()["rss_mb"]]
    for i in range(repeats):
        for stage in stages:
            order = ("cold", "warm") if i % 2 == 0 else ("warm", "cold")
            for path in order:
                before = run_ids(project)
                t0 = edit(model, original, f"{path}-{stage}-{i}")
                extra = ["--cold"] if path == "cold" else []
                repro(project, "stage", stage, "--paper", paper, *extra)
                times.setdefault((path, stage), []).append(time.perf_counter() - t0)
                inside.setdefault((path, stage), []).append(in_runs(project, before))
                if path == "warm":
                    rss.append(worker.ping()["rss_mb"])
    return times, inside, rss


def watch_rounds(project, cold_project, paper, stages, repeats):
    """{("watch", stage) / ("cold", stage): [seconds]}: edit -> the stage's verdict line in the
    watching worker's output, interleaved with cold commands on a second copy of the project
    (whose edits that worker does not see), so both meet the same machine load."""
    worker = Worker(project, paper, "--watch", *[a for s in stages for a in ("--stage", s)])
    model, cold_model = (p.paper_dir(paper) / "model.py" for p in (project, cold_project))
    original, cold_original = model.read_text(), cold_model.read_text()
    times: dict[tuple[str, str], list[float]] = {}
    try:
        time.sleep(0.5)
        for i in range(repeats):
            for path in ("watch", "cold") if i % 2 == 0 else ("cold", "watch"):
                if path == "cold":
                    for stage in stages:
                        t0 = edit(cold_model, cold_original, f"cold-{stage}-{i}")
                        repro(cold_project, "stage", stage, "--paper", paper, "--cold")
                        times.setdefault(("cold", stage), []).append(time.perf_counter() - t0)
                    continue
                t0 = edit(model, original, f"watch-{i}")
                for stage in stages:
                    t = worker.first_line_after(t0, f"{stage}: PASS")
                    times.setdefault(("watch", stage), []).append(t - t0)
                worker.first_line_after(t0, "exited 0")  # the child is done: next edit
    finally:
        worker.stop()
        model.write_text(original)
        cold_model.write_text(cold_original)
    return times


def report(client, inside, watch, setup_s, rss, repeats, stages) -> None:
    def cell(xs):
        return f"{statistics.median(xs):6.2f} ({min(xs):.2f}-{max(xs):.2f})"

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nedit -> verdict in seconds, median of {repeats} (min-max); {os.cpu_count()} CPUs,")
    print(
        f"load average {load} (1, 5, 15 min); OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    print(f"{'':26s} {'cold CLI':>20s} {'warm worker':>20s} {'speed-up':>9s} {'saved':>7s}")
    rows = [("repro stage", client, "warm")] + (
        [("repro dev --watch", watch, "watch")] if watch else []
    )
    gains = {}
    for how, times, key in rows:
        for s in stages:
            c, w = times[("cold", s)], times[(key, s)]
            cm, wm = statistics.median(c), statistics.median(w)
            gains[(how, s)] = (cm, wm)
            print(
                f"{how + ' ' + s:26s} {cell(c):>20s} {cell(w):>20s} {cm / wm:8.1f}x {cm - wm:6.2f}"
            )
    for s in stages:
        c, w = statistics.median(inside[("cold", s)]), statistics.median(inside[("warm", s)])
        print(
            f"repro stage {s}: {c:.2f} s cold / {w:.2f} s warm inside the recorded runs (create -> "
            f"verdict, gate included), {statistics.median(client[('cold', s)]) - c:.2f} s / "
            f"{statistics.median(client[('warm', s)]) - w:.2f} s outside them"
        )
    print(f"worker set-up (paid once): {setup_s:.2f} s")
    print(
        f"worker RSS: {rss[0]:.1f} MB after start, {rss[-1]:.1f} MB after {len(rss) - 1} warm runs "
        f"({rss[-1] - rss[0]:+.1f} MB; max {max(rss):.1f})"
    )
    for (how, s), (cm, wm) in gains.items():
        if s == "shapes":
            print(
                f"target {how} shapes p50 < 1 s: {'met' if wm < 1 else 'MISSED'} ({wm:.2f} s); "
                f">= 5x faster than cold: {'met' if cm / wm >= 5 else 'MISSED'} ({cm / wm:.1f}x)"
            )
        if s == "overfit":
            print(
                f"target {how} overfit faster than cold by >= the set-up ({setup_s:.2f} s): "
                f"{'met' if cm - wm >= setup_s else 'MISSED'} ({cm - wm:.2f} s faster)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--paper", default="bimpm")
    ap.add_argument("--source", type=Path, default=ROOT, help="the project to copy")
    ap.add_argument("--stages", nargs="+", default=["shapes", "overfit"])
    ap.add_argument("--no-watch", action="store_true", help="skip the --watch rounds")
    ap.add_argument(
        "--omp-wait-policy",
        choices=["inherit", "passive", "active"],
        default="inherit",
        help="OMP_WAIT_POLICY for every command timed: inherit (default) leaves it as this "
        "shell has it, as a user's commands get it (unset: libgomp spins a while, then sleeps); "
        "passive makes 2-thread runs of small ops much slower (every parallel op wakes a thread)",
    )
    args = ap.parse_args()
    if args.omp_wait_policy != "inherit":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    os.environ.setdefault("COLUMNS", "120")
    with tempfile.TemporaryDirectory(prefix="warm-iteration-") as d:
        copies = [copy_project(args.source, args.paper, Path(d) / n) for n in ("a", "b")]
        print(f"priming: data, shapes, overfit pass cold in {d}/a and {d}/b")
        for project in copies if not args.no_watch else copies[:1]:
            repro(project, "stage", "overfit", "--paper", args.paper, "--cold")
        project = copies[0]
        model = project.paper_dir(args.paper) / "model.py"
        original = model.read_text()
        worker = Worker(project, args.paper)
        try:
            client, inside, rss = client_rounds(
                project, args.paper, model, original, worker, args.stages, args.repeats
            )
        finally:
            worker.stop()
            model.write_text(original)  # restored, even in the throwaway copy
        watch = {}
        if not args.no_watch:
            watch = watch_rounds(project, copies[1], args.paper, args.stages, args.repeats)
        report(client, inside, watch, worker.setup_s, rss, args.repeats, args.stages)


if __name__ == "__main__":
    main()
