"""Typed configs for tests, built from the repo's own conf/ (the one place the defaults live)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from repro.config import schema
from repro.config.typed import from_dict

CONF = Path(__file__).resolve().parents[1] / "conf"


def stage_config(name: str, **overrides: Any):
    """conf/stage/<name>.yaml as the typed dataclass its gate receives, some values replaced."""
    cls_name = {f.name: f.type for f in dataclasses.fields(schema.StageConfigs)}[name]
    data = yaml.safe_load((CONF / "stage" / f"{name}.yaml").read_text())
    return from_dict(getattr(schema, cls_name), data | overrides, f"stage.{name}")


def data_config(values: dict[str, Any] | None = None) -> schema.DataConfig:
    """A DataConfig: conf/defaults.yaml's data section updated with `values`; keys that are not
    repro's (dataset, paths ...) end up in .options, as they do when a config is composed."""
    base = yaml.safe_load((CONF / "defaults.yaml").read_text())["data"]
    return from_dict(schema.DataConfig, base | dict(values or {}), "data")


def shrink_toy(
    project, n_examples: int = 300, max_epochs: int = 2, target: float = 40.0, **extra: str
) -> None:
    """Make the toy paper fast in its own config (the base config, whose runs are the milestones):
    fewer examples and epochs, a reachable target, a fixed LR; `extra` appends YAML sections,
    e.g. stage="  overfit:\\n    max_steps: 300\\n"."""
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    text = paper_yaml.read_text()
    for old, new in (
        ("  n_examples: 1200", f"  n_examples: {n_examples}"),
        ("  max_epochs: 15", f"  max_epochs: {max_epochs}"),
        ("      value: 95.0", f"      value: {target}"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    text += "optim:\n  lr: 0.01\n"
    for section, body in extra.items():
        text += f"{section}:\n{body}"
    paper_yaml.write_text(text)


def set_paper_tests(root: Path, on: bool) -> None:
    """Turn stage.shapes.paper_tests on or off in the project's conf/stage/shapes.yaml (the suite's
    throwaway projects run it off; tests/test_paper_tests.py on)."""
    path = root / "conf" / "stage" / "shapes.yaml"
    lines = path.read_text().splitlines(keepends=True)
    (i,) = [i for i, ln in enumerate(lines) if ln.startswith("paper_tests:")]
    lines[i] = f"paper_tests: {'true' if on else 'false'}\n"
    path.write_text("".join(lines))
