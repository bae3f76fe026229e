"""Every RUNBOOK_* variable that the README or the shipped clusters.yaml mentions is a real setting
(an unknown RUNBOOK_* variable is refused at start-up, so a documented one must be known)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mq_runbooks.base.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("document", ["README.md", "clusters.yaml", "mq_runbooks/base/settings.py"])
def test_every_documented_runbook_variable_is_a_setting(document):
    mentioned = set(re.findall(r"\bRUNBOOK_[A-Z][A-Z0-9_]*[A-Z0-9]\b", (REPO / document).read_text()))
    assert mentioned, f"{document} mentions no RUNBOOK_* variable: the pattern is wrong"
    known = {"RUNBOOK_" + name.upper() for name in Settings.model_fields}
    assert sorted(mentioned - known) == []


def test_the_switch_files_of_clusters_yaml_are_accepted_settings(tmp_path):
    settings = Settings.from_environ({"RUNBOOK_KAFKA_CLIENTS_FILE": str(tmp_path / "k.json"),
                                      "RUNBOOK_RABBIT_CLIENTS_FILE": str(tmp_path / "r.json")})
    assert settings.kafka_clients_file == str(tmp_path / "k.json")
