"""The console the commands print to: it wraps to a terminal, and only to a terminal."""

from __future__ import annotations

from rich.console import Console, ConsoleDimensions, JustifyMethod
from rich.style import Style

UNWRAPPED_WIDTH = 10_000  # columns of a console whose output is not a terminal
RULE_WIDTH = 80  # a rule's width there: a line across the page, not across 10,000 columns


class UnwrappedConsole(Console):
    """A rich console that wraps to the terminal it writes to, and only to a terminal.

    Written to a pipe, a file or a CI log, rich assumes 80 columns (or a terminal's
    width that is not where the text goes) and wraps table cells and long lines;
    there a line is as long as its content instead. `COLUMNS` still decides if set.
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and not self._columns_set():
            return ConsoleDimensions(UNWRAPPED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def _columns_set(self) -> bool:
        return self._environ.get("COLUMNS", "").isdigit()

    def rule(
        self, title: str = "", *, characters: str = "─", style: str | Style = "rule.line",
        align: JustifyMethod = "center",
    ) -> None:
        """A horizontal rule, at most `RULE_WIDTH` wide when the output is not a terminal."""
        from rich.rule import Rule

        width = self.width if self.is_terminal or self._columns_set() else RULE_WIDTH
        self.print(Rule(title=title, characters=characters, style=style, align=align),
                   width=width)
