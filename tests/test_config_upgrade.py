"""A project whose conf/ was copied by an older `repro init` (repro/config/upgrade.py): settings
added since come from the installed repro's conf/ and say so; a retired setting is dropped with a
note (its value moved where a successor takes it); what the project sets is never changed."""

from __future__ import annotations

import re

from repro.config import upgrade as upgrade_module
from repro.config.compose import compose


def _drop_lines(path, pattern: str) -> None:
    text = path.read_text()
    kept = [ln for ln in text.splitlines() if not re.match(pattern, ln)]
    assert len(kept) < len(text.splitlines()), f"{pattern} not in {path}"
    path.write_text("\n".join(kept) + "\n")


def test_a_key_added_since_is_filled_from_repros_conf_and_says_so(project):
    _drop_lines(project.conf_dir / "stage" / "overfit.yaml", r"^max_steps:")
    _drop_lines(project.conf_dir / "defaults.yaml", r"^(dev:|  report_after_s:|  +# |\s+#)")
    r = compose(project, "toy")
    assert r.cfg.stage.overfit.max_steps > 0 and r.cfg.dev.report_after_s > 0
    for key in ("stage.overfit.max_steps", "dev.report_after_s"):
        assert "predates the key" in r.provenance[key], r.provenance[key]
    assert "predates" not in r.provenance["stage.overfit.examples"]


def test_a_value_the_project_sets_is_kept(project):
    path = project.conf_dir / "stage" / "overfit.yaml"
    path.write_text(re.sub(r"(?m)^max_steps: \d+", "max_steps: 7", path.read_text()))
    assert compose(project, "toy").cfg.stage.overfit.max_steps == 7


def test_only_the_chosen_launcher_fills_in(project):
    _drop_lines(project.conf_dir / "launcher" / "slurm.yaml", r"^give_up_after_s:")
    assert compose(project, "toy").cfg.launcher.name == "local"
    r = compose(project, "toy", ["launcher=slurm"])
    assert r.config["launcher"]["give_up_after_s"] > 0
    assert "predates the key" in r.provenance["launcher.give_up_after_s"]


def test_a_retired_key_is_dropped_with_a_note_and_its_value_moves(project, capsys, monkeypatch):
    monkeypatch.setattr(upgrade_module, "_SAID", set())
    path = project.conf_dir / "stage" / "overfit.yaml"
    text = re.sub(r"(?m)^lr: .*$", "lr: null", path.read_text())
    path.write_text(text + "fallback_lr: 0.02\n")
    r = compose(project, "toy")
    assert r.cfg.optim.lr is None  # the template states no LR: the old fallback is the overfit LR
    assert r.cfg.stage.overfit.lr == 0.02
    err = capsys.readouterr().err
    assert "stage.overfit.fallback_lr" in err and "delete the line" in err
    assert "fallback_lr" not in r.config["stage"]["overfit"]


def test_repros_own_checkout_is_left_alone():
    from pathlib import Path

    from repro.project import Project

    repo = Project(Path(__file__).resolve().parents[1])
    r = compose(repo, "bimpm")
    assert not any("predates" in p for p in r.provenance.values())
