"""Bad config values fail once, where the config is composed: one line naming the key, the value
and what is allowed, before any stage starts (no run directory, no notebook line)."""

from __future__ import annotations

import pytest

from repro.config.compose import compose
from repro.errors import ConfigError

# override -> (pieces the one-line message must contain)
CASES = {
    "optim.lr=abc": [
        "optim.lr (set on the command line)",
        "expected a number or null",
        "found 'abc'",
    ],
    "optim.lr=-1": ["optim.lr", "expected a number > 0", "found -1"],
    "optim.name=rmsprop": ["optim.name", "one of ['adamw', 'adam', 'sgd']", "found 'rmsprop'"],
    "schedule.name=cosine": ["schedule.name", "one of ['onecycle', 'constant']", "found 'cosine'"],
    "launcher.name=pbs": ["launcher.name", "one of ['local', 'slurm']", "found 'pbs'"],
    "data.batch_size=abc": ["data.batch_size", "expected an integer", "found 'abc'"],
    "data.batch_size=0": ["data.batch_size", "expected an integer >= 1", "found 0"],
    "data.batch_size=-5": ["data.batch_size", "expected an integer >= 1", "found -5"],
    "data.split=[0.5,0.5,0.5]": [
        "data.split",
        "3 positive fractions",
        "summing to 1",
        "[0.5, 0.5, 0.5]",
    ],
    "seed=abc": ["seed (set on the command line)", "expected an integer", "found 'abc'"],
    "seeds=0": ["seeds", "expected an integer >= 1", "found 0"],
    "deterministic=maybe": ["deterministic", "expected true or false", "found 'maybe'"],
    "trainer.precision=8-bit": ["trainer.precision", "'bf16-mixed'", "found '8-bit'"],
    "trainer.strategy=horovod": ["trainer.strategy", "'ddp'", "found 'horovod'"],
    "trainer.early_stopping.monitor=loss": [
        "trainer.early_stopping.monitor",
        "val/loss",
        "found 'loss'",
    ],
    "stage.overfit.loss_ratio=2": ["stage.overfit.loss_ratio", "a number < 1", "found 2"],
    "lr_finder.max_lr=1e-9": ["lr_finder.max_lr", "above min_lr", "found 1e-09"],
    "+foo=1": [
        "foo (set on the command line)",
        "unknown key",
        "valid keys under '<top>'",
        "'optim'",
    ],
    "+optim.lrr=1": ["optim.lrr", "unknown key", "'lr'", "'weight_decay'"],
    "hydra.run.dir=x": ["hydra.run.dir=x", "repro owns run directories"],
    "paper=other": ["paper=other", "--paper"],
    "optim.lr": ["optim.lr", "expected key=value"],
}


@pytest.mark.parametrize("override", list(CASES))
def test_bad_value_is_one_line_naming_key_value_and_allowed(project, override):
    with pytest.raises(ConfigError) as e:
        compose(project, "toy", [override])
    msg = str(e.value)
    assert "\n" not in msg
    for piece in CASES[override]:
        assert piece in msg, (piece, msg)


def test_paper_key_with_a_bad_value_fails_before_the_run_starts(project, cli):
    """The paper's own keys are checked against the classes its code declares (MODEL_CONFIG,
    DATA_CONFIG) before a record is created."""
    for override, pieces in (
        (
            "model.hidden=wide",
            ["model.hidden (set on the command line)", "expected an integer", "'wide'"],
        ),
        ("+data.n_exampels=5", ["data.n_exampels", "unknown key", "'n_examples'"]),
    ):
        code, out, err = cli("stage", "data", "--paper", "toy", override)
        assert code == 1, out + err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), err
        for piece in pieces:
            assert piece in lines[0], (piece, lines[0])
    assert not (project.root / "runs").exists()  # no run directory, no record
    assert "· data ·" not in (project.notes_dir / "toy.md").read_text()


def test_cli_prints_one_error_line_and_records_nothing(project, cli):
    code, out, err = cli("stage", "overfit", "--paper", "toy", "optim.lr=abc")
    assert code == 1 and out == ""
    assert err.strip() == (
        "Error: optim.lr (set on the command line): expected a number or null, found 'abc'"
    )
    assert not (project.root / "runs").exists()


def test_a_bad_value_in_the_paper_yaml_names_the_file(project):
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    paper_yaml.write_text(paper_yaml.read_text() + "optim:\n  weight_decay: lots\n")
    with pytest.raises(
        ConfigError, match=r"optim\.weight_decay \(set in conf/paper/toy\.yaml\): expected a number"
    ):
        compose(project, "toy")


def test_a_yaml_syntax_error_names_the_file_and_line(project):
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    paper_yaml.write_text(paper_yaml.read_text() + "model:\n  hidden: [64\n")
    with pytest.raises(
        ConfigError, match=r"toy\.yaml:\d+: expected valid YAML, found a syntax error"
    ):
        compose(project, "toy")


def test_a_stray_key_from_an_unquoted_comma_says_so(project):
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    text = paper_yaml.read_text().replace(
        "      - name: narrow hidden layer\n",
        "      - {name: narrow (tanh, avg pool), overrides: []}\n"
        "      - name: narrow hidden layer\n",
    )
    paper_yaml.write_text(text)
    with pytest.raises(ConfigError) as e:
        compose(project, "toy")
    msg = str(e.value)
    assert "paper.experiments.variants[1].avg pool)" in msg and "quote the value" in msg
