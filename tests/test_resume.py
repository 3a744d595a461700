"""Resuming a killed full run: same run directory, metrics.csv kept, final numbers equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repro.errors import ReproError
from repro.records import list_runs
from repro.train.curves import keep_rows_before_resume, merge_resumed_rows
from repro.train.fit import checkpoint_epoch

# dropout > 0 so that the RNG state matters; 1000 examples keep an epoch long enough to kill in.
# In the paper's own config: the full runs compared are milestones (no overrides).
SHRINK = {
    "  n_examples: 1200": "  n_examples: 1000",
    "  dropout: 0.0": "  dropout: 0.2",
    "  max_epochs: 15": "  max_epochs: 4\n  early_stopping:\n    patience: 10",
}


def _shrink(project) -> None:
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    text = paper_yaml.read_text()
    for old, new in SHRINK.items():
        assert old in text
        text = text.replace(old, new)
    paper_yaml.write_text(text + "optim:\n  lr: 0.01\n")


def _repro(root: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repro", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=os.environ | {"COLUMNS": "200"},
        **kw,
    )


def _ckpt_epoch(path: Path) -> int | None:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except Exception:  # not written yet, or being written
        return None


def _final(run_dir: Path) -> dict:
    return json.loads((run_dir / "record.json").read_text())


# ---- metrics.csv across a resume (pure) ----------------------------------------------------------
def test_rows_before_the_checkpoint_survive_the_loggers_truncation(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,step,val/loss\n0,7,0.9\n1,15,0.8\n2,23,0.7\n")
    keep_rows_before_resume(tmp_path, ckpt_epoch=1)  # epoch 2 was not checkpointed: it is re-run
    assert not (tmp_path / "metrics.csv").exists()
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,val/loss,test/acc\n2,23,0.65,\n3,31,0.6,\n3,31,,99.0\n"
    )
    merge_resumed_rows(tmp_path)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,step,test/acc,val/loss"
    assert lines[1:] == ["0,7,,0.9", "1,15,,0.8", "2,23,,0.65", "3,31,,0.6", "3,31,99.0,"]
    assert not (tmp_path / "metrics.before_resume.csv").exists()


# ---- kill, resume, compare -------------------------------------------------------------------------
def test_a_truncated_checkpoint_gives_an_error_naming_the_file(tmp_path):
    import torch

    good = tmp_path / "last.ckpt"
    torch.save({"epoch": 4, "state_dict": {"w": torch.zeros(1000)}}, good)
    assert checkpoint_epoch(good) == 4
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # killed mid-write
    with pytest.raises(
        ReproError, match=r"cut\.ckpt: expected a Lightning checkpoint.*without --resume"
    ):
        checkpoint_epoch(cut)


@pytest.mark.slow  # ~28 s: two full trainings
def test_resumed_full_run_equals_an_uninterrupted_one(project):
    root = project.root
    _shrink(project)
    r = _repro(root, "stage", "overfit")
    assert r.returncode == 0, r.stdout + r.stderr

    proc = subprocess.Popen(
        [sys.executable, "-m", "repro", "stage", "full"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed_at = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            lasts = list((root / "runs" / "toy" / "full").glob("*/checkpoints/last.ckpt"))
            if lasts and _ckpt_epoch(lasts[0]) is not None:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = _ckpt_epoch(lasts[0])
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert killed_at is not None and killed_at < 3, (
        "the run ended before it could be killed mid-way"
    )
    (killed,) = list_runs(root / "runs", "toy", "full")
    assert killed.effective_status == "interrupted"

    r = _repro(root, "stage", "full", "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    resumed = _final(killed.dir)
    assert resumed["status"] == "passed"
    assert resumed["resumed"][0]["from_ckpt"] == ["checkpoints/last.ckpt"]
    assert resumed["evidence"]["runs"][0]["resumed_from_epoch"] >= killed_at
    assert len(list_runs(root / "runs", "toy", "full")) == 1  # same run directory, no new run
    epochs = [
        line.split(",")[0] for line in (killed.dir / "metrics.csv").read_text().splitlines()[1:]
    ]
    assert {"0", "1", "2", "3"} <= set(epochs)  # rows from before the kill are kept

    r = _repro(root, "stage", "full")
    assert r.returncode == 0, r.stdout + r.stderr
    fresh = next(x for x in list_runs(root / "runs", "toy", "full") if x.id != killed.id)
    whole = _final(fresh.dir)
    assert "resumed" not in whole
    assert (
        set(whole["metrics"]["mean"])
        == set(resumed["metrics"]["mean"])
        >= {"val/acc", "val/loss", "test/acc", "test/loss"}
    )
    for k, v in whole["metrics"]["mean"].items():
        assert resumed["metrics"]["mean"][k] == pytest.approx(v, abs=1e-6), k
