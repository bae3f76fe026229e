"""Settings, read once at start-up from the environment (prefix RUNBOOK_), never at import time.

    Relative defaults are taken from the working directory (a checkout of this repository has them).
    RUNBOOK_CLUSTERS          path of clusters.yaml            (default: ./clusters.yaml)
    RUNBOOK_CATALOG           directory of runbook files        (default: the runbooks shipped in the package)
    RUNBOOK_TEAM_CATALOG      a team's own runbooks (YAML and their Python modules), loaded beside the catalog
    RUNBOOK_POSTMORTEM_DIR    where drafts are written          (default: ./postmortems/drafts)
    RUNBOOK_SNAPSHOT_DIR      snapshots of what runs changed    (default: ./snapshots)
    RUNBOOK_TEAMS             members of each @team             (default: ./teams.yaml)
    RUNBOOK_LOCK_WAIT_S       how long a run waits for its target's lock (default: 60)
    RUNBOOK_DEPLOYMENT        name of each runbook's deployment, `<runbook>/<name>` (default: mq-runbooks);
                              environments sharing one Prefect server use different names
    RUNBOOK_WORK_POOL         the Prefect work pool (process type) whose workers execute the runs of alerts,
                              Slack and `runbook run` on workers (default: mq-runbooks)
    RUNBOOK_RUN_ON            where `runbook run` executes a run: local (a process on this machine, the
                              default) or workers (the work pool's workers, on any machine)
    RUNBOOK_INJECT_FAULT      tests only: where the driver makes a run fail, by step key (kit/faults.py): fail-before:STEP,
                              fail-during:STEP, fail-after:STEP, stall-after:STEP[:SECONDS], or verify
    RUNBOOK_PREFECT_API_URL   the Prefect server's API          (default: PREFECT_API_URL, else the stack's)
    RUNBOOK_PREFECT_API_AUTH_STRING  user:password of a Prefect API with auth on (the server's
                              PREFECT_SERVER_API_AUTH_STRING; default: PREFECT_API_AUTH_STRING)
    RUNBOOK_SLACK_BOT_TOKEN, RUNBOOK_SLACK_SIGNING_SECRET, RUNBOOK_SLACK_API_URL, RUNBOOK_SLACK_CHANNEL
    RUNBOOK_ALERT_TOKEN       bearer token alert webhooks must send
    RUNBOOK_PUBLIC_URL        where people reach `runbook serve`, e.g. https://runbooks.example.com, for links
                              and the same-origin check of page writes (default: none, so no absolute links)
    RUNBOOK_TRUSTED_PROXIES   addresses (IPs or CIDRs, comma-separated) of the authenticating proxies whose
                              identity headers the review pages trust (default: none, so page writes are refused)
    RUNBOOK_IDENTITY_HEADERS  the headers such a proxy asserts the person in, first found wins
                              (default: X-Forwarded-Email,X-Forwarded-User, as oauth2-proxy sends them)
    RUNBOOK_REVIEW_REQUIRE_IDENTITY  true: the review pages' reads need that identity too (default: false)
    RUNBOOK_SERVER            the URL of `runbook serve` (e.g. https://runbooks.example.com): `runbook run|approve|
                              reject|status` then go through serve's API with your token, and need no Prefect
                              credential (default: none, so the CLI works directly against Prefect)
    RUNBOOK_TOKEN             your personal token (`runbook tokens issue NAME`): proves who answers a gate on the CLI
    RUNBOOK_TOKEN_FILE        a file readable by you alone holding that token (when RUNBOOK_TOKEN is not set)
    RUNBOOK_APPROVAL_PROOF    what a gate takes as proof of who answers, besides Slack's signature and a
                              token (always taken): typed (a typed name; the default), os-user (the CLI
                              answers as the OS user running it) or token (a personal token only)
    RUNBOOK_SIGNING_KEY       the engine's key (16+ characters), the same on every `runbook serve` and worker of
                              an installation: it signs the answers to gates and the journal's entries, and
                              keys the token hashes; people never hold it (default: the key file's)
    RUNBOOK_SIGNING_KEY_FILE  where a machine without RUNBOOK_SIGNING_KEY keeps its own key, made 0600 on first
                              use (default: ~/.config/mq-runbooks/signing.key)
    RUNBOOK_POSTMORTEM_TEMPLATES  a team's own postmortem templates; files there override the
                              ones of the same name in mq_runbooks/kit/postmortem/templates (default: none)
    RUNBOOK_SLACK_APP_TOKEN   an app-level token (xapp-..., scope connections:write): `runbook serve`
                              then takes Slack's commands and clicks over Socket Mode (no public URL)
    RUNBOOK_KAFKA_CLIENTS_FILE, RUNBOOK_RABBIT_CLIENTS_FILE, RUNBOOK_ARTEMIS_CLIENTS_FILE  the files of
                              the local stack's endpoint switches kafka-clients, rabbit-clients and
                              artemis-clients; read by the repository's
                              clusters.yaml (${...} in it), not by the engine (default: .stack/*.json)
"""
from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from mq_runbooks.base.errors import ConfigError
from mq_runbooks.base.resources import default_catalog
from mq_runbooks.base.validation import config_error



# Read by dev/ scripts, not by the engine.
_NOT_OURS = {"venv"}


class Settings(BaseModel):
    """Plain model filled from an injectable environment (so tests pass their own)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    clusters: Path = Field(Path("clusters.yaml"), description="path of clusters.yaml")
    catalog: Path = Field(default_factory=default_catalog, description="directory of runbook files")
    team_catalog: Path | None = Field(None, description="a team's own runbooks (YAML + Python), beside the catalog")
    postmortem_dir: Path = Field(Path("postmortems/drafts"), description="where drafts are written")
    snapshot_dir: Path = Field(Path("snapshots"), description="where runbooks keep what they change, to restore")
    teams: Path = Field(Path("teams.yaml"), description="who is in each @team named by approval policies")
    lock_wait_s: float = Field(60.0, ge=0, description="how long a run waits for its target's lock")
    deployment: str = Field("mq-runbooks", pattern=r"^[a-z0-9][a-z0-9-]*$",
                            description="the name of each runbook's deployment (`<runbook>/<name>`)")
    work_pool: str = Field("mq-runbooks", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
                           description="the Prefect work pool whose workers execute runs")
    run_on: Literal["local", "workers"] = Field("local", description="where `runbook run` executes a run")
    inject_fault: str | None = Field(None, description="tests only: where the driver makes a run fail (e.g. fail-before:switch; kit/faults.py)")
    prefect_api_url: str = Field("", description="the Prefect server's API URL")
    prefect_api_auth_string: SecretStr | None = Field(
        None, description="user:password of the Prefect API (basic auth), when its auth is on")
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_channel: str | None = None
    alert_token: SecretStr | None = None
    public_url: str = Field("", description="where people reach `runbook serve` (links, same-origin check)")
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = Field(
        (), description="addresses of the authenticating proxies whose identity headers are trusted")
    identity_headers: tuple[str, ...] = Field(
        ("X-Forwarded-Email", "X-Forwarded-User"), min_length=1,
        description="headers in which a trusted proxy asserts who the person is")
    review_require_identity: bool = Field(False, description="the review pages' reads need a proven identity too")
    server: str = Field("", description="the URL of `runbook serve`, whose API the CLI then uses")
    token: SecretStr | None = Field(None, description="a personal token proving who answers a gate from the CLI")
    token_file: Path | None = Field(None, description="a file (0600) holding that personal token")
    approval_proof: Literal["typed", "os-user", "token"] = Field(
        "typed", description="the least proof a gate takes of who answers: typed, os-user or token")
    signing_key: SecretStr | None = Field(None, description="the engine's key: signs answers and journal entries")
    signing_key_file: Path | None = Field(None, description="this machine's key file when no signing_key is set")
    postmortem_templates: Path | None = Field(None, description="a directory of postmortem templates "
                                              "that override mq_runbooks/kit/postmortem/templates file by file")
    slack_app_token: SecretStr | None = Field(None, description="app-level token (xapp-) for Slack Socket Mode")
    # Read through ${...} by the repository's clusters.yaml (its local switches); declared so they are known.
    kafka_clients_file: str | None = Field(None, description="file of the local kafka-clients switch")
    rabbit_clients_file: str | None = Field(None, description="file of the local rabbit-clients switch")
    artemis_clients_file: str | None = Field(None, description="file of the local artemis-clients switch")

    @field_validator("clusters", "catalog", "team_catalog", "postmortem_dir", "snapshot_dir", "teams", "postmortem_templates",
                     "signing_key_file", "token_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Paths end up in journals and in restore commands, which must work from any directory.
        return None if value is None else value.expanduser().absolute()

    @field_validator("public_url", "server")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", value):
            raise ValueError(f"{value!r} is not an http(s) URL, e.g. https://runbooks.example.com")
        return value.rstrip("/")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        networks = []
        for item in (part.strip() for part in value.split(",")):
            if item:
                try:
                    networks.append(ip_network(item, strict=False))
                except ValueError:
                    raise ValueError(f"{item!r} is not an IP address or CIDR (e.g. 10.0.0.5, 10.0.0.0/24)") from None
        return tuple(networks)

    @field_validator("identity_headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        names = tuple(part.strip() for part in value.split(",") if part.strip())
        bad = [name for name in names if not re.fullmatch(r"[A-Za-z0-9-]+", name)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: header names are letters, digits and '-'")
        return names

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read the settings from `environ` (default: the process environment)."""
        source = dict(os.environ if environ is None else environ)
        values = {
            key[len("RUNBOOK_"):].lower(): value
            for key, value in source.items()
            if key.startswith("RUNBOOK_") and value != ""
        }
        if not values.get("prefect_api_url"):
            values["prefect_api_url"] = source.get("PREFECT_API_URL") or (
                f"http://127.0.0.1:{source.get('STACK_PREFECT_PORT', '4200')}/api"
            )
        if not values.get("prefect_api_auth_string") and source.get("PREFECT_API_AUTH_STRING"):
            values["prefect_api_auth_string"] = source["PREFECT_API_AUTH_STRING"]
        for key in _NOT_OURS:
            values.pop(key, None)
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            known = ", ".join("RUNBOOK_" + name.upper() for name in cls.model_fields)
            raise ConfigError(
                f"unknown setting {', '.join('RUNBOOK_' + k.upper() for k in unknown)} in the environment "
                f"(known: {known})"
            )
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise config_error("the RUNBOOK_* environment", exc) from None

    def prefect_headers(self) -> dict[str, str]:
        """The headers of a request to the Prefect API made without Prefect's client: its basic auth,
        as Prefect's client sends it, when an auth string is set."""
        if self.prefect_api_auth_string is None:
            return {}
        token = base64.b64encode(self.prefect_api_auth_string.get_secret_value().encode("utf-8")).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    def apply_to_prefect(self) -> None:
        """Point Prefect's client at our server (Prefect reads PREFECT_API_URL lazily)."""
        os.environ["PREFECT_API_URL"] = self.prefect_api_url
        if self.prefect_api_auth_string is not None:
            os.environ["PREFECT_API_AUTH_STRING"] = self.prefect_api_auth_string.get_secret_value()
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # Prefect's client telemetry prints a notice on the console of the first command; keep it off.
        os.environ.setdefault("DO_NOT_TRACK", "1")
        # The runner looks for new runs every 10 s by default: an alert should start its run in ~1 s.
        os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "1")
        # Workers likewise look every 10 s by default: a resumed gate should act in about a second.
        os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", "1")
        # Every run sends heartbeats, so a run whose process died is marked Crashed (kit/crashes.py).
        os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
