"""`repro predict`: raw examples in the paper's own input format through the encode and collate that
training used, with the data state fitted in training, and a trained checkpoint; out come
predictions in the task's terms (class names and probabilities, values, scores), as JSON lines or
TSV."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from repro.errors import ReproError

FORMATS = ("jsonl", "tsv")
# Inputs of at least this many examples get a progress bar (on stderr): below it the whole
# command takes about as long as the bar would take to draw.
LONG_INPUT = 1000


def read_examples(dm, source: str) -> list[dict]:
    """The raw examples of a file (or "-": standard input) in the paper's own input format, read
    by the paper's read_inputs (labels optional)."""
    if source != "-":
        path = Path(source)
        if not path.is_file():
            found = "a directory" if path.is_dir() else "no file"
            raise ReproError(
                f"--input {source}: expected a file of examples in the paper's input format, "
                f"found {found}"
            )
        return dm.read_inputs(path)
    data = sys.stdin.buffer.read()
    with tempfile.TemporaryDirectory(prefix="repro-predict-") as tmp:
        path = Path(tmp) / "stdin"  # a fresh private folder: nothing else can be there
        path.write_bytes(data)
        return dm.read_inputs(path)


def predict(trained, examples: list[dict], console=None) -> list[dict[str, Any]]:
    """One record per example, in order: its position `n` (from 1), its `id`, `group` and
    `label` when the input has them, and the task's description of the model's output."""
    from repro.train.evaluate import encoded_loader, model_forward, outputs

    task, dm = trained.task, trained.dm
    bar = progress_bar(console, len(examples))
    try:
        encoding = bar.add_task("encoding", total=len(examples)) if bar else None
        items = []
        for ex in examples:
            items.append(dm.encode(task.placeholder_label(ex)))
            if bar:
                bar.advance(encoding)
        loader = encoded_loader(dm, items)
        running = bar.add_task("predicting", total=len(loader)) if bar else None
        described: list[dict[str, Any]] = []

        def keep(out, batch) -> None:
            described.extend(task.describe(out, batch))
            if bar:
                bar.advance(running)

        outputs(model_forward(trained.model), loader, task, metrics=False, on_batch=keep)
    finally:
        if bar:
            bar.stop()
    records = []
    for i, (ex, said) in enumerate(zip(examples, described, strict=True)):
        rec: dict[str, Any] = {"n": i + 1}
        rec |= {k: ex[k] for k in ("id", "group", "label") if ex.get(k) is not None}
        rec |= dm.present_prediction(said, ex)
        records.append(rec)
    return records


def progress_bar(console, n: int):
    """A started rich progress bar (transient, on `console`) for an input of n examples; None for
    a short input or no console."""
    if console is None or n < LONG_INPUT:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    bar.start()
    return bar


def output_format(output: Path | None, fmt: str | None) -> str:
    """--format, else the output file's suffix (.tsv), else JSON lines."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ReproError(f"--format: expected one of {', '.join(FORMATS)}, found {fmt!r}")
        return fmt
    return "tsv" if output is not None and output.suffix.lower() == ".tsv" else "jsonl"


def as_text(records: list[dict[str, Any]], fmt: str) -> str:
    """JSON lines (one object per example), or TSV: a header, then a row per example with nested
    values flattened (probabilities.paraphrase) and lists as JSON."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    rows = [_flat(r) for r in records]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["\t".join(columns)]
    lines += ["\t".join(_cell(row.get(c)) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def _flat(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return json.dumps(v, ensure_ascii=False)
    return " ".join(str(v).split("\t")).replace("\n", " ")


def write(records: list[dict[str, Any]], output: Path | None, fmt: str) -> None:
    """To `output` (written atomically: a symlink there is replaced, never written through), or
    to standard output."""
    from repro.storage import atomic_write

    text = as_text(records, fmt)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    atomic_write(output, text, "the predictions")
