"""teams.yaml: who belongs to each @team that an approval policy names."""
from __future__ import annotations

from pathlib import Path

import yaml

from engine.errors import ConfigError


def load_teams(path: Path) -> dict[str, list[str]]:
    """{team: [member, ...]}; a missing file means no teams (policies may still name people)."""
    if not path.exists():
        return {}
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: write one line per team, e.g. kafka-oncall: [carol, dave]")
    teams: dict[str, list[str]] = {}
    for team, members in document.items():
        if not isinstance(members, list) or not all(isinstance(m, str) and m for m in members):
            raise ConfigError(f"{path}: {team}: members must be a list of names, e.g. [carol, dave]")
        teams[str(team)] = members
    return teams
