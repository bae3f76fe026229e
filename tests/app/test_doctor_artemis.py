"""`runbook doctor`'s Artemis checks (mq_runbooks/app/doctor_artemis.py) against the stack's primary and backup."""
from __future__ import annotations

import json

from mq_runbooks.app.doctor_artemis import check_artemis
from tests.app.test_cli import runbook


def test_primary_and_backup_report_version_ha_role_and_sync(clusters):
    primary = check_artemis(clusters.artemis_cluster("primary"), timeout_s=5)
    assert primary.ok and primary.component == "artemis primary", primary.detail
    assert primary.detail == "Artemis 2.40.0 (artemis-primary), active, backup in sync; AMQP login ok"
    backup = check_artemis(clusters.artemis_cluster("backup"), timeout_s=5)
    assert backup.ok and backup.detail == "Artemis 2.40.0 (artemis-backup), backup, in sync", backup.detail


def test_doctor_command_shows_a_dead_artemis_in_one_line_and_exits_1(tmp_path):
    config = tmp_path / "clusters.yaml"
    config.write_text('artemis:\n  gone: {management_url: "http://127.0.0.1:1/console/jolokia", '
                      'messaging_url: "amqp://127.0.0.1:1", user: admin, password: topsecret}\n')
    result = runbook("doctor", "--timeout", "2", "--json", env={"RUNBOOK_CLUSTERS": str(config)})
    assert result.returncode == 1, result.stdout + result.stderr
    checks = {check["component"]: check for check in json.loads(result.stdout)}
    gone = checks["artemis gone"]
    assert not gone["ok"] and "artemis cluster 'gone'" in gone["detail"] and "unreachable" in gone["detail"]
    assert "\n" not in gone["detail"] and "topsecret" not in result.stdout + result.stderr
