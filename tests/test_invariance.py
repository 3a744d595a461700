"""Invariances: every input field matters (shapes), declared exact invariances (shapes, full) and
learned ones (full), judged from recorded measurements."""

from __future__ import annotations

import json
import math

import pytest

from repro.config.compose import compose
from repro.gates.invariance import check_inputs_used, judge_invariances
from tests.conftest import _forget_papers


def _fields(**change: float) -> dict:
    return {k: {"varies": not math.isnan(v), "change": v} for k, v in change.items()}


# ---- every input field matters (pure) ---------------------------------------------------------
def test_an_ignored_field_is_named_and_fails():
    c = check_inputs_used(_fields(p=0.3, q=0.0, r=1e-9), 1e-6, [], 8)
    assert not c.passed
    assert c.reason.startswith("q (max change 0), r (max change 1e-09): each replaced alone")
    assert "the model ignores them; is the input wired into forward()?" in c.reason


def test_fields_allowed_unused_pass_and_a_field_alike_everywhere_is_not_measured():
    c = check_inputs_used(_fields(p=0.3, q=0.0, mask=math.nan), 1e-6, ["q"], 8)
    assert c.passed
    assert "q ignored, as stage.shapes.unused_inputs_ok allows" in c.reason
    assert "mask alike in every example: not measured" in c.reason
    one = check_inputs_used(_fields(p=math.nan), 1e-6, [], 1)
    assert not one.measured and "batch of 1" in one.reason


# ---- the full gate's judgement of recorded measurements (pure) --------------------------------
def _measured(transform: str, exact: bool, *per_seed: dict) -> dict:
    return {"transform": transform, "exact": exact, "where": None, "per_seed": list(per_seed)}


def _m(changed: float, diff: float = 0.5, n: int = 200) -> dict:
    return {
        "n": n,
        "changed": changed,
        "mean_change": changed / 2,
        "max_change": 0.9,
        "max_output_diff": diff,
        "output_scale": 10.0,
        "dtype": "float32",
    }


def test_a_learned_invariance_passes_at_most_its_threshold_of_changed_predictions(project):
    yaml = project.conf_dir / "paper" / "toy.yaml"
    cfg = compose(project, "toy", []).cfg
    assert [i.transform for i in cfg.paper.invariances] == ["nudge"]  # the template declares it
    assert cfg.stage.full.invariance_max_changed == 0.05
    (ok,) = judge_invariances(cfg, [_measured("nudge", False, _m(0.04), _m(0.06))])
    assert ok.passed and ok.name == "invariant to nudge"
    assert ok.reason.startswith("5.0% of the test predictions change under nudge (<= 5%;")
    assert "2 seeds" in ok.reason
    (bad,) = judge_invariances(cfg, [_measured("nudge", False, _m(0.12))])
    assert not bad.passed and "12.0% of the test predictions change under nudge (> 5%" in bad.reason
    assert "has not learned an invariance the paper's task has" in bad.reason
    # the paper's own threshold for this invariance, set beside it
    yaml.write_text(yaml.read_text().replace("exact: false,", "exact: false, max_changed: 0.2,"))
    cfg = compose(project, "toy", []).cfg
    (own,) = judge_invariances(cfg, [_measured("nudge", False, _m(0.12))])
    assert own.passed and "(<= 20%;" in own.reason


def test_an_exact_invariance_must_agree_to_rounding_on_every_seed(project):
    cfg = compose(project, "toy", []).cfg
    (ok,) = judge_invariances(cfg, [_measured("swap", True, _m(0.0, diff=0.0))])
    assert ok.passed and "outputs change by up to 0 <=" in ok.reason
    (bad,) = judge_invariances(cfg, [_measured("swap", True, _m(0.0, 0.0), _m(0.01, diff=0.5))])
    assert not bad.passed and "declared exact, but the architecture is not invariant" in bad.reason


# ---- through the gates ------------------------------------------------------------------------
@pytest.fixture
def ranking(make_project):
    return make_project("rank", task="ranking")


def test_shapes_checks_a_declared_exact_invariance_and_names_a_model_that_breaks_it(ranking, cli):
    code, out, err = cli("stage", "shapes", "--paper", "rank", "--cold")
    assert code == 0, out + err
    assert "invariant to swap_query_item" in out and "inputs_used" in out
    model_py = ranking.paper_dir("rank") / "model.py"
    text = model_py.read_text()
    old = "torch.cat([query + item, query * item, (query - item).abs()], -1)"
    assert old in text
    model_py.write_text(text.replace(old, "torch.cat([query, item, query * item], -1)"))
    _forget_papers()  # the edited model.py is imported afresh, as a new process would
    code, out, err = cli("stage", "shapes", "--paper", "rank", "--cold")
    assert code == 1
    records = [
        json.loads(p.read_text()) for p in ranking.runs_dir.glob("rank/shapes/*/record.json")
    ]
    (rec,) = [r for r in records if r["status"] == "failed"]
    (check,) = [c for c in rec["verdict"]["checks"] if c["name"] == "invariant to swap_query_item"]
    assert not check["passed"]
    assert "at init on 32 training examples" in check["reason"]
    assert "declared exact, but the architecture is not invariant to it" in check["reason"]


def test_shapes_names_an_input_field_the_model_ignores(ranking, cli):
    model_py = ranking.paper_dir("rank") / "model.py"
    text = model_py.read_text()
    old = "    def forward(self, query: torch.Tensor, item: torch.Tensor) -> torch.Tensor:\n"
    assert old in text
    model_py.write_text(
        text.replace(old, old + "        item = query  # a bug: the item is lost\n")
    )
    code, out, err = cli("stage", "shapes", "--paper", "rank", "--cold")
    assert code == 1
    assert "inputs_used: item (max change 0): each replaced alone by another example's" in out


def test_an_unknown_transformation_is_one_line(ranking, cli):
    yaml = ranking.conf_dir / "paper" / "rank.yaml"
    yaml.write_text(yaml.read_text().replace("transform: swap_query_item", "transform: swap_qi"))
    code, out, err = cli("stage", "shapes", "--paper", "rank", "--cold")
    assert code == 1
    assert (
        "Error: paper.invariances: transform 'swap_qi': expected a transformation "
        "ToyDataModule.transformations() defines (swap_query_item); define it there"
    ) in err
