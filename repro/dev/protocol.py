"""The warm worker's socket: where it lives in the project, who may talk to it, and the JSON lines
that travel over it.

One connection is one request. The client sends one line, with its stdin, stdout and stderr
attached as file descriptors (SCM_RIGHTS), so the run prints straight to the client's terminal:

    client -> {"op": "stage", "stage": "shapes", "overrides": [...], "force": false, "paper": "p",
               "cwd": "...", "env": {...}, "argv": [...], "version": "...", "python": "<venv> (Python x.y.z)"}
    worker -> {"refused": "why"}                     the client runs the stage itself (cold)
    worker -> {"accepted": true}                     then, after a rebuild of stale warm data:
    child  -> {"started": pid}                       the run prints to the client's terminal
    client -> {"op": "interrupt"}                    Ctrl-C in the client (or the client vanished)
    child  -> {"exit": code}                         what `repro stage` would have exited with

{"op": "ping"} gets {"pid", "paper", "rss_mb", "cuda_initialized", "warm_data", "children"}.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from repro.project import Project

# The gates a researcher iterates on. `full` trains for minutes to hours (set-up is noise there),
# Lightning's ddp launcher re-executes sys.argv for extra ranks and `experiments` submits jobs:
# those always run in the command's own process.
SERVED_STAGES = ("data", "shapes", "overfit")
STD_FDS = 3  # stdin, stdout, stderr
_MAX_LINE = 4 * 2**20  # a request carries the client's environment: a few KiB in practice
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path on Linux, less the terminating NUL


def state_dir(project: Project) -> Path:
    return project.root / ".repro"


def socket_path(project: Project, paper: str) -> Path:
    return state_dir(project) / f"dev-{paper}.sock"


def lock_path(project: Project, paper: str) -> Path:
    return state_dir(project) / f"dev-{paper}.lock"


@contextmanager
def short_address(path: Path) -> Iterator[str]:
    """An address for `path` that fits sun_path: itself, or /proc/self/fd/<dir fd>/<name> when
    the project lives deep in the file system (both name the same socket file)."""
    if len(os.fsencode(str(path))) <= _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end (SO_PEERCRED: pid, uid, gid)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class Channel:
    """JSON lines over a connected Unix socket; the first line may carry file descriptors."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buf = b""

    def send(self, msg: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(msg).encode() + b"\n"
        if fds:
            sent = socket.send_fds(self.sock, [data], fds)
            data = data[sent:]
        if data:
            self.sock.sendall(data)

    def recv(self, maxfds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
        """The next message (None at end of stream) and the descriptors that came with it."""
        fds: list[int] = []
        while b"\n" not in self._buf:
            if maxfds and not fds:
                chunk, got, _flags, _addr = socket.recv_fds(self.sock, 65536, maxfds)
                fds += got
            else:
                chunk = self.sock.recv(65536)
            if not chunk:
                return None, fds
            self._buf += chunk
            if len(self._buf) > _MAX_LINE:
                raise ValueError(f"message longer than {_MAX_LINE} bytes")
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise ValueError(f"expected a JSON object, got {type(msg).__name__}")
        return msg, fds
