"""Text squeezed onto one line of at most n characters, for tables, the log and the notebook."""

from __future__ import annotations

from repro.terminal import safe


def one_line(text: object, n: int = 110) -> str:
    """Whitespace runs (newlines included) become one space; control characters are shown escaped
    (repro/terminal.py); longer text is cut with an ellipsis."""
    text = safe(" ".join(str(text).split()))
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"
