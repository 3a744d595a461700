"""Writing files that must never be seen half-written: atomic replace with the user's umask, and a
one-line StorageError naming the path when a disk is full, read-only or not ours (issue 14)."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

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
    is removed whatever happens. A symbolic link at `path` is replaced by the file, never written
    through (rename replaces the link itself; mkstemp creates its temp file exclusively).
    """
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    atomic_replace(path, lambda f: f.write(data), what)


def atomic_replace(path: Path, write: Callable[[BinaryIO], object], what: str = "a file") -> None:
    """`write(f)` into a new temp file beside `path`, fsync it, then rename it over `path`: what
    atomic_write does, for any bytes (a checkpoint, a cache, a copied figure)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise (storage_error(path, e, what) if is_storage_error(e) else e) from e
    try:
        os.fchmod(fd, 0o666 & ~user_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
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


def is_regular_inside(path: Path, inside: Path) -> bool:
    """Whether `path` is a regular file, not a symbolic link, whose real path (its folders
    resolved) lies inside the folder `inside`."""
    path = Path(path)
    try:
        if path.is_symlink() or not path.is_file():
            return False
        return path.resolve(strict=True).is_relative_to(Path(inside).resolve(strict=True))
    except OSError:
        return False


def copy_regular(src: Path, dst: Path, inside: Path, what: str = "a file") -> bool:
    """Copy `src` to `dst` (atomically) only when `src` is a regular file inside the folder
    `inside` (is_regular_inside); False, writing nothing, otherwise. A link in a run folder could
    aim anywhere: its target's bytes must not be copied out (issue 20)."""
    if not is_regular_inside(src, inside):
        return False
    try:
        fd = os.open(Path(src).resolve(), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    if Path(dst).is_file() and not Path(dst).is_symlink() and Path(dst).read_bytes() == data:
        return True
    atomic_replace(Path(dst), lambda out: out.write(data), what)
    return True


def append_text(path: Path, text: str, what: str = "a line") -> None:
    """Append `text` to the regular file `path` (created if absent), never through a symbolic
    link (O_NOFOLLOW): a link is refused with a StorageError naming it and its target."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise symlink_refused(path, what) from e
        raise (storage_error(path, e, what) if is_storage_error(e) else e) from e
    try:
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise (storage_error(path, e, what) if is_storage_error(e) else e) from e


def symlink_refused(path: Path, what: str) -> StorageError:
    """`<path>: expected a regular file to write <what> to, found a symbolic link (to <target>);
    replace the link with the file itself`."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return StorageError(
        f"{shown_path(path)}: expected a regular file to write {what} to, found a symbolic link "
        f"(to {target}); repro never writes through a link: replace it with the file itself"
    )
