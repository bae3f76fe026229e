"""`runbook tokens issue|revoke|list`: personal tokens that prove who answers a gate from the CLI.

Admin commands: whoever may write the Prefect server's variables may issue tokens, so close the
Prefect API to everyone else (README, 'Security'). Only each token's SHA-256 is stored, on the server.
"""
from __future__ import annotations

import json

import click
from rich.table import Table

from mq_runbooks.app.cli import Context, cli, pass_context
from mq_runbooks.kit.identity import issue_token, list_tokens, revoke_token


@cli.group("tokens")
def tokens() -> None:
    """Personal tokens for `runbook approve|reject` (admin; stored hashed on the Prefect server)."""


@tokens.command("issue")
@click.argument("name")
@pass_context
def issue(context: Context, name: str) -> None:
    """Issue a token for NAME (as teams.yaml names them), replacing any they had. Shown once."""
    token = issue_token(context.settings.deployment, name)
    click.echo(token)
    click.echo(f"token for {name}: give it to them privately; they set RUNBOOK_TOKEN to it "
               f"(or pass --token). Only its hash is kept.", err=True)


@tokens.command("revoke")
@click.argument("name")
@pass_context
def revoke(context: Context, name: str) -> None:
    """Revoke NAME's token: answers with it are refused from now on, in every run."""
    revoke_token(context.settings.deployment, name)
    click.echo(f"revoked the token of {name}")


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_context
def list_command(context: Context, as_json: bool) -> None:
    """Who holds a token, and since when (never the tokens or their hashes)."""
    holders = list_tokens(context.settings.deployment)
    if as_json:
        click.echo(json.dumps(holders, indent=2))
        return
    table = Table("name", "issued (UTC)", title=f"{len(holders)} token(s)")
    for holder in holders:
        table.add_row(holder["name"], holder["issued"])
    context.out.print(table)
