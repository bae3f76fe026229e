"""CLI commands that plan, start, answer and follow runs: plan, run, approve, reject, runs, status.

A run is named by its full id, a unique prefix of it (at least 6 characters) or its Prefect name
(e.g. "kafka-replay primary/billing"): see runs.resolve_run. Prefect is imported inside the commands that talk to it,
so `runbook --help` stays fast."""
from __future__ import annotations

import getpass
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from mq_runbooks.app.cli_base import EXIT_FAILED, Context, cli, pass_context
from mq_runbooks.base.errors import RunbookError, UsageError
from mq_runbooks.kit.identity import TOKEN_PREFIX

if TYPE_CHECKING:
    from mq_runbooks.app.runs import RunView

RUN_HELP = 'RUN is the run\'s id, a unique prefix of it (6+ characters) or its name (e.g. "kafka-replay primary/billing").'


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
    from mq_runbooks.app.run_documents import plan_document, planned

    if context.settings.server:  # serve plans it: the brokers' credentials stay with serve
        if export:
            raise UsageError("--export needs the brokers (direct mode); with RUNBOOK_SERVER use --json")
        with _serve(context, _token(context, None)) as serve:
            document = serve.call("POST", "/plan", {"runbook": runbook_id, "parameters": parse_parameters(pairs)})
        markdown = document.pop("markdown", "")
    else:
        runbook = context.catalog.get(runbook_id)
        computed, refused = planned(runbook, runbook.validate_parameters(parse_parameters(pairs)), context.clusters)
        if export:
            if refused:
                click.echo(f"warning: a run of this plan would be refused: {refused}", err=True)
            click.echo(computed.to_csv(), nl=False)
            return
        document, markdown = plan_document(computed, refused), computed.markdown(rows=10_000)
    if as_json:
        click.echo(json.dumps(document, indent=2, default=str))
        return
    from mq_runbooks.app.cli_views import print_plan
    from mq_runbooks.app.run_documents import row_values

    refused, columns = document.get("refusal"), document["columns"]
    if refused:  # the driver's own refusal of this plan: said first, never hidden
        context.out.print(f"[red]would be refused[/red]: {escape(refused)} (a run of it ends Refused, changing nothing)")
    print_plan(context, markdown, columns, [row_values(columns, row) for row in document["rows"]])
    if refused:
        context.out.print(f"plan digest {document['digest'][:12]}; nothing was changed.")
        return
    context.out.print(f"plan digest {document['digest'][:12]}; nothing was changed. "
                      f"Run it with: runbook run {runbook_id} " + " ".join(f"-p {p}" for p in pairs))


def _requester(context: Context, typed: str, token_file: Path | None) -> str:
    """Who starts a run, proven as an answer is (RUNBOOK_APPROVAL_PROOF): four eyes need the
    requester to be who they say, or anyone could start a run as someone else and approve it."""
    from mq_runbooks.kit.identity import verify_answer
    from mq_runbooks.kit.signing import signing_key
    from mq_runbooks.kit.teams import teams_for

    by, proof = _claimed_identity(context, typed, _token(context, token_file), "starts the run",
                                  default="" if context.settings.approval_proof == "token" else getpass.getuser())
    who, refused = verify_answer(by, proof, teams_for(context.settings), context.settings.deployment,
                                 key=signing_key(context.settings))
    if refused:
        raise UsageError(f"refused: {refused}")
    return who


def _serve(context: Context, token: str):
    """A client of RUNBOOK_SERVER's API, proving who you are with `token` (see _token)."""
    from mq_runbooks.app.api_client import ServeClient

    return ServeClient(context.settings.server, token)


def _refuse_other_name(serve, by: str) -> None:
    """With a token, who you are is its holder: a typed --as naming someone else is refused."""
    if by.strip() and by.strip().lower() != serve.call("GET", "/whoami")["name"].lower():
        raise UsageError(f"your token proves who you are; --as {by.strip()} is not you")


def _run_through_serve(context: Context, runbook_id: str, pairs: tuple[str, ...], requested_by: str | None,
                       token_file: Path | None, wait: bool, as_json: bool) -> None:
    """`runbook run` with RUNBOOK_SERVER: serve starts the run, requested by the token's holder."""
    with _serve(context, _token(context, token_file)) as serve:
        who = serve.call("GET", "/whoami")["name"]
        if requested_by and requested_by.strip().lower() != who.lower():
            raise UsageError(f"your token is {who}'s: a run is started by whoever the token proves, not {requested_by}")
        started = serve.call("POST", "/runs", {"runbook": runbook_id, "parameters": parse_parameters(pairs)})
        run_id = started["run_id"]
        if not wait:
            click.echo(json.dumps({"run_id": run_id})) if as_json else context.out.print(
                f"started run [bold]{run_id}[/bold] of {runbook_id} (as {who}, through {serve.url})\n"
                f"follow it with: runbook status {run_id}")
            return
        if not as_json:
            context.out.print(f"started run [bold]{run_id}[/bold] of {runbook_id} (as {who}, through {serve.url})")
        while not (view := serve.call("GET", f"/runs/{run_id}"))["finished"]:
            time.sleep(1.0)
    if as_json:
        click.echo(json.dumps({"run_id": run_id, "state": view["state"], "message": view["message"]}))
    else:
        context.out.print(f"run {run_id}: [bold]{view['state']}[/bold] {escape(view['message'])}")
    sys.exit(0 if view["succeeded"] else EXIT_FAILED)


starter_token_option = click.option(
    "--token-file", "token_file", default=None, metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
    help="A file (readable by you alone) holding your personal token; default: RUNBOOK_TOKEN, else RUNBOOK_TOKEN_FILE.")


@cli.command("run")
@click.argument("runbook_id", metavar="ID")
@parameter_option
@click.option("--as", "requested_by", default=None, help="Who starts the run (default: $USER), typed: taken only "
              "with RUNBOOK_APPROVAL_PROOF=typed; else your token's holder, or your OS user (os-user).")
@starter_token_option
@click.option("--wait", is_flag=True, help="Follow the run: its plan, how to approve it, progress, the outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print the run id (and with --wait the outcome) as JSON.")
@pass_context
def run(context: Context, runbook_id: str, pairs: tuple[str, ...], requested_by: str | None,
        token_file: Path | None, wait: bool, as_json: bool) -> None:
    """Start a runbook. It plans, then waits for approval before it changes anything.

    The run executes on this machine, in a process of its own, with your configuration
    (RUNBOOK_RUN_ON=workers: on the work pool's workers instead). While it waits at its gate no
    process is left: `runbook approve` here starts it again. Exit code with --wait: 0 applied,
    1 failed or rejected, 2 bad input.
    """
    from mq_runbooks.app import runs

    if context.settings.server:
        _run_through_serve(context, runbook_id, pairs, requested_by, token_file, wait, as_json)
        return
    runbook = context.catalog.get(runbook_id)
    params = runbook.validate_parameters(parse_parameters(pairs))
    who = _requester(context, requested_by or "", token_file)
    if runbook.planner is not None:
        # Preflight: bad input (unknown cluster, topic, group...) is refused before a run exists.
        runbook.planner(params, context.clusters)
    from mq_runbooks.app.starts import start_run

    run_id = start_run(context.settings, runbook, params, requested_by=who)
    _started(context, run_id, f"of {runbook_id} (as {who})", wait, as_json)


def _print_restore_plan(context: Context, document: dict[str, Any], as_json: bool) -> None:
    """`runbook restore RUN --plan`: the restore's plan (RestorePlan.to_json) as a table, or JSON."""
    from mq_runbooks.app.cli_views import print_plan
    from mq_runbooks.app.run_documents import rows_as_objects
    from mq_runbooks.kit.plans import table_markdown

    if as_json:
        click.echo(json.dumps({**document, "rows": rows_as_objects(document["columns"], document["rows"])},
                              indent=2, default=str))
        return
    print_plan(context, table_markdown(f"**{document['summary']}**", document["columns"], document["rows"], 10_000,
                                       document["warnings"]), document["columns"], document["rows"])
    context.out.print(f"plan digest {document['digest'][:12]}; nothing was changed. Restore with: runbook restore "
                      f"{document['restore_of']}")


def _started(context: Context, run_id: str, what: str, wait: bool, as_json: bool, **document: str) -> None:
    """Say a run was started (`what` it is), and with `wait` follow it and exit with its outcome;
    `document`: more fields of the JSON answer."""
    if as_json and not wait:
        click.echo(json.dumps({"run_id": run_id, **document}))
        return
    if not as_json:
        context.out.print(f"started run [bold]{run_id}[/bold] {what}")
    if not wait:
        context.out.print(f"follow it with: runbook status {run_id}")
        return
    view = follow(context, run_id, quiet=as_json)
    if as_json:
        click.echo(json.dumps({"run_id": run_id, **document, "state": view.state, "message": view.message}))
    sys.exit(0 if view.succeeded else EXIT_FAILED)


@cli.command("restore", epilog=RUN_HELP)
@click.argument("run_id", metavar="RUN")
@click.option("--plan", "preview", is_flag=True, help="Show what the restore would put back against what is there "
              "now (and what moved since the run), and change nothing.")
@click.option("--as", "requested_by", default=None, help="Who asks for the restore (as for `runbook run --as`).")
@starter_token_option
@click.option("--wait", is_flag=True, help="Follow the restore run to its outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print the restore run's id (or with --plan the plan) as JSON.")
@pass_context
def restore(context: Context, run_id: str, preview: bool, requested_by: str | None, token_file: Path | None,
            wait: bool, as_json: bool) -> None:
    """Put back what an ended run changed, from its snapshot, as a new run: it plans the way back (each
    saved value against what is there now), waits for the runbook's approvers, takes the same lock,
    restores through the runbook's own restore, verifies and journals. Also after a run that
    succeeded. Exit code with --wait: 0 restored, 1 failed or rejected, 2 bad input.
    """
    from mq_runbooks.app import restores

    if context.settings.server:
        with _serve(context, _token(context, token_file)) as serve:
            _refuse_other_name(serve, requested_by or "")
            if preview:
                _print_restore_plan(context, serve.call("GET", f"/runs/{run_id}/restore"), as_json)
                return
            started = serve.call("POST", f"/runs/{run_id}/restore", {})
        _started(context, started["run_id"], f"to restore run {started['restore_of']} (as {started['requested_by']}, "
                 f"through {serve.url})", wait, as_json, restore_of=started["restore_of"])
        return
    request = restores.restore_request(context.catalog, run_id)
    if preview:
        _print_restore_plan(context, restores.restore_preview(request, context.clusters, context.settings).to_json(),
                            as_json)
        return
    who = _requester(context, requested_by or "", token_file)
    started = restores.start_restore(context.settings, request, who)
    _started(context, started, f"to restore run {request.run_id} (as {who})", wait, as_json,
             restore_of=request.run_id)


def follow(context: Context, run_id: str, quiet: bool = False, poll_s: float = 0.5) -> RunView:
    """Print the run's journal as it grows, until the run ends."""
    from mq_runbooks.app import runs
    from mq_runbooks.app.cli_views import print_entry

    shown = 0
    while True:
        view = runs.read_run(run_id)
        for entry in view.entries[shown:]:
            if not quiet:
                print_entry(context, run_id, entry)
        shown = len(view.entries)
        if view.finished:
            if not quiet:
                colour = "green" if view.succeeded else "red"
                context.out.print(f"[{colour}]{view.state}[/{colour}]: {escape(view.message)}")
            return view
        time.sleep(poll_s)


as_option = click.option("--as", "by", default="", help="Your name, as the runbook's approval policy knows it "
                         "(typed, so not proven, and refused unless RUNBOOK_APPROVAL_PROOF=typed; with a token, "
                         "the token's holder is who answers; with RUNBOOK_APPROVAL_PROOF=os-user, your OS user).")
token_option = click.option("--token-file", "token_file", default=None, metavar="FILE",
                            type=click.Path(dir_okay=False, path_type=Path),
                            help="A file (readable by you alone) holding your personal token (`runbook tokens "
                                 "issue`), proving who you are; default: RUNBOOK_TOKEN, else RUNBOOK_TOKEN_FILE. "
                                 "Never the token itself on the command line, where `ps` shows it.")


def _token(context: Context, token_file: Path | None) -> str:
    """The personal token (app/api_client.py's read_token): "" if none."""
    from mq_runbooks.app.api_client import read_token

    return read_token(context.settings, token_file)


@cli.command("approve", epilog=RUN_HELP)
@click.argument("run_id", metavar="RUN")
@as_option
@click.option("--comment", default="", help="Why you approve (kept in the journal and the postmortem).")
@token_option
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@pass_context
def approve(context: Context, run_id: str, by: str, comment: str, token_file: Path | None, as_json: bool) -> None:
    """Approve a run that waits at its gate (the runbook's policy decides who may). Waits for the
    run's verdict on the answer: exit 2 with the reason when the run refuses it."""
    _answer(context, run_id, True, by, comment, _token(context, token_file), as_json)


def _claimed_identity(context: Context, by: str, token: str, verb: str, default: str = "") -> tuple[str, str]:
    """(who, proof) as this CLI can claim them: a personal token, the OS user
    (RUNBOOK_APPROVAL_PROOF=os-user) or a typed name (`--as`, else `default`) where the setting takes one."""
    from mq_runbooks.kit.identity import OS_USER_PROOF, PROOF_SETTING, os_user

    required = context.settings.approval_proof
    if token:
        return by, f"{TOKEN_PREFIX}{token}"
    if required == "os-user":
        me = os_user()
        if by.strip() and by.strip().lower() != me.lower():
            raise UsageError(f"{PROOF_SETTING}=os-user: your OS user {me} {verb}, not {by.strip()} "
                             f"(leave out --as, or prove who you are with RUNBOOK_TOKEN or --token-file)")
        return me, OS_USER_PROOF
    if required == "token" and not by.strip():
        raise UsageError(f"say who {verb}: your personal token (RUNBOOK_TOKEN or --token-file) ({PROOF_SETTING}=token)")
    if not (by.strip() or default):
        raise UsageError(f"say who {verb}: a personal token (RUNBOOK_TOKEN or --token-file) or --as NAME "
                         f"({PROOF_SETTING}={required})")
    return by.strip() or default, ""


def _answer(context: Context, run_id: str, approved: bool, by: str, text: str, token: str, as_json: bool) -> None:
    """Answer the gate with a personal token (proven), as the OS user (RUNBOOK_APPROVAL_PROOF=os-user)
    or with a typed name (the default setting), and say how it was answered. With RUNBOOK_SERVER,
    serve judges it, by the token."""
    from mq_runbooks.app import runs
    from mq_runbooks.kit.identity import proof_kind

    if context.settings.server:
        with _serve(context, token) as serve:
            _refuse_other_name(serve, by)
            verdict = serve.call("POST", f"/runs/{run_id}/{'approve' if approved else 'reject'}",
                                 {"comment" if approved else "reason": text})
        if verdict.get("verdict") is None:
            raise RunbookError(f"the answer was sent to run {verdict.get('run_id', run_id)}, but the run has not "
                               f"judged it yet (see runbook status {run_id})")
        if as_json:
            click.echo(json.dumps({key: verdict.get(key) for key in
                                   ("run_id", "name", "runbook", "approved", "by", "proof", "verdict")}))
        else:
            context.out.print(f"{'approved' if approved else 'rejected'} run {verdict['run_id']} ({verdict['name']}, "
                              f"{verdict['runbook']}) as {verdict['by']} (your token, through serve): "
                              f"{escape(verdict['verdict'])}")
        return

    by, proof = _claimed_identity(context, by, token, "answers")
    view = runs.answer_gate(context.settings, context.catalog, run_id, approved, by, text, proof=proof)
    how = {"token": "with your token", "os-user": f"as {by} (your OS user)"}.get(proof_kind(proof),
                                                                                f"as {by} (a typed name)")
    # The run judges the answer again (signature, proof, policy, plan): its verdict is this command's.
    verdict = runs.await_verdict(view.id, view.pause_key)
    if verdict is None:
        raise RunbookError(f"the answer was sent to run {view.id}, but the run has not judged it within "
                            f"{runs.VERDICT_WAIT_S:.0f}s (is serve or a worker running? see runbook status {view.id})")
    if verdict.kind == "approval_refused":
        raise UsageError(f"refused by the run: {verdict.summary}")
    if as_json:
        click.echo(json.dumps({"run_id": view.id, "name": view.name, "runbook": view.runbook,
                               "approved": approved, "by": verdict.data.get("by", by), "proof": proof_kind(proof),
                               "verdict": verdict.summary}))
    else:
        context.out.print(f"{'approved' if approved else 'rejected'} run {view.id} ({view.name}, {view.runbook}) {how}: "
                          f"{escape(verdict.summary)}")


@cli.command("reject", epilog=RUN_HELP)
@click.argument("run_id", metavar="RUN")
@as_option
@click.option("--reason", required=True, help="Why (kept in the journal and the postmortem).")
@token_option
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@pass_context
def reject(context: Context, run_id: str, by: str, reason: str, token_file: Path | None, as_json: bool) -> None:
    """Reject a run that waits at its gate; it ends without changing anything. Waits for the run's
    verdict on the answer: exit 2 with the reason when the run refuses it."""
    _answer(context, run_id, False, by, reason, _token(context, token_file), as_json)


@cli.command("cancel", epilog=RUN_HELP)
@click.argument("run_id", metavar="RUN")
@as_option
@click.option("--reason", required=True, help="Why (kept in the journal and the postmortem).")
@token_option
@pass_context
def cancel(context: Context, run_id: str, by: str, reason: str, token_file: Path | None) -> None:
    """Stop a run that has not started acting (waiting to start, or at its gate): it ends as
    cancelled, its lock is freed and its postmortem drafted. A run that is acting cannot be cancelled."""
    from mq_runbooks.app import runs

    token = _token(context, token_file)
    if context.settings.server:
        with _serve(context, token) as serve:
            _refuse_other_name(serve, by)
            view = serve.call("POST", f"/runs/{run_id}/cancel", {"reason": reason})
        context.out.print(f"cancelled run {view['id']} ({view['name']}, {view['runbook']}): {view['message']}")
        return
    if not token and not by.strip():
        raise UsageError("say who cancels: a personal token (RUNBOOK_TOKEN or --token-file) or --as NAME")
    view = runs.cancel_run(context.settings, context.catalog, run_id, by, reason,
                           proof=f"{TOKEN_PREFIX}{token}" if token else "")
    context.out.print(f"cancelled run {view.id} ({view.name}, {view.runbook}): {view.message}")


@cli.command("runs")
@click.option("--runbook", "runbook_id", default=None, metavar="ID", help="Only runs of this runbook.")
@click.option("--state", "states", multiple=True, metavar="STATE", callback=lambda c, p, v: tuple(s.lower() for s in v),
              help="Only runs in this state (repeatable): scheduled, pending, running, paused, completed (succeeded), "
                   "failed (includes rejected and timedout), rejected, timedout, cancelled (by runbook cancel), crashed.")
@click.option("--waiting", is_flag=True, help="Only runs waiting at their approval gate (paused).")
@click.option("--mine", is_flag=True, help="Only runs I requested, or that wait for an approval I may give.")
@click.option("--as", "me", default=None, metavar="NAME", help="Who I am for --mine (default: $USER).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="How many of the newest runs (1-1000).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_context
def list_runs(context: Context, runbook_id: str | None, states: tuple[str, ...], waiting: bool, mine: bool,
              me: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first, with what each targets and who requested it. A run that does
    not move (not picked up, or waiting for another run's lock) is marked stuck, with the reason.

    On a terminal ids are shortened to 8 characters (any unique prefix of 6 or more works as RUN);
    piped, every id is whole and columns are tab-separated.
    """
    from mq_runbooks.app import runs

    if waiting:
        states = (*states, "paused") if states else ("paused",)
    if context.settings.server:
        if me:
            raise UsageError("with RUNBOOK_SERVER, --mine means whoever your token proves: leave out --as")
        query = {"limit": str(limit), **({"runbook": runbook_id} if runbook_id else {}), **({"mine": "true"} if mine else {})}
        path = "/runs?" + "&".join([*(f"{k}={v}" for k, v in query.items()), *(f"state={s}" for s in states)])
        with _serve(context, _token(context, None)) as serve:
            listed = serve.call("GET", path)
        _print_runs(context, listed, as_json)
        return
    if runbook_id is not None:
        context.catalog_report(resolve=False).catalog.get(runbook_id)  # "no runbook ...; did you mean"
    who = me or getpass.getuser()
    accept = None
    if mine:
        catalog = context.catalog

        def accept(view: RunView) -> bool:
            return view.requested_by == who or runs.waits_for(context.settings, catalog, view, who)

    views = runs.list_runs(limit=limit, runbook_id=runbook_id, states=states, mine=accept)
    from mq_runbooks.app.stuck import why_stuck_all

    stuck = why_stuck_all(context.settings, views)
    _print_runs(context, [{"id": v.id, "name": v.name, "runbook": v.runbook, "state": v.state, "target": v.target, "lock": v.lock,
                           "requested_by": v.requested_by, "started": v.started, "message": v.message,
                           "stuck": stuck.get(v.id)} for v in views], as_json)


def _print_runs(context: Context, listed: list[dict[str, Any]], as_json: bool) -> None:
    """Every column, every value whole: a table where it fits, rows folded where it does not, tab-
    separated when piped (ids whole; on a terminal 8 characters, a prefix RUN takes)."""
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    short = not context.piped
    columns = ("run", "name", "runbook", "state", "target", "requested by", "started", "message")
    rows = []
    for v in listed:
        message = f"STUCK: {v['stuck']}" if v["stuck"] else v["message"]
        rows.append((v["id"][:8] if short else v["id"], v["name"], v["runbook"],
                     f"{v['state']} (stuck)" if v["stuck"] else v["state"], v["target"], v["requested_by"],
                     _when(v["started"], short), message))
    context.rows(columns, rows, no_wrap=("run", "runbook", "state", "target", "requested by"))  # a name wraps between words


def _when(started: str | None, short: bool) -> str:
    if not started:
        return ""
    return started[:19].replace("T", " ") if short else started


def _print_status(context: Context, document: dict[str, Any], entries: list, full_plan: bool, how: str,
                  stuck: str | None = None) -> None:
    """`runbook status` on a terminal or a pipe, from the run's document (app/run_documents.py)."""
    import datetime as dt

    from mq_runbooks.app.cli_views import gate_lines, print_entry, print_plan_entry
    from mq_runbooks.kit.journal import now_utc

    def moment(value: str | None) -> dt.datetime | None:
        return dt.datetime.fromisoformat(value) if value else None

    context.out.print(f"run [bold]{document['id']}[/bold] ({document['runbook']}): [bold]{document['state']}[/bold] "
                      f"{escape(document['message'])}")
    if stuck:
        context.out.print(f"[red]stuck[/red]: {escape(stuck)}")
    for problem in document["journal_problems"]:
        context.out.print(f"[red]journal tampered with[/red]: {escape(problem)} (only entries the engine signed "
                          f"are shown and acted on)")
    for line in gate_lines(document["waiting_for"], moment(document.get("deadline")), moment(document.get("plan_at")),
                           now_utc(), how):
        context.out.print(escape(line))
    for entry in entries:
        if entry.kind == "plan" and full_plan:
            print_plan_entry(context, entry, full=True)
        else:
            # How to answer the gate is shown only while the run still waits there.
            print_entry(context, document["id"], entry, show_answer=bool(document["waiting_for"]))


def _status_through_serve(context: Context, run_id: str, full_plan: bool, as_json: bool) -> None:
    """`runbook status` with RUNBOOK_SERVER: the run as serve reads it."""
    from mq_runbooks.kit.journal import Entry

    with _serve(context, _token(context, None)) as serve:
        document = serve.call("GET", f"/runs/{run_id}" + ("?whole=true" if full_plan else ""))
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    _print_status(context, document, [Entry.from_json(entry) for entry in document["journal"]], full_plan,
                  f"runbook approve {document['id']}")


@cli.command("status", epilog=RUN_HELP)
@click.argument("run_id", metavar="RUN")
@click.option("--plan", "full_plan", is_flag=True,
              help="Show every row of the plan (with --json: every entry of the journal uncut).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the state and the journal as JSON; long lists and texts cut to their first 100 "
                   "unless --plan is given.")
@pass_context
def status(context: Context, run_id: str, full_plan: bool, as_json: bool) -> None:
    """A run's state, who it waits for, its plan and its results (from its journal); why it is
    stuck, when it does not move (not picked up since when and by whom, or waiting for a lock).

    A run that crashed (its process died) may have no postmortem yet, or one drafted before Prefect
    knew it crashed: noticing it here writes (or refreshes) its draft.
    """
    from mq_runbooks.app import runs

    if context.settings.server:
        _status_through_serve(context, run_id, full_plan, as_json)
        return
    view = runs.read_run(run_id)
    if view.state_type == "CRASHED":
        from mq_runbooks.kit.crashes import conclude
        from mq_runbooks.kit.postmortem.publish import write_postmortem

        if conclude(view.id, view.message or "Crashed"):  # its outcome and postmortem, if nobody wrote them yet
            view = runs.read_run(run_id)
        else:
            write_postmortem(view.id)  # refreshes a draft in place; a reviewed one is left alone
    from mq_runbooks.app.run_documents import run_document
    from mq_runbooks.app.stuck import why_stuck

    stuck = why_stuck(context.settings, view)
    document = {**run_document(view, whole=full_plan), "stuck": stuck}
    if as_json:
        click.echo(json.dumps(document, indent=2, default=str))
        return
    _print_status(context, document, view.entries, full_plan, f"runbook approve {view.id} --as NAME", stuck)
