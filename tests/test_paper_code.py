"""A run is pinned to the code it ran (issue 20): the paper's files are read once, hashed, and
imported from those bytes; a stage's record (fingerprint, `code/`) names exactly that code, even
when the file is replaced while the command runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from repro.paper_code import PaperCode, digest, uninstall
from repro.records import list_runs
from tests.configs import shrink_toy


@pytest.fixture
def pinned_toy(project):
    yield project
    uninstall("toy")


def test_the_pinned_bytes_are_what_is_imported_and_hashed(pinned_toy, tmp_path):
    project = pinned_toy
    project.activate()
    model = project.paper_dir("toy") / "model.py"
    original = model.read_bytes()
    code = PaperCode.read(project.paper_dir("toy"))
    code.install()
    model.write_bytes(original + b"\nSWAPPED = True\n")  # replaced after it was read
    import importlib

    mod = importlib.import_module("papers.toy.model")
    assert not hasattr(mod, "SWAPPED")  # the bytes read, not the file now
    assert mod.__file__ == str(model)
    assert code.digests()["model.py"] == digest(original)
    assert "__init__.py" not in code.digests()

    # a new copy drops the module loaded from other bytes; the next import runs the new file
    PaperCode.read(project.paper_dir("toy")).install()
    assert "papers.toy.model" not in sys.modules
    assert importlib.import_module("papers.toy.model").SWAPPED is True


def test_identical_bytes_keep_their_module(pinned_toy):
    import importlib

    project = pinned_toy
    project.activate()
    PaperCode.read(project.paper_dir("toy")).install()
    first = importlib.import_module("papers.toy.data")
    assert PaperCode.read(project.paper_dir("toy")).install() == []
    assert importlib.import_module("papers.toy.data") is first


# Appended to the toy paper's model.py: the first build of the model (inside the shapes run that
# overfit starts first) replaces model.py on disk with a version whose model has 7 more
# parameters, as an editor saving mid-run would.
SWAP = r"""

_build_original = build_model
_SWAP = __import__("pathlib").Path(__file__)


def build_model(cfg: ModelConfig, *, n_features: int, num_classes: int):
    text = _SWAP.read_text()
    if text.endswith("\n_SWAPPED = 0\n"):  # the first build: save the other version
        _SWAP.write_text(text.removesuffix("0\n") + "1\n")
    model = _build_original(cfg, n_features=n_features, num_classes=num_classes)
    if _SWAPPED:
        import torch

        model.extra = torch.nn.Linear(3, 2)  # 8 more parameters in the file that did not run
    return model


_SWAPPED = 0
"""


def _repro(root, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REPRO_DEBUG")}
    return subprocess.run(
        [sys.executable, "-m", "repro", *args],
        cwd=root,
        env=env | {"COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_model_replaced_while_its_prerequisite_runs_is_not_what_the_record_names(project, cli):
    """The case of issue 20: `repro stage overfit` with shapes STALE; model.py replaced after
    shapes started; overfit trained the old model but recorded the new file, and status showed
    overfit PASS on the current code."""
    shrink_toy(project)
    code, out, err = cli("stage", "data")
    assert code == 0, out + err
    model = project.paper_dir("toy") / "model.py"
    model.write_text(model.read_text() + SWAP)
    ran = model.read_bytes()  # what the command reads, before the swap

    # as a user runs it: one process, shapes first (STALE), then overfit
    r = _repro(project.root, "stage", "overfit")
    assert r.returncode == 0, r.stdout + r.stderr
    assert model.read_bytes().endswith(b"\n_SWAPPED = 1\n")  # replaced mid-command
    for stage in ("shapes", "overfit"):
        (run,) = list_runs(project.runs_dir, "toy", stage)
        assert run.path("code/model.py").read_bytes() == ran, stage  # the code that ran
        files = run.record.fingerprint.files
        assert files["papers/toy/model.py"] == digest(ran), stage
        assert "extra.weight" not in run.record.model.params, stage
    out = _repro(project.root, "status").stdout
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 4}
    assert "STALE" in rows["shapes"] and "STALE" in rows["overfit"], out  # not PASS on new code
    assert "code.model" in rows["overfit"] or "model.py" in rows["overfit"]


def test_a_ddp_rank_and_an_experiments_job_import_the_runs_code(pinned_toy, tmp_path):
    """Processes that join a run import its `code/` snapshot, not the files as they are now."""
    import importlib

    project = pinned_toy
    project.activate()
    snapshot = tmp_path / "code"
    snapshot.mkdir()
    for p in project.paper_dir("toy").glob("*.py"):
        (snapshot / p.name).write_bytes(p.read_bytes())
    (snapshot / "model.py").write_bytes((snapshot / "model.py").read_bytes() + b"\nFROM_RUN = 1\n")
    code = PaperCode.from_snapshot(snapshot, project.paper_dir("toy"))
    code.install()
    assert importlib.import_module("papers.toy.model").FROM_RUN == 1
    assert json.loads(json.dumps(code.digests()))  # plain data: recorded as it is
