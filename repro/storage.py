"""Writing files that must never be seen half-written: atomic replace with the user's umask, and a
one-line StorageError naming the path when a disk is full, read-only or not ours (issue 14)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from repro.errors import StorageError

# What the machine, not repro, is to blame for: these become a one-line error naming the path.
# Any other OSError (a missing file we just created, a bad argument) is a bug and keeps its traceback.
WRITE_ERRNOS = {
    errno.ENOSPC: "free some space and run the command again",
    errno.EDQUOT: "free some space (or raise the quota) and run the command again",
    errno.EROFS: "run from a writable copy of the project, or remount it read-write",
    errno.EACCES: "make it writable (chmod u+w) or run as its owner",
    errno.EPERM: "make it writable (chmod u+w) or run as its owner",
}


def is_storage_error(exc: BaseException) -> bool:
    """An OSError the disk or its permissions caused (full, read-only, not writable)."""
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


def storage_error(path: Path | str | None, exc: OSError, what: str = "a file") -> StorageError:
    """`<path>: expected to write <what> there, found <strerror> (ENOSPC); <what to do>`.

    `path` is what the caller tried to write; None: the file the OSError names (a write() error
    names none, so callers that know the file pass it).
    """
    where = shown_path(path if path is not None else exc.filename)
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    found = (exc.strerror or str(exc)).lower()
    return StorageError(
        f"{where}: expected to write {what} there, found {found} ({name}); {_fix(exc)}"
    )


def _fix(exc: OSError) -> str:
    return WRITE_ERRNOS.get(exc.errno or 0, "check the path, its permissions and free space")


def shown_path(path: Path | str | bytes | None) -> str:
    """The path relative to the current directory when it is below it (the CLI works from the
    project root), else as given."""
    if path is None:
        return "<unknown path>"
    text = os.fsdecode(path)
    try:
        rel = os.path.relpath(text)
    except ValueError:
        return text
    return rel if not rel.startswith("..") else text


def user_umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc/self/status);
    elsewhere set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, text: str | bytes, what: str = "a file") -> None:
    """Write `text` (str: UTF-8; bytes: as they are) to `path` so that readers see either the old
    file or the whole new one. A symlink at `path` is replaced, never written through.

    The file gets the mode an ordinary write would (0666 minus the umask; mkstemp alone makes it
    0600). A full, read-only or unwritable disk raises StorageError naming `path`; the temp file
    is removed whatever happens.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise (storage_error(path, e, what) if is_storage_error(e) else e) from e
    try:
        os.fchmod(fd, 0o666 & ~user_umask())
        binary = isinstance(text, bytes)
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if is_storage_error(e):
            raise storage_error(path, e, what) from e  # write() errors name no file: we do
        raise
