"""Progress display: a rich progress bar on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


def _columns(total: int | None, unit: str | None) -> list:
    """The bar's columns; the rate column (none without a `unit`) shows nothing until rich has measured a speed."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"  ... {unit}" if task.speed is None else f"{task.speed:>5.1f} {unit}")

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn() if total else TextColumn(
        "{task.completed}")]
    rate = [RateColumn()] if unit else []
    return columns + rate + [TimeElapsedColumn()] + ([TimeRemainingColumn()] if total else [])


@contextmanager
def progress_bar(description: str, total: int | None, *, enabled: bool = True,
                 unit: str | None = "fps") -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n)` callable; draws on stderr only when it is a terminal (`unit`: the rate's;
    None for steps too slow for a rate to mean much)."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(*_columns(total, unit), console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
