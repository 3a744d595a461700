"""Training throughput and peak memory of BiMPM under different implementations of its layers.

Implementations (--impls, and --before):
    fast    this checkout's default: f_m from fast_matching.py (hand-written backward passes),
            LSTMs from fast_recurrence.py (padded tensors)
    plain   this checkout with model.fast_matching=false: autograd through model.py's plain f_m
    packed  this checkout with model.fast_recurrence=false: model.py's LSTMs on packed sequences
    naive   this checkout with f_m built from l copies of the hidden states (as
            galsang/BIMPM-pytorch does with torch.stack)
    before  papers/bimpm as it is at git revision --before REF, with its own config: an A/B
            check that a change did not slow the fast path down
Every implementation builds the model from conf/paper/bimpm.yaml's `model:` section (of its own
tree) at paper sizes: the YAML's, with the paper's 300-d word vectors instead of the sample's
50-d; everything but the named switch is identical. Each implementation lives in its own worker
subprocess (so that peak RSS, ru_maxrss, belongs to it alone), and they take turns: every round
times a few steps of each, in alternating order. A 2-core VM's speed drifts by +-30% over a
minute; interleaving exposes all of them to the same drift, and the per-round ratios cancel most
of it.

    python benchmarks/bimpm_throughput.py                  # fast, plain, naive; paper sizes
    python benchmarks/bimpm_throughput.py --rounds 11      # more rounds, steadier medians
    python benchmarks/bimpm_throughput.py --before main    # adds main's code as "before"
    python benchmarks/bimpm_throughput.py --impls fast,packed    # only these two
    python benchmarks/bimpm_throughput.py --device cuda    # adds bf16 autocast throughput
    python benchmarks/bimpm_throughput.py --reuse-freed-memory   # glibc keeps freed memory

--reuse-freed-memory runs both workers with GLIBC_TUNABLES set so that glibc's malloc neither
hands big blocks to mmap nor trims the heap: freed tensors' pages are reused instead of being
returned to the OS and faulted in again, which is expensive on small VMs (PyTorch's CPU
tuning guide suggests jemalloc/tcmalloc for the same reason).
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Workers import papers.bimpm from this checkout; the "before" worker from the copy of another
# revision that the driver extracted for it (BIMPM_BENCHMARK_TREE, set for that worker only).
sys.path.insert(0, os.environ.get("BIMPM_BENCHMARK_TREE") or str(ROOT))
import papers.bimpm.model  # noqa: E402
from papers.bimpm.model import MultiPerspectiveMatching, build_model, lengths_and_mask  # noqa: E402

EPS = 1e-8
IMPLS = ("fast", "plain", "packed", "naive")  # --impls choices; "before" comes with --before
DEFAULT_IMPLS = ("fast", "plain", "naive")
# What each implementation changes in the paper's `model:` section.
SWITCHES = {"plain": {"fast_matching": False}, "packed": {"fast_recurrence": False}}
PAPER_WORD_DIM = 300  # paper, Word Representation Layer: 300-d GloVe (the sample's are 50-d)
# Pairs compared on the last lines, when both ran: (numerator, denominator) of the speed ratio.
PAIRS = (
    ("fast", "before"),
    ("fast", "plain"),
    ("fast", "packed"),
    ("fast", "naive"),
    ("plain", "naive"),
)
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


def model_config(impl: str):
    """The `model:` section of conf/paper/bimpm.yaml in the tree this worker imports, at paper
    sizes, with the implementation's switch; typed as repro types it when build_model's first
    parameter is annotated with MODEL_CONFIG, else a plain dict (revisions before issue 19)."""
    tree = Path(papers.bimpm.model.__file__).resolve().parents[2]
    paper = yaml.safe_load((tree / "conf" / "paper" / "bimpm.yaml").read_text())
    values = {**paper["model"], "word_dim": PAPER_WORD_DIM, **SWITCHES.get(impl, {})}
    schema = getattr(papers.bimpm.model, "MODEL_CONFIG", None)
    first = next(iter(inspect.signature(build_model).parameters.values()))
    if schema is not None and first.annotation in (schema, schema.__name__):
        from repro.config.typed import from_dict

        return from_dict(schema, values, "model")
    return values


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
        chars[words == 0] = 0  # (B, T, K)
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
        cfg = model_config(args.impl)  # "before": another revision's code and config
        model = build_model(cfg, vocab_size=args.vocab, num_chars=args.num_chars, num_classes=2)
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
        the part the implementations differ in, without the LSTMs they share."""
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
            "model_file": papers.bimpm.model.__file__,  # which tree this worker timed
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

    def __init__(self, impl: str, args, tree: str | None = None):
        cmd = [sys.executable, __file__, "--worker", impl]
        for name in ("warmup", "batch", "device", "threads", "vocab", "num_chars", "max_chars"):
            cmd += ["--" + name.replace("_", "-"), str(getattr(args, name))]
        env = dict(os.environ)
        env.pop("BIMPM_BENCHMARK_TREE", None)
        if tree is not None:
            env["BIMPM_BENCHMARK_TREE"] = tree
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


def extract_revision(rev: str, into: str) -> str:
    """Write papers/bimpm's Python files and conf/paper/bimpm.yaml as they are at git revision
    `rev` under `into`; return the revision's short commit hash."""

    def git(*cmd: str) -> bytes:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *cmd], capture_output=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            why = (getattr(e, "stderr", None) or b"").decode().strip() or str(e)
            raise SystemExit(f"Error: --before {rev}: git {cmd[0]} failed: {why}") from e

    commit = git("rev-parse", "--short", f"{rev}^{{commit}}").decode().strip()
    paths = ("papers/__init__.py", "papers/bimpm/*.py", "conf/paper/bimpm.yaml")
    tar = git("archive", commit, *paths)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return commit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--worker", choices=[*IMPLS, "before"], help=argparse.SUPPRESS)
    ap.add_argument(
        "--impls",
        default=",".join(DEFAULT_IMPLS),
        help=f"comma-separated implementations to time, of {', '.join(IMPLS)} "
        f"(default: {','.join(DEFAULT_IMPLS)})",
    )
    ap.add_argument(
        "--before",
        metavar="REV",
        help="also time papers/bimpm as it is at this git revision (e.g. main), as 'before'",
    )
    ap.add_argument("--rounds", type=int, default=7, help="rounds of interleaved timing")
    ap.add_argument(
        "--fast-steps",
        type=int,
        default=2,
        help="timed steps per round of each implementation but naive",
    )
    ap.add_argument("--naive-steps", type=int, default=1, help="timed naive steps per round")
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
        help="run every worker with glibc malloc keeping freed memory (GLIBC_TUNABLES)",
    )
    args = ap.parse_args()
    if args.worker:
        args.impl = args.worker
        serve(args)
        return
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown or not impls or len(set(impls)) != len(impls):
        ap.error(f"--impls: expected distinct names of {', '.join(IMPLS)}, got {args.impls!r}")
    if min(args.rounds, args.fast_steps, args.naive_steps) < 1:
        ap.error("--rounds, --fast-steps and --naive-steps must be at least 1")
    if "naive" in impls and args.rounds * args.naive_steps < 5:
        print("warning: fewer than 5 timed baseline steps; medians will be rough", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bimpm-before-") as tree:
        if args.before:
            args.before_commit = extract_revision(args.before, tree)
        run(args, impls, tree if args.before else None)


def run(args, impls: list[str], before_tree: str | None) -> None:
    """Drive the workers: interleaved rounds, the matching layer alone, then the report."""
    load_before = os.getloadavg()[0]  # other processes on the machine skew pairs/s
    # "before" next to "fast", so that the pair compared most closely runs back to back.
    names = ["before"] if before_tree else []
    names += [n for n in IMPLS if n in impls]
    clients = {n: Client(n, args, before_tree if n == "before" else None) for n in names}
    for c in clients.values():
        c.read()  # "ready": model built and warmed up
    pairs = [(a, b) for a, b in PAIRS if a in clients and b in clients]
    ratios = {pair: [] for pair in pairs}  # per round: pairs/s over pairs/s, timed back to back
    for r in range(args.rounds):
        this_round = {}
        for name in names if r % 2 == 0 else names[::-1]:
            n = args.naive_steps if name == "naive" else args.fast_steps
            this_round[name] = clients[name].ask(f"steps {n}")
            clients[name].times += this_round[name]
        for a, b in pairs:
            ratios[a, b].append(median_rate(1, this_round[a]) / median_rate(1, this_round[b]))
        shown = ", ".join(f"{a}/{b} {ratios[a, b][-1]:.2f}x" for a, b in pairs)
        print(f"round {r + 1}/{args.rounds}: {shown}", file=sys.stderr)
    layer = {name: [] for name in names}  # the matching layer alone, also interleaved
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            layer[name] += clients[name].ask("layer 1")
    results = {}
    for name, c in clients.items():
        res = c.ask("summary")
        res["pairs_per_s"] = median_rate(args.batch, c.times)
        # CPU seconds of this process: steadier than wall time when other jobs share the cores.
        res["pairs_per_cpu_s"] = median_rate(args.batch, c.times, which=1)
        if args.device == "cuda":
            res["bf16_pairs_per_s"] = median_rate(
                args.batch, c.ask(f"bf16 {max(5, args.fast_steps)}")
            )
        res["steps"] = len(c.times)
        results[name] = res
        c.close()
    if before_tree and not results["before"]["model_file"].startswith(before_tree):
        raise SystemExit(f"Error: 'before' timed {results['before']['model_file']}, not the copy")
    report(args, results, layer, ratios, load_before)


def report(args, results: dict, layer: dict, ratios: dict, load_before: float) -> None:
    ref = "naive" if "naive" in results else next(iter(results))  # the speed x / memory x unit
    steps = "/".join(str(r["steps"]) for r in results.values())
    print(
        f"device={args.device} threads={args.threads} batch={args.batch} rounds={args.rounds} "
        f"timed steps {'/'.join(results)}={steps} warmup={args.warmup} "
        f"load average before/after={load_before:.2f}/{os.getloadavg()[0]:.2f} "
        f"malloc={'reuse freed memory' if args.reuse_freed_memory else 'default'}"
        + (f" before={args.before} ({args.before_commit})" if args.before else "")
    )
    header = f"{'impl':<6} {'pairs/s':>9} {'peak RSS MB':>12} {'RSS delta MB':>13}"
    header += f" {'speed x':>8} {'memory x':>9} {'pairs/CPU-s':>12} {'CPU speed x':>12}"
    cuda = args.device == "cuda"
    if cuda:
        header += f" {'peak CUDA MB':>13} {'bf16 pairs/s':>13}"
    print(header + f"   (x: relative to {ref})")
    base = results[ref]
    for name, r in results.items():
        delta = r["peak_rss_mb"] - r["rss_before_mb"]
        line = f"{name:<6} {r['pairs_per_s']:>9.1f} {r['peak_rss_mb']:>12.0f} {delta:>13.0f}"
        speed = r["pairs_per_s"] / base["pairs_per_s"]
        mem = r["peak_rss_mb"] / base["peak_rss_mb"]
        cpu_speed = r["pairs_per_cpu_s"] / base["pairs_per_cpu_s"]
        line += f" {speed:>8.2f} {mem:>9.2f} {r['pairs_per_cpu_s']:>12.1f} {cpu_speed:>12.2f}"
        if cuda:
            line += f" {r['peak_cuda_mb']:>13.0f} {r['bf16_pairs_per_s']:>13.1f}"
        print(line)
    layer_ms = {k: 1000 * statistics.median(t[0] for t in v) for k, v in layer.items()}
    step_ms = {k: 1000 * args.batch / r["pairs_per_s"] for k, r in results.items()}
    shown = ", ".join(f"{k} {v:.0f} ms" for k, v in layer_ms.items())
    line = f"matching layer alone (forward + backward, median of {args.rounds}): {shown}"
    line += "; whole step: " + ", ".join(f"{k} {v:.0f} ms" for k, v in step_ms.items())
    if "fast" in results and "naive" in results:
        # What all share (LSTMs, embeddings, prediction, optimizer) ~ a fast step minus its
        # matching layer; even a free matching layer could not beat (shared + naive) / shared.
        shared_ms = step_ms["fast"] - layer_ms["fast"]
        line += (
            f"; the rest of the step, which all share, is about {shared_ms:.0f} ms, so even a "
            f"free matching layer would give at most "
            f"{step_ms['naive'] / max(shared_ms, 1e-9):.1f}x naive's speed"
        )
    print(line)
    for (a, b), rs in ratios.items():
        ra, rb = results[a], results[b]
        delta_a = ra["peak_rss_mb"] - ra["rss_before_mb"]
        delta_b = rb["peak_rss_mb"] - rb["rss_before_mb"]
        print(
            f"{a}/{b}: speed {ra['pairs_per_s'] / rb['pairs_per_s']:.2f}x "
            f"(per-round ratio median {statistics.median(rs):.2f}x, "
            f"range {min(rs):.2f}-{max(rs):.2f}x over {len(rs)} rounds), "
            f"matching layer {layer_ms[b] / layer_ms[a]:.2f}x, "
            f"peak RSS {ra['peak_rss_mb'] / rb['peak_rss_mb']:.2f}x, "
            f"RSS delta during training {delta_a / max(delta_b, 1e-9):.2f}x"
        )


if __name__ == "__main__":
    main()
