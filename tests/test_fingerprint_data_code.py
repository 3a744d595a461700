"""The data stage's code is data.py and the paper's modules it imports (issue 19: BiMPM's readers
moved out of data.py must still make `data` stale when edited)."""

from __future__ import annotations

from pathlib import Path

from repro.fingerprint import changed_parts, code_files, data_code

BIMPM = Path(__file__).resolve().parents[1] / "papers" / "bimpm"


def test_data_code_follows_the_paper_imports_of_data_py_transitively():
    sources = {
        "data.py": b"from papers.toy import readers\nimport papers.toy.vocab as v\n",
        "readers.py": b"from .tokens import split\nfrom papers.other import x\n",
        "tokens.py": b"import os\n",
        "vocab.py": b"",
        "model.py": b"from papers.toy import layers\n",
        "layers.py": b"",
        "broken.py": b"def (",
    }
    assert data_code(sources, "toy") == {"data.py", "readers.py", "tokens.py", "vocab.py"}
    assert data_code({"model.py": b""}, "toy") == set()  # no data.py: no data code


def test_bimpm_readers_are_data_code_and_the_model_files_are_not():
    files = code_files(BIMPM)
    data = {p.name for p in files["data"]}
    assert {"data.py", "readers.py"} <= data
    assert {"model.py", "fast_matching.py", "fast_recurrence.py"}.isdisjoint(data)


def test_an_edited_data_module_is_named_under_code_data():
    old = {
        "parts": {"code.data": "a"},
        "files": {"papers/p/readers.py": "1", "papers/p/model.py": "1"},
        "data_code": ["papers/p/data.py", "papers/p/readers.py"],
    }
    new = {
        **old,
        "parts": {"code.data": "b"},
        "files": {**old["files"], "papers/p/readers.py": "2"},
    }
    assert changed_parts(old, new, "data") == ["code.data", "papers/p/readers.py"]
    # a record from before data_code was recorded: data.py alone is the data code
    legacy = {k: v for k, v in old.items() if k != "data_code"}
    moved = {**legacy, "files": {**legacy["files"], "papers/p/readers.py": "2"}}
    assert changed_parts(legacy, moved, "data") == []
