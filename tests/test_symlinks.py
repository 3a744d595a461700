"""No file is written through a symbolic link (issue 20): each writer leaves a link's target
untouched, replacing the link with the file or refusing in one line, while a symlinked `runs/`
folder (a scratch disk, made on purpose) keeps working.

A cloned repository can hold any link; `repro report` and `repro status` run none of the paper's
code, so nothing else warns a user that a link aims at ~/.bashrc."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from repro.records import create_run, list_runs, mark_dead_runs
from repro.storage import atomic_write, copy_regular
from tests.configs import shrink_toy

BAIT = "the target's own bytes\n"


@pytest.fixture
def target(tmp_path) -> Path:
    """A file outside the project that a link aims at: it must never change."""
    path = tmp_path / "outside" / "precious.txt"
    path.parent.mkdir()
    path.write_text(BAIT)
    return path


def _untouched(target: Path) -> None:
    assert target.read_text() == BAIT


def _replaced(link: Path) -> None:
    assert link.is_file() and not link.is_symlink()


def test_atomic_write_replaces_a_link_and_leaves_its_target(tmp_path, target):
    link = tmp_path / "record.json"
    link.symlink_to(target)
    atomic_write(link, "{}\n")
    _untouched(target)
    _replaced(link)
    assert link.read_text() == "{}\n"


def test_report_replaces_a_symlinked_report_and_copies_no_linked_figure(project, cli, target):
    shrink_toy(project)
    report = project.paper_dir("toy") / "REPORT.md"
    report.symlink_to(target)
    # a full run whose folder holds a link named like a plot
    from repro.config.compose import compose

    resolved = compose(project, "toy", [])
    run = create_run(project.runs_dir, "toy", "full", config=resolved.config)
    run.path("curves.png").symlink_to(target)
    run.finish({"stage": "full", "passed": False, "reason": "x"}, "failed")

    code, out, err = cli("report")
    assert code == 0, out + err
    _untouched(target)
    _replaced(report)
    assert "# Reproduction report" in report.read_text()
    figures = project.paper_dir("toy") / "report"
    assert not figures.exists() or not list(figures.iterdir())
    assert "curves.png" not in report.read_text()


def test_report_copies_figures_only_from_inside_their_run_folder(tmp_path, target):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "plot.png").write_bytes(b"png")
    (run_dir / "link.png").symlink_to(target)
    (run_dir / "sub").symlink_to(target.parent, target_is_directory=True)
    out = tmp_path / "report"
    out.mkdir()
    (out / "dst.png").symlink_to(target)
    assert copy_regular(run_dir / "plot.png", out / "dst.png", run_dir)
    _untouched(target)
    _replaced(out / "dst.png")
    assert not copy_regular(run_dir / "link.png", out / "b.png", run_dir)
    assert not copy_regular(run_dir / "sub" / "precious.txt", out / "c.png", run_dir)
    assert sorted(p.name for p in out.iterdir()) == ["dst.png"]


def test_a_symlinked_notebook_is_refused_in_one_line_and_the_run_stands(project, cli, target):
    shrink_toy(project)
    notes = project.notes_dir / "toy.md"
    notes.unlink()
    notes.symlink_to(target)
    code, out, err = cli("stage", "data")
    assert code == 0, out + err
    _untouched(target)
    (run,) = list_runs(project.runs_dir, "toy", "data")
    assert run.record.status == "passed"
    (warning,) = err.strip().splitlines()
    assert warning.startswith(
        f"Warning: notes/toy.md: expected a regular file to write the lab notebook line to, "
        f"found a symbolic link (to {target}); repro never writes through a link"
    )
    assert "this is its notebook line: - " in warning and run.id in warning
    assert notes.is_symlink()  # refused, not replaced: the notebook is the user's own file


def test_marking_a_dead_run_replaces_a_symlinked_record(tmp_path, target):
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    run = create_run(tmp_path, "p", "shapes", pid=int(gone.stdout))
    run.unlock()  # its process is gone, and its lock with it
    record = json.loads(run.record_file.read_text())
    target.write_text(json.dumps(record))  # a link to a file that reads as this very record
    bait = target.read_text()
    run.record_file.unlink()
    run.record_file.symlink_to(target)
    (marked,) = mark_dead_runs(tmp_path, "p")
    assert marked.id == run.id
    assert target.read_text() == bait
    _replaced(run.record_file)
    assert json.loads(run.record_file.read_text())["status"] == "interrupted"


def test_a_full_disks_in_place_save_never_writes_through_a_link(tmp_path, target):
    run = create_run(tmp_path, "p", "data")
    run.record_file.unlink()
    run.record_file.symlink_to(target)
    run.update(status="error")
    assert run._save_in_place(("status",)) is False
    _untouched(target)


def test_a_run_lock_file_that_is_a_link_is_refused(tmp_path, target):
    from repro.errors import StorageError

    run = create_run(tmp_path, "p", "data")
    run.finish(None, "interrupted")
    run.path(".lock").unlink()
    run.path(".lock").symlink_to(target)
    with pytest.raises(StorageError, match=r"\.lock: expected a regular file .* symbolic link"):
        run.lock()
    _untouched(target)


def test_a_checkpoint_and_its_temp_name_are_never_written_through(tmp_path, target):
    import torch

    from repro.train.checkpoint_io import AtomicCheckpointIO

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.symlink_to(target)
    # the temp name the writer used before issue 20, planted in advance
    (ckpt.parent / f".last.ckpt.tmp{os.getpid()}").symlink_to(target)
    AtomicCheckpointIO().save_checkpoint({"epoch": 3}, ckpt)
    _untouched(target)
    _replaced(ckpt)
    assert torch.load(ckpt, weights_only=True) == {"epoch": 3}


def test_resume_refuses_a_run_folder_holding_a_link(project, cli, target):
    from repro.config.compose import compose

    shrink_toy(project)
    resolved = compose(project, "toy", [])
    run = create_run(project.runs_dir, "toy", "full", config=resolved.config)
    run.update(status_reason="interrupted by SIGINT (Ctrl-C)")
    run.finish(None, "interrupted")
    (run.dir / "checkpoints").mkdir()
    (run.dir / "checkpoints" / "last.ckpt").symlink_to(target)
    code, out, err = cli("stage", "full", "--resume", run.id)
    assert code == 1
    assert err.strip() == (
        f"Error: runs/toy/full/{run.id}/checkpoints/last.ckpt: expected the run's own file, "
        f"found a symbolic link (to {target}); a resume would write through it: remove the "
        "link and resume again"
    )
    _untouched(target)
    assert json.loads(run.record_file.read_text())["status"] == "interrupted"


def test_a_vectors_cache_link_is_replaced(tmp_path, target):
    from repro.data.glove import cache_key, load_glove

    vectors = tmp_path / "vectors.txt"
    vectors.write_text("the 1 2 3\ncat 4 5 6\n")
    cache = tmp_path / "cache"
    vocab = ["<pad>", "<unk>", "the", "cat", "dog"]
    link = cache / "glove" / f"vectors-{cache_key(vectors, vocab, 3)}.pt"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    load_glove(vectors, vocab, dim=3, cache_dir=cache)
    _untouched(target)
    _replaced(link)


def test_repro_state_files_are_never_written_through(project, cli, target):
    from repro.dev.protocol import lock_path, state_dir
    from repro.dev.worker import _open_lock
    from repro.errors import StorageError

    state = state_dir(project)
    state.mkdir(exist_ok=True)
    (state / "paper").symlink_to(target)
    code, out, err = cli("new", "other", "--use")
    assert code == 0, out + err
    _untouched(target)
    _replaced(state / "paper")
    assert (state / "paper").read_text() == "other\n"

    lock_path(project, "toy").symlink_to(target)
    with pytest.raises(StorageError, match=r"dev-toy\.lock: expected a regular file"):
        _open_lock(lock_path(project, "toy"))
    _untouched(target)


def test_jobs_json_link_is_replaced(tmp_path, target):
    from repro.launch import JobSpec, _Watched, _write_ids

    class Job:
        job_id = "42"

    (tmp_path / "jobs.json").symlink_to(target)
    target.write_text("{}")
    _write_ids(tmp_path, [_Watched(JobSpec("toy-a-s0", print), Job())])
    assert target.read_text() == "{}"
    _replaced(tmp_path / "jobs.json")
    assert json.loads((tmp_path / "jobs.json").read_text()) == {"toy-a-s0": "42"}


def test_init_refuses_a_symlinked_gitignore(tmp_path, target):
    from repro.errors import ProjectError
    from repro.init_project import init_project

    root = tmp_path / "fresh"
    root.mkdir()
    (root / ".gitignore").symlink_to(target)
    with pytest.raises(ProjectError, match=r"\.gitignore \(a symbolic link\)"):
        init_project(root)
    _untouched(target)
    assert sorted(p.name for p in root.iterdir()) == [".gitignore"]


def test_a_symlinked_runs_folder_keeps_working(project, cli, tmp_path):
    shrink_toy(project)
    scratch = tmp_path / "scratch" / "runs"
    scratch.mkdir(parents=True)
    project.runs_dir.symlink_to(scratch, target_is_directory=True)
    code, out, err = cli("stage", "shapes")  # data first, then shapes
    assert code == 0, out + err
    runs = list_runs(scratch, "toy")
    assert sorted(r.stage for r in runs) == ["data", "shapes"]
    assert all(r.record.status == "passed" for r in runs)
    code, out, err = cli("status")
    assert code == 0 and "PASS" in out and runs[0].id in out
    code, out, err = cli("report")
    assert code == 0, out + err
