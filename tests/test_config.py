"""Tests for repro/config.py: compose on a scaffolded paper, provenance of each value, typos fail with the valid keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.config.compose import compose
from repro.errors import ConfigError
from repro.project import Project


def _paper_yaml(project: Project) -> Path:
    return project.conf_dir / "paper" / "toy.yaml"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


# ---- provenance -------------------------------------------------------------------------------
def test_paper_value_with_provenance_entry_gets_that_entry(project):
    _edit(
        _paper_yaml(project),
        'model.hidden: "default: TODO replace with the paper\'s value"',
        'model.hidden: "paper: Table 1"',
    )
    r = compose(project, "toy")
    assert r.value("model.hidden") == 64
    assert r.provenance["model.hidden"] == "paper: Table 1"
    assert r.provenance["data.n_examples"] == "default: enough for a stable toy test accuracy"


def test_value_only_in_repro_defaults_is_default(project):
    r = compose(project, "toy")
    assert r.value("optim.weight_decay") == 0.01
    assert r.provenance["optim.weight_decay"].startswith("default: ")
    assert r.provenance["data.batch_size"].startswith("default: ")
    assert r.provenance["stage.overfit.max_steps"].startswith("default: ")


def test_command_line_override_is_override(project):
    r = compose(project, "toy", ["optim.lr=0.01", "model.hidden=8"])
    assert r.value("optim.lr") == 0.01
    assert r.value("model.hidden") == 8
    assert r.provenance["optim.lr"] == "override: command line"
    assert r.provenance["model.hidden"] == "override: command line"  # beats the paper's own entry
    assert r.overrides == ["optim.lr=0.01", "model.hidden=8"]


def test_paper_value_without_entry_is_unsourced(project):
    _append(_paper_yaml(project), "optim:\n  weight_decay: 0.1\n")
    r = compose(project, "toy")
    assert r.value("optim.weight_decay") == 0.1
    assert r.provenance["optim.weight_decay"].startswith("unsourced: ")
    assert "toy.yaml" in r.provenance["optim.weight_decay"]


def test_defaults_lists_default_filled_values_only(project):
    r = compose(project, "toy", ["optim.lr=0.01"])
    d = r.defaults()
    assert d["optim.weight_decay"] == 0.01
    assert d["data.batch_size"] == 32
    assert d["optim.name"] == "adamw"
    assert "optim.lr" not in d  # overridden
    assert not [k for k in d if k.startswith(("stage.", "logger.", "launcher."))]


def test_defaults_excludes_paper_sourced_values(project):
    _edit(
        _paper_yaml(project),
        'model.hidden: "default: TODO replace with the paper\'s value"',
        'model.hidden: "paper: Table 1"',
    )
    d = compose(project, "toy").defaults()
    assert "model.hidden" not in d
    assert "model.dropout" in d  # its entry says "default: ..."


# ---- typos and bad input fail at load ---------------------------------------------------------
def test_misspelled_key_appended_on_command_line_lists_valid_keys(project):
    with pytest.raises(ConfigError) as e:
        compose(project, "toy", ["+optim.lrr=1"])
    msg = str(e.value)
    assert "optim.lrr" in msg
    assert "'lr'" in msg and "'weight_decay'" in msg


def test_misspelled_key_overridden_on_command_line_is_config_error(project):
    with pytest.raises(ConfigError) as e:
        compose(project, "toy", ["optim.lrr=1"])
    assert "optim.lrr" in str(e.value)


def test_misspelled_key_in_paper_yaml_lists_valid_keys(project):
    _append(_paper_yaml(project), "optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        compose(project, "toy")
    msg = str(e.value)
    assert "optim.lrr" in msg
    assert "valid keys under 'optim'" in msg
    assert "'lr'" in msg and "'betas'" in msg


def test_nested_typo_in_repro_section_is_rejected(project):
    with pytest.raises(ConfigError, match=r"trainer\.early_stopping\.patiense"):
        compose(project, "toy", ["+trainer.early_stopping.patiense=5"])


def test_unknown_paper_meta_key_is_rejected(project):
    _edit(_paper_yaml(project), "  expected_params: null", "  expected_params: null\n  targts: []")
    with pytest.raises(ConfigError, match="targts"):
        compose(project, "toy")


def test_override_without_equals_is_config_error(project):
    with pytest.raises(ConfigError, match="key=value"):
        compose(project, "toy", ["optim.lr"])


def test_bad_provenance_kind_is_config_error(project):
    _edit(
        _paper_yaml(project),
        'data.noise: "default: toy dataset"',
        'data.noise: "guess: toy dataset"',
    )
    with pytest.raises(ConfigError) as e:
        compose(project, "toy")
    msg = str(e.value)
    assert "data.noise" in msg and "guess" in msg
    assert "'paper'" in msg


def test_target_without_value_is_config_error(project):
    _edit(_paper_yaml(project), "      value: 95.0", "      valu: 95.0")
    with pytest.raises(ConfigError, match="value"):
        compose(project, "toy")


def test_unknown_paper_is_config_error(project):
    with pytest.raises(ConfigError, match="nosuchpaper"):
        compose(project, "nosuchpaper")
