"""Rich progress for long, phased work (build, publish): a spinner line per phase, with timings.

Shown only on a terminal and gone when the work ends (``transient``): what stays is the summary
table, or the one ``error:`` line. Piped or captured output gets neither spinners nor blank lines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class RichPhases:
    """A ``Reporter`` (see ``publish.build``) that shows each phase as a line with a spinner."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        self.title = title
        console = console or Console(stderr=True)
        self.console = console
        self.progress = (
            Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            if console.is_terminal
            else None
        )

    def __enter__(self) -> RichPhases:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()

    def warn(self, message: str) -> None:
        """A one-line ``warning:`` that does not stop the work."""
        self.console.print(f"warning: {self.title}: {message}", markup=False, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.progress is None:
            yield
            return
        task = self.progress.add_task(f"{self.title}: {name}", total=1)
        try:
            yield
        finally:
            self.progress.update(task, completed=1)
            self.progress.stop_task(task)
