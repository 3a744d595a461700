"""BiMPM's multi-perspective cosine with hand-written backward passes: model.py's maths, faster.

model.py defines f_m plainly and uses these two functions instead when
`BiMPMConfig.fast_matching` is True (the default). They take what model.py's `aligned_cosine`
and `max_pool_cosine` take, plus the norms' epsilon, and return the same; tests check that
outputs and gradients agree, and compare the backward passes with autograd (and gradcheck).

Both rest on one identity, with W2 = W o W:
    cos(W_k o a, W_k o b) = sum_d W2_kd a_d b_d / (sqrt(sum_d W2_kd a_d^2) sqrt(sum_d W2_kd b_d^2))
so every term is a matrix product with W2 and no l-fold copy of the hidden states is built.
The backward passes are written by hand because autograd through the same ops keeps more
intermediate tensors and takes more, smaller steps: on CPU, each fresh tensor of a few MB
costs page faults. Measurements: papers/bimpm/README.md, Speed.
"""

from __future__ import annotations

import torch


class _AlignedCosine(torch.autograd.Function):
    """f_m of v1_i against one aligned vector per strategy: v1 (B, T, d), v2 (S, B, T, d),
    W2 = W^2 (S, L, d) -> (S, B, T, L). m = num r with num = (v1 o v2) W2^T,
    r = 1 / sqrt(c1 c2), c = max(sq, eps2), sq1 = (v1 o v1) W2^T, sq2 = (v2 o v2) W2^T.
    Under CUDA autocast it runs in float32 (eps2 = 1e-16 is below float16's range)."""

    @staticmethod
    def products(x1, x2):
        """(S, 2, N, d): v1 o v2 and v2 o v2 stacked, so one bmm with W2 serves both."""
        p = x2.new_empty(x2.size(0), 2, *x2.shape[1:])
        torch.mul(x1, x2, out=p[:, 0])
        torch.mul(x2, x2, out=p[:, 1])
        return p

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, v1, v2, W2, eps2):
        S, B, T, d = v2.shape
        L, N = W2.size(1), B * T
        x1, x2 = v1.reshape(N, d), v2.reshape(S, N, d)
        num_sq2 = torch.bmm(_AlignedCosine.products(x1, x2).view(S, 2 * N, d), W2.transpose(1, 2))
        num, sq2 = num_sq2.view(S, 2, N, L).unbind(1)  # each (S, N, L)
        # ||W_k o v1_i||^2 for all S strategies in one product: (N, d) @ (d, S*L)
        sq1 = torch.mm(x1 * x1, W2.view(S * L, d).t()).view(N, S, L).transpose(0, 1)
        c1, c2 = sq1.clamp_min(eps2), sq2.clamp_min(eps2)
        r = (c1 * c2).rsqrt_()
        m = num * r  # (S, N, L)
        ctx.eps2 = eps2
        ctx.save_for_backward(v1, v2, W2, r, m, c1, c2)
        return m.view(S, B, T, L)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g):
        v1, v2, W2, r, m, c1, c2 = ctx.saved_tensors
        eps2 = ctx.eps2
        S, B, T, d = v2.shape
        L, N = W2.size(1), B * T
        x1, x2 = v1.reshape(N, d), v2.reshape(S, N, d)
        g = g.reshape(S, N, L)
        # dm/dnum = r; dm/dsq = -m / (2 c) above the clamp, 0 below it (there c = sq).
        gm = g * m
        g_sq1 = torch.where(c1 > eps2, gm / c1, 0.0).mul_(-0.5)  # (S, N, L)
        g_num_sq2 = torch.stack([g * r, torch.where(c2 > eps2, gm / c2, 0.0).mul_(-0.5)], 1)
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
        return g1.view(B, T, d), g2.view(S, B, T, d), gW2, None


def aligned_cosine(v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor, eps: float) -> torch.Tensor:
    """f_m of each v1_i against an aligned v2_i, for S strategies at once (each its own W):
    v1 (B, T, d), v2 (S, B, T, d), W (S, L, d) -> (S, B, T, L). Every norm is at least eps."""
    return _AlignedCosine.apply(v1, v2, W * W, eps * eps)


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
    def forward(ctx, v1, v2, W2, mask2, rows, eps2):
        B, Ti, d = v1.shape
        L, Tj = W2.size(0), v2.size(1)
        sq1 = (v1 * v1).matmul(W2.t())  # (B, Ti, L)  ||W_k o v1_i||^2
        sq2 = (v2 * v2).matmul(W2.t()).transpose(1, 2).contiguous()  # (B, L, Tj)
        n1, n2 = sq1.clamp_min(eps2).sqrt(), sq2.clamp_min(eps2).sqrt()
        # Added to the numerators: 0 at real j, -inf at padded j, for every k. (B, 1, L*Tj)
        pad = torch.zeros(B, 1, L, Tj, dtype=v1.dtype, device=v1.device)
        pad = pad.masked_fill_(~mask2[:, None, None, :], float("-inf")).view(B, 1, L * Tj)
        best = v1.new_empty(B, Ti, L)
        j = torch.empty(B, Ti, L, dtype=torch.long, device=v1.device)  # winning j of (i, k)
        for s in range(0, B, rows):
            r = slice(s, s + rows)
            # u[b, k, j] = W2_k o v2_j, so that num[b, i, (k, j)] = v1_i . u[b, k, j] is one
            # matrix product per example: 30 x 100 times 100 x 600 at paper sizes (weighting
            # v1 instead, 600 x 100 times 100 x 30, is slower: README, Speed). The padding
            # term makes padded j lose.
            u = (v2[r, None, :, :] * W2[None, :, None, :]).flatten(1, 2)  # (rows, L*Tj, d)
            num = torch.baddbmm(pad[r], v1[r], u.transpose(1, 2)).view(-1, Ti, L, Tj)
            # n1 does not depend on j, so the arg max over j only needs num / n2.
            torch.max(num.div_(n2[r, None]), dim=-1, out=(best[r], j[r]))
        m = best / n1  # (B, Ti, L)
        ctx.rows, ctx.eps2 = rows, eps2
        ctx.save_for_backward(v1, v2, W2, j, n1, n2, sq1, sq2, m)
        return m

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g):
        v1, v2, W2, j, n1, n2, sq1, sq2, m = ctx.saved_tensors
        eps2 = ctx.eps2
        B, Ti, L = m.shape
        Tj, d = v2.shape[1:]
        n2_j = torch.gather(n2[:, None].expand(-1, Ti, -1, -1), 3, j[..., None])[..., 0]
        # m = num / (n1 n2_j): d/dnum = 1 / (n1 n2_j), d/dn1 = -m / n1, d/dn2_j = -m / n2_j.
        g_num = g / (n1 * n2_j)  # (B, Ti, L), sits at the winning j only
        g_n1 = -g * m / n1  # (B, Ti, L)
        g_n2 = torch.zeros_like(n2).view(B, L * Tj)  # (B, L*Tj), summed over the i's that won
        flat = j + (torch.arange(L, device=j.device) * Tj)  # index into (L, Tj), flattened
        g_n2.scatter_add_(
            1, flat.view(B, -1), (-g * m / n2_j).reshape(B, -1)
        )  # g may be non-contiguous
        # n = sqrt(max(sq, eps2)): dn/dsq = 1 / (2n) above the clamp, 0 below it.
        g_sq1 = torch.where(sq1 > eps2, g_n1 / (2 * n1), 0.0)  # (B, Ti, L)
        g_sq2 = torch.where(sq2 > eps2, g_n2.view(B, L, Tj) / (2 * n2), 0.0)  # (B, L, Tj)
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
        return g1, g2, gW2, None, None, None


# On CPU the max-pooling matching does its big work on slices of the batch small enough that
# its largest temporaries, (rows, Ti, L, d) and (rows, Ti, L, Tj), stay near 8 MB (34-row
# slices at paper sizes, T = 30): on a small VM, freshly allocated big buffers cost more in page
# faults than in arithmetic (slice sizes measured: README, Speed). Rows are independent, so
# slicing changes no result. GPUs reuse memory through their caching allocator and run the
# whole batch at once.
CPU_CHUNK_ELEMENTS = 2**21


def max_pool_cosine(
    v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor, mask2: torch.Tensor, eps: float
) -> torch.Tensor:
    """Max-pooling matching: max over the real j of f_m(v1_i, v2_j). v1 (B, Ti, d),
    v2 (B, Tj, d), W (L, d), mask2 (B, Tj) True at real tokens -> (B, Ti, L). Every norm is at
    least eps."""
    B, Ti, d = v1.shape
    cpu = v1.device.type == "cpu"
    rows = max(1, CPU_CHUNK_ELEMENTS // (Ti * W.size(0) * d)) if cpu else B
    return _MaxPoolCosine.apply(v1, v2, W * W, mask2, rows, eps * eps)  # (B, Ti, L)
