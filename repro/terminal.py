"""Text that reaches a terminal: control characters from records, configs and paper files are
shown escaped (`\\x1b`, `\\u202e`), never sent raw (issue 20).

A record's reason or a paper's target name is text other people wrote: `ESC]0;…BEL` retitles the
window, `ESC[2J` clears the screen, OSC 52 writes the clipboard, U+202E turns the rest of a line
around. Rich strips BEL, BS, VT, FF and CR from what it prints, not ESC. `safe()` escapes them at
the source (where a table measures its columns); `SafeConsole` escapes whatever reaches its output
anyway, so every command prints through one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rich.console import Console
from rich.segment import Segment

# C0 controls but tab and newline, DEL, the C1 controls (CSI, OSC, ST as single bytes), and the
# format characters that reorder or hide text: bidi embeddings, overrides and isolates, zero-width
# characters, the line/paragraph separators, the BOM, interlinear annotations and tag characters.
UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"
    "\ufeff\ufff9-\ufffb\U000e0000-\U000e007f]"
)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe(text: object) -> str:
    """`text` with every control or reordering character written as its escape (`\\x1b`)."""
    text = str(text)
    return UNSAFE.sub(_escaped, text) if UNSAFE.search(text) else text


def unsafe_character(text: str) -> str | None:
    """The first control or reordering character of `text`, escaped (`\\x1b`), or None."""
    found = UNSAFE.search(text)
    return _escaped(found) if found else None


class SafeConsole(Console):
    """A Rich Console whose output never carries a control character it was given as text: the
    escapes Rich writes itself (colours, links, cursor moves) are untouched."""

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            seg if seg.control else Segment(safe(seg.text), seg.style, seg.control)
            for seg in buffer
        )
