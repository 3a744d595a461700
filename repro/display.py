"""How verdicts, status tables, the run log and one run look in the terminal (Rich)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from repro.config import flatten

STATE_STYLE = {
    "PASS": "bold green",
    "FAIL": "bold red",
    "STALE": "yellow",
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


def _when(iso: str | None) -> str:
    return (iso or "")[:19].replace("T", " ")


def short(text: str, n: int = 110) -> str:
    """One line, at most n characters (ellipsis when cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def print_verdict(console: Console, record: dict[str, Any]) -> None:
    v = record.get("verdict") or {}
    label = "PASS" if v.get("passed") else "FAIL"
    console.print(
        f"[{STATE_STYLE[label]}]{record['stage']}: {label}[/] — {v.get('reason', '')}",
        highlight=False,
    )
    checks = v.get("checks") or []
    if checks:
        t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        t.add_column("check")
        t.add_column("")
        t.add_column("measured")
        for c in checks:
            t.add_row(c["name"], "[green]ok[/]" if c["passed"] else "[red]FAIL[/]", c["reason"])
        console.print(t)
    ev = v.get("evidence") or {}
    if record["stage"] == "full":
        _print_full(console, ev)


def _print_full(console: Console, ev: dict[str, Any]) -> None:
    summary = ev.get("summary") or {}
    base = (ev.get("baseline") or {}).get("metrics") or {}
    if not summary:
        return
    t = Table(title="test/val metrics (best checkpoint)", header_style="bold")
    t.add_column("metric")
    t.add_column("ours")
    if base:
        t.add_column(f"baseline ({(ev.get('baseline') or {}).get('name', '').split(':')[-1]})")
    for k, s in summary.items():
        ours = f"{s['mean']:.2f}" + (f" ± {s['std']:.2f}" if s.get("std") is not None else "")
        row = [k, ours]
        if base:
            row.append(f"{base[k]:.2f}" if k in base else "—")
        t.add_row(*row)
    console.print(t)


def print_status(console: Console, paper: str, rows) -> None:
    t = Table(title=f"repro status · {paper}", header_style="bold")
    t.add_column("stage", no_wrap=True, min_width=11)
    t.add_column("state", no_wrap=True, min_width=7)
    t.add_column("when (UTC)", no_wrap=True, min_width=11)
    t.add_column("run", no_wrap=True, min_width=20)
    room = max(20, console.width - 70)  # the other columns take ~70 characters
    t.add_column("reason", no_wrap=True)
    for r in rows:
        t.add_row(
            r.stage,
            f"[{STATE_STYLE.get(r.state, '')}]{r.state}[/]",
            _when(r.when)[5:16],
            r.run_id or "",
            short(r.reason.removeprefix("all "), room),
        )
    console.print(t)


def run_marks(rec: dict) -> list[str]:
    """How a run came about, when not plainly: forced past its prerequisites, a re-run of
    another run, or resumed after an interruption."""
    marks = []
    if rec.get("forced"):
        marks.append("forced")
    if (rec.get("links") or {}).get("rerun_of"):
        marks.append("re-run")
    runs = ((rec.get("verdict") or {}).get("evidence") or {}).get("runs") or []
    if any(isinstance(i, dict) and i.get("resumed_from") for i in runs):
        marks.append("resumed")
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
        took = rec.get("duration_s")
        cells = [
            r.id,
            *([r.paper] if many else []),
            r.stage,
            st + (f" ({', '.join(marks)})" if marks else ""),
            f"{took:.1f}s" if isinstance(took, (int, float)) else "",
        ]
        reason = (rec.get("verdict") or {}).get("reason") or r.status_reason or ""
        rows.append((cells, st, reason))
    # One line per run (the full reason is in `repro show <run>`): the reason gets what the
    # other columns leave of the terminal's width, each taking its widest cell + 3 (padding and
    # border), and 4 more for the reason's own padding and the table's edges.
    widths = [max(len(h), *(len(cells[i]) for cells, _, _ in rows)) for i, h in enumerate(headers)]
    reason_width = max(10, console.width - sum(w + 3 for w in widths) - 4)
    title = "repro log (newest first" + (")" if many else f"; {papers[0]})")
    t = Table(title=title, header_style="bold")
    for h in headers:
        t.add_column(h, no_wrap=True, justify="right" if h == "took" else "left")
    t.add_column("reason", no_wrap=True, overflow="ellipsis", max_width=reason_width)
    status_col = headers.index("status")
    for cells, st, reason in rows:
        cells[status_col] = f"[{STATE_STYLE.get(st, '')}]{cells[status_col]}[/]"
        t.add_row(*cells, short(reason, 200))
    console.print(t)


def print_run(console: Console, run) -> None:
    rec = run.record
    st = run.effective_status
    console.rule(f"run {run.id} · {run.paper} · {run.stage}")
    console.print(
        f"status: [{STATE_STYLE.get(st, '')}]{st}[/]"
        + (f" ({run.status_reason})" if run.status_reason else "")
        + ("  [yellow]forced: ran without its prerequisites[/]" if rec.get("forced") else "")
    )
    console.print(f"dir: {run.dir}")
    console.print(
        f"started {_when(rec.get('started'))} UTC, took {rec.get('duration_s') or 0:.1f}s"
    )
    links = dict(rec.get("links") or {})
    if links.get("rerun_of"):
        console.print(
            f"re-run of {links.pop('rerun_of')} (`repro show` it; `repro diff` compares them)",
            highlight=False,
        )
    if links:
        console.print(f"links: {links}")
    for r in rec.get("resumed") or []:
        console.print(
            f"resumed {_when(r.get('at'))} UTC from {', '.join(r.get('from_ckpt') or ['the start'])} "
            f"(was {r.get('previous_status', '?')})",
            highlight=False,
        )
    if rec.get("forecast") or rec.get("actual"):
        from repro.forecast import compare, format_forecast

        if rec.get("forecast"):
            console.print(format_forecast(rec["forecast"]), highlight=False)
        line = compare(rec.get("forecast"), rec.get("actual"))
        if line:
            console.print(line, highlight=False)
    if rec.get("verdict"):
        print_verdict(console, rec)
    if rec.get("error"):
        console.print("[red]error:[/]")
        console.print(rec["error"], markup=False, highlight=False)
    if rec.get("metrics"):
        console.print("metrics: " + json.dumps(rec["metrics"], default=str))

    prov = rec.get("provenance") or {}
    flat = flatten(rec.get("config") or {})
    defaults = {
        k: flat.get(k)
        for k, p in prov.items()
        if p.split(":")[0] == "default" and not k.startswith(("stage.", "logger.", "launcher."))
    }
    t = Table(
        title=f"values repro filled in because the paper is silent ({len(defaults)})",
        header_style="bold",
    )
    t.add_column("key")
    t.add_column("value")
    t.add_column("why")
    for k, v in defaults.items():
        t.add_row(k, json.dumps(v, default=str), prov[k].split(":", 1)[1].strip())
    console.print(t)
    t = Table(title="resolved config with provenance", header_style="bold")
    t.add_column("key")
    t.add_column("value")
    t.add_column("source")
    for k, v in flat.items():
        if k.startswith("paper."):
            continue
        p = prov.get(k, "")
        kind = p.split(":")[0]
        style = {
            "paper": "green",
            "authors-code": "cyan",
            "default": "yellow",
            "override": "magenta",
            "unsourced": "red",
        }.get(kind, "")
        t.add_row(k, short(json.dumps(v, default=str), 40), f"[{style}]{p}[/]" if style else p)
    console.print(t)
    if rec.get("init"):
        n = len(rec["init"])
        kinds = sorted({v.split()[0] for v in rec["init"].values()})
        console.print(
            f"init: {n} parameters initialised by repro ({', '.join(kinds)}); see record.json 'init'"
        )
    git = rec.get("git") or {}
    console.print(
        f"git: commit {git.get('commit') or '-'} on {git.get('branch') or '-'}"
        + (" [yellow](dirty: see git.diff)[/]" if git.get("dirty") else " (clean)")
    )
    env = rec.get("env") or {}
    pk = env.get("packages") or {}
    console.print(
        "env: python "
        + str(env.get("python", "?")).split()[0]
        + ", "
        + ", ".join(f"{k} {v}" for k, v in pk.items() if v)
        + (f", device {env['device']}" if env.get("device") else "")
    )
    plots = sorted(p.name for p in run.dir.rglob("*.png"))
    if plots:
        console.print(
            "plots: "
            + ", ".join(str(p.relative_to(run.dir)) for p in sorted(run.dir.rglob("*.png")))
        )
