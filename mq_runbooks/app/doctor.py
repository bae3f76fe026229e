"""`runbook doctor`: is the catalog sound, and can the engine reach every configured cluster (Kafka,
RabbitMQ, Redis, ActiveMQ Artemis), its endpoint switches, MirrorMaker 2, the Prefect API and Slack?

Each check runs in its own thread with a bounded timeout, so one dead cluster costs its timeout
once, not once per cluster. A check never raises: it reports ok or not, with the reason.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from mq_runbooks.app.doctor_artemis import artemis_jobs
from mq_runbooks.app.doctor_check import Check, reason
from mq_runbooks.app.doctor_rocketmq import rocketmq_jobs
from mq_runbooks.app.doctor_redis import redis_jobs
from mq_runbooks.base.catalog import CatalogReport
from mq_runbooks.base.clusters import Clusters, KafkaCluster, RabbitCluster
from mq_runbooks.base.settings import Settings

# MirrorMaker 2 writes a heartbeat every second (the stack's and Kafka's default): older means stopped.
HEARTBEAT_MAX_AGE_S = 60.0


def check_kafka(cluster: KafkaCluster, timeout_s: float) -> Check:
    from mq_runbooks.integrations.kafka import KafkaClient

    address = cluster.bootstrap_servers
    try:
        with KafkaClient.from_cluster(cluster, timeout_s) as kafka:
            description = kafka.describe_cluster()
        detail = f"cluster id {description.cluster_id}, {len(description.brokers)} broker(s)"
        return Check(f"kafka {cluster.name}", address, True, detail, status="reachable")
    except Exception as exc:  # the reason is the report
        return Check(f"kafka {cluster.name}", address, False, reason(exc), status="UNREACHABLE")


def check_rabbitmq(cluster: RabbitCluster, timeout_s: float) -> Check:
    from mq_runbooks.integrations.rabbitmq import RabbitManagement
    from mq_runbooks.integrations.rabbitmq_amqp import amqp_check

    address = f"{cluster.display_amqp_url}, {cluster.management_url}"
    username, password = cluster.management_credentials()
    try:
        with RabbitManagement(cluster.management_url, username, password, name=cluster.name,
                              timeout_s=timeout_s) as management:
            overview = management.overview()
        server = amqp_check(cluster.amqp_url.get_secret_value(), timeout_s=timeout_s)
        detail = f"RabbitMQ {overview.rabbitmq_version} on {overview.node}; AMQP: {server}"
        return Check(f"rabbitmq {cluster.name}", address, True, detail, status="reachable")
    except Exception as exc:
        return Check(f"rabbitmq {cluster.name}", address, False, reason(exc), status="UNREACHABLE")


UNAUTHORIZED = "UNAUTHORIZED"


def check_prefect(api_url: str, timeout_s: float, headers: dict[str, str] | None = None) -> Check:
    """The Prefect API answers (/health) and takes our credential (`headers`, Settings.prefect_headers():
    /health asks for none, so the version is read too); status UNAUTHORIZED when it refuses it."""
    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", headers=headers, timeout=timeout_s)
        if response.status_code != 200:
            return Check("prefect", api_url, False, f"/health answered HTTP {response.status_code}", status="UNHEALTHY")
        version = httpx.get(f"{api_url.rstrip('/')}/admin/version", headers=headers, timeout=timeout_s)
        if version.status_code in (401, 403):
            return Check("prefect", api_url, False, unauthorized(version.status_code, bool(headers)),
                         status=UNAUTHORIZED)
        version.raise_for_status()
        return Check("prefect", api_url, True, f"server {version.json()}", status="reachable")
    except (httpx.HTTPError, ValueError) as exc:
        return Check("prefect", api_url, False, reason(exc), status="UNREACHABLE")


def unauthorized(status: int, sent: bool) -> str:
    """What to do when the Prefect API refuses us (HTTP 401 or 403), in one line."""
    if sent:
        return (f"the Prefect API refused the credential (HTTP {status}): PREFECT_API_AUTH_STRING is not the "
                f"user:password of the server's PREFECT_SERVER_API_AUTH_STRING")
    return (f"the Prefect API asks for a credential (HTTP {status}): set PREFECT_API_AUTH_STRING to the "
            f"user:password of the server's PREFECT_SERVER_API_AUTH_STRING")


def check_workers(settings: Settings, timeout_s: float) -> Check:
    """The work pool whose workers execute the runs of alerts and Slack, and its workers online. No
    worker is reported, not counted as a problem: `runbook run` executes on its own machine."""
    api = settings.prefect_api_url.rstrip("/")
    component = f"work pool {settings.work_pool}"
    headers = settings.prefect_headers()
    try:
        pool = httpx.get(f"{api}/work_pools/{settings.work_pool}", headers=headers, timeout=timeout_s)
        if pool.status_code == 404:
            return Check(component, api, False, "not created yet: `runbook serve` or `runbook worker` creates it",
                         required=False, status="missing")
        if pool.status_code in (401, 403):  # the prefect check names the problem
            return Check(component, api, False, "not read: the Prefect API refused us (see prefect)",
                         required=False, status=UNAUTHORIZED)
        pool.raise_for_status()
        workers = httpx.post(f"{api}/work_pools/{settings.work_pool}/workers/filter", json={}, headers=headers,
                             timeout=timeout_s)
        workers.raise_for_status()
    except (httpx.HTTPError, ValueError) as exc:
        return Check(component, api, False, reason(exc), required=False, status="UNREADABLE")
    online = [w["name"] for w in workers.json() if w.get("status") == "ONLINE"]
    if not online:
        return Check(component, api, False, "no worker online: runs of alerts and Slack wait until `runbook serve` "
                     "or `runbook worker` runs", required=False, status="no worker", data={"workers": []})
    return Check(component, api, True, f"{len(online)} worker(s) online: {', '.join(online[:5])}",
                 status="ready", data={"workers": online})


def check_slack(settings: Settings, timeout_s: float) -> Check:
    if settings.slack_bot_token is None:
        return Check("slack", "", True, "not configured (RUNBOOK_SLACK_BOT_TOKEN is not set): approvals go "
                     "through `runbook approve|reject`", required=False, status="not configured")
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    client = WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
                       timeout=int(max(1, timeout_s)))
    try:
        answer = client.auth_test()
        return Check("slack", settings.slack_api_url, True, f"token valid: team {answer.get('team')}, "
                     f"bot {answer.get('user')}", status="reachable")
    except SlackApiError as exc:
        return Check("slack", settings.slack_api_url, False, f"Slack refused the token (auth.test): "
                     f"{exc.response.get('error')}", status="REFUSED")
    except Exception as exc:
        return Check("slack", settings.slack_api_url, False, reason(exc), status="UNREACHABLE")


def check_catalog(report: CatalogReport) -> list[Check]:
    """One check for the catalog, and one failed check per broken runbook file."""
    directory = str(report.catalog.directory)
    checks = [Check("catalog", directory, not report.broken,
                    f"{len(report.catalog)} runbook(s) load" + (f", {len(report.broken)} broken" if report.broken else ""),
                    status="ok" if not report.broken else "BROKEN")]
    for path, why in report.broken.items():
        detail = " ".join(line.strip() for line in why.splitlines())
        checks.append(Check(f"runbook {Path(path).stem}", path, False, detail, status="BROKEN"))
    return checks


def check_teams(settings: Settings, report: CatalogReport) -> Check:
    """teams.yaml exists, loads, and has every @team the catalog's policies name."""
    from mq_runbooks.base.errors import ConfigError
    from mq_runbooks.kit.conformance import check_policy, load_teams_or_none

    try:
        teams = load_teams_or_none(settings.teams)
    except ConfigError as exc:
        return Check("teams", str(settings.teams), False, str(exc), status="BROKEN")
    if teams is None:
        named = sorted({name for runbook in report.catalog
                        for name in [*runbook.approval.approvers, *runbook.starters.plan, *(runbook.starters.run or [])]
                        if name.startswith("@")})
        return Check("teams", str(settings.teams), not named,
                     f"no such file (RUNBOOK_TEAMS): the policies name {', '.join(named)}, and nobody is in them"
                     if named else "no such file (RUNBOOK_TEAMS); no policy names a team",
                     status="MISSING" if named else "none")
    problems = [f"{runbook.id}: {problem}" for runbook in report.catalog
                for problem in check_policy(runbook, teams, settings.teams)]
    if problems:
        return Check("teams", str(settings.teams), False, "; ".join(problems), status="UNKNOWN TEAM")
    return Check("teams", str(settings.teams), True, f"{len(teams)} team(s): {', '.join(sorted(teams))}")


def check_switch(clusters: Clusters, name: str) -> Check:
    """The switch's current value is readable (and a file switch's file is writable)."""
    from mq_runbooks.integrations.switches import FileSwitch, switch_named

    try:
        switch = switch_named(clusters, name)
        address = switch.describe()
        current = switch.current()
    except Exception as exc:  # the reason is the report
        return Check(f"switch {name}", "", False, f"cannot read it: {reason(exc)}", status="UNREADABLE")
    points_at = [cluster for cluster, value in switch.config.values.items() if value == current]
    detail = (f"points at {points_at[0]} ({current})" if points_at else
              f"holds {current!r}, which is no configured cluster's value" if current is not None else
              "not set yet (the first switch writes it)")
    if isinstance(switch, FileSwitch):
        path = switch.path
        where = path if path.exists() else next((p for p in path.parents if p.exists()), path.parent)
        if not os.access(where, os.W_OK):
            return Check(f"switch {name}", address, False, f"{detail}; {where} is not writable",
                         status="NOT WRITABLE")
        detail += "; writable"
    return Check(f"switch {name}", address, True, detail)


def check_mirrormaker(cluster: KafkaCluster, timeout_s: float) -> Check:
    """MM2 into `cluster` runs (a fresh heartbeat) and how old each group's last checkpoint is."""
    from mq_runbooks.integrations.mirrormaker import MirrorState

    alias = cluster.replication.source_alias
    component = f"mirrormaker2 {alias} -> {cluster.name}"
    try:
        state = MirrorState(cluster.client_config(), source_alias=alias, name=cluster.name, timeout_s=timeout_s)
        deadline = time.monotonic() + timeout_s
        beat = state.last_heartbeat()
        while beat is None and time.monotonic() < deadline:  # a stack just started: MM2's first beat
            time.sleep(0.5)
            beat = state.last_heartbeat()
        checkpoints = state.checkpoints()
    except Exception as exc:
        return Check(component, cluster.bootstrap_servers, False, f"cannot read MM2's topics: {reason(exc)}",
                     status="UNREADABLE")
    now_ms = int(time.time() * 1000)
    ages: dict[str, float] = {}
    for checkpoint in checkpoints.values():
        age = checkpoint.age_s(now_ms)
        ages[checkpoint.group] = min(age, ages.get(checkpoint.group, age))
    newest = sorted(ages.items(), key=lambda item: item[1])
    shown = ", ".join(f"{group} {age:.0f}s" for group, age in newest[:5]) + (" ..." if len(newest) > 5 else "")
    groups = f"checkpoints of {len(ages)} group(s), newest first: {shown}" if ages else "no checkpoints yet"
    data = {"heartbeat_age_s": beat.age_s(now_ms) if beat else None,
            "checkpoint_age_s": {group: round(age, 1) for group, age in newest}}
    if beat is None:
        return Check(component, cluster.bootstrap_servers, False, f"no heartbeat from MM2 ({groups})",
                     status="NOT RUNNING", data=data)
    if beat.age_s(now_ms) > HEARTBEAT_MAX_AGE_S:
        return Check(component, cluster.bootstrap_servers, False, f"last heartbeat {beat.age_s(now_ms):.0f}s ago: "
                     f"MM2 is stopped ({groups})", status="STOPPED", data=data)
    return Check(component, cluster.bootstrap_servers, True,
                 f"heartbeat {beat.age_s(now_ms):.0f}s ago; {groups}", status="running", data=data)


def check_mode(settings: Settings, timeout_s: float) -> Check:
    """How this CLI acts: through `runbook serve` (RUNBOOK_SERVER, with a personal token) or directly
    against Prefect (direct mode: for one person on their own machine; see the README, 'Security')."""
    if not settings.server:
        return Check("mode", settings.prefect_api_url, True, "direct: this CLI talks to Prefect itself, for one "
                     "person on their own machine; people of a team set RUNBOOK_SERVER and a personal token instead",
                     status="direct")
    from mq_runbooks.app.api_client import ServeClient, read_token
    from mq_runbooks.base.errors import RunbookError

    try:
        with ServeClient(settings.server, read_token(settings)) as serve:
            who = serve.call("GET", "/whoami")
    except RunbookError as exc:
        return Check("mode", settings.server, False, f"through serve, but: {exc}", status="UNUSABLE")
    return Check("mode", settings.server, True, f"through serve as {who['name']} ({who['proof']})", status="serve")


def check_signing_key(settings: Settings) -> Check:
    """The engine's signing key: where it comes from (its value is never shown)."""
    from mq_runbooks.base.errors import ConfigError
    from mq_runbooks.kit.signing import default_key_file, signing_key

    where = "RUNBOOK_SIGNING_KEY" if settings.signing_key is not None else str(
        settings.signing_key_file or default_key_file())
    try:
        signing_key(settings)
    except ConfigError as exc:
        return Check("signing key", where, False, str(exc), status="UNUSABLE")
    detail = ("from RUNBOOK_SIGNING_KEY: every serve and worker of this installation must have the same one"
              if settings.signing_key is not None else
              "this machine's own key file: enough for one machine; set one RUNBOOK_SIGNING_KEY on every serve and "
              "worker of an installation")
    return Check("signing key", where, True, detail)


def run_checks(settings: Settings, clusters: Clusters, catalog: CatalogReport,
               timeout_s: float = 5.0) -> list[Check]:
    """Every check, concurrently; results in a stable order (catalog, Prefect, the work pool, Kafka,
    MirrorMaker 2, RabbitMQ, Redis, Artemis, switches, Slack)."""
    jobs: list[Callable[[], Check]] = [] if settings.server else [  # through serve: Prefect is serve's, not ours
        lambda: check_prefect(settings.prefect_api_url, timeout_s, settings.prefect_headers()),
        lambda: check_workers(settings, timeout_s)]
    jobs += [lambda c=cluster: check_kafka(c, timeout_s) for cluster in clusters.kafka.values()]
    jobs += [lambda c=cluster: check_mirrormaker(c, timeout_s)
             for cluster in clusters.kafka.values() if cluster.replication is not None]
    jobs += [lambda c=cluster: check_rabbitmq(c, timeout_s) for cluster in clusters.rabbitmq.values()]
    jobs += redis_jobs(clusters, timeout_s)
    jobs += artemis_jobs(clusters, timeout_s)
    jobs += rocketmq_jobs(clusters, timeout_s)
    jobs += [lambda n=name: check_switch(clusters, n) for name in clusters.switches]
    jobs.append(lambda: check_slack(settings, timeout_s))
    jobs.append(lambda: check_mode(settings, timeout_s))
    if not settings.server:  # in direct mode this CLI signs its answers itself
        jobs.append(lambda: check_signing_key(settings))
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda job: job(), jobs))
    return check_catalog(catalog) + [check_teams(settings, catalog)] + results
