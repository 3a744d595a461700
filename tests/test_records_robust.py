"""Malformed run records and command-line input (issue 14), from the files in
tests/fixtures/bad/records/ and tests/fixtures/bad/cli/: each is exit code 1 and one `Error:` line
naming the file and key (or the argument), never a traceback; `log`, `status` and `report` skip a
record they cannot read with one warning naming it and go on; text from a record prints
literally (Rich markup escaped); ids and paper names cannot reach outside runs/."""

from __future__ import annotations

import errno
import json
import re
import shlex
import shutil
import stat
from pathlib import Path

import pytest

from repro.records import create_run, list_runs

BAD = Path(__file__).resolve().parent / "fixtures" / "bad"
RID = "20260101-000000-aaaa"  # the id, paper and stage the record fixtures are written for
GOOD = "20260101-000000-aaab"
RECORD = f"runs/toy/data/{RID}/record.json"

# record fixture -> the reason after "<RECORD>: " (a regex: `expected` wording comes from the
# typed-config converter; what is pinned is the key and what was found)
BAD_RECORDS = {
    "empty.json": r"expected a JSON object, found an empty file",
    "whitespace_only.json": r"expected a JSON object, found an empty file",
    "truncated.json": r"expected a JSON object, found invalid JSON \(Unterminated string starting "
    r"at, line 24 column 15: cut off or edited by hand\?\)",
    "latin1.json": r"expected a JSON object, found a byte that is not UTF-8 \(0xe9 at offset 209\)",
    "list.json": r"expected a JSON object \(a run record\), found a list",
    "string.json": r"expected a JSON object \(a run record\), found a string",
    "null.json": r"expected a JSON object \(a run record\), found null",
    "number.json": r"expected a JSON object \(a run record\), found a number",
    "missing_status.json": r"expected the keys id, paper, stage, status, found no 'status'",
    "missing_paper_and_stage.json": r"expected the keys id, paper, stage, status, found no "
    r"'paper', 'stage'",
    "status_unknown.json": r"'status': expected one of .*'interrupted'\], found 'done'",
    "verdict_string.json": r"'verdict': expected a mapping.*, found 'x'",
    "verdict_passed_string.json": r"'verdict\.passed': expected true or false.*, found 'yes'",
    "check_not_an_object.json": r"'verdict\.checks\[0\]': expected a mapping.*, found 'split sizes ok'",
    "check_name_number.json": r"'verdict\.checks\[0\]\.name': expected a string.*, found 3",
    "metrics_number.json": r"'metrics': expected a mapping, found 5",
    "overrides_string.json": r"'overrides': expected a list.*, found 'a'",
    "overrides_numbers.json": r"'overrides\[0\]': expected a string, found 1",
    "forced_string.json": r"'forced': expected true or false, found 'yes'",
    "started_not_a_time.json": r"'started': expected an ISO 8601 time, found 'yesterday'",
    "duration_string.json": r"'duration_s': expected a number.*, found '12s'",
    "duration_nan.json": r"'duration_s': expected a number.*, found nan",
    "pid_string.json": r"'pid': expected an integer.*, found '12345'",
    "links_number.json": r"'links\.rerun_of': expected a string, found 5",
    "resumed_object.json": r"'resumed': expected a list.*, found a mapping",
    "fingerprint_stages_list.json": r"'fingerprint\.stages': expected a mapping, found a list of 1",
    "git_dirty_string.json": r"'git\.dirty': expected true or false.*, found 'no'",
    "env_packages_list.json": r"'env\.packages': expected a mapping, found a list of 1",
    "config_list.json": r"'config': expected a mapping, found a list of 1",
    "provenance_number.json": r"'provenance\.model\.hidden': expected a string, found 64",
    "id_of_another_folder.json": rf"'id': expected '{RID}' \(the name of its folder\), found "
    r"'20260101-000000-bbbb'",
    "stage_of_another_folder.json": r"'stage': expected 'data' \(the name of its folder\), found "
    r"'full'",
}
READABLE = {"markup_in_text.json"}  # well-formed records whose text is hostile, not malformed

# command line (tests/fixtures/bad/cli/<case>.args) -> the message after "Error: " (a regex)
NOT_AN_ID = r"expected a run id like 20261122-054012-ab12 or its first characters"
BAD_CLI = {
    "show_path_traversal.args": rf"no run with id '\.\./\.\./etc/passwd': {NOT_AN_ID}",
    "show_id_with_slash.args": rf"no run with id '{RID}/record\.json': {NOT_AN_ID}",
    "show_empty_id.args": rf"no run with id '': {NOT_AN_ID}",
    "show_unknown_id.args": r"no run with id '20991231' under .*runs; run `repro log` to list",
    "show_ambiguous_prefix.args": rf"run id prefix '20260101' matches 2 runs \({RID}, {GOOD}\)",
    "diff_path_traversal.args": rf"no run with id '\.\./{GOOD}': {NOT_AN_ID}",
    "rerun_path_traversal.args": rf"no run with id '\.\./\.\./x': {NOT_AN_ID}",
    "resume_path_traversal.args": rf"no run with id '\.\./\.\./x': {NOT_AN_ID}",
    "resume_not_full.args": r"--resume, --dry-run and --preflight-only apply to the full stage only, not 'data'",
    "log_n_zero.args": r"-n: expected how many runs to show \(1 or more\), found 0; leave it out",
    "log_n_negative.args": r"-n: expected how many runs to show \(1 or more\), found -1;",
    "log_n_not_a_number.args": r"repro log: Invalid value for '-n': .*'many'.*(int|integer).*; see `repro log "
    r"--help`",
    "log_unknown_stage.args": r"stage 'bogus': expected one of data, shapes, overfit, full, "
    r"experiments",
    "log_paper_traversal.args": r"paper name '\.\./\.\.' is not usable as a directory name",
    "stage_unknown.args": r"stage 'bogus': expected one of data, shapes, overfit, full, experiments",
    "stage_missing_name.args": r"repro stage: Missing argument 'name'; see `repro stage --help`",
    "status_paper_traversal.args": r"--paper '\.\./toy': expected the name of a paper here "
    r"\(toy\), a lower-case Python identifier",
    "status_paper_upper_case.args": r"--paper 'Toy': expected the name of a paper here \(toy\)",
    "status_paper_unknown.args": r"no paper 'nope': expected conf/paper/nope\.yaml and "
    r"papers/nope/",
    "unknown_command.args": r"repro: No such command 'frobnicate'; see `repro --help`",
    "unknown_option.args": r"repro log: No such option: --bogus; see `repro log --help`",
    "new_bad_name.args": r"paper name 'Bad-Name': expected a lower-case ASCII Python identifier",
}


def _place(root: Path, fixture: Path, run_id: str = RID) -> Path:
    d = root / "runs" / "toy" / "data" / run_id
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(fixture, d / "record.json")
    return d


def _good(root: Path, run_id: str = GOOD) -> Path:
    """A well-formed record beside the bad one: what the readers must still show."""
    text = (BAD / "records" / "markup_in_text.json").read_text()
    rec = json.loads(text) | {"id": run_id, "status_reason": None}
    rec["verdict"] = {"stage": "data", "passed": True, "reason": "all fine", "checks": []}
    d = root / "runs" / "toy" / "data" / run_id
    d.mkdir(parents=True)
    (d / "record.json").write_text(json.dumps(rec))
    return d


def _one_line(stream: str, prefix: str) -> str:
    lines = stream.splitlines()
    assert len(lines) == 1, stream
    assert lines[0].startswith(prefix) and "Traceback" not in stream, stream
    return lines[0]


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """A project with nothing but conf/config.yaml: enough for log, show and diff."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("defaults: []\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_fixture_has_its_expected_message():
    assert sorted(p.name for p in (BAD / "records").iterdir()) == sorted(
        set(BAD_RECORDS) | READABLE
    )
    assert sorted(p.name for p in (BAD / "cli").iterdir()) == sorted(BAD_CLI)


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_a_bad_record_is_one_error_line_for_show_and_diff_and_one_warning_for_log(bare, cli, name):
    _place(bare, BAD / "records" / name)
    _good(bare)
    why = BAD_RECORDS[name]

    code, out, err = cli("show", RID)
    assert code == 1 and out == ""
    line = _one_line(err, "Error: ")
    assert re.fullmatch(rf"Error: {re.escape(RECORD)}: {why}; repair or remove the file", line), (
        line
    )

    code, out, err = cli("diff", GOOD, RID)
    assert code == 1 and out == ""
    assert _one_line(err, "Error: ") == line

    code, out, err = cli("log")
    assert code == 0
    warning = _one_line(err, "Warning: ")
    assert re.fullmatch(
        rf"Warning: {re.escape(RECORD)}: {why}; skipped \(repair or remove the file\)", warning
    ), warning
    assert GOOD in out and RID not in out  # the log goes on without it


@pytest.mark.parametrize("name", sorted(BAD_CLI))
def test_bad_command_line_input_is_one_error_line(project, cli, name):
    for run_id in (RID, GOOD):  # two runs sharing a prefix, for the ambiguous one
        _place(project.root, BAD / "records" / "markup_in_text.json", run_id)
        rec = json.loads((project.runs_dir / "toy" / "data" / run_id / "record.json").read_text())
        (project.runs_dir / "toy" / "data" / run_id / "record.json").write_text(
            json.dumps(rec | {"id": run_id})
        )
    before = sorted(
        p.relative_to(project.root) for p in project.root.rglob("*") if ".git" not in p.parts
    )
    args = shlex.split((BAD / "cli" / name).read_text())
    code, out, err = cli(*args)
    assert code == 1, (out, err)
    line = _one_line(err, "Error: ")
    assert re.fullmatch(rf"Error: {BAD_CLI[name]}.*", line), line
    after = sorted(
        p.relative_to(project.root) for p in project.root.rglob("*") if ".git" not in p.parts
    )
    assert after == before  # nothing written, nothing read outside runs/


@pytest.mark.parametrize("n", ["0", "-1"])
def test_log_n_below_one_is_an_error_not_no_runs_or_dropping_the_oldest(bare, cli, n):
    _good(bare)
    code, out, err = cli("log", "-n", n)
    assert (code, out) == (1, "") and "expected how many runs to show (1 or more)" in err
    code, out, err = cli("log", "-n", "1")
    assert code == 0 and GOOD in out


@pytest.mark.parametrize("damage", ["truncated.json", "verdict_string.json", "missing"])
def test_status_and_report_skip_an_unreadable_newest_record_with_a_corrupt_row(
    project, cli, damage
):
    older = _good(project.root, "20250101-000000-aaaa")
    d = project.runs_dir / "toy" / "data" / RID
    if damage == "missing":
        d.mkdir(parents=True)  # left by an older repro: a run directory without its record
        why = "record.json is missing"
    else:
        _place(project.root, BAD / "records" / damage)
        why = "record.json: "
    code, out, err = cli("status")
    assert code == 0 and "Traceback" not in out + err
    assert _one_line(err, "Warning: ").startswith(f"Warning: runs/toy/data/{RID}/{why}")
    row = next(line for line in out.splitlines() if "│ data" in line)
    assert "CORRUPT" in row and RID in row and older.name not in row

    code, out, err = cli("report")
    assert code == 0 and out.startswith("wrote papers/toy/REPORT.md")
    assert _one_line(err, "Warning: ").startswith(f"Warning: runs/toy/data/{RID}/{why}")
    assert "20250101-000000-aaaa" in (project.paper_dir("toy") / "REPORT.md").read_text()


def test_text_from_a_record_prints_literally_everywhere(project, cli):
    _place(project.root, BAD / "records" / "markup_in_text.json")
    _good(project.root)
    code, out, err = cli("show", RID)
    assert code == 0 and err == "", err
    for text in ("[/bold]", "[red]fast[/red]", "[bold]sizes[/]", "[/m]",
                 "[/link]", "[/b]", "[/pkg]", "[/v]", "[/d]", "ValueError: [bold]", "[/red]"):  # fmt: skip
        assert text in out, text
    code, out, err = cli("log")
    assert code == 0 and err == ""
    assert "[model.name=[/x]] loss [/bold] fell [red]fast[/red]" in out
    for args in (["status"], ["report"], ["diff", RID, GOOD]):
        code, out, err = cli(*args)
        assert code == 0 and err == "", (args, err)
    text = (project.paper_dir("toy") / "REPORT.md").read_text()
    assert "loss [/bold] fell" in text


def test_record_files_get_the_users_umask(tmp_path, monkeypatch):
    import os

    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        old = os.umask(umask)
        try:
            run = create_run(tmp_path, "p", "data", git={"diff": "diff --git a/x b/x\n"})
            run.write_text("notes.txt", "hello")
        finally:
            os.umask(old)
        for name in ("record.json", "git.diff", "notes.txt"):
            assert stat.S_IMODE(run.path(name).stat().st_mode) == mode, (name, oct(umask))
        assert stat.S_IMODE(run.dir.stat().st_mode) == 0o777 & ~umask


def test_a_run_directory_is_never_visible_without_its_record(tmp_path, monkeypatch):
    """The record is written inside a hidden .creating-<id> folder renamed into place; a save
    that fails leaves nothing; a creator killed half-way leaves only the hidden folder, which
    readers ignore and the next run removes."""
    from repro.errors import StorageError
    from repro.records import run as records

    def full_disk(path, text, what="a file"):
        cause = OSError(errno.ENOSPC, "No space left on device")
        raise records.storage_error(path, cause, what) from cause

    monkeypatch.setattr(records, "atomic_write", full_disk)
    expected = r"toy/data: expected to write a new run's record there, found no space left on"
    with pytest.raises(StorageError, match=expected):
        create_run(tmp_path, "toy", "data")
    assert list((tmp_path / "toy" / "data").iterdir()) == []
    monkeypatch.undo()

    stage_dir = tmp_path / "toy" / "data"
    dead = stage_dir / ".creating-20260101-000000-dead"
    dead.mkdir()
    (dead / "record.json").write_text(json.dumps({"pid": 2**22 + 12345, "pid_start": 1}))
    fresh = stage_dir / ".creating-20260101-000000-beef"  # a live creator, no record yet
    fresh.mkdir()
    assert list_runs(tmp_path) == []  # readers never see either
    run = create_run(tmp_path, "toy", "data")
    assert sorted(p.name for p in stage_dir.iterdir()) == [fresh.name, run.id]


def test_relative_data_paths_mean_the_project_root_from_any_folder(project, cli, monkeypatch):
    """`cd papers && repro stage data`: a relative path in the config names the file under the
    project root, as it does from the root (the CLI works from there)."""
    import os

    data_py = project.paper_dir("toy") / "data.py"
    text = data_py.read_text()
    for old, new in (
        ('    noise: float = field(metadata={"ge": 0})\n',
         '    noise: float = field(metadata={"ge": 0})\n    names_file: str\n'),
        ("        n, d, noise = ", "        assert Path(self.toy.names_file).read_text() == 'a b c\\n'\n"
                                   "        n, d, noise = "),
        ("import random\n", "import random\nfrom pathlib import Path\n"),
    ):  # fmt: skip
        assert old in text, old
        text = text.replace(old, new, 1)
    data_py.write_text(text)
    paper_yaml = project.conf_dir / "paper" / "toy.yaml"
    paper_yaml.write_text(
        paper_yaml.read_text().replace(
            "  noise: 1.0\n", "  noise: 1.0\n  names_file: data/names.txt\n"
        )
    )
    (project.root / "data").mkdir()
    (project.root / "data" / "names.txt").write_text("a b c\n")

    monkeypatch.chdir(project.root / "papers" / "toy")
    code, out, err = cli("stage", "data")
    assert code == 0, err
    assert os.getcwd() == str(project.root)
    (run,) = list_runs(project.runs_dir, "toy", "data")
    assert run.record.status == "passed"


@pytest.mark.parametrize("how", ["--debug", "REPRO_DEBUG=1"])
def test_debug_shows_the_traceback_of_an_expected_error(bare, cli, monkeypatch, how):
    args = ["show", "../x"]
    if how == "--debug":
        args.insert(0, "--debug")
    else:
        monkeypatch.setenv("REPRO_DEBUG", "1")
    code, out, err = cli(*args)
    assert code == 1
    assert err.startswith("Traceback (most recent call last):")
    assert err.rstrip().splitlines()[-1].startswith("Error: no run with id '../x'")


def test_an_unexpected_exception_keeps_its_traceback(bare, cli, monkeypatch):
    from repro import records

    def bug(*args, **kwargs):
        raise RuntimeError("a bug in repro")

    monkeypatch.setattr(records, "list_runs", bug)
    with pytest.raises(RuntimeError, match="a bug in repro"):
        cli("log")
