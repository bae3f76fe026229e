"""CLI commands over postmortems: `runbook postmortems list|show|review|draft`. The Markdown files
in the postmortem directory are the source of truth; these commands read and rewrite them (with
RUNBOOK_SERVER, `list`, `show` and `review` go through serve's API: the files are serve's)."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import click

from mq_runbooks.app.cli_base import Context, cli, column_widths, pass_context
from mq_runbooks.base.errors import UsageError
from mq_runbooks.kit.postmortem.store import STATUSES, Postmortem, list_postmortems, mark_reviewed, read_postmortem


@cli.group("postmortems")
def postmortems() -> None:
    """List, show, review and (re)draft postmortems (RUNBOOK_POSTMORTEM_DIR)."""


@postmortems.command("list")
@click.option("--runbook", "runbook_id", metavar="ID", help="Only this runbook's postmortems.")
@click.option("--status", type=click.Choice(STATUSES), help="Only drafts, or only reviewed ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the front matter of each) instead of a table.")
@pass_context
def list_command(context: Context, runbook_id: str | None, status: str | None, as_json: bool) -> None:
    """List postmortems, newest first."""
    if context.settings.server:
        query = "&".join(f"{k}={quote(v)}" for k, v in (("runbook", runbook_id), ("status", status)) if v)
        with _serve(context) as serve:
            metas = serve.call("GET", f"/postmortems?{query}")
        if as_json:
            click.echo(json.dumps(metas, indent=2, default=str))
            return
        _print_list(context, [Postmortem(Path(m["id"] + ".md"), m, "") for m in metas], serve.url)
        return
    found = list_postmortems(context.settings.postmortem_dir, runbook=runbook_id, status=status)
    if as_json:
        click.echo(json.dumps([{**p.meta, "path": str(p.path)} for p in found], indent=2, default=str))
        return
    _print_list(context, found, str(context.settings.postmortem_dir))


def _serve(context: Context):
    from mq_runbooks.app.api_client import ServeClient, read_token

    return ServeClient(context.settings.server, read_token(context.settings))


def _print_list(context: Context, found: list[Postmortem], where: str) -> None:
    # The id is what `show` and `review` take: never shortened (piped: whole, tab-separated). The
    # target (what the runs acted on, as the review page's list shows it) is kept at every width.
    columns = ("id", "runbook", "target", "status", "outcome", "created", "reviewed by")
    rows = [(p.id, p.runbook, ", ".join(p.targets), p.status, str(p.meta.get("outcome", "")),
             _created(p.meta.get("created", "")), ", ".join(r.get("name", "") for r in p.reviewers)) for p in found]
    no_wrap = ("id", "target", "status", "created", "at")  # an outcome (rolled back) wraps between words
    if not context.piped and column_widths(columns, rows, no_wrap, context.out.width) is None:
        # Too narrow for the whole table: the runbook column goes (the id names the runbook) and the
        # day (the id holds it too); narrower still, the rows fold into `column: value` lines.
        columns = ("id", "target", "status", "outcome", "at", "reviewed by")
        rows = [(row[0], row[2], row[3], row[4], row[5][11:] or row[5], row[6]) for row in rows]
    context.rows(columns, rows, title=f"{len(found)} postmortem(s) in {where}", no_wrap=no_wrap)


def _created(value: object) -> str:
    """'2026-11-29T20:27:47+00:00' -> '2026-11-29 20:27' (minutes are enough to tell drafts apart)."""
    text = str(value)
    return text[:16].replace("T", " ") if len(text) >= 16 and text[10:11] in ("T", " ") else text


@postmortems.command("show")
@click.argument("postmortem_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (front matter and body).")
@pass_context
def show_command(context: Context, postmortem_id: str, as_json: bool) -> None:
    """Print a postmortem: the file as it is (front matter and Markdown)."""
    if context.settings.server:
        with _serve(context) as serve:
            document = serve.call("GET", f"/postmortems/{quote(postmortem_id, safe='')}")
        found = Postmortem(Path(f"{postmortem_id}.md"), document["meta"], document["body"])
    else:
        found = read_postmortem(context.settings.postmortem_dir, postmortem_id)
    if as_json:
        click.echo(json.dumps({"meta": found.meta, "path": str(found.path), "body": found.body}, indent=2, default=str))
        return
    click.echo(found.text(), nl=False)


@postmortems.command("review")
@click.argument("postmortem_id", metavar="ID")
@click.option("--as", "by", metavar="NAME", help="Who reviewed it (with RUNBOOK_SERVER: your token's holder).")
@click.option("--note", default="", help="What the review found or changed.")
@pass_context
def review_command(context: Context, postmortem_id: str, by: str | None, note: str) -> None:
    """Mark a postmortem reviewed, recording the reviewer, the time and the note in its front matter."""
    import getpass

    if context.settings.server:
        from mq_runbooks.app.cli_runs import _refuse_other_name

        with _serve(context) as serve:
            _refuse_other_name(serve, by or "")
            meta = serve.call("POST", f"/postmortems/{quote(postmortem_id, safe='')}/review", {"note": note})["meta"]
        latest = meta["reviewers"][-1]
        click.echo(f"{meta['id']} reviewed by {latest['name']} at {latest['at']} (through {serve.url})")
        return
    if not by:
        raise UsageError("say who reviewed it: --as NAME")
    # The CLI proves nothing about the name typed: the record says so (the OS user who typed it).
    proof = {"kind": "typed-name", "os_user": getpass.getuser()}
    reviewed = mark_reviewed(context.settings.postmortem_dir, postmortem_id, by, note, proof=proof)
    latest = reviewed.reviewers[-1]
    click.echo(f"{reviewed.id} reviewed by {latest['name']} at {latest['at']} ({reviewed.path})")


@postmortems.command("draft")
@click.argument("run_id", metavar="RUN")
@click.option("--with-message-values", is_flag=True,
              help="Keep message contents the run recorded (scrubbed out by default; secrets always are).")
@pass_context
def draft_command(context: Context, run_id: str, with_message_values: bool) -> None:
    """Write or refresh the draft of a run (e.g. one that crashed before writing its own).

    A reviewed postmortem is left as it is.
    """
    from mq_runbooks.kit.postmortem.publish import draft_and_attach

    postmortem, written = draft_and_attach(run_id, context.settings, allow_message_values=with_message_values)
    if written:
        click.echo(f"draft {postmortem.id} written to {postmortem.path} (outcome: {postmortem.meta['outcome']})")
    else:
        click.echo(f"{postmortem.id} is already reviewed; left as it is ({postmortem.path})")
