"""Benchmark repro.data.glove.load_glove against gensim on a ~1 GB synthetic GloVe file.

    python benchmarks/glove_load.py [--path /tmp/glove_bench_300d.txt] [--gb 1.0] [--vocab 20000]
                                    [--runs 3] [--gensim-runs 1] [--limit N]

Writes the file once (reused when present): random words, 300 numbers each, no header. The
vocabulary is `--vocab` words present in the file, spread over it. Reports MB/s for our loader
(no cache) and for gensim's KeyedVectors.load_word2vec_format(binary=False, no_header=True),
which parses every line, and the time of a cached reload. `--limit N`: both read only the first
N lines (a copy of them), for when a full gensim pass would take too long. The OS page cache is
warm after the first pass: these are parse speeds, not disk speeds.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

DIM = 300


def make_file(path: Path, gb: float, seed: int = 0) -> int:
    """Write ~gb GB of GloVe lines; returns the number of lines. Rows come from a pool of 2000
    random vectors (formatting 1 GB of fresh floats in Python would dominate the setup)."""
    rng = random.Random(seed)
    pool = [" ".join(f"{rng.gauss(0, 0.4):.6f}" for _ in range(DIM)) for _ in range(2000)]
    target = int(gb * 1e9)
    n, written = 0, 0
    tmp = path.with_suffix(".part")
    with open(tmp, "w", encoding="utf-8") as fh:
        while written < target:
            line = f"w{n}x{rng.randrange(10**6)} {pool[rng.randrange(len(pool))]}\n"
            fh.write(line)
            written += len(line)
            n += 1
    tmp.replace(path)
    return n


def words_of(path: Path, limit: int | None) -> list[str]:
    out = []
    with open(path, "rb") as fh:
        for i, line in enumerate(fh):
            if limit is not None and i >= limit:
                break
            out.append(line[: line.find(b" ")].decode())
    return out


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", type=Path, default=Path("/tmp/glove_bench_300d.txt"))
    ap.add_argument("--gb", type=float, default=1.0, help="size of the generated file")
    ap.add_argument("--vocab", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3, help="runs of our loader (median reported)")
    ap.add_argument("--gensim-runs", type=int, default=1, help="0 skips gensim")
    ap.add_argument("--limit", type=int, default=None, help="read only the first N lines (both)")
    args = ap.parse_args()

    from repro.data.glove import load_glove

    if not args.path.is_file():
        t = time.perf_counter()
        n = make_file(args.path, args.gb)
        print(f"wrote {args.path}: {n} lines in {time.perf_counter() - t:.1f} s")
    work = tempfile.mkdtemp(prefix="glove_bench_")
    path = args.path
    if args.limit is not None:
        path = Path(work) / f"first{args.limit}.txt"
        with open(args.path, "rb") as src, open(path, "wb") as dst:
            for i, line in enumerate(src):
                if i >= args.limit:
                    break
                dst.write(line)
    size_mb = path.stat().st_size / 1e6
    words = words_of(path, None)
    vocab = random.Random(1).sample(words, min(args.vocab, len(words)))
    print(
        f"file {path}: {size_mb:.0f} MB, {len(words)} lines, {DIM}-d; vocabulary {len(vocab)} words"
    )

    ours = []
    for _ in range(args.runs):
        ours.append(timed(lambda: load_glove(path, vocab, DIM, cache_dir=None, progress=False)))
    wv = load_glove(path, vocab, DIM, cache_dir=None, progress=False)
    print(
        f"ours   : median {statistics.median(ours):.2f} s over {len(ours)} runs "
        f"({size_mb / statistics.median(ours):.0f} MB/s), coverage {wv.coverage:.3f}; runs {[round(x, 2) for x in ours]}"
    )

    cache = Path(work) / "cache"
    load_glove(path, vocab, DIM, cache_dir=cache, progress=False)  # writes the cache
    cached = [
        timed(lambda: load_glove(path, vocab, DIM, cache_dir=cache, progress=False))
        for _ in range(3)
    ]
    print(f"cached : median {statistics.median(cached):.3f} s over 3 reloads")

    if args.gensim_runs:
        from gensim.models import KeyedVectors

        gs = [
            timed(
                lambda: KeyedVectors.load_word2vec_format(str(path), binary=False, no_header=True)
            )
            for _ in range(args.gensim_runs)
        ]
        print(
            f"gensim : median {statistics.median(gs):.2f} s over {len(gs)} runs "
            f"({size_mb / statistics.median(gs):.0f} MB/s; loads every word, not only the vocabulary)"
        )
        print(f"speed-up ours vs gensim: {statistics.median(gs) / statistics.median(ours):.1f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
