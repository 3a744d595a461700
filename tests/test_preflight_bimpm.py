"""The full stage's preflight on BiMPM's sample (issue 22, Done-when 4): a BiMPM that ignores the
second question, and training labels shifted by one pair, FAIL it before the full schedule
starts; the paper's BiMPM passes it. In a copy of the project, at the paper's config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rich.console import Console

from repro.project import Project
from repro.runner import run_stage

REPO = Path(__file__).resolve().parents[1]
FORWARD = "        len_p, mask_p = lengths_and_mask(p_words)  # (B,), (B, Tp)\n"
# Every pair gets the batch's first question as its second sentence: Q's words, characters and
# length are the same for all, so nothing of the real Q reaches the prediction.
IGNORE_Q = (
    "        q_words = q_words[:1].expand_as(q_words)\n"
    "        q_chars = None if q_chars is None else q_chars[:1].expand_as(q_chars)\n"
)
# The training pairs' labels rolled by one: each pair gets its neighbour's label.
ROLL_LABELS = """

_load_examples = BiMPMDataModule.load_examples


def _rolled(self):
    splits = _load_examples(self)
    train = splits["train"]
    labels = [ex["label"] for ex in train]
    splits["train"] = [{**ex, "label": y} for ex, y in zip(train, labels[1:] + labels[:1])]
    return splits


BiMPMDataModule.load_examples = _rolled
"""
NO_CACHE = ["data.cache=false"]  # the rolled labels must not come from (or go to) the cache


@pytest.fixture
def bimpm(tmp_path, monkeypatch, purge_papers) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    for name in ("conf", "papers"):
        ignore = shutil.ignore_patterns("__pycache__", "report", "REPORT.md")
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    monkeypatch.chdir(root)
    return Project(root)


def _full(project: Project, overrides: list[str]):
    return run_stage(project, "bimpm", "full", overrides, force=True, console=Console(quiet=True))


def _stopped_before_training(run) -> dict:
    assert run.data["status"] == "failed"
    assert run.data["verdict"]["reason"].startswith("preflight: learned nothing in 150 steps")
    assert not (run.dir / "fit_result.json").exists()
    assert not (run.dir / "checkpoints").exists()
    pre = run.data["preflight"]
    assert not pre["out_of_time"]
    return pre


@pytest.mark.slow  # 3 preflights of the paper's BiMPM: 50-100 s each on 2 busy cores
def test_bimpm_preflight_fails_a_model_ignoring_q_and_shifted_labels(bimpm):
    model = bimpm.paper_dir("bimpm") / "model.py"
    text = model.read_text()
    assert text.count(FORWARD) == 1
    model.write_text(text.replace(FORWARD, IGNORE_Q + FORWARD))
    ignoring = _stopped_before_training(_full(bimpm, NO_CACHE))
    assert ignoring["val"] < ignoring["trivial_val"] + 5  # measured: 46.6 vs 50
    model.write_text(text)

    data = bimpm.paper_dir("bimpm") / "data.py"
    healthy_data = data.read_text()
    data.write_text(healthy_data + ROLL_LABELS)
    rolled = _stopped_before_training(_full(bimpm, NO_CACHE))
    assert rolled["val"] < rolled["trivial_val"] + 5  # measured: 50.0 vs 50 (the majority class)
    data.write_text(healthy_data)

    healthy = _full(bimpm, [*NO_CACHE, "stage.full.preflight.only=true"])
    assert healthy.data["status"] == "passed", healthy.data["verdict"]["reason"]
    assert healthy.data["preflight"]["val"] > 80  # measured: 88.8 vs 50 after 150 steps
