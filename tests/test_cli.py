"""Tests for repro/cli.py: help text, `Error: ...` + exit 1, light imports, log/show, interrupted runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from repro import cli
from repro.config.compose import compose
from repro.project import Project
from repro.records import RUN_ID_RE, create_run, list_runs
from repro.verdict import Check, Verdict

COMMANDS = ("new", "stage", "status", "log", "show", "judge", "rerun", "diff", "report")


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`repro ARGS` in-process through main(), with wide consoles so tables do not wrap."""
    monkeypatch.setattr(cli, "console", Console(width=250))
    monkeypatch.setattr(cli, "err_console", Console(width=250, stderr=True))
    monkeypatch.setattr(sys, "argv", ["repro", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def _fake_run(
    project: Project, stage: str = "data", passed: bool = True, overrides=("data.n_examples=300",)
):
    """A finished run record as the runner writes it, without training (no torch)."""
    resolved = compose(project, "toy", list(overrides))
    run = create_run(
        project.runs_dir,
        "toy",
        stage,
        config=resolved.config,
        overrides=list(overrides),
        provenance=resolved.provenance,
        defaults=resolved.defaults(),
    )
    v = Verdict.from_checks(stage, [Check("a check", passed, "measured 1.23")])
    run.finish(v, "passed" if passed else "failed")
    return run


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["COLUMNS"] = "250"
    return env


# ---- help ---------------------------------------------------------------------------------------
def test_app_help_lists_every_command():
    result = CliRunner().invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    assert "five gates" in result.output
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize(
    "command,text",
    [
        ("new", "Scaffold a paper"),
        ("stage", "Run one gate"),
        ("status", "The milestones"),
        ("judge", "Re-apply the current targets"),
        ("log", "The experiment log"),
        ("show", "One run"),
    ],
)
def test_every_command_has_help(command, text):
    result = CliRunner().invoke(cli.app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert text in result.output
    assert "Usage:" in result.output


# ---- errors -------------------------------------------------------------------------------------
def test_show_unknown_id_is_an_error(project, monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "show", "nosuchid")
    assert code == 1
    assert err.startswith("Error: no run with id 'nosuchid'")
    assert "repro log" in err


def test_stage_full_on_fresh_paper_names_the_command_to_run(project, monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "stage", "full")
    assert code == 1
    assert err.startswith("Error: stage 'full' needs 'overfit'")
    assert "run: repro stage overfit --paper toy" in err
    assert not (project.runs_dir / "toy" / "full").exists()


def test_stage_bogus_is_an_error(project, monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "stage", "bogus")
    assert code == 1
    assert err.startswith("Error: stage 'bogus': expected one of data, shapes")
    assert "data, shapes, overfit, full, experiments" in err


def test_unknown_paper_is_an_error(project, monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "status", "--paper", "nope")
    assert code == 1
    assert err.startswith("Error: no paper 'nope'")


# ---- log and show -------------------------------------------------------------------------------
def test_log_without_runs(project, monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "log")
    assert code == 0
    assert "no runs yet" in out


def test_log_lists_runs_newest_first(project, monkeypatch, capsys):
    ids = [_fake_run(project, stage).id for stage in ("data", "shapes", "overfit")]
    code, out, err = _cli(monkeypatch, capsys, "log")
    assert code == 0, err
    positions = [out.index(i) for i in ids]
    assert positions[2] < positions[1] < positions[0]
    code, out, err = _cli(monkeypatch, capsys, "log", "--stage", "shapes")
    assert ids[1] in out and ids[0] not in out and ids[2] not in out


def test_log_marks_forced_rerun_and_resumed_runs(project, monkeypatch, capsys):
    from dataclasses import replace

    from repro.display import run_marks
    from repro.records.record import Resumption

    plain = _fake_run(project, "data", overrides=())
    assert run_marks(plain.record) == []
    assert run_marks(_fake_run(project, "data").record) == ["overrides"]
    rec = replace(
        plain.record,
        forced=True,
        links={"rerun_of": plain.id},
        resumed=[Resumption(at="2026-11-30T00:00:00+00:00", from_ckpt=["checkpoints/last.ckpt"])],
    )
    assert run_marks(rec) == ["forced", "re-run", "resumed"]
    forced = _fake_run(project, "shapes", overrides=())
    forced.update(forced=True)
    forced.save()
    code, out, err = _cli(monkeypatch, capsys, "log")
    assert code == 0, err
    line = next(x for x in out.splitlines() if forced.id in x)
    assert "passed (forced)" in line
    assert "(forced)" not in next(x for x in out.splitlines() if plain.id in x)


def test_show_lists_defaults_and_provenance_of_a_real_run(project, monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "stage", "data", "data.n_examples=300")
    assert code == 0, out + err
    run_id = list_runs(project.runs_dir, "toy", "data")[0].id
    code, out, err = _cli(monkeypatch, capsys, "show", run_id)
    assert code == 0, err
    assert f"run {run_id}" in out
    assert "values repro filled in because the paper is silent" in out
    assert "optim.weight_decay" in out and "data.batch_size" in out
    assert "default: repro (conf/defaults.yaml)" in out
    assert "override: command line" in out  # data.n_examples
    assert (
        "default: the toy dataset shipped by repro new" in out
    )  # data.dataset, from the paper's map
    assert "resolved config with provenance" in out


def test_a_run_with_overrides_prints_the_milestones_and_says_it_is_an_experiment(
    project, monkeypatch, capsys
):
    code, out, err = _cli(monkeypatch, capsys, "stage", "data", "data.n_examples=300")
    assert code == 0, out + err
    assert "data: PASS" in out
    assert "this run used overrides data.n_examples=300: an experiment around the milestones" in out
    row = next(ln for ln in out.splitlines() if "│ data " in ln)
    assert "not run" in row, row  # the base config's data stage has no milestone yet
    assert "data: 1 run with overrides or --force since" in out


def test_show_accepts_a_unique_prefix(project, monkeypatch, capsys):
    run = _fake_run(project)
    code, out, err = _cli(monkeypatch, capsys, "show", run.id[:-2])
    assert code == 0, err
    assert f"run {run.id}" in out


# ---- light imports ------------------------------------------------------------------------------
LIGHT = """
import sys
sys.argv = ['repro', *{args!r}]
from repro.cli import main
try:
    main()
except SystemExit:
    pass
print('HEAVY', 'torch' in sys.modules, 'pytorch_lightning' in sys.modules)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["stage", "--help"],
        ["status"],
        ["log"],
        ["show", "RUN"],
        ["new", "other"],
        ["stage", "full"],
        ["stage", "experiments", "optim.lr=0.1"],
    ],
)
def test_commands_that_do_not_train_import_neither_torch_nor_lightning(project, args):
    run = _fake_run(project)
    args = [run.id if a == "RUN" else a for a in args]
    proc = subprocess.run(
        [sys.executable, "-c", LIGHT.format(args=args)],
        cwd=project.root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = proc.stdout.strip().splitlines()[-1]
    assert last == "HEAVY False False", proc.stdout + proc.stderr


# ---- interrupted runs ---------------------------------------------------------------------------
LONG_OVERFIT = [
    "stage",
    "overfit",
    "--force",
    "data.n_examples=300",
    "stage.overfit.max_steps=100000",
    "stage.overfit.loss_ratio=1e-30",
]
CHILD = """
import signal, sys
# a child of a non-interactive shell may inherit SIGINT ignored; a terminal's Ctrl-C is not
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv = ['repro', *{args!r}]
from repro.cli import main
main()
"""


def _start_long_overfit(project: Project) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(args=LONG_OVERFIT)],
        cwd=project.root,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        records = list((project.runs_dir / "toy" / "overfit").glob("*/record.json"))
        if records:
            time.sleep(1.5)  # inside the training loop by now
            assert proc.poll() is None, proc.stderr.read()
            return proc, records[0]
        if proc.poll() is not None:
            pytest.fail(f"repro exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the overfit run never created its record")


def test_sigkill_mid_overfit_shows_as_interrupted(project, monkeypatch, capsys):
    proc, record = _start_long_overfit(project)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert json.loads(record.read_text())["status"] == "running"  # nothing could write the end
    run = list_runs(project.runs_dir, "toy", "overfit")[0]
    assert run.effective_status == "interrupted"
    code, out, err = _cli(monkeypatch, capsys, "log")
    row = next(ln for ln in out.splitlines() if run.id in ln)
    assert "interrupted" in row
    assert "died without finishing" in row


def test_sigint_mid_overfit_records_interrupted_and_exits_130(project):
    proc, record = _start_long_overfit(project)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted" in err
    rec = json.loads(record.read_text())
    assert rec["status"] == "interrupted"
    assert "SIGINT" in rec["status_reason"]
    assert rec["ended"] is not None
    notes = (project.notes_dir / "toy.md").read_text().splitlines()
    assert f"overfit · INTERRUPTED (forced) · {rec['id']}" in notes[-1]


# ---- run ids ------------------------------------------------------------------------------------
def test_runs_in_the_same_second_get_their_own_directories(tmp_path):
    runs = [create_run(tmp_path, "toy", "data") for _ in range(5)]
    ids = [r.id for r in runs]
    assert len(set(ids)) == 5
    assert all(RUN_ID_RE.match(i) for i in ids)
    assert all((r.dir / "record.json").is_file() for r in runs)
    assert len(list((tmp_path / "toy" / "data").iterdir())) == 5
