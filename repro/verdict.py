"""The result of a gate: PASS or FAIL, the numbers behind it, and one sentence with those numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Check:
    """One named measurement inside a gate and whether it held.

    A check that could not be measured (nothing to measure for this task, a timeout, a split too
    small) has `measured=False` and `passed=False`: it is shown as "not measured", never counted
    among the passed checks, and does not fail the gate."""

    name: str
    passed: bool
    reason: (
        str  # one sentence carrying the numbers, e.g. "loss at init 1.12 vs ln(3)=1.10 (tol 0.27)"
    )
    evidence: dict[str, Any] = field(default_factory=dict)
    measured: bool = True

    @classmethod
    def not_measured(cls, name: str, why: str, evidence: dict[str, Any] | None = None) -> Check:
        """A check that was not measured, and why ("not measured: <why>")."""
        return cls(name, False, f"not measured: {why}", dict(evidence or {}), measured=False)

    @property
    def state(self) -> str:
        """'passed' | 'failed' | 'not measured'."""
        return "not measured" if not self.measured else "passed" if self.passed else "failed"


@dataclass
class Verdict:
    """A gate's decision: passed iff every measured check passed; reason names the first failure's
    numbers. Checks that were not measured are listed as such, never counted as passed.

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
        measured = [c for c in checks if c.measured]
        failed = [c for c in measured if not c.passed]
        unmeasured = [c for c in checks if not c.measured]
        if failed:
            reason = "; ".join(f"{c.name}: {c.reason}" for c in failed)
        elif not measured:
            reason = "no check could be measured"
        else:
            what = "measured checks" if unmeasured else "checks"
            passed = f"all {len(measured)} {what} passed" if len(measured) > 1 else "1 check passed"
            reason = f"{passed}: " + "; ".join(c.reason for c in measured)
        if unmeasured:
            reason += (
                f" ({len(unmeasured)} not measured: "
                + "; ".join(
                    f"{c.name}: {c.reason.removeprefix('not measured: ')}" for c in unmeasured
                )
                + ")"
            )
        ok = bool(measured) and not failed
        return cls(stage, ok, reason, dict(evidence or {}), list(checks), metrics)

    def to_dict(self) -> dict[str, Any]:
        """The verdict as recorded (metrics are recorded beside it, in the record's `metrics`)."""
        d = asdict(self)
        d.pop("metrics")
        return d
