"""Tests for papers/bimpm/model.py, fast_matching.py and fast_recurrence.py: matching equals the
paper's equations, the plain and fast paths agree (values, gradients, checkpoints), padding,
ablations, and the config that repro hands build_model."""

from __future__ import annotations

import dataclasses
import io
import re

import pytest
import torch
import yaml
from rich.console import Console

from papers.bimpm import fast_matching, fast_recurrence
from papers.bimpm.model import (
    DIRECTIONS,
    EPS,
    STRATEGIES,
    BiLSTM,
    BiMPMConfig,
    MultiPerspectiveMatching,
    build_model,
    last_char_states,
)
from papers.bimpm.tests.configs import CONF, paper_model_config
from repro.config.compose import compose
from repro.config.typed import from_dict
from repro.context import StageContext, import_paper_module
from repro.errors import ConfigError
from repro.project import find_project
from repro.train.init import apply_init

SMALL = dict(
    word_dim=10, char_dim=4, char_hidden=5, hidden=8, agg_hidden=6, perspectives=3, mlp_hidden=7
)
VOCAB, CHARS, CLASSES = 50, 20, 3
L = SMALL["perspectives"]
# The speed flags: each path (plain = model.py as the paper reads, fast = the default) sets both.
PATHS = {"fast": dict(fast_matching=True, fast_recurrence=True)}
PATHS["plain"] = dict(fast_matching=False, fast_recurrence=False)


def small_model(**changes):
    """A small BiMPM: the paper config's `model:` section with SMALL's sizes and `changes`."""
    torch.manual_seed(0)
    cfg = paper_model_config(**(SMALL | changes))
    return build_model(cfg, vocab_size=VOCAB, num_chars=CHARS, num_classes=CLASSES)


def in_fast_names(named: dict) -> dict:
    """Keys of model.py's packed BiLSTM (`<m>.lstm.lstm.<w>` and `..._reverse`) written as
    fast_recurrence.BiLSTM's (`<m>.lstm.fw.<w>`, `<m>.lstm.bw.<w>`); other keys as they are."""

    def rename(match: re.Match) -> str:
        return f".lstm.{'bw' if match[2] else 'fw'}.{match[1]}"

    return {re.sub(r"\.lstm\.lstm\.(\w+?)(_reverse)?$", rename, k): v for k, v in named.items()}


def random_sentences(B: int, lengths: list[int], T: int, K: int, g: torch.Generator):
    """(B, T) word ids and (B, T, K) char ids, padded with 0 after each row's length."""
    words = torch.randint(1, VOCAB, (B, T), generator=g)
    chars = torch.randint(1, CHARS, (B, T, K), generator=g)
    n_chars = torch.randint(1, K + 1, (B, T), generator=g)
    chars[torch.arange(K)[None, None] >= n_chars[..., None]] = 0
    for b, n in enumerate(lengths):
        words[b, n:] = 0
        chars[b, n:] = 0
    return words, chars


# ---------------------------------------------------------------------------------------------
# Plain-loop reference of the paper's matching equations (one example, one time step at a time).
# ---------------------------------------------------------------------------------------------


def ref_cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).sum() / (x.norm().clamp_min(EPS) * y.norm().clamp_min(EPS))


def ref_fm(v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """m_k = cos(W_k o v1, W_k o v2), k = 1..l."""
    return torch.stack([ref_cos(W[k] * v1, W[k] * v2) for k in range(W.size(0))])


def ref_match_one(a, b, len_b, W, strategy, half):
    """Matching vectors (Ta, l) of every step of a (Ta, d) against b (Tb, d) with len_b real."""
    rows = []
    for i in range(a.size(0)):
        if strategy == "full":
            last = b[len_b - 1] if half == "fw" else b[0]
            rows.append(ref_fm(a[i], last, W))
        elif strategy == "maxpool":
            ms = [ref_fm(a[i], b[j], W) for j in range(len_b)]
            rows.append(torch.stack(ms).max(dim=0).values)
        else:
            alpha = torch.stack([ref_cos(a[i], b[j]) for j in range(len_b)])
            if strategy == "attentive":
                den = alpha.sum()
                den = den if den.abs() >= EPS else torch.tensor(EPS, dtype=den.dtype)
                v = sum(alpha[j] * b[j] for j in range(len_b)) / den
            else:  # max_attentive: the whole row with the highest cosine
                v = b[int(alpha.argmax())]
            rows.append(ref_fm(a[i], v, W))
    return torch.stack(rows)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("side", ["p2q", "q2p"])
def test_matching_equals_plain_loop_reference(strategy, side, fast):
    flags = {s: s == strategy for s in STRATEGIES}
    model = small_model(**flags, fast_matching=fast).double().eval()
    matching = model.matching
    g = torch.Generator().manual_seed(1)
    B, Ta, Tb, H = 3, 5, 6, SMALL["hidden"]
    len_b = torch.tensor([6, 2, 4])
    mask_b = torch.arange(Tb)[None] < len_b[:, None]
    h_a = torch.randn(B, Ta, 2 * H, generator=g, dtype=torch.float64)
    # Large values at padded positions of b: they win every max/argmax unless masked out.
    h_b = torch.randn(B, Tb, 2 * H, generator=g, dtype=torch.float64)
    h_b = torch.where(mask_b[..., None], h_b, 50.0 * h_b.abs())

    out = matching.match(h_a, h_b, len_b, mask_b, side)  # (B, Ta, 2l)
    assert out.shape == (B, Ta, 2 * L)
    for b in range(B):
        for k, half in enumerate(("fw", "bw")):
            part = slice(0, H) if half == "fw" else slice(H, 2 * H)
            W = matching.W[f"{side}_{strategy}_{half}"]
            ref = ref_match_one(h_a[b, :, part], h_b[b, :, part], int(len_b[b]), W, strategy, half)
            torch.testing.assert_close(out[b, :, k * L : (k + 1) * L], ref, atol=1e-5, rtol=0)


def test_forward_shares_the_cosine_matrix_between_directions_without_changing_results():
    # forward() computes alpha = cos(p_i, q_j) once and hands Q->P its transpose; the result must
    # equal match() computing each direction's alpha itself.
    model = small_model().double().eval()
    g = torch.Generator().manual_seed(5)
    H = SMALL["hidden"]
    h_p = torch.randn(3, 5, 2 * H, generator=g, dtype=torch.float64)
    h_q = torch.randn(3, 7, 2 * H, generator=g, dtype=torch.float64)
    len_p, len_q = torch.tensor([5, 2, 4]), torch.tensor([7, 7, 1])
    mask_p = torch.arange(5)[None] < len_p[:, None]
    mask_q = torch.arange(7)[None] < len_q[:, None]
    m_p, m_q = model.matching(h_p, h_q, len_p, len_q, mask_p, mask_q)
    torch.testing.assert_close(m_p, model.matching.match(h_p, h_q, len_q, mask_q, "p2q"))
    torch.testing.assert_close(m_q, model.matching.match(h_q, h_p, len_p, mask_p, "q2p"))


@pytest.mark.parametrize("shared", [False, True], ids=["separate_W", "shared_W"])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("strategies", [STRATEGIES, *((s,) for s in STRATEGIES)], ids="+".join)
def test_plain_and_fast_matching_give_the_same_outputs_and_gradients(strategies, direction, shared):
    # fast_matching=True swaps in hand-written backward passes; the plain f_m is the definition.
    # Both halves of every enabled strategy, for each direction, on a padded batch whose padded
    # positions hold large values (they would win every max unless masked). The whole-model
    # test below has the model's zeros at padding instead.
    cfg = {**SMALL, **{s: s in strategies for s in STRATEGIES}}
    cfg.update(direction=direction, share_w_across_directions=shared)
    torch.manual_seed(0)
    layers = {
        fast: MultiPerspectiveMatching(paper_model_config(**cfg, fast_matching=fast))
        .double()
        .eval()
        for fast in (False, True)
    }
    layers[True].load_state_dict(layers[False].state_dict())
    g = torch.Generator().manual_seed(9)
    H = SMALL["hidden"]
    len_p, len_q = torch.tensor([5, 2, 4, 1]), torch.tensor([7, 3, 1, 6])
    mask_p = torch.arange(5)[None] < len_p[:, None]  # (B, Tp)
    mask_q = torch.arange(7)[None] < len_q[:, None]  # (B, Tq)
    h = []
    for T, mask in ((5, mask_p), (7, mask_q)):
        x = torch.randn(4, T, 2 * H, generator=g, dtype=torch.float64)
        h.append(torch.where(mask[..., None], x, 50.0 * x.abs()))  # (B, T, 2H)
    upstream = [torch.randn(4, T, 8 * L, generator=g, dtype=torch.float64) for T in (5, 7)]

    outputs, grads = {}, {}
    for fast, layer in layers.items():
        h_p, h_q = (x.clone().requires_grad_() for x in h)
        m_p, m_q = layer(h_p, h_q, len_p, len_q, mask_p, mask_q)  # (B, Tp, M), (B, Tq, M)
        assert (m_p is None, m_q is None) == (direction == "q2p", direction == "p2q")
        outputs[fast] = [m for m in (m_p, m_q) if m is not None]
        loss = sum(
            (m * u[..., : m.size(-1)]).sum()
            for m, u in zip((m_p, m_q), upstream, strict=True)
            if m is not None
        )
        wrt = {"h_p": h_p, "h_q": h_q, **layer.W}
        grads[fast] = dict(zip(wrt, torch.autograd.grad(loss, list(wrt.values())), strict=True))
    for plain, fast in zip(outputs[False], outputs[True], strict=True):
        torch.testing.assert_close(fast, plain, atol=1e-12, rtol=1e-10)
    assert grads[False].keys() == grads[True].keys()
    for name, plain in grads[False].items():
        torch.testing.assert_close(grads[True][name], plain, atol=1e-12, rtol=1e-10, msg=name)


@pytest.mark.slow  # ~5-10 s: runs in full's preflight and CI's slow step, not in every shapes
@pytest.mark.parametrize("chunk_elements", [2**20, 4 * 3 * 6 * 2])  # whole batch; 2-row slices
def test_fast_max_pooling_gradients_match_autograd_through_the_plain_ops(
    chunk_elements, monkeypatch
):
    # fast_matching's max-pooling has a hand-written backward; compare it with autograd through
    # masked all-pairs cosines + amax (distinct values, so the max has no ties), and gradcheck it.
    # On CPU it runs on slices of the batch: sliced or not, the numbers must be the same.
    monkeypatch.setattr(fast_matching, "CPU_CHUNK_ELEMENTS", chunk_elements)

    def max_pool_cosine(a, b, w, mask):
        return fast_matching.max_pool_cosine(a, b, w, mask, EPS)

    g = torch.Generator().manual_seed(6)
    B, Ti, Tj, d = 3, 4, 5, 6
    v1 = torch.randn(B, Ti, d, generator=g, dtype=torch.float64, requires_grad=True)
    v2 = torch.randn(B, Tj, d, generator=g, dtype=torch.float64)
    v2[1, 3:] = 0.0  # zero rows, as at padded positions: the norm clamp must not give NaN
    v2.requires_grad_(True)
    W = torch.randn(L, d, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(Tj)[None] < torch.tensor([5, 3, 2])[:, None]

    def plain(a, b, w):
        W2 = w * w
        num = torch.einsum("bid,kd,bjd->bikj", a, W2, b)
        n1 = ((a * a) @ W2.t()).clamp_min(EPS * EPS).sqrt()  # (B, Ti, L)
        n2 = ((b * b) @ W2.t()).clamp_min(EPS * EPS).sqrt()  # (B, Tj, L)
        cos = num / (n1[..., None] * n2.transpose(1, 2)[:, None])
        return cos.masked_fill(~mask[:, None, None, :], float("-inf")).amax(-1)

    upstream = torch.randn(B, Ti, L, generator=g, dtype=torch.float64)
    fast = torch.autograd.grad((max_pool_cosine(v1, v2, W, mask) * upstream).sum(), (v1, v2, W))
    ref = torch.autograd.grad((plain(v1, v2, W) * upstream).sum(), (v1, v2, W))
    for f, r in zip(fast, ref, strict=True):
        torch.testing.assert_close(f, r, atol=1e-10, rtol=1e-8)
    assert torch.autograd.gradcheck(lambda a, b, w: max_pool_cosine(a, b, w, mask), (v1, v2, W))


def test_fast_aligned_cosine_gradients_match_autograd_through_the_plain_ops():
    # fast_matching's aligned cosine (full, attentive and max-attentive stacked, each with its
    # own W) has a hand-written backward: compare it with autograd through the plain formula,
    # and gradcheck.
    def aligned_cosine(a, b, w):
        return fast_matching.aligned_cosine(a, b, w, EPS)

    g = torch.Generator().manual_seed(7)
    S, B, T, d = 3, 2, 4, 5
    v1 = torch.randn(B, T, d, generator=g, dtype=torch.float64)
    v1[1, 3] = 0.0  # a zero row (padding): the norm clamp must give 0 and a finite gradient
    v1.requires_grad_(True)
    v2 = torch.randn(S, B, T, d, generator=g, dtype=torch.float64)
    v2[2, 0, 1] = 0.0
    v2.requires_grad_(True)
    W = torch.randn(S, L, d, generator=g, dtype=torch.float64, requires_grad=True)

    def plain(a, b, w):  # (S, B, T, L): cos(W_k o a_i, W_k o b_i) per strategy, clamped norms
        Wk = w[:, None, None]  # (S, 1, 1, L, d)
        x, y = Wk * a[None, :, :, None], Wk * b[:, :, :, None]  # (S, B, T, L, d)
        return (x * y).sum(-1) / (x.norm(dim=-1).clamp_min(EPS) * y.norm(dim=-1).clamp_min(EPS))

    upstream = torch.randn(S, B, T, L, generator=g, dtype=torch.float64)
    fast_out = aligned_cosine(v1, v2, W)
    torch.testing.assert_close(fast_out, plain(v1, v2, W), atol=1e-12, rtol=0)
    assert fast_out[:, 1, 3].abs().max() == 0
    fast = torch.autograd.grad((fast_out * upstream).sum(), (v1, v2, W))
    ref = torch.autograd.grad((plain(v1, v2, W) * upstream).sum(), (v1, v2, W))
    for f, r in zip(fast, ref, strict=True):
        assert torch.isfinite(f).all()
        torch.testing.assert_close(f, r, atol=1e-10, rtol=1e-8)
    # gradcheck away from the zero rows (where the clamp makes f_m non-differentiable).
    smooth = [x.detach().clone().add_(0.5).requires_grad_(True) for x in (v1, v2)]
    assert torch.autograd.gradcheck(aligned_cosine, (*smooth, W))


def test_all_strategies_are_concatenated_forward_then_backward_in_paper_order():
    model = small_model().double().eval()
    g = torch.Generator().manual_seed(2)
    H = SMALL["hidden"]
    h_a = torch.randn(2, 4, 2 * H, generator=g, dtype=torch.float64)
    h_b = torch.randn(2, 3, 2 * H, generator=g, dtype=torch.float64)
    len_b = torch.tensor([3, 1])
    mask_b = torch.arange(3)[None] < len_b[:, None]
    fast = model.matching.match(h_a, h_b, len_b, mask_b, "q2p")  # (2, 4, 8l)
    assert fast.shape == (2, 4, 8 * L)
    for k, (half, strategy) in enumerate((h, s) for h in ("fw", "bw") for s in STRATEGIES):
        part = slice(0, H) if half == "fw" else slice(H, 2 * H)
        W = model.matching.W[f"q2p_{strategy}_{half}"]
        ref = ref_match_one(h_a[1, :, part], h_b[1, :, part], 1, W, strategy, half)
        torch.testing.assert_close(fast[1, :, k * L : (k + 1) * L], ref, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Recurrent layers: fast_recurrence.py (padded tensors) gives the numbers of model.py's packed
# LSTMs, and the checkpoints of either path load into the other.
# ---------------------------------------------------------------------------------------------


def test_fast_bilstm_equals_the_packed_one_outputs_finals_and_gradients():
    torch.manual_seed(0)
    packed = BiLSTM(5, 4).double()  # nn.LSTM(bidirectional=True) on a packed sequence
    fast = fast_recurrence.BiLSTM(5, 4).double()
    fast.load_state_dict(packed.state_dict())  # lstm.<w>_reverse -> bw.<w>: the same weights
    torch.testing.assert_close(fast.bw.weight_hh_l0, packed.lstm.weight_hh_l0_reverse)
    lengths = torch.tensor([3, 6, 1, 4])
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    x[torch.arange(6)[None] >= lengths[:, None]] = 50.0  # padding: large, it must not count
    w = torch.randn(4, 6, 8, dtype=torch.float64)
    results = {}
    for name, lstm in (("packed", packed), ("fast", fast)):
        xi = x.clone().requires_grad_()
        out, finals = lstm(xi, lengths)  # (4, 6, 8), (4, 8)
        assert lstm(xi, lengths, outputs=False)[0] is None
        assert out[0, 3:].abs().max() == 0  # zeros at padding
        grads = torch.autograd.grad((out * w).sum() + finals.sum(), [xi, *lstm.parameters()])
        assert grads[0][0, 3:].abs().max() == 0  # padding gets no gradient
        results[name] = (out, finals, *grads)
    # Parameters in the same order in both layouts (fw.<w> = lstm.<w>, bw.<w> = lstm.<w>_reverse).
    for a, b in zip(results["fast"], results["packed"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_character_lstm_states_equal_one_word_at_a_time(fast):
    # fast_recurrence groups the words by length (no padding); model.py packs them.
    net = small_model(fast_recurrence=fast).double().eval()
    g = torch.Generator().manual_seed(6)
    pw, pc = random_sentences(3, [4, 2, 5], 6, 5, g)  # words of 1..5 characters
    qw, qc = random_sentences(3, [3, 6, 1], 6, 4, g)
    x_p, x_q = net.word(pw, pc, qw, qc)  # (B, T, word_dim + char_hidden)
    word = net.word
    for words, chars, x in ((pw, pc, x_p), (qw, qc, x_q)):
        for b, t in zip(*torch.nonzero(words, as_tuple=True), strict=True):
            n = int((chars[b, t] != 0).sum())
            _, (h, _) = word.char_lstm(word.char_emb(chars[b, t, :n])[None])  # one word alone
            torch.testing.assert_close(x[b, t, -h.size(-1) :], h[0, 0], atol=1e-12, rtol=0)
        assert x[..., -word.char_hidden :][words == 0].abs().max() == 0  # padded words: zeros


def test_character_lstm_paths_agree_on_values_and_gradients():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 3, batch_first=True).double()
    lengths = torch.tensor([2, 5, 1, 5, 3, 2])  # ties and gaps: groups of 1, 2 and 3 words
    chars = torch.randn(6, 5, 4, dtype=torch.float64)
    chars[torch.arange(5)[None] >= lengths[:, None]] = 0.0  # padded characters embed to 0
    w = torch.randn(6, 3, dtype=torch.float64)
    results = []
    for char_states in (last_char_states, fast_recurrence.last_char_states):
        c = chars.clone().requires_grad_()
        h = char_states(lstm, c, lengths)  # (6, 3)
        results.append((h, *torch.autograd.grad((h * w).sum(), [c, *lstm.parameters()])))
    for plain, fast in zip(*results, strict=True):
        torch.testing.assert_close(fast, plain, atol=1e-12, rtol=0)
    for char_states in (last_char_states, fast_recurrence.last_char_states):  # no words
        assert char_states(lstm, chars[:0], lengths[:0]).shape == (0, 3)


def test_a_seeded_build_gives_both_recurrence_paths_the_same_weights_in_the_same_order():
    # torch's init and repro's (apply_init, as a gate builds the model) draw in parameter order,
    # and an optimizer's per-parameter state saved with one path lines up with the other's.
    named = {}
    for fast in (False, True):
        net = small_model(fast_recurrence=fast)
        init = apply_init(net)
        assert init["context.lstm." + ("fw.weight_ih_l0" if fast else "lstm.weight_ih_l0")]
        named[fast] = dict(net.named_parameters())
    packed, fast = in_fast_names(named[False]), named[True]
    assert list(packed) == list(fast)
    for name, p in fast.items():
        assert torch.equal(p, packed[name]), name


@pytest.mark.slow  # ~4 s: runs in full's preflight and CI's slow step, not in every shapes
@pytest.mark.parametrize("trained_fast", [True, False], ids=["fast->plain", "plain->fast"])
def test_a_checkpoint_of_either_recurrence_path_loads_into_the_other(trained_fast):
    trained = small_model(fast_recurrence=trained_fast)
    with torch.no_grad():  # weights no fresh build has
        for p in trained.parameters():
            p.add_(0.1 * torch.randn_like(p))
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    torch.manual_seed(1)
    other = build_model(
        paper_model_config(**SMALL, fast_recurrence=not trained_fast),
        vocab_size=VOCAB,
        num_chars=CHARS,
        num_classes=CLASSES,
    )
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer))  # strict: every key found, none left over
    g = torch.Generator().manual_seed(11)
    batch = (*random_sentences(3, [4, 2, 6], 6, 4, g), *random_sentences(3, [5, 5, 1], 5, 4, g))
    trained, other = trained.double().eval(), other.double().eval()
    torch.testing.assert_close(other(*batch), trained(*batch), atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# Whole model: the plain and fast paths, padding, batch size 1, no NaN.
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # ~8 s: runs in full's preflight and CI's slow step, not in every shapes
@pytest.mark.parametrize(
    "fast",
    [dict(fast_matching=True), dict(fast_recurrence=True), PATHS["fast"]],
    ids=["fast_matching", "fast_recurrence", "both"],
)
def test_plain_and_fast_models_give_the_same_logits_and_gradients(fast):
    # Padded batches of uneven lengths (the model's zeros at padding), dropout on (the same
    # masks for both: the same seed, and the fast paths draw no random numbers of their own).
    g = torch.Generator().manual_seed(10)
    batch = (
        *random_sentences(4, [5, 3, 7, 1], 7, 4, g),
        *random_sentences(4, [6, 2, 2, 4], 6, 4, g),
    )
    y = torch.tensor([0, 1, 2, 1])
    logits, grads = {}, {}
    for name, flags in (("plain", PATHS["plain"]), ("fast", {**PATHS["plain"], **fast})):
        net = small_model(**flags).double().train()
        torch.manual_seed(1)
        logits[name] = net(*batch)  # (B, C)
        torch.nn.functional.cross_entropy(logits[name], y).backward()
        named = {n: p.grad for n, p in net.named_parameters() if p.requires_grad}
        grads[name] = in_fast_names(named)
    torch.testing.assert_close(logits["fast"], logits["plain"], atol=1e-12, rtol=1e-10)
    assert grads["fast"].keys() == grads["plain"].keys()
    for name, plain in grads["plain"].items():
        torch.testing.assert_close(grads["fast"][name], plain, atol=1e-12, rtol=1e-9, msg=name)


@pytest.mark.parametrize("path", PATHS)
def test_pair_logits_are_the_same_alone_and_padded_in_a_batch(path):
    model = small_model(**PATHS[path]).eval()
    g = torch.Generator().manual_seed(3)
    pw, pc = random_sentences(1, [4], 4, 3, g)
    qw, qc = random_sentences(1, [6], 6, 3, g)
    alone = model(pw, pc, qw, qc)  # (1, C)
    assert alone.shape == (1, CLASSES)

    bpw, bpc = random_sentences(3, [9, 4, 11], 11, 5, g)
    bqw, bqc = random_sentences(3, [8, 6, 12], 12, 5, g)
    bpw[1], bqw[1] = 0, 0
    bpc[1], bqc[1] = 0, 0
    bpw[1, :4], bpc[1, :4, :3] = pw[0], pc[0]
    bqw[1, :6], bqc[1, :6, :3] = qw[0], qc[0]
    batched = model(bpw, bpc, bqw, bqc)  # (3, C)
    torch.testing.assert_close(batched[1:2], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", PATHS)
def test_padded_words_and_empty_rows_give_finite_logits_and_gradients(path):
    model = small_model(**PATHS[path]).train()
    g = torch.Generator().manual_seed(4)
    pw, pc = random_sentences(2, [3, 7], 9, 4, g)
    qw, qc = random_sentences(2, [1, 5], 5, 4, g)
    qw[0] = 0  # a fully padded sentence must not crash or produce NaN
    qc[0] = 0
    logits = model(pw, pc, qw, qc)
    logits.sum().backward()
    assert torch.isfinite(logits).all()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.isfinite(p.grad).all(), name


# ---------------------------------------------------------------------------------------------
# Ablations change exactly the intended parameters and widths.
# ---------------------------------------------------------------------------------------------


def shapes(**overrides) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in small_model(**overrides).named_parameters()}


def W_names(sides, strategies=STRATEGIES):
    return {f"matching.W.{sd}{s}_{h}" for sd in sides for s in strategies for h in ("fw", "bw")}


FULL = shapes()
D, C5, H, A = SMALL["word_dim"], SMALL["char_hidden"], SMALL["hidden"], SMALL["agg_hidden"]
AGG_IN = ["aggregation.lstm.fw.weight_ih_l0", "aggregation.lstm.bw.weight_ih_l0"]
CTX_IN = ["context.lstm.fw.weight_ih_l0", "context.lstm.bw.weight_ih_l0"]


def assert_only_changes(ablated: dict, removed: set, changed: dict):
    assert set(FULL) - set(ablated) == removed
    assert set(ablated) - set(FULL) == set()
    for name, shape in ablated.items():
        assert shape == changed.get(name, FULL[name]), name


def test_full_config_has_sixteen_W_of_shape_l_by_hidden():
    Ws = {n: s for n, s in FULL.items() if n.startswith("matching.W.")}
    assert set(Ws) == W_names(("p2q_", "q2p_"))
    assert set(Ws.values()) == {(L, H)}
    assert FULL[AGG_IN[0]] == (4 * A, 8 * L)
    assert FULL["prediction.mlp.0.weight"] == (SMALL["mlp_hidden"], 4 * A)
    assert FULL[CTX_IN[0]] == (4 * H, D + C5)


def test_without_chars_drops_char_layers_and_narrows_context_input():
    char_params = {n for n in FULL if n.startswith(("word.char_emb", "word.char_lstm"))}
    assert char_params and "word.char_emb.weight" in char_params
    assert_only_changes(shapes(use_chars=False), char_params, {n: (4 * H, D) for n in CTX_IN})


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_without_a_strategy_drops_its_W_and_narrows_aggregation_input(strategy):
    assert_only_changes(
        shapes(**{strategy: False}),
        W_names(("p2q_", "q2p_"), (strategy,)),
        {n: (4 * A, 6 * L) for n in AGG_IN},
    )


@pytest.mark.parametrize("direction", ["p2q", "q2p"])
def test_one_direction_keeps_its_W_and_halves_the_prediction_input(direction):
    other = "q2p_" if direction == "p2q" else "p2q_"
    assert_only_changes(
        shapes(direction=direction),
        W_names((other,)),
        {"prediction.mlp.0.weight": (SMALL["mlp_hidden"], 2 * A)},
    )


def test_one_direction_aggregates_only_its_own_sentence():
    g = torch.Generator().manual_seed(5)
    pw, pc = random_sentences(2, [3, 5], 5, 3, g)
    qw, qc = random_sentences(2, [4, 2], 4, 3, g)
    model = small_model(direction="p2q").eval()
    calls = []
    model.aggregation.lstm.register_forward_hook(lambda m, i, o: calls.append(i))
    model(pw, pc, qw, qc)
    assert len(calls) == 1  # only P's matching sequence exists
    x, lengths = calls[0][:2]
    assert x.shape[:2] == (2, 5) and lengths.tolist() == [3, 5]  # over P's real tokens


def test_shared_W_has_eight_unprefixed_W():
    shared = shapes(share_w_across_directions=True)
    Ws = {n for n in shared if n.startswith("matching.W.")}
    assert Ws == W_names(("",))
    assert {n: s for n, s in shared.items() if n not in Ws} == {
        n: s for n, s in FULL.items() if not n.startswith("matching.W.")
    }


def test_perspectives_change_W_shapes_and_aggregation_width():
    ablated = shapes(perspectives=5)
    changed = {n: (5, H) for n in W_names(("p2q_", "q2p_"))}
    changed.update({n: (4 * A, 8 * 5) for n in AGG_IN})
    assert_only_changes(ablated, set(), changed)


# ---------------------------------------------------------------------------------------------
# Gradients, config validation, determinism.
# ---------------------------------------------------------------------------------------------


def test_every_trainable_parameter_gets_a_gradient_and_frozen_vectors_none():
    model = small_model().train()
    for m in model.modules():  # repro zeroes biases after build_model: must still train
        for name, p in m.named_parameters(recurse=False):
            if "bias" in name:
                torch.nn.init.zeros_(p)
    g = torch.Generator().manual_seed(6)
    pw, pc = random_sentences(4, [5, 3, 7, 2], 7, 4, g)
    qw, qc = random_sentences(4, [6, 6, 2, 4], 6, 4, g)
    y = torch.tensor([0, 1, 2, 1])
    torch.nn.functional.cross_entropy(model(pw, pc, qw, qc), y).backward()
    assert model.word.word_emb.weight.requires_grad is False
    assert model.word.word_emb.weight.grad is None
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) > 20
    for name, p in trainable:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def paper_yaml(paper: str = "bimpm") -> dict:
    return yaml.safe_load((CONF / "paper" / f"{paper}.yaml").read_text())


@pytest.mark.parametrize("paper", ["bimpm", "bimpm_wikiqa"])
def test_every_model_value_lives_in_the_paper_yaml_with_its_provenance(paper):
    # One default per value: the dataclass declares types and bounds, the YAML the values.
    fields = dataclasses.fields(BiMPMConfig)
    assert [f.name for f in fields if f.default is not dataclasses.MISSING] == []
    assert [f.name for f in fields if f.default_factory is not dataclasses.MISSING] == []
    config = paper_yaml(paper)
    assert sorted(config["model"]) == sorted(f.name for f in fields)
    provenance = config["paper"]["provenance"]
    assert [f.name for f in fields if f"model.{f.name}" not in provenance] == []


def repro_model_config(overrides: list[str]):
    """What repro passes build_model as its first argument (StageContext.model_config), with
    build_model imported as repro imports it (other tests may have swapped the paper's modules)."""
    project = find_project(CONF.parent)
    ctx = StageContext(project, "bimpm", compose(project, "bimpm", overrides), Console())
    return ctx.model_config(import_paper_module(project, "bimpm", "model", "build_model"))


def test_repro_hands_build_model_the_typed_model_section_of_the_paper_yaml():
    cfg = repro_model_config([])
    assert type(cfg).__name__ == "BiMPMConfig"
    assert dataclasses.asdict(cfg) == dataclasses.asdict(paper_model_config())
    assert (cfg.fast_matching, cfg.fast_recurrence) == (True, True)  # the fast paths by default


def test_no_matching_strategy_is_a_one_line_config_error_naming_where_it_was_set():
    # __post_init__ raises a plain ValueError (model.py imports nothing from repro); repro turns
    # it into a one-line error about the `model:` section.
    with pytest.raises(ConfigError) as err:
        repro_model_config([f"model.{s}=false" for s in STRATEGIES])
    assert str(err.value) == (
        "model (set on the command line): expected at least one matching strategy of full, "
        "maxpool, attentive, max_attentive true, found all false"
    )


def test_bad_model_values_name_the_key_and_what_was_expected():
    values = paper_yaml()["model"]
    with pytest.raises(ConfigError) as err:
        from_dict(BiMPMConfig, values | {"hiden": 100}, "model")
    msg = str(err.value)
    assert msg.startswith("model.hiden: unknown key")
    for key in ("hidden", "perspectives", "direction", "share_w_across_directions"):
        assert key in msg
    with pytest.raises(ConfigError, match=r"^model\.hidden: expected an integer, found no such"):
        from_dict(BiMPMConfig, {k: v for k, v in values.items() if k != "hidden"}, "model")
    with pytest.raises(
        ConfigError, match=r"model\.perspectives: expected an integer >= 1, found 0"
    ):
        paper_model_config(perspectives=0)
    with pytest.raises(ConfigError, match=r"model\.dropout: expected a number < 1, found 1"):
        paper_model_config(dropout=1)
    with pytest.raises(
        ConfigError, match=r"model\.dropout_mask: expected one of \['shared', 'independent'\]"
    ):
        paper_model_config(dropout_mask="sometimes")
    assert paper_model_config(perspectives=5).perspectives == 5


def test_build_model_rejects_word_vectors_of_the_wrong_shape():
    cfg = paper_model_config(**SMALL)
    with pytest.raises(ValueError, match=r"\(50, 11\).*\(50, 10\)"):
        build_model(
            cfg,
            vocab_size=VOCAB,
            num_chars=CHARS,
            num_classes=2,
            word_vectors=torch.zeros(VOCAB, 11),
        )
    vectors = torch.randn(VOCAB, SMALL["word_dim"])
    model = build_model(cfg, vocab_size=VOCAB, num_chars=CHARS, num_classes=2, word_vectors=vectors)
    torch.testing.assert_close(model.word.word_emb.weight, vectors)


def test_same_seed_gives_identical_logits():
    g = torch.Generator().manual_seed(7)
    batch = (*random_sentences(2, [4, 2], 4, 3, g), *random_sentences(2, [3, 5], 5, 3, g))
    first = small_model().train()(*batch)  # small_model seeds init; dropout takes the next draws
    second = small_model().train()(*batch)
    assert torch.equal(first, second)


def test_embedding_outputs_are_batch_first_and_examples_do_not_mix():
    """What repro's batch-leak check relies on: dim 0 of every nn.Embedding output is the batch,
    and example i's logits depend on row i only."""
    model = small_model().eval()
    captured = []

    def capture(module, inputs, output):
        output = output.detach().requires_grad_()
        captured.append(output)
        return output

    for m in model.modules():
        if isinstance(m, torch.nn.Embedding):
            m.register_forward_hook(capture)
    g = torch.Generator().manual_seed(8)
    B = 3
    pw, pc = random_sentences(B, [4, 6, 2], 6, 3, g)
    qw, qc = random_sentences(B, [5, 3, 3], 5, 3, g)
    model(pw, pc, qw, qc)[1].sum().backward()
    assert len(captured) == 4  # word and char embeddings, for P and for Q
    for out in captured:
        assert out.size(0) == B
        assert out.grad[[0, 2]].abs().sum() == 0
        assert out.grad[1].abs().sum() > 0


def test_pair_dropout_shared_mask_keeps_equal_vectors_equal():
    """Shared masks: equal P and Q rows stay equal in training (cosine 1); independent: they differ."""
    from papers.bimpm.model import PairDropout

    torch.manual_seed(0)
    a = torch.randn(4, 5, 16)
    b = a[:, :3].clone()  # Q = the first 3 steps of P
    shared = PairDropout(0.3, shared=True).train()
    pa, pb = shared(a, b)
    assert torch.equal(pa[:, :3], pb)
    assert (pa == 0).any()  # something was dropped
    indep = PairDropout(0.3, shared=False).train()
    qa, qb = indep(a, b)
    assert not torch.equal(qa[:, :3], qb)
    ea, eb = shared.eval()(a, b)
    assert torch.equal(ea, a) and torch.equal(eb, b)  # eval: identity
