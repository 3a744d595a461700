"""Control characters from records, configs and paper files never reach the terminal raw (issue 20):
`show`, `log`, `judge`, `status` and `report` print an ESC/OSC sequence in a record's reason and
in a paper's target name escaped, and free text is refused where repro writes it."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from repro.records import list_runs
from repro.terminal import SafeConsole, safe

OLD = Path(__file__).parent / "fixtures" / "old_records" / "039d4c6" / "runs"
# Window title, screen clear, a clipboard write (OSC 52), a C1 CSI and a right-to-left override.
HOSTILE = "\x1b]0;pwned\x07 \x1b[2J \x1b]52;c;cHduZWQ=\x07 \x9b31m \u202eevil"
ESCAPED = "\\x1b]0;pwned\\x07 \\x1b[2J \\x1b]52;c;cHduZWQ=\\x07 \\x9b31m \\u202eevil"


def test_safe_escapes_controls_and_keeps_text():
    assert safe("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert safe("\x9b\x07\x7f\r") == "\\x9b\\x07\\x7f\\x0d"
    assert safe("\u202eabc\u2066\u200b\ufeff") == "\\u202eabc\\u2066\\u200b\\ufeff"
    assert safe("\U000e0041") == "\\U000e0041"  # a tag character: invisible
    text = "tab\tand\nnewline, é, 漢字, ±, ≤, — and 🙂 stay"
    assert safe(text) == text


def test_safe_console_escapes_text_but_keeps_its_own_styles():
    out = io.StringIO()
    console = SafeConsole(file=out, force_terminal=True, color_system="standard", width=200)
    console.print("[red]red[/red] " + HOSTILE.replace("[", "\\["), highlight=False)
    printed = out.getvalue()
    assert "\x1b[31m" in printed  # the colour Rich writes itself
    assert "\x1b]" not in printed and "\x1b[2J" not in printed and "\u202e" not in printed
    assert "\x9b" not in printed
    assert "\\x1b]0;pwned" in printed and "\\u202eevil" in printed


def _plant(project) -> tuple[str, Path]:
    """An old full run whose reason carries HOSTILE, and a target named with it."""
    shutil.copytree(OLD, project.runs_dir, dirs_exist_ok=True)
    (run,) = list_runs(project.runs_dir, "toy", "full")
    record = json.loads(run.record_file.read_text())
    record["verdict"]["reason"] = f"REPRODUCED {HOSTILE} end"
    run.record_file.write_text(json.dumps(record))
    yaml = project.conf_dir / "paper" / "toy.yaml"
    text = yaml.read_text()
    assert "    - name: toy test accuracy\n" in text
    # YAML's own escapes: \e is ESC, \a is BEL, \x9b and \u202e as written
    hostile_yaml = HOSTILE.replace("\x1b", "\\e").replace("\x07", "\\a")
    hostile_yaml = hostile_yaml.replace("\x9b", "\\x9b").replace("\u202e", "\\u202e")
    yaml.write_text(text.replace("- name: toy test accuracy", f'- name: "toy {hostile_yaml}"'))
    return run.id, project.paper_dir("toy") / "REPORT.md"


def _failed_data_run(project, reason: str) -> None:
    """A failed data run on the current fingerprint: its reason is what `status` shows."""
    from repro.config.compose import compose
    from repro.progression import current_fingerprint
    from repro.records import create_run

    resolved = compose(project, "toy", [])
    fp = current_fingerprint(project, "toy", resolved, [])
    run = create_run(project.runs_dir, "toy", "data", fingerprint=fp, config=resolved.config)
    run.finish({"stage": "data", "passed": False, "reason": reason}, "failed")


def _clean(*texts: str) -> None:
    for text in texts:
        for raw in ("\x1b", "\x9b", "\u202e", "\x07"):
            assert raw not in text, f"{raw!r} printed raw: {text!r}"


def test_hostile_text_in_a_record_and_a_target_is_printed_escaped_everywhere(project, cli):
    run_id, report = _plant(project)

    code, out, err = cli("show", run_id)
    assert code == 0, err
    _clean(out, err)
    assert ESCAPED in out, out

    code, out, err = cli("log")
    assert code == 0, err
    _clean(out, err)
    assert "\\x1b]0;pwned" in out  # the reason is cut to one line: its start is there

    _failed_data_run(project, f"labels {HOSTILE} missing")  # a row whose reason status shows
    code, out, err = cli("status")
    assert code == 0, err
    _clean(out, err)
    assert "labels \\x1b]0;pwned" in out

    code, out, err = cli("judge", run_id)  # the target's name comes from the paper's YAML
    assert code == 0, out + err
    _clean(out, err)
    assert "toy \\x1b]0;pwned" in out and "\\u202eevil" in out
    judged = next(r for r in list_runs(project.runs_dir, "toy", "full") if r.id != run_id)
    assert judged.record.verdict.checks[0].name == f"toy {HOSTILE}"  # kept as it is

    code, out, err = cli("report")
    assert code == 0, err
    text = report.read_text()
    _clean(out, err, text)
    assert "toy \\x1b]0;pwned\\x07 \\x1b[2J" in text and "\\u202eevil" in text
    _clean((project.notes_dir / "toy.md").read_text())


def test_title_and_overrides_with_control_characters_are_refused(project, cli):
    code, out, err = cli("new", "other", "--title", "Deep \x1b]0;x\x07 Nets")
    assert code == 1
    assert err.strip() == (
        "Error: --title: expected text without control characters, found '\\x1b' in "
        "'Deep \\x1b]0;x\\x07 Nets'; type the title as plain text"
    )
    assert not (project.paper_dir("other")).exists()

    code, out, err = cli("stage", "data", "+data.note=\x1b[2J")
    assert code == 1
    assert err.strip() == (
        "Error: override '+data.note=\\x1b[2J': expected text without control characters, "
        "found '\\x1b'; type the value as plain text"
    )
    assert list_runs(project.runs_dir) == []
