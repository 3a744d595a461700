"""What a gate gets: the resolved config, the run being recorded, and builders for data and model."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from repro.config import Resolved
from repro.errors import PaperError
from repro.project import Project


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; deterministic algorithms on (same seed -> same numbers on CPU)."""
    import random

    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)


def import_paper_module(project: Project, paper: str, module: str, attr: str) -> Any:
    project.activate()
    path = project.paper_dir(paper) / f"{module}.py"
    try:
        mod = importlib.import_module(f"papers.{paper}.{module}")
    except ModuleNotFoundError as e:
        if not path.exists():
            raise PaperError(f"{path} is missing: every paper needs {module}.py defining {attr}()") from e
        raise
    if not hasattr(mod, attr):
        raise PaperError(f"{path} defines no {attr}(): repro calls it to build the paper's {module}")
    return getattr(mod, attr)


def import_object(project: Project, spec: str) -> Any:
    """'papers.bimpm.baseline:baseline' -> the object."""
    project.activate()
    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise PaperError(f"cannot import '{spec}' (module:function): {e}") from e


@dataclass
class StageContext:
    project: Project
    paper: str
    resolved: Resolved
    console: Console
    run: Any = None  # repro.records.Run (None in tests that call gates directly)
    forced: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.resolved.get("seed", 0))

    def stage_cfg(self, stage: str) -> dict[str, Any]:
        return dict(self.resolved.get(f"stage.{stage}") or {})

    def build_datamodule(self, seed: int | None = None):
        build = import_paper_module(self.project, self.paper, "data", "build_datamodule")
        dm = build(self.resolved.section("data"), self.seed if seed is None else seed)
        return dm

    def build_model(self, dm, seed: int | None = None):
        """Seeded build, then repro's default init where the paper is silent."""
        from repro.train.init import apply_init

        build = import_paper_module(self.project, self.paper, "model", "build_model")
        seed_everything(self.seed if seed is None else seed, bool(self.resolved.get("deterministic", True)))
        try:
            model = build(self.resolved.section("model"), **dm.model_kwargs())
        except (TypeError, ValueError) as e:
            raise PaperError(f"papers/{self.paper}/model.py build_model failed with the model config: {e}") from e
        applied = apply_init(model, str(self.resolved.get("init.scheme", "he_xavier")))
        self.extra["init"] = applied
        self.extra["model"] = model_summary(model)
        return model


def model_summary(model) -> dict[str, Any]:
    """Parameter names, shapes and counts: what `repro diff` compares between two runs."""
    params = {n: list(p.shape) for n, p in model.named_parameters()}
    return {
        "class": type(model).__name__,
        "params": params,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in model.parameters()),
    }
