"""`runbook serve`: the HTTP app (alerts, Slack, postmortem pages) and the runner of the runbooks."""
from __future__ import annotations

import click

from mq_runbooks.app.cli_base import Context, cli, pass_context


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
@click.option("--no-runner", is_flag=True, help="Only the HTTP app: runs execute on the work pool's workers "
              "(`runbook worker`, or a serve without this flag), which register the deployments.")
@click.option("--limit", default=10, show_default=True, help="At most this many runs executing at once in this "
              "process (runs waiting at their gates hold none).")
@click.option("--slack-socket-mode", is_flag=True, help="Also take Slack's commands and clicks over Socket "
              "Mode (no public URL needed); needs RUNBOOK_SLACK_APP_TOKEN, and is on whenever that is set.")
@pass_context
def serve(context: Context, host: str, port: int, no_runner: bool, limit: int, slack_socket_mode: bool) -> None:
    """Serve the HTTP endpoints and execute the runs that alerts and Slack start (a worker of the
    work pool RUNBOOK_WORK_POOL, unless --no-runner; its runs are forked from a process that imported
    Prefect and the flows once, named rb-<run id> in ps).

    Endpoints: POST /alerts/alertmanager and /alerts/grafana (bearer RUNBOOK_ALERT_TOKEN),
    POST /slack/commands and /slack/interactions (Slack signature), GET /healthz, GET /metrics,
    the postmortem pages under /postmortems (writes need the identity a proxy in
    RUNBOOK_TRUSTED_PROXIES asserts, and a same-origin request).
    With RUNBOOK_SLACK_APP_TOKEN (an xapp- token), Slack also reaches it over Socket Mode.
    """
    from mq_runbooks.app.serve import serve as run_server

    run_server(context.settings, context.catalog, host, port, with_runner=not no_runner, limit=limit,
               socket_mode=slack_socket_mode)


@cli.command("worker")
@click.option("--limit", default=10, show_default=True, help="At most this many runs executing at once "
              "(runs waiting at their gates hold none).")
@click.option("--name", default=None, help="The worker's name in Prefect (default: a generated one).")
@pass_context
def worker(context: Context, limit: int, name: str | None) -> None:
    """Execute runs of the work pool RUNBOOK_WORK_POOL on this machine (a Prefect process worker).

    Run one on every machine that reaches the brokers, with the same clusters.yaml, teams.yaml and
    RUNBOOK_* settings as `runbook serve`. It registers the catalog's deployments in the pool first.
    A run waiting at its gate holds no process: stopping a worker leaves it waiting, and any worker
    executes it once it is answered. Runs are forked from a process that imported Prefect and the
    catalog's flows once (named rb-<run id> in ps); restart the worker to put a changed runbook in
    service. A run that is acting when the worker stops goes on to its end.
    """
    from mq_runbooks.app.serve import require_prefect
    from mq_runbooks.app.preloaded_worker import run_worker_until_stopped
    from mq_runbooks.kit.crashes import ensure_zombie_automation

    require_prefect(context.settings.prefect_api_url, headers=context.settings.prefect_headers())
    ensure_zombie_automation()
    run_worker_until_stopped(context.settings, context.catalog, limit, name=name, started=lambda: context.out.print(
        f"worker of pool {context.settings.work_pool}: executing runs (Ctrl-C or SIGTERM stops it)"))


@cli.command("demo")
@pass_context
def demo(context: Context) -> None:
    """Play a whole incident on the local stack (about a minute; needs `dev/stack up`).

    A bad deploy of a billing consumer, an Alertmanager alert to `runbook serve`, kafka-replay's plan
    at the gate, an approval by a second person, the offsets moved, the consumer catching up, the
    alert resolving, and the postmortem draft with its path and review page. What the demo creates
    on Kafka is deleted at the end.
    """
    import sys

    from mq_runbooks.app.demo import Demo

    code = Demo(context.settings, context.clusters, context.catalog, context.out.print).run()
    sys.exit(code)
