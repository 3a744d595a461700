"""`repro diff`: what differs between two runs' inputs (config, overrides, code, data, environment, model).

Fields that vary naturally (ids, times, pid, durations, run directory) are ignored; outcomes
(status, metrics) are shown beside the differences but never count as one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from repro.config.compose import flatten

if TYPE_CHECKING:
    from repro.records.record import Record

KINDS = ("run", "config", "overrides", "code", "git", "data", "env", "model")
ENV_KEYS = ("python",)
DEVICE_KEYS = ("device", "device_name", "cuda_version")


@dataclass(frozen=True)
class Difference:
    kind: str  # one of KINDS
    key: str  # config key, override key, file path, env.<name>, model/<param> ...
    a: Any
    b: Any
    note: str = ""


def _override_map(overrides: list[str]) -> dict[str, str]:
    out = {}
    for o in overrides or []:
        key, _, value = o.partition("=")
        out[key.lstrip("+~")] = value
    return out


def _diff_maps(kind: str, a: dict, b: dict, prefix: str = "") -> list[Difference]:
    missing = object()
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, missing), b.get(k, missing)
        if va != vb:
            out.append(
                Difference(
                    kind,
                    f"{prefix}{k}",
                    None if va is missing else va,
                    None if vb is missing else vb,
                    "only in b" if va is missing else "only in a" if vb is missing else "",
                )
            )
    return out


def _config(a: Record, b: Record) -> list[Difference]:
    fa, fb = flatten(a.config or {}), flatten(b.config or {})
    pa, pb = a.provenance or {}, b.provenance or {}
    out = []
    for d in _diff_maps("config", fa, fb):
        out.append(
            Difference("config", d.key, d.a, d.b, f"{pa.get(d.key, '?')} | {pb.get(d.key, '?')}")
        )
    for k in sorted(set(fa) & set(fb)):
        if fa[k] == fb[k] and pa.get(k) != pb.get(k):
            out.append(
                Difference(
                    "config", k, fa[k], fb[k], f"same value, source {pa.get(k)} | {pb.get(k)}"
                )
            )
    return out


def _code_and_data(a: Record, b: Record) -> list[Difference]:
    fa = a.fingerprint.files if a.fingerprint else {}
    fb = b.fingerprint.files if b.fingerprint else {}
    out = []
    for d in _diff_maps("code", fa, fb):
        kind = "code" if d.key.startswith("papers/") else "data"
        out.append(Difference(kind, d.key, d.a, d.b, d.note or "content hash differs"))
    pa = a.fingerprint.parts if a.fingerprint else {}
    pb = b.fingerprint.parts if b.fingerprint else {}
    if pa.get("data_files") != pb.get("data_files") and not any(d.kind == "data" for d in out):
        out.append(
            Difference(
                "data", "data_files", pa.get("data_files"), pb.get("data_files"), "data fingerprint"
            )
        )
    return out


RECORD_DIRS = ("runs/", "notes/")  # every run writes there: changes in them are not code changes


def comparable_git_diff(text: str | None) -> str:
    """A run's git.diff without what runs themselves write (run records, lab-notebook lines)."""
    keep, skip = [], False
    for line in (text or "").splitlines():
        if line.startswith("diff --git "):
            skip = line.split(" a/", 1)[-1].startswith(RECORD_DIRS)
        elif line.startswith("# untracked files ("):
            skip = False
            continue
        if skip or line.startswith(tuple(f"#   {d}" for d in RECORD_DIRS)):
            continue
        keep.append(line)
    return "\n".join(keep)


def _git(a: Record, b: Record, diff_a: str | None, diff_b: str | None) -> list[Difference]:
    from repro.records.record import RecordedGit

    ga, gb = a.git or RecordedGit(), b.git or RecordedGit()
    out = []
    if ga.commit != gb.commit:
        out.append(Difference("git", "git.commit", ga.commit, gb.commit))
    if comparable_git_diff(diff_a) != comparable_git_diff(diff_b):
        out.append(
            Difference(
                "git",
                "git.diff",
                "dirty" if ga.dirty else "clean",
                "dirty" if gb.dirty else "clean",
                "uncommitted changes differ (git.diff)",
            )
        )
    return out


def _env_view(rec: Record) -> dict[str, Any]:
    if rec.env is None:
        return dict.fromkeys(ENV_KEYS)
    view = {k: getattr(rec.env, k) for k in ENV_KEYS}
    view |= dict(rec.env.packages)
    dev = rec.env.device
    view |= {f"device.{k}" if k != "device" else "device": dev.get(k) for k in DEVICE_KEYS if dev}
    return view


def _model(a: Record, b: Record) -> list[Difference]:
    ma, mb = a.model, b.model
    if ma is None or mb is None:
        return []  # a stage that builds no model (data) has nothing to compare
    out = []
    class_a, class_b = ma.extra.get("class"), mb.extra.get("class")
    if class_a != class_b:
        out.append(Difference("model", "model/class", class_a, class_b))
    for d in _diff_maps("model", ma.params, mb.params, "model/"):
        out.append(Difference("model", d.key, d.a, d.b, d.note or "shape differs"))
    for k in ("trainable", "total"):
        if getattr(ma, k) != getattr(mb, k):
            diff = Difference(
                "model", f"model/{k}", getattr(ma, k), getattr(mb, k), "parameter count"
            )
            out.append(diff)
    return out


def diff_runs(
    a: Record,
    b: Record,
    git_diff_a: str | None = None,
    git_diff_b: str | None = None,
) -> list[Difference]:
    """Every input difference between two run records, grouped by kind in KINDS order."""
    out = _diff_maps(
        "run", {"paper": a.paper, "stage": a.stage}, {"paper": b.paper, "stage": b.stage}
    )
    out += _config(a, b)
    out += _diff_maps("overrides", _override_map(a.overrides), _override_map(b.overrides))
    out += _code_and_data(a, b)
    out += _git(a, b, git_diff_a, git_diff_b)
    out += [
        Difference("env", f"env.{d.key}", d.a, d.b)
        for d in _diff_maps("env", _env_view(a), _env_view(b))
    ]
    out += _model(a, b)
    return sorted(out, key=lambda d: (KINDS.index(d.kind), d.key))


def is_expected(d: Difference, expect: list[str]) -> bool:
    """KEY covers itself, keys below it (model -> model.hidden, model/net.0.weight) and a whole kind."""
    for e in expect:
        if d.key == e or d.key.startswith((e + ".", e + "/")) or d.kind == e:
            return True
    return False


def unexpected(diffs: list[Difference], expect: list[str]) -> list[str]:
    """Keys that differ but were not named by --expect, in order, without repeats."""
    seen: list[str] = []
    for d in diffs:
        if not is_expected(d, expect) and d.key not in seen:
            seen.append(d.key)
    return seen


def _fmt(v: Any) -> str:
    import json

    return "—" if v is None else json.dumps(v, default=str) if not isinstance(v, str) else v


def format_diff(
    diffs: list[Difference], id_a: str, id_b: str, outcomes: dict[str, tuple] | None = None
) -> str:
    """Plain text: one section per kind, `key: a -> b  (note)` per difference."""
    if not diffs:
        lines = [
            f"runs {id_a} and {id_b} have the same config, overrides, code, data, environment and model"
        ]
    else:
        lines = [
            f"a = {id_a}",
            f"b = {id_b}",
            f"{len(diffs)} difference{'s' if len(diffs) != 1 else ''}:",
        ]
        for kind in KINDS:
            mine = [d for d in diffs if d.kind == kind]
            if not mine:
                continue
            lines.append(f"{kind}:")
            for d in mine:
                lines.append(
                    f"  {d.key}: {_fmt(d.a)} -> {_fmt(d.b)}" + (f"  ({d.note})" if d.note else "")
                )
    for name, (va, vb) in (outcomes or {}).items():
        lines.append(f"outcome {name}: {_fmt(va)} | {_fmt(vb)}")
    return "\n".join(lines)


def outcomes(a: Record, b: Record) -> dict[str, tuple]:
    """Status and metrics side by side (results, not inputs: never counted as differences)."""
    out: dict[str, tuple] = {"status": (a.status, b.status)}
    ma, mb = a.metrics or {}, b.metrics or {}
    for k in sorted(set(ma) | set(mb)):
        out[k] = (ma.get(k), mb.get(k))
    return out


def code_text_diff(dir_a, dir_b, diffs: list[Difference], context: int = 3) -> str:
    """Unified diffs of the paper's code files that differ, from the copies each run keeps in
    its code/ folder (runs recorded before repro kept them: a note instead)."""
    import difflib
    from pathlib import Path

    out = []
    for d in diffs:
        if d.kind != "code":
            continue
        name = Path(d.key).name
        a, b = Path(dir_a) / "code" / name, Path(dir_b) / "code" / name
        if not a.exists() and not b.exists():
            out.append(
                f"# {d.key}: neither run kept a copy of it (recorded before runs kept code/)"
            )
            continue
        lines_a = a.read_text(encoding="utf-8").splitlines(keepends=True) if a.exists() else []
        lines_b = b.read_text(encoding="utf-8").splitlines(keepends=True) if b.exists() else []
        out += difflib.unified_diff(lines_a, lines_b, f"a/{d.key}", f"b/{d.key}", n=context)
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


# Recorded figures that measure the machine, not the result: they differ on every run.
TIMINGS = re.compile(r"(^|\.)(speed|steps_per_s|train_seconds|seconds|load_avg)(\.|$)|_s$")


def different_results(a: Record, b: Record) -> list[str]:
    """Recorded metrics of two runs that differ (numbers only; timings left out)."""
    ma, mb = flatten(a.metrics or {}), flatten(b.metrics or {})
    return [
        k
        for k in sorted(set(ma) & set(mb))
        if ma[k] != mb[k] and isinstance(ma[k], int | float) and not TIMINGS.search(k)
    ]


def same_inputs_different_results(diffs: list[Difference], a: Record, b: Record) -> list[str]:
    """Metrics that differ although no input does (config, code, data, environment, model): the
    run is not deterministic (a set iterated in preprocessing, threads, a GPU kernel...)."""
    if any(d.kind in ("config", "overrides", "code", "data", "env", "model") for d in diffs):
        return []
    return different_results(a, b)
