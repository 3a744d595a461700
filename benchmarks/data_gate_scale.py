"""The data gate at the paper's real size: its CPU and peak memory beside one plain build.

    python benchmarks/data_gate_scale.py [--sizes 10000 100000 400000] [--runs 3]
                                         [--vectors-mb 1500] [--dir /tmp/repro-data-gate-scale]
                                         [--before REV] [--keep]

Generates (once, reused from --dir when present) Quora-format data of each size with the
statistics of the authors' partition (bimpm-paper.md): a Zipfian 100k-word vocabulary, questions
of ~12 tokens (95th percentile ~25, max 146) ending in "?", tokens of ~4 characters, questions
reused across pairs (~1.5 pairs per question, as Quora's 537k questions in 404k pairs), ~37%
paraphrases in train and balanced dev/test of size/40 each (10,000 at 400k); and one 300-d
GloVe-format vectors file of --vectors-mb (covering ~90% of the vocabulary, frequent words first,
as GloVe is ordered), shared by every size as a user's one GloVe file is.

Then, per size and run, each in a fresh process with BiMPM on that data (data.dataset=quora,
300-d vectors), measured as the process and every process it starts (CPU: user + system from
wait4, children included; peak memory: the largest sum of the tree's resident sets, sampled every
20 ms, or the largest single process's peak if that is larger):
  plain       repro.lab.open: compose, build and set up the datamodule, first batch, model — one
              build as training needs it, on an empty preprocessing cache (its first run)
  gate        the data gate (repro.gates.data.run) on an empty cache: a first run
  gate warm   the data gate again, on the cache the first one wrote
  plain warm  repro.lab.open again, from that cache (what a training run pays)
Prints medians (min-max) per size, the gate/plain ratios (issue 21's targets: CPU <= 2x, peak
memory <= 1.5x of the plain build), and the growth exponent of each figure between sizes
(log ratio of CPU over log ratio of pairs; 1 is linear). Runs alternate which is measured first.
`--before REV` also measures the gate of another revision (its code from `git archive`) in the
same runs. OMP_WAIT_POLICY=PASSIVE is set for the children, as our other benchmarks do.
Nothing is written to the repository: caches go under --dir, which is removed unless --keep.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIM = 300
VOCAB = 100_000
ZIPF_S = 1.05  # word frequency ~ rank^-s (English text: s near 1)
REUSE = 0.5  # a question is an earlier one this often (~1.5 pairs per question, as Quora)
TRAIN_POSITIVE = 0.37  # Quora's paraphrase rate; dev and test are balanced (the partition)
COVERAGE = 0.9  # vocabulary words present in the vectors file (rare ones missing)
LETTERS = "etaoinshrdlcumwfgypbvkjxqz"


# ---- data ---------------------------------------------------------------------------------------
def vocabulary(seed: int) -> list[str]:
    """VOCAB distinct tokens by frequency rank: punctuation first, short words frequent, some
    capitalised or with digits (~90 distinct characters), lengths up to 37."""
    rng = random.Random(seed)
    words = ["?", "the", ",", "what", "is", "a", "how", "i", "to", "in", "do", "of", "are", "and"]
    words += ["can", "for", "you", "why", "best", "my", "it", "on", "does", "which", "'s", "("]
    seen = set(words)
    weights = [1 / (i + 1) ** 0.7 for i in range(len(LETTERS))]
    while len(words) < VOCAB:
        rank = len(words)
        # ~3 characters for frequent words, ~8 for rare ones; a rare very long one
        n = max(1, min(37, int(rng.gauss(2 + 1.1 * math.log10(rank + 1), 1.5))))
        if rng.random() < 0.0005:
            n = rng.randint(15, 37)
        w = "".join(rng.choices(LETTERS, weights, k=n))
        r = rng.random()
        if r < 0.12:
            w = w.capitalize()
        elif r < 0.15:
            w = w + str(rng.randrange(100))
        elif r < 0.16:
            w = w + rng.choice("-.'/&") + rng.choice(LETTERS)
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def make_data(out: Path, pairs: int, seed: int = 0) -> None:
    """train/dev/test.tsv of `pairs` pairs in the Quora partition's format."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = np.array(vocabulary(seed), dtype=object)
    cdf = np.cumsum(1 / np.arange(1, VOCAB + 1) ** ZIPF_S)
    cdf = cdf[:-1] / cdf[-1]  # searchsorted(cdf, u) is a rank drawn by Zipf's law
    n_eval = max(1, pairs // 40)
    sizes = {"train": pairs - 2 * n_eval, "dev": n_eval, "test": n_eval}

    def question(n: int) -> list[str]:
        ids = np.searchsorted(cdf, rng.random(n))
        ids[ids == 0] = 1  # "?" (rank 0) ends every question instead
        return [*words[ids], "?"]

    def length() -> int:  # median 10.4, mean ~12, 95th percentile ~25, max 146
        if rng.random() < 0.001:
            return int(rng.integers(40, 147))
        return int(min(146, max(2, round(rng.lognormal(math.log(10.4), 0.53)))))

    pool: list[list[str]] = []
    pairs_seen: set[tuple[str, str]] = set()  # the partition holds no pair twice
    out.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        positive = 0.5 if split != "train" else TRAIN_POSITIVE
        lines = []
        for i in range(n):
            if pool and rng.random() < REUSE:
                p = pool[int(rng.integers(len(pool)))]
            else:
                p = question(length() - 1)
                pool.append(p)
            label = int(rng.random() < positive)
            if label:  # a rewording: a few tokens replaced or dropped
                q = [
                    w if rng.random() > 0.25 else words[np.searchsorted(cdf, rng.random())]
                    for w in p
                ]
                q = [w for w in q if rng.random() > 0.1 or w == "?"] or ["?"]
            elif rng.random() < 0.5:  # the same topic, another question
                q = p[: max(1, len(p) // 3)] + question(length() - 1)
            elif rng.random() < REUSE:
                q = pool[int(rng.integers(len(pool)))]
            else:
                q = question(length() - 1)
                pool.append(q)
            p_text, q_text = " ".join(p), " ".join(q)
            while (p_text, q_text) in pairs_seen:
                q_text = " ".join(question(length() - 1))
            pairs_seen.add((p_text, q_text))
            lines.append(f"{label}\t{p_text}\t{q_text}\t{split}{i}\n")
        (out / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")


def make_vectors(path: Path, mb: float, seed: int = 0) -> None:
    """A GloVe-format 300-d file of ~mb MB: COVERAGE of the vocabulary by rank, filler words
    between (as GloVe 840B holds far more words than a dataset). Rows come from a pool of 2000
    random vectors (formatting a GB of fresh floats in Python would dominate the setup)."""
    rng = random.Random(seed)
    pool = [" ".join(f"{rng.gauss(0, 0.4):.6f}" for _ in range(DIM)) for _ in range(2000)]
    vocab = [w for i, w in enumerate(vocabulary(seed)) if i < 1000 or rng.random() < COVERAGE]
    line_bytes = len(pool[0]) + 10
    total = int(mb * 1e6 / line_bytes)
    filler_every = max(1, total // max(1, total - len(vocab)))
    tmp = path.with_suffix(".part")
    with open(tmp, "w", encoding="utf-8") as fh:
        v = 0
        for n in range(total):
            if v < len(vocab) and (n % filler_every or v < 1000):
                word = vocab[v]
                v += 1
            else:
                word = f"fill{n}x{rng.randrange(10**6)}"
            fh.write(f"{word} {pool[rng.randrange(len(pool))]}\n")
    tmp.replace(path)


# ---- one measured process -----------------------------------------------------------------------
def overrides(data_dir: Path, vectors: Path, cache: Path) -> list[str]:
    return [
        "data.dataset=quora",
        f"+data.quora_dir={data_dir}",
        f"data.vectors={vectors}",
        "data.word_dim=300",
        "model.word_dim=300",
        f"+data.cache_dir={cache}",
    ]


def child(kind: str, ov: list[str]) -> None:
    """In the measured process: one plain build (lab.open), or the data gate."""
    from rich.console import Console

    from repro.project import Project

    project = Project(Path(os.environ.get("BENCH_ROOT", ROOT)))
    console = Console(quiet=True)
    if kind == "plain":
        from repro import lab

        lab.open("bimpm", ov, project=project, console=console)
        print(json.dumps({"passed": None}))
        return
    from repro.config.compose import compose
    from repro.context import StageContext
    from repro.gates import data

    ctx = StageContext(project, "bimpm", compose(project, "bimpm", ov), console)
    verdict = data.run(ctx)
    failed = [c.name for c in verdict.checks if not c.passed]
    unmeasured = [c.name for c in verdict.checks if c.evidence.get("measured") is False]
    print(json.dumps({"passed": verdict.passed, "failed": failed, "not_measured": unmeasured}))


def _tree_rss(pid: int) -> int:
    """Resident bytes of pid and its descendants (from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return total


def measure(kind: str, ov: list[str], src: Path) -> dict:
    """CPU seconds (the process and its children), peak memory and wall time of one child."""
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONPATH": str(src),
        "BENCH_ROOT": str(src),
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--", *ov]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=src, env=env, stdout=out, stderr=err)
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_rss(proc.pid))
                done.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)  # usage: the child and its reaped children
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed ({proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    cpu = usage.ru_utime + usage.ru_stime
    peak_mb = max(peak, usage.ru_maxrss * 1024) / 2**20
    return {"cpu": cpu, "peak_mb": peak_mb, "wall": wall, **result}


# ---- the comparison -----------------------------------------------------------------------------
def before_tree(rev: str, dest: Path) -> Path:
    """The repository's code at `rev` (repro/, papers/, conf/, pyproject.toml) under dest."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", rev, "repro", "papers", "conf", "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # repro._conf is conf/ (pyproject's package-dir): under PYTHONPATH the installed checkout's
    # mapping would serve this checkout's defaults to the old code, so the old tree gets its own
    shutil.copytree(dest / "conf", dest / "repro" / "_conf", dirs_exist_ok=True)
    return dest


def med(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 400_000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--vectors-mb", type=float, default=1500)
    ap.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "repro-data-gate-scale"
    )
    ap.add_argument("--before", help="also measure the data gate of this git revision")
    ap.add_argument("--keep", action="store_true", help="keep --dir (data and vectors) afterwards")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.rest)

    a.dir.mkdir(parents=True, exist_ok=True)
    vectors = a.dir / f"vectors-{a.vectors_mb:g}mb.txt"
    if not vectors.is_file():
        t = time.perf_counter()
        make_vectors(vectors, a.vectors_mb)
        print(
            f"wrote {vectors} ({vectors.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s"
        )
    kinds = {"plain": ROOT, "gate": ROOT}
    if a.before:
        kinds["before"] = before_tree(
            a.before, Path(tempfile.mkdtemp(prefix="repro-before-")) / "src"
        )
    try:
        results: dict[int, dict[str, list[dict]]] = {}
        for n in a.sizes:
            data = a.dir / f"quora-{n}"
            if not (data / "test.tsv").is_file():
                t = time.perf_counter()
                make_data(data, n)
                print(f"wrote {data} in {time.perf_counter() - t:.0f} s")
            res = results[n] = {}
            for r in range(a.runs):
                order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
                for kind in order:
                    cache = a.dir / "cache"
                    shutil.rmtree(cache, ignore_errors=True)  # a first run: nothing cached
                    ov = overrides(data, vectors, cache)
                    src, child_kind = kinds[kind], ("plain" if kind == "plain" else "gate")
                    m = measure(child_kind, ov, src)
                    res.setdefault(kind, []).append(m)
                    if kind != "before":  # the same again on the cache the first run wrote
                        res.setdefault(f"{kind} warm", []).append(measure(child_kind, ov, src))
                    print(
                        f"  {n:>7} pairs run {r + 1}: {kind:<6} cpu {m['cpu']:6.1f} s, peak "
                        f"{m['peak_mb']:6.0f} MB, wall {m['wall']:6.1f} s"
                        + (f", failed {m['failed']}" if m.get("failed") else "")
                        + (f", not measured {m['not_measured']}" if m.get("not_measured") else ""),
                        flush=True,
                    )
        report(results, a)
    finally:
        if "before" in kinds:
            shutil.rmtree(kinds["before"].parent, ignore_errors=True)
        if not a.keep:
            shutil.rmtree(a.dir, ignore_errors=True)


def report(results: dict[int, dict[str, list[dict]]], a) -> None:
    print(
        f"\nmedian (min-max) of {a.runs} runs; CPU s = user + system of the process and its "
        "children; peak MB = largest sum of resident memory over the process tree"
    )
    print(
        f"{'pairs':>7} {'what':<11} {'CPU s':>22} {'peak MB':>22} {'wall s':>22}  x plain CPU / peak"
    )
    for n, res in results.items():
        base = res["plain"]
        cpu0 = statistics.median(m["cpu"] for m in base)
        mem0 = statistics.median(m["peak_mb"] for m in base)
        for kind, ms in res.items():
            cpu = statistics.median(m["cpu"] for m in ms)
            mem = statistics.median(m["peak_mb"] for m in ms)
            print(
                f"{n:>7} {kind:<11} {med([m['cpu'] for m in ms]):>22} "
                f"{med([m['peak_mb'] for m in ms]):>22} {med([m['wall'] for m in ms]):>22}  "
                f"{cpu / cpu0:4.2f}x / {mem / mem0:4.2f}x"
            )
    sizes = list(results)
    if len(sizes) > 1:
        print("\ngrowth exponent of CPU (peak memory) between sizes: d log(figure) / d log(pairs)")
        for kind in results[sizes[0]]:
            parts = []
            for n1, n2 in zip(sizes, sizes[1:], strict=False):
                c1, c2 = (statistics.median(m["cpu"] for m in results[n][kind]) for n in (n1, n2))
                m1, m2 = (
                    statistics.median(m["peak_mb"] for m in results[n][kind]) for n in (n1, n2)
                )
                k = math.log(n2 / n1)
                parts.append(
                    f"{n1}->{n2}: {math.log(c2 / c1) / k:.2f} ({math.log(m2 / m1) / k:.2f})"
                )
            print(f"  {kind:<11} " + ", ".join(parts))


if __name__ == "__main__":
    main()
