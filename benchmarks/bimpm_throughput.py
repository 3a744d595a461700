"""Training throughput and peak memory of BiMPM's matching layer: ours vs an l-fold-copy baseline.

The baseline builds l copies of the hidden states before every multi-perspective cosine (as
galsang/BIMPM-pytorch does with torch.stack); everything else in the model is identical. Each
implementation runs in its own subprocess so that peak RSS (ru_maxrss) belongs to it alone.

    python benchmarks/bimpm_throughput.py                  # both, paper sizes, 2 CPU threads
    python benchmarks/bimpm_throughput.py --impl fast      # one implementation, prints JSON
    python benchmarks/bimpm_throughput.py --device cuda    # adds bf16 autocast throughput
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from papers.bimpm.model import MultiPerspectiveMatching, build_model  # noqa: E402

EPS = 1e-8


def naive_cosine(v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """f_m with l explicit copies: (B, T, d), (B, T or 1, d) -> (B, T, L)."""
    L = W.size(0)
    v2 = v2.expand_as(v1)  # (B, T, d)
    v1 = torch.stack([v1] * L, dim=2) * W  # (B, T, L, d)
    v2 = torch.stack([v2] * L, dim=2) * W  # (B, T, L, d)
    return F.cosine_similarity(v1, v2, dim=-1, eps=EPS)  # (B, T, L)


def naive_cosine_pairwise(v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """f_m for all pairs with l explicit copies: (B, Ti, d), (B, Tj, d) -> (B, Ti, L, Tj)."""
    L = W.size(0)
    a = torch.stack([v1] * L, dim=1) * W[None, :, None, :]  # (B, L, Ti, d)
    b = torch.stack([v2] * L, dim=1) * W[None, :, None, :]  # (B, L, Tj, d)
    num = torch.matmul(a, b.transpose(2, 3))  # (B, L, Ti, Tj)
    den = a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True).transpose(2, 3)
    return (num / den.clamp_min(EPS)).permute(0, 2, 1, 3)  # (B, Ti, L, Tj)


class NaiveMatching(MultiPerspectiveMatching):
    """The same matching layer with l-fold-copy cosines."""

    cosine = staticmethod(naive_cosine)
    cosine_pairwise = staticmethod(naive_cosine_pairwise)


def make_batch(args, g: torch.Generator, device: str):
    """Random padded batch: 20-30 tokens per sentence, 1-max_chars characters per word."""

    def sentence():
        lengths = torch.randint(20, 31, (args.batch,), generator=g)  # (B,)
        T = int(lengths.max())
        words = torch.randint(1, args.vocab, (args.batch, T), generator=g)  # (B, T)
        words[torch.arange(T)[None] >= lengths[:, None]] = 0
        n_chars = torch.randint(1, args.max_chars + 1, (args.batch, T), generator=g)  # (B, T)
        chars = torch.randint(1, args.num_chars, (args.batch, T, args.max_chars), generator=g)
        chars[torch.arange(args.max_chars)[None, None] >= n_chars[..., None]] = 0
        chars[words == 0] = 0  # (B, T, W)
        return words.to(device), chars.to(device)

    (pw, pc), (qw, qc) = sentence(), sentence()
    y = torch.randint(0, 2, (args.batch,), generator=g).to(device)
    return pw, pc, qw, qc, y


def measure(args) -> dict:
    """Run warm-up + timed training steps for one implementation; return the numbers."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = args.device
    model = build_model({}, vocab_size=args.vocab, num_chars=args.num_chars, num_classes=2)
    if args.impl == "naive":
        naive = NaiveMatching(model.cfg)
        naive.load_state_dict(model.matching.state_dict())
        model.matching = naive
    model.to(device).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator().manual_seed(1)
    batches = [make_batch(args, g, device) for _ in range(4)]

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def run(autocast: bool) -> tuple[list[float], list[float]]:
        times, cpu_times = [], []
        for i in range(args.warmup + args.steps):
            pw, pc, qw, qc, y = batches[i % len(batches)]
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(model(pw, pc, qw, qc), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
                cpu_times.append(time.process_time() - c0)
        return times, cpu_times

    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = run(autocast=False)
    out = {
        "impl": args.impl,
        "pairs_per_s": args.batch / statistics.median(times),
        # CPU seconds of this process: steadier than wall time when other jobs share the cores.
        "pairs_per_cpu_s": args.batch / statistics.median(cpu_times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before_mb,
    }
    if device == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["bf16_pairs_per_s"] = args.batch / statistics.median(run(autocast=True)[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--impl", choices=["fast", "naive"], help="measure one (internal); default both"
    )
    ap.add_argument("--steps", type=int, default=8, help="timed steps for the fast matching")
    ap.add_argument("--naive-steps", type=int, default=5, help="timed steps for the baseline")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps")
    ap.add_argument("--batch", type=int, default=64, help="pairs per batch")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--vocab", type=int, default=5000)
    ap.add_argument("--num-chars", type=int, default=100)
    ap.add_argument("--max-chars", type=int, default=10, help="characters per word, at most")
    args = ap.parse_args()
    if min(args.steps, args.naive_steps) < 1:
        ap.error("--steps and --naive-steps must be at least 1")

    if args.impl:
        print(json.dumps(measure(args)))
        return

    load_before = os.getloadavg()[0]  # other processes on the machine skew pairs/s
    results = {}
    for impl, steps in (("fast", args.steps), ("naive", args.naive_steps)):
        cmd = [sys.executable, __file__, "--impl", impl, "--steps", str(steps)]
        for name in ("warmup", "batch", "device", "threads", "vocab", "num_chars", "max_chars"):
            cmd += ["--" + name.replace("_", "-"), str(getattr(args, name))]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[impl] = json.loads(proc.stdout.strip().splitlines()[-1])

    fast, naive = results["fast"], results["naive"]
    print(
        f"device={args.device} threads={args.threads} batch={args.batch} "
        f"steps fast/naive={args.steps}/{args.naive_steps} warmup={args.warmup} "
        f"load average before/after={load_before:.2f}/{os.getloadavg()[0]:.2f}"
    )
    header = f"{'impl':<6} {'pairs/s':>9} {'peak RSS MB':>12} {'RSS delta MB':>13}"
    header += f" {'speed x':>8} {'memory x':>9} {'pairs/CPU-s':>12} {'CPU speed x':>12}"
    cuda = args.device == "cuda"
    if cuda:
        header += f" {'peak CUDA MB':>13} {'bf16 pairs/s':>13}"
    print(header)
    for r in (fast, naive):
        delta = r["peak_rss_mb"] - r["rss_before_mb"]
        line = f"{r['impl']:<6} {r['pairs_per_s']:>9.1f} {r['peak_rss_mb']:>12.0f} {delta:>13.0f}"
        speed = r["pairs_per_s"] / naive["pairs_per_s"]
        mem = r["peak_rss_mb"] / naive["peak_rss_mb"]
        cpu_speed = r["pairs_per_cpu_s"] / naive["pairs_per_cpu_s"]
        line += f" {speed:>8.2f} {mem:>9.2f} {r['pairs_per_cpu_s']:>12.1f} {cpu_speed:>12.2f}"
        if cuda:
            line += f" {r['peak_cuda_mb']:>13.0f} {r['bf16_pairs_per_s']:>13.1f}"
        print(line)
    fast_delta = fast["peak_rss_mb"] - fast["rss_before_mb"]
    naive_delta = naive["peak_rss_mb"] - naive["rss_before_mb"]
    print(
        f"fast/naive: speed {fast['pairs_per_s'] / naive['pairs_per_s']:.2f}x, "
        f"peak RSS {fast['peak_rss_mb'] / naive['peak_rss_mb']:.2f}x, "
        f"RSS delta during training {fast_delta / max(naive_delta, 1e-9):.2f}x"
    )


if __name__ == "__main__":
    main()
