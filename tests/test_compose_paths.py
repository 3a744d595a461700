"""The two composers agree (issue 19): `repro status` composes without Hydra (a plain merge of the
defaults list, repro/config/compose.py: _compose_plain) and everything with overrides goes
through Hydra; on every config in the repo and every template, both give the same tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.config.compose import _compose_plain, compose_hydra
from repro.project import Project
from repro.scaffold import TASKS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("paper", sorted(p.stem for p in (REPO / "conf" / "paper").glob("*.yaml")))
def test_every_paper_of_the_repo_composes_the_same_both_ways(paper):
    project = Project(REPO)
    plain = _compose_plain(project, paper)
    assert plain is not None, "the plain path declined: it would never be used for this paper"
    assert plain == compose_hydra(project, paper, [])


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("groups", [{}, {"logger": "wandb", "launcher": "slurm"}])
def test_every_template_composes_the_same_both_ways(make_project, task, groups):
    project = make_project("p", task=task)
    config = project.conf_dir / "config.yaml"
    text = config.read_text()
    for group, option in groups.items():  # another option of a config group, chosen in the file
        default = {"logger": "csv", "launcher": "local"}[group]
        assert f"  - {group}: {default}" in text
        text = text.replace(f"  - {group}: {default}", f"  - {group}: {option}")
    config.write_text(text)
    plain = _compose_plain(project, "p")
    assert plain is not None
    assert plain == compose_hydra(project, "p", [])
    if groups:
        assert plain["logger"]["name"] == "wandb" and plain["launcher"]["name"] == "slurm"


def test_the_plain_path_declines_what_it_cannot_merge(make_project):
    """An interpolation (${...}) is Hydra's to resolve: the plain path hands it over."""
    project = make_project("p")
    yaml = project.conf_dir / "paper" / "p.yaml"
    yaml.write_text(yaml.read_text() + "seeds: ${seed}\n")
    assert _compose_plain(project, "p") is None
    assert compose_hydra(project, "p", [])["seeds"] == 0
