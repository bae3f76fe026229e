"""The `runbook` command line: a thin edge that turns arguments into calls of the engine and the
results into tables or JSON. Exit codes: 0 success, 1 the runbook (or a check) failed or was
rejected, 2 bad input (parameters, configuration, unknown names)."""
from __future__ import annotations

import json
import sys
from functools import cached_property

import click
import httpx
from rich.console import Console
from rich.table import Table

from mq_runbooks.base.catalog import Catalog, load_catalog
from mq_runbooks.base.clusters import Clusters, load_clusters
from mq_runbooks.base.errors import BrokerError, ConfigError, RunbookError, UsageError
from mq_runbooks.base.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class Context:
    """What every command may need, loaded once and only when asked for."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.out = Console(highlight=False, soft_wrap=True)

    @cached_property
    def clusters(self) -> Clusters:
        return load_clusters(self.settings.clusters)

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.settings.catalog, self.settings.team_catalog)


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.pass_context
def cli(click_context: click.Context) -> None:
    """mq-runbooks: incident-response runbooks for Kafka and RabbitMQ.

    Each runbook observes, shows its exact plan, waits for approval, acts, verifies, and leaves a
    record for the postmortem. Configuration: clusters.yaml (RUNBOOK_CLUSTERS) and the runbook
    files in runbooks/ (RUNBOOK_CATALOG). Exit codes: 0 success, 1 failed or rejected, 2 bad input.
    """
    click_context.obj = Context(Settings.from_environ())


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_context
def list_runbooks(context: Context, as_json: bool) -> None:
    """List the runbooks of the catalog."""
    runbooks = list(context.catalog)
    if as_json:
        click.echo(json.dumps([
            {"id": r.id, "title": r.title, "risk": r.risk, "triggers": len(r.triggers)} for r in runbooks
        ], indent=2))
        return
    table = Table("id", "title", "risk", "started by", title=f"{len(runbooks)} runbook(s) in {context.catalog.directory}")
    for runbook in runbooks:
        alerts = sorted({str(m) for t in runbook.triggers for m in t.matchers if m.name == "alertname"})
        table.add_row(runbook.id, runbook.title, runbook.risk, ", ".join(alerts) or "CLI / Slack only")
    context.out.print(table)


@cli.command("show")
@click.argument("runbook_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_context
def show(context: Context, runbook_id: str, as_json: bool) -> None:
    """Show a runbook: what it does, its parameters, who approves, which alerts start it."""
    runbook = context.catalog.get(runbook_id)
    fields = runbook.parameters_model.model_fields
    if as_json:
        document = runbook.model_dump(mode="json")
        document["triggers"] = [
            {"matchers": [str(m) for m in t.matchers], "params": t.params} for t in runbook.triggers
        ]
        document["parameter_schema"] = runbook.parameters_model.model_json_schema()
        click.echo(json.dumps(document, indent=2))
        return
    out = context.out
    out.print(f"[bold]{runbook.id}[/bold]: {runbook.title}  (risk: {runbook.risk})")
    out.print(runbook.description.strip())
    table = Table("parameter", "type", "default", "meaning", title="parameters (-p key=value)")
    for name, info in fields.items():
        default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
        table.add_row(name, _type_name(info.annotation), default, info.description or "")
    out.print(table)
    policy = runbook.approval
    out.print(
        f"approval: {policy.required} of {', '.join(policy.approvers)}; "
        f"self-approval {'allowed' if policy.self_approval else 'not allowed'}; "
        f"times out after {policy.timeout:.0f}s"
    )
    out.print(f"lock: {runbook.lock}")
    for trigger in runbook.triggers:
        out.print(f"trigger: {', '.join(str(m) for m in trigger.matchers)} -> {trigger.params}")


def _type_name(annotation: object) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


@cli.command("doctor")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds each check may take.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_context
def doctor(context: Context, timeout: float, as_json: bool) -> None:
    """Check that every configured cluster, the Prefect API and Slack (if configured) answer.

    Exits 1 if any of them does not.
    """
    from mq_runbooks.app.doctor import run_checks

    checks = run_checks(context.settings, context.clusters, timeout_s=timeout)
    if as_json:
        click.echo(json.dumps([check.__dict__ for check in checks], indent=2))
    else:
        table = Table("component", "address", "status", "detail")
        for check in checks:
            status = "[green]reachable[/green]" if check.ok else "[red]UNREACHABLE[/red]"
            table.add_row(check.component, check.address, status, check.detail)
        context.out.print(table)
    if not all(check.ok for check in checks if check.required):
        sys.exit(EXIT_FAILED)


def main() -> None:
    """Console entry point: runs the CLI, turning the engine's errors into messages and exit codes."""
    try:
        # Prefect fixes its API URL when first imported: point it at our server before that.
        Settings.from_environ().apply_to_prefect()
        import mq_runbooks.app.cli_runs  # noqa: F401  (registers plan, run, approve, reject, runs, status)
        import mq_runbooks.app.cli_serve  # noqa: F401  (registers serve, demo)
        import mq_runbooks.app.cli_postmortems  # noqa: F401  (registers postmortems list|show|review|draft)
        import mq_runbooks.app.cli_authoring  # noqa: F401  (registers new, validate)

        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_BAD_INPUT)
    except (UsageError, ConfigError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except BrokerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except RunbookError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except httpx.TransportError as exc:
        url = Settings.from_environ().prefect_api_url
        click.echo(f"error: cannot reach the Prefect API at {url} ({type(exc).__name__}: {exc}); "
                   f"is it running? (dev/stack up starts the local one)", err=True)
        sys.exit(EXIT_FAILED)
