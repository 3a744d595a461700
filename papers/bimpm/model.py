"""The whole BiMPM model (Wang, Hamza & Florian 2017, arXiv:1702.03814) lives in this one file.

Layers run in paper order: word representation -> context representation -> multi-perspective
matching -> aggregation -> prediction. Pure torch: no Lightning, Hydra or file IO.

Shape letters: B batch, T sentence length (Tp, Tq for P and Q), W characters per word,
D word-representation width, H context-LSTM units per direction, L perspectives (paper's l),
M matching-vector width, A aggregation-LSTM units per direction, C classes.
Inputs use id 0 as padding, and padding sits at the end of each row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

# Guards every cosine norm and the attentive-mean denominator against division by zero.
# UNSTATED: the paper gives no epsilon; 1e-8 matches torch.nn.functional.cosine_similarity.
EPS = 1e-8

STRATEGIES = ("full", "maxpool", "attentive", "max_attentive")
HALVES = ("fw", "bw")
DIRECTIONS = ("both", "p2q", "q2p")


@dataclass
class BiMPMConfig:
    word_dim: int = 300  # paper, Model Overview / Word Representation Layer: 300-d GloVe
    char_dim: int = 20  # paper, Model Overview / Word Representation Layer
    char_hidden: int = 50  # paper, Model Overview / Word Representation Layer: char LSTM
    hidden: int = 100  # paper, Model Overview / Context Representation Layer
    agg_hidden: int = 100  # paper, Model Overview / Aggregation Layer
    perspectives: int = 20  # paper, Experiments: l = 20 in the main results (Figure 3 varies it)
    dropout: float = 0.1  # paper, Experiment Settings: dropout 0.1 on every layer's output
    # UNSTATED by the paper: authors-code uses a hidden layer of half the input width
    # (match_dim/2 = 4*agg_hidden/2 = 200) with tanh.
    mlp_hidden: int = 200
    use_chars: bool = True  # paper, Table 1 ablation "w/o character"
    full: bool = True  # paper, Matching Layer (Table 1 ablates each strategy)
    maxpool: bool = True  # paper, Matching Layer
    attentive: bool = True  # paper, Matching Layer
    max_attentive: bool = True  # paper, Matching Layer
    # paper, Table 1 ablation: "both" = bilateral; "p2q" = only P->Q (each time step of P is
    # matched against all of Q, so only P's matching sequence exists); "q2p" = only Q->P.
    direction: str = "both"
    # UNSTATED by the paper: authors-code keeps separate W's for the two matching directions
    # (False); most reimplementations share them (True).
    share_w_across_directions: bool = False
    freeze_word_vectors: bool = True  # paper, Experiment Settings: word vectors fixed
    # DEVIATION from authors-code (which drops P and Q with independent masks): "shared" draws one
    # dropout mask per pair and feature for the word and context representations and applies it
    # to P and Q alike, so that equal words still have cosine 1 while training. With independent
    # masks they never do, eval-mode cosines fall outside what training saw, and on the sample
    # BiMPM stalls at val 56-68% (97% with shared masks). "independent" restores authors-code.
    dropout_mask: str = "shared"

    def __post_init__(self) -> None:
        if self.dropout_mask not in ("shared", "independent"):
            raise ValueError(
                f"dropout_mask must be 'shared' or 'independent', got {self.dropout_mask!r}"
            )
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if not any(getattr(self, s) for s in STRATEGIES):
            raise ValueError(f"at least one matching strategy of {STRATEGIES} must be True")

    @classmethod
    def from_dict(cls, d: dict) -> BiMPMConfig:
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown BiMPM model config key(s) {unknown}; valid keys are: {', '.join(valid)}"
            )
        return cls(**d)

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(s for s in STRATEGIES if getattr(self, s))

    @property
    def matching_dim(self) -> int:
        """Width of one matching vector: l per enabled strategy, for forward and backward."""
        return 2 * self.perspectives * len(self.strategies)


def lengths_and_mask(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real lengths (>= 1, so an empty row never crashes packing) and the matching mask."""
    lengths = (ids != 0).sum(-1).clamp_min(1)  # (B,)
    mask = torch.arange(ids.size(-1), device=ids.device) < lengths[:, None]  # (B, T)
    return lengths, mask


def reversal_index(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) time index that reverses the first lengths[b] steps of row b; padding stays put."""
    t = torch.arange(T, device=lengths.device)[None]  # (1, T)
    return torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)


class BiLSTM(nn.Module):
    """A bidirectional LSTM over the real tokens of right-padded rows, as two one-way LSTMs.

    The forward LSTM reads each row as it is: the padding comes after the real tokens, so
    nothing it returns for a real token has seen padding. The backward LSTM reads each row
    reversed within its length, so it starts at the last real token. This is the same maths as
    nn.LSTM(bidirectional=True) on a packed sequence (a test checks it), but the calls take
    padded tensors, which on CPU run in oneDNN's fused LSTM; the packed CPU path steps through
    autograd one time step at a time and re-zeroes a full-size gradient buffer at every step.
    Measured on the throughput benchmark's shapes (forward + backward, 2 threads): aggregation
    77 -> 64 ms, context 106 -> 100 ms."""

    def __init__(self, in_dim: int, units: int):
        super().__init__()
        self.fw = nn.LSTM(in_dim, units, batch_first=True)
        self.bw = nn.LSTM(in_dim, units, batch_first=True)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, outputs: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """x (B, T, in), lengths (B,) >= 1 -> per-step outputs (B, T, 2 units), zeros at
        padding (None when outputs=False), and final states (B, 2 units): the forward state at
        the last real token and the backward state at the first."""
        B, T = x.shape[:2]
        # Row b's step t read from flat row b*T + rev[b, t] (whole rows copied: index_select).
        rev = (reversal_index(lengths, T) + T * torch.arange(B, device=x.device)[:, None]).view(-1)
        out_f, _ = self.fw(x)  # (B, T, units)
        out_b, _ = self.bw(x.flatten(0, 1).index_select(0, rev).view_as(x))  # (B, T, units)
        last = (torch.arange(B, device=x.device), lengths - 1)
        finals = torch.cat([out_f[last], out_b[last]], dim=-1)  # (B, 2 units)
        if not outputs:
            return None, finals
        out_b = out_b.flatten(0, 1).index_select(0, rev).view_as(out_f)  # back in token order
        out = torch.cat([out_f, out_b], dim=-1)
        mask = torch.arange(T, device=x.device)[None] < lengths[:, None]  # (B, T)
        return out * mask[..., None], finals  # (B, T, 2 units), (B, 2 units)


# ---------------------------------------------------------------------------------------------
# Multi-perspective cosine f_m: m_k = cos(W_k o v1, W_k o v2), W in R^{l x d}.
#   cos(W_k o a, W_k o b) = sum_d W2_kd a_d b_d / (sqrt(sum_d W2_kd a_d^2) sqrt(sum_d W2_kd b_d^2))
# with W2 = W^2, so every term is a matrix product with W2 and no l-fold copy of the hidden
# states is built (an l-fold copy is what makes the straightforward version slow and big).
# Both functions below have hand-written backward passes: autograd through the same ops would
# keep more intermediate tensors and take more, smaller steps (on CPU, each fresh tensor of a
# few MB costs page faults). Tests compare both with autograd and run gradcheck.
# ---------------------------------------------------------------------------------------------


class _AlignedCosine(torch.autograd.Function):
    """f_m of v1_i against one aligned vector per strategy: v1 (B, T, d), v2 (S, B, T, d),
    W2 = W^2 (S, L, d) -> (S, B, T, L). m = num r with num = (v1 o v2) W2^T,
    r = 1 / sqrt(c1 c2), c = max(sq, EPS^2), sq1 = (v1 o v1) W2^T, sq2 = (v2 o v2) W2^T.
    Under CUDA autocast it runs in float32 (EPS^2 = 1e-16 is below float16's range)."""

    @staticmethod
    def products(x1, x2):
        """(S, 2, N, d): v1 o v2 and v2 o v2 stacked, so one bmm with W2 serves both."""
        p = x2.new_empty(x2.size(0), 2, *x2.shape[1:])
        torch.mul(x1, x2, out=p[:, 0])
        torch.mul(x2, x2, out=p[:, 1])
        return p

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, v1, v2, W2):
        S, B, T, d = v2.shape
        L, N = W2.size(1), B * T
        x1, x2 = v1.reshape(N, d), v2.reshape(S, N, d)
        num_sq2 = torch.bmm(_AlignedCosine.products(x1, x2).view(S, 2 * N, d), W2.transpose(1, 2))
        num, sq2 = num_sq2.view(S, 2, N, L).unbind(1)  # each (S, N, L)
        # ||W_k o v1_i||^2 for all S strategies in one product: (N, d) @ (d, S*L)
        sq1 = torch.mm(x1 * x1, W2.view(S * L, d).t()).view(N, S, L).transpose(0, 1)
        c1, c2 = sq1.clamp_min(EPS * EPS), sq2.clamp_min(EPS * EPS)
        r = (c1 * c2).rsqrt_()
        m = num * r  # (S, N, L)
        ctx.save_for_backward(v1, v2, W2, r, m, c1, c2)
        return m.view(S, B, T, L)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g):
        v1, v2, W2, r, m, c1, c2 = ctx.saved_tensors
        S, B, T, d = v2.shape
        L, N = W2.size(1), B * T
        x1, x2 = v1.reshape(N, d), v2.reshape(S, N, d)
        g = g.reshape(S, N, L)
        # dm/dnum = r; dm/dsq = -m / (2 c) above the clamp, 0 below it (there c = sq).
        gm = g * m
        g_sq1 = torch.where(c1 > EPS * EPS, gm / c1, 0.0).mul_(-0.5)  # (S, N, L)
        g_num_sq2 = torch.stack([g * r, torch.where(c2 > EPS * EPS, gm / c2, 0.0).mul_(-0.5)], 1)
        g_num_sq2 = g_num_sq2.view(S, 2 * N, L)
        # Back through the products with W2: num and sq2 in one bmm, sq1 in one mm.
        gn_W, gs2_W = torch.bmm(g_num_sq2, W2).view(S, 2, N, d).unbind(1)  # each (S, N, d)
        gs1_W = torch.mm(g_sq1.transpose(0, 1).reshape(N, S * L), W2.view(S * L, d))  # (N, d)
        g1 = (gn_W * x2).sum(0).add_(gs1_W.mul_(x1), alpha=2)  # (N, d)
        g2 = gn_W.mul_(x1).add_(gs2_W.mul_(x2), alpha=2)  # (S, N, d)
        gW2 = torch.bmm(
            g_num_sq2.transpose(1, 2), _AlignedCosine.products(x1, x2).view(S, 2 * N, d)
        )
        gW2 += torch.matmul(g_sq1.transpose(1, 2), x1 * x1)  # (S, L, d)
        return g1.view(B, T, d), g2.view(S, B, T, d), gW2


def mp_cosine(v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """f_m of each v1_i against an aligned v2_i, for S strategies at once (each its own W):
    v1 (B, T, d), v2 (S, B, T, d), W (S, L, d) -> (S, B, T, L)."""
    return _AlignedCosine.apply(v1, v2, W * W)


class _MaxPoolCosine(torch.autograd.Function):
    """Max-pooling matching: m[b, i, k] = max over real j of f_m(v1_i, v2_j)_k.

    v1 (B, Ti, d), v2 (B, Tj, d), W2 = W^2 (L, d), mask2 (B, Tj) -> (B, Ti, L); the big
    (rows, Ti, L, Tj) work runs `rows` batch rows at a time (rows are independent).
    The forward builds the cosines without autograd and keeps only the winning j of each (i, k).
    The backward is then the gradient of cos(W_k o v1_i, W_k o v2_j) at the winners only: the
    winning rows of v2 are gathered, v2's gradient is added back into the winning rows, and the
    norms are small (B, Ti, L) and (B, L, Tj) tensors.
    Ties in the max send the whole gradient to one j (torch.max's pick); `amax` would split it.
    Under CUDA autocast it runs in float32 (custom_fwd casts the inputs)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, v1, v2, W2, mask2, rows):
        B, Ti, d = v1.shape
        L, Tj = W2.size(0), v2.size(1)
        sq1 = (v1 * v1).matmul(W2.t())  # (B, Ti, L)  ||W_k o v1_i||^2
        sq2 = (v2 * v2).matmul(W2.t()).transpose(1, 2).contiguous()  # (B, L, Tj)
        n1, n2 = sq1.clamp_min(EPS * EPS).sqrt(), sq2.clamp_min(EPS * EPS).sqrt()
        # Added to the numerators: 0 at real j, -inf at padded j, for every k. (B, 1, L*Tj)
        pad = torch.zeros(B, 1, L, Tj, dtype=v1.dtype, device=v1.device)
        pad = pad.masked_fill_(~mask2[:, None, None, :], float("-inf")).view(B, 1, L * Tj)
        best = v1.new_empty(B, Ti, L)
        j = torch.empty(B, Ti, L, dtype=torch.long, device=v1.device)  # winning j of (i, k)
        for s in range(0, B, rows):
            r = slice(s, s + rows)
            # u[b, k, j] = W2_k o v2_j, so that num[b, i, (k, j)] = v1_i . u[b, k, j] is one
            # matrix product per example: 30 x 100 times 100 x 600 at paper sizes. (Weighting
            # v1 instead gives 600 x 100 times 100 x 30, which took 1.5 ms instead of 0.9 ms
            # for a 34-row slice on 2 CPU threads.) The padding term makes padded j lose.
            u = (v2[r, None, :, :] * W2[None, :, None, :]).flatten(1, 2)  # (rows, L*Tj, d)
            num = torch.baddbmm(pad[r], v1[r], u.transpose(1, 2)).view(-1, Ti, L, Tj)
            # n1 does not depend on j, so the arg max over j only needs num / n2.
            torch.max(num.div_(n2[r, None]), dim=-1, out=(best[r], j[r]))
        m = best / n1  # (B, Ti, L)
        ctx.rows = rows
        ctx.save_for_backward(v1, v2, W2, j, n1, n2, sq1, sq2, m)
        return m

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g):
        v1, v2, W2, j, n1, n2, sq1, sq2, m = ctx.saved_tensors
        B, Ti, L = m.shape
        Tj, d = v2.shape[1:]
        n2_j = torch.gather(n2[:, None].expand(-1, Ti, -1, -1), 3, j[..., None])[..., 0]
        # m = num / (n1 n2_j): d/dnum = 1 / (n1 n2_j), d/dn1 = -m / n1, d/dn2_j = -m / n2_j.
        g_num = g / (n1 * n2_j)  # (B, Ti, L), sits at the winning j only
        g_n1 = -g * m / n1  # (B, Ti, L)
        g_n2 = torch.zeros_like(n2).view(B, L * Tj)  # (B, L*Tj), summed over the i's that won
        flat = j + (torch.arange(L, device=j.device) * Tj)  # index into (L, Tj), flattened
        g_n2.scatter_add_(1, flat.view(B, -1), (-g * m / n2_j).view(B, -1))
        # n = sqrt(max(sq, EPS^2)): dn/dsq = 1 / (2n) above the clamp, 0 below it.
        g_sq1 = torch.where(sq1 > EPS * EPS, g_n1 / (2 * n1), 0.0)  # (B, Ti, L)
        g_sq2 = torch.where(sq2 > EPS * EPS, g_n2.view(B, L, Tj) / (2 * n2), 0.0)  # (B, L, Tj)
        # The squared norms: sq1 = (v1 o v1) W2^T, sq2 = (v2 o v2) W2^T.
        g1 = 2 * v1 * g_sq1.matmul(W2)  # (B, Ti, d)
        g2 = 2 * v2 * g_sq2.transpose(1, 2).matmul(W2)  # (B, Tj, d)
        gW2 = g_sq1.reshape(-1, L).t().matmul((v1 * v1).reshape(-1, d))  # (L, d)
        gW2 += g_sq2.transpose(0, 1).reshape(L, -1).matmul((v2 * v2).reshape(-1, d))
        # The numerators, num[b, i, k] = sum_d W2_kd v1_id v2_jd at the winning j = j[b, i, k].
        for s in range(0, B, ctx.rows):
            r = slice(s, s + ctx.rows)
            n = j[r].size(0)
            # Row of the winning v2_j for every (b, i, k), in v2[r] flattened to (n*Tj, d).
            win = (j[r] + Tj * torch.arange(n, device=j.device)[:, None, None]).view(-1)
            # e[b, i, k] = g_num[b, i, k] v2_j: gathered rows, not a product over all j.
            e = v2[r].reshape(n * Tj, d).index_select(0, win).view(n, Ti, L, d)
            e.mul_(g_num[r, :, :, None])
            g1[r] += (e * W2).sum(2)  # sum_k W2_k o e[b, i, k]
            gW2 += e.mul_(v1[r, :, None]).sum((0, 1))  # sum_b,i e[b, i, k] o v1_i
            # Each v2_j collects g_num W2_k o v1_i from every (i, k) it won. (index_add_ is
            # deterministic on CPU; on CUDA it is under torch.use_deterministic_algorithms.)
            won = (v1[r, :, None, :] * W2).mul_(g_num[r, :, :, None])  # (n, Ti, L, d)
            g2[r].view(n * Tj, d).index_add_(0, win, won.view(-1, d))
        return g1, g2, gW2, None, None


# On CPU the max-pooling matching does its big work on slices of the batch small enough that
# its largest temporaries, (rows, Ti, L, d) and (rows, Ti, L, Tj), stay near 8 MB (34-row
# slices at paper sizes, T = 30): freshly allocated big buffers cost more in page faults than
# in arithmetic on a small VM. Whole training step at paper sizes, batch 64 (2 threads,
# interleaved A/B, medians of 18 steps): 2**20 / 2**21 / 2**22 / 2**23 elements per slice took
# 310 / 309 / 321 / 321 ms. Rows are independent, so slicing changes no result. GPUs reuse
# memory through their caching allocator and run the whole batch at once.
CPU_CHUNK_ELEMENTS = 2**21


def mp_max_cosine(
    v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor, mask2: torch.Tensor
) -> torch.Tensor:
    """Max-pooling matching: max over the real j of f_m(v1_i, v2_j).
    v1 (B, Ti, d), v2 (B, Tj, d), W (L, d), mask2 (B, Tj) True at real tokens -> (B, Ti, L)."""
    B, Ti, d = v1.shape
    cpu = v1.device.type == "cpu"
    rows = max(1, CPU_CHUNK_ELEMENTS // (Ti * W.size(0) * d)) if cpu else B
    return _MaxPoolCosine.apply(v1, v2, W * W, mask2, rows)  # (B, Ti, L)


def cosine_matrix(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """Plain cosine alpha_ij = cos(v1_i, v2_j): (B, Ti, d), (B, Tj, d) -> (B, Ti, Tj)."""
    n1 = v1.norm(dim=-1, keepdim=True).clamp_min(EPS)  # (B, Ti, 1)
    n2 = v2.norm(dim=-1, keepdim=True).clamp_min(EPS)  # (B, Tj, 1)
    return torch.bmm(v1 / n1, (v2 / n2).transpose(1, 2))  # (B, Ti, Tj)


# ---------------------------------------------------------------------------------------------
# Layers, in paper order.
# ---------------------------------------------------------------------------------------------


class PairDropout(nn.Dropout):
    """Dropout for the two sentences of a pair. shared=True: one mask per (example, feature),
    the same for P and Q and for every time step, so the cosine of equal vectors stays 1;
    shared=False: plain dropout on each (authors-code). An nn.Dropout, so `p` works as usual."""

    def __init__(self, p: float, shared: bool):
        super().__init__(p)
        self.shared = shared

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training or self.p == 0:
            return a, b
        if not self.shared:
            return F.dropout(a, self.p, True), F.dropout(b, self.p, True)
        keep = torch.full((a.size(0), 1, a.size(-1)), 1 - self.p, device=a.device, dtype=a.dtype)
        mask = torch.bernoulli(keep) / (1 - self.p)  # (B, 1, D), one mask per pair
        return a * mask, b * mask  # (B, Tp, D), (B, Tq, D)


class WordRepresentation(nn.Module):
    """paper, Model Overview / Word Representation Layer: each token is
    [fixed word vector ; final state of an LSTM over the word's characters]."""

    def __init__(self, cfg: BiMPMConfig, word_vectors: torch.Tensor, num_chars: int):
        super().__init__()
        self.word_emb = nn.Embedding.from_pretrained(
            word_vectors, freeze=cfg.freeze_word_vectors, padding_idx=0
        )
        self.use_chars = cfg.use_chars
        if cfg.use_chars:
            self.char_emb = nn.Embedding(num_chars, cfg.char_dim, padding_idx=0)
            # UNSTATED: the character LSTM is unidirectional (its direction is not given).
            self.char_lstm = nn.LSTM(cfg.char_dim, cfg.char_hidden, batch_first=True)
        self.char_hidden = cfg.char_hidden
        self.out_dim = cfg.word_dim + (cfg.char_hidden if cfg.use_chars else 0)

    def forward(
        self,
        p_words: torch.Tensor,
        p_chars: torch.Tensor | None,
        q_words: torch.Tensor,
        q_chars: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (B, Tp, D), (B, Tq, D); dropout is applied to P and Q together in BiMPM.forward."""
        # Embeddings run per sentence so that dim 0 of every embedding output is the batch
        # (repro's batch-independence check hooks them).
        x_p, x_q = self.word_emb(p_words), self.word_emb(q_words)  # (B, T, word_dim)
        if not self.use_chars:
            return x_p, x_q
        # Characters of the real words of P and Q, one row per word (N, W, char_dim).
        char_len = [(c != 0).sum(-1) for c in (p_chars, q_chars)]  # (B, T): 0 at padded words
        W = max(p_chars.size(-1), q_chars.size(-1))
        rows = [
            F.pad(self.char_emb(c), (0, 0, 0, W - c.size(-1)))[n > 0]  # (N_p or N_q, W, char_dim)
            for c, n in ((p_chars, char_len[0]), (q_chars, char_len[1]))
        ]
        # The words of both sentences together, in groups of equal length: each group is one
        # LSTM call with no padding, so h_n is the state after each word's last character.
        # (A packed call gives the same numbers; on CPU this is faster: the throughput
        # benchmark's character LSTM took 47 ms forward + backward packed, 39 ms grouped.)
        lengths = torch.cat([n[n > 0] for n in char_len])  # (N,)
        order = torch.argsort(lengths)  # (N,) words by length
        counts = torch.bincount(lengths, minlength=W + 1).tolist()  # counts[n]: words of n chars
        groups = torch.cat(rows)[order].split(counts)  # group n: (counts[n], W, char_dim)
        h_sorted = [self.char_lstm(g[:, :n])[1][0][0] for n, g in enumerate(groups) if len(g)]
        h_words = rows[0].new_zeros(lengths.numel(), self.char_hidden)  # (N, char_hidden)
        if h_sorted:
            h_words = h_words.index_copy(0, order, torch.cat(h_sorted))  # back to word order
        # Back to (B, T, char_hidden) per sentence; padded word positions keep a zero vector.
        h_p, h_q = h_words.split([rows[0].size(0), rows[1].size(0)])
        out = []
        for x, n, h in ((x_p, char_len[0], h_p), (x_q, char_len[1], h_q)):
            out.append(
                torch.cat([x, x.new_zeros(*n.shape, self.char_hidden).index_put((n > 0,), h)], -1)
            )
        return out[0], out[1]  # (B, Tp, D), (B, Tq, D)


class ContextRepresentation(nn.Module):
    """paper, Model Overview / Context Representation Layer: one BiLSTM shared by P and Q."""

    def __init__(self, cfg: BiMPMConfig, in_dim: int):
        super().__init__()
        self.lstm = BiLSTM(in_dim, cfg.hidden)
        self.dropout = PairDropout(cfg.dropout, shared=cfg.dropout_mask == "shared")

    def forward(self, x_p, x_q, len_p, len_q) -> tuple[torch.Tensor, torch.Tensor]:
        # P and Q go through the shared BiLSTM as one batch of 2B rows (row-wise, so this
        # only saves time).
        B, Tp, Tq = x_p.size(0), x_p.size(1), x_q.size(1)
        T = max(Tp, Tq)
        x = torch.cat([F.pad(x_p, (0, 0, 0, T - Tp)), F.pad(x_q, (0, 0, 0, T - Tq))])  # (2B, T, D)
        h, _ = self.lstm(x, torch.cat([len_p, len_q]))  # (2B, T, 2H), 0 at padding
        return self.dropout(h[:B, :Tp], h[B:, :Tq])  # (B, Tp, 2H), (B, Tq, 2H)


class MultiPerspectiveMatching(nn.Module):
    """paper, Model Overview / Matching Layer and Multi-perspective Matching Operation.

    Four strategies, each applied separately to the forward and the backward context states
    with its own W (l x H), in one or both matching directions."""

    def __init__(self, cfg: BiMPMConfig):
        super().__init__()
        self.strategies = cfg.strategies
        self.direction = cfg.direction
        self.shared = cfg.share_w_across_directions
        sides = ("p2q", "q2p") if cfg.direction == "both" else (cfg.direction,)
        # Parameter names: "<side>_<strategy>_<half>", or "<strategy>_<half>" when the two
        # directions share W.
        prefixes = ("",) if self.shared else tuple(f"{s}_" for s in sides)
        self.W = nn.ParameterDict(
            {
                f"{pre}{s}_{half}": nn.Parameter(torch.empty(cfg.perspectives, cfg.hidden))
                for pre in prefixes
                for s in self.strategies
                for half in HALVES
            }
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.reset_parameters()

    # f_m for aligned pairs, and f_m max-pooled over all pairs (the throughput benchmark swaps
    # in l-fold-copy versions of exactly these two).
    cosine = staticmethod(mp_cosine)
    max_cosine = staticmethod(mp_max_cosine)

    def reset_parameters(self) -> None:
        # UNSTATED: Xavier-uniform (the glorot default of TF1's get_variable). W enters only as
        # W^2, so its sign does not matter; repro's own init does not touch these parameters.
        for w in self.W.values():
            nn.init.xavier_uniform_(w)

    def match(
        self,
        h_a: torch.Tensor,
        h_b: torch.Tensor,
        len_b: torch.Tensor,
        mask_b: torch.Tensor,
        side: str,
        alpha: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Match every time step of sentence a against all of sentence b -> (B, Ta, M).

        alpha: the plain cosines cos(a_i, b_j) (B, Ta, Tb) of the forward and backward halves,
        when the caller has them already; computed here otherwise."""
        H = h_a.size(-1) // 2
        out = []
        for k, half in enumerate(HALVES):
            part = slice(0, H) if half == "fw" else slice(H, 2 * H)
            # Contiguous copies of the halves: the products below run ~10% faster on them.
            a = h_a[..., part].contiguous()  # (B, Ta, H)
            b = h_b[..., part].contiguous()  # (B, Tb, H)
            prefix = "" if self.shared else f"{side}_"
            W = {s: self.W[f"{prefix}{s}_{half}"] for s in self.strategies}  # each (L, H)
            if "attentive" in W or "max_attentive" in W:
                alpha_ab = cosine_matrix(a, b) if alpha is None else alpha[k]  # (B, Ta, Tb)
            # full, attentive and max-attentive each match a_i with one vector v_i built from b;
            # their cosines are computed together below.
            v = {}
            if "full" in W:
                # Last state of b: last real token going forward, first token going backward.
                idx = (len_b - 1) if half == "fw" else torch.zeros_like(len_b)  # (B,)
                b_last = b[torch.arange(b.size(0), device=b.device), idx]  # (B, H)
                v["full"] = b_last[:, None, :].expand_as(a)  # (B, Ta, H)
            if "attentive" in W:
                # Weighted mean sum_j alpha_ij h_j / sum_j alpha_ij (not a softmax). Cosines can be
                # negative, so the sum is guarded only where |sum| < EPS (set to EPS).
                att = alpha_ab * mask_b[:, None, :]  # (B, Ta, Tb), padded j excluded
                den = att.sum(-1, keepdim=True)  # (B, Ta, 1)
                den = torch.where(den.abs() < EPS, torch.full_like(den, EPS), den)
                v["attentive"] = torch.bmm(att, b) / den  # (B, Ta, H)
            if "max_attentive" in W:
                # The single h_j with the highest alpha_ij (the whole row, not an element-wise max).
                j = alpha_ab.masked_fill(~mask_b[:, None, :], float("-inf")).argmax(-1)  # (B, Ta)
                v["max_attentive"] = torch.gather(b, 1, j[..., None].expand(-1, -1, b.size(-1)))
            m = {}
            if v:
                partners = torch.stack(list(v.values()))  # (S, B, Ta, H)
                aligned = self.cosine(a, partners, torch.stack([W[s] for s in v]))  # (S, B, Ta, L)
                m = dict(zip(v, aligned, strict=True))  # each (B, Ta, L)
            if "maxpool" in W:
                m["maxpool"] = self.max_cosine(a, b, W["maxpool"], mask_b)  # max over real j
            out += [m[s] for s in self.strategies]
        return torch.cat(out, dim=-1)  # (B, Ta, M)

    def forward(self, h_p, h_q, len_p, len_q, mask_p, mask_q):
        """-> matching sequences for P (each step of P vs all of Q) and/or for Q (or None)."""
        m_p = m_q = None
        alpha_pq = alpha_qp = None
        if self.direction == "both" and {"attentive", "max_attentive"} & set(self.strategies):
            # cos(p_i, q_j) = cos(q_j, p_i): Q->P's cosine matrices are P->Q's transposed.
            H = h_p.size(-1) // 2
            halves = (slice(0, H), slice(H, 2 * H))
            alpha_pq = [cosine_matrix(h_p[..., part], h_q[..., part]) for part in halves]
            alpha_qp = [a.transpose(1, 2) for a in alpha_pq]  # (B, Tq, Tp) each
        if self.direction in ("both", "p2q"):
            m_p = self.dropout(self.match(h_p, h_q, len_q, mask_q, "p2q", alpha_pq))  # (B, Tp, M)
        if self.direction in ("both", "q2p"):
            m_q = self.dropout(self.match(h_q, h_p, len_p, mask_p, "q2p", alpha_qp))  # (B, Tq, M)
        return m_p, m_q


class Aggregation(nn.Module):
    """paper, Model Overview / Aggregation Layer: a BiLSTM over each matching sequence; the
    fixed-length vector is the last state of both directions for each sequence (4 x A when
    both matching directions exist)."""

    def __init__(self, cfg: BiMPMConfig):
        super().__init__()
        # UNSTATED: one BiLSTM serves both sequences (the paper says "another BiLSTM model" is
        # applied to the two sequences individually; authors-code may use two).
        self.lstm = BiLSTM(cfg.matching_dim, cfg.agg_hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_dim = 2 * cfg.agg_hidden * (2 if cfg.direction == "both" else 1)

    def forward(self, seqs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """seqs: one or two (matching sequence (B, T, M), lengths (B,)) -> (B, 4A) or (B, 2A)."""
        B, T = seqs[0][0].size(0), max(m.size(1) for m, _ in seqs)
        # Both sequences go through the shared BiLSTM as one batch of 2B rows (row-wise, so
        # this only saves time).
        m = torch.cat([F.pad(m, (0, 0, 0, T - m.size(1))) for m, _ in seqs])  # (nB, T, M)
        # Final states: forward at the last real step, backward at the first, (nB, 2A).
        _, finals = self.lstm(m, torch.cat([n for _, n in seqs]), outputs=False)
        return self.dropout(torch.cat(finals.split(B), dim=-1))  # (B, 4A) or (B, 2A)


class Prediction(nn.Module):
    """paper, Model Overview / Prediction Layer: two-layer feed-forward network -> logits
    (the softmax lives in the cross-entropy loss outside the model)."""

    def __init__(self, cfg: BiMPMConfig, in_dim: int, num_classes: int):
        super().__init__()
        # nn.Sequential keeps the activation visible to repro's init (Tanh -> Xavier).
        # UNSTATED: tanh activation as in authors-code. No dropout on the logits themselves.
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, cfg.mlp_hidden),
            nn.Tanh(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.mlp_hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)  # (B, C)


class BiMPM(nn.Module):
    """paper, Model Overview: bilateral multi-perspective matching of sentences P and Q."""

    def __init__(
        self, cfg: BiMPMConfig, word_vectors: torch.Tensor, num_chars: int, num_classes: int
    ):
        super().__init__()
        self.cfg = cfg
        self.word = WordRepresentation(cfg, word_vectors, num_chars)
        self.word_dropout = PairDropout(cfg.dropout, shared=cfg.dropout_mask == "shared")
        self.context = ContextRepresentation(cfg, self.word.out_dim)
        self.matching = MultiPerspectiveMatching(cfg)
        self.aggregation = Aggregation(cfg)
        self.prediction = Prediction(cfg, self.aggregation.out_dim, num_classes)

    def forward(
        self,
        p_words: torch.Tensor,
        p_chars: torch.Tensor | None,
        q_words: torch.Tensor,
        q_chars: torch.Tensor | None,
    ) -> torch.Tensor:
        len_p, mask_p = lengths_and_mask(p_words)  # (B,), (B, Tp)
        len_q, mask_q = lengths_and_mask(q_words)  # (B,), (B, Tq)
        x_p, x_q = self.word(p_words, p_chars, q_words, q_chars)  # (B, Tp, D), (B, Tq, D)
        x_p, x_q = self.word_dropout(x_p, x_q)  # paper: dropout on every layer's output
        h_p, h_q = self.context(x_p, x_q, len_p, len_q)  # (B, Tp, 2H), (B, Tq, 2H)
        m_p, m_q = self.matching(h_p, h_q, len_p, len_q, mask_p, mask_q)  # (B, T, M) or None
        seqs = [(m, n) for m, n in ((m_p, len_p), (m_q, len_q)) if m is not None]
        return self.prediction(self.aggregation(seqs))  # (B, C)


def build_model(
    cfg: dict,
    *,
    vocab_size: int,
    num_chars: int,
    num_classes: int,
    word_vectors: torch.Tensor | None = None,
) -> BiMPM:
    """Entry point repro calls with the paper config's `model:` section as a plain dict."""
    config = BiMPMConfig.from_dict(dict(cfg))
    expected = (vocab_size, config.word_dim)
    if word_vectors is None:
        # paper, Experiment Settings: OOV words get random vectors; with no vectors at all every
        # row is random N(0, 1) and, like the pretrained ones, fixed.
        word_vectors = torch.randn(*expected)
    elif tuple(word_vectors.shape) != expected:
        raise ValueError(
            f"word_vectors has shape {tuple(word_vectors.shape)}, expected "
            f"(vocab_size, word_dim) = {expected}"
        )
    return BiMPM(config, word_vectors.float(), num_chars, num_classes)


__all__ = [
    "BiMPMConfig",
    "PairDropout",
    "BiLSTM",
    "WordRepresentation",
    "ContextRepresentation",
    "MultiPerspectiveMatching",
    "Aggregation",
    "Prediction",
    "BiMPM",
    "build_model",
]
