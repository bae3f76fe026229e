"""`runbook doctor` on the work pool: missing, no worker online, and a real worker online."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from mq_runbooks.app.doctor import check_workers
from mq_runbooks.app.workers import ensure_pool
from mq_runbooks.base.settings import Settings

BIN = Path(sys.executable).parent


def test_the_work_pool_and_its_workers_are_reported(monkeypatch, tmp_path):
    pool = f"test-doctor-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RUNBOOK_WORK_POOL", pool)
    settings = Settings.from_environ()
    missing = check_workers(settings, 10)
    assert not missing.ok and not missing.required and "not created yet" in missing.detail

    ensure_pool(pool)
    idle = check_workers(settings, 10)
    assert not idle.ok and not idle.required and "no worker online" in idle.detail

    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([str(BIN / "runbook"), "worker", "--name", f"{pool}-w"], stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "RUNBOOK_WORK_POOL": pool},
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while (check := check_workers(settings, 10)).ok is False:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, check.detail
            time.sleep(1)
        assert f"{pool}-w" in check.detail and check.data["workers"] == [f"{pool}-w"]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
