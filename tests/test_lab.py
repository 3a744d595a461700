"""Tests for repro/lab.py: the notebook handle gives warm objects and checks that write no record."""

from __future__ import annotations

import pytest
import torch

from repro import lab
from repro.errors import ReproError


@pytest.fixture
def session(project):
    return lab.open("toy", project=project)


def test_open_gives_config_datamodule_batch_and_a_fresh_model(session):
    assert session.config.model == {"hidden": 64, "dropout": 0.0}
    assert session.datamodule.num_classes == 3
    assert set(session.batch) == {"x", "label"} and session.batch["x"].shape == (32, 16)
    logits = session.model(session.batch["x"])
    assert logits.shape == (32, 3)  # (B, C)
    assert session.model is not session.new_model()


def test_check_runs_the_gate_on_the_model_in_memory_and_records_nothing(session, project, capsys):
    verdict = session.check("shapes")
    assert verdict.passed
    out = capsys.readouterr().out
    assert "shapes: PASS" in out and "not recorded" in out
    assert not project.runs_dir.exists()
    assert not (project.notes_dir / "toy.md").read_text().count("shapes ·")


class TwoClasses(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.out = torch.nn.Linear(16, 2)  # two classes where the data has three

    def forward(self, x):
        return self.out(x)  # (B, 2)


def test_check_judges_the_model_it_is_given(session):
    broken = TwoClasses()
    verdict = session.check("shapes", broken, quiet=True)
    assert not verdict.passed
    assert "output_shape" in [c.name for c in verdict.checks if not c.passed]


def test_overfit_trains_a_copy(session):
    before = [p.detach().clone() for p in session.model.parameters()]
    verdict = session.check("overfit", quiet=True)
    assert verdict.passed, verdict.reason
    assert all(torch.equal(a, b) for a, b in zip(before, session.model.parameters(), strict=True))


def test_new_model_reads_the_model_code_on_disk_now(session, project):
    path = project.paper_dir("toy") / "model.py"
    path.write_text(path.read_text().replace("nn.ReLU(),", "nn.Tanh(),"))
    model = session.new_model()
    assert any(isinstance(m, torch.nn.Tanh) for m in model.modules())


def test_full_is_not_a_lab_check(session):
    with pytest.raises(ReproError, match="repro stage full --paper toy"):
        session.check("full")
