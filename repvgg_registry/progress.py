"""Rich progress for long, phased work (build, publish): one bar row per phase, with timings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class RichPhases:
    """A ``Reporter`` (see ``publish.build``) that shows each phase as a line with a spinner."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        self.title = title
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )

    def __enter__(self) -> RichPhases:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.progress.stop()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        task = self.progress.add_task(f"{self.title}: {name}", total=1)
        try:
            yield
        finally:
            self.progress.update(task, completed=1)
            self.progress.stop_task(task)
