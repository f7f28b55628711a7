"""Progress display for BulkSender: a Rich bar on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, Protocol

from ..errors import MissingDependencyError
from ..smtp._checks import optional_flag


class Progress(Protocol):
    def __enter__(self) -> Progress: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def advance(self, sent: int, failed: int) -> None: ...


class NoProgress:
    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, sent: int, failed: int) -> None:
        return None


def rate_text(speed: float | None) -> str:
    """``"12.5 msg/s"``; Rich has no speed until it holds two samples, so say so."""
    return "-- msg/s" if speed is None else f"{speed:.1f} msg/s"


def _columns(total: int | None) -> list[Any]:
    """Count, rate and sent/failed always; the bar, ``N/total`` and the ETA only when
    the total is known (a generator has none)."""
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
        # Not a format string: ``task.speed`` is None before the second update, and
        # "{task.speed:.1f}" on None raised TypeError before the first message went out.
        def render(self, task: Any) -> Text:
            return Text(rate_text(task.speed))

    counts = TextColumn("[green]{task.fields[sent]} sent [red]{task.fields[failed]} failed")
    if total is None:
        return [
            TextColumn("[bold]sending"),
            TextColumn("{task.completed} done", markup=False),
            RateColumn(),
            counts,
            TimeElapsedColumn(),
        ]
    return [
        TextColumn("[bold]sending"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        counts,
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]


class RichProgress:
    """Bar, count, rate, ETA and sent/failed counts, drawn on stderr."""

    def __init__(self, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import Progress as RichBar

        self._bar = RichBar(
            *_columns(total),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: Any = self._bar.add_task("send", total=total, sent=0, failed=0)

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def advance(self, sent: int, failed: int) -> None:
        self._bar.update(self._task, completed=sent + failed, sent=sent, failed=failed)


def make_progress(progress: bool | None, total: int | None) -> Progress:
    """``None`` (the default) shows a bar only on a terminal with Rich installed;
    ``True`` insists on Rich, on every stream (a missing extra is an error whether or not
    stderr is a terminal, so it shows up in CI too), and still draws nothing when stderr
    is not a terminal; ``False`` never shows one."""
    optional_flag("progress", progress)
    if progress is False:
        return NoProgress()
    try:
        import rich  # noqa: F401
    except ImportError:
        if progress:
            raise MissingDependencyError("The progress bar", "progress", "rich") from None
        return NoProgress()
    if not sys.stderr.isatty():
        return NoProgress()
    return RichProgress(total)
