"""`repro report`: papers/<paper>/REPORT.md written from the run records alone, byte-identical when no run changed.

Sections: summary (claims, easy/hard from the stage history, assumptions), results vs the paper,
deviations, stage timeline, commands that reproduce each number, figures.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from repro.gates import STAGES
from repro.gates.metrics import FullMetrics, load_metrics
from repro.oneline import one_line
from repro.progression import stage_command
from repro.project import Project
from repro.terminal import safe

FINISHED = ("passed", "failed")


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "—" if x is None else format(float(x), spec)


def _spec(paper_value: float) -> str:
    """Decimals for a target's numbers: points of accuracy (88.17) with 2, a MAP (0.718) with 4."""
    return ".2f" if abs(float(paper_value)) >= 1 else ".4f"


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _reason(run) -> str:
    return run.record.reason or run.status_reason or run.record.status_reason or ""


def result_runs(runs: list, current: dict | None = None) -> list:
    """Per dataset, the full run the report headlines: among finished milestone runs (base
    config, unforced) on the current fingerprint, the one with the most seeds (the newest of
    those); when none is on the current fingerprint, the newest finished milestone run, which the
    report marks STALE. Runs come newest first; the result is ordered by dataset."""
    from repro.progression import is_milestone_run

    chosen: dict[str, Any] = {}
    for r in runs:
        if r.stage != "full" or r.effective_status not in FINISHED or not is_milestone_run(r):
            continue
        dataset = str(((r.record.config or {}).get("data") or {}).get("dataset"))
        best = chosen.get(dataset)
        if best is None or _rank(r, current) > _rank(best, current):
            chosen[dataset] = r
    return [chosen[k] for k in sorted(chosen)]


def _rank(run, current: dict | None) -> tuple[bool, int]:
    on_current = current is not None and is_current(run, current)
    seeds = len(((run.record.metrics or {}).get("seeds")) or [])
    return (on_current, seeds)


def is_current(run, current: dict) -> bool:
    theirs = run.record.fingerprint_of(run.stage)
    return theirs == current["stages"][run.stage]


def results_rows(run) -> list[dict[str, Any]]:
    """One row per target of a full run, from its typed metrics."""
    m = load_metrics(FullMetrics, run.record)
    if m is None:
        return []
    return [
        {
            "target": t.name,
            "metric": t.metric,
            "ours": t.ours_mean,
            "std": t.ours_std,
            "n": t.n_seeds,
            "paper": t.paper,
            "spread": t.spread,
            "gap": t.gap,
            "per_seed": ", ".join(
                format(ps[t.metric], _spec(t.paper)) for ps in m.per_seed if t.metric in ps
            ),
            "verdict": t.label,
            "run": run.id,
        }
        for t in m.targets
    ]


def reproduce_command(run) -> list[str]:
    rec = run.record
    lines = []
    if rec.git and rec.git.commit:
        lines.append(
            f"git checkout {rec.git.commit}"
            + ("  # the run had uncommitted changes: see its git.diff" if rec.git.dirty else "")
        )
    lines.append(stage_command(run.stage, run.paper, list(rec.overrides or [])))
    return lines


def _deviations(project: Project, paper: str, runs: list) -> list[str]:
    """DEVIATION/UNSTATED entries of the paper config's provenance, the `# DEVIATION:` and
    `# UNSTATED:` comments of the paper's code, and its README's Deviations section."""
    out = []
    newest = next((r for r in runs if r.record.config), None)
    prov = ((newest.record.config.get("paper") or {}).get("provenance") or {}) if newest else {}
    for key in sorted(prov):
        if re.search(r"DEVIATION|UNSTATED", str(prov[key])):
            out.append(f"- `{key}`: {_cell(prov[key])} (paper config provenance)")
    out += [
        f"- {kind} `{where}`: {_cell(text)}"
        for where, kind, text in code_notes(project.paper_dir(paper))
    ]
    readme = project.paper_dir(paper) / "README.md"
    if readme.exists():
        m = re.search(
            r"^## Deviations\s*\n(.*?)(?=^## |\Z)", readme.read_text(encoding="utf-8"), re.M | re.S
        )
        body = m.group(1).strip() if m else ""
        if body and body != "TODO":
            out.append(f"\nFrom papers/{paper}/README.md:\n\n{body}")
    return out


NOTE = re.compile(r"#\s*(DEVIATION|UNSTATED)\b:?\s*(.*)")  # matched at a comment's start


def code_notes(paper_dir: Path) -> list[tuple[str, str, str]]:
    """(file:line, DEVIATION|UNSTATED, text) for every such comment in the paper's code (real
    comments only, read with tokenize: not the words in a docstring); a note continues on the
    comment lines right below it."""
    import io
    import tokenize

    notes = []
    for path in sorted(paper_dir.glob("*.py")):
        try:
            tokens = list(
                tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
            )
        except (tokenize.TokenError, SyntaxError, UnicodeDecodeError):
            continue  # the shapes gate reports a paper file that does not parse
        comments = [(t.start[0], t.string) for t in tokens if t.type == tokenize.COMMENT]
        for i, (line, text) in enumerate(comments):
            m = NOTE.match(text)
            if not m:
                continue
            parts, last = [m.group(2).strip()], line
            for nxt, more in comments[i + 1 :]:
                if nxt != last + 1 or NOTE.match(more):
                    break
                parts.append(more.lstrip("#").strip())
                last = nxt
            notes.append(
                (f"papers/{paper_dir.name}/{path.name}:{line}", m.group(1), " ".join(parts))
            )
    return notes


def _header(paper: str, meta: dict, runs: list) -> list[str]:
    return [
        f"# Reproduction report: {meta.get('title', paper)}",
        "",
        f"Paper `{paper}` · arXiv {meta.get('arxiv', '?')} · written by `repro report` from "
        f"{len(runs)} run record{'s' if len(runs) != 1 else ''} under `runs/{paper}/` "
        "(regenerate it after new runs; same records, same bytes).",
        "",
    ]


def _summary(meta: dict, runs: list) -> list[str]:
    lines = ["## Reproducibility summary", "", "**Scope: the paper's claims checked here**", ""]
    targets = meta.get("targets") or []
    for t in targets:
        spread = (
            f", paper's spread ±{t['spread']:g}"
            if t.get("spread") is not None
            else ", no spread stated"
        )
        lines.append(
            f"- {t['name']}: {t['metric']} = {t['value']:g} on {t.get('dataset') or 'any dataset'} "
            f"({t.get('where') or '?'}); tolerance {float(t.get('tolerance') or 0):g}{spread}"
        )
    if not targets:
        lines.append("- the paper config declares no targets")
    lines += [
        "",
        "**What was easy, what was hard** (runs per stage and why they failed)",
        "",
        "| stage | runs | passed | failed | error / interrupted | failure reasons |",
        "|---|---|---|---|---|---|",
    ]
    for stage in STAGES:
        mine = [r for r in runs if r.stage == stage]
        if not mine:
            continue
        st = [r.effective_status for r in mine]
        bad = sorted(
            {
                one_line(_reason(r), 100)
                for r in mine
                if r.effective_status != "passed" and _reason(r)
            }
        )
        lines.append(
            f"| {stage} | {len(mine)} | {st.count('passed')} | {st.count('failed')} | "
            f"{len(mine) - st.count('passed') - st.count('failed')} | "
            f"{_cell('; '.join(bad[:3])) or '—'} |"
        )
    return lines + _assumptions(runs)


def _assumptions(runs: list) -> list[str]:
    basis = next((r for r in runs if r.stage == "full" and r.record.defaults), None) or next(
        (r for r in runs if r.record.defaults), None
    )
    defaults = (basis.record.defaults or {}) if basis else {}
    lines = [
        "",
        f"**Assumptions**: values repro filled in because the paper is silent ({len(defaults)}"
        + (f", from run {basis.id}" if basis else "")
        + ")",
        "",
    ]
    if not defaults:
        return lines + ["none recorded"]
    return (
        lines
        + ["| key | value |", "|---|---|"]
        + [f"| `{k}` | `{_cell(json.dumps(defaults[k], default=str))}` |" for k in sorted(defaults)]
    )


def _results(chosen: list, current: dict | None) -> list[str]:
    lines = [
        "",
        "## Results vs the paper",
        "",
        "Mean ± std over the seeds of the `full` milestone run per dataset (base config, unforced; "
        "on the current code, config and data, the one with the most seeds); gap = ours − paper.",
        "",
        "| target | metric | ours | seeds | per seed | paper | gap | within paper's spread | verdict | run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    stale = {r.id for r in chosen if current is None or not is_current(r, current)}
    rows = [row for r in chosen for row in results_rows(r)]
    for row in rows:
        d = _spec(row["paper"])
        ours = _fmt(row["ours"], d) + (
            f" ± {_fmt(row['std'], d)}" if row["std"] is not None else ""
        )
        if row["spread"] is None:
            spread = "no spread stated"
        elif row["gap"] is None:
            spread = "—"
        else:
            spread = f"{'yes' if abs(row['gap']) <= float(row['spread']) else 'no'} (±{float(row['spread']):g})"
        run = row["run"] + (" (STALE: other code, config or data)" if row["run"] in stale else "")
        lines.append(
            f"| {_cell(row['target'])} | {row['metric']} | {ours} | {row['n']} | {row['per_seed']} | "
            f"{_fmt(row['paper'], d)} | {_fmt(row['gap'], '+' + d)} | {spread} | {row['verdict']} | {run} |"
        )
    if not rows:
        lines.append("| — | — | no finished full run yet | | | | | | | |")
    return lines


def _invariances(chosen: list) -> list[str]:
    """The declared invariances each chosen full run measured on its test split, with the
    verdict its record gave them (nothing when no run measured any)."""
    rows = []
    for r in chosen:
        m = load_metrics(FullMetrics, r.record)
        verdict = r.record.verdict
        checks = {c.name: c for c in (verdict.checks if verdict else None) or []}
        for inv in (m.invariances if m else None) or []:
            seeds = inv.get("per_seed") or []
            if not seeds:
                continue
            changed = sum(s["changed"] for s in seeds) / len(seeds)
            change = sum(s["mean_change"] for s in seeds) / len(seeds)
            check = checks.get(f"invariant to {inv['transform']}")
            verdict = "—" if check is None else "PASS" if check.passed else "FAIL"
            kind = "exact" if inv.get("exact") else "learned"
            rows.append(
                f"| {_cell(inv['transform'])} | {kind} | {100 * changed:.1f}% | {change:.3g} | "
                f"{len(seeds)} | {seeds[0]['n']} | {verdict} | {_cell(inv.get('where') or '')} | {r.id} |"
            )
    if not rows:
        return []
    return [
        "",
        "## Invariances",
        "",
        "Transformations the paper config declares must not change the prediction, measured on "
        "the test split of the trained model: the share of predictions that change and the mean "
        "change of the scores.",
        "",
        "| transform | kind | changed | mean change | seeds | examples | verdict | why | run |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def _guards(chosen: list) -> list[str]:
    """Per chosen full run: its preflight (steps, val against the trivial baseline, or why it was
    not measured) and how it compares with our own best earlier passed run on the same data."""
    rows = []
    for r in chosen:
        verdict = r.record.verdict
        checks = (verdict.checks if verdict else None) or []
        pre = next((c for c in checks if c.name == "preflight"), None)
        ev = ((verdict.evidence if verdict else None) or {}).get("regression") or {}
        if pre is None and not ev:
            continue
        if pre is None:
            pre_text = "not recorded (a run from before the preflight)"
        else:
            state = "not measured" if pre.measured is False else "PASS" if pre.passed else "FAIL"
            pre_text = f"{state}: {(pre.reason or '').removeprefix('not measured: ')}"
        if ev.get("warning"):
            reg = f"warning: {ev['warning']}"
        elif ev.get("compared_with"):
            reg = f"not worse than run {ev['compared_with']} ({ev['metric']} {ev['best']:.4g}) beyond {ev['margin']:.3g}"
        else:
            reg = ev.get("note") or "not compared (a run from before this check)"
        rows.append(f"| {r.id} | {_cell(one_line(pre_text, 300))} | {_cell(reg)} |")
    if not rows:
        return []
    return [
        "",
        "## Preflight and regression",
        "",
        "Before its schedule, each full run trains briefly and must beat the task's trivial baseline "
        "on val beyond chance (preflight); after it, its primary metric is compared with our own "
        "best earlier passed full run on the same data (a warning, never a FAIL).",
        "",
        "| run | preflight | against our best earlier run |",
        "|---|---|---|",
        *rows,
    ]


def _experiments(paper: str, exp) -> list[str]:
    lines = ["", "## Experiments (ablations, sweeps)", ""]
    if exp is None:
        return lines + [f"no passed experiments run yet: `repro stage experiments --paper {paper}`"]
    table = exp.dir / "results.md"
    body = table.read_text(encoding="utf-8").split("\n", 1)[1].strip() if table.exists() else ""
    lines += [f"From run {exp.id}:", "", body or "(its results.md is missing)"]
    if (exp.dir / "results.png").exists():
        lines += ["", f"![{exp.id}-results.png](report/{exp.id}-results.png)"]
    return lines


def _timeline(runs: list) -> list[str]:
    lines = [
        "",
        "## Stage timeline",
        "",
        "| started (UTC) | stage | run | status | reason |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r.record.started or "", r.id)):
        when = (r.record.started or "")[:19].replace("T", " ")
        lines.append(
            f"| {when} | {r.stage} | {r.id} | {r.effective_status} | {_cell(one_line(_reason(r), 140))} |"
        )
    return lines


def _commands(paper: str, chosen: list) -> list[str]:
    lines = ["", "## Reproduce each number", ""]
    for r in chosen:
        targets = ", ".join(row["target"] for row in results_rows(r)) or "no targets"
        lines += [f"Run {r.id} ({targets}):", "", "```", *reproduce_command(r), "```", ""]
    if not chosen:
        lines += ["no finished full run yet: `repro stage full --paper " + paper + "`", ""]
    return lines


def _figures(exp, chosen: list) -> tuple[list[str], dict[str, tuple[Path, Path]], list[Path]]:
    """The report's figures ({name in report/: (source, its run folder)}); a .png that is not a regular file inside
    its run folder (a symbolic link could aim at any file) is left out and returned apart."""
    from repro.storage import is_regular_inside

    found: dict[str, tuple[Path, Path]] = {}
    if exp is not None and (exp.dir / "results.png").exists():
        found[f"{exp.id}-results.png"] = (exp.dir / "results.png", exp.dir)
    for r in chosen:
        for png in sorted(r.dir.rglob("*.png")):
            found[f"{r.id}-{'-'.join(png.relative_to(r.dir).parts)}"] = (png, r.dir)
    figures = {n: f for n, f in found.items() if is_regular_inside(*f)}
    skipped = sorted(src for n, (src, _) in found.items() if n not in figures)
    if not figures:
        return [], figures, skipped
    lines = ["## Figures", ""] + [f"![{name}](report/{name})" for name in sorted(figures)]
    return lines + [""], figures, skipped


def _current(project: Project, paper: str) -> dict | None:
    """The base config's fingerprint now (None when the config does not compose any more)."""
    from repro.config.compose import compose
    from repro.errors import ReproError
    from repro.progression import current_fingerprint

    try:
        return current_fingerprint(project, paper, compose(project, paper, []))
    except ReproError:
        return None


def build_report(
    project: Project, paper: str
) -> tuple[str, dict[str, tuple[Path, Path]], list[Path]]:
    """The report text, the figures it references ({name in report/: (source, run folder)}) and the
    figures left out (not regular files inside their run folder)."""
    from repro.records import list_runs

    runs = [r for r in list_runs(project.runs_dir, paper) if r.corrupt is None]  # newest first
    newest_cfg = next((r.record.config for r in runs if r.record.config), None) or {}
    meta = newest_cfg.get("paper") or {}
    current = _current(project, paper)
    chosen = result_runs(runs, current)
    exp = next(
        (r for r in runs if r.stage == "experiments" and r.effective_status == "passed"), None
    )
    devs = _deviations(project, paper, runs) or [
        "none recorded (no DEVIATION/UNSTATED provenance entries, no Deviations section in the paper README)"
    ]
    figure_lines, figures, skipped = _figures(exp, chosen)
    lines = (
        _header(paper, meta, runs)
        + _summary(meta, runs)
        + _results(chosen, current)
        + _invariances(chosen)
        + _guards(chosen)
        + _experiments(paper, exp)
        + ["", "## Deviations", ""]
        + devs
        + _timeline(runs)
        + _commands(paper, chosen)
        + figure_lines
    )
    # Text from records and the paper's files, with any control character escaped (a report is
    # read in terminals too: issue 20).
    return safe("\n".join(lines).rstrip("\n") + "\n"), figures, skipped


def write_report(project: Project, paper: str) -> tuple[Path, list[Path]]:
    """Write papers/<paper>/REPORT.md (REPORT_<paper>.md beside the code it shares with another
    paper: paper.code) and copy its figures to report/ beside it; returns the report's path and
    the figures left out. Each file is replaced atomically: a symbolic link there is replaced by
    the file, never written through (issue 20)."""
    from repro.storage import atomic_write, copy_regular

    text, figures, skipped = build_report(project, paper)
    own = project.code_of(paper) == paper  # a paper sharing another's code: a report of its own
    out = project.paper_dir(paper) / ("REPORT.md" if own else f"REPORT_{paper}.md")
    fig_dir = out.parent / "report"
    for name, (src, run_dir) in sorted(figures.items()):
        fig_dir.mkdir(exist_ok=True)
        if not copy_regular(src, fig_dir / name, run_dir, "a report figure"):
            skipped.append(src)  # replaced by a link since it was listed
    if out.is_symlink() or not out.is_file() or out.read_text(encoding="utf-8") != text:
        atomic_write(out, text, "the report")
    return out, sorted(skipped)


def parse_results_table(text: str) -> list[dict[str, str]]:
    """The results table of a REPORT.md back as rows of strings (tests compare them with the records)."""
    section = text.split("## Results vs the paper", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=False))
        for line in lines[2:]
    ]
