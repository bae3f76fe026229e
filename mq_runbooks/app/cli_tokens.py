"""`runbook tokens issue|revoke|list`: personal tokens that prove who answers a gate from the CLI.

Admin commands: they need the engine's signing key (RUNBOOK_SIGNING_KEY, as serve and the workers
have it), since only each token's HMAC by that key is stored, on the Prefect server: a token minted
with another key, or a hash written straight into the variable, is taken by no gate.
"""
from __future__ import annotations

import json

import click
from rich.table import Table

from mq_runbooks.app.cli_base import Context, cli, pass_context
from mq_runbooks.kit.identity import issue_token, list_tokens, revoke_token
from mq_runbooks.kit.signing import signing_key


@cli.group("tokens")
def tokens() -> None:
    """Personal tokens for `runbook approve|reject` (admin, with the signing key; stored as HMACs on the Prefect server)."""


@tokens.command("issue")
@click.argument("name")
@pass_context
def issue(context: Context, name: str) -> None:
    """Issue a token for NAME (as teams.yaml names them), replacing any they had. Shown once."""
    token = issue_token(context.settings.deployment, name, signing_key(context.settings))
    click.echo(token)
    click.echo(f"token for {name}: give it to them privately; they set RUNBOOK_TOKEN to it "
               f"(or keep it in a 0600 file named by RUNBOOK_TOKEN_FILE or --token-file). Only its HMAC by the signing key is kept.", err=True)


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
