"""Progress display for BulkSender: a Rich bar on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, Protocol

from ._checks import optional_flag
from .errors import MissingDependencyError


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


class RichProgress:
    """Bar, count, rate, ETA and sent/failed counts, drawn on stderr."""

    def __init__(self, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar

        self._bar = RichBar(
            TextColumn("[bold]sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.speed:>6.1f} msg/s" if total else "", markup=False),
            TextColumn("[green]{task.fields[sent]} sent [red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
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
    ``True`` insists on Rich (and names the extra if it is missing) but still stays quiet
    when stderr is not a terminal; ``False`` never shows one."""
    optional_flag("progress", progress)
    if progress is False or not sys.stderr.isatty():
        return NoProgress()
    try:
        import rich  # noqa: F401
    except ImportError:
        if progress:
            raise MissingDependencyError("The progress bar", "progress", "rich") from None
        return NoProgress()
    return RichProgress(total)
