"""`runbook doctor`'s RocketMQ check (mq_runbooks/app/doctor_rocketmq.py) against the stack's RocketMQ."""
from __future__ import annotations

import json

from mq_runbooks.app.doctor_rocketmq import check_rocketmq
from tests.app.test_cli import runbook
from tests.rocketmq_support import rocketmq_primary


def test_the_stacks_cluster_reports_its_broker_version_and_proxy():
    check = check_rocketmq(rocketmq_primary(), timeout_s=5)
    assert check.ok and check.component == "rocketmq primary", check.detail
    assert check.detail == "broker-a V5_3_3 at 127.0.0.1:10911; proxy 127.0.0.1:8081 answers"


def test_a_dead_name_server_is_one_line_without_the_secret_and_exits_1(tmp_path):
    config = tmp_path / "clusters.yaml"
    config.write_text('rocketmq:\n  gone: {namesrv: "127.0.0.1:1", access_key: ops, secret_key: topsecret}\n')
    result = runbook("doctor", "--timeout", "2", "--json", env={"RUNBOOK_CLUSTERS": str(config)})
    assert result.returncode == 1, result.stdout + result.stderr
    gone = {check["component"]: check for check in json.loads(result.stdout)}["rocketmq gone"]
    assert not gone["ok"] and "does not answer" in gone["detail"], gone
    assert "\n" not in gone["detail"] and "topsecret" not in result.stdout + result.stderr
