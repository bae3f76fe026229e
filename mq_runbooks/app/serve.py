"""`runbook serve`: the HTTP app and, unless told otherwise, a Prefect worker of the work pool
(RUNBOOK_WORK_POOL) where every catalog runbook is a deployment (`<id>/<RUNBOOK_DEPLOYMENT>`); the
worker executes the runs alerts and Slack start (app/workers.py).

One process for one machine. In a bigger setup, run `runbook worker` (or `prefect worker start
--pool mq-runbooks`) on the machines that reach the brokers, and several `runbook serve --no-runner`
replicas behind a load balancer: they keep no state of their own (deduplication is Prefect's
idempotency keys, locks are Prefect's concurrency leases, the record is the journal on the Prefect
server, a run waiting at its gate is a suspended flow run with no process).

Every replica sweeps every 30 s: crashed runs and gates whose deadline passed get their outcome and
postmortem (kit/crashes.py).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time

import uvicorn

from mq_runbooks.base.catalog import Catalog
from mq_runbooks.base.errors import ConfigError, UnreachableError, UsageError
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.crashes import (
    conclude_crashed, conclude_expired, ensure_zombie_automation, never_started, recent_crashed, recent_expired,
)

log = logging.getLogger("runbook.serve")


def find_runs_with_tag(tag: str) -> list[str]:
    from mq_runbooks.kit import gateway

    with gateway.connect() as prefect:
        runs = prefect.read_flow_runs(tags=[tag], limit=20)
    return [str(run.id) for run in runs]


def recent_runs() -> list[dict]:
    """Runs of ours that ended in the last 24 hours: runbook, state name, duration."""
    import datetime as dt

    from mq_runbooks.kit import gateway
    from mq_runbooks.kit.gateway.names import RUN_TAG, runbook_of

    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=24)
    with gateway.connect() as prefect:
        runs = prefect.read_flow_runs(tags=[RUN_TAG], ended_after=since, limit=200)
    found = []
    for run in runs:
        runbook = runbook_of(run.tags) or "?"
        duration = (run.end_time - run.start_time).total_seconds() if run.end_time and run.start_time else 0.0
        found.append({"runbook": runbook, "state": run.state.name if run.state else "Unknown", "duration_s": duration})
    return found


def build_services(settings: Settings, catalog: Catalog):
    from functools import cache

    from mq_runbooks.app import starts
    from mq_runbooks.base.clusters import load_clusters
    from mq_runbooks.app.api_routes import add_api_routes
    from mq_runbooks.app.http import Services
    from mq_runbooks.app.postmortem_routes import add_postmortem_routes
    from mq_runbooks.app.slack_routes import add_slack_routes
    from mq_runbooks.kit import journal
    from mq_runbooks.kit.postmortem.publish import write_postmortem

    from mq_runbooks.kit.signing import signing_key

    starter = _Waking(starts.DeploymentStarter(settings.deployment, signing_key(settings)))
    services = Services(
        settings=settings, catalog=catalog, start=starter, known=starter.known,
        find_runs=find_runs_with_tag, record=journal.write, occurrence_tag=starts.alert_tag,
        clusters=cache(lambda: load_clusters(settings.clusters)),
        on_resolved=lambda run_id: _redraft_if_finished(run_id, write_postmortem),
        extra_routes=[add_slack_routes, add_postmortem_routes, add_api_routes],
    )
    services.metrics.watch_runs(recent_runs)
    return services


class _Waking:
    """A run starter after which this process's worker executes the run it created at once
    (app/workers.py: wake)."""

    def __init__(self, starter) -> None:
        self._starter = starter

    def __call__(self, *args, **kwargs):
        from mq_runbooks.app.workers import wake

        started = self._starter(*args, **kwargs)
        run_id, existed = started
        if not existed:  # a repeat of an alert already started is executed already (a burst repeats each many times)
            wake(run_id)
        return started

    def __getattr__(self, name: str):
        return getattr(self._starter, name)


def _redraft_if_finished(run_id: str, write_postmortem) -> None:
    """A run that has ended gets its draft refreshed with the resolution (a running one drafts at its end)."""
    from mq_runbooks.app.runs import read_run

    if read_run(run_id).finished:
        write_postmortem(run_id)


def _worker_thread(settings: Settings, catalog: Catalog, limit: int, ready: threading.Event,
                   failed: list[BaseException]) -> None:
    from mq_runbooks.app.preloaded_worker import run_worker

    try:
        asyncio.run(run_worker(settings, catalog, limit, started=ready.set))
    except BaseException as exc:  # reported to the main thread, which exits with it
        failed.append(exc)
        ready.set()


def _sweep(settings: Settings, forget, every_s: float = 30.0) -> None:
    """Conclude the runs that ended with nobody there: crashed ones (their process died; see
    kit/crashes.py) and gates whose deadline passed while suspended; let a repeat of the alert that
    started a crashed run start a new run (`forget`). It executes no run: a local run is executed by whoever
    started or answered it, with their own configuration.
    The first round waits too: serve answers its first requests (Slack's 3 s) before it reads anything else."""
    checked: set[str] = set()  # each crashed or expired run's journal is read once per process
    while True:
        time.sleep(every_s)
        try:
            crashed = {run_id: message for run_id, message in recent_crashed().items() if run_id not in checked}
            concluded = conclude_crashed(crashed)
            for run_id in concluded:
                log.warning("run %s crashed: its outcome and postmortem draft are written", run_id)
            # A run made due again (it never started) goes on for its alert: not forgotten, looked at again.
            done = {run_id for run_id, message in crashed.items() if run_id in concluded or not never_started(message)}
            forget(done)
            checked |= done
            for run_id in recent_expired():
                if run_id not in checked and _each(run_id, "concluding a timed-out gate", conclude_expired) is not None:
                    checked.add(run_id)  # concluded now (one INFO line) or before: not read again
        except Exception as exc:  # noqa: BLE001  (a sweep that failed is tried again at the next round)
            log.warning("sweeping runs failed: %s: %s", type(exc).__name__, exc)


def _each(run_id: str, what: str, call):
    """One run's part of a sweep: its failure is logged and does not keep the sweep from the others."""
    try:
        return call(run_id)
    except Exception as exc:  # noqa: BLE001
        log.warning("%s failed for run %s: %s: %s", what, run_id, type(exc).__name__, exc)
        return None


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket serve listens on, bound before anything starts; UsageError naming the address when
    it is taken or not ours to bind.

    Made with IPPROTO_TCP named (socket.create_server leaves it 0): the connections it accepts inherit
    it, and asyncio sets TCP_NODELAY only on sockets that name it. Without it, every answer written in
    two parts (head, then body) waited ~40 ms for the client's delayed ACK."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
        return sock
    except OSError as exc:
        sock.close()
        hint = "; stop what listens there or choose another --port" if exc.errno == errno.EADDRINUSE else ""
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None


def require_prefect(api_url: str, timeout_s: float = 10.0, headers: dict[str, str] | None = None) -> None:
    """UnreachableError, saying where and how to start it, unless the Prefect API answers; ConfigError
    naming PREFECT_API_AUTH_STRING when it refuses our credential (`headers`)."""
    from mq_runbooks.app.doctor import UNAUTHORIZED, check_prefect

    check = check_prefect(api_url, timeout_s, headers)
    if check.status == UNAUTHORIZED:
        raise ConfigError(f"{check.detail} (at {api_url})")
    if not check.ok:
        raise UnreachableError(f"the Prefect API at {api_url} does not answer ({check.detail}); serve needs it "
                               f"to start and record runs: start it (dev/stack up here) or set RUNBOOK_PREFECT_API_URL")


def serve(settings: Settings, catalog: Catalog, host: str, port: int, with_runner: bool, limit: int,
          socket_mode: bool = False) -> None:
    """Socket Mode (Slack over a WebSocket) is on with `socket_mode` or when RUNBOOK_SLACK_APP_TOKEN is set."""
    from mq_runbooks.app.http import create_app

    listener_socket = listening_socket(host, port)
    require_prefect(settings.prefect_api_url, headers=settings.prefect_headers())
    socket_mode = socket_mode or settings.slack_app_token is not None
    if socket_mode:
        from mq_runbooks.app.slack_socket import app_token

        app_token(settings)  # a missing or wrong token stops serve before anything starts
    if with_runner:
        ready, failed = threading.Event(), []
        thread = threading.Thread(target=_worker_thread, args=(settings, catalog, limit, ready, failed),
                                  daemon=True, name="prefect-worker")
        thread.start()
        if not ready.wait(timeout=120) or failed:
            raise UnreachableError(f"the Prefect worker did not start: {failed[0] if failed else 'timed out'}")
        log.info("executing the runs of %d runbook deployment(s) in work pool %s", len(catalog), settings.work_pool)

    ensure_zombie_automation()
    services = build_services(settings, catalog)
    threading.Thread(target=_sweep, args=(settings, services.start.forget), daemon=True, name="sweep-runs").start()
    listener = None
    if socket_mode:
        from mq_runbooks.app.slack_socket import SocketModeListener

        listener = SocketModeListener(services)
        listener.start()
    try:
        # proxy_headers off: request.client must be the peer itself, the address that
        # RUNBOOK_TRUSTED_PROXIES is checked against, not what an X-Forwarded-For header claims.
        config = uvicorn.Config(create_app(services), host=host, port=port, log_level="info", access_log=False,
                                proxy_headers=False)
        uvicorn.Server(config).run(sockets=[listener_socket])
    finally:
        if listener is not None:
            listener.stop()
