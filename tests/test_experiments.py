"""Tests for repro/gates/experiments.py: the results table, the job check, and variants run through submitit."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from repro.config.schema import Variant
from repro.gates.experiments import check_jobs, markdown_table, results_table

OV = ["trainer.max_epochs=2", "optim.lr=0.01", "data.n_examples=300"]
VARIANTS = [Variant("full model", [], 90.0), Variant("narrow", ["model.hidden=4"], None)]


# ---- pure ---------------------------------------------------------------------------------------
def _result(variant, seed, acc=None, error=None):
    r = {"variant": variant, "seed": seed}
    if acc is not None:
        r["metrics"] = {"test/acc": acc}
    if error:
        r["error"] = error
    return r


def test_results_table_means_stds_and_deltas():
    results = [
        _result("full model", 0, 90.0),
        _result("full model", 1, 92.0),
        _result("narrow", 0, 80.0),
    ]
    rows = results_table(VARIANTS, results, "test/acc")
    assert [r.variant for r in rows] == ["full model", "narrow"]
    assert rows[0].ours == pytest.approx(91.0) and rows[0].std == pytest.approx(2**0.5)
    assert rows[0].n == 2 and rows[0].delta == 0.0 and rows[0].overrides == "—"
    assert rows[1].ours == 80.0 and rows[1].std is None and rows[1].delta == pytest.approx(-11.0)
    assert rows[1].overrides == "model.hidden=4"
    assert rows[0].paper == 90.0 and rows[1].paper is None


def test_results_table_with_a_failed_variant():
    rows = results_table(
        VARIANTS, [_result("full model", 0, 90.0), _result("narrow", 0, error="boom")], "test/acc"
    )
    assert rows[1].ours is None and rows[1].n == 0 and rows[1].delta is None


def test_markdown_table():
    rows = results_table(
        VARIANTS,
        [
            _result("full model", 0, 90.0),
            _result("full model", 1, 92.0),
            _result("narrow", 0, 80.0),
        ],
        "test/acc",
    )
    md = markdown_table(rows, "test/acc", "Table 4", ["trainer.max_epochs=5"])
    assert md.startswith("# Experiments: test/acc (paper: Table 4)")
    assert "`trainer.max_epochs=5`" in md
    assert "| full model | `—` | 91.00 ± 1.41 | +0.00 | 2 | 90.00 |" in md
    assert "| narrow | `model.hidden=4` | 80.00 | -11.00 | 1 | — |" in md


def test_check_jobs_passes_when_every_run_has_the_metric():
    c = check_jobs([_result("full model", 0, 90.0), _result("narrow", 0, 80.0)], "test/acc")
    assert c.passed
    assert c.reason == "2 runs finished with test/acc"


def test_check_jobs_names_failed_runs():
    c = check_jobs(
        [
            _result("full model", 0, 90.0),
            _result("narrow", 1, error="ConfigError: bad key"),
            {"variant": "other", "seed": 0, "metrics": {"val/acc": 1.0}},
        ],
        "test/acc",
    )
    assert not c.passed
    assert c.reason.startswith("2 of 3 runs failed: ")
    assert "narrow (seed 1): ConfigError: bad key" in c.reason
    assert "other (seed 0): no test/acc" in c.reason


# ---- through submitit ---------------------------------------------------------------------------
def _parse_rows(md: str) -> list[list[str]]:
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| variant")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]


@pytest.mark.slow  # ~16 s: trains every variant
def test_experiments_run_declared_variants(project):
    from repro.runner import run_stage

    run = run_stage(project, "toy", "experiments", OV, force=True, console=Console(quiet=True))
    v = run.data["verdict"]
    assert run.record.status == "passed", v["reason"]
    assert v["reason"] == "1 check passed: 2 runs finished with test/acc"
    rows = _parse_rows((run.dir / "results.md").read_text())
    assert [r[0] for r in rows] == ["full model", "narrow hidden layer"]
    for r in rows:
        assert re.fullmatch(r"\d+\.\d\d", r[2]), r
        assert 0 <= float(r[2]) <= 100
        assert r[4] == "1"
    assert (run.dir / "results.png").stat().st_size > 0
    assert [r["epochs"] for r in v["evidence"]["results"]] == [
        2,
        2,
    ]  # the command line beat the paper's 5


def test_experiments_fail_naming_a_variant_with_a_bad_override(project):
    from repro.runner import run_stage

    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    text = paper_yaml.read_text()
    start = text.index("    variants:")
    end = text.index("  provenance:")
    paper_yaml.write_text(
        text[:start] + "    variants:\n      - name: broken variant\n"
        "        overrides: [model.nosuchkey=1]\n        paper: null\n" + text[end:]
    )
    run = run_stage(project, "toy", "experiments", OV, force=True, console=Console(quiet=True))
    v = run.data["verdict"]
    assert run.record.status == "failed"
    assert "1 of 1 runs failed: broken variant (seed 0)" in v["reason"]
    assert "nosuchkey" in v["reason"]
    rows = _parse_rows((run.dir / "results.md").read_text())
    assert rows == [["broken variant", "`model.nosuchkey=1`", "—", "—", "0", "—"]]


def test_experiments_without_variants_fail(project):
    from repro.config.compose import compose
    from repro.context import StageContext
    from repro.gates import experiments

    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    text = paper_yaml.read_text()
    start = text.index("    variants:")
    end = text.index("  provenance:")
    paper_yaml.write_text(text[:start] + "    variants: []\n" + text[end:])
    ctx = StageContext(project, "toy", compose(project, "toy", OV), Console(quiet=True))
    v = experiments.run(ctx)
    assert not v.passed
    assert "declares no paper.experiments.variants" in v.reason


def test_the_table_lists_the_command_lines_overrides_and_what_they_replaced():
    """Issue 20: the table said every variant ran with the paper's trainer.max_epochs=5 when the
    command line's 3 applied, and never listed the command line."""
    rows = results_table(
        VARIANTS,
        [_result("full model", 0, 90.0), _result("narrow", 0, 80.0)],
        "test/acc",
        ["trainer.max_epochs=3", "model.hidden=8"],
    )
    md = markdown_table(
        rows, "test/acc", "Table 4", ["trainer.max_epochs=5", "data.n_examples=300"],
        ["trainer.max_epochs=3", "model.hidden=8"],
    )  # fmt: skip
    assert (
        "Every variant also ran with: `data.n_examples=300` (paper config) and "
        "`trainer.max_epochs=3 model.hidden=8` (command line). The command line's "
        "`trainer.max_epochs=3` replaced the paper config's `trainer.max_epochs=5`."
    ) in md
    assert "trainer.max_epochs=5` (paper config)" not in md
    assert (
        "| narrow | `model.hidden=4 (replaced by the command line's model.hidden=8)` | 80.00 |"
    ) in md


def test_table_cells_are_escaped():
    from repro.config.schema import Variant

    variants = [Variant("a | b\nc", ["model.x=`y`"]), Variant("e\x1b[2J", [])]
    rows = results_table(variants, [_result("a | b\nc", 0, 90.0)], "test/acc")
    md = markdown_table(rows, "test/acc", None, [])
    assert "| a \\| b c | `` model.x=`y` `` | 90.00 |" in md
    assert "| e\\x1b[2J | `—` |" in md
    for line in md.splitlines():
        if line.startswith("| "):  # six cells in every row: no `|` breaks one
            assert len([c for c in line.replace("\\|", "").split("|")]) == 8, line
