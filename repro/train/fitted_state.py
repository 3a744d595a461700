"""A run's fitted data state: what the paper's datamodule fitted on the training split (vocabulary,
character table, statistics), saved beside the checkpoint as plain data so that a run directory
alone encodes new inputs exactly as training did (`repro predict`, `repro eval`).

The file is torch.save of tensors, strings, numbers, lists and dicts, read back with
weights_only=True: nothing in it is ever executed (no pickle of objects)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from repro.errors import PaperError, ReproError
from repro.storage import atomic_write

FILE = "fitted_state.pt"
FORMAT = 1  # bump with a migration (and a test on the fixtures) when the layout changes


def save_fitted_state(dm, out_dir: Path) -> Path | None:
    """Write dm.fitted_state() to out_dir/fitted_state.pt (None, no file: the paper's datamodule
    does not provide one). A state that is not plain data is a PaperError naming the method."""
    state = dm.fitted_state()
    if state is None:
        return None
    payload: dict[str, Any] = {
        "format": FORMAT,
        "datamodule": type(dm).__name__,
        "num_classes": dm.num_classes,  # build() may set it (a language model's vocabulary)
        "class_names": list(dm.class_names),
        "state": state,
    }
    buf = io.BytesIO()
    try:  # refuse now what could not be saved, or read back later
        torch.save(payload, buf)
        data = buf.getvalue()
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:
        raise PaperError(
            f"{type(dm).__name__}.fitted_state(): expected plain data (tensors, strings, numbers, "
            f"lists and dicts of them: loadable with weights_only=True), found {_first_line(e)}; "
            "return plain values (e.g. a vocabulary as its list of strings)"
        ) from e
    path = Path(out_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)  # seed_<s>/ of a run with several seeds
    atomic_write(path, data, "the datamodule's fitted state")
    return path


def read_fitted_state(path: Path) -> dict[str, Any]:
    """The payload of a fitted-state file; a ReproError naming the file when it is unreadable."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not ours, or holding objects the weights-only load refuses
        raise ReproError(
            f"{path}: expected the fitted state repro saved with the run (plain data), found an "
            f"unreadable file ({_first_line(e)}); copy the run directory again"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state" not in payload:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ReproError(
            f"{path}: expected fitted-state format {FORMAT}, found {found!r}; this repro cannot "
            "read it (a newer repro wrote it?)"
        )
    return payload


def restore_fitted_state(dm, out_dir: Path) -> bool:
    """Load out_dir/fitted_state.pt into `dm` (in place of load_examples and build); False when the
    run has no such file."""
    path = Path(out_dir) / FILE
    if not path.is_file():
        return False
    payload = read_fitted_state(path)
    dm.num_classes = payload["num_classes"]
    dm.class_names = list(payload["class_names"])
    dm.load_fitted_state(payload["state"])
    return True


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]
