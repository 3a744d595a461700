"""`repro rerun` (re-execute a run from its record, linked) and `repro diff` (what differs between two runs)."""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

from repro.cli import app
from repro.diff import Difference, diff_runs, format_diff, unexpected
from repro.records.record import parse_record

SMALL = ["data.n_examples=300"]


def _record(**kw):
    """A run record as repro reads it, from record.json's JSON with `kw` changed."""
    rec = {
        "paper": "toy",
        "stage": "overfit",
        "status": "passed",
        "id": "20250101-000000-aaaa",
        "started": "2025-01-01T00:00:00",
        "pid": 1,
        "duration_s": 1.0,
        "config": {"seed": 0, "optim": {"lr": 0.01}, "model": {"hidden": 64}},
        "provenance": {
            "seed": "default: repro",
            "optim.lr": "override: command line",
            "model.hidden": "paper: T1",
        },
        "overrides": ["optim.lr=0.01"],
        "fingerprint": {
            "files": {"papers/toy/model.py": "aaa", "data/x.txt": "d1"},
            "parts": {"data_files": "p1"},
        },
        "git": {"commit": "c1", "dirty": False},
        "env": {"python": "3.11.7", "packages": {"torch": "2.13.0"}, "device": {"device": "cpu"}},
        "model": {
            "class": "Classifier",
            "params": {"net.0.weight": [64, 16]},
            "trainable": 1088,
            "total": 1088,
        },
    }
    for k, v in kw.items():
        rec[k] = v
    return parse_record(rec)


# ---- diff (pure) -----------------------------------------------------------------------------------
def test_identical_inputs_differ_in_nothing_even_when_ids_times_and_pids_do():
    a = _record()
    b = _record(
        id="20250202-000000-bbbb",
        started="2025-02-02T00:00:00",
        pid=2,
        duration_s=9.0,
        metrics={"final_loss": 0.1},
    )
    assert diff_runs(a, b) == []
    assert "have the same config" in format_diff([], a.id, b.id)


def test_one_override_is_exactly_one_config_and_one_override_difference():
    a = _record()
    b = _record(
        config={"seed": 0, "optim": {"lr": 0.02}, "model": {"hidden": 64}},
        overrides=["optim.lr=0.02"],
    )
    d = diff_runs(a, b)
    assert [(x.kind, x.key, x.a, x.b) for x in d] == [
        ("config", "optim.lr", 0.01, 0.02),
        ("overrides", "optim.lr", "0.01", "0.02"),
    ]
    assert unexpected(d, ["optim.lr"]) == []
    assert unexpected(d, ["seed"]) == ["optim.lr"]


def test_code_data_git_env_and_model_differences_are_named():
    a = _record()
    b = _record(
        fingerprint={
            "files": {"papers/toy/model.py": "bbb", "data/x.txt": "d2"},
            "parts": {"data_files": "p2"},
        },
        git={"commit": "c2", "dirty": True},
        env={"python": "3.12.0", "packages": {"torch": "2.14.0"}, "device": {"device": "cuda"}},
        model={
            "class": "Classifier",
            "params": {"net.0.weight": [32, 16], "net.3.bias": [3]},
            "trainable": 600,
            "total": 600,
        },
    )
    keys = {(x.kind, x.key) for x in diff_runs(a, b, "", "diff --git a/x b/x")}
    assert keys == {
        ("code", "papers/toy/model.py"),
        ("data", "data/x.txt"),
        ("git", "git.commit"),
        ("git", "git.diff"),
        ("env", "env.python"),
        ("env", "env.torch"),
        ("env", "env.device"),
        ("model", "model/net.0.weight"),
        ("model", "model/net.3.bias"),
        ("model", "model/trainable"),
        ("model", "model/total"),
    }
    # a kind name or a key prefix covers everything under it
    assert unexpected(diff_runs(a, b), ["code", "data", "git", "env", "model"]) == []


def test_same_value_from_another_source_is_a_difference():
    a = _record()
    b = _record(provenance={**_record().provenance, "model.hidden": "default: repro"})
    (d,) = diff_runs(a, b)
    assert d == Difference(
        "config", "model.hidden", 64, 64, "same value, source paper: T1 | default: repro"
    )


# ---- rerun + diff on the toy paper ----------------------------------------------------------------
def test_rerun_of_a_passed_overfit_run_passes_links_and_diffs_clean(project):
    from repro.rerun import rerun
    from repro.runner import run_stage

    quiet = Console(quiet=True)
    first = run_stage(project, "toy", "overfit", SMALL, console=quiet)
    assert first.record.status == "passed"

    again, changed = rerun(project, first.id, console=quiet)
    assert again.record.status == "passed"
    assert again.record.links == {"rerun_of": first.id}
    assert again.record.overrides == SMALL and changed == []
    assert again.record.nondeterministic is None  # timings differ, results do not

    out = CliRunner().invoke(app, ["show", again.id], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and f"re-run of {first.id}" in out.output

    out = CliRunner().invoke(app, ["diff", first.id, again.id])
    assert out.exit_code == 0, out.output
    assert "have the same config, overrides, code, data, environment and model" in out.output

    # one more override -> that override is the one difference; --expect passes on it, fails on another
    third, _ = rerun(project, first.id, ["stage.overfit.max_steps=400"], console=quiet)
    assert third.record.links == {"rerun_of": first.id}
    out = CliRunner().invoke(app, ["diff", first.id, third.id])
    assert out.exit_code == 0
    assert "config:\n  stage.overfit.max_steps: 500 -> 400" in out.output
    assert "overrides:\n  stage.overfit.max_steps: — -> 400" in out.output
    assert "2 differences:" in out.output
    ok = CliRunner().invoke(
        app, ["diff", first.id, third.id, "--expect", "stage.overfit.max_steps"]
    )
    assert ok.exit_code == 0
    bad = CliRunner().invoke(app, ["diff", first.id, third.id, "--expect", "optim.lr"])
    assert bad.exit_code == 1
    assert "differences not expected (--expect optim.lr): stage.overfit.max_steps" in bad.output


def test_rerun_warns_naming_the_file_that_changed(project, capsys):
    from repro.rerun import rerun
    from repro.runner import run_stage

    quiet = Console(quiet=True)
    first = run_stage(project, "toy", "shapes", SMALL, console=quiet)
    model = project.paper_dir("toy") / "model.py"
    model.write_text(model.read_text() + "\n# touched\n")
    console = Console(file=open(project.root / "out.txt", "w"), width=300)
    run, changed = rerun(project, first.id, console=console)
    console.file.close()
    assert "papers/toy/model.py" in changed and "code.model" in changed
    text = (project.root / "out.txt").read_text()
    assert f"warning: since run {first.id} these changed:" in text and "papers/toy/model.py" in text
    assert run.record.links == {"rerun_of": first.id}


def test_git_diffs_that_differ_only_in_run_records_and_notes_are_the_same():
    from repro.diff import comparable_git_diff

    base = "diff --git a/papers/toy/model.py b/papers/toy/model.py\n+x\n"
    a = (
        base
        + "diff --git a/notes/toy.md b/notes/toy.md\n+line 1\n# untracked files (2), not in the diff above:\n"
        "#   runs/toy/data/1/record.json\n#   papers/toy/new.py\n"
    )
    b = (
        base + "# untracked files (3), not in the diff above:\n#   runs/toy/data/1/record.json\n"
        "#   runs/toy/data/2/record.json\n#   papers/toy/new.py\n"
    )
    assert comparable_git_diff(a) == comparable_git_diff(b)
    assert comparable_git_diff(a) != comparable_git_diff(
        base
    )  # the untracked paper file still counts


def test_diff_shows_the_text_of_a_changed_code_file(project):
    from repro.runner import run_stage

    quiet = Console(quiet=True)
    first = run_stage(project, "toy", "shapes", SMALL, console=quiet)
    model = project.paper_dir("toy") / "model.py"
    model.write_text(model.read_text().replace("nn.ReLU(),", "nn.Tanh(),"))
    second = run_stage(project, "toy", "shapes", SMALL, console=quiet)
    out = CliRunner().invoke(app, ["diff", first.id, second.id])
    assert "--- a/papers/toy/model.py" in out.output and "+++ b/papers/toy/model.py" in out.output
    assert "-            nn.ReLU()," in out.output and "+            nn.Tanh()," in out.output


# A toy data module whose split depends on the order of a set of strings: Python's hash seed
# (a new one in every process) decides it. The bug zoo's "non-deterministic set iteration".
SET_ORDER = """

_load = ToyDataModule.load_examples


def _set_ordered(self):
    examples = _load(self)["all"]
    order = {f"example-{i}": i for i in range(len(examples))}
    return {"all": [examples[order[k]] for k in set(order)]}


ToyDataModule.load_examples = _set_ordered
"""


@pytest.mark.slow  # ~18 s: three full trainings
def test_rerun_and_diff_say_when_the_same_inputs_give_different_results(project):
    import json
    import os
    import subprocess
    import sys

    data_py = project.paper_dir("toy") / "data.py"
    data_py.write_text(data_py.read_text() + SET_ORDER)

    def repro(seed: str, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONHASHSEED": seed, "COLUMNS": "300"}
        env.pop("PYTHONPATH", None)
        return subprocess.run(
            [sys.executable, "-m", "repro", *args],
            cwd=project.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert repro("1", "stage", "overfit", "--force", *SMALL).returncode == 0
    (first,) = [p.name for p in (project.root / "runs" / "toy" / "overfit").iterdir()]
    again = repro("2", "rerun", first)
    assert "the run is not deterministic" in again.stdout, again.stdout + again.stderr
    second = next(
        p for p in (project.root / "runs" / "toy" / "overfit").iterdir() if p.name != first
    )
    record = json.loads((second / "record.json").read_text())
    assert record["nondeterministic"]["rerun_of"] == first and record["nondeterministic"]["metrics"]
    assert not [
        k for k in record["nondeterministic"]["metrics"] if "speed" in k or k.endswith("_s")
    ]
    out = repro("3", "diff", first, second.name)
    assert "same inputs, different results" in out.stdout
    assert repro("3", "diff", first, second.name, "--expect", "run").returncode == 1
