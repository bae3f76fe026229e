"""The CLI against a Prefect server with its API auth on (PREFECT_SERVER_API_AUTH_STRING, as the
README's production set-up has it): a private server started by dev/stack. With the right
PREFECT_API_AUTH_STRING everything works; a missing or wrong one is one clear line naming the
setting, never a traceback: `runbook doctor` reports it as a problem (exit 1), the commands that reach
Prefect exit 2 (a configuration error)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.flows.test_kafka_replay import committed, group_at_end, kafka_config  # noqa: F401 (fixtures)
from tests.private_prefect import PrivatePrefect, run_env, runbook

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


AUTH = "runbooks:s3cret-pw"


@pytest.fixture(scope="module")
def server():
    home = Path(tempfile.mkdtemp(prefix="mqr-auth-"))
    home.chmod(0o755)
    server = PrivatePrefect(home)
    server.env["PREFECT_SERVER_API_AUTH_STRING"] = AUTH
    try:
        server.up()
        yield server
    finally:
        server.down()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def env(server, tmp_path):
    return {**run_env(server.api_url, tmp_path), "RUNBOOK_CLUSTERS": str(Path(__file__).parents[2] / "clusters.yaml")}


CREDENTIALS = {"missing": None, "wrong": "runbooks:not-the-password"}
ADVICE = {"missing": "the Prefect API asks for a credential (HTTP 401): set PREFECT_API_AUTH_STRING",
          "wrong": "the Prefect API refused the credential (HTTP 401): PREFECT_API_AUTH_STRING is not"}


def with_credential(env: dict[str, str], credential: str | None) -> dict[str, str]:
    env = {key: value for key, value in env.items() if key != "PREFECT_API_AUTH_STRING"}
    return env if credential is None else {**env, "PREFECT_API_AUTH_STRING": credential}


@pytest.mark.parametrize("case", CREDENTIALS)
def test_doctor_reports_a_refused_credential_as_a_problem_naming_the_setting(env, case):
    done = runbook(with_credential(env, CREDENTIALS[case]), "doctor", "--timeout", "5")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr and "exception_message" not in done.stdout
    problems = [line for line in done.stderr.splitlines() if line.startswith("problem: prefect:")]
    assert len(problems) == 1 and ADVICE[case] in problems[0], done.stderr
    assert "PREFECT_SERVER_API_AUTH_STRING" in problems[0] and "s3cret" not in done.stdout + done.stderr


def test_doctor_sends_the_configured_credential(env):
    for credential in ({"PREFECT_API_AUTH_STRING": AUTH}, {"RUNBOOK_PREFECT_API_AUTH_STRING": AUTH}):
        done = runbook({**with_credential(env, None), **credential}, "doctor", "--timeout", "5", "--json")
        assert "Traceback" not in done.stderr, done.stderr
        prefect = next(check for check in json.loads(done.stdout) if check["component"] == "prefect")
        assert prefect["ok"] and prefect["status"] == "reachable" and "Unauthorized" not in prefect["detail"], prefect


@pytest.mark.parametrize("case", CREDENTIALS)
@pytest.mark.parametrize("command", [("runs",), ("status", "0123abcd"), ("tokens", "list"),
                                     ("approve", "0123abcd", "--as", "carol")])
def test_commands_reaching_prefect_with_a_refused_credential_say_so_in_one_line(env, case, command):
    done = runbook(with_credential(env, CREDENTIALS[case]), *command)
    assert done.returncode == 2, (command, done.returncode, done.stderr[-2000:])
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: " + ADVICE[case]), done.stderr
    assert "s3cret" not in done.stderr


def test_commands_work_with_the_right_credential(env):
    done = runbook(with_credential(env, AUTH), "runs")
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_two_people_act_through_serve_against_a_prefect_server_with_basic_auth(server, tmp_path, kafka_config,
                                                                              group_at_end):
    """The README's production set-up: serve (and its worker) hold the Prefect credential and the
    signing key; people hold a token and serve's URL, no Prefect URL or credential."""
    import time

    from tests.serve_harness import ServeProcess

    topic, group = group_at_end
    key = "basic-auth-flow-signing-key-0123456789"
    engine = {**run_env(server.api_url, tmp_path, run_on="workers", timeout="2m"), "PREFECT_API_AUTH_STRING": AUTH,
              "RUNBOOK_SIGNING_KEY": key, "RUNBOOK_CLUSTERS": str(Path(__file__).parents[2] / "clusters.yaml"),
              "RUNBOOK_DEPLOYMENT": "auth-flow", "RUNBOOK_WORK_POOL": "auth-flow", "RUNBOOK_ALERT_TOKEN": "x"}
    serve = ServeProcess(tmp_path, engine)
    try:
        tokens = {}
        for name in ("alice", "bob"):  # the admin, who holds the key and the credential
            issued = runbook(engine, "tokens", "issue", name)
            assert issued.returncode == 0, issued.stderr
            tokens[name] = issued.stdout.strip()
        people = {key_: value for key_, value in engine.items() if not key_.startswith(("RUNBOOK_", "PREFECT_"))}

        def person(name: str, *args: str):
            return runbook({**people, "RUNBOOK_SERVER": serve.url, "RUNBOOK_TOKEN": tokens[name],
                            "PREFECT_API_URL": "http://127.0.0.1:9/api"}, *args)

        started = person("alice", "run", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}",
                         "-p", "to_earliest=true", "--json")
        assert started.returncode == 0, started.stdout + started.stderr
        run_id = json.loads(started.stdout)["run_id"]
        deadline = time.monotonic() + 120
        while (shown := json.loads(person("bob", "status", run_id, "--json").stdout))["state"] != "Suspended":
            assert time.monotonic() < deadline and not shown["finished"], shown
            time.sleep(1)
        assert person("alice", "approve", run_id).returncode == 2, "alice may not approve her own run"
        approved = person("bob", "approve", run_id, "--comment", "ok")
        assert approved.returncode == 0, approved.stdout + approved.stderr
        while not (shown := json.loads(person("bob", "status", run_id, "--json").stdout))["finished"]:
            assert time.monotonic() < deadline + 120, shown
            time.sleep(1)
        assert shown["succeeded"], shown
        assert [entry["kind"] for entry in shown["journal"]].count("action") == 1
        assert committed(kafka_config, group) == {(topic, p): 0 for p in range(3)}
    finally:
        serve.stop()
