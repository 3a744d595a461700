"""What a readable record.json holds: the type of every field that `log`, `status`, `show`,
`diff`, `report` and `--resume` rely on, checked once when a record is read (issue 14).

A record that does not fit is unreadable: its readers skip it with a warning naming the file,
instead of one record with `"verdict": "x"` taking down the whole log. Unknown fields are kept
(a newer repro may write more); only the shapes of known ones are checked. Values the readers
never look inside (config values, evidence, metrics, which the gates' typed metrics check
themselves) are checked as mappings only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from repro.config.typed import Invalid, from_dict
from repro.errors import ConfigError

REQUIRED = ("id", "paper", "stage", "status")
Status = Literal["running", "passed", "failed", "error", "interrupted"]


def _when(name: str, value: str | None) -> None:
    """A timestamp field must parse: `finish` and the displays compute with it."""
    if value is None:
        return
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(name, f"expected an ISO 8601 time, found {value[:40]!r}") from None


@dataclass(frozen=True)
class CheckShape:
    EXTRA_FIELD = "extra"

    name: str | None = None
    passed: bool | None = None
    reason: str | None = None
    evidence: dict[str, Any] | None = None
    measured: bool | None = None  # False: not measured (records before it: always measured)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VerdictShape:
    EXTRA_FIELD = "extra"

    passed: bool | None = None
    reason: str | None = None
    stage: str | None = None
    evidence: dict[str, Any] | None = None
    checks: list[CheckShape] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FingerprintShape:
    EXTRA_FIELD = "extra"

    stages: dict[str, str | None] = field(default_factory=dict)
    parts: dict[str, str | None] = field(default_factory=dict)
    files: dict[str, str | None] = field(default_factory=dict)
    judged: dict[str, str | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GitShape:
    EXTRA_FIELD = "extra"

    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    diff_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnvShape:
    EXTRA_FIELD = "extra"

    python: str | None = None
    packages: dict[str, str | None] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResumedShape:
    EXTRA_FIELD = "extra"

    at: str | None = None
    from_ckpt: list[str] | None = None
    previous_status: str | None = None
    previous_duration_s: float | None = None
    changed: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _when("at", self.at)


@dataclass(frozen=True)
class ActualShape:
    EXTRA_FIELD = "extra"

    wall_s: float | None = None
    epochs: int | None = None
    s_per_epoch: float | None = None
    peak_rss_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelShape:
    EXTRA_FIELD = "extra"

    params: dict[str, list[int]] = field(default_factory=dict)
    trainable: int | None = None
    total: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordShape:
    """Every field repro writes (repro/records/: create_run, finish, annex, reopen)."""

    EXTRA_FIELD = "extra"

    id: str
    paper: str
    stage: str
    status: Status
    verdict: VerdictShape | None = None
    evidence: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    fingerprint: FingerprintShape | None = None
    config: dict[str, Any] | None = None
    overrides: list[str] | None = None
    provenance: dict[str, str] | None = None
    defaults: dict[str, Any] | None = None
    forced: bool = False
    skipped_prerequisites: list[str] | None = None
    git: GitShape | None = None
    env: EnvShape | None = None
    pid: int | None = None
    pid_start: int | None = None
    host: str | None = None
    started: str | None = None
    ended: str | None = None
    duration_s: float | None = None
    error: str | None = None
    status_reason: str | None = None
    links: dict[str, str] | None = None
    resumed: list[ResumedShape] | None = None
    forecast: dict[str, Any] | None = None  # full's or experiments' (repro.forecast.describe)
    actual: ActualShape | None = None
    init: dict[str, str] | None = None
    model: ModelShape | None = None
    peak_rss_mb: float | None = None
    nondeterministic: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _when("started", self.started)
        _when("ended", self.ended)


def record_problem(record: Any) -> str | None:
    """Why `record` (parsed JSON) is not a readable run record, in one line; None when it is.

    The line names the key: `"verdict": expected a mapping or null, found 'x'`.
    """
    if not isinstance(record, dict):
        return f"expected a JSON object (a run record), found {_kind(record)}"
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"expected the keys {', '.join(REQUIRED)}, found no {', '.join(map(repr, missing))}"
    try:
        from_dict(RecordShape, record)
    except ConfigError as e:
        key, _, what = str(e).partition(": ")
        # from_dict's hint for a missing key is about conf/, not records: keep what it found
        what = what.split("; every repro key")[0]
        return f"{key!r}: {what}" if what else str(e)
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "a list", str: "a string", bool: "true/false"}.get(type(value), "a number")
