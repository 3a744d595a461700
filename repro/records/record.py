"""The run record as readers use it: `Record`, the typed form of a record.json, checked once when
it is read (issue 14) and read by attribute everywhere (issue 19): `run.record.verdict.passed`.

A record that does not fit is unreadable: its readers skip it with a warning naming the file,
instead of one record with `"verdict": "x"` taking down the whole log. Unknown fields are kept
(in `extra`: a newer repro may write more); only the shapes of known ones are checked. Values the
readers never look inside (config values, evidence, metrics, which the gates' typed metrics check
themselves) stay plain JSON mappings.

Every record carries its format's version in `schema` (SCHEMA for the records written now); a
record without one predates the field and is version 1. The formats before typed metrics are read
in the current shape by repro/records/formats.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from repro.config.typed import Invalid, from_dict
from repro.errors import ConfigError

REQUIRED = ("id", "paper", "stage", "status")
# The record format written now. 1: every record before the field existed (their shapes:
# repro/records/formats.py); 2: records that say their version (issue 19).
SCHEMA = 2
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
class RecordedCheck:
    EXTRA_FIELD = "extra"

    name: str | None = None
    passed: bool | None = None
    reason: str | None = None
    evidence: dict[str, Any] | None = None
    measured: bool | None = None  # False: not measured (records before it: always measured)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedVerdict:
    EXTRA_FIELD = "extra"

    passed: bool | None = None
    reason: str | None = None
    stage: str | None = None
    evidence: dict[str, Any] | None = None
    checks: list[RecordedCheck] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedFingerprint:
    EXTRA_FIELD = "extra"

    stages: dict[str, str | None] = field(default_factory=dict)
    parts: dict[str, str | None] = field(default_factory=dict)
    files: dict[str, str | None] = field(default_factory=dict)
    judged: dict[str, str | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """As record.json holds it (repro/fingerprint.py computes and compares this form)."""
        return {
            "stages": dict(self.stages),
            "parts": dict(self.parts),
            "files": dict(self.files),
            "judged": dict(self.judged),
            **self.extra,
        }


@dataclass(frozen=True)
class RecordedGit:
    EXTRA_FIELD = "extra"

    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    diff_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedEnv:
    EXTRA_FIELD = "extra"

    python: str | None = None
    packages: dict[str, str | None] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Resumption:
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
class RecordedActual:
    EXTRA_FIELD = "extra"

    wall_s: float | None = None
    epochs: int | None = None
    s_per_epoch: float | None = None
    peak_rss_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedModel:
    EXTRA_FIELD = "extra"

    params: dict[str, list[int]] = field(default_factory=dict)
    trainable: int | None = None
    total: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """Every field repro writes (repro/records/: create_run, finish, annex, reopen), typed."""

    EXTRA_FIELD = "extra"

    id: str
    paper: str
    stage: str
    status: Status
    schema: int = 1  # absent in the records written before the field: those are version 1
    verdict: RecordedVerdict | None = None
    evidence: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    fingerprint: RecordedFingerprint | None = None
    config: dict[str, Any] | None = None
    overrides: list[str] | None = None
    provenance: dict[str, str] | None = None
    defaults: dict[str, Any] | None = None
    forced: bool = False
    skipped_prerequisites: list[str] | None = None
    git: RecordedGit | None = None
    env: RecordedEnv | None = None
    pid: int | None = None
    pid_start: int | None = None
    host: str | None = None
    started: str | None = None
    ended: str | None = None
    duration_s: float | None = None
    error: str | None = None
    status_reason: str | None = None
    links: dict[str, str] | None = None
    resumed: list[Resumption] | None = None
    forecast: dict[str, Any] | None = None  # full's or experiments' (repro.forecast.describe)
    actual: RecordedActual | None = None
    init: dict[str, str] | None = None
    model: RecordedModel | None = None
    peak_rss_mb: float | None = None
    nondeterministic: dict[str, Any] | None = None
    preflight: dict[str, Any] | None = None  # full's (repro/gates/preflight.py)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _when("started", self.started)
        _when("ended", self.ended)

    def fingerprint_of(self, stage: str) -> str | None:
        """The fingerprint this run recorded for `stage` (its own or a prerequisite's)."""
        return self.fingerprint.stages.get(stage) if self.fingerprint else None

    @property
    def reason(self) -> str | None:
        """The verdict's one sentence; None when the run has no verdict."""
        return self.verdict.reason if self.verdict else None


class UnreadableRecord(ValueError):
    """Parsed JSON that is not a run record; the message says why in one line, naming the key."""


def parse_record(data: Any) -> Record:
    """`data` (a record.json's parsed JSON) as a Record; UnreadableRecord when it is not one.

    The message names the key: `'verdict': expected a mapping or null, found 'x'`.
    """
    if not isinstance(data, dict):
        raise UnreadableRecord(f"expected a JSON object (a run record), found {_kind(data)}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise UnreadableRecord(
            f"expected the keys {', '.join(REQUIRED)}, found no {', '.join(map(repr, missing))}"
        )
    try:
        return from_dict(Record, data)
    except ConfigError as e:
        key, _, what = str(e).partition(": ")
        # from_dict's hint for a missing key is about conf/, not records: keep what it found
        what = what.split("; every repro key")[0]
        raise UnreadableRecord(f"{key!r}: {what}" if what else str(e)) from None


def json_default(obj: Any) -> Any:
    """What record.json holds for a value JSON has no form of (dataclasses, paths, numpy/torch
    scalars and arrays, sets): `json.dumps(..., default=json_default)`."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def as_recorded(verdict: Any) -> RecordedVerdict:
    """A gate's Verdict as a record holds it (what `repro.lab` shows without recording a run)."""
    data = json.loads(json.dumps(verdict.to_dict(), default=json_default))
    return from_dict(RecordedVerdict, data, "verdict")


def unreadable_stub(run_id: str, paper: str, stage: str) -> Record:
    """What a run whose record.json cannot be read shows: its names (from its folders), status
    'corrupt' (never written to a file: parse_record refuses it)."""
    return Record(id=run_id, paper=paper, stage=stage, status="corrupt")  # type: ignore[arg-type]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "a list", str: "a string", bool: "true/false"}.get(type(value), "a number")
