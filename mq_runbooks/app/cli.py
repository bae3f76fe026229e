"""The `runbook` command line: a thin edge that turns arguments into calls of the engine and the
results into tables or JSON. Exit codes: 0 success, 1 the runbook (or a check) failed or was
rejected, 2 bad input (parameters, configuration, unknown names).

Commands that do not talk to Prefect (--help, list, doctor, postmortems) never import it: each
command module imports what talks to Prefect inside the command that needs it."""
from __future__ import annotations

import logging
import sys

import click

from mq_runbooks.app.cli_base import EXIT_BAD_INPUT, EXIT_FAILED, cli
from mq_runbooks.base.errors import BrokerError, ConfigError, RunbookError, UsageError
from mq_runbooks.base.settings import Settings

__all__ = ["cli", "main"]


def main() -> None:
    """Console entry point: runs the CLI, turning the engine's errors into messages and exit codes."""
    try:
        # Prefect fixes its API URL when first imported: point it at our server before that.
        Settings.from_environ().apply_to_prefect()
        # At exit Prefect's events worker warns "Still processing items" while it flushes what a
        # command recorded: noise on an operator's console (the items are still sent).
        logging.getLogger("EventsWorker").setLevel(logging.ERROR)
        import mq_runbooks.app.cli_catalog  # noqa: F401  (registers list, show, doctor)
        import mq_runbooks.app.cli_runs  # noqa: F401  (registers plan, run, approve, reject, runs, status)
        import mq_runbooks.app.cli_serve  # noqa: F401  (registers serve, demo)
        import mq_runbooks.app.cli_postmortems  # noqa: F401  (registers postmortems list|show|review|draft)
        import mq_runbooks.app.cli_authoring  # noqa: F401  (registers new, validate)
        import mq_runbooks.app.cli_tokens  # noqa: F401  (registers tokens issue|revoke|list)

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
    except Exception as exc:
        httpx = sys.modules.get("httpx")  # loaded with Prefect, by the commands that talk to it
        refusal = _prefect_refusal(exc, httpx) if httpx is not None else None
        if refusal is not None:  # a configuration error: the credential, not the command
            click.echo(f"error: {refusal}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        if httpx is None or not isinstance(exc, httpx.TransportError):
            raise
        url = Settings.from_environ().prefect_api_url
        click.echo(f"error: cannot reach the Prefect API at {url} ({type(exc).__name__}: {exc}); "
                   f"is it running? (dev/stack up starts the local one)", err=True)
        sys.exit(EXIT_FAILED)


def _prefect_refusal(exc: BaseException, httpx) -> str | None:
    """One line saying what to set, when `exc` (or what caused it) is the Prefect API refusing our
    credential (HTTP 401 or 403 from its URL); None otherwise."""
    from mq_runbooks.app.doctor import unauthorized

    settings = Settings.from_environ()
    api_url = settings.prefect_api_url.rstrip("/")
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (401, 403) \
                and str(exc.request.url).startswith(api_url):
            return f"{unauthorized(exc.response.status_code, settings.prefect_api_auth_string is not None)} (at {api_url})"
        exc = exc.__cause__ or exc.__context__
    return None
