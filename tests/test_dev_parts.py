"""Tests for the parts of repro/dev/ that need no worker: fresh imports and hash-checked bytecode,
the socket protocol, the file watcher, and forking a process that already ran torch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from repro.dev.fresh import forget_paper_modules, pin_bytecode_to_source
from repro.dev.protocol import Channel, short_address
from repro.dev.watch import Watcher
from repro.project import Project


# ---- fresh.py -------------------------------------------------------------------------------
def _write_same_size(path: Path, text: str, mtime_s: int) -> None:
    path.write_text(text)
    os.utime(path, (mtime_s, mtime_s))


def test_two_same_size_saves_in_one_second_run_the_newer_code(tmp_path, monkeypatch):
    """Without the hash-checked pyc Python would reuse the older bytecode (same mtime, same size)."""
    pkg = tmp_path / "papers" / "lab1"
    pkg.mkdir(parents=True)
    (tmp_path / "papers" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    model = pkg / "model.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    now = int(time.time())
    try:
        _write_same_size(model, "VALUE = 1\n", now)
        import papers.lab1.model as first  # noqa: F401  writes a timestamp pyc

        assert first.VALUE == 1
        _write_same_size(model, "VALUE = 2\n", now)  # same second, same size
        forget_paper_modules("papers.lab1")
        pin_bytecode_to_source(pkg)
        import papers.lab1.model as second

        assert second.VALUE == 2
        _write_same_size(model, "VALUE = 3\n", now)  # and again: the pyc stays hash-checked
        forget_paper_modules("papers.lab1")
        pin_bytecode_to_source(pkg)
        import papers.lab1.model as third

        assert third.VALUE == 3
    finally:
        for name in [m for m in sys.modules if m == "papers" or m.startswith("papers.")]:
            del sys.modules[name]


def test_forget_keeps_the_data_modules():
    sys.modules["papers.lab2"] = type(sys)("papers.lab2")
    sys.modules["papers.lab2.data"] = type(sys)("papers.lab2.data")
    sys.modules["papers.lab2.model"] = type(sys)("papers.lab2.model")
    try:
        gone = forget_paper_modules("papers.lab2", keep={"papers.lab2", "papers.lab2.data"})
        assert gone == ["papers.lab2.model"]
        assert "papers.lab2.data" in sys.modules
    finally:
        for name in ("papers.lab2", "papers.lab2.data", "papers.lab2.model"):
            sys.modules.pop(name, None)


# ---- protocol.py ----------------------------------------------------------------------------
def test_a_message_carries_file_descriptors_and_long_paths_still_bind(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "dev-toy.sock"
    assert len(str(path)) > 107
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with short_address(path) as address:
        server.bind(address)
    server.listen(1)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with short_address(path) as address:
        client.connect(address)
    conn, _ = server.accept()
    r, w = os.pipe()
    try:
        Channel(client).send({"op": "stage", "env": {"X": "y" * 100_000}}, [w])
        msg, fds = Channel(conn).recv(maxfds=3)
        assert msg["op"] == "stage" and len(msg["env"]["X"]) == 100_000
        assert len(fds) == 1
        os.write(fds[0], b"through the passed descriptor")
        os.close(fds[0])
        assert os.read(r, 100) == b"through the passed descriptor"
        client.close()
        assert Channel(conn).recv() == (None, [])  # end of stream
    finally:
        for s in (client, conn, server):
            s.close()
        os.close(r)
        os.close(w)


# ---- watch.py -------------------------------------------------------------------------------
def test_the_watcher_reports_a_settled_content_change_once(project: Project):
    paper = project.paper_dir("toy")
    watcher = Watcher(project, "toy")
    assert watcher.poll() is None
    (paper / "model.py").touch()  # new mtime, same content: nothing to run
    assert watcher.poll() is None and watcher.poll() is None
    (paper / "model.py").write_text((paper / "model.py").read_text() + "# edit\n")
    assert watcher.poll() is None  # first sight: wait for the writes to settle
    assert watcher.poll() == [paper / "model.py"]
    assert watcher.poll() is None
    (paper / "tests" / "test_toy_extra.py").write_text("x = 1\n")  # tests do not run gates
    conf = project.conf_dir / "paper" / "toy.yaml"
    conf.write_text(conf.read_text() + "# edit\n")
    watcher.poll()
    assert watcher.poll() == [conf]


# ---- forking a process that ran torch ----------------------------------------------------------
FORK = """
import os, sys, time
from repro.dev.warm import import_heavy
threads = import_heavy()           # the worker's set-up: torch on one thread
import torch
x = torch.randn(512, 512); (x @ x).sum()   # the parent computes (as building data does)
pid = os.fork()
if pid == 0:
    torch.set_num_threads(threads)    # what child.py does
    lstm = torch.nn.LSTM(64, 64)
    out, _ = lstm(torch.randn(20, 8, 64)); out.sum().backward()
    y = torch.randn(512, 512); (y @ y).sum()
    print("child", torch.get_num_threads(), flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("parent", torch.get_num_threads(), threads, os.waitstatus_to_exitcode(status))
"""


def test_a_child_forked_from_the_warm_set_up_runs_a_forward_and_backward_pass():
    """GNU OpenMP is not fork-safe: a parent that ran a parallel region on two threads leaves a
    child that hangs in its first one (measured). The worker's parent stays on one thread."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORK)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["child", "2", "parent", "1", "2", "0"]


@pytest.mark.parametrize("var", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_the_child_takes_its_thread_count_from_the_clients_environment(var, monkeypatch):
    import torch

    from repro.dev.child import _set_threads

    before = torch.get_num_threads()
    try:
        _set_threads({var: "1"}, default=2)
        assert torch.get_num_threads() == 1
        _set_threads({}, default=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---- worker.py: what it declines -------------------------------------------------------------
def test_the_worker_declines_what_must_run_in_the_commands_own_process(project):
    from rich.console import Console

    import repro
    from repro.dev.worker import Worker, _python

    worker = Worker(project, "toy", Console())
    good = {
        "op": "stage",
        "paper": "toy",
        "stage": "shapes",
        "version": repro.__version__,
        "python": _python(),
    }
    a, b = socket.socketpair(socket.AF_UNIX)
    try:
        assert worker._refusal(good, a, [0, 1, 2]) is None
        cases = {
            "paper": ("other", "this worker serves toy, not other"),
            "stage": ("full", "full runs in its own process"),
            "version": ("0.0.1", "repro 0.0.1 asked"),
            "python": ("/elsewhere (Python 3.0)", "this command in /elsewhere"),
        }
        for key, (value, why) in cases.items():
            assert why in worker._refusal({**good, key: value}, a, [0, 1, 2])
        assert "not a stage request" in worker._refusal(good, a, [0])
    finally:
        a.close()
        b.close()
