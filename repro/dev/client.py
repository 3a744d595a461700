"""`repro stage` handing its request to the paper's warm worker, when one is up (repro/dev/).

Cheap on purpose: no worker costs one stat() of the socket path; the client imports neither
torch nor Lightning, so a warm run costs the CLI's own start-up plus the gate.
"""

from __future__ import annotations

import os
import socket
import sys

from repro import __version__
from repro.dev.protocol import SERVED_STAGES, STD_FDS, Channel, peer_uid, short_address, socket_path
from repro.project import Project
from repro.terminal import safe

ACCEPT_TIMEOUT_S = 10.0  # the worker answers on reading the request (~ms), unless it is busy


def hand_to_worker(
    project: Project, paper: str, stage: str, overrides: list[str], force: bool
) -> int | None:
    """Run `stage` in the paper's warm worker, printing to this terminal; returns the exit code
    `repro stage` would have, or None when no worker is up or it declines (run it here then)."""
    if stage not in SERVED_STAGES:
        return None
    sock = _connect(project, paper)
    if sock is None:
        return None
    with sock:
        channel = Channel(sock)
        fds = _std_fds()
        try:
            channel.send(_request(paper, stage, overrides, force), fds)
            first = _first_reply(sock, channel)
        except (OSError, ValueError):
            return None  # it went away before taking the request: nothing ran
        except KeyboardInterrupt:  # before the run started: it stops as soon as it starts
            _interrupt(channel)
            return _wait(channel, None, interrupted=True)
        finally:
            for fd in fds[STD_FDS:]:
                os.close(fd)
        if first is None or "refused" in first:
            if first is not None:
                print(
                    f"repro dev declined: {safe(first['refused'])}; running here", file=sys.stderr
                )
            return None
        return _wait(channel, None)


def _connect(project: Project, paper: str) -> socket.socket | None:
    """A connection to our own user's worker, None when there is none (or a stale socket)."""
    path = socket_path(project, paper)
    try:
        if os.stat(path).st_uid != os.getuid():
            return None
    except OSError:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with short_address(path) as address:
            sock.connect(address)
        if peer_uid(sock) != os.getuid():
            raise ConnectionRefusedError("another user's process")
    except OSError:  # refused: a socket left by a killed worker; nothing listens on it
        sock.close()
        return None
    return sock


def _std_fds() -> list[int]:
    """stdin, stdout, stderr, with /dev/null standing in for a closed one (opened ones last)."""
    fds, opened = [], []
    for fd in range(STD_FDS):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            opened.append(os.open(os.devnull, os.O_RDWR))
            fds.append(opened[-1])
    return fds + opened


def _request(paper: str, stage: str, overrides: list[str], force: bool) -> dict:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    return {
        "op": "stage",
        "paper": paper,
        "stage": stage,
        "overrides": list(overrides),
        "force": force,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "argv": list(sys.argv),
        "version": __version__,
        "python": f"{os.path.realpath(sys.prefix)} (Python {sys.version.split()[0]})",
    }


def _first_reply(sock: socket.socket, channel: Channel) -> dict | None:
    """{"accepted": true} or {"refused": why}, sent as soon as the worker reads the request; a
    worker busy elsewhere (rebuilding its data for another request) is not waited for."""
    sock.settimeout(ACCEPT_TIMEOUT_S)
    try:
        msg, _ = channel.recv()
    except TimeoutError:
        return {"refused": f"no answer within {ACCEPT_TIMEOUT_S:.0f} s"}
    sock.settimeout(None)
    return msg


def _interrupt(channel: Channel) -> None:
    try:
        channel.send({"op": "interrupt"})
    except OSError:
        pass


def _wait(channel: Channel, child: int | None, interrupted: bool = False) -> int:
    """Wait for the run's exit code; Ctrl-C here interrupts the run in the worker's child."""
    while True:
        try:
            msg, _ = channel.recv()
        except KeyboardInterrupt:
            _interrupt(channel)
            interrupted = True
            continue
        except (OSError, ValueError):
            msg = None
        if msg is not None and "started" in msg:
            child = msg["started"]
            continue
        if msg is not None and "refused" in msg and interrupted:
            print("Interrupted: nothing ran.", file=sys.stderr)
            return 130
        if msg is None:
            print(
                f"Error: the warm worker's run (pid {child}) ended without a result; "
                "`repro log` shows what it recorded",
                file=sys.stderr,
            )
            return 1
        if "exit" in msg:
            return int(msg["exit"])
