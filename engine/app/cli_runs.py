"""CLI commands that plan, start, answer and follow runs: plan, run, approve, reject, runs, status."""
from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.markdown import Markdown
from rich.table import Table

from mq_runbooks.app import runs
from mq_runbooks.app.cli import EXIT_FAILED, Context, cli, pass_context
from mq_runbooks.base.errors import UsageError


def parse_parameters(pairs: tuple[str, ...]) -> dict[str, Any]:
    """('group=billing', 'topic=a', 'topic=b:0,1') -> {'group': 'billing', 'topic': ['a', 'b:0,1']}."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-p {pair!r}: write parameters as key=value (e.g. -p group=billing)")
        key = key.strip()
        if key in values:
            values[key] = (values[key] if isinstance(values[key], list) else [values[key]]) + [value]
        else:
            values[key] = value
    return values


parameter_option = click.option(
    "-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE",
    help="A runbook parameter; repeat for several (and for repeatable ones, e.g. -p topic=a -p topic=b).",
)


@cli.command("plan")
@click.argument("runbook_id", metavar="ID")
@parameter_option
@click.option("--export", is_flag=True, help="Print the plan as CSV (topic,partition,offset), as "
              "kafka-consumer-groups.sh --dry-run --export does.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@pass_context
def plan(context: Context, runbook_id: str, pairs: tuple[str, ...], export: bool, as_json: bool) -> None:
    """Show exactly what a runbook would change, and change nothing (a dry run)."""
    runbook = context.catalog.get(runbook_id)
    params = runbook.validate_parameters(parse_parameters(pairs))
    if runbook.planner is None:
        raise UsageError(f"runbook {runbook_id} has no separate plan step; `runbook run` shows its plan at the gate")
    computed = runbook.planner(params, context.clusters)
    if export:
        click.echo(computed.to_csv(), nl=False)
        return
    if as_json:
        click.echo(json.dumps(computed.to_json(), indent=2))
        return
    context.out.print(Markdown(computed.markdown(rows=10_000)))
    context.out.print(f"plan digest {computed.digest()[:12]}; nothing was changed. "
                      f"Run it with: runbook run {runbook_id} " + " ".join(f"-p {p}" for p in pairs))


@cli.command("run")
@click.argument("runbook_id", metavar="ID")
@parameter_option
@click.option("--as", "requested_by", default=None, help="Who starts the run (default: $USER).")
@click.option("--wait", is_flag=True, help="Follow the run: its plan, how to approve it, progress, the outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print the run id (and with --wait the outcome) as JSON.")
@pass_context
def run(context: Context, runbook_id: str, pairs: tuple[str, ...], requested_by: str | None, wait: bool,
        as_json: bool) -> None:
    """Start a runbook. It plans, then waits for approval before it changes anything.

    Exit code with --wait: 0 applied, 1 failed or rejected, 2 bad input.
    """
    import getpass

    runbook = context.catalog.get(runbook_id)
    params = runbook.validate_parameters(parse_parameters(pairs))
    if runbook.planner is not None:
        # Preflight: bad input (unknown cluster, topic, group...) is refused before a run exists.
        runbook.planner(params, context.clusters)
    who = requested_by or getpass.getuser()
    run_id = runs.start_run(context.settings, runbook, params, requested_by=who)
    if as_json and not wait:
        click.echo(json.dumps({"run_id": run_id}))
        return
    if not as_json:
        context.out.print(f"started run [bold]{run_id}[/bold] of {runbook_id} (as {who})")
    if not wait:
        context.out.print(f"follow it with: runbook status {run_id}")
        return
    view = follow(context, run_id, quiet=as_json)
    if as_json:
        click.echo(json.dumps({"run_id": run_id, "state": view.state, "message": view.message}))
    sys.exit(0 if view.succeeded else EXIT_FAILED)


def follow(context: Context, run_id: str, quiet: bool = False, poll_s: float = 0.5) -> runs.RunView:
    """Print the run's journal as it grows, until the run ends."""
    shown = 0
    while True:
        view = runs.read_run(run_id)
        for entry in view.entries[shown:]:
            if not quiet:
                _print_entry(context, run_id, entry)
        shown = len(view.entries)
        if view.finished:
            if not quiet:
                colour = "green" if view.succeeded else "red"
                context.out.print(f"[{colour}]{view.state}[/{colour}]: {view.message}")
            return view
        time.sleep(poll_s)


def _print_entry(context: Context, run_id: str, entry, show_answer: bool = True) -> None:
    stamp = entry.at.strftime("%H:%M:%S")
    context.out.print(f"[dim]{stamp}[/dim] [bold]{entry.kind}[/bold] {entry.summary}")
    if entry.kind == "plan" and entry.data.get("markdown"):
        context.out.print(Markdown(entry.data["markdown"]))
    if entry.kind == "approval_requested" and show_answer:
        context.out.print(f"  approve: runbook approve {run_id} --as NAME [--comment TEXT]\n"
                          f"  reject:  runbook reject {run_id} --as NAME --reason TEXT")


def plan_table(entry) -> Table:
    """A journal `plan` entry as a table, whichever runbook wrote it (the plan contract's columns/rows)."""
    columns, rows = entry.data.get("columns"), entry.data.get("rows")
    if columns is None or rows is None:  # written before plans carried their table
        return Table(title=f"plan: {entry.summary} (this run's journal has no table of it)")
    table = Table(*columns, title=f"plan ({len(rows)} row(s)): {entry.summary}")
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    return table


@cli.command("approve")
@click.argument("run_id", metavar="RUN")
@click.option("--as", "by", required=True, help="Your name, as the runbook's approval policy knows it.")
@click.option("--comment", default="", help="Why you approve (kept in the journal and the postmortem).")
@pass_context
def approve(context: Context, run_id: str, by: str, comment: str) -> None:
    """Approve a run that waits at its gate (the runbook's policy decides who may)."""
    runs.answer_gate(context.settings, context.catalog, run_id, True, by, comment)
    context.out.print(f"approved run {run_id} as {by}")


@cli.command("reject")
@click.argument("run_id", metavar="RUN")
@click.option("--as", "by", required=True, help="Your name, as the runbook's approval policy knows it.")
@click.option("--reason", required=True, help="Why (kept in the journal and the postmortem).")
@pass_context
def reject(context: Context, run_id: str, by: str, reason: str) -> None:
    """Reject a run that waits at its gate; it ends without changing anything."""
    runs.answer_gate(context.settings, context.catalog, run_id, False, by, reason)
    context.out.print(f"rejected run {run_id} as {by}")


@cli.command("runs")
@click.option("--runbook", "runbook_id", default=None, help="Only runs of this runbook.")
@click.option("--limit", default=20, show_default=True, help="How many of the newest runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_context
def list_runs(context: Context, runbook_id: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    views = runs.list_runs(limit=limit, runbook_id=runbook_id)
    if as_json:
        click.echo(json.dumps([{"id": v.id, "name": v.name, "runbook": v.runbook, "state": v.state,
                                "started": v.started, "message": v.message} for v in views], indent=2))
        return
    table = Table("run", "runbook", "state", "started", "message")
    for view in views:
        table.add_row(view.id, view.runbook, view.state, view.started or "", view.message[:80])
    context.out.print(table)


@cli.command("status")
@click.argument("run_id", metavar="RUN")
@click.option("--plan", "full_plan", is_flag=True, help="Show every partition of the plan.")
@click.option("--json", "as_json", is_flag=True, help="Print the state and the whole journal as JSON.")
@pass_context
def status(context: Context, run_id: str, full_plan: bool, as_json: bool) -> None:
    """A run's state, who it waits for, its plan and its results (from its journal).

    A run that crashed (its process died) may have no postmortem yet, or one drafted before Prefect
    knew it crashed: noticing it here writes (or refreshes) its draft.
    """
    view = runs.read_run(run_id)
    if view.state_type == "CRASHED":
        from mq_runbooks.kit.postmortem_publish import write_postmortem
        from mq_runbooks.kit.steps import publish_postmortem

        if any(e.kind == "postmortem" for e in view.entries):
            write_postmortem(view.id)  # refreshes a draft in place; a reviewed one is left alone
        else:
            publish_postmortem(view.id)
            view = runs.read_run(run_id)
    if as_json:
        click.echo(json.dumps({"id": view.id, "runbook": view.runbook, "state": view.state, "message": view.message,
                               "waiting_for": view.waiting_for(), "journal": [e.to_json() for e in view.entries]},
                              indent=2, default=str))
        return
    context.out.print(f"run [bold]{view.id}[/bold] ({view.runbook}): [bold]{view.state}[/bold] {view.message}")
    waiting = view.waiting_for()
    if waiting:
        context.out.print(f"waiting for {waiting}: runbook approve {view.id} --as NAME")
    for entry in view.entries:
        if entry.kind == "plan" and full_plan:
            context.out.print(plan_table(entry))
        else:
            # How to answer the gate is shown only while the run still waits there.
            _print_entry(context, view.id, entry, show_answer=bool(waiting))
