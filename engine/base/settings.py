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
    RUNBOOK_INJECT_FAULT      tests only: make a named step fail (apply-partial, verify)
    RUNBOOK_PREFECT_API_URL   the Prefect server's API          (default: PREFECT_API_URL, else the stack's)
    RUNBOOK_SLACK_BOT_TOKEN, RUNBOOK_SLACK_SIGNING_SECRET, RUNBOOK_SLACK_API_URL, RUNBOOK_SLACK_CHANNEL
    RUNBOOK_ALERT_TOKEN       bearer token alert webhooks must send
    RUNBOOK_PUBLIC_URL        where people reach `runbook serve`, for links (default: http://127.0.0.1:8080)
    RUNBOOK_POSTMORTEM_TEMPLATES  a team's own postmortem templates; files there override the
                              ones of the same name in postmortems/templates (default: none)
    RUNBOOK_SLACK_APP_TOKEN   an app-level token (xapp-..., scope connections:write): `runbook serve`
                              then takes Slack's commands and clicks over Socket Mode (no public URL)
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

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
    inject_fault: str | None = Field(None, description="tests only: make a step fail (e.g. apply-partial)")
    prefect_api_url: str = Field("", description="the Prefect server's API URL")
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_channel: str | None = None
    alert_token: SecretStr | None = None
    public_url: str = Field("http://127.0.0.1:8080", description="where people reach `runbook serve` (links)")
    postmortem_templates: Path | None = Field(None, description="a directory of postmortem templates "
                                              "that override postmortems/templates file by file")
    slack_app_token: SecretStr | None = Field(None, description="app-level token (xapp-) for Slack Socket Mode")

    @field_validator("clusters", "catalog", "team_catalog", "postmortem_dir", "snapshot_dir", "teams", "postmortem_templates")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Paths end up in journals and in restore commands, which must work from any directory.
        return None if value is None else value.expanduser().absolute()

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

    def apply_to_prefect(self) -> None:
        """Point Prefect's client at our server (Prefect reads PREFECT_API_URL lazily)."""
        os.environ["PREFECT_API_URL"] = self.prefect_api_url
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # The runner looks for new runs every 10 s by default: an alert should start its run in ~1 s.
        os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "1")
