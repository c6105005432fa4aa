"""Tables that stay readable at any terminal width (no TensorFlow here).

rich cuts every cell when a table is wider than the terminal (``repvgg/a0/c...``). Instead, each
column has a priority: while the table does not fit, the column with the highest number is
dropped; columns marked ``fold`` wrap onto further lines instead of being cut, so a handle is
never truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Any], str]
    priority: int = 0  # 0 = always shown; higher numbers are dropped first when narrow
    justify: str = "left"
    fold: bool = False  # wrap long values instead of cutting them


def _table(title: str | None, columns: Sequence[Column], rows: Sequence[Any], show_header: bool) -> Table:
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, show_header=show_header, pad_edge=False)
    for column in columns:
        table.add_column(
            column.header,
            justify=column.justify,  # type: ignore[arg-type]
            overflow="fold" if column.fold else "ellipsis",
            no_wrap=not column.fold,
            min_width=min(len(column.header), 12) if column.fold else None,
        )
    for row in rows:
        table.add_row(*(column.cell(row) for column in columns))
    return table


def fitted_table(
    console: Console, title: str | None, columns: Sequence[Column], rows: Sequence[Any], *, show_header: bool = True
) -> Table:
    """The widest table of ``columns`` that fits ``console``'s width, dropping low-priority
    columns first; what is left folds rather than cuts."""
    shown = list(columns)
    unbounded = console.options.update_width(10_000)  # measure what the table wants, not what it gets
    while True:
        table = _table(title, shown, rows, show_header)
        droppable = [c for c in shown if c.priority > 0]
        if not droppable or Measurement.get(console, unbounded, table).maximum <= console.width:
            return table
        shown.remove(max(droppable, key=lambda c: c.priority))


def millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def top1(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
