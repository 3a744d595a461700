"""Fingerprints: what a stage's verdict depends on (paper code, config, data), hashed per stage.

A stage's fingerprint covers its own inputs and every earlier stage's, so a change to the model
code leaves `data` valid and makes `shapes` and every later stage STALE.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from repro import __version__
from repro.config.compose import Resolved
from repro.config.schema import DataConfig
from repro.gates import STAGES

# Config sections each stage adds to what earlier stages depend on. `seed` is full's: seeds vary
# the model's randomness, and the milestones before it check code, config and data, not a seed.
# The paper's targets are not here: they are part of the verdict (`judged` below), so changing a
# target or its tolerance re-judges (`repro judge`) instead of retraining.
# The data stage's verdict is about which examples there are, so the data section's loader keys
# (batch size, workers: DataConfig.LOADER_KEYS) are shapes', which serves real batches of that
# size: `repro stage shapes data.batch_size=64` does not run the data gate again.
LOADERS = tuple(f"data.{k}" for k in DataConfig.LOADER_KEYS)
STAGE_CONFIG = {
    "data": ("data", "stage.data"),
    "shapes": (
        *LOADERS,
        "model",
        "init",
        "deterministic",
        "stage.shapes",
        "paper.expected_params",
        "paper.invariances",  # exact ones are checked in shapes; all are measured in full
    ),
    "overfit": ("optim", "stage.overfit"),
    "full": ("seed", "seeds", "schedule", "lr_finder", "trainer", "stage.full", "paper.baseline"),
    "experiments": ("paper.experiments", "stage.experiments"),
}
# The parts each stage adds; a stage's fingerprint covers its own and every earlier stage's.
STAGE_INPUTS = {
    "data": ("fingerprint_scheme", "code.data", "data_files", "config.data"),
    "shapes": ("code.model", "config.shapes"),
    "overfit": ("config.overfit",),
    "full": ("config.full",),
    "experiments": ("config.experiments",),
}
# Bumped when what a part covers changes (2: the loader keys moved from data to shapes): a
# fingerprint of another scheme names "fingerprint_scheme" among what changed, not a config
# section the user did not touch.
SCHEME = 2
JUDGED = {"full": "paper.targets"}  # what a stage's verdict (not its training) depends on
CONTENT_HASH_LIMIT = 64 * 2**20  # larger data files are fingerprinted by size + mtime


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    if not path.exists():
        return "missing"
    if path.is_dir():  # the data gate reports a directory given for a file; status must not crash
        return "a directory"
    st = path.stat()
    if st.st_size > CONTENT_HASH_LIMIT:
        return f"size={st.st_size},mtime={st.st_mtime_ns}"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def code_files(paper_dir: Path) -> dict[str, list[Path]]:
    """data.py and the paper's modules it imports are the data stage's code; every other
    top-level .py of the paper is the model's."""
    py = sorted(p for p in paper_dir.glob("*.py") if p.name != "__init__.py")
    data = data_code({p.name: p.read_bytes() for p in py}, paper_dir.name)
    return {
        "data": [p for p in py if p.name in data],
        "model": [p for p in py if p.name not in data],
    }


def data_code(sources: dict[str, bytes], folder: str) -> set[str]:
    """data.py and the paper's own top-level modules it imports, directly or through one another
    (papers.<folder>.x or relative imports, read from the source): an edit to any of them (BiMPM's
    readers.py) must make the data stage stale, not only the model's stages."""
    seen: set[str] = set()
    todo = ["data.py"]
    while todo:
        name = todo.pop()
        if name in seen or name not in sources:
            continue
        seen.add(name)
        todo += [m for m in _paper_imports(sources[name], folder) if m in sources]
    return seen


def _paper_imports(source: bytes, folder: str) -> list[str]:
    """File names (x.py) of the modules of papers.<folder> that `source` imports."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # the gate that imports it reports the error
        return []
    package = ["papers", folder]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            parts = [a.name.split(".") for a in node.names]
            out += [p[2] for p in parts if p[:2] == package and len(p) > 2]
        elif isinstance(node, ast.ImportFrom):
            mod = (node.module or "").split(".") if node.module else []
            if node.level == 0 and mod[:2] != package:
                continue
            inside = mod[2:] if node.level == 0 else mod
            out += [inside[0]] if inside else [a.name for a in node.names]
    return [f"{m}.py" for m in out]


def fingerprint(
    resolved: Resolved, paper_dir: Path, data_files: list[str | Path], code: Any = None
) -> dict[str, Any]:
    """{"stages": {stage: hash}, "parts": {...}} for the current code, config and data files.
    `code`: the paper's files as a run imports them (repro/paper_code.py: PaperCode), hashed
    instead of the files on disk, which may have changed since they were read."""
    if code is not None:
        digests = code.digests()
        data = data_code(code.sources, paper_dir.name)
        code_data = {n: d for n, d in digests.items() if n in data}
        code_model = {n: d for n, d in digests.items() if n not in data}
    else:
        files = code_files(paper_dir)
        code_data = {p.name: file_digest(p) for p in files["data"]}
        code_model = {p.name: file_digest(p) for p in files["model"]}
    parts = {
        "code.data": code_data,
        "code.model": code_model | {"repro": __version__},
        "data_files": {str(p): file_digest(Path(p)) for p in sorted(map(str, data_files))},
    }
    typed = asdict(resolved.cfg)  # every key present, defaults of optional paper keys filled in
    for stage, keys in STAGE_CONFIG.items():
        parts[f"config.{stage}"] = {k: _lookup(typed, k) for k in keys}
    data = parts["config.data"]["data"]  # its loader keys are shapes' (LOADERS above)
    parts["config.data"]["data"] = {
        k: v for k, v in data.items() if k not in DataConfig.LOADER_KEYS
    }
    parts["fingerprint_scheme"] = SCHEME
    stages = {stage: _sha({k: parts[k] for k in inputs_of(stage)}) for stage in STAGES}
    prefix = f"papers/{paper_dir.name}/"
    return {
        "stages": stages,
        "parts": {k: _sha(v) for k, v in parts.items()},
        "files": {
            **{prefix + n: h for n, h in parts["code.data"].items()},
            **{prefix + n: h for n, h in parts["code.model"].items() if n != "repro"},
            **parts["data_files"],
        },
        "judged": {stage: _sha(_lookup(typed, key)) for stage, key in JUDGED.items()},
        "data_code": sorted(prefix + n for n in code_data),
    }


def inputs_of(stage: str) -> list[str]:
    """The fingerprint parts a stage depends on: its own and every earlier stage's."""
    return [p for s in STAGES[: STAGES.index(stage) + 1] for p in STAGE_INPUTS[s]]


def changed_parts(old: dict[str, Any], new: dict[str, Any], stage: str | None = None) -> list[str]:
    """Names of the parts (and files) that differ between two fingerprints; with `stage`, only
    those that stage depends on (e.g. `code.model: papers/x/model.py` for shapes)."""
    keep = set(inputs_of(stage)) if stage else None
    parts_old, parts_new = old.get("parts", {}), new.get("parts", {})
    out = [
        k
        for k in sorted(set(parts_old) | set(parts_new))
        if parts_old.get(k) != parts_new.get(k) and (keep is None or k in keep)
    ]
    files_old, files_new = old.get("files", {}), new.get("files", {})
    data = set(old.get("data_code", [])) | set(new.get("data_code", []))
    for f in sorted(set(files_old) | set(files_new)):
        if files_old.get(f) == files_new.get(f):
            continue
        part = _part_of_file(f, data)
        if keep is None or part in keep:
            out.append(f)
    return out


def _part_of_file(path: str, data_code: set[str]) -> str:
    """Which part a file of the fingerprint belongs to: the paper's data code (data.py and the
    files a fingerprint lists under data_code), its model code, or data."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "papers" and parts[2].endswith(".py"):
        return "code.data" if parts[2] == "data.py" or path in data_code else "code.model"
    return "data_files"
