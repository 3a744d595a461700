"""Typed errors for expected failures: the CLI prints them as one `Error: ...` line and exits 1."""


class ReproError(Exception):
    """A user-facing error: the message says what was expected, what was found, and what to do."""


class ConfigError(ReproError):
    """A config key is missing, misspelled or has a bad value."""


class DataError(ReproError):
    """A data file is missing or malformed; the message names the file and line."""


class GateRefused(ReproError):
    """A stage cannot run because an earlier stage has not passed on the current fingerprint."""


class PaperError(ReproError):
    """A paper is missing, ambiguous, or does not follow the paper contract."""


class LaunchError(ReproError):
    """Jobs could not be submitted (no scheduler here, or it refused the request)."""


class ProjectError(ReproError):
    """No repro project here, or a directory cannot become one without overwriting files."""


class StorageError(ReproError):
    """A file or folder could not be written (permission denied, read-only or full disk); the
    message names the path (repro/storage.py: storage_error)."""
