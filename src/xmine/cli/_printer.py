"""Console output of the CLI: rich tables and lines, silent under ``--quiet``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["Printer", "fmt"]


class Printer:
    """Console output of the CLI; silent with ``--quiet``."""

    def __init__(self, *, quiet: bool) -> None:
        from rich.console import Console

        self.quiet = quiet
        # a pipe or a log file gets wide lines instead of rich's 80-column default
        self.console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)

    def line(self, text: str = "") -> None:
        if not self.quiet:
            self.console.print(text, markup=False)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self.quiet:
            return
        from rich.table import Table

        table = Table(title=title, title_justify="left", box=None, header_style="bold")
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*(fmt(v) for v in row))
        self.console.print(table)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
