"""Four eyes means two people: teams.yaml's `people:` ties a person's name, Slack user ids and proxy
identities together, the approval policy compares people, and a requester is proven like an approver."""
from __future__ import annotations

import os

import pytest

from mq_runbooks.base.catalog import ApprovalPolicy
from mq_runbooks.base.errors import ConfigError
from mq_runbooks.kit.gate import refusal
from mq_runbooks.kit.teams import load_people, load_teams, person_of
from tests.app.test_cli import runbook

TEAMS_YAML = """\
kafka-oncall: [carol, dave, UDAVE01]
people:
  carol: {slack: [UCAROL01], proxy: [carol@example.com]}
  dave: {slack: [UDAVE01]}
"""


@pytest.fixture
def teams_file(tmp_path):
    path = tmp_path / "teams.yaml"
    path.write_text(TEAMS_YAML)
    return path


def test_a_person_is_one_whichever_name_they_answer_by(teams_file):
    people = load_people(teams_file)
    assert [person_of(name, people) for name in ("carol", "UCAROL01", "Carol@Example.com", "dave", "UDAVE01")] == \
        ["carol", "carol", "carol", "dave", "dave"]
    assert person_of("erin", people) == "erin", "someone not listed is who they say"
    assert "people" not in load_teams(teams_file), "people is not a team"


def test_self_approval_and_a_second_approval_are_refused_across_a_persons_names(teams_file):
    teams, people = load_teams(teams_file), load_people(teams_file)
    policy = ApprovalPolicy(approvers=["@kafka-oncall"], required=2, self_approval=False)
    # The review's attack: carol requested, and her Slack id clicked Approve.
    assert "started this run (as carol) and may not approve it" in refusal(policy, teams, "carol", "UCAROL01", True, [],
                                                                           people)
    assert "started this run" in refusal(policy, teams, "carol@example.com", "carol", True, [], people)
    # dave approved by name; his Slack id is still dave.
    assert "has already approved" in refusal(policy, teams, "carol", "UDAVE01", True, ["dave"], people)
    assert refusal(policy, teams, "carol", "dave", True, [], people) is None
    assert refusal(policy, teams, "carol", "UCAROL01", False, [], people) is None, "a requester may stop their run"


def test_a_malformed_people_entry_names_itself(tmp_path):
    path = tmp_path / "teams.yaml"
    path.write_text("people:\n  carol: {email: [c@x]}\n")
    with pytest.raises(ConfigError, match="people: carol: allowed keys are slack, proxy"):
        load_people(path)
    path.write_text("people:\n  carol: {slack: [U1]}\n  dave: {slack: [u1]}\n")
    with pytest.raises(ConfigError, match="U1 is given to both carol and dave|u1 is given to both carol and dave"):
        load_people(path)


@pytest.mark.parametrize("setting", ["token", "os-user"])
def test_a_typed_requester_is_refused_where_answers_need_proof(setting):
    started = runbook("run", "kafka-replay", "-p", "cluster=primary", "-p", "group=g", "-p", "to_earliest=true",
                      "--as", "not-bob", env={"RUNBOOK_APPROVAL_PROOF": setting, "RUNBOOK_TOKEN": ""})
    assert started.returncode == 2, started.stdout + started.stderr
    expected = "root is not a person" if setting == "os-user" and os.geteuid() == 0 else f"RUNBOOK_APPROVAL_PROOF={setting}"
    assert expected in started.stderr and "Traceback" not in started.stderr
