"""`runbook doctor`'s Redis checks (mq_runbooks/app/doctor_redis.py) against the stack's primary and replica."""
from __future__ import annotations

import json
import socket

from pydantic import SecretStr

from mq_runbooks.app.doctor_redis import check_redis
from mq_runbooks.base.clusters import RedisCluster
from tests.app.test_cli import runbook


def test_primary_and_replica_report_version_role_and_replication(clusters):
    primary = check_redis(clusters.redis_cluster("primary"), timeout_s=5)
    assert primary.ok and primary.component == "redis primary", primary.detail
    assert primary.detail.startswith("Redis 7.") and primary.detail.endswith("primary with 1 replica(s)")
    replica = check_redis(clusters.redis_cluster("replica"), timeout_s=5)
    assert replica.ok and replica.detail.endswith("replica, link to primary up"), replica.detail


def test_redis_down_is_one_line_without_the_password():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cluster = RedisCluster(name="gone", url=SecretStr(f"redis://svc:topsecret@127.0.0.1:{port}/0"))
    check = check_redis(cluster, timeout_s=1)
    assert not check.ok and check.address == f"redis://svc:***@127.0.0.1:{port}/0"
    assert "is unreachable (timeout 1s)" in check.detail and "\n" not in check.detail
    assert "topsecret" not in check.detail


def test_doctor_command_shows_a_dead_redis_and_exits_1(tmp_path):
    config = tmp_path / "clusters.yaml"
    config.write_text('redis:\n  gone: {url: "redis://:topsecret@127.0.0.1:1/0"}\n')
    result = runbook("doctor", "--timeout", "2", "--json", env={"RUNBOOK_CLUSTERS": str(config)})
    assert result.returncode == 1, result.stdout + result.stderr
    checks = {check["component"]: check for check in json.loads(result.stdout)}
    assert not checks["redis gone"]["ok"] and "unreachable" in checks["redis gone"]["detail"]
    assert "topsecret" not in result.stdout + result.stderr
