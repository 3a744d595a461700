"""The whole BiMPM model (Wang, Hamza & Florian 2017, arXiv:1702.03814) lives in this one file.

Layers run in paper order: word representation -> context representation -> multi-perspective
matching -> aggregation -> prediction. Pure torch: no Lightning, Hydra or file IO.

Shape letters: B batch, T sentence length (Tp, Tq for P and Q), K characters per word,
D word-representation width, H context-LSTM units per direction, L perspectives (paper's l),
M matching-vector width, A aggregation-LSTM units per direction, C classes.
Inputs use id 0 as padding, and padding sits at the end of each row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from papers.bimpm import fast_matching, fast_recurrence

POSITIVE = {"ge": 1}  # field metadata: repro checks the bound before a run starts

# Guards every cosine norm and the attentive-mean denominator against division by zero.
# UNSTATED: the paper gives no epsilon; 1e-8 matches torch.nn.functional.cosine_similarity.
EPS = 1e-8

STRATEGIES = ("full", "maxpool", "attentive", "max_attentive")
HALVES = ("fw", "bw")
DIRECTIONS = ("both", "p2q", "q2p")


@dataclass
class BiMPMConfig:
    """The `model:` keys. Their values live in conf/paper/bimpm.yaml, each with its provenance
    (conf/paper/bimpm_wikiqa.yaml for answer selection); this declares their types and bounds.
    repro checks the section against it and hands build_model an instance."""

    # paper, Model Overview / Word Representation Layer: fixed word vectors of word_dim, and
    # characters embedded in char_dim and read by an LSTM of char_hidden units
    word_dim: int = field(metadata=POSITIVE)
    char_dim: int = field(metadata=POSITIVE)
    char_hidden: int = field(metadata=POSITIVE)
    hidden: int = field(metadata=POSITIVE)  # paper, Model Overview / Context Representation Layer
    agg_hidden: int = field(metadata=POSITIVE)  # paper, Model Overview / Aggregation Layer
    perspectives: int = field(metadata=POSITIVE)  # paper's l, Experiments (Figure 3 varies it)
    # paper, Experiment Settings: dropout on every layer's output
    dropout: float = field(metadata={"ge": 0, "lt": 1})
    # UNSTATED by the paper: a fixed width, with tanh. authors-code uses half the prediction
    # input, which is 4 * agg_hidden / 2 = 200 at paper sizes; here it stays as set when
    # agg_hidden or the matching direction (one direction halves the input) changes.
    mlp_hidden: int = field(metadata=POSITIVE)
    use_chars: bool  # paper, Table 1 ablation "w/o character"
    full: bool  # paper, Matching Layer (Table 1 ablates each strategy)
    maxpool: bool  # paper, Matching Layer
    attentive: bool  # paper, Matching Layer
    max_attentive: bool  # paper, Matching Layer
    # paper, Table 1 ablation: "both" = bilateral; "p2q" = only P->Q (each time step of P is
    # matched against all of Q, so only P's matching sequence exists); "q2p" = only Q->P.
    direction: Literal["both", "p2q", "q2p"]
    # UNSTATED by the paper: authors-code keeps separate W's for the two matching directions
    # (False); most reimplementations share them (True).
    share_w_across_directions: bool
    freeze_word_vectors: bool  # paper, Experiment Settings: word vectors fixed
    # DEVIATION from authors-code (which drops P and Q with independent masks): "shared" draws one
    # dropout mask per pair and feature for the word and context representations and applies it
    # to P and Q alike, so that equal words still have cosine 1 while training. With independent
    # masks they never do, eval-mode cosines fall outside what training saw, and on the sample
    # BiMPM stalls at val 56-68% (97% with shared masks). "independent" restores authors-code.
    dropout_mask: Literal["shared", "independent"]
    # Not the paper's: implementation choices, the same maths either way (tests check it).
    # fast_matching: f_m from fast_matching.py (hand-written backward passes) instead of the
    # plain functions below. fast_recurrence: the LSTMs of fast_recurrence.py (padded tensors,
    # no packing) instead of the packed ones below.
    fast_matching: bool
    fast_recurrence: bool

    def __post_init__(self) -> None:
        # A plain ValueError: repro reports it as a one-line error about the `model:` section.
        if not any(getattr(self, s) for s in STRATEGIES):
            raise ValueError(
                f"expected at least one matching strategy of {', '.join(STRATEGIES)} true, "
                "found all false"
            )

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(s for s in STRATEGIES if getattr(self, s))

    @property
    def matching_dim(self) -> int:
        """Width of one matching vector: l per enabled strategy, for forward and backward."""
        return 2 * self.perspectives * len(self.strategies)


MODEL_CONFIG = BiMPMConfig  # repro checks the `model:` keys against it before a run starts


def lengths_and_mask(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real lengths (>= 1, so an empty row never crashes packing) and the matching mask."""
    lengths = (ids != 0).sum(-1).clamp_min(1)  # (B,)
    mask = torch.arange(ids.size(-1), device=ids.device) < lengths[:, None]  # (B, T)
    return lengths, mask


class BiLSTM(nn.Module):
    """A bidirectional LSTM over the real tokens of right-padded rows: a packed sequence through
    nn.LSTM(bidirectional=True). fast_recurrence.BiLSTM computes the same on padded tensors
    (BiMPMConfig.fast_recurrence); tests check that the two agree."""

    def __init__(self, in_dim: int, units: int):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, units, batch_first=True, bidirectional=True)
        # A checkpoint of fast_recurrence.BiLSTM (its fw./bw. names) loads too.
        self._register_load_state_dict_pre_hook(fast_recurrence.to_packed_names)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, outputs: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """x (B, T, in), lengths (B,) >= 1 -> per-step outputs (B, T, 2 units), zeros at
        padding (None when outputs=False), and final states (B, 2 units): the forward state at
        the last real token and the backward state at the first."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)  # h_n (2, B, units): forward, backward
        finals = torch.cat([h_n[0], h_n[1]], dim=-1)  # (B, 2 units)
        if not outputs:
            return None, finals
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return out, finals  # (B, T, 2 units), (B, 2 units)


def last_char_states(lstm: nn.LSTM, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The LSTM's state after each word's last character: chars (N, K, char_dim), the embedded
    characters of N words, each padded after its lengths[n] >= 1 characters -> (N, hidden).
    fast_recurrence.last_char_states computes the same without packing."""
    if lengths.numel() == 0:  # no word in the whole batch: nothing to pack
        return chars.new_zeros(0, lstm.hidden_size)
    packed = pack_padded_sequence(chars, lengths.cpu(), batch_first=True, enforce_sorted=False)
    _, (h_n, _) = lstm(packed)  # (1, N, hidden), in the words' order
    return h_n[0]  # (N, hidden)


def bilstm(cfg: BiMPMConfig, in_dim: int, units: int) -> nn.Module:
    """The packed BiLSTM above, or fast_recurrence.py's (same outputs, padded tensors)."""
    return (fast_recurrence.BiLSTM if cfg.fast_recurrence else BiLSTM)(in_dim, units)


# ---------------------------------------------------------------------------------------------
# paper, Multi-perspective Matching Operation: m = f_m(v1, v2; W), W in R^{l x d},
#   m_k = cos(W_k o v1, W_k o v2), k = 1..l.
# These plain functions are the definition. fast_matching.py computes the same with
# hand-written backward passes (BiMPMConfig.fast_matching); tests check that the two agree.
# ---------------------------------------------------------------------------------------------


def multi_perspective_cosine(v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """f_m: v1 (..., d) and v2 (..., d), broadcast against each other, W (L, d) -> (..., L).

    Written with W o W, which needs no l copies of v1 and v2:
        cos(W_k o v1, W_k o v2) = sum_d W_kd^2 v1_d v2_d / (||W_k o v1|| ||W_k o v2||)
        ||W_k o v||^2 = sum_d W_kd^2 v_d^2
    Each norm is at least EPS, so a zero vector (padding) gives m = 0."""
    W2 = (W * W).t()  # (d, L)
    num = (v1 * v2) @ W2  # (..., L)
    n1 = ((v1 * v1) @ W2).clamp_min(EPS * EPS).sqrt()  # (..., L)  ||W_k o v1||
    n2 = ((v2 * v2) @ W2).clamp_min(EPS * EPS).sqrt()  # (..., L)  ||W_k o v2||
    return num / (n1 * n2)  # (..., L)


def aligned_cosine(v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """f_m of each v1_i against its own partner v2_i, for S strategies (each with its own W):
    v1 (B, T, d), v2 (S, B, T, d), W (S, L, d) -> (S, B, T, L)."""
    return torch.stack(
        [multi_perspective_cosine(v1, v2_s, W_s) for v2_s, W_s in zip(v2, W, strict=True)]
    )  # (S, B, T, L)


def max_pool_cosine(
    v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor, mask2: torch.Tensor
) -> torch.Tensor:
    """Max-pooling matching: max over the real j of f_m(v1_i, v2_j), per perspective.
    v1 (B, Ti, d), v2 (B, Tj, d), W (L, d), mask2 (B, Tj) True at real tokens -> (B, Ti, L)."""
    m = multi_perspective_cosine(v1[:, :, None], v2[:, None], W)  # (B, Ti, Tj, L)
    m = m.masked_fill(~mask2[:, None, :, None], float("-inf"))  # padded j never win
    # max (not amax): a tie sends the whole gradient to one j, as fast_matching does.
    return m.max(dim=2).values  # (B, Ti, L)


def cosine_matrix(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """Plain cosine alpha_ij = cos(v1_i, v2_j): (B, Ti, d), (B, Tj, d) -> (B, Ti, Tj)."""
    n1 = v1.norm(dim=-1, keepdim=True).clamp_min(EPS)  # (B, Ti, 1)
    n2 = v2.norm(dim=-1, keepdim=True).clamp_min(EPS)  # (B, Tj, 1)
    return torch.bmm(v1 / n1, (v2 / n2).transpose(1, 2))  # (B, Ti, Tj)


def last_state(b: torch.Tensor, len_b: torch.Tensor, half: str) -> torch.Tensor:
    """Full matching's partner: the last state of b, (B, Tb, H) -> (B, H). Going forward that
    is the last *real* token; going backward, the first token."""
    idx = (len_b - 1) if half == "fw" else torch.zeros_like(len_b)  # (B,)
    return b[torch.arange(b.size(0), device=b.device), idx]  # (B, H)


def attentive_mean(alpha: torch.Tensor, b: torch.Tensor, mask_b: torch.Tensor) -> torch.Tensor:
    """Attentive matching's partner: sum_j alpha_ij b_j / sum_j alpha_ij over the real j, a
    cosine-weighted mean (not a softmax). alpha (B, Ta, Tb), b (B, Tb, H) -> (B, Ta, H).
    Cosines can be negative, so the sum is guarded only where |sum| < EPS (set to EPS)."""
    att = alpha * mask_b[:, None, :]  # (B, Ta, Tb), padded j excluded
    den = att.sum(-1, keepdim=True)  # (B, Ta, 1)
    den = torch.where(den.abs() < EPS, torch.full_like(den, EPS), den)
    return torch.bmm(att, b) / den  # (B, Ta, H)


def most_similar(alpha: torch.Tensor, b: torch.Tensor, mask_b: torch.Tensor) -> torch.Tensor:
    """Max-attentive matching's partner: the real b_j with the highest alpha_ij, the whole row
    (not an element-wise max). alpha (B, Ta, Tb), b (B, Tb, H) -> (B, Ta, H)."""
    j = alpha.masked_fill(~mask_b[:, None, :], float("-inf")).argmax(-1)  # (B, Ta)
    return torch.gather(b, 1, j[..., None].expand(-1, -1, b.size(-1)))  # (B, Ta, H)


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
        # last_char_states above (packed), or fast_recurrence.py's (same outputs, no packing).
        self.fast_recurrence = cfg.fast_recurrence

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
        # Characters of the real words of P and Q, one row per word (N, K, char_dim).
        char_len = [(c != 0).sum(-1) for c in (p_chars, q_chars)]  # (B, T): 0 at padded words
        K = max(p_chars.size(-1), q_chars.size(-1))
        rows = [
            F.pad(self.char_emb(c), (0, 0, 0, K - c.size(-1)))[n > 0]  # (N_p or N_q, K, char_dim)
            for c, n in ((p_chars, char_len[0]), (q_chars, char_len[1]))
        ]
        # The words of both sentences through the character LSTM together.
        lengths = torch.cat([n[n > 0] for n in char_len])  # (N,)
        char_states = fast_recurrence.last_char_states if self.fast_recurrence else last_char_states
        h_words = char_states(self.char_lstm, torch.cat(rows), lengths)  # (N, char_hidden)
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
        self.lstm = bilstm(cfg, in_dim, cfg.hidden)
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
        # The plain f_m above, or fast_matching.py's (same outputs, hand-written backward).
        # The throughput benchmark swaps l-fold-copy versions in for cosine and max_cosine.
        self.fast_matching = cfg.fast_matching
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

    def reset_parameters(self) -> None:
        # UNSTATED: Xavier-uniform (the glorot default of TF1's get_variable). W enters only as
        # W^2, so its sign does not matter; repro's own init does not touch these parameters.
        for w in self.W.values():
            nn.init.xavier_uniform_(w)

    def cosine(self, v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """f_m of each v1_i against its aligned v2_i, S strategies at once (each its own W):
        v1 (B, T, H), v2 (S, B, T, H), W (S, L, H) -> (S, B, T, L)."""
        if self.fast_matching:
            return fast_matching.aligned_cosine(v1, v2, W, EPS)
        return aligned_cosine(v1, v2, W)

    def max_cosine(
        self, v1: torch.Tensor, v2: torch.Tensor, W: torch.Tensor, mask2: torch.Tensor
    ) -> torch.Tensor:
        """f_m max-pooled over the real j: v1 (B, Ti, H), v2 (B, Tj, H), W (L, H),
        mask2 (B, Tj) -> (B, Ti, L)."""
        if self.fast_matching:
            return fast_matching.max_pool_cosine(v1, v2, W, mask2, EPS)
        return max_pool_cosine(v1, v2, W, mask2)

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
        prefix = "" if self.shared else f"{side}_"
        out = []
        for k, half in enumerate(HALVES):
            part = slice(0, H) if half == "fw" else slice(H, 2 * H)
            # Contiguous copies of the halves: the products below run faster on them.
            a = h_a[..., part].contiguous()  # (B, Ta, H)
            b = h_b[..., part].contiguous()  # (B, Tb, H)
            W = {s: self.W[f"{prefix}{s}_{half}"] for s in self.strategies}  # each (L, H)
            if "attentive" in W or "max_attentive" in W:
                alpha_ab = cosine_matrix(a, b) if alpha is None else alpha[k]  # (B, Ta, Tb)
            # Full, attentive and max-attentive matching each compare a_i with one vector v_i
            # built from b, and their f_m run together; max-pooling compares a_i with every b_j.
            v = {}  # each (B, Ta, H)
            if "full" in W:  # the last state of b
                v["full"] = last_state(b, len_b, half)[:, None, :].expand_as(a)  # (B, Ta, H)
            if "attentive" in W:  # the alpha-weighted mean of b
                v["attentive"] = attentive_mean(alpha_ab, b, mask_b)  # (B, Ta, H)
            if "max_attentive" in W:  # the b_j with the highest alpha_ij
                v["max_attentive"] = most_similar(alpha_ab, b, mask_b)  # (B, Ta, H)
            m = {}  # each (B, Ta, L)
            if v:  # f_m(a_i, v_i) for those strategies at once, each with its own W
                partners = torch.stack(list(v.values()))  # (S, B, Ta, H)
                aligned = self.cosine(a, partners, torch.stack([W[s] for s in v]))  # (S, B, Ta, L)
                m = dict(zip(v, aligned, strict=True))
            # Max-pooling comes last because the order of these calls fixes the order in which
            # gradients add up: keeping it keeps seeded runs bit-for-bit what they were.
            if "maxpool" in W:  # the max over real j of f_m(a_i, b_j), per perspective
                m["maxpool"] = self.max_cosine(a, b, W["maxpool"], mask_b)  # (B, Ta, L)
            out += [m[s] for s in self.strategies]  # paper order: full, maxpool, ...
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
        self.lstm = bilstm(cfg, cfg.matching_dim, cfg.agg_hidden)
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
    cfg: BiMPMConfig,
    *,
    vocab_size: int,
    num_chars: int,
    num_classes: int,
    word_vectors: torch.Tensor | None = None,
) -> BiMPM:
    """Entry point repro calls with the paper config's `model:` section, checked and typed."""
    expected = (vocab_size, cfg.word_dim)
    if word_vectors is None:
        # paper, Experiment Settings: OOV words get random vectors; with no vectors at all every
        # row is random N(0, 1) and, like the pretrained ones, fixed.
        word_vectors = torch.randn(*expected)
    elif tuple(word_vectors.shape) != expected:
        raise ValueError(
            f"word_vectors has shape {tuple(word_vectors.shape)}, expected "
            f"(vocab_size, word_dim) = {expected}"
        )
    return BiMPM(cfg, word_vectors.float(), num_chars, num_classes)


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
