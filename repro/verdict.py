"""The result of a gate: PASS or FAIL, the numbers behind it, and one sentence with those numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Check:
    """One named measurement inside a gate and whether it held."""

    name: str
    passed: bool
    reason: (
        str  # one sentence carrying the numbers, e.g. "loss at init 1.12 vs ln(3)=1.10 (tol 0.27)"
    )
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    """A gate's decision: passed iff every check passed; reason names the first failure's numbers.

    `metrics` is the gate's typed summary (a dataclass from repro.gates.metrics): what the record,
    report, forecast and display read. `evidence` holds everything else a reader may want to see.
    """

    stage: str
    passed: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    metrics: Any = None

    @classmethod
    def from_checks(
        cls, stage: str, checks: list[Check], evidence: dict | None = None, metrics: Any = None
    ) -> Verdict:
        failed = [c for c in checks if not c.passed]
        if failed:
            reason = "; ".join(f"{c.name}: {c.reason}" for c in failed)
        else:
            passed = f"all {len(checks)} checks passed" if len(checks) > 1 else "1 check passed"
            reason = f"{passed}: " + "; ".join(c.reason for c in checks)
        return cls(stage, not failed, reason, dict(evidence or {}), list(checks), metrics)

    def to_dict(self) -> dict[str, Any]:
        """The verdict as recorded (metrics are recorded beside it, in the record's `metrics`)."""
        d = asdict(self)
        d.pop("metrics")
        return d
