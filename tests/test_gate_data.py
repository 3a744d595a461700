"""Tests for repro/gates/data.py: each check fails for its reason and passes; the gate on real datamodules."""

from __future__ import annotations

import sys

import pytest
from rich.console import Console

from repro.data.duplicates import NearDuplicates
from repro.data.leak import LabelFunction
from repro.data.served import Served
from repro.gates.data import (
    TrainOnly,
    check_classes,
    check_deterministic,
    check_disjoint,
    check_feature_shift,
    check_fit_on_train,
    check_label_leak,
    check_labels_agree,
    check_loader_determinism,
    check_loaders_serve_splits,
    check_near_duplicates,
    check_nonempty,
    check_split_policy,
    stat_checks,
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


def test_near_duplicates_fail_naming_count_rate_and_a_pair():
    nd = NearDuplicates(
        "normalised text",
        counts={"train&val": 0, "train&test": 3, "val&test": 0},
        rates={"train&val": 0.0, "train&test": 0.03, "val&test": 0.0},
        pair=("train: p: what is x ?", "test: p: What is X"),
    )
    c = check_near_duplicates(nd, 0.005, 0.001)
    assert not c.passed
    assert c.reason.startswith(
        "3 test examples (3.0%) are equal to examples of an earlier split once case, punctuation "
        "and spacing are normalised (train&test, max 0.5% beyond chance); e.g. "
        "'train: p: what is x ?' ~ 'test: p: What is X';"
    )


def test_near_duplicates_within_rate_or_chance_pass():
    below = NearDuplicates("normalised text", counts={"train&test": 1}, rates={"train&test": 0.001})
    assert check_near_duplicates(below, 0.005, 0.001).passed
    chance = NearDuplicates(
        "nearest neighbour",
        counts={"train&test": 5},
        rates={"train&test": 0.1},
        expected={"train&test": 0.07},
        tail_p={"train&test": 0.3},
    )
    assert check_near_duplicates(chance, 0.005, 0.001).passed
    skipped = check_near_duplicates(NearDuplicates("", note="inputs mix"), 0.005, 0.001)
    assert not skipped.measured and not skipped.passed  # never counted as passed
    assert skipped.reason == "not measured: inputs mix"


def test_loaders_check_fails_when_test_serves_train():
    served = {
        "train": Served(rows=64, own=64, split_size=240),
        "val": Served(rows=30, own=30, complete=True, split_size=30),
        "test": Served(rows=240, own=0, others={"train": 240}, complete=False, split_size=30),
    }
    c = check_loaders_serve_splits(served)
    assert not c.passed
    assert c.reason.startswith(
        "the test loader serves 240 rows (240 train examples) where its split has 30 examples, "
        "0 of them served"
    )


def test_loaders_check_passes():
    served = {
        "train": Served(rows=64, own=64, split_size=240),
        "val": Served(rows=30, own=30, complete=True, split_size=30),
        "test": Served(rows=30, own=30, complete=True, split_size=30),
    }
    c = check_loaders_serve_splits(served)
    assert c.passed and c.reason.startswith("val and test loaders serve each of their 30 and 30")


def test_fit_on_train_reasons():
    assert check_fit_on_train(TrainOnly([], 0, 240, None)).passed
    c = check_fit_on_train(TrainOnly(["vocab_size"], 5, 240, 3))
    assert c.reason.startswith(
        "hiding val and test from build() changed model_kwargs() ['vocab_size'] and 5 of 240 "
        "encoded training items (first: #3)"
    )
    c = check_fit_on_train(TrainOnly([], 0, 0, None, error="KeyError: 'val'"))
    assert (
        not c.passed and "build() failed when val and test were empty (KeyError: 'val')" in c.reason
    )


def test_deterministic_reasons():
    assert check_deterministic([], [], "1").passed
    c = check_deterministic([], ["model_kwargs/vocab"], "1")
    assert c.reason.startswith(
        "a build in a fresh process with PYTHONHASHSEED=1 differs in model_kwargs/vocab"
    )
    c = check_deterministic(["first_batch"], None, "1", "skipped")
    assert c.reason.startswith(
        "two builds in one process (the second bypassing preprocessing caches) differ in "
        "first_batch: a stale cache"
    )
    c = check_deterministic([], None, "1", "it timed out")
    # not measured (issues 18, 21): said so, and never counted as passed
    assert c.reason.startswith("not measured: a fresh process with PYTHONHASHSEED=1: it timed out")
    assert not c.measured and not c.passed


def test_label_leak_reasons():
    found = [LabelFunction("x", "column 5 (index (5,))", {0: "0", 1: "1"})]
    c = check_label_leak(found, 200)
    assert not c.passed
    assert c.reason.startswith(
        "input x column 5 (index (5,)) is a function of the label on 200 training examples "
        "(class 0 -> 0, class 1 -> 1)"
    )
    assert check_label_leak([], 200).passed


def test_labels_agree_reasons():
    odd = {
        "split": "test",
        "view": "inputs",
        "drops": {
            "train": {"on": "val", "acc_other": 0.9, "acc_odd": 0.1},
            "val": {"on": "train", "acc_other": 0.9, "acc_odd": 0.1},
        },
    }
    m = {"inputs": {"train": {"val": (0.9, 0.0)}}}
    c = check_labels_agree(m, odd, 0.25, 3)
    assert not c.passed
    assert c.reason.startswith(
        "a nearest-centroid probe (inputs) loses more than 0.25 balanced accuracy on test "
        "(fitted on train: 0.90 on val vs 0.10 on test; fitted on val: 0.90 on train vs 0.10 on test)"
    )
    c = check_labels_agree({"inputs": {"train": {"val": (0.4, 0.0)}}}, None, 0.25, 3)
    assert c.passed and c.reason.endswith(
        "is within 0.25 of chance (0.33) everywhere: it cannot tell"
    )


def test_feature_shift_limit_rises_for_small_splits():
    shifts = {"val": (0.1, "x[0]", 0.2), "test": (0.45, "x[3]", 0.7)}
    c = check_feature_shift(shifts, 0.4, {"val": 0.3, "test": 0.3})
    assert not c.passed
    assert c.reason.startswith(
        "test inputs are distributed unlike train's (mean KS 0.45 > 0.4; x[3]: 0.70)"
    )
    assert check_feature_shift(shifts, 0.4, {"val": 0.3, "test": 0.5}).passed


def test_stat_checks_only_for_the_stats_a_paper_reports():
    assert stat_checks({"vocab_size": 100}, {"oov_rate": 0.1, "truncated": 0.05}) == []
    (c,) = stat_checks({"oov_rate/val": 0.3, "oov_rate/test": 0.02}, {"oov_rate": 0.1})
    assert c.name == "OOV rate" and not c.passed
    assert c.reason.startswith("oov_rate 0.3 on val > 0.1 (val 0.3, test 0.02)")


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
    v = run.data["verdict"]
    assert run.record.status == "failed"
    assert not v["passed"]
    assert "splits disjoint: examples shared between splits (train&val: 12)" in v["reason"]
    assert run.record.metrics["official_split"] is True


def test_gate_fails_when_a_class_is_missing_from_test(project):
    data_py = project.paper_dir("toy") / "data.py"
    data_py.write_text(data_py.read_text() + MISSING_CLASS_DATA)
    run = _run_data(project)
    v = run.data["verdict"]
    assert run.record.status == "failed"
    assert "every class in every split: test lacks class [2]" in v["reason"]


def test_gate_passes_on_scaffolded_paper_with_80_10_10(project):
    run = _run_data(project)
    v = run.data["verdict"]
    assert run.record.status == "passed", v["reason"]
    assert run.record.metrics["sizes"] == {"train": 240, "val": 30, "test": 30}
    assert run.record.metrics["official_split"] is False
    assert "80.0/10.0/10.0%" in v["reason"]
    assert [c["name"] for c in v["checks"]] == [
        "splits non-empty",
        "splits disjoint",
        "no near-duplicates across splits",
        "every class in every split",
        "split policy",
        "loader determinism",
        "loaders serve their split",
        "fitted on train only",
        "preprocessing deterministic",
        "no label in the inputs",
        "labels mean the same in every split",
        "no train/test feature shift",
        "examples + skipped = read",
        "split sizes as stated",
        "padding at the end of rows",
        "OOV rate",
        "tokens encoded as their ids",
        "train loader shuffled",
    ]  # no truncation check: the toy's stats() reports none
    checks = {c["name"]: c for c in v["checks"]}
    # the toy's numbers come from no file, are not padded and have no vocabulary: not measured
    unmeasured = [n for n, c in checks.items() if c["reason"].startswith("not measured")]
    assert unmeasured == [
        "examples + skipped = read",
        "split sizes as stated",
        "padding at the end of rows",
        "OOV rate",
        "tokens encoded as their ids",
    ]
    assert checks["train loader shuffled"]["passed"]
    assert checks["no near-duplicates across splits"]["evidence"]["method"] == "nearest neighbour"
    assert "PYTHONHASHSEED=1" in checks["preprocessing deterministic"]["reason"]
    assert (
        "in a fresh process built from the files" in checks["preprocessing deterministic"]["reason"]
    )
    assert (
        "transfers between the splits alike"
        in checks["labels mean the same in every split"]["reason"]
    )
    assert len(v["evidence"]["examples"]) == 3
    assert v["evidence"]["batch_shapes"] == {"x": [32, 16], "label": [32]}


# ---- the bug zoo (issue 13): each injected bug FAILS its check for its reason ----------------
@pytest.fixture
def no_fresh_process(monkeypatch):
    """Skip the fresh-process build (a Python start importing torch: ~2 s of CPU) in the tests
    that are not about it; the check then says it was not measured."""
    from repro.gates import data as gate

    class Skipped:
        hashseed = "1"

    monkeypatch.setattr(gate.hashseed, "start", lambda *a, **k: Skipped())
    monkeypatch.setattr(gate.hashseed, "collect", lambda *a, **k: (None, "skipped by the test"))
    monkeypatch.setattr(gate.hashseed, "stop", lambda build: None)


def _inject(project, code: str) -> None:
    data_py = project.paper_dir("toy") / "data.py"
    data_py.write_text(data_py.read_text() + code)


def _failed(run) -> dict[str, str]:
    """{check name: reason} of the run's failed checks (measured and failed: a check that was not
    measured neither passed nor failed)."""
    checks = run.data["verdict"]["checks"]
    return {c["name"]: c["reason"] for c in checks if not c["passed"] and c.get("measured", True)}


NEAR_COPIES = '''

class NearCopies(ToyDataModule):
    """Official splits whose test split is 30 training examples with a little noise added."""

    def load_examples(self):
        exs = super().load_examples()["all"]
        rng = random.Random(7)
        copies = [{"x": [v + rng.gauss(0, 1e-3) for v in e["x"]], "label": e["label"]} for e in exs[:30]]
        return {"train": exs[:240], "val": exs[240:270], "test": copies}


def build_datamodule(cfg, seed):
    return NearCopies(cfg, seed)
'''


def test_gate_fails_on_near_copies_of_training_examples(project, no_fresh_process):
    _inject(project, NEAR_COPIES)
    failed = _failed(_run_data(project))
    assert list(failed) == ["no near-duplicates across splits"]
    reason = failed["no near-duplicates across splits"]
    assert reason.startswith("30 test examples (100.0%) are nearer a training example than")
    assert "e.g. 'train #0: x: [0.692, -1.36, 1.37, 0.383, ...]' ~ 'test #0: x: [0.692, " in reason
    assert "(distance 0.00285 vs median neighbour 1.77)" in reason
    assert reason.endswith(
        "the same examples entered two splits in different forms: deduplicate by distance before splitting"
    )


VOCAB_ON_ALL_SPLITS = '''

class StandardisedOnAllSplits(ToyDataModule):
    """Inputs standardised with the mean and std of train+val+test (the bug: {BUG})."""

    def build(self, splits):
        xs = torch.tensor([e["x"] for s in {SPLITS} for e in splits[s]])
        self.mean, self.std = xs.mean(0), xs.std(0)

    def encode(self, example):
        item = super().encode(example)
        item["x"] = (item["x"] - self.mean) / self.std
        return item


def build_datamodule(cfg, seed):
    return StandardisedOnAllSplits(cfg, seed)
'''


def test_gate_fails_when_statistics_are_fitted_on_all_splits(project, no_fresh_process):
    _inject(project, VOCAB_ON_ALL_SPLITS.format(BUG="yes", SPLITS=("train", "val", "test")))
    failed = _failed(_run_data(project))
    assert list(failed) == ["fitted on train only"]
    assert failed["fitted on train only"].startswith(
        "hiding val and test from build() changed 240 of 240 encoded training items (first: #0)"
    )
    assert "fit them on splits['train'] alone" in failed["fitted on train only"]


def test_gate_passes_when_statistics_are_fitted_on_train(project, no_fresh_process):
    _inject(project, VOCAB_ON_ALL_SPLITS.format(BUG="none", SPLITS=("train",)))
    run = _run_data(project)
    assert _failed(run) == {}
    checks = {c["name"]: c["reason"] for c in run.data["verdict"]["checks"]}
    assert "240 identical encoded training items" in checks["fitted on train only"]


VOCABULARY_ON_ALL_SPLITS = '''

class VocabularyOnAllSplits(ToyDataModule):
    """A vocabulary (of rounded first features) over train+val+test: model_kwargs changes."""

    def build(self, splits):
        words = {round(e["x"][0], 1) for s in ("train", "val", "test") for e in splits[s]}
        self.vocab = sorted(words)

    def model_kwargs(self):
        return {**super().model_kwargs(), "vocab_size": len(self.vocab)}


def build_datamodule(cfg, seed):
    return VocabularyOnAllSplits(cfg, seed)
'''


def test_gate_fails_when_the_vocabulary_is_built_on_all_splits(project, no_fresh_process):
    _inject(project, VOCABULARY_ON_ALL_SPLITS)
    failed = _failed(_run_data(project))
    assert failed["fitted on train only"].startswith(
        "hiding val and test from build() changed model_kwargs() ['vocab_size']"
    )


WRONG_LOADERS = '''

class WrongLoaders(ToyDataModule):
    """{WHAT}"""

    def {METHOD}(self):
        return self._loader("{SERVED}", shuffle=False)


def build_datamodule(cfg, seed):
    return WrongLoaders(cfg, seed)
'''


def test_gate_fails_when_test_is_evaluated_on_the_training_loader(project, no_fresh_process):
    _inject(
        project,
        WRONG_LOADERS.format(WHAT="test on train", METHOD="test_dataloader", SERVED="train"),
    )
    failed = _failed(_run_data(project))
    assert list(failed) == ["loaders serve their split"]
    assert failed["loaders serve their split"].startswith(
        "the test loader serves 240 rows (240 train examples) where its split has 30 examples, "
        "0 of them served: a *_dataloader() returns another split's loader"
    )


def test_gate_fails_when_the_val_loader_serves_test(project, no_fresh_process):
    _inject(
        project, WRONG_LOADERS.format(WHAT="val = test", METHOD="val_dataloader", SERVED="test")
    )
    failed = _failed(_run_data(project))
    assert failed["loaders serve their split"].startswith(
        "the val loader serves 30 rows (30 test examples) where its split has 30 examples, "
        "0 of them served"
    )


LABEL_IN_FEATURE = '''

class LabelInFeature(ToyDataModule):
    """Feature 5 carries the label (a preprocessing bug: the label column kept as an input)."""

    def encode(self, example):
        item = super().encode(example)
        item["x"][5] = float(example["label"])
        return item


def build_datamodule(cfg, seed):
    return LabelInFeature(cfg, seed)
'''


def test_gate_fails_when_the_label_is_a_feature(project, no_fresh_process):
    _inject(project, LABEL_IN_FEATURE)
    failed = _failed(_run_data(project))
    assert "no label in the inputs" in failed
    assert failed["no label in the inputs"].startswith(
        "input x column 5 (index (5,)) is a function of the label on 240 training examples "
        "(class 0 -> 0, class 1 -> 1, class 2 -> 2): the label reached the inputs"
    )


def test_label_leak_can_be_switched_off_for_rule_based_tasks(project, no_fresh_process):
    _inject(project, LABEL_IN_FEATURE)
    run = run_stage_with(project, ["stage.data.label_leak=false"])
    checks = {c["name"]: c for c in run.data["verdict"]["checks"]}
    assert checks["no label in the inputs"]["measured"] is False
    assert not checks["no label in the inputs"]["passed"]  # not measured is never a pass
    assert checks["no label in the inputs"]["reason"] == "not measured: stage.data.label_leak=false"
    assert run.record.status == "passed"  # ... nor a failure


SET_ORDER = '''

class SetOrder(ToyDataModule):
    """Examples ordered by iterating a set of strings: the split depends on PYTHONHASHSEED."""

    def load_examples(self):
        exs = super().load_examples()["all"]
        order = list({f"ex{i}" for i in range(len(exs))})
        return {"all": [exs[int(k[2:])] for k in order]}


def build_datamodule(cfg, seed):
    return SetOrder(cfg, seed)
'''


def test_gate_fails_when_preprocessing_follows_set_order(project):
    _inject(project, SET_ORDER)
    failed = _failed(_run_data(project))
    assert list(failed) == ["preprocessing deterministic"]
    reason = failed["preprocessing deterministic"]
    assert reason.startswith("a build in a fresh process with PYTHONHASHSEED=")
    assert "differs in examples/train, examples/val, examples/test" in reason
    assert "follows the order of a set or dict of strings" in reason


NOT_IN_A_FRESH_PROCESS = """

import os

if os.environ.get("PYTHONHASHSEED") in ("1", "2"):
    raise RuntimeError("this data module only builds in the test's own process")
"""


def test_fresh_process_build_that_fails_is_skipped_with_a_note(project):
    _inject(project, NOT_IN_A_FRESH_PROCESS)
    run = _run_data(project)
    checks = {c["name"]: c for c in run.data["verdict"]["checks"]}
    assert run.record.status == "passed"
    reason = checks["preprocessing deterministic"]["reason"]
    assert reason.startswith("not measured: a fresh process with PYTHONHASHSEED=")
    assert (
        "the datamodule could not be built in a fresh process (RuntimeError: "
        "this data module only builds in the test's own process) (two builds in this process "
        "are the same)" in reason
    )
    assert checks["preprocessing deterministic"]["measured"] is False
    assert checks["preprocessing deterministic"]["passed"] is False  # never counted as passed


UNSEEDED = '''

class Unseeded(ToyDataModule):
    """Noise drawn from the global RNG in encode: every build differs."""

    def encode(self, example):
        item = super().encode(example)
        item["x"] = item["x"] + 0.01 * torch.randn(len(item["x"]))
        return item


def build_datamodule(cfg, seed):
    return Unseeded(cfg, seed)
'''


def test_gate_fails_when_preprocessing_draws_unseeded_randomness(project, no_fresh_process):
    _inject(project, UNSEEDED)
    failed = _failed(_run_data(project))
    assert failed["preprocessing deterministic"].startswith(
        "two builds in one process (the second bypassing preprocessing caches) differ in "
        "items/train, items/val, items/test, first_batch: a stale cache (its key misses a "
        "change, e.g. to the code) or unseeded randomness"
    )
    assert "loader determinism" in failed


CACHED = '''

import json
from pathlib import Path


class Cached(ToyDataModule):
    """Caches its encoded inputs under a key that misses the code (as BiMPM's did, issue 13)."""

    SCALE = {SCALE}

    def load_examples(self):
        cache = Path("toy-cache.json")
        if cache.is_file() and not self.bypass_cache:
            return json.loads(cache.read_text())
        exs = super().load_examples()
        exs = {{"all": [{{**e, "x": [self.SCALE * v for v in e["x"]]}} for e in exs["all"]]}}
        if not self.bypass_cache:
            cache.write_text(json.dumps(exs))
        return exs


def build_datamodule(cfg, seed):
    return Cached(cfg, seed)
'''


def test_gate_fails_on_a_stale_preprocessing_cache(project, no_fresh_process):
    data_py = project.paper_dir("toy") / "data.py"
    original = data_py.read_text()
    data_py.write_text(original + CACHED.format(SCALE=1.0))
    assert _failed(_run_data(project)) == {}  # writes the cache
    for name in [m for m in sys.modules if m == "papers" or m.startswith("papers.")]:
        del sys.modules[name]  # as a new process would, import the edited code
    data_py.write_text(original + CACHED.format(SCALE=0.25))  # the code changes, the key doesn't
    failed = _failed(_run_data(project))
    assert failed["preprocessing deterministic"].startswith(
        "two builds in one process (the second bypassing preprocessing caches) differ in "
        "examples/train, examples/val, examples/test, items/train, items/val, items/test, "
        "first_batch: a stale cache (its key misses a change, e.g. to the code)"
    )


# ---- the comparison builds on a seeded sample (issue 21): the same findings as whole builds ----
SAMPLED = ["stage.data.compare_examples=40"]  # 40 of each split's examples (train has 240)


def test_a_fit_on_all_splits_fails_on_a_sample_too(project, no_fresh_process):
    _inject(project, VOCAB_ON_ALL_SPLITS.format(BUG="yes", SPLITS=("train", "val", "test")))
    failed = _failed(run_stage_with(project, SAMPLED))
    assert list(failed) == ["fitted on train only"]
    assert failed["fitted on train only"].startswith(
        "hiding val and test from build() changed 40 of 40 encoded training items (first: #0) "
        "(both built on a seeded sample: 40 of 240 training examples, val and test alike; "
        "stage.data.compare_examples): the vocabulary or statistics are fitted on val/test too"
    )
    _inject(project, VOCABULARY_ON_ALL_SPLITS)
    failed = _failed(run_stage_with(project, SAMPLED))
    assert failed["fitted on train only"].startswith(
        "hiding val and test from build() changed model_kwargs() ['vocab_size']"
    )


READS_NO_CACHE = '''

class ReadsNoCache(ToyDataModule):
    """Caches nothing, and says so: the data gate may compare builds of a sample from the files.
    {WHAT}"""

    def __init__(self, cfg, seed):
        super().__init__(cfg, seed)
        self.loaded_from_cache = False

    def build(self, splits):
        keys = {{f"{{e['x'][0]:.1f}}" for e in splits["train"]}}
        self.ids = {{k: i for i, k in enumerate({ORDER}(keys))}}

    def encode(self, example):
        item = super().encode(example)
        item["x"][0] = float(self.ids.get(f"{{example['x'][0]:.1f}}", -1))
        return item


def build_datamodule(cfg, seed):
    return ReadsNoCache(cfg, seed)
'''


def test_a_sampled_fresh_build_passes_and_says_what_it_compared(project):
    _inject(project, READS_NO_CACHE.format(WHAT="Its ids are sorted.", ORDER="sorted"))
    run = run_stage_with(project, SAMPLED)
    assert _failed(run) == {}
    checks = {c["name"]: c for c in run.data["verdict"]["checks"]}
    det = checks["preprocessing deterministic"]
    assert det["passed"] and det["evidence"]["sample"] == {"train": 40, "of": 240}
    assert det["reason"].endswith(
        "splits compared whole, build() and encoding on a seeded sample (40 of 240 training "
        "examples, val and test alike: stage.data.compare_examples), the first build having read "
        "no cache"
    )
    assert "(both built on a seeded sample: 40 of 240" in checks["fitted on train only"]["reason"]
    whole = run_stage_with(project, [])  # 240 <= 5000: every example, and the reason says no more
    checks = {c["name"]: c["reason"] for c in whole.data["verdict"]["checks"]}
    assert "sample" not in checks["preprocessing deterministic"]
    assert "sample" not in checks["fitted on train only"]


def test_an_order_that_follows_string_hashes_fails_on_a_sample(project):
    _inject(project, READS_NO_CACHE.format(WHAT="Its ids follow a set's order.", ORDER="list"))
    failed = _failed(run_stage_with(project, SAMPLED))
    assert list(failed) == ["preprocessing deterministic"]
    reason = failed["preprocessing deterministic"]
    assert reason.startswith("a build in a fresh process with PYTHONHASHSEED=")
    assert reason.endswith(
        " differs in items/train, items/val, items/test, first_batch (build() and encoding on 40 "
        "sampled training examples): preprocessing follows the order of a set or dict of strings "
        "(a vocabulary, a split); sort before numbering (sorted(set(...)))"
    )


def test_a_split_that_follows_set_order_fails_with_the_build_sampled(project):
    code = SET_ORDER.replace("class SetOrder(ToyDataModule):", "class SetOrder(ReadsNoCache):")
    _inject(project, READS_NO_CACHE.format(WHAT="", ORDER="sorted") + code)
    failed = _failed(run_stage_with(project, SAMPLED))
    assert list(failed) == ["preprocessing deterministic"]
    assert (
        "differs in examples/train, examples/val, examples/test"
        in (failed["preprocessing deterministic"])
    )


def test_a_stale_cache_is_compared_whole_where_the_paper_says_it_read_it(project):
    """A first build that read a cache (loaded_from_cache True) is compared with a whole build
    from the files, the sample setting notwithstanding: a stale cache shows."""
    data_py = project.paper_dir("toy") / "data.py"
    original = data_py.read_text()
    says = CACHED.replace(
        "            return json.loads(cache.read_text())",
        "            self.loaded_from_cache = True\n            return json.loads(cache.read_text())",
    ).replace(
        "        exs = super().load_examples()\n",
        "        self.loaded_from_cache = False\n        exs = super().load_examples()\n",
    )
    assert says.count("loaded_from_cache") == 2
    data_py.write_text(original + says.format(SCALE=1.0))
    assert _failed(run_stage_with(project, SAMPLED)) == {}  # writes the cache
    for name in [m for m in sys.modules if m == "papers" or m.startswith("papers.")]:
        del sys.modules[name]  # as a new process would, import the edited code
    data_py.write_text(original + says.format(SCALE=0.25))  # the code changes, the key doesn't
    run = run_stage_with(project, SAMPLED)
    assert _failed(run)["preprocessing deterministic"].startswith(
        "two builds in one process (the second bypassing preprocessing caches) differ in "
        "examples/train, examples/val, examples/test, items/train, items/val, items/test, "
        "first_batch: a stale cache (its key misses a change, e.g. to the code)"
    )
    checks = {c["name"]: c for c in run.data["verdict"]["checks"]}
    assert checks["preprocessing deterministic"]["evidence"]["sample"] is None  # built whole


SAYS_NO_CACHE_READ = """

_build_datamodule = build_datamodule


def build_datamodule(cfg, seed):  # the test's: the template caches nothing, and says so
    dm = _build_datamodule(cfg, seed)
    dm.loaded_from_cache = False
    return dm
"""


@pytest.mark.slow  # ~3 s a task: the data gate with its fresh process
@pytest.mark.parametrize("task", ["classification", "regression", "ranking", "sequence"])
def test_every_task_template_passes_with_sampled_comparison_builds(make_project, task):
    """Each task's template (a ranking task's groups, a sequence task's tokens) passes the data
    gate with the train-only and fresh-process builds on a 10-example sample of each split."""
    from repro.runner import run_stage

    project = make_project(task=task)
    _inject(project, SAYS_NO_CACHE_READ)
    sampled = ["stage.data.compare_examples=10"]
    run = run_stage(project, "toy", "data", sampled, console=Console(quiet=True))
    assert _failed(run) == {}
    checks = {c["name"]: c for c in run.data["verdict"]["checks"]}
    assert checks["preprocessing deterministic"]["passed"]
    assert checks["preprocessing deterministic"]["evidence"]["sample"]["train"] == 10
    assert "(both built on a seeded sample: 10 of " in checks["fitted on train only"]["reason"]


LABELS = '''

class Labels(ToyDataModule):
    """{WHAT}"""

    def load_examples(self):
        exs = super().load_examples()["all"]
        train, val, test = exs[:240], exs[240:270], exs[270:]
        {CODE}
        return {{"train": train, "val": val, "test": test}}


def build_datamodule(cfg, seed):
    return Labels(cfg, seed)
'''


def test_gate_fails_on_a_test_only_label_mapping(project, no_fresh_process):
    code = 'test = [{**e, "label": (e["label"] + 1) % 3} for e in test]'
    _inject(project, LABELS.format(WHAT="test labels mapped differently", CODE=code))
    failed = _failed(_run_data(project))
    assert list(failed) == ["labels mean the same in every split"]
    reason = failed["labels mean the same in every split"]
    assert "balanced accuracy on test (fitted on train: " in reason
    assert "test's labels disagree with the other splits'" in reason


def test_gate_fails_when_training_labels_are_shuffled(project, no_fresh_process):
    code = (
        'ys = [e["label"] for e in train]; random.Random(0).shuffle(ys); '
        'train = [{**e, "label": y} for e, y in zip(train, ys)]'
    )
    _inject(project, LABELS.format(WHAT="training labels shuffled apart from inputs", CODE=code))
    failed = _failed(_run_data(project))
    assert list(failed) == ["labels mean the same in every split"]
    assert (
        "train's labels disagree with the other splits'"
        in failed["labels mean the same in every split"]
    )


def test_labels_shuffled_in_every_split_pass_the_data_gate(project, no_fresh_process):
    """What the data gate cannot see: labels shuffled everywhere look like a hard dataset (the
    probe is at chance on every split); `full` catches it (chance accuracy)."""
    code = (
        "exs = train + val + test; ys = [e['label'] for e in exs]; random.Random(0).shuffle(ys); "
        "exs = [{**e, 'label': y} for e, y in zip(exs, ys)]; "
        "train, val, test = exs[:240], exs[240:270], exs[270:]"
    )
    _inject(project, LABELS.format(WHAT="every label shuffled", CODE=code))
    run = _run_data(project)
    checks = {c["name"]: c for c in run.data["verdict"]["checks"]}
    assert checks["labels mean the same in every split"]["passed"]
    assert "it cannot tell" in checks["labels mean the same in every split"]["reason"]


SCALED_TEST = '''

class ScaledTest(ToyDataModule):
    """Test inputs left unscaled (x10) while train and val are scaled."""

    def load_examples(self):
        exs = super().load_examples()["all"]
        test = [{**e, "x": [10 * v for v in e["x"]]} for e in exs[270:]]
        return {"train": exs[:240], "val": exs[240:270], "test": test}


def build_datamodule(cfg, seed):
    return ScaledTest(cfg, seed)
'''


def test_gate_fails_on_a_train_test_feature_shift(project, no_fresh_process):
    _inject(project, SCALED_TEST)
    failed = _failed(_run_data(project))
    assert "no train/test feature shift" in failed
    assert failed["no train/test feature shift"].startswith(
        "test inputs are distributed unlike train's (mean KS "
    )
    assert "applied to one split only" in failed["no train/test feature shift"]


STATS = """

class WithStats(ToyDataModule):
    def stats(self):
        return {{"oov_rate/train": 0.0, "oov_rate/val": {OOV}, "oov_rate/test": {OOV},
                "truncated/train": {TRUNC}, "truncated/val": 0.0, "truncated/test": 0.0}}


def build_datamodule(cfg, seed):
    return WithStats(cfg, seed)
"""


def test_gate_fails_when_oov_rate_and_truncation_are_too_high(project, no_fresh_process):
    _inject(project, STATS.format(OOV=1.0, TRUNC=1.0))
    failed = _failed(_run_data(project))
    assert failed == {
        "OOV rate": "oov_rate 1 on val > 0.1 (train 0, val 1, test 1): tokens the vocabulary "
        "does not know: a case or tokenizer mismatch between building the vocabulary and "
        "looking tokens up; use the same tokenization for both",
        "truncation": "truncated 1 on train > 0.05 (train 1, val 0, test 0): sequences cut by "
        "the length cap: raise the cap (the paper's max length) or say why",
    }


def test_gate_passes_oov_rate_and_truncation_within_limits(project, no_fresh_process):
    _inject(project, STATS.format(OOV=0.02, TRUNC=0.01))
    run = _run_data(project)
    checks = {c["name"]: c for c in run.data["verdict"]["checks"]}
    assert run.record.status == "passed"
    assert checks["OOV rate"]["reason"] == "oov_rate train 0, val 0.02, test 0.02 (max 0.1)"


ONE_BASED = '''

class OneBased(ToyDataModule):
    """Labels 1..3 instead of 0..2."""

    def load_examples(self):
        return {"all": [{**e, "label": e["label"] + 1} for e in super().load_examples()["all"]]}


def build_datamodule(cfg, seed):
    return OneBased(cfg, seed)
'''


def test_gate_fails_naming_one_based_labels_without_a_traceback(project, no_fresh_process):
    _inject(project, ONE_BASED)
    run = _run_data(project)
    assert run.record.status == "failed"  # a verdict, not an error with a traceback
    failed = _failed(run)
    assert failed["every class in every split"] == (
        "labels outside 0..2: {'train': [3], 'val': [3], 'test': [3]}"
    )
    examples = run.record.verdict.evidence["examples"]
    assert len(examples) == 3 and all("'label': " in e for e in examples)  # raw tensors shown


def run_stage_with(project, overrides: list[str]):
    from repro.runner import run_stage

    return run_stage(project, "toy", "data", OVERRIDES + overrides, console=Console(quiet=True))


EMPTY_VAL = """

class EmptyVal(ToyDataModule):
    def load_examples(self):
        exs = super().load_examples()["all"]
        return {"train": exs[:270], "val": [], "test": exs[270:]}


def build_datamodule(cfg, seed):
    return EmptyVal(cfg, seed)
"""


def test_gate_fails_on_an_empty_split_without_measuring_across_splits(project, no_fresh_process):
    _inject(project, EMPTY_VAL)
    run = _run_data(project)
    assert run.record.status == "failed"
    names = [c["name"] for c in run.data["verdict"]["checks"]]
    assert "loaders serve their split" not in names
    assert _failed(run)["splits non-empty"] == "empty split(s) ['val'] (train=270, val=0, test=30)"


NEEDS_LIGHTNING = """

from pytorch_lightning.utilities import rank_zero_only  # more of Lightning than its base class
"""


def test_fresh_process_uses_real_lightning_when_the_stand_in_is_not_enough(project):
    _inject(project, NEEDS_LIGHTNING)
    run = _run_data(project)
    checks = {c["name"]: c for c in run.data["verdict"]["checks"]}
    assert run.record.status == "passed"
    assert checks["preprocessing deterministic"]["reason"].startswith(
        "same splits, model_kwargs, items and first batch in a fresh process built from the files"
    )
