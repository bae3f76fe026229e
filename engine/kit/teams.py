"""teams.yaml: who belongs to each @team that an approval policy names.

    kafka-oncall: [carol, dave]                     # names as given to `--as`, or Slack user ids
    rabbitmq-oncall:
      members: [erin]
      slack_usergroup: S0RABBIT                     # plus everyone in this Slack user group
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from mq_runbooks.base.errors import ConfigError

UsergroupMembers = Callable[[str], list[str]]


def load_teams(path: Path, usergroup_members: UsergroupMembers | None = None) -> dict[str, list[str]]:
    """{team: [member, ...]}; a missing file means no teams (policies may still name people).

    Slack user groups are expanded through `usergroup_members` when it is given; if Slack cannot
    answer, the team keeps its listed members only.
    """
    if not path.exists():
        return {}
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path} as UTF-8 text ({exc}): check RUNBOOK_TEAMS") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: write one line per team, e.g. kafka-oncall: [carol, dave]")
    teams: dict[str, list[str]] = {}
    for team, value in document.items():
        usergroup = None
        members = value
        if isinstance(value, dict):
            unknown = set(value) - {"members", "slack_usergroup"}
            if unknown:
                raise ConfigError(f"{path}: {team}: unknown key {', '.join(sorted(unknown))} "
                                  f"(allowed: members, slack_usergroup)")
            members, usergroup = value.get("members", []), value.get("slack_usergroup")
        if not isinstance(members, list) or not all(isinstance(m, str) and m for m in members):
            raise ConfigError(f"{path}: {team}: members must be a list of names, e.g. [carol, dave]")
        teams[str(team)] = list(members)
        if usergroup and usergroup_members is not None:
            try:
                teams[str(team)] += usergroup_members(str(usergroup))
            except Exception:  # noqa: BLE001  (Slack down: the listed members still count)
                pass
    return teams


def teams_for(settings) -> dict[str, list[str]]:
    """The teams of `settings.teams`, with Slack user groups expanded when Slack is configured."""
    members = None
    if settings.slack_bot_token is not None:
        from mq_runbooks.integrations.slack import SlackNotifier

        slack = SlackNotifier(settings.slack_bot_token.get_secret_value(), settings.slack_api_url,
                              settings.slack_channel or "")
        members = slack.usergroup_members
    return load_teams(settings.teams, members)
