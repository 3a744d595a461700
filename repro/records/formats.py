"""Records written by earlier versions of repro, read in the current shape: in memory, when read
(repro/records/store.py), so `judge`, `report`, `status` and `show` all see the same thing; the file
itself is never rewritten (issue 20).

The formats, oldest first (fixtures of each: tests/fixtures/old_records/):

- up to 039d4c6: `full` kept its numbers in the verdict's evidence (`seeds`, `per_seed`, `runs`,
  `summary`, `dataset`, `baseline`) and the learning rates in a top-level `lr_by_seed`; its
  `metrics` were only the flat means (`{"test/acc": 97.5, ...}`). Read as FullMetrics below.
  Those records have no split sizes, so the majority-class check cannot be judged again
  (`repro judge` says so). The other stages' metrics then were `{}` (data, shapes) or flat
  overfit numbers without the batch size and learning rate: they stay as they are, and their
  readers say the figure is unavailable (repro/gates/metrics.py: load_metrics gives None).
- from 986e3ff: typed metrics (repro/gates/metrics.py); `majority` and `eval_sizes` were added
  later with empty defaults, so earlier typed records read as they are.
"""

from __future__ import annotations

from typing import Any

# The TargetResult fields a 039d4c6 target check's evidence held, under the name it used.
_TARGET_FIELDS = {
    "metric": "metric",
    "paper": "paper",
    "tolerance": "tolerance",
    "ours_mean": "ours_mean",
    "ours_std": "ours_std",
    "n_seeds": "n_seeds",
    "gap": "gap",
    "label": "label",
    "where": "where",
    "spread": "paper_spread",
}


def upgrade(record: Any) -> Any:
    """`record` in the current shape; a record already in it (or not a record) as it is."""
    if not isinstance(record, dict) or record.get("stage") != "full":
        return record
    metrics = _flat_full_metrics(record)
    if metrics is None:
        return record
    return {**record, "metrics": metrics}


def is_flat_full(record: dict[str, Any]) -> bool:
    """Whether a full record keeps its numbers in the 039d4c6 way (flat means in `metrics`)."""
    metrics, evidence = record.get("metrics"), _evidence(record)
    return (
        isinstance(metrics, dict)
        and "per_seed" not in metrics
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values())
        and isinstance(evidence.get("per_seed"), list)
        and isinstance(evidence.get("seeds"), list)
    )


def _evidence(record: dict[str, Any]) -> dict[str, Any]:
    verdict = record.get("verdict")
    evidence = verdict.get("evidence") if isinstance(verdict, dict) else None
    if not isinstance(evidence, dict):
        evidence = record.get("evidence")
    return evidence if isinstance(evidence, dict) else {}


def _flat_full_metrics(record: dict[str, Any]) -> dict[str, Any] | None:
    """FullMetrics (as a plain dict) from a 039d4c6 full record; None when it is not one, or
    lacks what FullMetrics needs."""
    if not is_flat_full(record):
        return None
    ev = _evidence(record)
    try:
        summary = ev.get("summary") or {}
        runs = [r for r in ev.get("runs") or [] if isinstance(r, dict)]
        lr_by_seed = record.get("lr_by_seed") or {str(r["seed"]): r["lr"] for r in runs}
        checks = (record.get("verdict") or {}).get("checks") or []
        targets = [
            {"name": c["name"]} | {k: c["evidence"].get(old) for k, old in _TARGET_FIELDS.items()}
            for c in checks
            if isinstance(c, dict)
            and isinstance(c.get("evidence"), dict)
            and "label" in c["evidence"]
        ]
        return {
            "seeds": list(ev["seeds"]),
            "per_seed": list(ev["per_seed"]),
            "mean": {k: v["mean"] for k, v in summary.items()} or dict(record["metrics"]),
            "std": {k: v.get("std") for k, v in summary.items()},
            "targets": targets,
            "lr_by_seed": {str(k): v for k, v in lr_by_seed.items()},
            "epochs": sum(int(r.get("epochs") or 0) for r in runs),
            "train_seconds": sum(float(r.get("train_seconds") or 0.0) for r in runs),
            "dataset": ev.get("dataset"),
            "baseline": ev.get("baseline"),
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
