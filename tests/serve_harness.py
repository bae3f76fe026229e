"""A real `runbook serve` process for tests: started once per module on a free port, with its own
catalog copy (short gate timeouts), alert token and Slack settings pointing at the fake Slack API."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
ALERT_TOKEN = "test-alert-token"
SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    def __init__(self, workdir: Path, env: dict[str, str], runner: bool = True,
                 command: Callable[[int], list[str]] | None = None):
        """`command` (port -> argv) runs another web server in serve's place (bench/alerts.py's reference)."""
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"serve-{self.port}.log"
        args = [str(Path(sys.executable).parent / "runbook"), "serve", "--port", str(self.port)]
        if not runner:
            args.append("--no-runner")
        if command is not None:
            args = command(self.port)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"runbook serve exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"runbook serve did not answer: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def serve_environment(workdir: Path, slack_url: str | None = None, timeout: str = "60s",
                      runbooks: tuple[str, ...] = ("kafka-replay",), deployment: str | None = None) -> dict[str, str]:
    """The environment of a serve process. Each gets its own deployment name and work pool (so the
    worker of one test's serve never picks up another's runs) unless `deployment` names one to share."""
    catalog = workdir / "runbooks"
    catalog.mkdir(exist_ok=True)
    for path in (REPO / "mq_runbooks" / "runbooks" / f"{runbook}.yaml" for runbook in runbooks):
        text = path.read_text().replace("timeout: 30m", f"timeout: {timeout}")
        (catalog / path.name).write_text(text)
    env = {key: value for key, value in os.environ.items() if not key.startswith("RUNBOOK_")}
    env.update({
        "RUNBOOK_CATALOG": str(catalog), "RUNBOOK_SNAPSHOT_DIR": str(workdir / "snapshots"),
        "RUNBOOK_POSTMORTEM_DIR": str(workdir / "postmortems"), "RUNBOOK_ALERT_TOKEN": ALERT_TOKEN,
        "RUNBOOK_SLACK_SIGNING_SECRET": SIGNING_SECRET,
    })
    env["RUNBOOK_DEPLOYMENT"] = env["RUNBOOK_WORK_POOL"] = (
        deployment or f"test-{workdir.name.lower().replace('_', '-')}-{os.getpid()}")
    if slack_url:
        env.update({"RUNBOOK_SLACK_BOT_TOKEN": BOT_TOKEN, "RUNBOOK_SLACK_API_URL": slack_url,
                    "RUNBOOK_SLACK_CHANNEL": "C0INCIDENT"})
    return env
