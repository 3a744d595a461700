"""BiMPM end to end after training: `repro predict` on the sample's test.tsv gives one prediction per
pair (class names and probabilities) equal to the test phase's outputs, also from a fresh project
that holds only the run directory and BiMPM's code; `repro eval` gives the recorded metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repro.init_project import init_project

REPO = Path(__file__).resolve().parents[1]
SAMPLE_TEST = REPO / "papers" / "bimpm" / "sample" / "test.tsv"
# A small, fast BiMPM (the paper's sizes train for minutes on 2 cores): the test is about using
# what was trained, not about its accuracy.
SMALL = [
    "--force",
    "trainer.max_epochs=1",
    "data.limit=300",
    "model.hidden=16",
    "model.agg_hidden=16",
    "model.perspectives=4",
    "model.char_hidden=8",
    "model.mlp_hidden=16",
    "stage.full.preflight.enabled=false",  # 300 pairs do not learn in 150 steps: not the point here
]


def _repro(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repro", *args], cwd=root, capture_output=True, text=True
    )


@pytest.mark.slow  # 5 minutes on a busy 2-core machine (load 6): a small BiMPM, one epoch
def test_bimpm_predict_equals_the_test_phase_and_works_from_a_fresh_project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    for name in ("conf", "papers"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    r = _repro(root, "stage", "full", "--paper", "bimpm", *SMALL)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    (run,) = (root / "runs" / "bimpm" / "full").iterdir()

    r = _repro(root, "predict", run.name, "--input", str(SAMPLE_TEST))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 500  # every pair of the file; the run tested the first 300 (data.limit)
    assert set(lines[0]["probabilities"]) == {"not paraphrase", "paraphrase"}
    assert lines[0]["id"] == "test-0" and lines[0]["label"] == 1
    logits = torch.cat(torch.load(run / "test_outputs.pt", weights_only=True)["batches"])
    probs = torch.tensor(
        [[x["probabilities"]["not paraphrase"], x["probabilities"]["paraphrase"]] for x in lines],
        dtype=torch.float64,
    )[:300]
    assert len(logits) == 300
    assert float((probs - torch.softmax(logits.double(), -1)).abs().max()) <= 1e-6

    fresh = tmp_path / "fresh"  # repro init, the run directory and BiMPM's code: nothing else
    init_project(fresh)
    code = fresh / "papers" / "bimpm"
    code.mkdir()
    for py in (root / "papers" / "bimpm").glob("*.py"):
        shutil.copy(py, code / py.name)
    shutil.copytree(run, fresh / "runs" / "bimpm" / "full" / run.name)
    again = _repro(fresh, "predict", run.name, "--input", str(SAMPLE_TEST))
    assert again.returncode == 0, again.stderr
    assert again.stdout == r.stdout

    r = _repro(root, "eval", run.name, "test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical to run" in r.stdout
