"""A rich progress bar counting bytes, shared by downloads and large-file reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


def start_byte_progress(
    description: str, total: int | None, console: Console | None = None
) -> tuple[Progress, TaskID]:
    """Start a bar (description, bar, bytes done, speed, time left) with one task; return both."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = bar.add_task(description, total=total)
    bar.start()
    return bar, task
