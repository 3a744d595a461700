"""Training's thread count on a quiet and on a loaded machine: BiMPM steps, 1 thread vs the count
training chooses (repro.train.threads: one per usable CPU), OpenMP's wait policy as the shell has
it and PASSIVE, with and without CPU-bound competitors.

    python benchmarks/threads_contention.py [--rounds 3] [--steps 20] [--competitors 1]
                                            [--max-s 60]

Each measurement is a fresh process (OMP_NUM_THREADS and OMP_WAIT_POLICY are read when OpenMP
starts) that builds BiMPM on its shipped sample with repro.lab and times `--steps` training steps
(forward, backward, Adam) on the training loader's batches after 3 warm-up steps, stopping early
after --max-s seconds. "loaded" runs `--competitors` busy loops (`while True: pass`, one CPU
each) beside it. Rounds interleave every configuration; printed: median and p90 step time over
all rounds' steps, and the slowest step. Issue 21 saw 0.16-0.19 s steps become 0.42-19 s with
one other job on 2 cores, OMP_WAIT_POLICY unset.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(steps: int, max_s: float) -> None:
    """In the measured process: BiMPM on the sample, `steps` timed training steps."""
    import torch
    from rich.console import Console

    from repro import lab
    from repro.project import Project
    from repro.train.threads import apply

    s = lab.open("bimpm", project=Project(ROOT), console=Console(quiet=True))
    apply()  # what training does: OMP_NUM_THREADS if set, else one thread per usable CPU
    model = s.model
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = iter(s.datamodule.train_dataloader())
    times: list[float] = []
    t_start = time.perf_counter()
    for i in range(steps + 3):
        batch = next(batches)
        t0 = time.perf_counter()
        logits = model(**{k: v for k, v in batch.items() if k != "label"})
        loss = loss_fn(logits, batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t0)
        if time.perf_counter() - t_start > max_s and times:
            break
    print(json.dumps({"threads": torch.get_num_threads(), "times": times}))


def measure(threads: int | None, policy: str | None, steps: int, max_s: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--child", "--steps", str(steps), "--max-s", str(max_s)]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--competitors", type=int, default=1)
    ap.add_argument("--max-s", type=float, default=60.0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.steps, a.max_s)

    sys.path.insert(0, str(ROOT))
    from repro.train.threads import usable_cpus

    chosen = usable_cpus()
    print(f"training's choice here: {chosen.threads} threads ({chosen.detail})")
    configs = {  # name -> (OMP_NUM_THREADS, OMP_WAIT_POLICY); None: as the shell has it (unset)
        f"{chosen.threads} threads": (None, None),
        f"{chosen.threads} threads, PASSIVE": (None, "PASSIVE"),
        "1 thread": (1, None),
        "1 thread, PASSIVE": (1, "PASSIVE"),
    }
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(a.rounds):
        for load in ("quiet", "loaded"):
            loops = []
            if load == "loaded":
                loops = [
                    subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(a.competitors)
                ]
            try:
                names = list(configs) if r % 2 == 0 else list(reversed(configs))
                for name in names:
                    m = measure(*configs[name], a.steps, a.max_s)
                    results.setdefault((load, name), []).extend(m["times"])
                    print(
                        f"  round {r + 1} {load:<6} {name:<22} median "
                        f"{1000 * statistics.median(m['times']):7.0f} ms over {len(m['times'])} steps",
                        flush=True,
                    )
            finally:
                for p in loops:
                    p.kill()
                    p.wait()
    print(
        f"\nBiMPM sample, batch 32, one training step (forward, backward, Adam); "
        f"{a.rounds} rounds x up to {a.steps} steps; loaded: {a.competitors} busy loop(s)"
    )
    print(
        f"{'':<8} {'configuration':<22} {'median ms':>10} {'p90 ms':>10} {'max ms':>10} {'steps':>6}"
    )
    for (load, name), times in results.items():
        print(
            f"{load:<8} {name:<22} {1000 * statistics.median(times):10.0f} "
            f"{1000 * p90(times):10.0f} {1000 * max(times):10.0f} {len(times):6d}"
        )


if __name__ == "__main__":
    main()
