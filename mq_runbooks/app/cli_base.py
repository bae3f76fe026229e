"""What every `runbook` command shares: the `runbook` group the command modules (cli_*.py) add their
commands to, the Context each gets (settings, catalog, clusters, output), tables that fit a terminal
or a pipe, and the exit codes (0 success, 1 failed or rejected, 2 bad input). The entry point that
registers the commands and turns errors into exit codes is app/cli.py."""
from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mq_runbooks import __version__
from mq_runbooks.base.settings import Settings

if TYPE_CHECKING:  # imported when used: `runbook --help` needs neither
    from mq_runbooks.base.catalog import Catalog, CatalogReport, Runbook
    from mq_runbooks.base.clusters import Clusters

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class Context:
    """What every command may need, loaded once and only when asked for."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.out = Console(highlight=False, soft_wrap=True)

    @cached_property
    def clusters(self) -> Clusters:
        from mq_runbooks.base.clusters import load_clusters

        return load_clusters(self.settings.clusters)

    @cached_property
    def catalog(self) -> Catalog:
        from mq_runbooks.base.catalog import load_catalog

        return load_catalog(self.settings.catalog, self.settings.team_catalog)

    def runbook_without_flow(self, runbook_id: str) -> Runbook:
        """One runbook with its parameter model, without importing the catalog's flows (nor Prefect),
        for `show`; NotFoundError naming the runbooks there are, CatalogError if its file is broken."""
        from pathlib import Path

        from mq_runbooks.base.catalog import resolve_parameters
        from mq_runbooks.base.errors import CatalogError

        report = self.catalog_report(resolve=False)
        if runbook_id not in {runbook.id for runbook in report.catalog}:
            for path, reason in report.broken.items():
                if Path(path).stem == runbook_id:
                    raise CatalogError(reason)
        return resolve_parameters(report.catalog.get(runbook_id))

    def catalog_report(self, resolve: bool = True) -> CatalogReport:
        """The good runbooks and the broken files (for `list` and `doctor`)."""
        from mq_runbooks.base.catalog import load_catalog_report

        return load_catalog_report(self.settings.catalog, self.settings.team_catalog, resolve=resolve)

    @property
    def piped(self) -> bool:
        """Whether stdout is not a terminal (a pipe or a file): tables become tab-separated lines."""
        return not self.out.is_terminal

    def rows(self, columns: Sequence[str], rows: Sequence[Sequence[str | Text]], title: str | None = None,
             no_wrap: Sequence[str] = ()) -> None:
        """Rows as people read them, no value ever cut: tab-separated lines, a header first, when
        stdout is not a terminal; on a terminal a table when every column fits whole (columns in
        `no_wrap` on one line, the others wrapped between words, never inside one), else each row
        folded into `column: value` lines. A str cell is shown as it is (brackets and all); style one
        with a rich Text (e.g. markup("[red]BROKEN[/red]"))."""
        if self.piped:
            click.echo("\t".join(columns))
            for row in rows:
                click.echo("\t".join(_plain(cell) for cell in row))
            return
        cells = [[cell if isinstance(cell, Text) else Text(cell) for cell in row] for row in rows]
        if title:  # above the table, on its own line(s): a long path in it is never folded to the table's width
            self.out.print(Text(title, style="italic"))
        widths = column_widths(columns, [[cell.plain for cell in row] for row in cells], no_wrap, self.out.width)
        if widths is None:
            self._folded(columns, cells)
            return
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False)
        for name, width in zip(columns, widths):
            table.add_column(name, width=width, overflow="fold")  # a header may wrap between its words
        for row in cells:
            table.add_row(*(_one_line(cell) if name in no_wrap else cell for name, cell in zip(columns, row)))
        self.out.print(table)

    def _folded(self, columns: Sequence[str], cells: Sequence[Sequence[Text]]) -> None:
        """Each row as `column: value` pairs packed into lines of the terminal's width (a pair is never
        split; one wider than the terminal runs on, whole), empty values left out, a blank line
        between rows."""
        for number, row in enumerate(cells):
            if number:
                self.out.print()
            line: list[Text] = []
            used = 0
            for name, cell in zip(columns, row):
                if not cell.plain.strip():
                    continue
                pair = Text.assemble((f"{name}:", "bold"), " ", cell)
                if line and used + 2 + len(pair) > self.out.width:
                    self.out.print(Text("  ").join(line))
                    line, used = [], 0
                used += (2 if line else 0) + len(pair)
                line.append(pair)
            if line:
                self.out.print(Text("  ").join(line))


def _one_line(cell: Text) -> Text:
    copy = cell.copy()
    copy.no_wrap = True
    return copy


# A table of n columns is sum(widths) + 2 * (n - 1) characters wide (box.SIMPLE_HEAD, no edges).
_COLUMN_GAP = 2


def column_widths(columns: Sequence[str], rows: Sequence[Sequence[str]], no_wrap: Sequence[str],
                  width: int) -> list[int] | None:
    """Widths for a table of `rows` within `width` characters that cut no value: a column in
    `no_wrap` as wide as its widest value, any other at least as wide as its longest word (spare room
    goes to those, up to their widest value). None when even that does not fit: fold the rows.

        column_widths(["id", "message"], [["a1b2", "done in 3 s"]], ["id"], 13)  # [4, 7]: "done in" / "3 s"
    """
    def widest(index: int) -> int:
        return max([len(columns[index]), *(len(row[index]) for row in rows)])

    def longest_word(index: int) -> int:
        words = [len(word) for text in (columns[index], *(row[index] for row in rows)) for word in text.split()]
        return max(words, default=1)

    full = [widest(i) for i in range(len(columns))]
    least = [max(longest_word(i), *(len(row[i]) for row in rows)) if name in no_wrap else longest_word(i)
             for i, name in enumerate(columns)]
    room = width - _COLUMN_GAP * (len(columns) - 1)
    if sum(least) > room:
        return None
    widths = list(least)
    spare = room - sum(widths)
    # The spare room goes first to the columns closest to whole ("rolled back" on one line), then on.
    for i in sorted(range(len(columns)), key=lambda i: full[i] - widths[i]):
        grant = min(full[i] - widths[i], spare)
        widths[i] += grant
        spare -= grant
    return widths


def markup(text: str) -> Text:
    """A table cell styled with Rich markup."""
    return Text.from_markup(text)


def _plain(cell: str | Text) -> str:
    return (cell.plain if isinstance(cell, Text) else cell).replace("\t", " ").replace("\n", " ")


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="runbook", message="%(prog)s %(version)s")
@click.pass_context
def cli(click_context: click.Context) -> None:
    """mq-runbooks: incident-response runbooks for Kafka, RabbitMQ, Redis Streams, Artemis and RocketMQ.

    Each runbook observes, shows its exact plan, waits for approval, acts, verifies, and leaves a
    record for the postmortem. Configuration: clusters.yaml (RUNBOOK_CLUSTERS) and the runbook
    files in runbooks/ (RUNBOOK_CATALOG). Exit codes: 0 success, 1 failed or rejected, 2 bad input.

    A RUN is its id, a unique prefix of it (6+ characters) or its name (its runbook and target, e.g.
    "kafka-replay primary/billing"). No value is cut: a table folds its rows when its columns do not
    fit; piped, tables become tab-separated lines with whole ids; --json gives the same as JSON.
    """
    click_context.obj = Context(Settings.from_environ())
