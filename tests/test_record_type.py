"""The run record has one type (repro/records/record.py, issue 19): what a reader gets from a run is
a typed Record, read by attribute; a record written now says its format's version (`schema`), and
the records of earlier repros, which do not, read as version 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from repro.records import create_run, list_runs, load_run
from repro.records.record import (
    SCHEMA,
    Record,
    RecordedCheck,
    RecordedVerdict,
    UnreadableRecord,
    parse_record,
)
from repro.verdict import Check, Verdict

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OLD_PROJECTS = [
    *sorted((FIXTURES / "old_records").glob("*/runs")),
    *sorted((FIXTURES / "releases").glob("*/runs")),
]


def test_a_record_written_now_carries_the_schema_and_reads_back_typed(tmp_path):
    run = create_run(tmp_path, "toy", "overfit", overrides=["optim.lr=0.1"])
    on_disk = json.loads(run.record_file.read_text())
    assert on_disk["schema"] == SCHEMA == 2
    verdict = Verdict("overfit", True, "loss 0.001", checks=[Check("loss", True, "0.001 < 0.01")])
    with run.guard():
        run.finish(verdict, "passed", metrics={"final_loss": 0.001})

    rec = load_run(tmp_path, run.id).record
    assert isinstance(rec, Record) and rec.schema == SCHEMA
    assert (rec.id, rec.paper, rec.stage, rec.status) == (run.id, "toy", "overfit", "passed")
    assert isinstance(rec.verdict, RecordedVerdict) and rec.verdict.passed is True
    assert rec.reason == "loss 0.001"
    assert rec.verdict.checks == [
        RecordedCheck(name="loss", passed=True, reason="0.001 < 0.01", evidence={}, measured=True)
    ]
    assert rec.overrides == ["optim.lr=0.1"] and rec.metrics == {"final_loss": 0.001}
    assert rec.duration_s is not None and rec.duration_s >= 0
    assert run.record == rec  # the writer's view is the reader's, once saved


def test_the_writers_record_follows_its_updates_and_unknown_fields_are_kept(tmp_path):
    run = create_run(tmp_path, "toy", "data")
    assert run.record.status == "running" and run.record.status_reason is None
    run.update(status_reason="why", worker={"warm": True})
    assert run.record.status_reason == "why"  # not the record as it was first read
    assert run.record.extra == {"worker": {"warm": True}}  # a field this repro does not know
    run.save()
    assert load_run(tmp_path, run.id).record.extra == {"worker": {"warm": True}}


@pytest.mark.parametrize("runs", OLD_PROJECTS, ids=lambda p: p.parent.name)
def test_every_older_record_reads_as_a_typed_record_of_version_1(runs, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(runs, root, ignore=shutil.ignore_patterns("*.ckpt", "code"))
    found = list_runs(root)
    assert found, f"no records under {runs}"
    for run in found:
        assert run.corrupt is None, run.unreadable
        raw = json.loads(run.record_file.read_text())
        assert "schema" not in raw  # written before the field existed
        assert run.record.schema == 1
        assert run.record.status == raw["status"] and run.record.stage == raw["stage"]
        if raw.get("verdict"):
            assert run.record.verdict.passed == raw["verdict"]["passed"]
            assert [c.name for c in run.record.verdict.checks or []] == [
                c["name"] for c in raw["verdict"].get("checks") or []
            ]


def test_a_field_of_the_wrong_type_is_refused_naming_the_key():
    base = {"id": "20260101-000000-aaaa", "paper": "toy", "stage": "data", "status": "passed"}
    assert parse_record(base).schema == 1
    with pytest.raises(UnreadableRecord, match=r"^'schema': expected an integer, found 'two'$"):
        parse_record(base | {"schema": "two"})
    with pytest.raises(UnreadableRecord, match=r"^'verdict\.checks\[0\]\.passed': expected"):
        parse_record(base | {"verdict": {"checks": [{"passed": "yes"}]}})
