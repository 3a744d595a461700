"""Tests for repro/gates/data.py: each check fails for its reason and passes; the gate on real datamodules."""

from __future__ import annotations

from rich.console import Console

from repro.gates.data import (
    check_classes,
    check_disjoint,
    check_loader_determinism,
    check_nonempty,
    check_split_policy,
)

OVERRIDES = ["data.n_examples=300"]


# ---- pure checks ------------------------------------------------------------------------------
def test_nonempty_fails_naming_the_empty_split():
    c = check_nonempty({"train": 10, "val": 0, "test": 2})
    assert not c.passed
    assert "['val']" in c.reason and "val=0" in c.reason


def test_nonempty_passes_with_sizes():
    c = check_nonempty({"train": 10, "val": 1, "test": 2})
    assert c.passed
    assert c.reason == "sizes train=10, val=1, test=2"


def test_disjoint_fails_naming_pair_and_count():
    c = check_disjoint({"train": ["a", "b", "c", "d"], "val": ["c", "d", "e"], "test": ["f"]})
    assert not c.passed
    assert "train&val: 2" in c.reason
    assert c.evidence["overlaps"] == {"train&val": 2}


def test_disjoint_counts_every_overlapping_pair():
    c = check_disjoint({"train": ["a", "b"], "val": ["c"], "test": ["a", "c"]})
    assert not c.passed
    assert c.evidence["overlaps"] == {"train&test": 1, "val&test": 1}


def test_disjoint_passes():
    c = check_disjoint({"train": ["a", "b"], "val": ["c"], "test": ["d"]})
    assert c.passed
    assert c.reason == "0 examples shared between splits"


def test_classes_fails_when_a_split_lacks_a_class():
    c = check_classes(
        {"train": {0: 5, 1: 5, 2: 5}, "val": {0: 1, 1: 1, 2: 1}, "test": {0: 2, 1: 3}}, 3
    )
    assert not c.passed
    assert c.reason == "test lacks class [2]"
    assert c.evidence["missing"] == {"test": [2]}


def test_classes_zero_count_counts_as_missing():
    c = check_classes({"train": {0: 5, 1: 0}, "val": {0: 1, 1: 1}, "test": {0: 1, 1: 1}}, 2)
    assert not c.passed
    assert "train lacks class [1]" in c.reason


def test_classes_fails_on_label_out_of_range():
    c = check_classes(
        {
            "train": {0: 5, 1: 5, 2: 5, 5: 1},
            "val": {0: 1, 1: 1, 2: 1},
            "test": {-1: 1, 0: 1, 1: 1, 2: 1},
        },
        3,
    )
    assert not c.passed
    assert "labels outside 0..2" in c.reason
    assert c.evidence["bad_labels"] == {"train": [5], "test": [-1]}


def test_classes_passes():
    c = check_classes({s: {0: 3, 1: 3} for s in ("train", "val", "test")}, 2)
    assert c.passed
    assert c.reason == "all 2 classes in every split"


def test_split_policy_fails_when_fractions_are_off():
    c = check_split_policy(False, {"train": 50, "val": 25, "test": 25}, (0.8, 0.1, 0.1), True)
    assert not c.passed
    assert "50.0/25.0/25.0%" in c.reason and "80/10/10%" in c.reason


def test_split_policy_fails_when_not_idempotent():
    c = check_split_policy(False, {"train": 80, "val": 10, "test": 10}, (0.8, 0.1, 0.1), False)
    assert not c.passed
    assert "splitting twice with the same seed gave different splits" in c.reason


def test_split_policy_passes_for_seeded_80_10_10():
    c = check_split_policy(False, {"train": 80, "val": 10, "test": 10}, (0.8, 0.1, 0.1), True)
    assert c.passed
    assert "80.0/10.0/10.0%" in c.reason and "idempotent" in c.reason


def test_split_policy_keeps_official_split_whatever_its_fractions():
    c = check_split_policy(True, {"train": 50, "val": 25, "test": 25}, (0.8, 0.1, 0.1), True)
    assert c.passed
    assert c.evidence == {"official": True}
    assert "official" in c.reason


def test_loader_determinism():
    assert check_loader_determinism(True).passed
    c = check_loader_determinism(False)
    assert not c.passed
    assert "different first batches" in c.reason


# ---- the gate on datamodules ------------------------------------------------------------------
OVERLAP_DATA = '''

class OverlappingSplits(ToyDataModule):
    """Official splits where val repeats 12 training examples."""

    def load_examples(self):
        exs = super().load_examples()["all"]
        return {"train": exs[:240], "val": exs[228:270], "test": exs[270:]}


def build_datamodule(cfg, seed):
    return OverlappingSplits(cfg, seed)
'''

MISSING_CLASS_DATA = '''

class TestLacksClass(ToyDataModule):
    """Official splits where the test split has no example of class 2."""

    def load_examples(self):
        exs = super().load_examples()["all"]
        return {"train": exs[:240], "val": exs[240:270], "test": [e for e in exs[270:] if e["label"] != 2]}


def build_datamodule(cfg, seed):
    return TestLacksClass(cfg, seed)
'''


def _run_data(project):
    from repro.runner import run_stage

    return run_stage(project, "toy", "data", OVERRIDES, console=Console(quiet=True))


def test_gate_fails_when_official_splits_overlap(project):
    data_py = project.paper_dir("toy") / "data.py"
    data_py.write_text(data_py.read_text() + OVERLAP_DATA)
    run = _run_data(project)
    v = run.record["verdict"]
    assert run.record["status"] == "failed"
    assert not v["passed"]
    assert "splits disjoint: examples shared between splits (train&val: 12)" in v["reason"]
    assert run.record["metrics"]["official_split"] is True


def test_gate_fails_when_a_class_is_missing_from_test(project):
    data_py = project.paper_dir("toy") / "data.py"
    data_py.write_text(data_py.read_text() + MISSING_CLASS_DATA)
    run = _run_data(project)
    v = run.record["verdict"]
    assert run.record["status"] == "failed"
    assert "every class in every split: test lacks class [2]" in v["reason"]


def test_gate_passes_on_scaffolded_paper_with_80_10_10(project):
    run = _run_data(project)
    v = run.record["verdict"]
    assert run.record["status"] == "passed", v["reason"]
    assert run.record["metrics"]["sizes"] == {"train": 240, "val": 30, "test": 30}
    assert run.record["metrics"]["official_split"] is False
    assert "80.0/10.0/10.0%" in v["reason"]
    assert [c["name"] for c in v["checks"]] == [
        "splits non-empty",
        "splits disjoint",
        "every class in every split",
        "split policy",
        "loader determinism",
    ]
    assert len(v["evidence"]["examples"]) == 3
    assert v["evidence"]["batch_shapes"] == {"x": [32, 16], "label": [32]}
