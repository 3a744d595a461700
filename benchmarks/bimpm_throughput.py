"""Training throughput and peak memory of BiMPM's matching layer: ours vs an l-fold-copy baseline.

The baseline builds l copies of the hidden states before every multi-perspective cosine (as
galsang/BIMPM-pytorch does with torch.stack); everything else in the model is identical. Each
implementation lives in its own worker subprocess (so that peak RSS, ru_maxrss, belongs to it
alone), and the two take turns: every round times a few fast steps and a baseline step, in
alternating order. A 2-core VM's speed drifts by +-30% over a minute; interleaving exposes both
implementations to the same drift, and the per-round ratio cancels most of it.

    python benchmarks/bimpm_throughput.py                  # both, paper sizes, 2 CPU threads
    python benchmarks/bimpm_throughput.py --rounds 11      # more rounds, steadier medians
    python benchmarks/bimpm_throughput.py --device cuda    # adds bf16 autocast throughput
    python benchmarks/bimpm_throughput.py --reuse-freed-memory   # glibc keeps freed memory

--reuse-freed-memory runs both workers with GLIBC_TUNABLES set so that glibc's malloc neither
hands big blocks to mmap nor trims the heap: freed tensors' pages are reused instead of being
returned to the OS and faulted in again, which is expensive on small VMs (PyTorch's CPU
tuning guide suggests jemalloc/tcmalloc for the same reason).
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
from papers.bimpm.model import MultiPerspectiveMatching, build_model, lengths_and_mask  # noqa: E402

EPS = 1e-8
# glibc malloc: serve blocks up to 1 GiB from the heap and never trim it (see the docstring).
REUSE_FREED_MEMORY = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824"


def naive_cosine(v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """f_m with l explicit copies, one strategy at a time: v1 (B, T, d), v2 (S, B, T, d),
    W (S, L, d) -> (S, B, T, L)."""
    out = []
    for v2_s, W_s in zip(v2, W, strict=True):
        L = W_s.size(0)
        a = torch.stack([v1] * L, dim=2) * W_s  # (B, T, L, d)
        b = torch.stack([v2_s] * L, dim=2) * W_s  # (B, T, L, d)
        out.append(F.cosine_similarity(a, b, dim=-1, eps=EPS))  # (B, T, L)
    return torch.stack(out)


def naive_max_cosine(
    v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor, mask2: torch.Tensor
) -> torch.Tensor:
    """Max-pooling matching with l explicit copies: (B, Ti, d), (B, Tj, d) -> (B, Ti, L)."""
    L = W.size(0)
    a = torch.stack([v1] * L, dim=1) * W[None, :, None, :]  # (B, L, Ti, d)
    b = torch.stack([v2] * L, dim=1) * W[None, :, None, :]  # (B, L, Tj, d)
    num = torch.matmul(a, b.transpose(2, 3))  # (B, L, Ti, Tj)
    den = a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True).transpose(2, 3)
    cos = (num / den.clamp_min(EPS)).permute(0, 2, 1, 3)  # (B, Ti, L, Tj)
    return cos.masked_fill(~mask2[:, None, None, :], float("-inf")).amax(dim=-1)  # (B, Ti, L)


class NaiveMatching(MultiPerspectiveMatching):
    """The same matching layer with l-fold-copy cosines."""

    cosine = staticmethod(naive_cosine)
    max_cosine = staticmethod(naive_max_cosine)


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


class Worker:
    """Holds one implementation's model, optimizer and batches; times training steps."""

    def __init__(self, args):
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        self.device = device = args.device
        model = build_model({}, vocab_size=args.vocab, num_chars=args.num_chars, num_classes=2)
        if args.impl == "naive":
            naive = NaiveMatching(model.cfg)
            naive.load_state_dict(model.matching.state_dict())
            model.matching = naive
        self.model = model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=1e-3)
        g = torch.Generator().manual_seed(1)
        self.batches = [make_batch(args, g, device) for _ in range(4)]
        self.i = 0
        self.rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def steps(self, n: int, autocast: bool = False) -> list[tuple[float, float]]:
        """Run n training steps; return (wall s, process CPU s) for each."""
        out = []
        for _ in range(n):
            pw, pc, qw, qc, y = self.batches[self.i % len(self.batches)]
            self.i += 1
            self.sync()
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.autocast(self.device, dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(self.model(pw, pc, qw, qc), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sync()
            out.append((time.perf_counter() - t0, time.process_time() - c0))
        return out

    def layer(self, n: int) -> list[tuple[float, float]]:
        """Time the matching layer alone (forward + backward) on one batch's context states:
        the part the two implementations differ in, without the LSTMs they share."""
        pw, pc, qw, qc, _ = self.batches[0]
        m = self.model
        with torch.no_grad():
            len_p, mask_p = lengths_and_mask(pw)
            len_q, mask_q = lengths_and_mask(qw)
            h_p, h_q = m.context(*m.word(pw, pc, qw, qc), len_p, len_q)
        h_p, h_q = h_p.requires_grad_(), h_q.requires_grad_()
        out = []
        for _ in range(n):
            self.sync()
            t0, c0 = time.perf_counter(), time.process_time()
            m_p, m_q = m.matching(h_p, h_q, len_p, len_q, mask_p, mask_q)
            (m_p.sum() + m_q.sum()).backward()
            self.sync()
            out.append((time.perf_counter() - t0, time.process_time() - c0))
        return out

    def summary(self) -> dict:
        out = {
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mb": self.rss_before_mb,
        }
        if self.device == "cuda":
            out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out


def serve(args) -> None:
    """Worker loop: `steps N`, `bf16 N`, `layer N` (answered with JSON times), `summary`, `exit`."""
    worker = Worker(args)
    worker.steps(args.warmup)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd in ("steps", "bf16"):
            print(json.dumps(worker.steps(int(rest[0]), autocast=cmd == "bf16")), flush=True)
        elif cmd == "layer":
            print(json.dumps(worker.layer(int(rest[0]))), flush=True)
        elif cmd == "summary":
            print(json.dumps(worker.summary()), flush=True)
        elif cmd == "exit":
            return


class Client:
    """The driver's handle on one worker subprocess."""

    def __init__(self, impl: str, args):
        cmd = [sys.executable, __file__, "--worker", impl]
        for name in ("warmup", "batch", "device", "threads", "vocab", "num_chars", "max_chars"):
            cmd += ["--" + name.replace("_", "-"), str(getattr(args, name))]
        env = dict(os.environ)
        if args.reuse_freed_memory:
            env["GLIBC_TUNABLES"] = REUSE_FREED_MEMORY
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.impl = impl
        self.times: list[tuple[float, float]] = []

    def ask(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read()

    def read(self):
        reply = self.proc.stdout.readline()
        if not reply:
            raise SystemExit(f"benchmark worker {self.impl!r} died (see its traceback above)")
        return reply.strip() if reply.startswith("ready") else json.loads(reply)

    def close(self) -> None:
        self.proc.stdin.write("exit\n")
        self.proc.stdin.close()
        self.proc.wait()


def median_rate(batch: int, times: list[tuple[float, float]], which: int = 0) -> float:
    return batch / statistics.median(t[which] for t in times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--worker", choices=["fast", "naive"], help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=7, help="rounds of interleaved timing")
    ap.add_argument("--fast-steps", type=int, default=2, help="timed fast steps per round")
    ap.add_argument("--naive-steps", type=int, default=1, help="timed baseline steps per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per worker")
    ap.add_argument("--batch", type=int, default=64, help="pairs per batch")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--vocab", type=int, default=5000)
    ap.add_argument("--num-chars", type=int, default=100)
    ap.add_argument("--max-chars", type=int, default=10, help="characters per word, at most")
    ap.add_argument(
        "--reuse-freed-memory",
        action="store_true",
        help="run both workers with glibc malloc keeping freed memory (GLIBC_TUNABLES)",
    )
    args = ap.parse_args()
    if args.worker:
        args.impl = args.worker
        serve(args)
        return
    if min(args.rounds, args.fast_steps, args.naive_steps) < 1:
        ap.error("--rounds, --fast-steps and --naive-steps must be at least 1")
    if args.rounds * args.naive_steps < 5:
        print("warning: fewer than 5 timed baseline steps; medians will be rough", file=sys.stderr)

    load_before = os.getloadavg()[0]  # other processes on the machine skew pairs/s
    fast, naive = Client("fast", args), Client("naive", args)
    for c in (fast, naive):
        c.read()  # "ready": model built and warmed up
    ratios = []  # per round: fast pairs/s over baseline pairs/s, timed back to back
    for r in range(args.rounds):
        order = [(fast, args.fast_steps), (naive, args.naive_steps)]
        this_round = {}
        for client, n in order if r % 2 == 0 else order[::-1]:
            this_round[client.impl] = client.ask(f"steps {n}")
            client.times += this_round[client.impl]
        ratios.append(median_rate(1, this_round["fast"]) / median_rate(1, this_round["naive"]))
        print(f"round {r + 1}/{args.rounds}: fast/naive {ratios[-1]:.2f}x", file=sys.stderr)
    layer = {"fast": [], "naive": []}  # the matching layer alone, also interleaved
    for r in range(args.rounds):
        for client in (fast, naive) if r % 2 == 0 else (naive, fast):
            layer[client.impl] += client.ask("layer 1")
    results = {}
    for c in (fast, naive):
        r = c.ask("summary")
        r["pairs_per_s"] = median_rate(args.batch, c.times)
        # CPU seconds of this process: steadier than wall time when other jobs share the cores.
        r["pairs_per_cpu_s"] = median_rate(args.batch, c.times, which=1)
        if args.device == "cuda":
            r["bf16_pairs_per_s"] = median_rate(
                args.batch, c.ask(f"bf16 {max(5, args.fast_steps)}")
            )
        r["steps"] = len(c.times)
        results[c.impl] = r
        c.close()

    fast, naive = results["fast"], results["naive"]
    print(
        f"device={args.device} threads={args.threads} batch={args.batch} rounds={args.rounds} "
        f"timed steps fast/naive={fast['steps']}/{naive['steps']} warmup={args.warmup} "
        f"load average before/after={load_before:.2f}/{os.getloadavg()[0]:.2f} "
        f"malloc={'reuse freed memory' if args.reuse_freed_memory else 'default'}"
    )
    header = f"{'impl':<6} {'pairs/s':>9} {'peak RSS MB':>12} {'RSS delta MB':>13}"
    header += f" {'speed x':>8} {'memory x':>9} {'pairs/CPU-s':>12} {'CPU speed x':>12}"
    cuda = args.device == "cuda"
    if cuda:
        header += f" {'peak CUDA MB':>13} {'bf16 pairs/s':>13}"
    print(header)
    for name, r in (("fast", fast), ("naive", naive)):
        delta = r["peak_rss_mb"] - r["rss_before_mb"]
        line = f"{name:<6} {r['pairs_per_s']:>9.1f} {r['peak_rss_mb']:>12.0f} {delta:>13.0f}"
        speed = r["pairs_per_s"] / naive["pairs_per_s"]
        mem = r["peak_rss_mb"] / naive["peak_rss_mb"]
        cpu_speed = r["pairs_per_cpu_s"] / naive["pairs_per_cpu_s"]
        line += f" {speed:>8.2f} {mem:>9.2f} {r['pairs_per_cpu_s']:>12.1f} {cpu_speed:>12.2f}"
        if cuda:
            line += f" {r['peak_cuda_mb']:>13.0f} {r['bf16_pairs_per_s']:>13.1f}"
        print(line)
    layer_ms = {k: 1000 * statistics.median(t[0] for t in v) for k, v in layer.items()}
    step_ms = {k: 1000 * args.batch / r["pairs_per_s"] for k, r in results.items()}
    # What both share (LSTMs, embeddings, prediction, optimizer) ~ a fast step minus its
    # matching layer; even a free matching layer could not beat (shared + naive) / shared.
    shared_ms = step_ms["fast"] - layer_ms["fast"]
    print(
        f"matching layer alone (forward + backward, median of {args.rounds}): "
        f"fast {layer_ms['fast']:.0f} ms, naive {layer_ms['naive']:.0f} ms "
        f"({layer_ms['naive'] / layer_ms['fast']:.2f}x); whole step: fast {step_ms['fast']:.0f} "
        f"ms, naive {step_ms['naive']:.0f} ms; the rest of the step, which both share, is about "
        f"{shared_ms:.0f} ms, so even a free matching layer would give at most "
        f"{step_ms['naive'] / max(shared_ms, 1e-9):.1f}x"
    )
    fast_delta = fast["peak_rss_mb"] - fast["rss_before_mb"]
    naive_delta = naive["peak_rss_mb"] - naive["rss_before_mb"]
    print(
        f"fast/naive: speed {fast['pairs_per_s'] / naive['pairs_per_s']:.2f}x "
        f"(per-round ratio median {statistics.median(ratios):.2f}x, "
        f"range {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} rounds), "
        f"peak RSS {fast['peak_rss_mb'] / naive['peak_rss_mb']:.2f}x, "
        f"RSS delta during training {fast_delta / max(naive_delta, 1e-9):.2f}x"
    )


if __name__ == "__main__":
    main()
