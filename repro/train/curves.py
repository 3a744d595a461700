"""metrics.csv across a resume, and the training curves plotted from it."""

from __future__ import annotations

import csv
from pathlib import Path

ASIDE = "metrics.before_resume.csv"


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    keys = sorted({k for r in rows for k in r})
    keys = [k for k in ("epoch", "step") if k in keys] + [
        k for k in keys if k not in ("epoch", "step")
    ]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _epoch_of(row: dict[str, str]) -> float:
    try:
        return float(row.get("epoch") or "nan")
    except ValueError:
        return float("nan")


def keep_rows_before_resume(out_dir: Path, ckpt_epoch: int) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv when it starts (lightning_fabric
    csv_logs._check_log_dir_exists, Lightning 2.6.6): move the rows up to the checkpoint's epoch
    aside, to be put back in front of the resumed rows by `merge_resumed_rows`."""
    aside = out_dir / ASIDE
    rows = read_rows(aside) + read_rows(out_dir / "metrics.csv")
    kept = [r for r in rows if not _epoch_of(r) > ckpt_epoch]  # NaN (no epoch) is kept
    write_rows(aside, kept)
    (out_dir / "metrics.csv").unlink(missing_ok=True)


def merge_resumed_rows(out_dir: Path) -> None:
    aside = out_dir / ASIDE
    if not aside.exists():
        return
    write_rows(out_dir / "metrics.csv", read_rows(aside) + read_rows(out_dir / "metrics.csv"))
    aside.unlink()


def plot_curves(rows: list[dict[str, str]], path: Path, metric: str = "val/acc") -> bool:
    """Loss and the task's main validation metric (`metric`: val/acc, val/map, val/r2 ...) per
    epoch from the rows logged while fitting; False when there is none.

    Call it before the best checkpoint is re-validated: that extra validation is logged as one
    more row at the last epoch and is not a point of the training curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        for key in ("train/loss_epoch", "val/loss", metric):
            if r.get(key):
                series.setdefault(key, []).append((float(r["epoch"]), float(r[key])))
    if not series:
        return False
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key in ("train/loss_epoch", "val/loss"):
        if key in series:
            a1.plot(*zip(*series[key], strict=True), marker="o", label=key.replace("_epoch", ""))
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend()
    if metric in series and metric != "val/loss":
        a2.plot(*zip(*series[metric], strict=True), marker="o", color="tab:green", label=metric)
        a2.set_xlabel("epoch")
        a2.set_ylabel(metric.partition("/")[2])
        a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
