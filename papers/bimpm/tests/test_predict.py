"""BiMPM after training: its fitted state encodes as training did, its prediction reader reads
the training files and unlabelled pairs alike, and a model that ignores its second question is
caught by the shapes gate's "every input field matters" check."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from papers.bimpm.data import BiMPMDataModule, swap_questions
from papers.bimpm.model import BiMPM, build_model
from papers.bimpm.sample import make_sample
from papers.bimpm.tests.configs import data_config, paper_model_config
from repro.data.batch import model_inputs
from repro.errors import DataError
from repro.gates.invariance import check_inputs_used, measure_inputs_used, roundoff

SAMPLE = Path(make_sample.__file__).resolve().parent
REPO = SAMPLE.parents[2]


def _cfg(tmp_path: Path) -> dict:
    return {
        "dataset": "sample",
        "sample_dir": str(SAMPLE),
        "vectors": str(SAMPLE / "vectors.txt"),
        "word_dim": 50,
        "cache": False,
    }


@pytest.fixture(scope="module")
def trained_dm(tmp_path_factory) -> BiMPMDataModule:
    """The datamodule as training builds it (the cached, flat-tensor path of encode_split)."""
    dm = BiMPMDataModule(data_config(_cfg(tmp_path_factory.mktemp("dm"))), seed=0)
    dm.setup()
    return dm


def _restored(trained: BiMPMDataModule, tmp_path: Path) -> BiMPMDataModule:
    """A fresh datamodule given only the fitted state, through a weights-only save and load."""
    buf = io.BytesIO()
    torch.save(trained.fitted_state(), buf)
    buf.seek(0)
    fresh = BiMPMDataModule(data_config(_cfg(tmp_path)), seed=0)
    fresh.load_fitted_state(torch.load(buf, weights_only=True))
    return fresh


def test_predict_builds_the_tensors_the_training_loader_built(trained_dm, tmp_path):
    fresh = _restored(trained_dm, tmp_path)
    examples = fresh.read_inputs(SAMPLE / "test.tsv")  # the file, read for prediction
    assert [(e["p"], e["q"], e["label"], e["id"]) for e in examples] == [
        (e["p"], e["q"], e["label"], e["id"]) for e in trained_dm.splits["test"]
    ]
    for i, ex in enumerate(examples):
        mine, theirs = fresh.encode(ex), trained_dm.datasets["test"][i]
        assert mine.keys() == theirs.keys()
        for k in mine:
            assert mine[k].dtype == theirs[k].dtype and torch.equal(mine[k], theirs[k]), (i, k)
    batch = fresh.collate([fresh.encode(ex) for ex in examples[: trained_dm.cfg.eval_batch]])
    served = next(iter(trained_dm.test_dataloader()))
    assert batch.keys() == served.keys()
    assert all(torch.equal(batch[k], served[k]) for k in batch)
    assert fresh.model_kwargs()["vocab_size"] == trained_dm.model_kwargs()["vocab_size"]


def test_the_fitted_state_keeps_the_vectors_shape_and_the_checkpoint_restores_them(
    trained_dm, tmp_path
):
    """The vectors' values live in every checkpoint (the embedding's weight): the fitted state
    keeps their shape only, and a strict load of the trained weights gives them back."""
    state = trained_dm.fitted_state()
    assert not any(isinstance(v, torch.Tensor) and v.numel() > 1000 for v in state.values())
    fresh = _restored(trained_dm, tmp_path)
    want = trained_dm.model_kwargs()
    assert fresh.model_kwargs()["word_vectors"].shape == want["word_vectors"].shape
    small = {"hidden": 8, "agg_hidden": 8, "perspectives": 2, "char_hidden": 4, "mlp_hidden": 8}
    trained = build_model(paper_model_config(**small), **want)
    restored = build_model(paper_model_config(**small), **fresh.model_kwargs())
    restored.load_state_dict(trained.state_dict())  # strict, as repro's load_weights
    assert all(
        torch.equal(a, b)
        for a, b in zip(restored.state_dict().values(), trained.state_dict().values(), strict=True)
    )
    older = trained_dm.fitted_state() | {"word_vectors": trained_dm.word_vectors}
    again = BiMPMDataModule(data_config(_cfg(tmp_path)), seed=0)
    again.load_fitted_state(older)  # a state saved before: its vectors as they were
    assert torch.equal(again.word_vectors, trained_dm.word_vectors)


def test_unlabelled_pairs_as_tsv_or_json_lines(trained_dm, tmp_path):
    fresh = _restored(trained_dm, tmp_path)
    (tmp_path / "pairs.tsv").write_text("how do i go ?\thow can i go ?\tq1\nwhy ?\twhy not ?\n")
    a, b = fresh.read_inputs(tmp_path / "pairs.tsv")
    assert a == {
        "p": ["how", "do", "i", "go", "?"],
        "q": ["how", "can", "i", "go", "?"],
        "label": None,
        "id": "q1",
    }
    assert b["id"] == "2" and b["label"] is None
    lines = [
        {"sentence1": "how do i go ?", "sentence2": "how can i go ?", "id": "q1"},
        {"sentence1": "why ?", "sentence2": "why not ?", "label": "paraphrase"},
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    c, d = fresh.read_inputs(tmp_path / "pairs.jsonl")
    assert c == a and d["label"] == 1
    (tmp_path / "bad.tsv").write_text("one column only\n")
    with pytest.raises(DataError, match=r"bad.tsv:1: expected sentence1, sentence2\[, id\]"):
        fresh.read_inputs(tmp_path / "bad.tsv")


def test_swap_questions_swaps_the_two_sentences():
    ex = {"p": ["a"], "q": ["b", "c"], "label": 1, "id": "x"}
    assert swap_questions(ex) == {"p": ["b", "c"], "q": ["a"], "label": 1, "id": "x"}
    assert ex["p"] == ["a"]  # the original is left as it was


class IgnoresSecondQuestion(BiMPM):
    """A bug: the pair is read as (P, P)."""

    def forward(self, p_words, p_chars, q_words, q_chars):
        return super().forward(p_words, p_chars, p_words, p_chars)


@pytest.mark.slow  # ~12 s: runs in full's preflight and CI's slow step, not in every shapes
def test_a_bimpm_that_ignores_its_second_question_fails_inputs_used(trained_dm):
    from repro.config.compose import compose
    from repro.gates.invariance import shapes_checks
    from repro.project import Project

    cfg = compose(Project(REPO), "bimpm", []).cfg  # the shapes gate's own config
    small = {"hidden": 16, "agg_hidden": 16, "perspectives": 4, "char_hidden": 8, "mlp_hidden": 16}
    kwargs = trained_dm.model_kwargs()
    torch.manual_seed(0)
    good = build_model(paper_model_config(**small), **kwargs)
    torch.manual_seed(0)
    bad = build_model(paper_model_config(**small), **kwargs)
    bad.__class__ = IgnoresSecondQuestion  # the same weights, the buggy forward
    batch = trained_dm.fixed_batch("train", 32)
    assert set(model_inputs(batch)) == {"p_words", "p_chars", "q_words", "q_chars"}
    (ok,) = shapes_checks(cfg, trained_dm, good, batch)  # swap_questions is learned: not here
    assert ok.name == "inputs_used" and ok.passed, ok.reason
    assert ok.reason.startswith("each of 4 input fields, shuffled alone across 8 examples")
    (caught,) = shapes_checks(cfg, trained_dm, bad, batch)
    assert not caught.passed
    assert caught.reason.startswith("q_words (max change 0), q_chars (max change 0): each replaced")
    assert "the model ignores them" in caught.reason
    used = measure_inputs_used(bad, batch)
    allowed = check_inputs_used(
        used["fields"], roundoff(used["base"], 1000), ["q_words", "q_chars"], 32
    )
    assert (
        allowed.passed
        and "q_words, q_chars ignored, as stage.shapes.unused_inputs_ok" in allowed.reason
    )
