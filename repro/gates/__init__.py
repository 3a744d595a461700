"""The five gates, in order. Each gate module exposes `run(ctx) -> Verdict` and nothing else is
required of it; its Verdict carries the gate's typed metrics (repro/gates/metrics.py).

Importing this package is cheap (no torch): `status` and refusals use STAGES and CHEAP_STAGES;
`gate(stage)` imports a gate's module only when it is about to run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from repro.errors import GateRefused

STAGES = ("data", "shapes", "overfit", "full", "experiments")
CHEAP_STAGES = ("data", "shapes")  # re-run automatically when stale; the others are named
# The runner prints and records a time and memory forecast before these gates train (from the
# data and overfit runs' measurements, repro/forecast.py), and the record holds it beside what
# the run really took.
FORECAST_STAGES = ("full",)


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise GateRefused(f"stage '{stage}': expected one of {', '.join(STAGES)} (in that order)")
    return stage


def gate(stage: str) -> ModuleType:
    """The gate module for `stage` (repro.gates.<stage>), whose run(ctx) returns a Verdict."""
    return importlib.import_module(f"repro.gates.{check_stage(stage)}")
