"""Issue 13's padding bugs injected into a small BiMPM (papers/bimpm): the shapes gate's
alone-vs-batch check fails on each for its reason, and passes on the model as written.

The bugs are injected by replacing one function of papers/bimpm; if a rewrite renames it, the
test says which one to update rather than testing nothing."""

from __future__ import annotations

import pytest
import torch

from repro.gates.shapes import run_shapes
from repro.tasks.classification import Classification
from repro.train.init import apply_init
from tests.configs import stage_config

M = pytest.importorskip("papers.bimpm.model")
FM = pytest.importorskip("papers.bimpm.fast_matching")
CONFIGS = pytest.importorskip("papers.bimpm.tests.configs")  # the paper's YAML, some values changed

SMALL = dict(
    word_dim=10, char_dim=4, char_hidden=5, hidden=8, agg_hidden=6, perspectives=3, mlp_hidden=7
)
VOCAB, CHARS, B = 50, 20, 16


def _sentences(g: torch.Generator, T: int, K: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) word ids and (B, T, K) char ids, each row padded with 0 after its own length."""
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    lengths[0] = T  # the longest row sets the batch's length, as a collate does
    words = torch.randint(2, VOCAB, (B, T), generator=g)
    chars = torch.randint(1, CHARS, (B, T, K), generator=g)
    n_chars = torch.randint(1, K + 1, (B, T), generator=g)
    chars[torch.arange(K)[None, None] >= n_chars[..., None]] = 0
    pad = torch.arange(T)[None] >= lengths[:, None]  # (B, T)
    words[pad], chars[pad] = 0, 0
    return words, chars


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    (pw, pc), (qw, qc) = _sentences(g, 9), _sentences(g, 12)
    label = torch.randint(0, 3, (B,), generator=g)
    return {"p_words": pw, "p_chars": pc, "q_words": qw, "q_chars": qc, "label": label}


def _model():
    torch.manual_seed(0)
    cfg = CONFIGS.paper_model_config(**SMALL)
    model = M.build_model(cfg, vocab_size=VOCAB, num_chars=CHARS, num_classes=3)
    return model, apply_init(model)


def _replace(monkeypatch, module, name: str, fn) -> None:
    if not hasattr(module, name):
        pytest.fail(f"{module.__name__} has no {name} any more: update this test's bug injection")
    monkeypatch.setattr(module, name, fn)


def _ignoring_lengths(ids: torch.Tensor):
    """The bug: every position counts as a real token (lengths = T, mask all True)."""
    B, T = ids.shape
    return torch.full((B,), T, dtype=torch.long), torch.ones(B, T, dtype=torch.bool)


def test_bimpm_as_written_passes_the_shapes_gate():
    model, init = _model()
    v = run_shapes(model, _batch(), Classification(3), stage_config("shapes"), None, init)
    assert v.passed, v.reason
    alone = next(c for c in v.checks if c.name == "alone_vs_batch")
    assert alone.evidence["padded_rows"] > 0 and alone.evidence["gap"] < 1e-12


def _unmasked_max_pooling(monkeypatch) -> None:
    """The bug: max-pooling matching takes its max over the padded positions of the other
    sentence too (its mask ignored)."""
    plain = FM.max_pool_cosine

    def unmasked(v1, v2, W, mask2, eps):
        return plain(v1, v2, W, torch.ones_like(mask2), eps)

    _replace(monkeypatch, FM, "max_pool_cosine", unmasked)


def _lengths_ignored(monkeypatch) -> None:
    _replace(monkeypatch, M, "lengths_and_mask", _ignoring_lengths)


@pytest.mark.parametrize("inject", [_lengths_ignored, _unmasked_max_pooling])
def test_bimpm_with_unmasked_padding_fails_alone_vs_batch(monkeypatch, inject):
    inject(monkeypatch)
    model, init = _model()
    v = run_shapes(model, _batch(), Classification(3), stage_config("shapes"), None, init)
    c = next(c for c in v.checks if c.name == "alone_vs_batch")
    assert not c.passed and not v.passed
    assert "depends on its batch-mates' padding, so padding is not masked" in c.reason
    assert "p_words" in c.reason and "q_words" in c.reason  # each sentence's own length vs batch
    assert c.evidence["pad_gap"] > 1e-6  # measured 4e-3..2e-2; the model as written: < 1e-16
    assert next(c for c in v.checks if c.name == "batch_independence").passed  # blind to it
