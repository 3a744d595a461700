"""repro: reproduce an ML paper through five gates that measure, decide and record."""

__version__ = "0.1.0"
