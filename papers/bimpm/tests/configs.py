"""BiMPM's model config for tests, built from the paper's YAML (the one place its values live)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from papers.bimpm.model import BiMPMConfig
from repro.config import schema
from repro.config.typed import from_dict

CONF = Path(__file__).resolve().parents[3] / "conf"


def paper_model_config(paper: str = "bimpm", /, **changes: Any) -> BiMPMConfig:
    """conf/paper/<paper>.yaml's `model:` section with `changes`, checked and typed as repro
    checks it before handing it to build_model."""
    values = yaml.safe_load((CONF / "paper" / f"{paper}.yaml").read_text())["model"]
    return from_dict(BiMPMConfig, values | changes, "model")


def data_config(values: dict[str, Any] | None = None) -> schema.DataConfig:
    """conf/defaults.yaml's `data:` section with `values`, typed; keys that are not repro's
    (dataset, paths ...) end up in .options, as they do when a config is composed. Here, not in
    the repo's tests/, so that BiMPM's tests run in any project holding conf/ and papers/bimpm."""
    base = yaml.safe_load((CONF / "defaults.yaml").read_text())["data"]
    return from_dict(schema.DataConfig, base | dict(values or {}), "data")
