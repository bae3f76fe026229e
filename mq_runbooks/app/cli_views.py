"""How the CLI prints a run: its journal entries, its plan (as a table that cuts no value, or
tab-separated when piped) and its gate (who it waits for, until when, and how old the plan is)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import click
from rich.markup import escape
from rich.text import Text

from mq_runbooks.app.cli_base import Context
from mq_runbooks.app.run_documents import row_values


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _prose(context: Context, lines: Sequence[str]) -> None:
    text = "\n".join(lines).strip("\n")
    if not text:
        return
    if context.piped:  # the Markdown as it is: nothing re-wrapped to a width no pipe has
        click.echo(text)
        return
    from rich.markdown import Markdown  # ~0.2 s of imports: only for the commands that print plans

    context.out.print(Markdown(text))


def print_plan(context: Context, markdown: str, columns: Sequence[str] | None, rows: Sequence[Any] | None,
               shown: int | None = None) -> None:
    """A plan as its Markdown reads (what changed, the summary, warnings), with its table printed
    by Context.rows from the plan's own columns and rows: every value whole at any width, and
    tab-separated when piped. `shown`: how many rows (default: as many as the Markdown's table has)."""
    lines = markdown.splitlines()
    table = [i for i, line in enumerate(lines) if line.startswith("|")]
    if not columns or rows is None or not table:
        _prose(context, lines)
        return
    count = max(len(table) - 2, 0) if shown is None else shown  # the Markdown's header and rule are not rows
    _prose(context, lines[:table[0]])
    context.rows(list(columns), [[_cell(value) for value in row_values(columns, row)] for row in rows[:count]])
    _prose(context, lines[table[-1] + 1:])


def print_plan_entry(context: Context, entry, full: bool = False) -> None:
    """A journal `plan` entry: its Markdown with the table (`full`: every row, under a one-line title)."""
    columns, rows = entry.data.get("columns"), entry.data.get("rows")
    if full:
        if columns is None or rows is None:  # written before plans carried their table
            context.out.print(f"plan: {escape(entry.summary)} (this run's journal has no table of it)")
            return
        context.out.print(Text(f"plan ({len(rows)} row(s)): {entry.summary}", style="bold"))
        context.rows(list(columns), [[_cell(value) for value in row_values(columns, row)] for row in rows])
        return
    if entry.data.get("markdown"):
        print_plan(context, entry.data["markdown"], columns, rows)


def print_entry(context: Context, run_id: str, entry, show_answer: bool = True) -> None:
    stamp = entry.at.strftime("%H:%M:%S")
    context.out.print(f"[dim]{stamp}[/dim] [bold]{entry.kind}[/bold] {escape(entry.summary)}")
    if entry.kind == "plan":
        print_plan_entry(context, entry)
    if entry.kind == "snapshot":  # the way back: by hand, and as a run of its own
        if entry.data.get("restore_command"):
            context.out.print(f"  restore by hand: {escape(entry.data['restore_command'])}")
        context.out.print(f"  undo once it has ended: runbook restore {run_id} [--plan]")
    if entry.kind == "approval_requested" and show_answer:
        context.out.print(f"  approve: runbook approve {run_id} --as NAME [--comment TEXT]\n"
                          f"  reject:  runbook reject {run_id} --as NAME --reason TEXT")


def ago(seconds: float) -> str:
    """61 -> '1m 1s'; 3700 -> '1h 1m'; a negative span reads as 0s."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _moment(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def gate_lines(waiting_for: str | None, deadline: dt.datetime | None, plan_at: dt.datetime | None,
               now: dt.datetime, how: str) -> list[str]:
    """What `status` says about the gate and the plan: who it waits for until when (how to answer),
    and when the plan shown was computed."""
    lines = []
    if waiting_for:
        until = ""
        if deadline is not None:
            left = (deadline - now).total_seconds()
            until = f" until {_moment(deadline)} ({ago(left)} left)" if left > 0 else f" (its deadline {_moment(deadline)} has passed)"
        lines.append(f"waiting for {waiting_for}{until}: {how}")
    if plan_at is not None:
        lines.append(f"plan computed at {_moment(plan_at)}, {ago((now - plan_at).total_seconds())} ago")
    return lines
