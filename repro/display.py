"""How verdicts, status tables, the run log and one run look in the terminal (Rich)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape as _markup_escape
from rich.table import Table

from repro.config.compose import GATE_SECTIONS, flatten, kind_of
from repro.gates.metrics import FullMetrics, load_metrics
from repro.oneline import one_line
from repro.records.record import (
    Record,
    RecordedCheck,
    RecordedEnv,
    RecordedGit,
    RecordedVerdict,
)
from repro.terminal import safe


def escape(text: str) -> str:
    """Text from a record as Rich markup: control characters shown escaped (repro/terminal.py),
    square brackets taken literally."""
    return _markup_escape(safe(text))


STATE_STYLE = {
    "PASS": "bold green",
    "FAIL": "bold red",
    "STALE": "yellow",
    "REJUDGE": "yellow",
    "CORRUPT": "red",
    "ERROR": "red",
    "INTERRUPTED": "magenta",
    "RUNNING": "cyan",
    "not run": "dim",
    "passed": "green",
    "failed": "red",
    "error": "red",
    "interrupted": "magenta",
    "running": "cyan",
    "corrupt": "red",
}


def _styled(text: str, state: str) -> str:
    """`text` (escaped) in the style of `state`; plain when the state has no style (an empty
    `[]...[/]` would be a Rich MarkupError)."""
    style = STATE_STYLE.get(state)
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def _when(iso: str | None) -> str:
    return (iso or "")[:19].replace("T", " ")


def _took(run) -> str:
    """`12.3s`, `≥12.3s` for a run that died (its start to the last file it wrote), or ''."""
    seconds, estimated = run.took()
    if seconds is None:
        return ""
    return ("≥" if estimated else "") + f"{seconds:.1f}s"


def print_unreadable(console: Console, runs) -> None:
    """One warning line per run whose record.json cannot be read: the command skips it."""
    for r in runs:
        if r.corrupt is not None:
            console.print(
                f"Warning: {r.unreadable}; skipped (repair or remove the file)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


def print_verdict(console: Console, record: Record) -> None:
    print_checks(console, record.stage, record.verdict or RecordedVerdict())
    full = load_metrics(FullMetrics, record) if record.stage == "full" else None
    if full is not None:
        _print_full(console, full)


def print_checks(console: Console, stage: str, v: RecordedVerdict) -> None:
    """The verdict's line and a table of its checks."""
    label = "PASS" if v.passed else "FAIL"
    console.print(f"[{STATE_STYLE[label]}]{escape(stage)}: {label}[/] — ", end="")
    console.print(safe(v.reason or ""), markup=False, highlight=False)
    checks = v.checks or []
    if checks:
        t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        t.add_column("check")
        t.add_column("")
        t.add_column("measured")
        for c in checks:
            t.add_row(
                escape(c.name or "?"),
                _check_mark(c),
                escape(c.reason or ""),
            )
        console.print(t)


def _check_mark(check: RecordedCheck) -> str:
    if check.measured is False:
        return "[dim]–[/]"  # not measured: neither passed nor failed
    return "[green]ok[/]" if check.passed else "[red]FAIL[/]"


def _print_full(console: Console, m: FullMetrics) -> None:
    base = (m.baseline or {}).get("metrics") or {}
    trivial = (m.trivial or {}).get("metrics") or {}
    if not m.mean:
        return
    t = Table(title="test/val metrics (best checkpoint)", header_style="bold")
    t.add_column("metric")
    t.add_column("ours")
    if len(m.seeds) > 1:
        for s in m.seeds:
            t.add_column(f"seed {s}")
    if trivial:
        t.add_column(f"trivial ({escape(str(m.trivial.get('name', '')))})")
    if base:
        t.add_column(f"baseline ({escape(str((m.baseline or {}).get('name', '')).split(':')[-1])})")
    for k, mean in m.mean.items():
        std = m.std.get(k)
        row = [escape(k), _num(mean) + (f" ± {_num(std)}" if std is not None else "")]
        if len(m.seeds) > 1:
            row += [_num(ps[k]) if k in ps else "—" for ps in m.per_seed]
        for extra in (trivial, base):
            if extra:
                row.append(_num(extra[k]) if k in extra else "—")
        t.add_row(*row)
    console.print(t)
    lrs = ", ".join(f"seed {s}: {lr:.3g}" for s, lr in m.lr_by_seed.items())
    console.print(f"learning rate used: {lrs}", markup=False, highlight=False)


def _num(x: float) -> str:
    """Points of accuracy as 97.31, a MAP or an R² as 0.7184."""
    return f"{x:.2f}" if abs(x) >= 10 else f"{x:.4g}"


def print_status(console: Console, paper: str, rows) -> None:
    t = Table(title=escape(f"repro status · {paper}"), header_style="bold")
    t.add_column("stage", no_wrap=True, min_width=11)
    t.add_column("state", no_wrap=True, min_width=7)
    t.add_column("when (UTC)", no_wrap=True, min_width=11)
    t.add_column("run", no_wrap=True, min_width=20)
    room = max(20, console.width - 70)  # the other columns take ~70 characters
    t.add_column("reason", no_wrap=True)
    for r in rows:
        t.add_row(
            escape(r.stage),
            _styled(r.state, r.state),
            escape(_when(r.when)[5:16]),
            escape(r.run_id or ""),
            escape(one_line(r.reason.removeprefix("all "), room)),
        )
    console.print(t)
    for r in rows:
        if r.around:
            console.print(
                f"  {r.stage}: {r.around} (repro log -s {r.stage})", markup=False, highlight=False
            )
        for w in r.warnings:  # the full stage's: a regression against our best, a skipped check
            console.print(
                f"  {r.stage} (run {r.run_id}): warning: {w}", style="yellow", markup=False
            )


def run_marks(rec: Record) -> list[str]:
    """How a run came about, when not plainly: forced past its prerequisites, a re-run of
    another run, or resumed after an interruption."""
    marks = []
    links = rec.links or {}
    if rec.forced:
        marks.append("forced")
    if links.get("rerun_of"):
        marks.append("re-run")
    if rec.resumed:
        marks.append("resumed")
    if links.get("judged"):
        marks.append("judged again")
    if rec.overrides:
        marks.append("overrides")
    return marks


def print_log(console: Console, runs) -> None:
    # The run id starts with its start time (UTC), so there is no separate column for it; the
    # paper column only appears when the runs are from more than one paper.
    papers = sorted({r.paper for r in runs})
    many = len(papers) > 1
    headers = ["run (started, UTC)", *(["paper"] if many else []), "stage", "status", "took"]
    rows = []  # (cells of the columns above, status for the style, reason)
    for r in runs:
        rec, st = r.record, r.effective_status
        marks = run_marks(rec)
        cells = [
            r.id,
            *([r.paper] if many else []),
            r.stage,
            st + (f" ({', '.join(marks)})" if marks else ""),
            _took(r),
        ]
        reason = (rec.verdict.reason if rec.verdict else None) or r.status_reason or ""
        if rec.overrides:  # shown first: it is what makes the run differ
            reason = f"[{' '.join(rec.overrides)}] {reason}"
        rows.append((cells, st, reason))
    # One line per run (the full reason is in `repro show <run>`): the reason gets what the
    # other columns leave of the terminal's width, each taking its widest cell + 3 (padding and
    # border), and 4 more for the reason's own padding and the table's edges.
    widths = [max(len(h), *(len(cells[i]) for cells, _, _ in rows)) for i, h in enumerate(headers)]
    reason_width = max(10, console.width - sum(w + 3 for w in widths) - 4)
    title = "repro log (newest first" + (")" if many else f"; {papers[0]})")
    t = Table(title=escape(title), header_style="bold")
    for h in headers:
        t.add_column(h, no_wrap=True, justify="right" if h == "took" else "left")
    t.add_column("reason", no_wrap=True, overflow="ellipsis", max_width=reason_width)
    status_col = headers.index("status")
    for cells, st, reason in rows:
        cells = [_styled(c, st) if i == status_col else escape(c) for i, c in enumerate(cells)]
        t.add_row(*cells, escape(one_line(reason, 200)))
    console.print(t)


PROVENANCE_STYLE = {
    "paper": "green",
    "authors-code": "cyan",
    "default": "yellow",
    "override": "magenta",
    "unsourced": "red",
}


def print_run(console: Console, run) -> None:
    """`repro show`: one run in full. Every text that comes from the record is printed escaped."""
    rec = run.record
    _print_header(console, run)
    _print_history(console, rec)
    if rec.verdict:
        print_verdict(console, rec)
    if rec.error:
        console.print("[red]error:[/]")
        console.print(safe(rec.error), markup=False, highlight=False)
    if rec.metrics:
        console.print(
            "metrics: " + json.dumps(rec.metrics, default=str), markup=False, highlight=False
        )
    _print_config(console, rec)
    _print_environment(console, run)


def _print_header(console: Console, run) -> None:
    rec, st = run.record, run.effective_status
    console.rule(escape(f"run {run.id} · {run.paper} · {run.stage}"))
    console.print(
        f"status: {_styled(st, st)}"
        + (f" ({escape(str(run.status_reason))})" if run.status_reason else "")
        + ("  [yellow]forced: ran without its prerequisites[/]" if rec.forced else "")
    )
    console.print(f"dir: {run.dir}", markup=False, highlight=False)
    took = _took(run) or "unknown"
    console.print(f"started {_when(rec.started)} UTC, took {took}", markup=False)


def _print_history(console: Console, rec: Record) -> None:
    """Re-run links, resumes, forecast vs actual."""
    links = dict(rec.links or {})
    if links.get("rerun_of"):
        rerun_of = links.pop("rerun_of")
        console.print(
            f"re-run of {rerun_of} (`repro show` it; `repro diff` compares them)", markup=False
        )
    if links:
        console.print(f"links: {links}", markup=False)
    for r in rec.resumed or []:
        ckpts = ", ".join(r.from_ckpt or ["the start"])
        console.print(
            f"resumed {_when(r.at)} UTC from {ckpts} (was {r.previous_status or '?'})",
            markup=False,
            highlight=False,
        )
    if rec.forecast or rec.actual:
        from repro.forecast import compare, describe

        if rec.forecast:
            console.print(describe(rec.forecast), markup=False, highlight=False)
        line = compare(rec.forecast, rec.actual)
        if line:
            console.print(line, markup=False, highlight=False)


def _print_config(console: Console, rec: Record) -> None:
    """The defaults repro filled in, then the whole resolved config with each value's source."""
    prov = rec.provenance or {}
    flat = flatten(rec.config or {})
    defaults = {
        k: flat.get(k)
        for k, p in prov.items()
        if kind_of(p) == "default" and not k.startswith(GATE_SECTIONS)
    }
    t = Table(
        title=f"values repro filled in because the paper is silent ({len(defaults)})",
        header_style="bold",
    )
    for name in ("key", "value", "why"):
        t.add_column(name)
    for k, v in defaults.items():
        t.add_row(
            escape(k), escape(json.dumps(v, default=str)), escape(prov[k].split(":", 1)[-1].strip())
        )
    console.print(t)
    t = Table(title="resolved config with provenance", header_style="bold")
    for name in ("key", "value", "source"):
        t.add_column(name)
    for k, v in flat.items():
        if k.startswith("paper."):
            continue
        p = str(prov.get(k, ""))
        style = PROVENANCE_STYLE.get(kind_of(p), "")
        source = f"[{style}]{escape(p)}[/]" if style else escape(p)
        t.add_row(escape(k), escape(one_line(json.dumps(v, default=str), 40)), source)
    console.print(t)


def _print_environment(console: Console, run) -> None:
    """Init, git, packages and device, plots."""
    rec = run.record
    if rec.init:
        kinds = sorted({(str(v).split() or ["?"])[0] for v in rec.init.values()})
        console.print(
            f"init: {len(rec.init)} parameters initialised by repro ({', '.join(kinds)}); "
            "see record.json 'init'",
            markup=False,
        )
    git = rec.git or RecordedGit()
    dirty = " (dirty: see git.diff)" if git.dirty else " (clean)"
    console.print(f"git: commit {git.commit or '-'} on {git.branch or '-'}{dirty}", markup=False)
    env = rec.env or RecordedEnv()
    packages = ", ".join(f"{k} {v}" for k, v in env.packages.items() if v)
    device = env.device
    where = (
        f", device {device.get('device')} ({device.get('device_name')})"
        if device.get("device")
        else ""
    )
    console.print(
        f"env: python {((env.python or '?').split() or ['?'])[0]}, {packages}{where}",
        markup=False,
    )
    plots = sorted(str(p.relative_to(run.dir)) for p in run.dir.rglob("*.png"))
    if plots:
        console.print("plots: " + ", ".join(plots), markup=False)
