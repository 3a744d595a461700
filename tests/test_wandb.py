"""logger=wandb: one W&B run per repro run, named by the run id, holding the resolved config with
each value's provenance and the verdict; finished cleanly; online only when wandb says the user is
logged in (an unrelated ~/.netrc entry is not a login). Offline here: no network is touched."""

from __future__ import annotations

import json
import os

import pytest
from rich.console import Console

from tests.configs import shrink_toy


@pytest.fixture
def no_login(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    return home


def test_login_is_what_wandb_says(no_login, monkeypatch):
    from repro.train.loggers import wandb_logged_in

    (no_login / ".netrc").write_text("machine github.com login me password secret\n")
    os.chmod(no_login / ".netrc", 0o600)
    assert wandb_logged_in() is False  # a ~/.netrc for another host is not a W&B login
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_logged_in() is True


@pytest.mark.slow  # ~10 s: a full run with wandb offline
def test_full_with_wandb_logs_config_provenance_verdict_and_finishes(project, no_login):
    from repro.runner import run_stage

    shrink_toy(project)
    quiet = Console(quiet=True)
    assert run_stage(project, "toy", "overfit", [], console=quiet).record.status == "passed"
    run = run_stage(project, "toy", "full", ["logger=wandb"], console=quiet)
    assert run.record.status in ("passed", "failed")
    (offline,) = (run.dir / "wandb").glob("offline-run-*")
    assert offline.name.endswith(run.id)  # the W&B run is named and id'ed by the repro run
    found = _read_offline_run(next(offline.glob("*.wandb")))
    assert found["name"] == found["id"] == run.id
    config = found["config"]
    assert config["config"]["optim"]["lr"] == 0.01
    assert config["provenance"]["optim.lr"].startswith("unsourced: set in toy.yaml")
    assert config["provenance"]["logger.name"] == "override: command line"
    assert found["summary"]["status"] == run.record.status
    assert found["summary"]["passed"] == (run.record.status == "passed")
    assert found["summary"]["reason"] == run.record.verdict.reason
    assert found["history"] > 0  # the seed's curves went there too
    debug = (offline / "logs" / "debug.log").read_text()
    assert f"finishing run repro/{run.id}" in debug  # finished by repro, not abandoned at exit
    internal = (offline / "logs" / "debug-internal.log").read_text()
    assert "stream: all finished" in internal and "HandleAbandonedError" not in internal


def _records(path):
    """The protobuf records of W&B's offline transaction log (`run-<id>.wandb`): a ':W&B' header
    then LevelDB-style blocks of 32 KiB, each record with a 7-byte header (crc, length, type:
    1 full, 2 first, 3 middle, 4 last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if kind == 0:  # padding to the end of the block
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield buf + chunk


def _read_offline_run(path) -> dict:
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict = {"summary": {}, "history": 0}
    for raw in _records(path):
        r = pb.Record()
        r.ParseFromString(raw)
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["name"], out["id"] = r.run.display_name, r.run.run_id
            out["config"] = {i.key: json.loads(i.value_json) for i in r.run.config.update}
        elif kind == "summary":
            out["summary"].update(
                {i.key: json.loads(i.value_json) for i in r.summary.update if i.key}
            )
        elif kind == "history":
            out["history"] += 1
    return out
