"""teams.yaml: who belongs to each @team that an approval policy names, and who each person is.

    kafka-oncall: [carol, dave]                     # names as given to `--as`, or Slack user ids
    rabbitmq-oncall:
      members: [erin]
      slack_usergroup: S0RABBIT                     # plus everyone in this Slack user group
    people:                                         # (reserved: not a team) each person's other names
      carol: {slack: [UCAROL01], proxy: [carol@example.com]}

Four eyes means two people: a person is known by their name, their Slack user ids and the
identities an authenticating proxy asserts for them, and the approval policy compares people, not
strings (`person_of`), so carol cannot approve her own run as UCAROL01.
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
        if team == PEOPLE_KEY:
            continue
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


PEOPLE_KEY = "people"
_ALIAS_KINDS = ("slack", "proxy")


def load_people(path: Path) -> dict[str, str]:
    """{name, Slack id or proxy identity (lower case): the person} from teams.yaml's `people:`; empty
    when there is none. ConfigError naming the entry for a malformed one or an alias given to two people."""
    if not path.exists():
        return {}
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}  # load_teams reports it
    section = document.get(PEOPLE_KEY) if isinstance(document, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: people: one entry per person, e.g. carol: {{slack: [UCAROL01], proxy: [carol@example.com]}}")
    people: dict[str, str] = {}
    for person, aliases in section.items():
        person = str(person)
        aliases = aliases or {}
        if not isinstance(aliases, dict) or set(aliases) - set(_ALIAS_KINDS):
            raise ConfigError(f"{path}: people: {person}: allowed keys are {', '.join(_ALIAS_KINDS)}, each a list, "
                              f"e.g. {{slack: [UCAROL01], proxy: [carol@example.com]}}")
        names = [person]
        for kind in _ALIAS_KINDS:
            values = aliases.get(kind) or []
            if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                raise ConfigError(f"{path}: people: {person}: {kind} must be a list, e.g. [{'UCAROL01' if kind == 'slack' else 'carol@example.com'}]")
            names += values
        for name in names:
            other = people.setdefault(name.lower(), person)
            if other != person:
                raise ConfigError(f"{path}: people: {name} is given to both {other} and {person}")
    return people


def person_of(name: str, people: dict[str, str]) -> str:
    """The person `name` (a name, Slack user id or proxy identity) is, as teams.yaml's people name them;
    `name` itself when nobody has it."""
    return people.get(name.strip().lower(), name.strip())


def people_for(settings) -> dict[str, str]:
    return load_people(settings.teams)
